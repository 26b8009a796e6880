"""DVC stage `build`: one property's accepted records -> a Hugging Face dataset repository folder.

    python stages/build.py <property> [--params params.yaml]

Reads data/clean/<property>.accepted.parquet and data/reports/<property>-validation.json; writes
data/hub/datasets/mp-<property>-irreps/ (README.md card, dataset_version.json, data/{train,validation,test}-*.parquet)
(zoo.data.pipeline.build_stage). params.yaml: sections `build` and `symmetry` (zoo.core.config).
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
        pipeline.build_stage(args.property, args.params, console)
    except (ValueError, FileNotFoundError) as err:  # bad params, missing or inconsistent validate outputs
        console.print(f"[bold red]build {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
