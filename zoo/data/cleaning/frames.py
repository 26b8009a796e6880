"""The frame measurement and storage of the clean stage (the rule is in zoo.data.cleaning.evidence): each record's
Neumann residual in every candidate frame and their classes, and the record stored as its frame decision says."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from zoo import properties
from zoo.core import symmetry, tensor_checks, tensors
from zoo.core.io import canonical_json
from zoo.data.cleaning import evidence
from zoo.data.cleaning.params import CleanIssue, CleanParams
from zoo.data.cleaning.structures import parse_structure
from zoo.data.cleaning.values import read_tensor, read_values


# What was done to a tensor stored in each candidate frame (stability variants share their frame's action).
FRAME_ACTIONS = {
    "original": "used_original_column",
    "none": "none",
    "ieee": "rotated_ieee_to_structure",
    "standard": "rotated_standard_to_structure",
}
UNRESOLVED = evidence.UNRESOLVED
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
    classes: list[list[str]] = field(default_factory=list)  # consistent candidates by tensor (evidence.classify)
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
    properties), also the candidate frames (evidence.candidate_rotations). Raises CleanIssue."""
    structure, parse_warnings = parse_structure(json.loads(structure_key))
    try:
        info = symmetry.analyze(structure, symprec=symprec, angle_tolerance=angle_tolerance)
    except ValueError as exc:
        raise CleanIssue("unparsable_structure", str(exc)) from None
    rotations = {"none": np.eye(3)}
    if stability_strain is not None:
        builders = {"ieee": symmetry.ieee_rotation,
                    "standard": functools.partial(standard_rotation, symprec=symprec, angle_tolerance=angle_tolerance)}
        rotations = evidence.candidate_rotations(structure, builders, stability_strain)
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


def standard_rotation(structure: Structure, symprec: float, angle_tolerance: float) -> np.ndarray:
    """S taking the structure's frame to that of its spglib-standardised conventional cell: T_std = rotate(T, S).

    spglib's ``std_rotation_matrix`` (v_std = S v); the same spglib call as ``symmetry.analyze`` (pymatgen caches
    it). spglib builds it from the idealised lattice; the polar factor makes it orthogonal to rounding.
    """
    dataset = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance).get_symmetry_dataset()
    left, _, right = np.linalg.svd(np.asarray(dataset.std_rotation_matrix, dtype=np.float64))
    return tensor_checks.check_rotation(left @ right, name="spglib std_rotation_matrix")


def _measure(record: Mapping[str, Any], spec_name: str, params: CleanParams) -> Measured:
    """Parse one record and measure the Neumann residual of every candidate frame (module docstring)."""
    spec = properties.get(spec_name)
    measured = Measured()
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
        measured.classes, measured.reversed_pairs = evidence.classify(
            measured.rotations, measured.rotated, measured.residuals, measured.symmetry_info, params.frame_rules())
        rank = next(iter(measured.parts.values())).ndim
        measured.informative = evidence.is_informative(measured.symmetry_info, rank)
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
@dataclass(frozen=True)
class FrameChoice:
    action: str
    rotation: np.ndarray
    residual_before: float
    residual_after: float
    frame_parts: dict[str, np.ndarray]  # the source parts in the chosen frame
    parts: dict[str, np.ndarray]  # what is stored: frame_parts, symmetrised when the action says so
    stored_residual: float  # of everything stored, derived parts included (for the report)


def record_frames(record: Mapping[str, Any], item: Measured, claim: str | None) -> evidence.RecordFrames:
    """What the frame decision needs of one measured record; claim: the frame its source claims for the tensor."""
    return evidence.RecordFrames(source=evidence.source_key(record.get("provenance")), residuals=item.residuals,
                                 classes=item.classes, informative=item.informative, claim=claim,
                                 reversed_pairs=item.reversed_pairs)


def choose_frame(item: Measured, decision: evidence.FrameDecision, params: CleanParams,
                 spec: properties.PropertySpec) -> FrameChoice:
    """Store one measured tensor record as its frame decision says: a settled record in its candidate's frame
    (projected onto the point-group-invariant tensors when its residual is noise above neumann_rtol); an
    unresolved or frame_ambiguous one as given."""
    residuals, parts = item.residuals, item.parts
    before = residuals["none"]
    if decision.status != evidence.SETTLED:
        derived = spec.derived_parts(parts).values()
        stored_residual = max([before, *(symmetry.neumann_residual(part, item.symmetry_info) for part in derived)])
        action = UNRESOLVED if decision.status == evidence.UNRESOLVED else evidence.FRAME_AMBIGUOUS
        return FrameChoice(action, np.eye(3), before, before, dict(parts), dict(parts), stored_residual)
    chosen = decision.candidate
    rotation, rotated = item.rotations[chosen], item.rotated[chosen]
    action, after, stored = FRAME_ACTIONS[evidence.base_name(chosen)], residuals[chosen], rotated
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
