"""DVC stage `release` (releases/dvc.yaml): train, evaluate and ship one property's release with the code.

    python stages/release.py <property> [--params params.yaml]

params.yaml: section `release` (the training profile and the property's version) with `train`, `evaluate`,
`symmetry` and `publish.hub.organisation`. Writes zoo/releases/matten-<property>/<version>/ and its entry in
zoo/registry.json; trains and evaluates in data/releases/ (zoo.release.shipping.release_stage). Run by
`make release` (`dvc repro releases/dvc.yaml`), never by `dvc repro` alone.
"""

from __future__ import annotations

import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.release import shipping


def main(argv: list[str] | None = None) -> int:
    return stage_cli.main(__doc__, "release", properties.PROPERTIES, shipping.STAGE_ERRORS,
                          lambda prop, args, console: shipping.release_stage(prop, args.params, log=console.print),
                          argv=argv)


if __name__ == "__main__":
    sys.exit(main())
