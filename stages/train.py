"""DVC stage `train`: one property's built dataset -> a trained model folder.

    python stages/train.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/hub/datasets/mp-<property>-irreps/; writes data/models/matten-<property>/ (model.safetensors,
config.json, training_log.json) and the per-epoch metrics with dvclive into data/reports/train/<property>/
(zoo.nn.pipeline.train_stage). An interrupted run continues from data/models/.resume/matten-<property>/ when
settings, model config and dataset fingerprint are unchanged (zoo.nn.training). params.yaml: section `train`
(zoo.core.config.TrainConfig; --profile overrides train.profile for one run).
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
        pipeline.train_stage(args.property, args.params, args.profile)
    except pipeline.STAGE_ERRORS as err:
        console.print(f"[bold red]train {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
