"""DVC stage `validate`: clean records -> accepted + quarantined records, with reasons, and a report.

    python stages/validate.py <property> [<property> ...] [--params params.yaml]

Several properties in one call share one process (Great Expectations, torch and pymatgen are imported once).
params.yaml: sections `symmetry` and `validate` (zoo.core.config). Reads data/raw/<property>.jsonl (the record ids)
and data/clean/<property>.parquet; writes data/clean/<property>.accepted.parquet, data/quarantine/<property>.parquet,
data/reports/<property>-validation.json and data/reports/data-docs/<property>/ (zoo.data.pipeline.validate_stage).
Exits non-zero with a message if the records do not add up (n_raw != n_accepted + n_quarantined).
"""

from __future__ import annotations

import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.data import pipeline


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main(__doc__, "validate", properties.PROPERTIES, (ValueError, FileNotFoundError),
                          lambda prop, args, console: pipeline.validate_stage(prop, args.params), several=True,
                          argv=argv)


if __name__ == "__main__":
    sys.exit(main())
