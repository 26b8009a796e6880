"""The frame measurement and choice of the clean stage (the rule is in zoo.data.cleaning's docstring): each record's
Neumann residual in every candidate frame, the file's preference order, and the frame each record takes."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.io import canonical_json
from zoo.data.cleaning.params import CleanIssue, CleanParams
from zoo.data.cleaning.structures import parse_structure
from zoo.data.cleaning.values import read_tensor, read_values


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
# Records per task sent to a worker process: large enough that pickling is cheap next to the spglib calls.
_CHUNK_SIZE = 64


# ----------------------------------------------------------------------------------------- measurement
@dataclass
class Measured:
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


def _measure(record: Mapping[str, Any], spec_name: str, params: CleanParams) -> Measured:
    """Parse one record and measure the Neumann residual of every candidate frame (module docstring)."""
    spec = properties.get(spec_name)
    measured = Measured()
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
        alternative_key = spec.alternative_key
        if alternative_key is not None and record["values"].get(alternative_key) is not None:
            try:
                (primary_key,) = spec.source_keys
                alternative = {primary_key: read_tensor(spec, record["values"], alternative_key, params)}
            except CleanIssue as issue:
                measured.alternative_issue = issue.detail
            else:
                measured.rotations["original"], measured.rotated["original"] = np.eye(3), alternative
                measured.residuals["original"] = symmetry.neumann_residual(alternative[primary_key],
                                                                           measured.symmetry_info)
    return measured


def _measure_chunk(chunk: Sequence[Mapping[str, Any]], spec_name: str, params: CleanParams) -> list[Measured]:
    return [_measure(record, spec_name, params) for record in chunk]


def measure_all(records: Sequence[Mapping[str, Any]], spec_name: str, params: CleanParams,
                 progress: Callable[[int], None] | None) -> list[Measured]:
    """Measure every record, in order; in `params.workers` processes when more than one (results are per-record
    pure functions gathered in input order, so the outcome does not depend on the number of workers)."""
    chunks = [records[start:start + _CHUNK_SIZE] for start in range(0, len(records), _CHUNK_SIZE)]
    results: list[Measured] = []
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


def frame_preference(measured: Iterable[Measured], claimed_order: Sequence[str],
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
class FrameChoice:
    action: str
    rotation: np.ndarray
    residual_before: float
    residual_after: float
    frame_parts: dict[str, np.ndarray]  # the source parts in the chosen frame
    parts: dict[str, np.ndarray]  # what is stored: frame_parts, symmetrised when the action says so
    stored_residual: float  # of everything stored, derived parts included (for the report)


def choose_frame(item: Measured, order: Sequence[str], params: CleanParams,
                 spec: properties.PropertySpec) -> FrameChoice:
    """Apply the frame rule to one measured tensor record."""
    residuals, parts = item.residuals, item.parts
    before = residuals["none"]
    best = min(residuals.values())
    if best > params.symmetrize_max_residual:
        derived = spec.derived_parts(parts).values()
        stored_residual = max([before, *(symmetry.neumann_residual(part, item.symmetry_info) for part in derived)])
        return FrameChoice(UNRESOLVED, np.eye(3), before, before, dict(parts), dict(parts), stored_residual)
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
    derived = spec.derived_parts(rotated)
    derived_residual = max((symmetry.neumann_residual(part, item.symmetry_info) for part in derived.values()),
                           default=0.0)
    stored_residual = max(after, derived_residual)
    if stored_residual > params.neumann_rtol:
        stored = {key: symmetry.symmetrize(part, item.symmetry_info) for key, part in rotated.items()}
        action += SYMMETRIZED_SUFFIX
        everything = {**stored, **spec.derived_parts(stored)}
        stored_residual = max(symmetry.neumann_residual(part, item.symmetry_info) for part in everything.values())
    return FrameChoice(action, rotation, before, after, rotated, stored, stored_residual)
