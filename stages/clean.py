"""DVC stage `clean`: data/raw/<property>.jsonl -> data/clean/<property>.parquet (one row per raw record).

    python stages/clean.py <property> [--params params.yaml]

params.yaml, section `clean` (every key optional; defaults and meaning in zoo.data.cleaning.CleanParams):
    symprec, angle_tolerance   spglib tolerances (A, degrees)
    neumann_rtol               Neumann residual up to which a tensor is stored unchanged
    symmetrize_max_residual    largest residual projected as noise; above it the frame is 'unresolved'
    frame_distinct_rtol, frame_margin_factor, convention_min_agreement, convention_min_records,
    frame_stability_strain     the frame decision (zoo.data.frames): when candidate frames differ, what settles one
    duplicate_rtol             relative difference below which a duplicate is identical
    workers                    processes measuring records

Writes data/clean/<property>.parquet and data/reports/<property>-clean.json (counts by frame action, frame evidence
and issue, the per-source conventions and checks measured, residual quantiles), relative to the working directory (DVC runs stages from the
repository root). The rules are in zoo.data.cleaning's docstring.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from zoo import properties
from zoo.core.params import load_section
from zoo.data import cleaning
from zoo.data.records import RawRecordError

console = Console(stderr=True, soft_wrap=True)


def load_clean_params(params_path: Path) -> cleaning.CleanParams:
    """The `clean` section of the params file (absent: all defaults)."""
    return cleaning.CleanParams.from_mapping(load_section(params_path, "clean"))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    spec = properties.get(args.property)
    raw_path = Path("data/raw") / f"{spec.name}.jsonl"
    out_path = Path("data/clean") / f"{spec.name}.parquet"
    report_path = Path("data/reports") / f"{spec.name}-clean.json"
    try:
        params = load_clean_params(args.params)
        if not raw_path.is_file():
            raise FileNotFoundError(f"{raw_path} not found: run `python stages/fetch.py {spec.name}` first")
        with open(raw_path, encoding="utf-8") as handle:
            total = sum(1 for line in handle if line.strip())
        started = time.perf_counter()
        with Progress(TextColumn(f"clean {spec.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("records", total=total)
            result = cleaning.clean_property(spec, raw_path, out_path, report_path, params,
                                             progress=lambda done: progress.advance(task, done))
        elapsed = time.perf_counter() - started
    except (ValueError, FileNotFoundError, RawRecordError) as err:  # bad params, missing or malformed raw file
        console.print(f"[bold red]clean {spec.name} failed:[/] {err}")
        return 1
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
    print(f"{summary} -> {out_path} in {elapsed:.1f} s ({report['records'] / max(elapsed, 1e-9):.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
