"""The clean stage: canonical raw records -> one clean row per record, plus a report. Nothing is dropped.

For every raw record (``zoo.data.records``) clean parses the structure, reads the values, puts the tensor in the
Cartesian frame of the stored structure, fixes units, marks duplicates and adds the structure's symmetry. A record
it cannot use keeps its row with a ``clean_issue`` code (``ISSUE_CODES``); validate quarantines it with that code.

Frames: measured, not assumed
    Sources state a frame (``tensor_frames``: 'ieee', 'structure', 'unknown'), but a claim is not a measurement:
    the matminer piezo tensors, claimed 'ieee', satisfy Neumann's principle against their stored structure as given
    in 37% of rows. For each tensor record clean therefore measures the Neumann residual
    (``zoo.core.symmetry.neumann_residual``: max over point-group operations R of |R.T - T|_F / |T|_F, the worst of a
    record's parts) of these candidates against the stored structure:

        none        the tensor as given;
        ieee        rotate(T, Q^T), Q = zoo.core.symmetry.ieee_rotation(structure) (structure frame -> IEEE 176 frame):
                    the tensor read as IEEE and brought to the structure frame;
        standard    rotate(T, S^T), S = spglib's ``std_rotation_matrix`` (structure frame -> the orientation of the
                    spglib-standardised conventional cell, ``SpacegroupAnalyzer.get_refined_structure``: a along x,
                    b in the xy plane): the tensor read in that frame and brought to the structure frame;
        original    a second source column of the same tensor as given (elastic: ``stiffness_voigt_original``,
                    which the snapshot claims in the structure frame).

    (The inverse rotations, rotate(T, Q) and rotate(T, S), were measured too and explain fewer rows than leaving the
    tensor alone, as the documented direction of Q and S predicts; they are not candidates.)

    The rule. Within one record, candidates whose residual is within ``frame_tie_tol`` of the smallest are tied.
    Ties are common and real: a rotation that maps the crystal's point group onto itself without belonging to it
    (relabelling the axes of an orthorhombic crystal, turning a monoclinic one about its unique axis, a half turn
    about the three-fold axis of a trigonal one) leaves every residual unchanged but changes the tensor (c11 <-> c33,
    the sign of c14). Ties are broken by one preference order per source file (``provenance.file``; the report
    lists each file's under frames when there are several): candidate a precedes b when a has the
    smaller residual in more records than b (head to head, ties excluded); candidates that beat equally many others
    keep the sources' order: a column claimed in the structure frame first, then, for a primary column claimed
    'ieee', ieee, standard, none (otherwise none, ieee, standard). A record takes the first tied candidate in that
    order. If it is 'original' and the original column agrees within ``neumann_rtol`` with another candidate, that
    candidate is taken instead (the primary column is stored and the rotation is named); 'used_original_column'
    therefore marks the records where the two source columns disagree beyond noise. If the chosen rotation does not
    change the tensor (within ``frame_tie_tol`` of its norm: the zero tensor, a symmetry operation), nothing is
    rotated ('none'). If no candidate reaches ``symmetrize_max_residual``, no frame explains the tensor: it is stored
    as given, action 'unresolved', and validate's Neumann check quarantines it.

    Measured on the snapshot: piezo tensors are in the standard frame (consistent within 1e-3 in 92% of rows, IEEE
    80%, as given 37%); the rest are P-62m and P312 crystals, whose tensors fit no candidate (a 90 degree turn about
    c would fit, with either sign: no measurement here can say which, so clean does not guess) and noise. Elastic
    tensors fit every candidate equally well, so the order decides, and the structure-frame column agrees with the
    IEEE column rotated by Q wherever the two were published from the same numbers, except for monoclinic and some
    trigonal crystals, where today's IEEE rules differ from those used in 2015. Dielectric tensors are in the
    structure frame, a few in the standard frame.

    Noise. Residuals in the chosen frame between ``neumann_rtol`` and ``symmetrize_max_residual`` are numerical
    noise of the DFT/DFPT calculations (e.g. hexagonal elastic tensors with c66 != (c11 - c12)/2 by a few percent),
    not frame errors, which give residuals of order one. Such tensors are replaced by their orthogonal projection
    onto the point-group-invariant tensors (``zoo.core.symmetry.symmetrize``), as the Materials Project does for every
    tensor it publishes today (emmet-core ``convert_to_ieee`` fits to the structure); the projection moves a tensor
    by at most its residual times its norm. Action suffix '+symmetrized'. Tensors within ``neumann_rtol`` are stored
    unchanged. The check covers every stored part, the derived dielectric ionic part (total - electronic) included;
    whether a residual is noise at all is judged on the source parts only, since the ionic part of a mostly
    electronic dielectric is a small difference of two large tensors. Symmetric matrices (Voigt stiffness,
    dielectric tensors) are stored as their symmetric part; an antisymmetric part larger than
    ``symmetrize_max_residual`` of the norm is not noise, and the record gets ``unparsable_tensor``.

    Recorded per row: original_frame (the primary column's claim), frame_action, frame_rotation (the 3x3 matrix
    applied to the tensor: stored = rotate(given, frame_rotation) before any symmetrisation; identity when nothing
    was rotated and for 'used_original_column'), frame_residual_before (the tensor as given) and
    frame_residual_after (the chosen candidate, before any symmetrisation). The structure is always stored as given:
    the tensor is brought to it, never the other way round.

Units: elastic GPa, piezo C/m^2 and dielectric (dimensionless) are stored as the sources give them. The phonon DOS
    stays on the project's 51-point grid in cm^-1 (``zoo.properties.PHONON_GRID_CM``); a grid given in THz is
    converted (x properties.CM_PER_THZ = 33.35641); any other grid is ``wrong_shape``. The dielectric ionic part
    is total - electronic, taken after both are in the chosen frame.

Duplicates (same material_id in one source file): the first record in record_id order whose structure and values
    parsed is kept; a later one gets ``duplicate_identical`` if all its values equal the kept one's within
    ``duplicate_rtol`` (relative to the larger Frobenius norm, source values as given), else ``duplicate_conflict``.
    Records of one material from different source files are all kept here: validate merges them once it knows which
    are physically valid (``zoo.data.merging``). Records with no material_id
    (the phonon snapshot's row 1521, Mg3Bi2) are keyed by record_id and kept: their data are complete.

Issue codes, first found wins, structure before values: ``missing_field`` (a structure or value field absent or
    null), ``unknown_element`` (a species that is no chemical element), ``unparsable_structure`` (does not parse,
    is not periodic, or spglib cannot analyse it), ``wrong_shape``, ``unparsable_tensor`` (fetch's unreadable marker,
    non-numbers, non-finite values, a symmetric matrix that is not), then the duplicate codes. ``no_material_id`` is
    validate's to use; clean keeps such records (see above).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pymatgen.core import Element, Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.io import atomic_write_bytes, canonical_json, write_json
from zoo.data.records import is_unreadable

ISSUE_CODES = (
    "unparsable_structure", "unparsable_tensor", "wrong_shape", "missing_field", "unknown_element",
    "duplicate_identical", "duplicate_conflict", "no_material_id",
)

# Candidate frames (module docstring) and the order a claim prefers them in when the measurement cannot decide.
FRAME_CANDIDATES = ("original", "none", "ieee", "standard")
_CLAIM_ORDER = {"ieee": ("ieee", "standard", "none")}
_DEFAULT_ORDER = ("none", "ieee", "standard")
FRAME_ACTIONS = {
    "original": "used_original_column",
    "none": "none",
    "ieee": "rotated_ieee_to_structure",
    "standard": "rotated_standard_to_structure",
}
UNRESOLVED = "unresolved"
SYMMETRIZED_SUFFIX = "+symmetrized"

# A grid matches when every point is within this fraction of the grid's top (1000 cm^-1): 33.35641 itself is given to
# 7 figures, so a THz grid made with it differs from the exact conversion by ~1.4e-8 relative.
_GRID_RTOL = 1e-6

# Raw value keys (schemas/raw-record.schema.json) that clean reads, per property, and the columns it stores.
_SOURCE_KEYS = {
    "elastic": ("stiffness_voigt",),
    "dielectric": ("electronic", "total"),
    "piezo": ("piezo_voigt",),
    "phonon": ("frequencies_cm", "dos"),
}
# A second source column of the same quantity, measured as candidate 'original' (elastic: the source's
# unsymmetrised tensor, which the snapshot claims in the structure frame).
_ALTERNATIVE_KEYS = {"elastic": "stiffness_voigt_original"}
_STORED_COLUMNS = {
    "elastic": ("stiffness_voigt",),
    "dielectric": ("electronic", "ionic", "total"),
    "piezo": ("piezo_voigt",),
    "phonon": ("frequencies_cm", "dos"),
}

REPORT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)
# Records per task sent to a worker process: large enough that pickling is cheap next to the spglib calls.
_CHUNK_SIZE = 64
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3


# ------------------------------------------------------------------------------------------------- params
@dataclass(frozen=True)
class CleanParams:
    """The `clean` section of params.yaml (see the module docstring for what each does).

    symprec, angle_tolerance   spglib tolerances (A, degrees) for the point group and the standard frame
    neumann_rtol               residual at or below which a tensor is consistent and stored unchanged
    symmetrize_max_residual    largest residual treated as noise (projected); above it, 'unresolved'
    frame_tie_tol              residual difference (and rotation effect) below which frames are tied
    duplicate_rtol             relative difference below which a duplicate is identical
    workers                    processes measuring records (1: in this process)
    """

    symprec: float = symmetry.SYMPREC
    angle_tolerance: float = symmetry.ANGLE_TOLERANCE
    neumann_rtol: float = 1e-3
    symmetrize_max_residual: float = 0.05
    frame_tie_tol: float = 1e-6
    duplicate_rtol: float = 1e-8
    workers: int = 1

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "workers":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"clean.workers must be a positive integer, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"clean.{item.name} must be a positive number, got {value!r}")
        if self.symmetrize_max_residual < self.neumann_rtol:
            raise ValueError(
                f"clean.symmetrize_max_residual ({self.symmetrize_max_residual}) must be at least "
                f"clean.neumann_rtol ({self.neumann_rtol})"
            )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> CleanParams:
        """From a params section; missing keys take the defaults, unknown keys are refused."""
        section = dict(section or {})
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"clean params: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**section)


class CleanIssue(Exception):
    """Why clean cannot use a record: one of ISSUE_CODES and a sentence for the report."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in ISSUE_CODES:
            raise ValueError(f"code must be one of {ISSUE_CODES}, got {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self):  # measurements cross process boundaries; the default would pass the message only
        return (CleanIssue, (self.code, self.detail))


# --------------------------------------------------------------------------------------------- structures
def parse_structure(field_value: Any) -> tuple[Structure, list[str]]:
    """A raw record's ``structure`` field -> (pymatgen Structure, parser warnings). Raises CleanIssue.

    Formats: 'cif' (one structure; pymatgen's CifParser, cell as written, not reduced), 'poscar', 'ase-dict'
    ({numbers, positions (Cartesian, A), cell (rows, A), pbc}, periodic in all three directions) and
    'pymatgen-dict' (``Structure.as_dict()``).
    """
    if not isinstance(field_value, Mapping) or "format" not in field_value or field_value.get("data") is None:
        raise CleanIssue("missing_field", "structure must be an object with 'format' and 'data'")
    fmt, data = field_value["format"], field_value["data"]
    if is_unreadable(data):
        raise CleanIssue("unparsable_structure", f"fetch could not read it: {data.get('error')}")
    parsers: dict[str, Callable[[Any], Structure]] = {
        "cif": _from_cif, "poscar": _from_poscar, "ase-dict": _from_ase_dict, "pymatgen-dict": _from_pymatgen_dict,
    }
    if fmt not in parsers:
        raise CleanIssue("unparsable_structure", f"unknown structure format {fmt!r}; known: {sorted(parsers)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = parsers[fmt](data)
        except CleanIssue:
            raise
        except Exception as exc:  # parsers fail with many exception types on malformed text
            raise CleanIssue("unparsable_structure", f"{fmt}: {type(exc).__name__}: {exc}") from None
    not_elements = sorted({str(sp) for sp in structure.species if isinstance(sp, DummySpecies)})
    if not_elements:
        raise CleanIssue("unknown_element", f"species that are not chemical elements: {not_elements}")
    if not structure.is_ordered:
        raise CleanIssue("unparsable_structure", "partially occupied sites; tensors need an ordered crystal")
    if not (np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.frac_coords).all()):
        raise CleanIssue("unparsable_structure", "lattice or coordinates contain NaN or infinite values")
    if structure.volume <= 1e-6:
        raise CleanIssue("unparsable_structure", f"degenerate lattice (volume {structure.volume:.3g} A^3)")
    return structure, sorted({str(w.message) for w in caught})


def _require_text(data: Any, fmt: str) -> str:
    if not isinstance(data, str) or not data.strip():
        raise CleanIssue("unparsable_structure", f"{fmt} data must be non-empty text, got {type(data).__name__}")
    return data


def _from_cif(data: Any) -> Structure:
    structures = CifParser.from_str(_require_text(data, "cif")).parse_structures(primitive=False)
    if len(structures) != 1:
        raise CleanIssue("unparsable_structure", f"cif holds {len(structures)} structures, expected one")
    return structures[0]


def _from_poscar(data: Any) -> Structure:
    return Poscar.from_str(_require_text(data, "poscar")).structure


def _from_ase_dict(data: Any) -> Structure:
    if not isinstance(data, Mapping) or not {"numbers", "positions", "cell", "pbc"} <= set(data):
        raise CleanIssue("unparsable_structure", "ase-dict must have numbers, positions, cell and pbc")
    if list(data["pbc"]) != [True, True, True]:
        raise CleanIssue("unparsable_structure", f"ase-dict pbc is {data['pbc']!r}: a crystal is periodic in 3D")
    numbers = list(data["numbers"])
    if any(isinstance(z, bool) or not isinstance(z, int) for z in numbers):
        raise CleanIssue("unparsable_structure", "ase-dict numbers must be integers")
    unknown = sorted({z for z in numbers if not 1 <= z <= len(Element)})
    if unknown:
        raise CleanIssue("unknown_element", f"atomic numbers that are no element: {unknown}")
    positions = np.asarray(data["positions"], dtype=np.float64)
    if positions.shape != (len(numbers), 3):
        raise CleanIssue("unparsable_structure", f"ase-dict has {len(numbers)} numbers but positions {positions.shape}")
    return Structure(Lattice(np.asarray(data["cell"], dtype=np.float64)), numbers, positions, coords_are_cartesian=True)


def _from_pymatgen_dict(data: Any) -> Structure:
    if not isinstance(data, Mapping):
        raise CleanIssue("unparsable_structure", "pymatgen-dict data must be an object")
    return Structure.from_dict(dict(data))


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
    """A raw record's values -> {source key: float64 array}: Cartesian tensors for tensor properties (Voigt
    stiffness and dielectric matrices reduced to their symmetric part), the grid in cm^-1 and the DOS for phonon.
    Raises CleanIssue."""
    if not isinstance(values, Mapping):
        raise CleanIssue("missing_field", "values must be an object")
    if spec.name == "phonon":
        grid = _source_array(values, "frequencies_cm", spec.cartesian_shape)
        dos = _source_array(values, "dos", spec.cartesian_shape)
        return {"frequencies_cm": _grid_in_cm(grid), "dos": dos}
    return {key: _read_tensor(spec, values, key, params) for key in _SOURCE_KEYS[spec.name]}


def _read_tensor(spec: properties.PropertySpec, values: Mapping[str, Any], key: str,
                 params: CleanParams) -> np.ndarray:
    """values[key] as a Cartesian tensor (symmetric matrices reduced to their symmetric part)."""
    if spec.voigt_kind == "symmetric2":  # the raw record stores these as 3x3 Cartesian matrices
        return _symmetric_part(_source_array(values, key, spec.cartesian_shape), key, params.symmetrize_max_residual)
    voigt = _source_array(values, key, spec.voigt_shape)
    if spec.voigt_kind == "stiffness":
        voigt = _symmetric_part(voigt, key, params.symmetrize_max_residual)
    return tensors.voigt_to_cartesian(voigt, spec.voigt_kind)


def _grid_in_cm(grid: np.ndarray) -> np.ndarray:
    expected = properties.PHONON_GRID_CM
    atol = _GRID_RTOL * float(expected[-1])
    if np.allclose(grid, expected, rtol=0, atol=atol):
        return np.array(expected)
    if np.allclose(grid * properties.CM_PER_THZ, expected, rtol=0, atol=atol):
        return np.array(expected)  # the same grid given in THz
    raise CleanIssue("wrong_shape", f"frequencies are not the {len(expected)}-point grid 0..{expected[-1]:g} cm^-1 "
                                    f"(nor that grid in THz): first values {grid[:3].tolist()}")


def _derived_parts(parts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parts stored but not given by the source: the dielectric ionic part, total - electronic."""
    return {"ionic": parts["total"] - parts["electronic"]} if {"electronic", "total"} <= set(parts) else {}


def _stored_values(spec: properties.PropertySpec, parts: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Source parts (Cartesian, in the stored frame) -> the stored columns as nested lists."""
    if spec.name == "phonon":
        return {key: parts[key].tolist() for key in _STORED_COLUMNS["phonon"]}
    if spec.name == "dielectric":
        stored = {**parts, **_derived_parts(parts)}
        return {key: stored[key].tolist() for key in _STORED_COLUMNS["dielectric"]}
    (key,) = _SOURCE_KEYS[spec.name]
    return {key: tensors.cartesian_to_voigt(parts[key], spec.voigt_kind).tolist()}


# ----------------------------------------------------------------------------------------- measurement
@dataclass
class _Measured:
    """What one record's measurement found (picklable: it crosses process boundaries)."""

    issue: CleanIssue | None = None
    warnings: list[str] = field(default_factory=list)
    structure_json: str | None = None
    n_sites: int | None = None
    volume: float | None = None
    formula: str | None = None
    symmetry_columns: dict[str, Any] | None = None
    symmetry_info: symmetry.SymmetryInfo | None = None  # passed as is: checking bare operations again costs more
    parts: dict[str, np.ndarray] | None = None
    rotations: dict[str, np.ndarray] = field(default_factory=dict)  # candidate -> matrix applied to the tensor
    rotated: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # candidate -> parts in its frame
    residuals: dict[str, float] = field(default_factory=dict)
    alternative_issue: str | None = None  # why the alternative column could not be read (it is then no candidate)


@dataclass(frozen=True)
class _StructureAnalysis:
    structure_json: str
    n_sites: int
    volume: float
    formula: str
    symmetry_columns: dict[str, Any]
    symmetry_info: symmetry.SymmetryInfo
    rotations: dict[str, np.ndarray]
    warnings: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _analyse_structure(structure_key: str, symprec: float, angle_tolerance: float, frames: bool) -> _StructureAnalysis:
    """Parse and analyse one structure (cached: duplicates share their structure). Raises CleanIssue."""
    structure, parse_warnings = parse_structure(json.loads(structure_key))
    try:
        info = symmetry.analyze(structure, symprec=symprec, angle_tolerance=angle_tolerance)
    except ValueError as exc:
        raise CleanIssue("unparsable_structure", str(exc)) from None
    rotations = {"none": np.eye(3)}
    if frames:
        # Each candidate maps a tensor read in that frame to the structure frame (transposes of structure -> frame).
        # A candidate that cannot be built for this structure is simply absent from its measurement.
        builders = {"ieee": symmetry.ieee_rotation,
                    "standard": functools.partial(_standard_rotation, symprec=symprec, angle_tolerance=angle_tolerance)}
        for name, build in builders.items():
            try:
                rotations[name] = build(structure).T
            except ValueError:
                continue
    columns = {
        "crystal_system": info.crystal_system,
        "space_group_number": info.space_group_number,
        "space_group_symbol": info.space_group_symbol,
        "point_group": info.point_group,
        "laue_class": info.laue_class,
        "is_centrosymmetric": info.is_centrosymmetric,
    }
    return _StructureAnalysis(
        structure_json=canonical_json(structure.as_dict()), n_sites=len(structure), volume=float(structure.volume),
        formula=structure.composition.reduced_formula, symmetry_columns=columns, symmetry_info=info,
        rotations=rotations, warnings=tuple(parse_warnings),
    )


def _standard_rotation(structure: Structure, symprec: float, angle_tolerance: float) -> np.ndarray:
    """S taking the structure's frame to that of its spglib-standardised conventional cell: T_std = rotate(T, S).

    spglib's ``std_rotation_matrix`` (v_std = S v); the same spglib call as ``symmetry.analyze`` (pymatgen caches
    it). spglib builds it from the idealised lattice; the polar factor makes it orthogonal to rounding.
    """
    dataset = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance).get_symmetry_dataset()
    left, _, right = np.linalg.svd(np.asarray(dataset.std_rotation_matrix, dtype=np.float64))
    return tensors.check_rotation(left @ right, name="spglib std_rotation_matrix")


def _measure(record: Mapping[str, Any], spec_name: str, params: CleanParams) -> _Measured:
    """Parse one record and measure the Neumann residual of every candidate frame (module docstring)."""
    spec = properties.get(spec_name)
    measured = _Measured()
    analysis = None
    try:
        if record.get("structure") is None:
            raise CleanIssue("missing_field", "the record has no structure")
        analysis = _analyse_structure(canonical_json(record["structure"]), params.symprec, params.angle_tolerance,
                                      spec.is_tensor)
        measured.warnings = list(analysis.warnings)
        measured.structure_json = analysis.structure_json
        measured.n_sites, measured.volume, measured.formula = analysis.n_sites, analysis.volume, analysis.formula
        measured.symmetry_columns, measured.symmetry_info = analysis.symmetry_columns, analysis.symmetry_info
    except CleanIssue as issue:
        measured.issue = issue
    try:
        # Read even when the structure failed, so the row still shows the values as given.
        measured.parts = read_values(spec, record.get("values"), params)
    except CleanIssue as issue:
        measured.issue = measured.issue or issue
    if measured.issue is not None or analysis is None:
        return measured
    if spec.is_tensor:
        for name, rotation in analysis.rotations.items():
            rotated = {key: part if name == "none" else tensors.rotate(part, rotation)
                       for key, part in measured.parts.items()}
            measured.rotations[name], measured.rotated[name] = rotation, rotated
            # A record's residual is its worst part: the parts of one calculation share one frame.
            measured.residuals[name] = max(symmetry.neumann_residual(part, measured.symmetry_info)
                                           for part in rotated.values())
        alternative_key = _ALTERNATIVE_KEYS.get(spec.name)
        if alternative_key is not None and record["values"].get(alternative_key) is not None:
            try:
                (primary_key,) = _SOURCE_KEYS[spec.name]
                alternative = {primary_key: _read_tensor(spec, record["values"], alternative_key, params)}
            except CleanIssue as issue:
                measured.alternative_issue = issue.detail
            else:
                measured.rotations["original"], measured.rotated["original"] = np.eye(3), alternative
                measured.residuals["original"] = symmetry.neumann_residual(alternative[primary_key],
                                                                           measured.symmetry_info)
    return measured


def _measure_chunk(chunk: Sequence[Mapping[str, Any]], spec_name: str, params: CleanParams) -> list[_Measured]:
    return [_measure(record, spec_name, params) for record in chunk]


def _measure_all(records: Sequence[Mapping[str, Any]], spec_name: str, params: CleanParams,
                 progress: Callable[[int], None] | None) -> list[_Measured]:
    """Measure every record, in order; in `params.workers` processes when more than one (results are per-record
    pure functions gathered in input order, so the outcome does not depend on the number of workers)."""
    chunks = [records[start:start + _CHUNK_SIZE] for start in range(0, len(records), _CHUNK_SIZE)]
    results: list[_Measured] = []
    if params.workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.extend(_measure_chunk(chunk, spec_name, params))
            if progress:
                progress(len(chunk))
        return results
    with ProcessPoolExecutor(max_workers=params.workers) as pool:
        futures = [pool.submit(_measure_chunk, chunk, spec_name, params) for chunk in chunks]
        for future in futures:
            chunk_results = future.result()
            results.extend(chunk_results)
            if progress:
                progress(len(chunk_results))
    return results


# ------------------------------------------------------------------------------------------ frame choice
def claim_order(primary_claim: str | None, alternative_claim: str | None) -> tuple[str, ...]:
    """Candidates in the order the sources' claims prefer them: a column claimed in the structure frame first,
    then the primary column's claimed frame."""
    order = _CLAIM_ORDER.get(primary_claim, _DEFAULT_ORDER)
    return ("original", *order) if alternative_claim == "structure" else (*order, "original")


def frame_preference(measured: Iterable[_Measured], claimed_order: Sequence[str],
                     tie_tol: float) -> tuple[list[str], dict]:
    """The order in which tied candidate frames are preferred, measured on a whole file (module docstring).

    Returns (order, head-to-head wins {"a>b": number of records in which a's residual is below b's by more than
    tie_tol}).
    """
    wins = {(a, b): 0 for a in FRAME_CANDIDATES for b in FRAME_CANDIDATES if a != b}
    for item in measured:
        for (a, b) in wins:
            if a in item.residuals and b in item.residuals and item.residuals[a] < item.residuals[b] - tie_tol:
                wins[(a, b)] += 1
    beaten = {a: sum(wins[(a, b)] > wins[(b, a)] for b in FRAME_CANDIDATES if b != a) for a in FRAME_CANDIDATES}
    order = sorted(FRAME_CANDIDATES, key=lambda name: (-beaten[name], claimed_order.index(name)))
    return order, {f"{a}>{b}": count for (a, b), count in sorted(wins.items())}


@dataclass(frozen=True)
class _FrameChoice:
    action: str
    rotation: np.ndarray
    residual_before: float
    residual_after: float
    frame_parts: dict[str, np.ndarray]  # the source parts in the chosen frame
    parts: dict[str, np.ndarray]  # what is stored: frame_parts, symmetrised when the action says so
    stored_residual: float  # of everything stored, derived parts included (for the report)


def choose_frame(item: _Measured, order: Sequence[str], params: CleanParams) -> _FrameChoice:
    """Apply the frame rule to one measured tensor record."""
    residuals, parts = item.residuals, item.parts
    before = residuals["none"]
    best = min(residuals.values())
    if best > params.symmetrize_max_residual:
        derived = _derived_parts(parts).values()
        stored_residual = max([before, *(symmetry.neumann_residual(part, item.symmetry_info) for part in derived)])
        return _FrameChoice(UNRESOLVED, np.eye(3), before, before, dict(parts), dict(parts), stored_residual)
    chosen = next(name for name in order if name in residuals and residuals[name] <= best + params.frame_tie_tol)

    def same(name: str, other: Mapping[str, np.ndarray], rtol: float) -> bool:
        return all(np.linalg.norm(item.rotated[name][key] - part) <= rtol * np.linalg.norm(part)
                   for key, part in other.items())

    if chosen == "original":
        # The alternative column agrees (within the accepted noise) with a frame of the primary column: that is
        # the frame, and the primary column is what is stored.
        chosen = next((name for name in order if name != "original" and name in item.rotated
                       and same(name, item.rotated["original"], params.neumann_rtol)), chosen)
    if chosen not in ("none", "original") and same(chosen, parts, params.frame_tie_tol):
        chosen = "none"  # the rotation does not change the tensor (a symmetry operation, or the zero tensor)
    rotation, rotated = item.rotations[chosen], item.rotated[chosen]
    action, after, stored = FRAME_ACTIONS[chosen], residuals[chosen], rotated
    # A derived part (the dielectric ionic part, often a small difference of two large tensors) can exceed the
    # tolerance relative to its own norm while the source parts do not; it is stored too, so it is checked too.
    derived = _derived_parts(rotated)
    derived_residual = max((symmetry.neumann_residual(part, item.symmetry_info) for part in derived.values()),
                           default=0.0)
    stored_residual = max(after, derived_residual)
    if stored_residual > params.neumann_rtol:
        stored = {key: symmetry.symmetrize(part, item.symmetry_info) for key, part in rotated.items()}
        action += SYMMETRIZED_SUFFIX
        everything = {**stored, **_derived_parts(stored)}
        stored_residual = max(symmetry.neumann_residual(part, item.symmetry_info) for part in everything.values())
    return _FrameChoice(action, rotation, before, after, rotated, stored, stored_residual)


# ------------------------------------------------------------------------------------------- duplicates
def source_file(record: Mapping[str, Any]) -> str | None:
    """The file (or API route) a raw record was read from."""
    provenance = record.get("provenance")
    return provenance.get("file") if isinstance(provenance, Mapping) else None


def _values_norm(parts: Mapping[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(part**2) for part in parts.values())))


def duplicate_issue(kept: Mapping[str, np.ndarray], later: Mapping[str, np.ndarray], rtol: float) -> str:
    """'duplicate_identical' if `later` equals `kept` within rtol of the larger norm, else 'duplicate_conflict'."""
    difference = float(np.sqrt(sum(np.sum((later[key] - kept[key]) ** 2) for key in kept)))
    scale = max(_values_norm(kept), _values_norm(later))
    return "duplicate_identical" if difference <= rtol * scale else "duplicate_conflict"


# ------------------------------------------------------------------------------------------------ schema
def _fixed_list(shape: Sequence[int]) -> pa.DataType:
    dtype: pa.DataType = pa.float64()
    for size in reversed(shape):
        dtype = pa.list_(dtype, size)
    return dtype


def clean_schema(spec: properties.PropertySpec) -> pa.Schema:
    """The fixed Arrow schema of data/clean/<property>.parquet."""
    # Elastic and piezo tensors are stored in their Voigt form, dielectric parts and the DOS as they are.
    value_shape = spec.voigt_shape if spec.voigt_kind in ("stiffness", "piezo_stress") else spec.cartesian_shape
    value_fields = [pa.field(name, _fixed_list(value_shape)) for name in _STORED_COLUMNS[spec.name]]
    return pa.schema([
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("property", pa.string(), nullable=False),
        pa.field("material_id", pa.string()),
        pa.field("formula", pa.string()),
        pa.field("structure_json", pa.string()),
        pa.field("n_sites", pa.int32()),
        pa.field("volume", pa.float64()),
        pa.field("crystal_system", pa.string()),
        pa.field("space_group_number", pa.int32()),
        pa.field("space_group_symbol", pa.string()),
        pa.field("point_group", pa.string()),
        pa.field("laue_class", pa.string()),
        pa.field("is_centrosymmetric", pa.bool_()),
        *value_fields,
        pa.field("original_frame", pa.string()),
        pa.field("frame_action", pa.string()),
        pa.field("frame_rotation", _fixed_list((3, 3))),
        pa.field("frame_residual_before", pa.float64()),
        pa.field("frame_residual_after", pa.float64()),
        pa.field("clean_issue", pa.string()),
        pa.field("provenance_json", pa.string(), nullable=False),
        pa.field("reported_json", pa.string(), nullable=False),
    ], metadata={"mp_tensor_zoo.stage": "clean", "mp_tensor_zoo.property": spec.name})


# ---------------------------------------------------------------------------------------------- cleaning
@dataclass
class CleanResult:
    """The clean rows (sorted by record_id, one per raw record) and the report."""

    rows: list[dict[str, Any]]
    report: dict[str, Any]

    def table(self, spec: properties.PropertySpec) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=clean_schema(spec))


def _claimed_frame(record: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The source's claim for these value keys (one frame: the parts of one calculation share it)."""
    frames = record.get("tensor_frames") or {}
    claims = sorted({frames[key] for key in keys if key in frames})
    if not claims:
        return None
    return claims[0] if len(claims) == 1 else "unknown"


def _main_claim(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str | None:
    """The most common claim in a file (ties: alphabetical), which orders tied frames for all its records."""
    counts = Counter(_claimed_frame(record, keys) for record in records)
    counts.pop(None, None)
    return min(counts, key=lambda claim: (-counts[claim], claim)) if counts else None


def clean_records(records: Sequence[Mapping[str, Any]], spec: properties.PropertySpec,
                  params: CleanParams | None = None,
                  progress: Callable[[int], None] | None = None) -> CleanResult:
    """Clean one property's raw records (any order; rows come back sorted by record_id). See the module docstring."""
    params = params or CleanParams()
    if not isinstance(spec, properties.PropertySpec):
        raise ValueError(f"spec must be a zoo.properties.PropertySpec, got {type(spec).__name__}")
    ordered = sorted(records, key=lambda record: str(record.get("record_id")))
    ids = [record.get("record_id") for record in ordered]
    if any(not isinstance(record_id, str) or not record_id for record_id in ids) or len(set(ids)) != len(ids):
        raise ValueError("records: every record needs a unique, non-empty string record_id")
    wrong = sorted({str(record.get("property")) for record in ordered} - {spec.name})
    if wrong:
        raise ValueError(f"records: expected only property {spec.name!r}, found {wrong}")

    measured = _measure_all(ordered, spec.name, params, progress)
    # One preference order per source file: files of one property (elastic has three) follow their own conventions.
    files = sorted({str(source_file(record)) for record in ordered})
    frames = {file: _file_frames(spec, [(record, item) for record, item in zip(ordered, measured)
                                        if str(source_file(record)) == file], params) for file in files}

    kept_values: dict[tuple[str | None, str], dict[str, np.ndarray]] = {}
    rows, stats = [], _ReportStats(params.neumann_rtol)
    for record, item in zip(ordered, measured):
        issue = item.issue
        material_id = record.get("material_id")
        if issue is None and material_id is not None:
            key = (source_file(record), material_id)
            if key in kept_values:
                code = duplicate_issue(kept_values[key], item.parts, params.duplicate_rtol)
                issue = CleanIssue(code, f"material {material_id} already kept from an earlier record of {key[0]}")
            else:
                kept_values[key] = item.parts
        row = _row(record, item, spec, frames[str(source_file(record))]["preference"], params, issue, stats)
        rows.append(row)
    report = stats.report(spec, params, rows, frames if len(files) > 1 else frames[files[0]] if files else {})
    return CleanResult(rows, report)


def _file_frames(spec: properties.PropertySpec, pairs: Sequence[tuple[Mapping[str, Any], _Measured]],
                 params: CleanParams) -> dict[str, Any]:
    """One source file's claims and the frame preference measured on its records (module docstring)."""
    records = [record for record, _ in pairs]
    claims = {"primary": _main_claim(records, _SOURCE_KEYS[spec.name]),
              "original": _main_claim(records, (_ALTERNATIVE_KEYS[spec.name],)) if spec.name in _ALTERNATIVE_KEYS
              else None}
    tensor_items = [item for _, item in pairs if item.issue is None and item.residuals]
    order, wins = [], {}
    if spec.is_tensor:
        order, wins = frame_preference(tensor_items, claim_order(claims["primary"], claims["original"]),
                                       params.frame_tie_tol)
    return {"claimed": claims, "preference": list(order), "head_to_head_wins": dict(wins)}


def _row(record: Mapping[str, Any], item: _Measured, spec: properties.PropertySpec, order: Sequence[str],
         params: CleanParams, issue: CleanIssue | None, stats: _ReportStats) -> dict[str, Any]:
    symmetry_columns = item.symmetry_columns or dict.fromkeys(
        ("crystal_system", "space_group_number", "space_group_symbol", "point_group", "laue_class",
         "is_centrosymmetric"))
    row: dict[str, Any] = {
        "record_id": record["record_id"],
        "property": spec.name,
        "material_id": record.get("material_id"),
        # The source's formula; filled from the structure where the source gives none (the phonon snapshot).
        "formula": record.get("formula") or item.formula,
        "structure_json": item.structure_json,
        "n_sites": item.n_sites,
        "volume": item.volume,
        **symmetry_columns,
        **dict.fromkeys(_STORED_COLUMNS[spec.name]),
        "original_frame": _claimed_frame(record, _SOURCE_KEYS[spec.name]),
        "frame_action": None,
        "frame_rotation": None,
        "frame_residual_before": None,
        "frame_residual_after": None,
        "clean_issue": issue.code if issue else None,
        "provenance_json": canonical_json(record.get("provenance")),
        "reported_json": canonical_json(record.get("reported")),
    }
    stats.add_record(record, item, issue)
    if item.parts is None:
        return row  # nothing readable to store
    if not spec.is_tensor:
        row.update(_stored_values(spec, item.parts), frame_action="none", frame_rotation=np.eye(3).tolist())
        return row
    if not item.residuals:
        row.update(_stored_values(spec, item.parts))  # as given: without a structure no frame can be measured
        return row
    choice = choose_frame(item, order, params)
    stats.add_choice(item, choice)
    row.update(
        _stored_values(spec, choice.parts),
        frame_action=choice.action,
        frame_rotation=choice.rotation.tolist(),
        frame_residual_before=choice.residual_before,
        frame_residual_after=choice.residual_after,
    )
    return row


# ---------------------------------------------------------------------------------------------- report
def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {f"q{int(q * 100):02d}" if q < 1 else "max": float(np.quantile(array, q)) for q in REPORT_QUANTILES}


@dataclass
class _ReportStats:
    """Accumulates the deterministic report (no timings, so the same input gives the same report)."""

    neumann_rtol: float
    issues: list[dict[str, str]] = field(default_factory=list)
    parse_warnings: list[dict[str, Any]] = field(default_factory=list)
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    stored: list[float] = field(default_factory=list)
    symmetrization_change: list[float] = field(default_factory=list)
    candidate_consistent: Counter = field(default_factory=Counter)
    candidate_measured: Counter = field(default_factory=Counter)
    alternative_issues: list[dict[str, str]] = field(default_factory=list)

    def add_record(self, record: Mapping[str, Any], item: _Measured, issue: CleanIssue | None) -> None:
        if issue is not None:
            self.issues.append({"record_id": record["record_id"], "code": issue.code, "detail": issue.detail})
        if item.warnings:
            self.parse_warnings.append({"record_id": record["record_id"], "warnings": item.warnings})
        if item.alternative_issue:
            self.alternative_issues.append({"record_id": record["record_id"], "detail": item.alternative_issue})

    def add_choice(self, item: _Measured, choice: _FrameChoice) -> None:
        self.before.append(choice.residual_before)
        self.after.append(choice.residual_after)
        self.stored.append(choice.stored_residual)
        if choice.action.endswith(SYMMETRIZED_SUFFIX):
            self.symmetrization_change.append(max(
                float(np.linalg.norm(choice.parts[key] - part) / np.linalg.norm(part))
                for key, part in choice.frame_parts.items()))
        for name, residual in item.residuals.items():
            self.candidate_measured[name] += 1
            self.candidate_consistent[name] += residual <= self.neumann_rtol

    def report(self, spec: properties.PropertySpec, params: CleanParams, rows: Sequence[Mapping[str, Any]],
               frames: Mapping[str, Any]) -> dict[str, Any]:
        """frames: the claims and preference of the one source file, or of each file (file -> them)."""
        def fraction_within(values: Sequence[float]) -> float | None:
            return float(np.mean(np.asarray(values) <= params.neumann_rtol)) if values else None

        report: dict[str, Any] = {
            "property": spec.name,
            "records": len(rows),
            # Without `workers`: it changes how fast, never what (the outputs are identical).
            "params": {key: value for key, value in asdict(params).items() if key != "workers"},
            "clean_issue": dict(sorted(Counter(row["clean_issue"] or "none" for row in rows).items())),
            "unreadable_alternative_column": self.alternative_issues,
            "frame_action": dict(sorted(Counter(row["frame_action"] or "not_measured" for row in rows).items())),
            "issues": self.issues,
            "parse_warnings": self.parse_warnings,
        }
        if spec.is_tensor:
            report["frames"] = {
                **frames,
                "consistent_by_candidate": {
                    name: {"consistent": int(self.candidate_consistent[name]),
                           "measured": int(self.candidate_measured[name])}
                    for name in FRAME_CANDIDATES},
            }
            report["neumann_residual"] = {
                "records_measured": len(self.before),
                "within_neumann_rtol": {"before": fraction_within(self.before), "after": fraction_within(self.after),
                                        "stored": fraction_within(self.stored)},
                "quantiles": {"before": _quantiles(self.before), "after": _quantiles(self.after),
                              "stored": _quantiles(self.stored)},
                "symmetrization_relative_change": _quantiles(self.symmetrization_change),
            }
        return report


# ------------------------------------------------------------------------------------------------ output
def parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet bytes with fixed settings (same table -> same bytes with the same pyarrow)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL,
                   use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()


def clean_property(spec: properties.PropertySpec, raw_path: str | os.PathLike, out_path: str | os.PathLike,
                   report_path: str | os.PathLike, params: CleanParams | None = None,
                   progress: Callable[[int], None] | None = None) -> CleanResult:
    """Read data/raw/<property>.jsonl, clean it, and write the parquet and the report atomically."""
    from zoo.data.records import read_raw

    records = read_raw(raw_path)
    result = clean_records(records, spec, params, progress)
    atomic_write_bytes(out_path, parquet_bytes(result.table(spec)))
    write_json(report_path, result.report)
    return result
