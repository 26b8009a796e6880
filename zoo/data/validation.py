"""Physics validation of clean records (the validate stage): every record is accepted or quarantined with reasons.

Flow of ``validate(clean, prop, params)``:

1. A record with a ``clean_issue`` is quarantined with that code; nothing else is computed for it.
2. For every other record ``compute_metrics`` derives physics metric columns (table ``METRIC_COLUMNS``) from the
   clean columns: shape and finiteness of the values, Voigt asymmetry and eigenvalues, Hill moduli, the Neumann
   residual against the stored structure's point group, DOS checks, structure sanity (volume, shortest
   interatomic distance, element symbols).
3. The property's Great Expectations suite, stored as JSON in ``schemas/expectations/<prop>.json``, holds the
   expectations on those columns (and, through the custom expectations defined here, on the tensor columns
   themselves). Thresholds are GX suite parameters (``{"$PARAMETER": name}``) filled from ``ValidationParams``
   and from ``zoo.core.tensors.SYMMETRY_RTOL``, so each threshold has one home. The suite runs in an ephemeral GX
   context with result format COMPLETE; each failing row index becomes the expectation's ``meta.reason_code``.
   With a docs directory, GX's Data Docs of the run are built there, byte-identical for the same inputs (section
   "reproducible Data Docs").
4. A record's ``reasons`` are its codes sorted by ``REASON_PRIORITY``; ``primary_reason`` is the first. A record
   with no reason is accepted.

Null metrics. A metric is null where a more basic check of the same record already fails (no eigenvalues of a
tensor holding NaN, no Neumann residual without a usable structure). GX column-map expectations skip nulls, so a
record is given the code of its basic failure, not codes for the consequences. The one intended overlap: the
custom "symmetric and positive definite" expectation also fails for an asymmetric Voigt matrix (it is not SPD),
so such a record has both codes, elastic_asymmetric first.

Neumann residual. For each tensor part T (Cartesian, in the frame of the stored structure) and each Cartesian
point-group operation R of the structure (``zoo.core.symmetry.analyze``): |rotate(T, R) - T|_F, maximised over R and
over the record's parts, divided by the largest part norm |T|_F of the record (dielectric: the small ionic part
is measured against the total, not against its own rounding-dominated norm). 0 for a tensor that obeys
Neumann's principle exactly. A piezo tensor with every component at most ``piezo_zero_atol_c_m2`` is zero within
the data's precision and has residual 0 (its sign pattern is noise).

Tolerances (defaults; the stage reads them from params.yaml section ``validate``):

NEUMANN_TOLERANCE = 1e-3
    Measured on the cleaned snapshot: good records < 1e-3, frame failures >= 0.05 (``NEUMANN_TOLERANCE``'s comment).
MIN_INTERATOMIC_DISTANCE_A = 0.5
    Shorter than any bond (H2: 0.74 A); two sites closer than this are one atom counted twice.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import datetime
import functools
import itertools
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before GX is imported: it reads this at import

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.core.suite_parameters import SuiteParameterDict  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import ColumnMapExpectation  # noqa: E402
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent  # noqa: E402
from great_expectations.render.renderer import ValidationResultsPageRenderer  # noqa: E402
from great_expectations.render.renderer.renderer import renderer  # noqa: E402
from great_expectations.render.renderer_configuration import (  # noqa: E402
    RendererConfiguration,
    RendererValueType,
)
from great_expectations.render.view import (  # noqa: E402
    DefaultJinjaIndexPageView,
    DefaultJinjaPageView,
)
from pymatgen.analysis.elasticity import ElasticTensor  # noqa: E402
from pymatgen.core import Element, Structure  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core import paths, symmetry, tensors
from zoo.core.io import atomic_write_bytes, sha256_bytes, write_json  # noqa: E402
from zoo.data import merging  # noqa: E402
from zoo.data.cleaning import ISSUE_CODES, parquet_bytes  # noqa: E402
from zoo.properties import PHONON_GRID_CM, PropertySpec  # noqa: E402

SUITES_DIR = paths.EXPECTATION_SUITES_DIR

# Neumann tolerance (relative residual, module docstring): the product's promise that accepted tensors obey the
# crystal's symmetry to 1e-3. Measured on the snapshot after the clean stage (default clean params, which keep a
# frame whose residual is below 1e-3 and project noise up to 0.05 onto the invariant subspace): the 57 records clean
# could not put in any frame (elastic 20, dielectric 7, piezo 30, 'unresolved') are >= 0.050, every other record is
# below 1e-3, so the tolerance separates them with a wide margin.
NEUMANN_TOLERANCE = 1e-3
MIN_INTERATOMIC_DISTANCE_A = 0.5
# A cell whose volume is below this fraction of |a||b||c| has coplanar lattice vectors up to rounding.
_COPLANAR_RTOL = 1e-9
# The frequency grid is printed as integers in every source; anything off by more than rounding is another grid.
PHONON_GRID_ATOL_CM = 1e-6

# The clean stage's issue codes (a record with one is quarantined with it), then validate's own codes: one fixed
# priority order, data integrity first, then the structure, then physics. ``primary_reason`` is the first code
# of a record in this order.
CLEAN_ISSUE_CODES: tuple[str, ...] = ISSUE_CODES
VALIDATE_CODES: tuple[str, ...] = (
    "nan_value", "dos_not_finite", "dos_empty", "dos_wrong_grid",
    "structure_nonpositive_volume", "structure_overlapping_atoms", "symmetry_undetermined",
    "elastic_asymmetric", "elastic_not_positive_definite", "modulus_out_of_range",
    "dielectric_asymmetric", "dielectric_eigenvalue_below_one", "dielectric_ionic_not_psd",
    "piezo_nonzero_centrosymmetric", "neumann_violation", "dos_negative",
    *merging.MERGE_CODES,  # after every check: only a record that passed them takes part in the merge
)
REASON_PRIORITY: tuple[str, ...] = CLEAN_ISSUE_CODES + VALIDATE_CODES


@dataclass(frozen=True)
class ValueColumn:
    """A clean-format column holding (part of) a record's value.

    name   column name in the clean frame
    shape  shape of one stored value (Voigt for elastic and piezo, Cartesian for dielectric)
    """

    name: str
    shape: tuple[int, ...]


# The clean-format value columns of each property (the clean record format of the team brief).
_VALUE_COLUMNS: dict[str, tuple[ValueColumn, ...]] = {
    "elastic": (ValueColumn("stiffness_voigt", properties.ELASTIC.voigt_shape),),
    "dielectric": tuple(ValueColumn(part, properties.DIELECTRIC.cartesian_shape)
                        for part in properties.DIELECTRIC.tensor_parts),
    "piezo": (ValueColumn("piezo_voigt", properties.PIEZO.voigt_shape),),
    "phonon": (ValueColumn("frequencies_cm", PHONON_GRID_CM.shape), ValueColumn("dos", PHONON_GRID_CM.shape)),
}


def value_columns(spec: PropertySpec) -> tuple[ValueColumn, ...]:
    """The columns of the clean frame that hold a property's values."""
    return _VALUE_COLUMNS[spec.name]


# ------------------------------------------------------------------------------------------------------ params
@dataclass(frozen=True)
class ValidationParams:
    """Thresholds of the physics checks (params.yaml section ``validate``; every key optional).

    neumann_tolerance           max relative Neumann residual of an accepted tensor record
    min_interatomic_distance_a  shortest allowed distance between two sites (periodic images included), A
    k_vrh_range_gpa             [min, max] of the Hill bulk modulus, GPa (checked for SPD stiffness only)
    g_vrh_range_gpa             [min, max] of the Hill shear modulus, GPa
    dielectric_eigenvalue_atol  slack on eps >= 1 (electronic, total) and on ionic >= 0, for rounding: the snapshot
                                prints 8 decimals and ionic = total - electronic carries both roundings (after
                                clean, the snapshot's smallest ionic eigenvalue is 0.0, electronic 1.63)
    piezo_zero_atol_c_m2        a piezo tensor with every component at most this in absolute value is zero (C/m^2)
    holdout_sources             source files kept out of training: their materials that no other file holds form
                                the dataset's external split (zoo.data.merging)
    merge_atol, merge_rtol      when two records of one material agree (zoo.data.merging; atol in the property's
                                units)
    workers                     processes computing the metrics (1: in this process); does not change results
    """

    neumann_tolerance: float = NEUMANN_TOLERANCE
    min_interatomic_distance_a: float = MIN_INTERATOMIC_DISTANCE_A
    k_vrh_range_gpa: tuple[float, float] = (0.0, 1000.0)
    g_vrh_range_gpa: tuple[float, float] = (0.0, 1000.0)
    dielectric_eigenvalue_atol: float = 1e-4
    piezo_zero_atol_c_m2: float = 1e-4
    holdout_sources: tuple[str, ...] = ()
    merge_atol: float = merging.MergeParams.merge_atol
    merge_rtol: float = merging.MergeParams.merge_rtol
    workers: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"validate.workers must be a positive integer, got {self.workers!r}")
        sources = self.holdout_sources
        if isinstance(sources, str) or not all(isinstance(item, str) and item for item in sources):
            raise ValueError(f"validate.holdout_sources must be a list of source file paths, got {sources!r}")
        object.__setattr__(self, "holdout_sources", tuple(sources))
        for name in ("neumann_tolerance", "min_interatomic_distance_a", "dielectric_eigenvalue_atol",
                     "piezo_zero_atol_c_m2", "merge_atol", "merge_rtol"):
            _check_non_negative(getattr(self, name), f"validate.{name}")
        for name in ("k_vrh_range_gpa", "g_vrh_range_gpa"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(_is_real(v) for v in value) or not value[0] < value[1]):
                raise ValueError(f"validate.{name} must be [min, max] with min < max (GPa), got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> ValidationParams:
        """From params.yaml's ``validate`` section; unknown keys are refused (a typo would silently do nothing)."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"validate params: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**section)

    def expectation_parameters(self) -> dict[str, float]:
        """The values of the ``$PARAMETER`` references in the suites."""
        return {
            "symmetry_rtol": tensors.SYMMETRY_RTOL,
            "neumann_tolerance": self.neumann_tolerance,
            "min_interatomic_distance_a": self.min_interatomic_distance_a,
            "k_vrh_min_gpa": self.k_vrh_range_gpa[0],
            "k_vrh_max_gpa": self.k_vrh_range_gpa[1],
            "g_vrh_min_gpa": self.g_vrh_range_gpa[0],
            "g_vrh_max_gpa": self.g_vrh_range_gpa[1],
            "eps_min_eigenvalue": 1.0 - self.dielectric_eigenvalue_atol,
            "ionic_min_eigenvalue": -self.dielectric_eigenvalue_atol,
            "piezo_zero_atol_c_m2": self.piezo_zero_atol_c_m2,
        }


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_non_negative(value: Any, name: str) -> None:
    if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


# ----------------------------------------------------------------------------------------- custom expectations
def _matrix(value: Any) -> np.ndarray:
    """One cell of a tensor column (nested lists, or numpy object arrays as read from Parquet) as float64."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    return np.asarray(value, dtype=np.float64)


def relative_asymmetry(matrix: np.ndarray) -> float:
    """max |a - a^T| / max |a| over the last two axes (0 for the zero matrix)."""
    scale = float(np.abs(matrix).max())
    return float(np.abs(matrix - np.swapaxes(matrix, -1, -2)).max()) / scale if scale > 0 else 0.0


def is_symmetric_positive_definite(value: Any, symmetry_rtol: float) -> bool:
    """Symmetric within symmetry_rtol (relative) and every eigenvalue of the symmetric part > 0."""
    matrix = _matrix(value)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.isfinite(matrix).all():
        return False
    if relative_asymmetry(matrix) > symmetry_rtol:
        return False
    return bool(np.linalg.eigvalsh(0.5 * (matrix + matrix.T))[0] > 0.0)


def is_zero_tensor(value: Any, atol: float) -> bool:
    """Every component at most atol in absolute value (the same test on a Voigt form without factors)."""
    matrix = _matrix(value)
    return bool(np.isfinite(matrix).all() and (matrix.size == 0 or np.abs(matrix).max() <= atol))


class ColumnValuesSymmetricPositiveDefinite(ColumnMapMetricProvider):
    """Per row: the value is a square matrix, symmetric within ``symmetry_rtol`` and positive definite."""

    condition_metric_name = "column_values.symmetric_positive_definite"
    condition_value_keys = ("symmetry_rtol",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, symmetry_rtol: float, **kwargs) -> pd.Series:
        return column.map(lambda value: is_symmetric_positive_definite(value, symmetry_rtol))


class _TemplatedColumnMapExpectation(ColumnMapExpectation):
    """A column-map expectation whose Data Docs sentence comes from ``_prescriptive_template`` alone.

    GX's Data Docs pages use the legacy prescriptive renderer, whose default prints the raw kwargs; this one
    renders the same sentence as the atomic renderer (row condition included, as "If ..., then ...").
    """

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None, **kwargs):
        renderer_configuration = cls._prescriptive_template(RendererConfiguration(
            configuration=configuration, result=result, runtime_configuration=runtime_configuration))
        params = {name: param["value"] for name, param in renderer_configuration.params.dict().items() if param}
        return [RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": renderer_configuration.template_str, "params": params},
        )]


class ExpectColumnValuesToBeSymmetricPositiveDefinite(_TemplatedColumnMapExpectation):
    """Expect each value to be a symmetric positive definite matrix (e.g. a Born-stable 6x6 Voigt stiffness).

    Symmetric: max |a - a^T| <= symmetry_rtol * max |a|. Positive definite: the smallest eigenvalue of
    (a + a^T)/2 is > 0.
    """

    map_metric = "column_values.symmetric_positive_definite"
    success_keys = ("mostly", "symmetry_rtol")
    symmetry_rtol: Union[float, SuiteParameterDict]

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """How Data Docs state the expectation."""
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="symmetry_rtol", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = (
            "$column values must be symmetric matrices (max |a - a^T| at most $symmetry_rtol of max |a|) "
            "that are positive definite."
        )
        return renderer_configuration


class ColumnValuesZeroTensor(ColumnMapMetricProvider):
    """Per row: every component of the value is at most ``atol`` in absolute value."""

    condition_metric_name = "column_values.zero_tensor"
    condition_value_keys = ("atol",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, atol: float, **kwargs) -> pd.Series:
        return column.map(lambda value: is_zero_tensor(value, atol))


class ExpectColumnValuesToBeZeroTensors(_TemplatedColumnMapExpectation):
    """Expect each value to be a zero tensor (every component at most atol in absolute value).

    With a row condition on ``is_centrosymmetric``: Neumann's principle makes every odd-rank polar tensor (the
    piezoelectric e_ijk) vanish in a crystal whose point group holds the inversion.
    """

    map_metric = "column_values.zero_tensor"
    success_keys = ("mostly", "atol")
    atol: Union[float, SuiteParameterDict]

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        """How Data Docs state the expectation."""
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="atol", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = "$column values must be zero tensors (every component at most $atol)."
        return renderer_configuration


# ------------------------------------------------------------------------------------------------------ metrics
# Metric columns per property: (name, type, what it is). type "flag" is True/False (True = check passed), "float"
# is float64. Every metric is null where a more basic check of the record already fails (module docstring).
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
    ("neumann_residual", "float", "relative Neumann residual against the structure's point group (module docstring)"),
)
METRIC_COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "elastic": _TENSOR_COMMON + (
        ("voigt_asymmetry", "float", "max |c - c^T| / max |c| of the 6x6 Voigt stiffness"),
        ("min_eigenvalue", "float", "smallest eigenvalue of the symmetric part of the Voigt stiffness, GPa"),
        ("k_vrh", "float", "Hill bulk modulus, GPa (pymatgen ElasticTensor; SPD stiffness only)"),
        ("g_vrh", "float", "Hill shear modulus, GPa (pymatgen ElasticTensor; SPD stiffness only)"),
    ) + _STRUCTURE_METRICS + _SYMMETRY_METRICS,
    "dielectric": _TENSOR_COMMON + (
        ("dielectric_asymmetry", "float", "max over the parts of max |a - a^T| / max |a|"),
        ("electronic_min_eig", "float", "smallest eigenvalue of the symmetric part of the electronic eps"),
        ("ionic_min_eig", "float", "smallest eigenvalue of the symmetric part of the ionic eps"),
        ("total_min_eig", "float", "smallest eigenvalue of the symmetric part of the total eps"),
    ) + _STRUCTURE_METRICS + _SYMMETRY_METRICS,
    "piezo": _TENSOR_COMMON + (
        ("piezo_max_abs", "float", "largest |e_ij| of the Voigt (= Cartesian) components, C/m^2"),
    ) + _STRUCTURE_METRICS + _SYMMETRY_METRICS,
    "phonon": (
        ("values_present", "flag", "frequencies_cm and dos are non-null"),
        ("grid_matches", "flag", f"frequencies_cm is the {len(PHONON_GRID_CM)}-point grid 0..1000 cm^-1"),
        ("dos_nonempty", "flag", "the DOS has at least one point and is not all zero"),
        ("values_shape_ok", "flag", "the DOS has one value per grid point"),
        ("dos_finite", "flag", "no NaN or infinity in the DOS"),
        ("dos_min", "float", "smallest DOS value"),
        ("dos_max", "float", "largest DOS value"),
    ) + _STRUCTURE_METRICS,
}


def metric_names(prop: str | PropertySpec) -> list[str]:
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    return [name for name, _, _ in METRIC_COLUMNS[spec.name]]


class StructureCheck(NamedTuple):
    metrics: dict[str, Any]
    symmetry: symmetry.SymmetryInfo | None


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
        info = symmetry.analyze(structure)
    except ValueError:
        metrics["symmetry_found"] = False
        return StructureCheck(metrics, None)
    metrics["symmetry_found"] = True
    return StructureCheck(metrics, info)


def _is_missing(value: Any) -> bool:
    """A null cell: None, or the float NaN pandas uses for a missing scalar."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _read_values(row: Mapping[str, Any], columns: Sequence[ValueColumn]) -> tuple[dict[str, Any], list | None]:
    """values_present / values_shape_ok / values_finite, and the arrays when all three hold."""
    flags: dict[str, Any] = {"values_present": not any(_is_missing(row[c.name]) for c in columns),
                             "values_shape_ok": None, "values_finite": None}
    if not flags["values_present"]:
        return flags, None
    arrays = []
    for column in columns:
        try:
            array = _matrix(row[column.name])
        except (TypeError, ValueError):  # ragged nesting or non-numbers
            array = None
        arrays.append(array)
    flags["values_shape_ok"] = all(a is not None and a.shape == c.shape for a, c in zip(arrays, columns))
    if not flags["values_shape_ok"]:
        return flags, None
    flags["values_finite"] = all(bool(np.isfinite(a).all()) for a in arrays)
    return flags, arrays if flags["values_finite"] else None


def neumann_residual(parts: Sequence[np.ndarray], info: symmetry.SymmetryInfo) -> float:
    """max over parts and operations |rotate(T, R) - T|_F / (largest part norm |T|_F); Cartesian parts."""
    norms = [float(np.linalg.norm(part)) for part in parts]
    scale = max(norms)
    if scale == 0.0:
        return 0.0
    # zoo.core.symmetry.neumann_residual is relative to the part's own norm; undo that to compare across parts.
    absolute = [symmetry.neumann_residual(part, info) * norm for part, norm in zip(parts, norms)]
    return max(absolute) / scale


def _elastic_metrics(arrays, info, params) -> dict[str, Any]:
    (c,) = arrays
    symmetric = 0.5 * (c + c.T)
    out = {"voigt_asymmetry": relative_asymmetry(c), "min_eigenvalue": float(np.linalg.eigvalsh(symmetric)[0]),
           "k_vrh": None, "g_vrh": None, "neumann_residual": None}
    if out["voigt_asymmetry"] > tensors.SYMMETRY_RTOL:
        return out
    if out["min_eigenvalue"] > 0.0:  # Hill moduli of an unstable (non-SPD) stiffness mean nothing
        elastic = ElasticTensor.from_voigt(symmetric)
        out["k_vrh"], out["g_vrh"] = float(elastic.k_vrh), float(elastic.g_vrh)
    if info is not None:
        out["neumann_residual"] = neumann_residual([tensors.stiffness_voigt_to_cartesian(symmetric)], info)
    return out


def _dielectric_metrics(arrays, info, params) -> dict[str, Any]:
    parts = dict(zip(properties.DIELECTRIC.tensor_parts, arrays))
    symmetric = {name: 0.5 * (a + a.T) for name, a in parts.items()}
    out: dict[str, Any] = {"dielectric_asymmetry": max(relative_asymmetry(a) for a in parts.values())}
    for name, matrix in symmetric.items():
        out[f"{name}_min_eig"] = float(np.linalg.eigvalsh(matrix)[0])
    out["neumann_residual"] = None
    if info is not None and out["dielectric_asymmetry"] <= tensors.SYMMETRY_RTOL:
        out["neumann_residual"] = neumann_residual(list(symmetric.values()), info)
    return out


def _piezo_metrics(arrays, info, params) -> dict[str, Any]:
    (e,) = arrays
    cartesian = tensors.piezo_voigt_to_cartesian(e)
    out = {"piezo_max_abs": float(np.abs(e).max()), "neumann_residual": None}
    if info is not None:
        # A tensor within the data's precision of zero obeys every point group; its sign pattern is noise.
        is_zero = out["piezo_max_abs"] <= params.piezo_zero_atol_c_m2
        out["neumann_residual"] = 0.0 if is_zero else neumann_residual([cartesian], info)
    return out


_TENSOR_METRICS: dict[str, Callable[[list, Any, ValidationParams], dict[str, Any]]] = {
    "elastic": _elastic_metrics, "dielectric": _dielectric_metrics, "piezo": _piezo_metrics,
}


def _phonon_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: None for name in metric_names("phonon")}
    out["values_present"] = not (_is_missing(row["frequencies_cm"]) or _is_missing(row["dos"]))
    if not out["values_present"]:
        return out
    try:
        grid = _matrix(row["frequencies_cm"])
        out["grid_matches"] = grid.shape == PHONON_GRID_CM.shape and bool(
            np.allclose(grid, PHONON_GRID_CM, rtol=0.0, atol=PHONON_GRID_ATOL_CM))
    except (TypeError, ValueError):
        out["grid_matches"] = False
    try:
        dos = _matrix(row["dos"])
    except (TypeError, ValueError):
        out["values_shape_ok"] = False
        return out
    out["dos_nonempty"] = dos.size > 0 and bool(np.any(dos != 0.0))  # NaN != 0: a NaN DOS is not "empty"
    if not out["dos_nonempty"]:
        return out
    out["values_shape_ok"] = dos.shape == PHONON_GRID_CM.shape
    if not out["values_shape_ok"]:
        return out
    out["dos_finite"] = bool(np.isfinite(dos).all())
    if out["dos_finite"]:
        out["dos_min"], out["dos_max"] = float(dos.min()), float(dos.max())
    return out


def _metric_rows(spec_name: str, params: ValidationParams, records: Sequence[Mapping[str, Any]]) -> list[list]:
    """Metric values of records (dicts of structure_json and the value columns), in METRIC_COLUMNS order."""
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
                out.update(_TENSOR_METRICS[spec.name](arrays, check.symmetry, params))
        else:
            out = _phonon_metrics(row)
        out.update(check.metrics)
        rows.append([out.get(name) for name in names])
    return rows


def compute_metrics(clean: pd.DataFrame, prop: str | PropertySpec, params: ValidationParams) -> pd.DataFrame:
    """The metric columns (``METRIC_COLUMNS[prop]``, in that order) of every row of `clean`, same index.

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
    return _typed(pd.DataFrame(rows, columns=metric_names(spec), index=clean.index, dtype=object), spec)


def _typed(frame: pd.DataFrame, spec: PropertySpec) -> pd.DataFrame:
    """Float metrics as float64; flags as object columns holding True, False or None (not NaN)."""
    for name, kind, _ in METRIC_COLUMNS[spec.name]:
        if kind == "float":
            frame[name] = pd.to_numeric(frame[name].astype(object).where(frame[name].notna(), np.nan)).astype(np.float64)
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


# ---------------------------------------------------------------------------------------------------- the suites
def suite_path(prop: str) -> Path:
    return SUITES_DIR / f"{properties.get(prop).name}.json"


def load_suite(prop: str) -> gx.ExpectationSuite:
    """The property's GX suite from schemas/expectations/<prop>.json; every expectation must carry a reason code."""
    path = suite_path(prop)
    with open(path, encoding="utf-8") as handle:
        as_dict = json.load(handle)
    suite = gx.ExpectationSuite(**as_dict)
    for expectation in suite.expectations:
        code = (expectation.meta or {}).get("reason_code")
        if code not in VALIDATE_CODES + CLEAN_ISSUE_CODES:
            raise ValueError(f"{path}: expectation {type(expectation).__name__} on "
                             f"{getattr(expectation, 'column', '?')} has reason_code {code!r}, not one of "
                             f"REASON_PRIORITY")
    return suite


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result: its configuration (parameters resolved), success and counts, failing rows."""

    config: dict[str, Any]
    reason_code: str
    success: bool
    element_count: int
    missing_count: int
    unexpected_count: int
    unexpected_index: tuple[Any, ...]

    def stats(self) -> dict[str, Any]:
        return {"expectation": self.config, "reason_code": self.reason_code, "success": self.success,
                "element_count": self.element_count, "missing_count": self.missing_count,
                "unexpected_count": self.unexpected_count}


def run_suite(batch: pd.DataFrame, prop: str, params: ValidationParams,
              docs_dir: str | os.PathLike | None = None) -> list[ExpectationOutcome]:
    """Run the property's suite on `batch` (metric and value columns) in an ephemeral GX context.

    With `docs_dir`, GX's own Data Docs site for this run is built there (the directory is replaced).
    Raises ValueError if an expectation raised inside GX (a missing column, a bad parameter).
    """
    spec = properties.get(prop)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (context.data_sources.add_pandas(f"clean-{spec.name}")
                        .add_dataframe_asset(spec.name).add_batch_definition_whole_dataframe("all-records"))
    suite = context.suites.add(load_suite(spec.name))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate-{spec.name}", data=batch_definition, suite=suite))
    with _docs_site(context, docs_dir) as site:
        result = definition.run(batch_parameters={"dataframe": batch},
                                expectation_parameters=params.expectation_parameters(),
                                result_format={"result_format": "COMPLETE"}, run_id=docs_run_id(batch))
        if site is not None:
            context.build_data_docs(site_names=[site])
    outcomes = []
    for item in result.results:
        config = item.expectation_config.to_json_dict()
        config["kwargs"].pop("batch_id", None)
        config.pop("id", None)  # a fresh uuid per run
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise ValueError(f"validate {spec.name}: expectation {config['type']} on {config['kwargs'].get('column')} "
                             f"raised: {item.exception_info.get('exception_message')}")
        res = item.result
        if len(res.get("unexpected_index_list") or ()) != int(res.get("unexpected_count", 0)):
            raise ValueError(f"validate {spec.name}: GX listed {len(res.get('unexpected_index_list') or ())} failing "
                             f"rows of {res.get('unexpected_count')} for {config['type']} on "
                             f"{config['kwargs'].get('column')}: a record would escape its reason code")
        outcomes.append(ExpectationOutcome(
            config=config, reason_code=config["meta"]["reason_code"], success=bool(item.success),
            element_count=int(res.get("element_count", 0)), missing_count=int(res.get("missing_count", 0)),
            unexpected_count=int(res.get("unexpected_count", 0)),
            unexpected_index=tuple(res.get("unexpected_index_list") or ())))
    return outcomes


# ------------------------------------------------------------------------------------ reproducible Data Docs
# The Data Docs are a DVC output, and the same inputs must give the same bytes (zoo.release.determinism). GX stamps a page
# with the run's identifier (its time also names the folder validations/<suite>/<run_name>/<run_time>/), the
# batch's load time, the time of rendering (a query string on the logo's URL) and random element ids. So the run
# is identified by its data (``docs_run_id``), and the renderer and views below, which ``_docs_site`` configures
# the site with, leave out the times and number the ids.

# No time belongs to the inputs (the snapshot, the clean frame and the params carry none), so every run is dated
# the Unix epoch, the usual fixed date of reproducible builds; the run name, the sha256 of the validated batch,
# tells runs on different data apart.
DOCS_RUN_TIME = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def docs_run_id(batch: pd.DataFrame) -> RunIdentifier:
    """The GX run identifier of validating `batch`: a function of the batch alone."""
    return RunIdentifier(run_name=f"sha256-{sha256_bytes(_parquet_bytes(batch))[:16]}", run_time=DOCS_RUN_TIME)


class ReproducibleValidationResultsPageRenderer(ValidationResultsPageRenderer):
    """GX's validation page without the batch marker ``ge_load_time`` (the wall-clock time the batch was loaded);
    the marker that identifies the data, ``pandas_data_fingerprint``, stays."""

    def render(self, validation_results, suite_parameters=None):
        shown = copy.copy(validation_results)
        shown.meta = {**validation_results.meta, "batch_markers": {
            key: value for key, value in (validation_results.meta.get("batch_markers") or {}).items()
            if key != "ge_load_time"}}
        return super().render(shown, suite_parameters)


class _ReproducibleView:
    """Jinja filters of GX's page views, made free of times and random numbers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._element_ids = itertools.count()

    def add_data_context_id_to_url(self, url: str, add_datetime: bool = True) -> str:
        """The URL as it is: GX appends the time of rendering and the data context's id (a tracking query)."""
        return url

    def generate_html_element_uuid(self, prefix: str | None = None) -> str:
        """GX suffixes element ids with a uuid4; a count gives distinct suffixes without randomness."""
        return f"{prefix or ''}{next(self._element_ids)}"


class ReproduciblePageView(_ReproducibleView, DefaultJinjaPageView):
    """The expectation suite and validation pages."""


class ReproducibleIndexPageView(_ReproducibleView, DefaultJinjaIndexPageView):
    """The index page."""


def _ours(class_name: str) -> dict[str, str]:
    return {"module_name": __name__, "class_name": class_name}


@contextlib.contextmanager
def _docs_site(context, docs_dir: str | os.PathLike | None):
    """A GX Data Docs site building into a fresh temporary sibling of docs_dir, moved onto docs_dir on success."""
    if docs_dir is None:
        yield None
        return
    target = Path(docs_dir).resolve()  # GX wants an absolute base_directory
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        context.add_data_docs_site("zoo", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staging)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": _ours("ReproducibleIndexPageView")},
            # merged by GX into its default sections (expectations, validations, profiling)
            "site_section_builders": {
                "expectations": {"view": _ours("ReproduciblePageView")},
                "validations": {"renderer": _ours("ReproducibleValidationResultsPageRenderer"),
                                "view": _ours("ReproduciblePageView")},
            },
        })
        yield "zoo"
        _replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_directory(source: Path, target: Path) -> None:
    """Put `source` at `target`; an existing target is moved aside first and removed after the swap."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "docs")
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ validate
@dataclass(frozen=True)
class ValidationResult:
    accepted: pd.DataFrame  # clean columns + metric columns, sorted by record_id
    quarantined: pd.DataFrame  # clean columns + metric columns + reasons + primary_reason
    report: dict[str, Any]


def _check_clean_frame(clean: pd.DataFrame, spec: PropertySpec) -> None:
    needed = ["record_id", "clean_issue", "structure_json"] + [c.name for c in value_columns(spec)]
    if spec.name == "piezo":
        needed.append("is_centrosymmetric")
    missing = [name for name in needed if name not in clean.columns]
    if missing:
        raise ValueError(f"clean frame for {spec.name} lacks the columns {missing}")
    clashing = sorted(set(clean.columns) & (set(metric_names(spec)) | {"reasons", "primary_reason"}))
    if clashing:
        raise ValueError(f"clean frame for {spec.name} already has the validate columns {clashing}")
    repeated = clean["record_id"][clean["record_id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"clean frame for {spec.name}: record_id repeated: {sorted(repeated)[:5]}")
    issues = clean["clean_issue"].dropna()
    unknown = sorted(set(issues) - set(CLEAN_ISSUE_CODES))
    if unknown:
        raise ValueError(f"clean frame for {spec.name}: unknown clean_issue codes {unknown}; known: {CLEAN_ISSUE_CODES}")


def validate(clean: pd.DataFrame, prop: str, params: ValidationParams | None = None, n_raw: int | None = None,
             docs_dir: str | os.PathLike | None = None) -> ValidationResult:
    """Accept or quarantine every row of a clean frame (module docstring).

    `n_raw` (the raw record count; default len(clean)) must equal n_accepted + n_quarantined, else ValueError.
    With `docs_dir`, GX's Data Docs of the run are built there.
    """
    spec = properties.get(prop)
    params = params or ValidationParams()
    _check_clean_frame(clean, spec)
    clean = clean.sort_values("record_id", kind="stable").reset_index(drop=True)
    n_raw = len(clean) if n_raw is None else n_raw

    has_issue = clean["clean_issue"].notna().to_numpy()
    reasons: list[set[str]] = [{issue} if bad else set() for issue, bad in zip(clean["clean_issue"], has_issue)]
    to_check = clean.loc[~has_issue]
    # Rows with a clean_issue get null metrics: nothing is computed for them.
    metrics = _typed(compute_metrics(to_check, spec, params).reindex(clean.index), spec)
    outcomes: list[ExpectationOutcome] = []
    if len(to_check):
        passthrough = [v.name for v in value_columns(spec)] + (["is_centrosymmetric"] if spec.name == "piezo" else [])
        batch = pd.concat([metrics.loc[to_check.index], to_check[passthrough]], axis=1)
        outcomes = run_suite(batch, spec.name, params, docs_dir)
        for outcome in outcomes:
            for i in outcome.unexpected_index:
                reasons[i].add(outcome.reason_code)

    merged = merging.merge(clean, reasons, spec, [column.name for column in value_columns(spec)],
                           merging.MergeParams(params.holdout_sources, params.merge_atol, params.merge_rtol))
    clean = clean.assign(provenance_json=merged.provenance_json, **{merging.HOLDOUT_COLUMN: merged.holdout})
    rank = {code: position for position, code in enumerate(REASON_PRIORITY)}
    ordered = [sorted(codes, key=rank.__getitem__) for codes in merged.reasons]
    full = pd.concat([clean, _output_types(metrics, spec)], axis=1)
    is_bad = np.array([bool(codes) for codes in ordered], dtype=bool)
    accepted = full.loc[~is_bad].reset_index(drop=True)
    quarantined = full.loc[is_bad].reset_index(drop=True)
    quarantined["reasons"] = pd.Series([codes for codes in ordered if codes], dtype=object)
    quarantined["primary_reason"] = pd.Series([codes[0] for codes in ordered if codes], dtype=object)
    if n_raw != len(accepted) + len(quarantined):
        raise ValueError(f"validate {spec.name}: n_raw={n_raw} but {len(accepted)} accepted + {len(quarantined)} "
                         f"quarantined = {len(accepted) + len(quarantined)}: records were lost or invented upstream")
    report = _report(spec, params, n_raw, accepted, quarantined, metrics, outcomes)
    report["merge"] = merged.report
    report["by_source"] = _by_source(accepted, quarantined)
    return ValidationResult(accepted=accepted, quarantined=quarantined, report=report)


def _output_types(metrics: pd.DataFrame, spec: PropertySpec) -> pd.DataFrame:
    """Flags as pandas' nullable boolean, so Parquet stores them as bool with nulls whatever the values."""
    out = metrics.copy()
    for name, kind, _ in METRIC_COLUMNS[spec.name]:
        if kind == "flag":
            out[name] = out[name].astype("boolean")
    return out


def _by_source(accepted: pd.DataFrame, quarantined: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per source file: raw records, accepted, quarantined, and the quarantined by primary reason (they add up)."""
    def file_of(frame: pd.DataFrame) -> list[str]:
        return [str(json.loads(text).get("file")) for text in frame["provenance_json"]]

    accepted_files, quarantined_files = file_of(accepted), file_of(quarantined)
    out = {}
    for file in sorted(set(accepted_files) | set(quarantined_files)):
        codes = [code for code, where in zip(quarantined["primary_reason"], quarantined_files) if where == file]
        n_accepted = accepted_files.count(file)
        out[file] = {"n_raw": n_accepted + len(codes), "n_accepted": n_accepted, "n_quarantined": len(codes),
                     "reasons": _count(codes)}
    return out


def _count(codes: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: REASON_PRIORITY.index(item[0])))


def _report(spec, params, n_raw, accepted, quarantined, metrics, outcomes) -> dict[str, Any]:
    neumann: dict[str, Any] = {"neumann_tolerance": None, "neumann_pass_fraction": None,
                               "neumann_pass_fraction_evaluated": None, "neumann_residual_quantiles_accepted": None}
    if spec.is_tensor:
        evaluated = metrics["neumann_residual"].dropna().to_numpy(dtype=np.float64)
        neumann["neumann_tolerance"] = params.neumann_tolerance
        if evaluated.size:
            neumann["neumann_pass_fraction_evaluated"] = float(np.mean(evaluated <= params.neumann_tolerance))
        residuals = accepted["neumann_residual"].dropna().to_numpy(dtype=np.float64)
        if residuals.size:
            neumann["neumann_pass_fraction"] = float(np.mean(residuals <= params.neumann_tolerance))
            levels = (0.5, 0.9, 0.99, 1.0)
            neumann["neumann_residual_quantiles_accepted"] = {
                f"q{round(level * 100)}": float(q) for level, q in zip(levels, np.quantile(residuals, levels))}
    return {
        "property": spec.name,
        "n_raw": int(n_raw),
        "n_accepted": len(accepted),
        "n_quarantined": len(quarantined),
        "reasons": _count(quarantined["primary_reason"].tolist()),
        "reasons_all": _count([code for codes in quarantined["reasons"] for code in codes]),
        "reason_counting": "reasons counts each quarantined record once, under its primary_reason (the first of "
                           "its codes in REASON_PRIORITY); reasons_all counts every code of every record",
        **neumann,
        "neumann_pass_fraction_definition": "neumann_pass_fraction: share of accepted records whose residual is at "
                                            "most neumann_tolerance (1.0 unless a check is broken, since the "
                                            "tolerance also gates acceptance); neumann_pass_fraction_evaluated: "
                                            "the same share over every record with a computable residual. "
                                            "How many needed a frame rotation or a projection is in "
                                            "<prop>-clean.json",
        # workers does not change results, and the report must not change with it
        "params": {**{k: v for k, v in asdict(params).items() if k != "workers"}, "symmetry_rtol": tensors.SYMMETRY_RTOL},
        "suite": str(suite_path(spec.name).relative_to(SUITES_DIR.parent.parent)),
        "great_expectations_version": gx.__version__,
        "expectations": [outcome.stats() for outcome in outcomes],
    }


# --------------------------------------------------------------------------------------------------------- output
def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet with the clean stage's fixed writer settings (same frame -> same bytes)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "reasons" in table.column_names:  # typed even when empty (an empty object column would be Arrow null)
        position = table.column_names.index("reasons")
        table = table.set_column(position, "reasons", pa.array(frame["reasons"].tolist(), type=pa.list_(pa.string())))
        table = table.set_column(table.column_names.index("primary_reason"), "primary_reason",
                                 pa.array(frame["primary_reason"].tolist(), type=pa.string()))
    return parquet_bytes(table)


def write_outputs(result: ValidationResult, accepted_path: str | os.PathLike, quarantine_path: str | os.PathLike,
                  report_path: str | os.PathLike) -> None:
    """Write the three outputs atomically; the files are a function of the inputs alone (no times, no ids)."""
    atomic_write_bytes(accepted_path, _parquet_bytes(result.accepted))
    atomic_write_bytes(quarantine_path, _parquet_bytes(result.quarantined))
    write_json(report_path, result.report)
