"""A raw record's values -> float64 arrays (Cartesian tensors, or an invariant in its stored units), and back to the
stored columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from zoo import properties
from zoo.core import tensors
from zoo.data.records import is_unreadable
from zoo.data.cleaning.params import CleanIssue, CleanParams


# ------------------------------------------------------------------------------------------------- values
def _source_array(values: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in values or values[key] is None:
        raise CleanIssue("missing_field", f"values.{key} is missing")
    value = values[key]
    if is_unreadable(value):
        raise CleanIssue("unparsable_tensor", f"values.{key}: fetch could not read it: {value.get('error')}")
    if _nested_shape(value) != shape:
        raise CleanIssue("wrong_shape", f"values.{key} has shape {_nested_shape(value)}, expected {shape}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CleanIssue("unparsable_tensor", f"values.{key} contains something that is not a number") from None
    if not np.isfinite(array).all():
        raise CleanIssue("unparsable_tensor", f"values.{key} contains NaN or infinite values")
    return array


def _nested_shape(value: Any) -> tuple[int, ...] | str:
    """The shape of nested lists: () for a scalar, 'ragged' when rows differ in length."""
    if not isinstance(value, (list, tuple)):
        return ()
    shapes = {_nested_shape(item) for item in value}
    if len(shapes) > 1:
        return "ragged"
    inner = shapes.pop() if shapes else ()
    return inner if isinstance(inner, str) else (len(value), *inner)


def _symmetric_part(matrix: np.ndarray, key: str, max_asymmetry: float) -> np.ndarray:
    """The symmetric part of a matrix that should be symmetric; CleanIssue if the rest is more than noise."""
    norm = float(np.linalg.norm(matrix))
    asymmetry = float(np.linalg.norm(matrix - matrix.T)) / (2 * norm) if norm else 0.0
    if asymmetry > max_asymmetry:
        raise CleanIssue("unparsable_tensor", f"values.{key} is not symmetric: relative antisymmetric part "
                                              f"{asymmetry:.3g} > {max_asymmetry:g}")
    return (matrix + matrix.T) / 2


def read_values(spec: properties.PropertySpec, values: Any, params: CleanParams) -> dict[str, np.ndarray]:
    """A raw record's values -> {source key: float64 array}: Cartesian tensors for tensor properties (symmetric
    matrices reduced to their symmetric part), for an invariant the arrays in the spec's stored units
    (``clean_values``). Raises CleanIssue."""
    if not isinstance(values, Mapping):
        raise CleanIssue("missing_field", "values must be an object")
    if not spec.is_tensor:
        parts = {key: _source_array(values, key, spec.cartesian_shape) for key in spec.source_keys}
        try:
            return spec.clean_values(parts)
        except ValueError as err:
            raise CleanIssue("wrong_shape", str(err)) from None
    return {key: read_tensor(spec, values, key, params) for key in spec.source_keys}


def read_tensor(spec: properties.PropertySpec, values: Mapping[str, Any], key: str,
                 params: CleanParams) -> np.ndarray:
    """values[key] (in the spec's stored form) as a Cartesian tensor (symmetric matrices reduced to their
    symmetric part)."""
    array = _source_array(values, key, spec.stored_shape)
    if spec.symmetric_value:
        array = _symmetric_part(array, key, params.symmetrize_max_residual)
    return array if spec.stored_form == "cartesian" else tensors.voigt_to_cartesian(array, spec.voigt_kind)


def stored_values(spec: properties.PropertySpec, parts: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Source parts (Cartesian, in the stored frame; an invariant's arrays) -> the stored columns as nested lists."""
    stored = {**parts, **spec.derived_parts(parts)}
    if spec.is_tensor and spec.stored_form == "voigt":
        stored = {key: tensors.cartesian_to_voigt(part, spec.voigt_kind) for key, part in stored.items()}
    return {key: stored[key].tolist() for key in spec.stored_columns}
