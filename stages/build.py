"""DVC stage `build`: one property's accepted records -> a Hugging Face dataset repository folder.

    python stages/build.py <property> [--params params.yaml]

Reads data/clean/<property>.accepted.parquet and data/reports/<property>-validation.json; writes
data/hub/datasets/mp-<property>-irreps/ (README.md card, dataset_version.json, data/{train,validation,test}-*.parquet)
(zoo.data.pipeline.build_stage). params.yaml: sections `build` and `symmetry` (zoo.core.config).
"""

from __future__ import annotations

import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.data import pipeline


def main(argv: list[str] | None = None) -> int:
    # ValueError, FileNotFoundError: bad params, missing or inconsistent validate outputs
    return stage_cli.main(__doc__, "build", properties.PROPERTIES, (ValueError, FileNotFoundError),
                          lambda prop, args, console: pipeline.build_stage(prop, args.params, console), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
