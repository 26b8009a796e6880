"""DVC stage `clean`: data/raw/<property>.jsonl -> data/clean/<property>.parquet (one row per raw record).

    python stages/clean.py <property> [--params params.yaml]

params.yaml: sections `symmetry` and `clean` (zoo.core.config). Writes data/clean/<property>.parquet and
data/reports/<property>-clean.json (zoo.data.pipeline.clean_stage; the rules are in zoo.data.cleaning's docstring).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from zoo import properties
from zoo.data import pipeline

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        pipeline.clean_stage(args.property, args.params, console)
    except pipeline.STAGE_ERRORS as err:  # bad params, missing or malformed raw file
        console.print(f"[bold red]clean {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
