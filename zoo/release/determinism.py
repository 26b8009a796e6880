"""Is the pipeline deterministic? Rerun DVC stages and compare every output, byte for byte, with the first run.

    python -m zoo.release.determinism [--runs N] [--stages STAGE [STAGE ...]] [--repo PATH]

Why: a dataset's content fingerprint, DVC's cache (an output whose bytes change on every run makes every stage
downstream of it rerun) and the audit of a published model (its card re-derived from its checkpoint and data)
all rest on one promise: the same inputs give the same bytes. This checks the promise where the outputs are made.

What it does, in the repository (`--repo`, default the working directory):

    run 0      `dvc repro [STAGE ...]`: nothing to do when the outputs are up to date, so the outputs already
               there are run 0; missing or stale ones are made first
    run 1..N   `dvc repro --force [STAGE ...]`: each selected stage, and every stage upstream of it, reruns
               (no run cache: DVC skips it when forced)

STAGE is anything `dvc repro` takes (`build@piezo`, `build`); none means the whole pipeline. After each run the
sha256 of every file of every output (outs, metrics and plots, cached by DVC or not) of those stages is taken,
and each run is compared with run 0, whose files are kept aside in a temporary folder so that a file that
differs can be examined: safetensors files by the largest absolute difference of their tensors, parquet files by
the number of rows that differ and the largest numeric difference, JSON files by the keys whose values differ,
other text files by the lines that differ.

It prints one line per output (path, stage, number of files, identical or not; under it, what differs) and exits 0 when every
output is identical in every run, apart from NONDETERMINISTIC (outputs known to vary, each with its reason);
1 when anything else differs; 2 when DVC failed or an argument is wrong. The stages run in the Makefile's
environment (environment.env: the telemetry of DVC, Great Expectations and the Hugging Face clients off), with this
interpreter's folder first on PATH, so that the `python` of dvc.yaml's commands is this one.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.core import environment
from zoo.core.io import sha256_file

# Outputs (fnmatch patterns of output paths, relative to the repository) whose bytes are known to vary from run
# to run, with the reason. A difference in one of these is reported but does not fail the check. None at
# present: every output, the Great Expectations Data Docs included (zoo.data.validation dates and names their run
# from its data), must be byte-identical.
NONDETERMINISTIC: dict[str, str] = {}

MAX_LISTED = 5  # differing keys, lines or tensors named per file


class DeterminismError(Exception):
    """The check could not run (DVC failed, no such stage, no dvc.yaml): a message for the user, exit status 2."""


@dataclass(frozen=True)
class Difference:
    """One file of an output that differs from run 0 in a later run."""

    run: int
    file: str  # path relative to the repository
    detail: str


@dataclass
class OutputCheck:
    """One DVC output across the runs."""

    path: str  # relative to the repository, as in dvc.yaml
    stage: str  # the stage that writes it, e.g. build@piezo
    files: int  # in run 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def known_reason(self) -> str | None:
        """Why this output's bytes are allowed to vary (NONDETERMINISTIC), or None."""
        return nondeterminism_reason(self.path)


@dataclass
class Report:
    runs: int  # forced reruns compared with run 0
    outputs: list[OutputCheck]

    @property
    def failures(self) -> list[OutputCheck]:
        """The outputs that differ and are not known to vary: any makes the check fail."""
        return [output for output in self.outputs if not output.identical and output.known_reason is None]


def nondeterminism_reason(path: str) -> str | None:
    for pattern, reason in NONDETERMINISTIC.items():
        if fnmatch.fnmatch(path, pattern):
            return reason
    return None


# ------------------------------------------------------------------------------------------- outputs and hashes
def pipeline_outputs(root: Path, targets: Sequence[str]) -> dict[str, str]:
    """Every output of the stages `dvc repro targets` runs, in the order it runs them (DVC's own plan: the targets
    and everything upstream; the whole pipeline when there are no targets): path relative to `root` -> stage name.
    Raises DeterminismError for a missing dvc.yaml or an unknown stage."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    if not (root / "dvc.yaml").is_file():
        raise DeterminismError(f"{root} has no dvc.yaml: run from the repository root or pass --repo")
    # DVC resolves stage names against the dvc.yaml of the working directory.
    with contextlib.chdir(root), Repo(".") as repo:
        try:
            stages = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, targets or ["dvc.yaml"]))
        except DvcException as err:
            raise DeterminismError(f"dvc cannot select the stages {' '.join(targets)}: {err}") from err
        root_dir = Path(repo.root_dir)
        return {Path(out.fs_path).relative_to(root_dir).as_posix(): stage.addressing
                for stage in stages for out in stage.outs}


def output_files(root: Path, output: str) -> list[str]:
    """The files of one output (a file, or every file under a directory), relative to `root`, sorted."""
    path = root / output
    if path.is_file():
        return [output]
    if not path.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file())


def hash_outputs(root: Path, outputs: Sequence[str]) -> dict[str, dict[str, str]]:
    """output -> {file: sha256} for every file of every output."""
    return {output: {name: sha256_file(root / name) for name in output_files(root, output)} for output in outputs}


def keep_copy(root: Path, hashes: dict[str, dict[str, str]], dest: Path) -> None:
    """Copy every hashed file to the same relative path under `dest` (run 0, for examining later differences)."""
    for files in hashes.values():
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)


# ----------------------------------------------------------------------------------------- what differs, and how
def _numeric_difference(a: Any, b: Any) -> float | None:
    """Largest |a - b| over two numbers or equally shaped nested lists of numbers (NaN in both places counts as
    equal); None when they are not both numeric or their shapes differ."""
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if x.shape != y.shape:
        return None
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    if x.size == 0:
        return 0.0
    same = (x == y) | (np.isnan(x) & np.isnan(y))  # == also covers equal infinities
    with np.errstate(invalid="ignore"):
        gap = np.where(same, 0.0, np.abs(x - y))
    return float(np.nan_to_num(gap, nan=math.inf).max())  # NaN against a number: infinitely far


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _safetensors_detail(before: Path, after: Path) -> str:
    from safetensors.numpy import load_file

    a, b = load_file(before), load_file(after)
    parts = []
    if set(a) != set(b):
        parts.append(f"tensors only in run 0: {_listing(sorted(set(a) - set(b)))}; "
                     f"only now: {_listing(sorted(set(b) - set(a)))}")
    gaps: dict[str, float] = {}
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape or a[name].dtype != b[name].dtype:
            parts.append(f"{name}: {a[name].dtype}{list(a[name].shape)} -> {b[name].dtype}{list(b[name].shape)}")
            continue
        gap = _numeric_difference(a[name], b[name])
        if gap:
            gaps[name] = gap
    if gaps:
        worst = max(gaps, key=gaps.get)
        parts.append(f"{len(gaps)} of {len(set(a) & set(b))} tensors differ, max |difference| {gaps[worst]:.3g} "
                     f"({worst})")
    return "; ".join(parts) or "same tensors; the header (metadata) differs"


def _parquet_detail(before: Path, after: Path) -> str:
    import pyarrow.parquet as pq

    a, b = pq.read_table(before), pq.read_table(after)
    if a.schema != b.schema:
        changed = [f.name for f in a.schema if f.name not in b.schema.names or b.schema.field(f.name) != f]
        added = [name for name in b.schema.names if name not in a.schema.names]
        return f"schemas differ: columns changed or dropped {_listing(changed)}; added {_listing(added)}"
    if a.num_rows != b.num_rows:
        return f"{a.num_rows} rows in run 0, {b.num_rows} now"
    if a.equals(b):
        if a.schema.metadata != b.schema.metadata:
            return "same rows; the schema metadata differs"
        return "same rows and schema; the Parquet encoding differs"
    rows = np.zeros(a.num_rows, dtype=bool)
    columns, largest = [], 0.0
    for name in a.column_names:
        if a.column(name).equals(b.column(name)):
            continue
        columns.append(name)
        for i, (x, y) in enumerate(zip(a.column(name).to_pylist(), b.column(name).to_pylist())):
            if x == y:
                continue
            gap = _numeric_difference(x, y)
            if gap != 0.0:
                rows[i] = True
                largest = max(largest, gap or 0.0)
    numeric = f", max numeric difference {largest:.3g}" if largest else ""
    return f"{int(rows.sum())} of {a.num_rows} rows differ (columns {_listing(columns)}){numeric}"


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [key for name in sorted(set(a) | set(b), key=str)
                for key in (_differing_keys(a[name], b[name], f"{prefix}.{name}" if prefix else str(name))
                            if name in a and name in b else [f"{prefix}.{name}" if prefix else str(name)])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [key for i, (x, y) in enumerate(zip(a, b)) for key in _differing_keys(x, y, f"{prefix}[{i}]")]
    if a == b or _numeric_difference(a, b) == 0.0:
        return []
    return [prefix or "(the whole document)"]


def _json_detail(before: Path, after: Path) -> str:
    keys = _differing_keys(json.loads(before.read_text(encoding="utf-8")), json.loads(after.read_text(encoding="utf-8")))
    return f"{len(keys)} values differ: {_listing(keys)}" if keys else "same values; the formatting differs"


def _text_detail(before: Path, after: Path) -> str:
    try:
        a = before.read_text(encoding="utf-8").splitlines()
        b = after.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return f"binary content differs ({before.stat().st_size} bytes in run 0, {after.stat().st_size} now)"
    lines = [str(i + 1) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(a) != len(b):
        return f"{len(a)} lines in run 0, {len(b)} now; of the first {min(len(a), len(b))}, {len(lines)} differ"
    return f"{len(lines)} of {len(a)} lines differ: line {_listing(lines)}" if lines else "line endings differ"


DETAILS: dict[str, Callable[[Path, Path], str]] = {
    ".safetensors": _safetensors_detail, ".parquet": _parquet_detail, ".json": _json_detail,
}


def describe_difference(before: Path, after: Path) -> str:
    """What differs between two versions of one file, by its kind (the module docstring)."""
    return DETAILS.get(before.suffix, _text_detail)(before, after)


# -------------------------------------------------------------------------------------------------------- runs
def dvc_repro(root: Path, targets: Sequence[str], force: bool) -> None:
    """Run `dvc repro [--force] targets` in `root` with this interpreter's environment; DeterminismError if it fails."""
    command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), *targets]
    env = {**os.environ, **environment.variables()}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(command, cwd=root, env=env)
    if done.returncode != 0:
        raise DeterminismError(f"`dvc repro {'--force ' if force else ''}{' '.join(targets)}` failed in {root} "
                               f"(exit status {done.returncode}); its output is above")


def check(root: Path, targets: Sequence[str] = (), runs: int = 1,
          log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)) -> Report:
    """Run 0 plus `runs` forced reruns of `targets` in `root`, compared file by file (the module docstring)."""
    if runs < 1:
        raise DeterminismError(f"--runs must be at least 1, got {runs}")
    root = Path(root).resolve()
    outputs = pipeline_outputs(root, targets)
    what = " ".join(targets) or "the whole pipeline"
    log(f"run 0: dvc repro {what} (up-to-date outputs are kept as they are)")
    dvc_repro(root, targets, force=False)
    reference = hash_outputs(root, list(outputs))
    checks = {path: OutputCheck(path, stage, len(reference[path])) for path, stage in outputs.items()}
    with tempfile.TemporaryDirectory(prefix="zoo-determinism-") as kept:
        keep_copy(root, reference, Path(kept))
        for run in range(1, runs + 1):
            log(f"run {run} of {runs}: dvc repro --force {what}")
            dvc_repro(root, targets, force=True)
            for path, files in hash_outputs(root, list(outputs)).items():
                before = reference[path]
                for name in sorted(set(before) | set(files)):
                    if name not in files:
                        detail = "missing now"
                    elif name not in before:
                        detail = "new: not in run 0"
                    elif files[name] != before[name]:
                        detail = describe_difference(Path(kept) / name, root / name)
                    else:
                        continue
                    checks[path].differences.append(Difference(run, name, detail))
    return Report(runs=runs, outputs=list(checks.values()))


# ------------------------------------------------------------------------------------------------------ report
def format_report(report: Report) -> str:
    """A table (output, stage, files, identical) with, under each output that differs, what differs in which run."""
    width = max([len(output.path) for output in report.outputs] + [len("output")])
    stage_width = max([len(output.stage) for output in report.outputs] + [len("stage")])
    lines = [f"{'output':<{width}}  {'stage':<{stage_width}}  {'files':>5}  identical",
             f"{'-' * width}  {'-' * stage_width}  {'-' * 5}  ---------"]
    for output in report.outputs:
        verdict = "yes" if output.identical else ("no, known to vary" if output.known_reason else "NO")
        lines.append(f"{output.path:<{width}}  {output.stage:<{stage_width}}  {output.files:>5}  {verdict}")
        if output.identical:
            continue
        if output.known_reason:
            lines.append(f"    why it varies: {output.known_reason}")
        shown = output.differences[:MAX_LISTED * 2]
        lines += [f"    run {d.run}: {d.file}: {d.detail}" for d in shown]
        if len(output.differences) > len(shown):
            lines.append(f"    ... and {len(output.differences) - len(shown)} more differing files")
    failures = report.failures
    known = sum(1 for output in report.outputs if not output.identical and output.known_reason)
    lines.append("")
    lines.append(f"{len(report.outputs)} outputs, {report.runs} forced rerun(s) compared with run 0: "
                 + (f"{len(failures)} differ unexpectedly" if failures else "deterministic")
                 + (f" ({known} known to vary)" if known else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.release.determinism", description=__doc__.splitlines()[0],
                                     epilog="Exit status: 0 deterministic, 1 an output differs, 2 could not check.")
    parser.add_argument("--runs", type=int, default=1, help="forced reruns compared with run 0 (default: %(default)s)")
    parser.add_argument("--stages", nargs="+", default=[], metavar="STAGE",
                        help="dvc repro targets, e.g. build@piezo or build (default: the whole pipeline)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root (default: the working directory)")
    args = parser.parse_args(argv)
    try:
        report = check(args.repo, args.stages, args.runs)
    except DeterminismError as err:
        print(f"determinism check failed to run: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
