"""The property spec type and the hooks every property shares.

A ``PropertySpec`` is the single place that says what a property is: its tensor convention, where its values come
from (``SnapshotSource``, ``MPSource``), what the clean stage stores, the validate stage's own metrics, the dataset's
columns, the derived quantities, the evaluation's quantities and headline, and the pymatgen objects of a
prediction. The stages are property-agnostic: they read these fields and call these methods. The defaults are
those of a tensor property; ``zoo.properties.phonon`` overrides them for its invariant (the DOS). A new property is
one spec (a module beside the four, or a test's own spec): see ``tests/test_fifth_property.py``.

The source mappings (SnapshotSource, MPSource, Citation) live in ``zoo.properties.source_fields``.

Layering: this package imports ``zoo.core``, numpy and pymatgen only; the data, nn and release layers import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import derived, paths, symmetry, tensors
from zoo.core.schema_checks import check_non_negative
from zoo.properties.source_fields import (
    Citation,
    MPSource,
    RawValue,
    SnapshotSource,
)


# ------------------------------------------------------------------------------------------ dataset pieces
@dataclass(frozen=True)
class TensorPart:
    """One stored tensor of a property and where it comes from in the accepted records.

    source_column  column of the accepted (clean) records holding it
    source_form    'voigt' or 'cartesian': the form the source column is in
    prefix         dataset columns are <prefix>_cartesian, <prefix>_voigt, <prefix>_irreps
    label          what it is, for the glossary
    """

    source_column: str
    source_form: str
    prefix: str
    label: str


@dataclass(frozen=True)
class DerivedColumn:
    """A dataset column of a derived quantity (``zoo.core.derived``): kind 'float', 'vector3' or 'bool'."""

    name: str
    description: str
    units: str
    kind: str = "float"


def derived_column(name: str, description: str, kind: str = "float", units_key: str | None = None) -> DerivedColumn:
    """A DerivedColumn with the units ``zoo.core.derived.UNITS`` gives `units_key` (default: the name); a flag
    has none."""
    units = "" if kind == "bool" else derived.UNITS.get(units_key or name, "")
    return DerivedColumn(name, description, units, kind)


NEUMANN_TEXT = (
    "Neumann residual (validate stage): max over the point group's operations R and over the record's tensor parts "
    "of norm(rotate(T, R) - T), divided by the largest part norm{floor} (Frobenius norms; 0 for exact symmetry)"
)
NEUMANN_METRIC = ("neumann_residual", "float",
                  "relative Neumann residual against the structure's point group (module docstring)")


# ------------------------------------------------------------------------------------------ shared helpers
def as_float_array(value: Any) -> np.ndarray:
    """One cell of a value column (nested lists, or numpy object arrays as read from Parquet) as float64."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    return np.asarray(value, dtype=np.float64)


def is_missing(value: Any) -> bool:
    """A null cell: None, or the float NaN pandas uses for a missing scalar."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def relative_asymmetry(matrix: np.ndarray) -> float:
    """max |a - a^T| / max |a| over the last two axes (0 for the zero matrix)."""
    scale = float(np.abs(matrix).max())
    return float(np.abs(matrix - np.swapaxes(matrix, -1, -2)).max()) / scale if scale > 0 else 0.0


def record_neumann_residual(parts: Sequence[np.ndarray], info: symmetry.SymmetryInfo) -> float:
    """max over parts and operations |rotate(T, R) - T|_F / (largest part norm |T|_F); Cartesian parts."""
    norms = [float(np.linalg.norm(part)) for part in parts]
    scale = max(norms)
    if scale == 0.0:
        return 0.0
    # zoo.core.symmetry.neumann_residual is relative to the part's own norm; undo that to compare across parts.
    absolute = [symmetry.neumann_residual(part, info) * norm for part, norm in zip(parts, norms)]
    return max(absolute) / scale


def finite_mean(values) -> float | None:
    """Mean of the finite values; None when there is none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def tensor_errors(voigt_pred: np.ndarray, voigt_true: np.ndarray, cart_pred: np.ndarray,
                  cart_true: np.ndarray) -> dict[str, float | None]:
    """component_mae (over the Voigt components) and relative_frobenius_error (records with a non-zero true tensor)."""
    n = len(cart_true)
    axes = tuple(range(1, cart_true.ndim))
    norms = np.sqrt((cart_true ** 2).sum(axis=axes))
    nonzero = norms > 0
    return {"component_mae": finite_mean(np.abs(voigt_pred - voigt_true).reshape(n, -1).mean(axis=1)),
            "relative_frobenius_error": finite_mean(np.sqrt(((cart_pred - cart_true) ** 2).sum(axis=axes))[nonzero]
                                                    / norms[nonzero])}


def mae_where_defined(pred: np.ndarray, true: np.ndarray) -> tuple[float | None, int]:
    """MAE over records where both are defined, and the number of records where the prediction is not."""
    defined = np.isfinite(pred) & np.isfinite(true)
    undefined = int((~np.isfinite(pred) & np.isfinite(true)).sum())
    return (finite_mean(np.abs(pred[defined] - true[defined])) if defined.any() else None), undefined


# ------------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class PublishedResult:
    """A published test result on the same data, printed beside ours (model cards, metrics JSON).

    metric   the name of our metric that measures the same quantity (zoo.nn.evaluation)
    value    the published number, as printed in the paper
    source   who, where
    setting  what differs from our evaluation (split, data filter, normalisation)
    """

    metric: str
    value: float
    source: str
    setting: str


@dataclass(frozen=True)
class PropertySpec:
    """Everything the pipeline needs to know about one property (the defaults and methods are a tensor's).

    name             short key used in file names, params and the CLI
    title            human-readable name
    units            units of the canonical value
    cartesian_shape  shape of one canonical Cartesian value (per part)
    voigt_shape      shape of its Voigt form, or None
    voigt_kind       which ``zoo.core.tensors`` Voigt convention applies: 'stiffness', 'piezo_stress', 'symmetric2'
    formula          e3nn CartesianTensor formula, or None for an invariant (phonon DOS)
    irreps           irreps string of one part (e3nn order)
    tensor_parts     the parts stored per record (dielectric keeps electronic, ionic and total)
    target_part      the part the model predicts
    mp_endpoint      Materials Project REST route
    mp_fields        fields the fetch requests from mp_endpoint (checked against emmet-core's document models
                     in the tests; dielectric and piezo documents carry no structure, which the fetch takes
                     from materials/summary)
    derived          names of the derived quantities ``zoo.core.derived`` computes for it
    citations        the data's source papers (``sources``: their keys)

    Stages:
    source_keys       raw record value keys clean reads (one calculation: they share a frame)
    alternative_key   a second raw column of the same tensor, measured as clean's candidate frame 'original'
    raw_values        the values of a raw record (RawValue), the same for every source
    stored_columns    the clean columns of the values (derived parts, ``derived_parts``, included)
    stored_form       'voigt' or 'cartesian': the form of the raw and clean values
    symmetric_value   the raw value is a symmetric matrix (clean keeps its symmetric part)
    metric_columns    validate's own metric columns (name, 'flag' | 'float' | 'text', description), between the shared
                      value checks and the structure checks
    value_codes       validate's reason codes of its own value checks, ranked (zoo.data.validation.reason_priority)
                      with the shared value checks, before the structure checks
    physics_codes     validate's reason codes of its physics checks, ranked after the structure and symmetry checks
                      and before the Neumann check
    validate_thresholds  keys of params.yaml's validate section that its checks read (``check_thresholds``,
                      ``suite_parameters``, ``record_metrics``); the validate stage refuses a key no spec names
    suite_columns     clean columns the expectation suite reads besides the values and metrics
    dataset_parts     the dataset's tensor columns (TensorPart)
    derived_columns   the dataset's derived-quantity columns, in file order
    derived_form      the form ('voigt' or 'cartesian') of each part passed to ``derived_quantities``
    derived_keys_from_validate  keys ``derived_quantities`` returns that the dataset takes from validate instead
    validation_facts  validate metric columns copied into the dataset: (name, units, description)
    headline          the evaluation's headline metric; parity: (quantity, axis label) of its parity plot
    zero_baseline     the all-zero tensor is a baseline of the evaluation (the null model: piezo)
    signed            the evaluation counts, per point group, predictions with the true sign at the true tensor's
                      largest component (a tensor whose sign carries the physics: piezo)
    learning_curve_metrics  metrics kept per learning-curve point besides the headline (zoo.nn.learning_curve)
    model_limitations lines the model card adds to its limitations
    printed_decimals  decimals `zoo predict` prints the predicted value with, in `units`
    snapshot, mp_api  where the values come from (SnapshotSource, MPSource)
    more_snapshots    further snapshot files of the property (elastic: two newer MP sets), read into the same raw
                      file; ``snapshots`` is all of them, `snapshot` first

    Models:
    predicted_parts   the parts a model of the property predicts by default (a ModelConfig may choose fewer);
                      () -> (target_part,)
    summed_part       (part, (summands...)): a stored part that is the sum of others, which a model derives from its
                      predictions instead of predicting it (dielectric total = electronic + ionic), or None
    spectrum_grid     the abscissa of a spectrum the model predicts (phonon: the DOS's frequency grid in cm^-1), for
                      losses on the spectrum's moments (zoo.nn.training.loss, mse_mean_frequency); None for a tensor
    eigenvalue_floors part -> the lower bound of its eigenvalues (physics: eps >= 1 for electronic and total, the
                      ionic part >= 0), for the output map that guarantees them (ModelConfig.output_map 'spd_log')
    published         published results on the same data (PublishedResult), the anchors our metrics are compared to
    metric_definitions (name, what it means) of the property's own metrics, written into its metrics document
    """

    name: str
    title: str
    units: str
    cartesian_shape: tuple[int, ...]
    voigt_shape: tuple[int, ...] | None
    voigt_kind: str | None
    formula: str | None
    irreps: str
    tensor_parts: tuple[str, ...]
    target_part: str
    mp_endpoint: str
    mp_fields: tuple[str, ...]
    derived: tuple[str, ...]
    citations: tuple[Citation, ...] = ()
    raw_values: tuple[RawValue, ...] = ()
    source_keys: tuple[str, ...] = ()
    alternative_key: str | None = None
    stored_columns: tuple[str, ...] = ()
    stored_form: str = "voigt"
    symmetric_value: bool = False
    metric_columns: tuple[tuple[str, str, str], ...] = ()
    value_codes: tuple[str, ...] = ()
    physics_codes: tuple[str, ...] = ()
    validate_thresholds: tuple[str, ...] = ()
    suite_columns: tuple[str, ...] = ()
    dataset_parts: tuple[TensorPart, ...] = ()
    derived_columns: tuple[DerivedColumn, ...] = ()
    derived_form: str = "voigt"
    derived_keys_from_validate: tuple[str, ...] = ()
    validation_facts: tuple[tuple[str, str, str], ...] = ()
    headline: str = "component_mae"
    parity: tuple[str, str] = ("voigt", "components")
    zero_baseline: bool = False
    signed: bool = False
    learning_curve_metrics: tuple[str, ...] = ()
    model_limitations: tuple[str, ...] = ()
    printed_decimals: int = 3
    snapshot: SnapshotSource | None = None
    more_snapshots: tuple[SnapshotSource, ...] = ()
    mp_api: MPSource | None = None
    suite_file: Path | None = None
    predicted_parts: tuple[str, ...] = ()
    summed_part: tuple[str, tuple[str, ...]] | None = None
    spectrum_grid: tuple[float, ...] | None = None
    eigenvalue_floors: tuple[tuple[str, float], ...] = ()
    published: tuple[PublishedResult, ...] = ()
    metric_definitions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.predicted_parts:
            object.__setattr__(self, "predicted_parts", (self.target_part,))

    @property
    def snapshots(self) -> tuple[SnapshotSource, ...]:
        return (self.snapshot, *self.more_snapshots) if self.snapshot is not None else ()

    @property
    def dataset_name(self) -> str:
        return f"mp-{self.name}-irreps"

    @property
    def model_name(self) -> str:
        return f"matten-{self.name}"

    @property
    def is_tensor(self) -> bool:
        return self.formula is not None

    @property
    def rank(self) -> int:
        return len(self.cartesian_shape) if self.is_tensor else 0

    @property
    def has_parts(self) -> bool:
        """Several stored tensor parts (dielectric): predictions carry a parts axis and per-part metrics."""
        return len(self.tensor_parts) > 1

    def output_parts(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """The parts a model predicting `parts` returns: those, then the summed part when all its summands are."""
        if self.summed_part is not None and set(self.summed_part[1]) <= set(parts):
            return (*parts, self.summed_part[0])
        return tuple(parts)

    def eigenvalue_floor(self, part: str) -> float:
        """The lower bound of `part`'s eigenvalues; ValueError when the property states none."""
        floors = dict(self.eigenvalue_floors)
        if part not in floors:
            raise ValueError(f"{self.name} states no eigenvalue floor for part {part!r} (known: {sorted(floors)})")
        return floors[part]

    @property
    def sources(self) -> tuple[str, ...]:
        """Bibliography keys of the data's source papers."""
        return tuple(citation.key for citation in self.citations)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape of one stored (raw and clean) value."""
        return self.voigt_shape if self.stored_form == "voigt" else self.cartesian_shape

    @property
    def expectation_suite(self) -> Path:
        """The Great Expectations suite of the validate stage (default ``schemas/expectations/<name>.json``)."""
        return self.suite_file or paths.EXPECTATION_SUITES_DIR / f"{self.name}.json"

    @property
    def target_column(self) -> str:
        """The dataset column a model predicts: its target part in irreps form."""
        parts = self.dataset_parts
        if len(parts) == 1:
            return f"{parts[0].prefix}_irreps"
        (part,) = [p for p in parts if p.source_column == self.target_part]
        return f"{part.prefix}_irreps"

    # ---- clean
    def clean_values(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The source values read from a raw record, brought to the stored units; ValueError (saying why) for
        values of the right shape that are still not this property's (clean's 'wrong_shape')."""
        return parts

    def derived_parts(self, parts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Parts stored but not given by the source (Cartesian, computed from the source parts)."""
        return {}

    # ---- validate
    def check_thresholds(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Its validate thresholds (`validate_thresholds` of params.yaml's validate section) checked and normalised;
        a ValueError names a bad one. Default: each a tolerance, a finite number >= 0."""
        return {key: check_non_negative(value, f"validate.{key}") for key, value in values.items()}

    def suite_parameters(self, thresholds: Mapping[str, Any]) -> dict[str, float]:
        """The values of its expectation suite's ``$PARAMETER`` references that come from its thresholds."""
        return {}

    def record_metrics(self, values: Any, info: symmetry.SymmetryInfo | None, params: Any) -> dict[str, Any]:
        """The metric_columns (and for a tensor the Neumann residual) of one record.

        Tensor: `values` are the stored arrays (in stored_columns order; present, of their shape and finite),
        `info` the structure's symmetry (None when it could not be analysed). Invariant: `values` maps each
        stored column to its cell as read. `params`: the validate stage's ValidationParams (its own thresholds in
        ``params.thresholds``, by the keys of `validate_thresholds`).
        """
        out: dict[str, Any] = {"neumann_residual": None}
        if info is not None:
            out["neumann_residual"] = record_neumann_residual(self.cartesian_parts(values), info)
        return out

    def structure_metrics(self, values: Sequence[np.ndarray], structure: Any, info: symmetry.SymmetryInfo,
                          params: Any) -> dict[str, Any]:
        """Metric columns of a tensor record that need its structure (a pymatgen Structure whose symmetry `info`
        was found); the stored arrays as for record_metrics."""
        return {}

    def cartesian_parts(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stored arrays as Cartesian tensors."""
        if self.stored_form == "voigt":
            return [np.asarray(tensors.voigt_to_cartesian(a, self.voigt_kind)) for a in arrays]
        return [np.asarray(a) for a in arrays]

    # ---- build
    def derived_quantities(self, *values: np.ndarray) -> dict[str, Any]:
        """``zoo.core.derived`` quantities of one record: one argument per dataset part, in derived_form (an
        invariant: ``invariant_rows``'s arguments)."""
        return {}

    # ---- evaluate
    def prediction_quantities(self, values: np.ndarray, structures: Sequence[Any],
                              forms: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-record quantities of predicted or true values beyond the shared ones (`forms`: a tensor's batched
        'cartesian' and 'voigt' arrays), NaN where undefined."""
        return {}

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray],
                      mask: np.ndarray) -> dict[str, Any]:
        """The property's own test metrics of a group of records (`pick(quantities, key)`: the group's values)."""
        return {}

    # ---- predictions (zoo.load)
    def prediction_parts(self, value: np.ndarray, structure: Any, parts: tuple[str, ...] | None = None,
                         ) -> tuple[np.ndarray, dict[str, Callable[[], Any]]]:
        """(raw form, {part: a callable building its pymatgen object}) of one predicted Cartesian value (raw: the
        Voigt form; `parts`: the parts along the value's first axis, for a property with several). Built on demand:
        pymatgen's tensor modules take a second to import, and most predictions are read as numbers."""
        def tensor():
            from pymatgen.core.tensors import Tensor

            return Tensor(value)

        return np.asarray(tensors.cartesian_to_voigt(value, self.voigt_kind)), {self.target_part: tensor}

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any,
                           parts: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``zoo.core.derived`` quantities of one prediction (ValueError where they are undefined)."""
        return {}

    def prediction_flags(self, derived: Mapping[str, Any], symbols: Sequence[str],
                         raw: np.ndarray | None = None) -> list[tuple[str, str]]:
        """(code, message) of each reason to distrust one prediction that is the property's own (a metal for the
        dielectric model, an unstable stiffness, a phonon spectrum past the grid, ...; `raw`: the prediction's raw
        form); zoo.release.applicability adds the shared ones."""
        return []

    def prediction_dict(self, raw: np.ndarray) -> dict[str, Any]:
        """The JSON form of a prediction's raw value."""
        return {"voigt": raw.tolist(),
                "frame": "Cartesian frame of the input structure; Voigt order 11,22,33,23,13,12"}

    def row_value(self, row: Mapping[str, Any], part: str | None):
        """The pymatgen object of a dataset row's value (`part`: which tensor part, where there are several)."""
        from pymatgen.core.tensors import Tensor

        column = next(p for p in self.dataset_parts if part is None or p.source_column == part)
        return Tensor(np.asarray(row[f"{column.prefix}_cartesian"], dtype=np.float64))

    @property
    def row_marker(self) -> str:
        """A dataset column only this property's rows have (how ``row_value``'s caller recognises a row)."""
        return f"{self.dataset_parts[0].prefix}_cartesian"
