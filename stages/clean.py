"""DVC stage `clean`: data/raw/<property>.jsonl -> data/clean/<property>.parquet (one row per raw record).

    python stages/clean.py <property> [--params params.yaml]

params.yaml: sections `symmetry` and `clean` (zoo.core.config). Writes data/clean/<property>.parquet and
data/reports/<property>-clean.json (zoo.data.pipeline.clean_stage; the rules are in zoo.data.cleaning's docstring).
"""

from __future__ import annotations

import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.data import pipeline


def main(argv: list[str] | None = None) -> int:
    # STAGE_ERRORS: bad params, missing or malformed raw file
    return stage_cli.main(__doc__, "clean", properties.PROPERTIES, pipeline.STAGE_ERRORS,
                          lambda prop, args, console: pipeline.clean_stage(prop, args.params, console), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
