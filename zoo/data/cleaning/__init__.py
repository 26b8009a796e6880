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

    The rule (``zoo.data.cleaning.evidence``, whose docstring has the details): consistent candidates (residual at most
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

Units: elastic GPa, piezo C/m^2 and dielectric (dimensionless) are stored as the sources give them. A property's
    ``clean_values`` hook brings other units to the stored ones: the phonon DOS stays on the project's 51-point grid
    in cm^-1 (``zoo.properties.phonon``; a grid given in THz is converted, any other grid is ``wrong_shape``).
    Stored parts a source does not give are the spec's ``derived_parts`` (the dielectric ionic part, total -
    electronic), taken after the source parts are in the chosen frame.

Duplicates (same material_id in one source file): the first record in record_id order whose structure and values
    parsed is kept; a later one gets ``duplicate_identical`` if all its values equal the kept one's within
    ``duplicate_rtol`` (relative to the larger Frobenius norm, source values as given), else ``duplicate_conflict``.
    Records of one material from different source files are all kept here: validate merges them once it knows which
    are physically valid (``zoo.data.merging``). Records with no material_id
    (the phonon snapshot's row 1521, Mg3Bi2) are keyed by record_id and kept: their data are complete.

Issue codes, first found wins, structure before values: ``missing_field`` (a structure or value field absent or
    null), ``unknown_element`` (a species that is no chemical element), ``unparsable_structure`` (does not parse,
    is not periodic, or spglib cannot analyse it), ``wrong_shape``, ``unparsable_tensor`` (fetch's unreadable marker,
    non-numbers, non-finite values, a symmetric matrix that is not), then the duplicate codes, then
    ``frame_ambiguous``. ``no_material_id`` is
    validate's to use; clean keeps such records (see above).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import properties
from zoo.core.io import atomic_write_bytes, canonical_json, write_json
from zoo.data.cleaning import evidence
from zoo.data.cleaning.frames import (
    FRAME_ACTIONS,
    SYMMETRIZED_SUFFIX,
    UNRESOLVED,
    Measured,
    choose_frame,
    measure_all,
    record_frames,
)
from zoo.data.cleaning.params import ISSUE_CODES, CleanIssue, CleanParams
from zoo.data.cleaning.report import ReportStats
from zoo.data.cleaning.structures import parse_structure
from zoo.data.cleaning.values import read_values, stored_values

# The package's API: the stage below, and the parts its modules hold.
__all__ = [
    "FRAME_ACTIONS", "ISSUE_CODES", "SYMMETRIZED_SUFFIX", "UNRESOLVED", "CleanIssue", "CleanParams", "CleanResult",
    "choose_frame", "clean_property", "clean_records", "clean_schema", "duplicate_issue", "evidence",
    "parquet_bytes", "parse_structure", "read_values",
]

PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3


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
    # In the spec's stored form: elastic and piezo tensors in Voigt form, dielectric parts and the DOS as they are.
    value_fields = [pa.field(name, _fixed_list(spec.stored_shape)) for name in spec.stored_columns]
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


def clean_records(records: Sequence[Mapping[str, Any]], spec: properties.PropertySpec, params: CleanParams,
                  progress: Callable[[int], None] | None = None) -> CleanResult:
    """Clean one property's raw records (any order; rows come back sorted by record_id). See the module docstring."""
    if not isinstance(spec, properties.PropertySpec):
        raise ValueError(f"spec must be a zoo.properties.PropertySpec, got {type(spec).__name__}")
    ordered = sorted(records, key=lambda record: str(record.get("record_id")))
    ids = [record.get("record_id") for record in ordered]
    if any(not isinstance(record_id, str) or not record_id for record_id in ids) or len(set(ids)) != len(ids):
        raise ValueError("records: every record needs a unique, non-empty string record_id")
    wrong = sorted({str(record.get("property")) for record in ordered} - {spec.name})
    if wrong:
        raise ValueError(f"records: expected only property {spec.name!r}, found {wrong}")

    measured = measure_all(ordered, spec.name, params, progress)
    # Duplicates within one source file are clean's; records of one material from several files are merged by
    # validate (zoo.data.merging).
    kept_values: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    issues: list[CleanIssue | None] = []
    for record, item in zip(ordered, measured):
        issue = item.issue
        material_id = record.get("material_id")
        if issue is None and material_id is not None:
            key = (evidence.source_key(record.get("provenance")), material_id)
            if key in kept_values:
                code = duplicate_issue(kept_values[key], item.parts, params.duplicate_rtol)
                issue = CleanIssue(code, f"material {material_id} already kept from an earlier record of {key[0]}")
            else:
                kept_values[key] = item.parts
        issues.append(issue)

    # The frame decision learns its per-source rules from the usable records only; a duplicate (quarantined anyway)
    # is decided on its own evidence.
    def frames_of(i: int) -> evidence.RecordFrames:
        return record_frames(ordered[i], measured[i], _claimed_frame(ordered[i], spec.source_keys))

    rules = params.frame_rules()
    usable = [i for i, (item, issue) in enumerate(zip(measured, issues)) if issue is None and item.residuals]
    decided, frames_report = evidence.decide([frames_of(i) for i in usable], rules)
    decisions: dict[int, evidence.FrameDecision] = dict(zip(usable, decided))
    for i, item in enumerate(measured):
        if i not in decisions and item.residuals:
            decisions[i] = evidence.decide([frames_of(i)], rules)[0][0]

    rows, stats = [], ReportStats(params.neumann_rtol)
    for i, (record, item, issue) in enumerate(zip(ordered, measured, issues)):
        decision = decisions.get(i)
        if issue is None and decision is not None and decision.status == evidence.FRAME_AMBIGUOUS:
            issue = CleanIssue("frame_ambiguous", "candidate frames that fit the point group give materially "
                                                  f"different tensors: {frames_of(i).candidates_json()}")
        rows.append(_row(record, item, spec, decision, params, issue, stats))
    report = stats.report(spec, params, rows, frames_report if spec.is_tensor else None)
    return CleanResult(rows, report)


def _row(record: Mapping[str, Any], item: Measured, spec: properties.PropertySpec,
         decision: evidence.FrameDecision | None, params: CleanParams, issue: CleanIssue | None,
         stats: ReportStats) -> dict[str, Any]:
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
        **dict.fromkeys(spec.stored_columns),
        "original_frame": _claimed_frame(record, spec.source_keys),
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
        row.update(stored_values(spec, item.parts), frame_action="none", frame_rotation=np.eye(3).tolist())
        return row
    if not item.residuals:
        row.update(stored_values(spec, item.parts))  # as given: without a structure no frame can be measured
        return row
    choice = choose_frame(item, decision, params, spec)
    stats.add_choice(item, choice)
    row.update(
        stored_values(spec, choice.parts),
        frame_action=choice.action,
        frame_rotation=choice.rotation.tolist(),
        frame_residual_before=choice.residual_before,
        frame_residual_after=choice.residual_after,
        frame_evidence=decision.evidence,
        frame_candidates_json=record_frames(record, item, row["original_frame"]).candidates_json(),
    )
    return row


# ------------------------------------------------------------------------------------------------ output
def parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet bytes with fixed settings (same table -> same bytes with the same pyarrow)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL,
                   use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()


def clean_property(spec: properties.PropertySpec, raw_path: str | os.PathLike, out_path: str | os.PathLike,
                   report_path: str | os.PathLike, params: CleanParams,
                   progress: Callable[[int], None] | None = None) -> CleanResult:
    """Read data/raw/<property>.jsonl, clean it, and write the parquet and the report atomically."""
    from zoo.data.records import read_raw

    records = read_raw(raw_path)
    result = clean_records(records, spec, params, progress)
    atomic_write_bytes(out_path, parquet_bytes(result.table(spec)))
    write_json(report_path, result.report)
    return result
