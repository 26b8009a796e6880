"""DVC stage `validate`: clean records -> accepted + quarantined records, with reasons, and a report.

    python stages/validate.py <property> [<property> ...] [--params params.yaml]

Several properties in one call share one process (Great Expectations, torch and pymatgen are imported once).
params.yaml: sections `symmetry` and `validate` (zoo.core.config). Reads data/raw/<property>.jsonl (the record ids)
and data/clean/<property>.parquet; writes data/clean/<property>.accepted.parquet, data/quarantine/<property>.parquet,
data/reports/<property>-validation.json and data/reports/data-docs/<property>/ (zoo.data.pipeline.validate_stage).
Exits non-zero with a message if the records do not add up (n_raw != n_accepted + n_quarantined).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo import properties
from zoo.data import pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("properties", nargs="+", choices=sorted(properties.PROPERTIES), metavar="property")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    for prop in args.properties:
        try:
            pipeline.validate_stage(prop, args.params)
        except (ValueError, FileNotFoundError) as err:
            print(f"validate {prop} failed: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
