"""DVC stage `publish`: a trained, evaluated model and its dataset as versioned repositories (zoo.release.publishing).

    python stages/publish.py <property> [--params params.yaml] [--target local|hub] [--version X.Y.Z]
"""

from __future__ import annotations

import argparse
import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.release import publishing


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=publishing.PublishConfig.TARGETS, default=None,
                        help="overrides publish.target")
    parser.add_argument("--version", default=None, help="model version (default: publish.model_version)")


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main(
        __doc__, "publish", properties.PROPERTIES, publishing.PUBLISH_ERRORS,
        lambda prop, args, console: publishing.publish_stage(prop, args.params, target=args.target,
                                                             version=args.version),
        options=_options, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
