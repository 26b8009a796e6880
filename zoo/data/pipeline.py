"""The data stages of dvc.yaml (fetch, clean, validate, build), one function each: read the params file's sections
(zoo.core.config), run the stage on one property with the paths DVC knows, say what happened.

Paths are relative to the working directory: DVC runs the stages from the repository root. The stage scripts
(stages/<stage>.py) only parse their arguments and call these; a function raises one of STAGE_ERRORS for a failure
that is the user's to fix (bad params, a missing input, a changed snapshot, an unreachable API), and the script
prints it as one line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoo import properties
from zoo.core.config import BuildConfig, FetchConfig, load_section
from zoo.core.io import write_json
from zoo.core.versions import check_version
from zoo.data import cleaning, datasets, splits
from zoo.data.records import RawRecordError

RAW_DIR = Path("data/raw")
CLEAN_DIR = Path("data/clean")
QUARANTINE_DIR = Path("data/quarantine")
REPORTS_DIR = Path("data/reports")
DOCS_DIR = REPORTS_DIR / "data-docs"
API_KEY_ENV = "MP_API_KEY"


class FetchFailed(Exception):
    """The source could not be fetched from (network, retries exhausted, key rejected): a message, not a bug."""


STAGE_ERRORS = (ValueError, FileNotFoundError, RawRecordError, FetchFailed)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# -------------------------------------------------------------------------------------------------- fetch
def fetch_records(prop: str, settings: FetchConfig, params_dir: Path, out_path: Path,
                  console: Console) -> dict[str, Any]:
    """Run the configured source; return its fetch report as a JSON-ready dict."""
    if settings.source == "snapshot":
        from zoo.data.sources import snapshot  # the fetch stage's alone (it reads the pinned manifest)

        root = snapshot.locate_root(settings.snapshot_root, params_dir)
        with console.status(f"fetch {prop}: reading the snapshot at {root} ..."):
            return snapshot.fetch_property(prop, root, out_path).to_dict()
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        raise ValueError(
            f"fetch source is 'mp-api' but {API_KEY_ENV} is not set: export {API_KEY_ENV}=<your Materials Project "
            "API key>, or fetch from the offline snapshot (fetch.source: snapshot in params.yaml)"
        )
    from zoo.data.sources import mp_api  # imported only here: the MP client is heavy and needs no loading otherwise

    try:  # mp_api draws its own progress bar
        return mp_api.fetch_property(properties.get(prop), out_path, api_key=api_key, **settings.mp_api.as_kwargs())
    except mp_api.MPAPIError as err:
        raise FetchFailed(str(err)) from err


def fetch_stage(prop: str, params_path: Path, console: Console, say: Callable[[str], None] = print) -> None:
    """data/raw/<prop>.jsonl and data/reports/<prop>-fetch.json from the configured source."""
    out_path = RAW_DIR / f"{prop}.jsonl"
    started = time.perf_counter()
    report = fetch_records(prop, load_section("fetch", params_path), Path(params_path).parent, out_path, console)
    elapsed = time.perf_counter() - started
    write_json(REPORTS_DIR / f"{prop}-fetch.json", report)
    for name, sha in sorted(report["inputs"].items()):
        console.print(f"  [green]ok[/] {name}  sha256 {sha[:16]}...")
    for exclusion in report["excluded"]:
        console.print(f"  [yellow]excluded[/] {exclusion['count']} rows ({exclusion['reason']}): "
                      f"{exclusion['description']}")
    for field_name, count in report["unreadable_fields"].items():
        console.print(f"  [yellow]unreadable[/] {field_name} in {count} records (clean quarantines them)")
    say(f"fetch {prop}: {report['records_written']} records from {report['source']} "
        f"({report['rows_read']} rows read, {report['rows_excluded']} excluded, "
        f"{sum(report['unreadable_fields'].values())} unreadable fields) -> {out_path} "
        f"in {elapsed:.2f} s ({report['records_written'] / max(elapsed, 1e-9):.0f} records/s)")


# -------------------------------------------------------------------------------------------------- clean
def clean_stage(prop: str, params_path: Path, console: Console, say: Callable[[str], None] = print) -> None:
    """data/clean/<prop>.parquet and data/reports/<prop>-clean.json from data/raw/<prop>.jsonl."""
    spec = properties.get(prop)
    raw_path, out_path = RAW_DIR / f"{spec.name}.jsonl", CLEAN_DIR / f"{spec.name}.parquet"
    params = cleaning.CleanParams.from_params(params_path)
    if not raw_path.is_file():
        raise FileNotFoundError(f"{raw_path} not found: run `python stages/fetch.py {spec.name}` first")
    with open(raw_path, encoding="utf-8") as handle:
        total = sum(1 for line in handle if line.strip())
    started = time.perf_counter()
    with Progress(TextColumn(f"clean {spec.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("records", total=total)
        result = cleaning.clean_property(spec, raw_path, out_path, REPORTS_DIR / f"{spec.name}-clean.json", params,
                                         progress=lambda done: progress.advance(task, done))
    elapsed = time.perf_counter() - started
    report = result.report
    issues = {code: count for code, count in report["clean_issue"].items() if code != "none"}
    for code, count in issues.items():
        console.print(f"  [yellow]{code}[/] {count} records (validate quarantines them)")
    summary = f"clean {spec.name}: {report['records']} records, issues {issues or 'none'}"
    if spec.is_tensor:
        within = report["neumann_residual"]["within_neumann_rtol"]
        summary += (
            f", frames {report['frame_action']}; Neumann residual <= {params.neumann_rtol:g}: "
            f"as given {_percent(within['before'])}, chosen frame {_percent(within['after'])}, "
            f"stored {_percent(within['stored'])}"
        )
    say(f"{summary} -> {out_path} in {elapsed:.1f} s ({report['records'] / max(elapsed, 1e-9):.0f} records/s)")


# ----------------------------------------------------------------------------------------------- validate
def raw_record_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"raw records {path} not found: run the fetch stage first")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["record_id"] for line in handle if line.strip()]


def check_same_records(raw_ids: list[str], clean: pd.DataFrame, prop: str) -> None:
    """Clean keeps one row per raw record: refuse a clean frame that lost or invented records."""
    raw, cleaned = set(raw_ids), set(clean["record_id"])
    lost, invented = sorted(raw - cleaned), sorted(cleaned - raw)
    if lost or invented or len(raw_ids) != len(clean):
        raise ValueError(
            f"clean {prop} does not hold the raw records one to one: {len(raw_ids)} raw, {len(clean)} clean rows; "
            f"missing from clean {lost[:5]}{' ...' if len(lost) > 5 else ''}, "
            f"not in raw {invented[:5]}{' ...' if len(invented) > 5 else ''}"
        )


def validate_stage(prop: str, params_path: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate one property's clean records and write its outputs (accepted, quarantined, report, Data Docs)."""
    from zoo.data import validation  # Great Expectations: imported by the one stage that runs it

    params = validation.ValidationParams.from_params(params_path)
    started = time.perf_counter()
    clean_path = CLEAN_DIR / f"{prop}.parquet"
    raw_ids = raw_record_ids(RAW_DIR / f"{prop}.jsonl")
    if not clean_path.is_file():
        raise FileNotFoundError(f"clean records {clean_path} not found: run the clean stage first")
    clean = pd.read_parquet(clean_path)
    check_same_records(raw_ids, clean, prop)
    result = validation.validate(clean, prop, params, n_raw=len(raw_ids), docs_dir=DOCS_DIR / prop)
    validation.write_outputs(result, CLEAN_DIR / f"{prop}.accepted.parquet", QUARANTINE_DIR / f"{prop}.parquet",
                             REPORTS_DIR / f"{prop}-validation.json")
    report, elapsed = result.report, time.perf_counter() - started
    reasons = ", ".join(f"{code} {count}" for code, count in report["reasons"].items()) or "none"
    say(f"validate {prop}: {report['n_raw']} records -> {report['n_accepted']} accepted, "
        f"{report['n_quarantined']} quarantined ({reasons}) in {elapsed:.1f} s "
        f"({report['n_raw'] / max(elapsed, 1e-9):.0f} records/s)")
    return report


# -------------------------------------------------------------------------------------------------- build
def build_arguments(settings: BuildConfig, params_path: Path, prop: str) -> dict[str, Any]:
    """datasets.build_dataset's keyword arguments for one property from the `build` section (pinned_splits_from:
    relative to the params file)."""
    pinned = settings.pinned_for(prop)
    return {
        "version": check_version(settings.dataset_version, "dataset_version"),
        "salt": settings.split_salt,
        "fractions": splits.check_fractions(settings.split_fractions),
        "pinned_from": None if pinned is None else Path(params_path).parent / pinned,
        "workers": settings.workers,
    }


def build_stage(prop: str, params_path: Path, console: Console, say: Callable[[str], None] = print) -> None:
    """data/hub/datasets/mp-<prop>-irreps/ from the validate stage's outputs."""
    arguments = build_arguments(load_section("build", params_path), params_path, prop)
    symmetry_settings = load_section("symmetry", params_path)
    started = time.perf_counter()
    with console.status(f"build {prop}: converting, deriving, writing ..."):
        result = datasets.build_dataset(prop, CLEAN_DIR / f"{prop}.accepted.parquet",
                                        REPORTS_DIR / f"{prop}-validation.json", datasets.HUB_DATASETS_DIR,
                                        symmetry_settings=symmetry_settings, **arguments)
    elapsed = time.perf_counter() - started
    deviations = splits.share_deviations(result.composition)
    worst = max((abs(v) for row in deviations.values() for v in row.values()), default=0.0)
    say(f"build {prop}: {sum(result.counts.values())} rows "
        f"(train {result.counts['train']}, validation {result.counts['validation']}, test {result.counts['test']}; "
        f"largest crystal-system share deviation {worst:.2f} pp) -> {result.path} "
        f"version {result.version} fingerprint {result.fingerprint} in {elapsed:.2f} s")
