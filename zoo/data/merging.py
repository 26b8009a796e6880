"""Several records of one material from different source files: the merge rule, applied by validate once every
record's own checks are done (only a record that passed them can speak for its material).

The rule, in order (each record that is not kept gets one reason code, so every record stays accounted for):

1. External holdout. A record from a holdout source (``validate.holdout_sources``: the files whose materials form
   the dataset's ``external`` split) is not used when any other source file holds a record of the same material,
   valid or not: ``holdout_overlap``. The holdout therefore contributes only materials that no other source holds,
   nothing of it is compared with or merged into another record, and its other records do not move any material's
   split. Its records are never the reason another record is dropped.
2. Newer MP release wins. Among the valid records of one material, a record is *older* than another when its source's
   latest release year is before the other's earliest (``provenance.mp_release_years``, from the snapshot manifest);
   a record with no stated years is never older or newer. The records that no other record is newer than are the
   newest. If they agree (below), the first in record_id order is kept and the other newest ones are
   ``merged_duplicate``; if they disagree, nothing settles which is right and every record of the material gets
   ``source_conflict``.
3. Older records: ``merged_duplicate`` when they agree with the kept record, ``superseded_by_newer_release`` when
   they do not (the Materials Project recomputed the material; its newer value is kept).

Agreement. Sources give the same material in different Cartesian frames (a CIF's orientation is the parser's), so
records are compared by rotation invariants: for each irrep instance of the value in the e3nn basis, its value for a
scalar (0e) and its norm otherwise (elastic: 2 scalars, the norms of two 2e and one 4e). Two records agree when no
invariant differs by more than ``merge_atol + merge_rtol * max(|invariants|)``; params.yaml's (1 GPa, 1%) cover the
rounding to whole GPa of the newer elastic files (the matminer and StrainTensorNet records of 102 of their 109 shared
materials agree; the 7 others differ by 3 to 52 GPa: recomputed).

Provenance. The kept record's provenance gains ``merged``: one entry per merged or superseded record (record_id,
file, row, sha256, relation 'agrees' or 'superseded', the largest invariant difference), so every source of a
material stays on its row.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from zoo import properties
from zoo.core import tensors
from zoo.core.io import canonical_json

MERGE_CODES: tuple[str, ...] = ("holdout_overlap", "source_conflict", "superseded_by_newer_release",
                                "merged_duplicate")
HOLDOUT_COLUMN = "holdout"


@dataclass(frozen=True)
class MergeParams:
    """holdout_sources: source files kept out of training (their unshared materials form the external split);
    merge_atol (property units) and merge_rtol: agreement tolerance (module docstring)."""

    holdout_sources: tuple[str, ...]
    merge_atol: float
    merge_rtol: float


@dataclass
class MergeResult:
    reasons: list[set[str]]  # the input reasons with the merge codes added
    provenance_json: list[str]  # per row: the kept rows' provenance gains 'merged'
    holdout: list[bool]  # per row: from a holdout source
    report: dict[str, Any] = field(default_factory=dict)


def _provenance(text: str) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) and text else {}


def invariants(spec: properties.PropertySpec, row: Mapping[str, Any], columns: Sequence[str]) -> np.ndarray:
    """Rotation invariants of a row's value: per irrep instance of each part, the 0e value or the norm (module
    docstring); the DOS, an invariant, as it is."""
    if not spec.is_tensor:
        return np.concatenate([np.asarray(row[name], dtype=np.float64).ravel() for name in columns])
    # (multiplicity, l) of each irreps entry, read off the string: e3nn (and torch) are not needed in the data stages
    irreps = [(int(mul), int(degree)) for mul, degree in re.findall(r"(\d+)x(\d+)[eo]", spec.irreps)]
    out, start = [], 0
    for name in columns:
        value = row[name]  # nested lists, or numpy object arrays as read from Parquet
        value = np.asarray(value.tolist() if isinstance(value, np.ndarray) else value, dtype=np.float64)
        if value.shape == spec.cartesian_shape:
            vector = tensors.cartesian_to_irreps(value, spec.formula)
        else:
            vector = tensors.voigt_to_irreps(value, spec.voigt_kind, spec.formula)
        for mul, degree in irreps:
            block = vector[start:start + mul * (2 * degree + 1)].reshape(mul, 2 * degree + 1)
            out.extend(block[:, 0] if degree == 0 else np.linalg.norm(block, axis=1))
            start += mul * (2 * degree + 1)
        start = 0
    return np.asarray(out)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def agree(a: np.ndarray, b: np.ndarray, params: MergeParams) -> bool:
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
    return difference(a, b) <= params.merge_atol + params.merge_rtol * scale


def _older(years_a: Sequence[int] | None, years_b: Sequence[int] | None) -> bool:
    """Whether a comes from an MP release before b's (both stated, and a's latest year before b's earliest)."""
    return years_a is not None and years_b is not None and years_a[1] < years_b[0]


def merge(clean: pd.DataFrame, reasons: Sequence[set[str]], spec: properties.PropertySpec,
          value_columns: Sequence[str], params: MergeParams) -> MergeResult:
    """Apply the rule to a validated frame (rows sorted by record_id; `reasons` per row, empty = valid so far)."""
    reasons = [set(codes) for codes in reasons]
    provenance = [_provenance(text) for text in clean["provenance_json"]]
    files = [p.get("file") for p in provenance]
    holdout = [file in params.holdout_sources for file in files]
    material_ids = list(clean["material_id"])
    files_of: dict[str, set[str]] = defaultdict(set)
    for material_id, file in zip(material_ids, files):
        if material_id is not None:
            files_of[material_id].add(file)

    for i, (material_id, file) in enumerate(zip(material_ids, files)):
        if holdout[i] and material_id is not None and files_of[material_id] - {file}:
            reasons[i].add("holdout_overlap")

    groups: dict[str, list[int]] = defaultdict(list)
    for i, material_id in enumerate(material_ids):
        if material_id is not None and not reasons[i]:
            groups[material_id].append(i)
    out_provenance = list(clean["provenance_json"])
    differences: dict[str, list[float]] = defaultdict(list)
    for material_id, rows in groups.items():
        if len({files[i] for i in rows}) < 2:
            continue  # one source file: clean already resolved its duplicates
        kept, merged = _merge_group(clean, rows, reasons, provenance, spec, value_columns, params, differences)
        if kept is not None:
            out_provenance[kept] = canonical_json({**provenance[kept], "merged": merged})
    return MergeResult(reasons, out_provenance, holdout, _report(files, reasons, holdout, differences, params))


def _merge_group(clean, rows, reasons, provenance, spec, value_columns, params, differences):
    """Merge one material's valid records (rows): returns (kept row or None, the 'merged' provenance entries)."""
    years = {i: provenance[i].get("mp_release_years") for i in rows}
    newest = [i for i in rows if not any(_older(years[i], years[j]) for j in rows if j != i)]
    values = {i: invariants(spec, clean.iloc[i], value_columns) for i in rows}
    pair = lambda i, j: f"{provenance[i].get('file')} | {provenance[j].get('file')}"  # noqa: E731
    if not all(agree(values[i], values[j], params) for i in newest for j in newest if i < j):
        for i in rows:
            reasons[i].add("source_conflict")
        return None, []
    kept, merged = newest[0], []
    for i in rows:
        if i == kept:
            continue
        gap = difference(values[i], values[kept])
        differences[pair(i, kept)].append(gap)
        relation = "agrees" if i in newest or agree(values[i], values[kept], params) else "superseded"
        reasons[i].add("merged_duplicate" if relation == "agrees" else "superseded_by_newer_release")
        merged.append({"record_id": clean["record_id"].iloc[i], "file": provenance[i].get("file"),
                       "row": provenance[i].get("row"), "sha256": provenance[i].get("sha256"),
                       "relation": relation, "largest_invariant_difference": gap})
    return kept, merged


def _report(files, reasons, holdout, differences, params) -> dict[str, Any]:
    """Per source file: records, valid before the merge, kept, and each merge code; the differences measured."""
    by_source: dict[str, Counter] = defaultdict(Counter)
    for file, codes, is_holdout in zip(files, reasons, holdout):
        counts = by_source[str(file)]
        counts["records"] += 1
        merge_codes = codes & set(MERGE_CODES)
        if not codes - set(MERGE_CODES):
            counts["valid"] += 1
        for code in merge_codes:
            counts[code] += 1
        if not codes:
            counts["kept"] += 1
    return {
        "params": {"holdout_sources": list(params.holdout_sources), "merge_atol": params.merge_atol,
                   "merge_rtol": params.merge_rtol},
        "by_source": {file: dict(sorted(counts.items())) for file, counts in sorted(by_source.items())},
        "largest_invariant_difference": {
            pair: {"n": len(gaps), "median": float(np.median(gaps)), "max": float(np.max(gaps))}
            for pair, gaps in sorted(differences.items())},
    }
