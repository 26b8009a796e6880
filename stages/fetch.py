"""DVC stage `fetch`: one property's source data -> data/raw/<property>.jsonl (canonical raw records).

    python stages/fetch.py <property> [--params params.yaml]

params.yaml, section `fetch`:
    source          'snapshot' (the pinned offline files) or 'mp-api' (the Materials Project API);
                    the environment variable MPTZ_FETCH_SOURCE overrides it.
    snapshot_root   directory of the snapshot, relative to the params file (default ../shared/datasets).
    mp_api          keyword options of zoo.data.sources.mp_api.fetch_property: endpoint, chunk_size, max_retries,
                    backoff_s, max_delay_s, timeout_s, phonon_method, state_dir, progress.
The mp-api source reads its key from the environment variable MP_API_KEY (never from params).

Writes data/raw/<property>.jsonl and data/reports/<property>-fetch.json (counts, exclusions, hashes),
relative to the working directory (DVC runs stages from the repository root).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from zoo import properties
from zoo.core.io import write_json
from zoo.core.params import load_section
from zoo.data.sources import snapshot

SOURCES = ("snapshot", "mp-api")
SOURCE_ENV = "MPTZ_FETCH_SOURCE"
API_KEY_ENV = "MP_API_KEY"
DEFAULT_SNAPSHOT_ROOT = "../shared/datasets"

console = Console(stderr=True, soft_wrap=True)


def load_fetch_params(params_path: Path) -> dict[str, Any]:
    """The `fetch` section of the params file, with the source override from the environment applied."""
    section = load_section(params_path, "fetch", required=True)
    override = os.environ.get(SOURCE_ENV)
    where = f"environment variable {SOURCE_ENV}" if override else f"fetch.source in {params_path}"
    section["source"] = override or section.get("source", "snapshot")
    if section["source"] not in SOURCES:
        raise ValueError(f"{where} is {section['source']!r}; expected one of {', '.join(SOURCES)}")
    if section.get("mp_api") is not None and not isinstance(section["mp_api"], dict):
        raise ValueError(f"fetch.mp_api in {params_path} must be a mapping of options, got {section['mp_api']!r}")
    return section


class FetchFailed(Exception):
    """The source could not be fetched from (network, retries exhausted, key rejected): a message, not a bug."""


def fetch(prop: str, fetch_params: dict[str, Any], params_dir: Path, out_path: Path) -> dict[str, Any]:
    """Run the configured source; return its fetch report as a JSON-ready dict."""
    if fetch_params["source"] == "snapshot":
        root = params_dir / (fetch_params.get("snapshot_root") or DEFAULT_SNAPSHOT_ROOT)
        with console.status(f"fetch {prop}: reading the snapshot at {root} ..."):
            return snapshot.fetch_property(prop, root, out_path).to_dict()
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        raise ValueError(
            f"fetch source is 'mp-api' but {API_KEY_ENV} is not set: export {API_KEY_ENV}=<your Materials Project "
            f"API key>, or fetch from the offline snapshot with {SOURCE_ENV}=snapshot"
        )
    from zoo.data.sources import (
        mp_api,  # imported only here: the MP client is heavy and needs no loading otherwise
    )

    options = dict(fetch_params.get("mp_api") or {})
    known = set(inspect.signature(mp_api.fetch_property).parameters) - {"spec", "out_path", "api_key"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"fetch.mp_api has unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:  # mp_api draws its own progress bar
        return mp_api.fetch_property(properties.get(prop), out_path, api_key=api_key, **options)
    except mp_api.MPAPIError as err:
        raise FetchFailed(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    out_path = Path("data/raw") / f"{args.property}.jsonl"
    report_path = Path("data/reports") / f"{args.property}-fetch.json"
    try:
        fetch_params = load_fetch_params(args.params)
        started = time.perf_counter()
        report = fetch(args.property, fetch_params, args.params.parent, out_path)
        elapsed = time.perf_counter() - started
    except (ValueError, FileNotFoundError, FetchFailed) as err:  # bad params, changed snapshot, no key, no host
        console.print(f"[bold red]fetch {args.property} failed:[/] {err}")
        return 1
    write_json(report_path, report)
    for name, sha in sorted(report["inputs"].items()):
        console.print(f"  [green]ok[/] {name}  sha256 {sha[:16]}...")
    for exclusion in report["excluded"]:
        console.print(f"  [yellow]excluded[/] {exclusion['count']} rows ({exclusion['reason']}): "
                      f"{exclusion['description']}")
    for field_name, count in report["unreadable_fields"].items():
        console.print(f"  [yellow]unreadable[/] {field_name} in {count} records (clean quarantines them)")
    print(
        f"fetch {args.property}: {report['records_written']} records from {report['source']} "
        f"({report['rows_read']} rows read, {report['rows_excluded']} excluded, "
        f"{sum(report['unreadable_fields'].values())} unreadable fields) -> {out_path} "
        f"in {elapsed:.2f} s ({report['records_written'] / max(elapsed, 1e-9):.0f} records/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
