"""DVC stage `release` (releases/dvc.yaml): train, evaluate and ship one property's release with the code.

    python stages/release.py <property> [--params params.yaml]

params.yaml: section `release` (the training profile and the property's version) with `train`, `evaluate`,
`symmetry` and `publish.hub.organisation`. Writes zoo/releases/matten-<property>/<version>/ and its entry in
zoo/registry.json; trains and evaluates in data/releases/ (zoo.release.shipping.release_stage). Run by
`make release` (`dvc repro releases/dvc.yaml`), never by `dvc repro` alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.core import environment

# Passive OpenMP waiting (environment.env) must be chosen before torch is imported.
environment.apply()

from rich.console import Console  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.release import shipping  # noqa: E402

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        shipping.release_stage(args.property, args.params, log=console.print)
    except shipping.STAGE_ERRORS as err:
        console.print(f"[bold red]release {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
