"""DVC stage `fetch`: one property's source data -> data/raw/<property>.jsonl (canonical raw records).

    python stages/fetch.py <property> [--params params.yaml]

params.yaml: section `fetch` (zoo.core.config.FetchConfig); the mp-api source reads its key from the environment
variable MP_API_KEY (never from params). Writes data/raw/<property>.jsonl and data/reports/<property>-fetch.json
(zoo.data.pipeline.fetch_stage).
"""

from __future__ import annotations

import sys

from zoo.core import stage_cli  # first: it applies environment.env before numpy and torch load

from zoo import properties
from zoo.data import pipeline


def main(argv: list[str] | None = None) -> int:
    # STAGE_ERRORS: bad params, changed snapshot, no key, no host
    return stage_cli.main(__doc__, "fetch", properties.PROPERTIES, pipeline.STAGE_ERRORS,
                          lambda prop, args, console: pipeline.fetch_stage(prop, args.params, console), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
