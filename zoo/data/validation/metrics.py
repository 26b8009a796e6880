"""The physics metric columns validate computes per record (the suites' expectations read them)."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import multiprocessing
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd


from pymatgen.core import Element, Structure

from zoo import properties
from zoo.core import symmetry
from zoo.properties.spec import NEUMANN_METRIC, PropertySpec, as_float_array, is_missing
from zoo.data.validation.params import ValidationParams, ValueColumn, value_columns


# A cell whose volume is below this fraction of |a||b||c| has coplanar lattice vectors up to rounding.
_COPLANAR_RTOL = 1e-9


# ------------------------------------------------------------------------------------------------------ metrics
# Metric columns per property: (name, type, what it is). type "flag" is True/False (True = check passed), "float"
# is float64, "text" a string. Every metric is null where a more basic check of the record already fails (module docstring).
_STRUCTURE_METRICS = (
    ("structure_parsed", "flag", "structure_json parses into a pymatgen Structure with finite lattice and sites"),
    ("elements_known", "flag", "every species is a chemical element"),
    ("cell_volume", "float", "cell volume |det L|, A^3 (0 for lattice vectors coplanar to rounding)"),
    ("min_interatomic_distance", "float", "shortest distance between two sites, periodic images included, A"),
)
_TENSOR_COMMON = (
    ("values_present", "flag", "every value column is non-null"),
    ("values_shape_ok", "flag", "every value is an array of numbers of its stored shape"),
    ("values_finite", "flag", "no NaN or infinity in the values"),
)
_SYMMETRY_METRICS = (
    ("symmetry_found", "flag", "spglib found the structure's space group (zoo.core.symmetry tolerances)"),
    NEUMANN_METRIC,
)


def metric_columns(prop: str | PropertySpec) -> tuple[tuple[str, str, str], ...]:
    """A property's metric columns (name, 'flag' | 'float' | 'text', description): for a tensor the shared value checks,
    the spec's own metrics, the structure and symmetry checks; for an invariant its own metrics and the structure
    checks."""
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    if spec.is_tensor:
        return _TENSOR_COMMON + spec.metric_columns + _STRUCTURE_METRICS + _SYMMETRY_METRICS
    return spec.metric_columns + _STRUCTURE_METRICS


def metric_names(prop: str | PropertySpec) -> list[str]:
    return [name for name, _, _ in metric_columns(prop)]


class StructureCheck(NamedTuple):
    metrics: dict[str, Any]
    symmetry: symmetry.SymmetryInfo | None
    structure: Structure | None = None  # when the symmetry was found


def _element_symbols(structure_dict: Mapping[str, Any]) -> list[str]:
    return [species["element"] for site in structure_dict["sites"] for species in site["species"]]


def _shortest_lattice_vector(structure: Structure) -> float:
    """Length of the shortest non-zero lattice vector: the distance from a site to its own periodic image.

    Searched over the 26 neighbours of the origin in pymatgen's LLL-reduced basis: that basis is nearly orthogonal,
    so the shortest vector is among them (exactly so for a Minkowski-reduced basis; cells far from it would only
    make the result too long, never too short).
    """
    reduced = structure.lattice.get_lll_reduced_lattice().matrix
    steps = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)])
    return float(np.linalg.norm(steps @ reduced, axis=1).min())


def min_interatomic_distance(structure: Structure) -> float:
    """Shortest distance between two sites of a periodic structure, periodic images included (A)."""
    shortest = _shortest_lattice_vector(structure)
    if len(structure) > 1:
        distances = structure.distance_matrix  # minimum-image distances, pymatgen
        off_diagonal = distances[~np.eye(len(structure), dtype=bool)]
        shortest = min(shortest, float(off_diagonal.min()))
    return shortest


def cell_volume(structure: Structure) -> float:
    """|det L| in A^3, and exactly 0 for lattice vectors coplanar to rounding (|det L| <= 1e-9 |a||b||c|)."""
    volume = float(structure.lattice.volume)
    return volume if volume > _COPLANAR_RTOL * math.prod(structure.lattice.abc) else 0.0


def check_structure(structure_json: str | None, params: ValidationParams, analyse_symmetry: bool) -> StructureCheck:
    """Structure metrics of one record, and its symmetry when asked for and the structure is sound."""
    metrics: dict[str, Any] = {name: None for name, _, _ in _STRUCTURE_METRICS}
    if analyse_symmetry:
        metrics["symmetry_found"] = None
    try:
        as_dict = json.loads(structure_json)
        symbols = _element_symbols(as_dict)
    except (TypeError, ValueError, KeyError):
        metrics["structure_parsed"] = False
        return StructureCheck(metrics, None)
    metrics["elements_known"] = all(isinstance(s, str) and Element.is_valid_symbol(s) for s in symbols)
    if not metrics["elements_known"]:
        return StructureCheck(metrics, None)
    try:
        structure = Structure.from_dict(as_dict)
        sound = np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.cart_coords).all()
    except Exception:  # pymatgen raises assorted errors (KeyError, ValueError, TypeError) for malformed dicts
        sound = False
    metrics["structure_parsed"] = bool(sound) and len(structure) > 0
    if not metrics["structure_parsed"]:
        return StructureCheck(metrics, None)
    metrics["cell_volume"] = cell_volume(structure)
    if not metrics["cell_volume"] > 0.0:
        return StructureCheck(metrics, None)
    metrics["min_interatomic_distance"] = min_interatomic_distance(structure)
    if not analyse_symmetry or metrics["min_interatomic_distance"] < params.min_interatomic_distance_a:
        return StructureCheck(metrics, None)
    try:
        info = params.analyze(structure)
    except ValueError:
        metrics["symmetry_found"] = False
        return StructureCheck(metrics, None)
    metrics["symmetry_found"] = True
    return StructureCheck(metrics, info, structure)


def _read_values(row: Mapping[str, Any], columns: Sequence[ValueColumn]) -> tuple[dict[str, Any], list | None]:
    """values_present / values_shape_ok / values_finite, and the arrays when all three hold."""
    flags: dict[str, Any] = {"values_present": not any(is_missing(row[c.name]) for c in columns),
                             "values_shape_ok": None, "values_finite": None}
    if not flags["values_present"]:
        return flags, None
    arrays = []
    for column in columns:
        try:
            array = as_float_array(row[column.name])
        except (TypeError, ValueError):  # ragged nesting or non-numbers
            array = None
        arrays.append(array)
    flags["values_shape_ok"] = all(a is not None and a.shape == c.shape for a, c in zip(arrays, columns))
    if not flags["values_shape_ok"]:
        return flags, None
    flags["values_finite"] = all(bool(np.isfinite(a).all()) for a in arrays)
    return flags, arrays if flags["values_finite"] else None


def _metric_rows(spec_name: str, params: ValidationParams, records: Sequence[Mapping[str, Any]]) -> list[list]:
    """Metric values of records (dicts of structure_json and the value columns), in metric_columns order."""
    spec = properties.get(spec_name)
    columns = value_columns(spec)
    names = metric_names(spec)
    structures: dict[str | None, StructureCheck] = {}  # one analysis per distinct structure
    rows = []
    for row in records:
        key = row["structure_json"]
        if key not in structures:
            structures[key] = check_structure(key, params, analyse_symmetry=spec.is_tensor)
        check = structures[key]
        if spec.is_tensor:
            out, arrays = _read_values(row, columns)
            if arrays is not None:
                out.update(spec.record_metrics(arrays, check.symmetry, params))
                if check.structure is not None:
                    out.update(spec.structure_metrics(arrays, check.structure, check.symmetry, params))
        else:
            out = spec.record_metrics({column.name: row[column.name] for column in columns}, None, params)
        out.update(check.metrics)
        rows.append([out.get(name) for name in names])
    return rows


def compute_metrics(clean: pd.DataFrame, prop: str | PropertySpec, params: ValidationParams) -> pd.DataFrame:
    """The metric columns (``metric_columns(prop)``, in that order) of every row of `clean`, same index.

    Flags are object columns of True/False/None (what GX's pandas engine compares best), floats are float64
    (null = NaN). Rows are computed whatever their clean_issue: ``validate`` passes only the rows without one.
    With params.workers > 1 the records are measured in forked processes, in chunks gathered in input order, so
    the result does not depend on the number of workers. (Fork is safe here: the workers run spglib, numpy and
    pymatgen only, never the torch or Arrow thread pools the parent may hold.)
    """
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    records = clean[["structure_json"] + [c.name for c in value_columns(spec)]].to_dict("records")
    measure = functools.partial(_metric_rows, spec.name, params)
    chunk_size = max(1, math.ceil(len(records) / (4 * params.workers)))  # a few chunks per worker evens the load
    chunks = [records[start:start + chunk_size] for start in range(0, len(records), chunk_size)]
    if params.workers == 1 or len(chunks) <= 1:
        rows = measure(records)
    else:
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=params.workers, mp_context=context) as pool:
            rows = [row for chunk_rows in pool.map(measure, chunks) for row in chunk_rows]
    return typed_metrics(pd.DataFrame(rows, columns=metric_names(spec), index=clean.index, dtype=object), spec)


def typed_metrics(frame: pd.DataFrame, spec: PropertySpec) -> pd.DataFrame:
    """Float metrics as float64; flags as object columns holding True, False or None (not NaN)."""
    for name, kind, _ in metric_columns(spec):
        if kind == "float":
            frame[name] = pd.to_numeric(frame[name].astype(object).where(frame[name].notna(), np.nan)).astype(np.float64)
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame
