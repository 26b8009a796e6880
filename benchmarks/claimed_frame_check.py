"""Cross-check of the claimed-frame rule (zoo.data.cleaning.evidence, clean.claimed_frame_settles) against the 2015 file.

    python benchmarks/claimed_frame_check.py [--clean data/clean/elastic.parquet]

The newer elastic files' records that the claimed IEEE frame settled where 'ieee' and 'standard' both fit and give
different tensors (frame_evidence 'source_convention', the two candidates in different classes) are compared with
the matminer 2015 record of the same material, whose frame its structure-frame column settled: an independent
witness. Both are brought into the spglib standard frame of their own structure; there the 'standard' hypothesis is
the newer tensor as given, the 'ieee' hypothesis the stored one. Verdict: the hypothesis at least twice closer
(relative Frobenius distance). Materials MP recomputed differ under both. Reads only; prints one line per record
and the counts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from zoo.core import tensors
from zoo.data.cleaning import CleanParams
from zoo.data.cleaning.frames import standard_rotation

OLD_FILE = "matminer-0.4.1/elastic_tensor.csv"


def _file(row) -> str:
    return json.loads(row.provenance_json)["file"]


def _classes(row) -> dict[str, int | None]:
    return {item["candidate"]: item["class"] for item in json.loads(row.frame_candidates_json or "[]")}


def _in_standard_frame(row, voigt: np.ndarray, params: CleanParams) -> np.ndarray:
    structure = Structure.from_dict(json.loads(row.structure_json))
    rotation = standard_rotation(structure, params.symprec, params.angle_tolerance)
    return tensors.rotate(tensors.stiffness_voigt_to_cartesian(voigt), rotation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=Path, default=Path("data/clean/elastic.parquet"))
    args = parser.parse_args()
    params = CleanParams.from_params()
    rows = pd.read_parquet(args.clean)
    settled = rows[rows.clean_issue.isna() & (rows.frame_action != "unresolved")]
    witness = {row.material_id: row for row in settled.itertuples() if _file(row) == OLD_FILE}
    counts: Counter = Counter()
    for row in settled.itertuples():
        classes = _classes(row)
        if (_file(row) == OLD_FILE or row.frame_evidence != "source_convention" or row.material_id not in witness
                or None in (classes.get("ieee"), classes.get("standard")) or classes["ieee"] == classes["standard"]):
            continue
        old = witness[row.material_id]
        reference = _in_standard_frame(old, np.array(old.stiffness_voigt.tolist()), params)
        stored = np.array(row.stiffness_voigt.tolist())
        ieee = _in_standard_frame(row, stored, params)
        as_given = tensors.rotate(tensors.stiffness_voigt_to_cartesian(stored), np.array(row.frame_rotation.tolist()).T)
        scale = np.linalg.norm(reference)
        d_ieee, d_standard = np.linalg.norm(reference - ieee) / scale, np.linalg.norm(reference - as_given) / scale
        verdict = "ieee" if d_ieee < 0.5 * d_standard else "standard" if d_standard < 0.5 * d_ieee else "unclear"
        counts[(_file(row), row.crystal_system, verdict)] += 1
        print(f"{_file(row)} {row.material_id} {row.point_group}: ieee {d_ieee:.3f} standard {d_standard:.3f} -> "
              f"{verdict}")
    for key, count in sorted(counts.items()):
        print(count, *key)


if __name__ == "__main__":
    main()
