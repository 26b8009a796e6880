"""DVC stage `evaluate`: a trained model and its baselines, scored on the test split.

    python stages/evaluate.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/models/matten-<property>/ and data/hub/datasets/mp-<property>-irreps/; trains the baselines on the same
split; writes data/reports/<property>-metrics.json and the parity and per-crystal-system plots
(zoo.nn.pipeline.evaluate_stage). params.yaml: sections `train` (the profile), `evaluate` and `symmetry`.
"""

from __future__ import annotations

import argparse
import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.nn import pipeline


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="training profile (default: train.profile of the params)")


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main(
        __doc__, "evaluate", properties.PROPERTIES, pipeline.STAGE_ERRORS,
        lambda prop, args, console: pipeline.evaluate_stage(prop, args.params, args.profile, log=console.print),
        options=_options, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
