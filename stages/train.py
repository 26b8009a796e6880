"""DVC stage `train`: one property's built dataset -> a trained model folder.

    python stages/train.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/hub/datasets/mp-<property>-irreps/; writes data/models/matten-<property>/ (model.safetensors,
config.json, training_log.json) and the per-epoch metrics with dvclive into data/reports/train/<property>/
(zoo.nn.pipeline.train_stage). An interrupted run continues from data/models/.resume/matten-<property>/ when
settings, model config and dataset fingerprint are unchanged (zoo.nn.training). params.yaml: section `train`
(zoo.core.train_config.TrainConfig; --profile overrides train.profile for one run).
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
    return stage_cli.main(__doc__, "train", properties.PROPERTIES, pipeline.STAGE_ERRORS,
                          lambda prop, args, console: pipeline.train_stage(prop, args.params, args.profile),
                          options=_options, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
