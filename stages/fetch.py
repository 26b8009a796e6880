"""DVC stage `fetch`: one property's source data -> data/raw/<property>.jsonl (canonical raw records).

    python stages/fetch.py <property> [--params params.yaml]

params.yaml: section `fetch` (zoo.core.config.FetchConfig); the mp-api source reads its key from the environment
variable MP_API_KEY (never from params). Writes data/raw/<property>.jsonl and data/reports/<property>-fetch.json
(zoo.data.pipeline.fetch_stage).
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
        pipeline.fetch_stage(args.property, args.params, console)
    except pipeline.STAGE_ERRORS as err:  # bad params, changed snapshot, no key, no host
        console.print(f"[bold red]fetch {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
