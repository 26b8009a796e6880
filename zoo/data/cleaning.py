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

    The rule (``zoo.data.frames``, whose docstring has the details): consistent candidates (residual at most
    ``symmetrize_max_residual``) are grouped by the tensor they give, compared after projection onto the
    point-group-invariant tensors; spglib-built frames are also built under a tiny strain and count as unstable when
    that changes the tensor. One group: settled ('unique'). Several: settled only by evidence, in this order: the
    source's structure-frame column ('source_field'), a far better fit ('margin'), the tensor as given where the
    point group constrains it and the source does not contradict the rule ('as_given'), a per-source convention
    measured on the records other evidence settled ('source_convention'). Otherwise the record gets
    ``frame_ambiguous`` (stored as given; its candidates, residuals and groups in ``frame_candidates_json``). No
    order among candidates ever breaks a tie. If no candidate is consistent, the tensor is stored as given, action
    'unresolved', and validate's Neumann check quarantines it.

    Measured on the snapshot (data/reports/<property>-clean.json, ``frames``): elastic is settled by Neumann's
    principle or by its structure-frame column ('original' gives the IEEE candidate's tensor in 233 of the 256
    records where several frames fit; as given only 45, so as_given is off for that file); dielectric tensors are
    in the structure frame (as given, and by a convention confirmed on every record a margin settled); piezo
    tensors fit the spglib standard frame wherever Neumann alone decides, but where several frames fit it has no
    convention: 404 polar records have a standard frame that spglib picks differently under a 1e-7 strain
    (zinc blende, rhombohedral, body-centred tetragonal cells given as primitive cells), and their sign or axes
    are not determined by the data.
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
    was rotated and for 'used_original_column'), frame_residual_before (the tensor as given),
    frame_residual_after (the chosen candidate, before any symmetrisation), frame_evidence (what settled it) and
    frame_candidates_json (every candidate's residual and group). The structure is always stored as given:
    the tensor is brought to it, never the other way round.

Units: elastic GPa, piezo C/m^2 and dielectric (dimensionless) are stored as the sources give them. The phonon DOS
    stays on the project's 51-point grid in cm^-1 (``zoo.properties.PHONON_GRID_CM``); a grid given in THz is
    converted (x properties.CM_PER_THZ = 33.35641); any other grid is ``wrong_shape``. The dielectric ionic part
    is total - electronic, taken after both are in the chosen frame.

Duplicates (same material_id): the first record in record_id order whose structure and values parsed is kept; a
    later one gets ``duplicate_identical`` if all its values equal the kept one's within ``duplicate_rtol`` (relative
    to the larger Frobenius norm, source values as given), else ``duplicate_conflict``. Records with no material_id
    (the phonon snapshot's row 1521, Mg3Bi2) are keyed by record_id and kept: their data are complete.

Issue codes, first found wins, structure before values: ``missing_field`` (a structure or value field absent or
    null), ``unknown_element`` (a species that is no chemical element), ``unparsable_structure`` (does not parse,
    is not periodic, or spglib cannot analyse it), ``wrong_shape``, ``unparsable_tensor`` (fetch's unreadable marker,
    non-numbers, non-finite values, a symmetric matrix that is not), then the duplicate codes, then
    ``frame_ambiguous``. ``no_material_id`` is
    validate's to use; clean keeps such records (see above).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
from zoo.data import frames
from zoo.data.records import is_unreadable

ISSUE_CODES = (
    "unparsable_structure", "unparsable_tensor", "wrong_shape", "missing_field", "unknown_element",
    "duplicate_identical", "duplicate_conflict", "no_material_id", "frame_ambiguous",
)

# What was done to a tensor stored in each candidate frame (zoo.data.frames; variants share their frame's action).
FRAME_ACTIONS = {
    "original": "used_original_column",
    "none": "none",
    "ieee": "rotated_ieee_to_structure",
    "standard": "rotated_standard_to_structure",
}
UNRESOLVED = frames.UNRESOLVED
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
    symmetrize_max_residual    largest residual treated as noise (projected); a candidate frame above it is
                               inconsistent, and a record with no consistent candidate 'unresolved'
    frame_distinct_rtol        two candidate tensors differ materially when their point-group projections differ by
                               more than this fraction of the norm (zoo.data.frames)
    frame_margin_factor        a class of candidates settles by margin when the runner-up fits this many times worse
    convention_min_agreement   share of the tested records on which a per-source convention must hold
    convention_min_records     fewest tested records a per-source convention needs
    frame_stability_strain     relative strain under which the spglib-built frames must not change (0: no check)
    duplicate_rtol             relative difference below which a duplicate is identical
    workers                    processes measuring records (1: in this process)
    """

    symprec: float = symmetry.SYMPREC
    angle_tolerance: float = symmetry.ANGLE_TOLERANCE
    neumann_rtol: float = 1e-3
    symmetrize_max_residual: float = 0.05
    frame_distinct_rtol: float = 0.01
    frame_margin_factor: float = 10.0
    convention_min_agreement: float = 0.99
    convention_min_records: int = 20
    frame_stability_strain: float = 1e-7
    duplicate_rtol: float = 1e-8
    workers: int = 1

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("workers", "convention_min_records"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"clean.{item.name} must be a positive integer, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"clean.{item.name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and item.name != "frame_stability_strain"):
                raise ValueError(f"clean.{item.name} must be a positive number, got {value!r}")
        if self.convention_min_agreement > 1:
            raise ValueError(f"clean.convention_min_agreement is a share, at most 1; got {self.convention_min_agreement}")
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

    def frame_rules(self) -> frames.FrameRules:
        return frames.FrameRules(
            neumann_rtol=self.neumann_rtol, symmetrize_max_residual=self.symmetrize_max_residual,
            distinct_rtol=self.frame_distinct_rtol, margin_factor=self.frame_margin_factor,
            convention_min_agreement=self.convention_min_agreement,
            convention_min_records=self.convention_min_records, stability_strain=self.frame_stability_strain)


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
    classes: list[list[str]] = field(default_factory=list)  # consistent candidates by tensor (zoo.data.frames)
    reversed_pairs: list[tuple[int, int]] = field(default_factory=list)  # pairs of classes of opposite sense
    informative: bool = False  # whether the point group constrains the tensor at all


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
def _analyse_structure(structure_key: str, symprec: float, angle_tolerance: float,
                       stability_strain: float | None) -> _StructureAnalysis:
    """Parse and analyse one structure (cached: duplicates share their structure); with a stability strain (tensor
    properties), also the candidate frames (zoo.data.frames.candidate_rotations). Raises CleanIssue."""
    structure, parse_warnings = parse_structure(json.loads(structure_key))
    try:
        info = symmetry.analyze(structure, symprec=symprec, angle_tolerance=angle_tolerance)
    except ValueError as exc:
        raise CleanIssue("unparsable_structure", str(exc)) from None
    rotations = {"none": np.eye(3)}
    if stability_strain is not None:
        builders = {"ieee": symmetry.ieee_rotation,
                    "standard": functools.partial(_standard_rotation, symprec=symprec, angle_tolerance=angle_tolerance)}
        rotations = frames.candidate_rotations(structure, builders, stability_strain)
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
                                      params.frame_stability_strain if spec.is_tensor else None)
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
        measured.classes, measured.reversed_pairs = frames.classify(
            measured.rotations, measured.rotated, measured.residuals, measured.symmetry_info, params.frame_rules())
        rank = next(iter(measured.parts.values())).ndim
        measured.informative = frames.is_informative(measured.symmetry_info, rank)
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
@dataclass(frozen=True)
class _FrameChoice:
    action: str
    rotation: np.ndarray
    residual_before: float
    residual_after: float
    frame_parts: dict[str, np.ndarray]  # the source parts in the chosen frame
    parts: dict[str, np.ndarray]  # what is stored: frame_parts, symmetrised when the action says so
    stored_residual: float  # of everything stored, derived parts included (for the report)


def record_frames(record: Mapping[str, Any], item: _Measured) -> frames.RecordFrames:
    return frames.RecordFrames(source=frames.source_key(record.get("provenance")), residuals=item.residuals,
                               classes=item.classes, informative=item.informative,
                               claim=_claimed_frame(record, _SOURCE_KEYS[record["property"]]),
                               reversed_pairs=item.reversed_pairs)


def choose_frame(item: _Measured, decision: frames.FrameDecision, params: CleanParams) -> _FrameChoice:
    """Store one measured tensor record as the frame decision says: a settled record in its candidate's frame
    (projected onto the point-group-invariant tensors when its residual is noise above neumann_rtol); an
    unresolved or frame_ambiguous one as given."""
    residuals, parts = item.residuals, item.parts
    before = residuals["none"]
    if decision.status != frames.SETTLED:
        derived = _derived_parts(parts).values()
        stored_residual = max([before, *(symmetry.neumann_residual(part, item.symmetry_info) for part in derived)])
        action = UNRESOLVED if decision.status == frames.UNRESOLVED else frames.FRAME_AMBIGUOUS
        return _FrameChoice(action, np.eye(3), before, before, dict(parts), dict(parts), stored_residual)
    chosen = decision.candidate
    if chosen == "original":
        # Nothing of the primary column fits the source field's frame: the source field itself is stored.
        rotation, rotated = np.eye(3), item.rotated["original"]
        action, after, stored = FRAME_ACTIONS["original"], residuals["original"], rotated
    else:
        rotation, rotated = item.rotations[chosen], item.rotated[chosen]
        action, after, stored = FRAME_ACTIONS[frames.base_name(chosen)], residuals[chosen], rotated
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
        pa.field("frame_evidence", pa.string()),
        pa.field("frame_candidates_json", pa.string()),
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
    kept_values: dict[str, dict[str, np.ndarray]] = {}
    issues: list[CleanIssue | None] = []
    for record, item in zip(ordered, measured):
        issue = item.issue
        material_id = record.get("material_id")
        if issue is None and material_id is not None:
            if material_id in kept_values:
                code = duplicate_issue(kept_values[material_id], item.parts, params.duplicate_rtol)
                issue = CleanIssue(code, f"material {material_id} already kept from an earlier record")
            else:
                kept_values[material_id] = item.parts
        issues.append(issue)

    # The frame decision learns its per-source rules from the usable records only; a duplicate (quarantined anyway)
    # is decided on its own evidence.
    rules = params.frame_rules()
    usable = [i for i, (item, issue) in enumerate(zip(measured, issues)) if issue is None and item.residuals]
    decided, frames_report = frames.decide([record_frames(ordered[i], measured[i]) for i in usable], rules)
    decisions: dict[int, frames.FrameDecision] = dict(zip(usable, decided))
    for i, item in enumerate(measured):
        if i not in decisions and item.residuals:
            decisions[i] = frames.decide([record_frames(ordered[i], item)], rules)[0][0]

    rows, stats = [], _ReportStats(params.neumann_rtol)
    for i, (record, item, issue) in enumerate(zip(ordered, measured, issues)):
        decision = decisions.get(i)
        if issue is None and decision is not None and decision.status == frames.FRAME_AMBIGUOUS:
            issue = CleanIssue("frame_ambiguous", "candidate frames that fit the point group give materially "
                                                  f"different tensors: {record_frames(record, item).candidates_json()}")
        rows.append(_row(record, item, spec, decision, params, issue, stats))
    report = stats.report(spec, params, rows, frames_report if spec.is_tensor else None)
    return CleanResult(rows, report)


def _row(record: Mapping[str, Any], item: _Measured, spec: properties.PropertySpec,
         decision: frames.FrameDecision | None, params: CleanParams, issue: CleanIssue | None,
         stats: _ReportStats) -> dict[str, Any]:
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
        "frame_evidence": None,
        "frame_candidates_json": None,
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
    choice = choose_frame(item, decision, params)
    stats.add_choice(item, choice)
    row.update(
        _stored_values(spec, choice.parts),
        frame_action=choice.action,
        frame_rotation=choice.rotation.tolist(),
        frame_residual_before=choice.residual_before,
        frame_residual_after=choice.residual_after,
        frame_evidence=decision.evidence,
        frame_candidates_json=record_frames(record, item).candidates_json(),
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
            if name in frames.BASE_CANDIDATES:  # stability variants are reported by the frame decision
                self.candidate_measured[name] += 1
                self.candidate_consistent[name] += residual <= self.neumann_rtol

    def report(self, spec: properties.PropertySpec, params: CleanParams, rows: Sequence[Mapping[str, Any]],
               frames_report: Mapping[str, Any] | None) -> dict[str, Any]:
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
            # frame_evidence: every row (duplicates decided on their own evidence); frames.outcome: the records
            # without another issue, on which the per-source rules were measured (zoo.data.frames).
            report["frame_evidence"] = dict(sorted(Counter(
                row["frame_evidence"] or (row["frame_action"] if row["frame_action"] in (UNRESOLVED, frames.FRAME_AMBIGUOUS)
                                          else "not_measured") for row in rows).items()))
            report["frames"] = {
                **(frames_report or {}),
                "claimed": dict(sorted(Counter(row["original_frame"] or "none" for row in rows).items())),
                "consistent_by_candidate": {
                    name: {"consistent": int(self.candidate_consistent[name]),
                           "measured": int(self.candidate_measured[name])}
                    for name in frames.BASE_CANDIDATES},
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
