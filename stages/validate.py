"""DVC stage `validate`: clean records -> accepted + quarantined records, with reasons, and a report.

    python stages/validate.py <property> [<property> ...] [--params params.yaml]

Several properties in one call share one process (Great Expectations, torch and pymatgen are imported once).

params.yaml, section `validate` (every key optional; defaults in zoo.data.validation.ValidationParams):
    neumann_tolerance           max relative Neumann residual of an accepted tensor record
    min_interatomic_distance_a  shortest allowed distance between two sites, A
    k_vrh_range_gpa             [min, max] Hill bulk modulus, GPa
    g_vrh_range_gpa             [min, max] Hill shear modulus, GPa
    dielectric_eigenvalue_atol  slack on eps >= 1 and ionic >= 0
    piezo_zero_atol_c_m2        largest |e_ij| of a piezo tensor that counts as zero, C/m^2
    workers                     processes computing the per-record metrics (results do not depend on it)

Reads data/raw/<property>.jsonl (only the record ids: every raw record must reach the clean frame) and
data/clean/<property>.parquet. Writes, relative to the working directory (DVC runs stages from the repository root):
    data/clean/<property>.accepted.parquet, data/quarantine/<property>.parquet,
    data/reports/<property>-validation.json, data/reports/data-docs/<property>/ (Great Expectations Data Docs)
Exits non-zero with a message if the records do not add up (n_raw != n_accepted + n_quarantined).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core.params import load_section  # noqa: E402
from zoo.data import validation


def load_validate_params(params_path: Path) -> validation.ValidationParams:
    """The `validate` section of the params file as ValidationParams (a missing section means the defaults)."""
    return validation.ValidationParams.from_mapping(load_section(params_path, "validate"))


def raw_record_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"raw records {path} not found: run the fetch stage first")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["record_id"] for line in handle if line.strip()]


def check_same_records(raw_ids: list[str], clean: pd.DataFrame, prop: str) -> None:
    """Clean keeps one row per raw record: refuse a clean frame that lost or invented records."""
    raw, cleaned = set(raw_ids), set(clean["record_id"])
    lost, invented = sorted(raw - cleaned), sorted(cleaned - raw)
    if lost or invented or len(raw_ids) != len(clean):
        raise ValueError(
            f"clean {prop} does not hold the raw records one to one: {len(raw_ids)} raw, {len(clean)} clean rows; "
            f"missing from clean {lost[:5]}{' ...' if len(lost) > 5 else ''}, "
            f"not in raw {invented[:5]}{' ...' if len(invented) > 5 else ''}"
        )


def validate_property(prop: str, params: validation.ValidationParams) -> dict[str, Any]:
    """Validate one property's clean records and write its outputs; returns the report."""
    clean_path = Path("data/clean") / f"{prop}.parquet"
    raw_ids = raw_record_ids(Path("data/raw") / f"{prop}.jsonl")
    if not clean_path.is_file():
        raise FileNotFoundError(f"clean records {clean_path} not found: run the clean stage first")
    clean = pd.read_parquet(clean_path)
    check_same_records(raw_ids, clean, prop)
    result = validation.validate(clean, prop, params, n_raw=len(raw_ids), docs_dir=Path("data/reports/data-docs") / prop)
    validation.write_outputs(result, Path("data/clean") / f"{prop}.accepted.parquet",
                             Path("data/quarantine") / f"{prop}.parquet", Path("data/reports") / f"{prop}-validation.json")
    return result.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("properties", nargs="+", choices=sorted(properties.PROPERTIES), metavar="property")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    for prop in args.properties:
        started = time.perf_counter()
        try:
            report = validate_property(prop, load_validate_params(args.params))
        except (ValueError, FileNotFoundError) as err:
            print(f"validate {prop} failed: {err}", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - started
        reasons = ", ".join(f"{code} {count}" for code, count in report["reasons"].items()) or "none"
        print(f"validate {prop}: {report['n_raw']} records -> {report['n_accepted']} accepted, "
              f"{report['n_quarantined']} quarantined ({reasons}) in {elapsed:.1f} s "
              f"({report['n_raw'] / max(elapsed, 1e-9):.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
