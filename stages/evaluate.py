"""DVC stage `evaluate`: a trained model and its baselines, scored on the test split.

    python stages/evaluate.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/models/matten-<property>/ and data/hub/datasets/mp-<property>-irreps/; trains the baselines on the same
split; writes data/reports/<property>-metrics.json and the parity and per-crystal-system plots
(zoo.nn.pipeline.evaluate_stage). params.yaml: sections `train` (the profile), `evaluate` and `symmetry`.
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
from zoo.nn import pipeline  # noqa: E402

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--profile", default=None, help="training profile (default: train.profile of the params)")
    args = parser.parse_args(argv)
    try:
        pipeline.evaluate_stage(args.property, args.params, args.profile, log=console.print)
    except pipeline.STAGE_ERRORS as err:
        console.print(f"[bold red]evaluate {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
