"""Audit of the frame decision and the piezo polarity, before and after (issue 12).

    python benchmarks/frames_audit.py [--before ../baseline/data] [--after data]

For elastic, dielectric and piezo: records settled by each kind of evidence, frame_ambiguous and the other
quarantine reasons, from data/reports/<prop>-clean.json and -validation.json of each pipeline run ('before' runs
without frame evidence count as 'tie-break order'), and how many accepted tensors changed. For piezo, the
longitudinal coefficient along the cation->anion bond of every tetrahedral binary (zoo.core.polarity), in the
clean tensors of each run, with each record's fate. Reads only; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from zoo import properties
from zoo.core import polarity, symmetry
from zoo.data.cleaning.evidence import EVIDENCE

PROPERTIES = ("elastic", "dielectric", "piezo")


def _reports(root: Path, prop: str) -> tuple[dict, dict]:
    load = lambda name: json.loads((root / "reports" / f"{prop}-{name}.json").read_text())  # noqa: E731
    return load("clean"), load("validation")


def evidence_row(root: Path, prop: str) -> dict[str, int]:
    clean, validation = _reports(root, prop)
    counts = dict.fromkeys(EVIDENCE, 0)
    accepted = pd.read_parquet(root / "clean" / f"{prop}.accepted.parquet")
    if "frame_evidence" in accepted.columns:
        for name, count in accepted["frame_evidence"].value_counts().items():
            counts[name] = int(count)
    else:
        counts = {"tie-break order": len(accepted)}
    reasons = dict(validation["reasons"])
    return {**counts, "accepted": validation["n_accepted"], "frame_ambiguous": reasons.pop("frame_ambiguous", 0),
            "other quarantine": sum(reasons.values()), "other reasons": reasons}


def changed_tensors(before: Path, after: Path, prop: str) -> dict[str, int]:
    """Accepted in both runs: how many stored tensors differ by more than 1e-6, 1% and 10% of their norm."""
    spec = properties.get(prop)
    old = pd.read_parquet(before / "clean" / f"{prop}.accepted.parquet").set_index("record_id")
    new = pd.read_parquet(after / "clean" / f"{prop}.accepted.parquet").set_index("record_id")
    both = old.index.intersection(new.index)
    out = {"accepted in both": len(both), "> 1e-6": 0, "> 1%": 0, "> 10%": 0,
           "only before": len(old.index.difference(new.index)), "only after": len(new.index.difference(old.index))}
    for record_id in both:
        change = max(np.linalg.norm(np.stack(new.at[record_id, c]) - np.stack(old.at[record_id, c]))
                     / max(np.linalg.norm(np.stack(old.at[record_id, c])), 1e-300) for c in spec.stored_columns)
        for key, limit in (("> 1e-6", 1e-6), ("> 1%", 0.01), ("> 10%", 0.1)):
            out[key] += change > limit
    return out


def polarity_rows(root: Path) -> dict[str, tuple[str, float, str]]:
    """record_id -> (compound, e_long, fate) for the tetrahedral binaries in the clean piezo tensors of a run."""
    clean = pd.read_parquet(root / "clean" / "piezo.parquet")
    quarantine = pd.read_parquet(root / "quarantine" / "piezo.parquet").set_index("record_id")
    out = {}
    for row in clean.itertuples():
        if row.structure_json is None or row.piezo_voigt is None:
            continue
        structure = Structure.from_dict(json.loads(row.structure_json))
        if polarity.tetrahedral_bonds(structure) is None:
            continue
        info = symmetry.analyze(structure)
        compound, e_long = polarity.piezo_bond_longitudinal(np.stack(row.piezo_voigt), structure, info)
        fate = quarantine.at[row.record_id, "primary_reason"] if row.record_id in quarantine.index else "accepted"
        out[row.record_id] = (f"{compound} {info.space_group_symbol} {row.material_id}", e_long, fate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=Path("../baseline/data"))
    parser.add_argument("--after", type=Path, default=Path("data"))
    args = parser.parse_args()
    for prop in PROPERTIES:
        print(f"\n### {prop}\n")
        rows = {"before": evidence_row(args.before, prop), "after": evidence_row(args.after, prop)}
        keys = [key for key in ("tie-break order", *EVIDENCE, "accepted", "frame_ambiguous", "other quarantine")
                if any(key in row for row in rows.values())]
        print("| run | " + " | ".join(keys) + " | other reasons |")
        print("|---" * (len(keys) + 2) + "|")
        for name, row in rows.items():
            print(f"| {name} | " + " | ".join(str(row.get(key, 0)) for key in keys) + f" | {row['other reasons']} |")
        print(f"\nstored tensors: {changed_tensors(args.before, args.after, prop)}")
    print("\n### piezo: e_long along the cation->anion bond (C/m^2)\n")
    before, after = polarity_rows(args.before), polarity_rows(args.after)
    print("| compound, space group, material | before | fate before | after | fate after |")
    print("|---|---|---|---|---|")
    for record_id in sorted(before, key=lambda rid: before[rid][0]):
        label, old, old_fate = before[record_id]
        _, new, new_fate = after.get(record_id, (label, float("nan"), "-"))
        print(f"| {label} | {old:+.3f} | {old_fate} | {new:+.3f} | {new_fate} |")


if __name__ == "__main__":
    main()
