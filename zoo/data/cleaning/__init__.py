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
    the sign of c14). Ties are broken by one preference order per file: candidate a precedes b when a has the
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

Units: elastic GPa, piezo C/m^2 and dielectric (dimensionless) are stored as the sources give them. A property's
    ``clean_values`` hook brings other units to the stored ones: the phonon DOS stays on the project's 51-point grid
    in cm^-1 (``zoo.properties.phonon``; a grid given in THz is converted, any other grid is ``wrong_shape``).
    Stored parts a source does not give are the spec's ``derived_parts`` (the dielectric ionic part, total -
    electronic), taken after the source parts are in the chosen frame.

Duplicates (same material_id): the first record in record_id order whose structure and values parsed is kept; a
    later one gets ``duplicate_identical`` if all its values equal the kept one's within ``duplicate_rtol`` (relative
    to the larger Frobenius norm, source values as given), else ``duplicate_conflict``. Records with no material_id
    (the phonon snapshot's row 1521, Mg3Bi2) are keyed by record_id and kept: their data are complete.

Issue codes, first found wins, structure before values: ``missing_field`` (a structure or value field absent or
    null), ``unknown_element`` (a species that is no chemical element), ``unparsable_structure`` (does not parse,
    is not periodic, or spglib cannot analyse it), ``wrong_shape``, ``unparsable_tensor`` (fetch's unreadable marker,
    non-numbers, non-finite values, a symmetric matrix that is not), then the duplicate codes. ``no_material_id`` is
    validate's to use; clean keeps such records (see above).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import properties
from zoo.core.io import atomic_write_bytes, canonical_json, write_json
from zoo.data.cleaning.frames import (
    FRAME_ACTIONS,
    FRAME_CANDIDATES,
    SYMMETRIZED_SUFFIX,
    UNRESOLVED,
    Measured,
    choose_frame,
    claim_order,
    frame_preference,
    measure_all,
)
from zoo.data.cleaning.params import ISSUE_CODES, CleanIssue, CleanParams
from zoo.data.cleaning.report import ReportStats
from zoo.data.cleaning.structures import parse_structure
from zoo.data.cleaning.values import read_values, stored_values

# The package's API: the stage below, and the parts its modules hold.
__all__ = [
    "FRAME_ACTIONS", "FRAME_CANDIDATES", "ISSUE_CODES", "SYMMETRIZED_SUFFIX", "UNRESOLVED", "CleanIssue", "CleanParams",
    "CleanResult", "choose_frame", "claim_order", "clean_property", "clean_records", "clean_schema", "duplicate_issue",
    "frame_preference", "parquet_bytes", "parse_structure", "read_values",
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
    claims = {"primary": _main_claim(ordered, spec.source_keys),
              "original": _main_claim(ordered, (spec.alternative_key,)) if spec.alternative_key else None}
    tensor_items = [item for item in measured if item.issue is None and item.residuals]
    order, wins = [], {}
    if spec.is_tensor:
        order, wins = frame_preference(tensor_items, claim_order(claims["primary"], claims["original"]),
                                       params.frame_tie_tol)

    kept_values: dict[str, dict[str, np.ndarray]] = {}
    rows, stats = [], ReportStats(params.neumann_rtol)
    for record, item in zip(ordered, measured):
        issue = item.issue
        material_id = record.get("material_id")
        if issue is None and material_id is not None:
            if material_id in kept_values:
                code = duplicate_issue(kept_values[material_id], item.parts, params.duplicate_rtol)
                issue = CleanIssue(code, f"material {material_id} already kept from an earlier record")
            else:
                kept_values[material_id] = item.parts
        row = _row(record, item, spec, order, params, issue, stats)
        rows.append(row)
    report = stats.report(spec, params, rows, order, wins, claims)
    return CleanResult(rows, report)


def _row(record: Mapping[str, Any], item: Measured, spec: properties.PropertySpec, order: Sequence[str],
         params: CleanParams, issue: CleanIssue | None, stats: ReportStats) -> dict[str, Any]:
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
    choice = choose_frame(item, order, params, spec)
    stats.add_choice(item, choice)
    row.update(
        stored_values(spec, choice.parts),
        frame_action=choice.action,
        frame_rotation=choice.rotation.tolist(),
        frame_residual_before=choice.residual_before,
        frame_residual_after=choice.residual_after,
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
