"""DVC stage `publish`: a trained, evaluated model and its dataset as versioned repositories (zoo.release.publishing).

    python stages/publish.py <property> [--params params.yaml] [--target local|hub] [--version X.Y.Z]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from zoo import properties
from zoo.release import publishing

console = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--target", choices=publishing.PublishConfig.TARGETS, default=None,
                        help="overrides publish.target")
    parser.add_argument("--version", default=None, help="model version (default: publish.model_version)")
    args = parser.parse_args(argv)
    try:
        publishing.publish_stage(args.property, args.params, target=args.target, version=args.version)
    except publishing.PUBLISH_ERRORS as err:
        console.print(f"[bold red]publish {args.property} failed:[/] {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
