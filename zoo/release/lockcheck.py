"""Does the committed lock tell the truth? `dvc status` of both pipelines, read the way CI needs it.

    python -m zoo.release.lockcheck [--built build] [--repo .]

Run after the pipeline was rebuilt up to the `--built` targets (CI: `make data`, i.e. `dvc repro build`): every
stage of ./dvc.yaml and releases/dvc.yaml must then agree with its dvc.lock entry (`dvc status` reports nothing),
except that the outputs of the stages that were not rebuilt (CI trains no model: train, evaluate, publish) may be
absent, and so may those stages' dependencies on them. Anything else is a line of the report and exit status 1: a
modified dependency (code changed since the lock was written), changed params or command, a modified output, a
release stage never run or out of date. (A rebuilt stage whose outputs differ from the lock shows as a changed
dvc.lock in `git status`, which .ci/run checks as well.)

Where a publish stage's report is present (after `make repro`; CI has none), the card it published to the local
store must record the lock entry of the stage that trained the model, as dvc.lock holds it now. The store keeps a
version's first card, so after `dvc commit` of a train stage it records the old entry, while a fresh clone's
publish writes a card with the new one: another card sha256, another publish report, a publish entry of dvc.lock
that the clone rewrites. `dvc status` cannot see that (the report matches the stale card); this check does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.release import lineage, model_card
from zoo.release.publishing import PUBLISH_REPORTS

PIPELINES = ("dvc.yaml", "releases/dvc.yaml")
MISSING = frozenset({"deleted", "not in cache"})


def dvc_status(repo: Path) -> dict[str, list[Any]]:
    """`dvc status --json` of every stage of every pipeline file."""
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc) if dvc.is_file() else "dvc", "status", "--json"], cwd=repo,
                          capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"dvc status failed in {repo}: {(done.stderr or done.stdout).strip()}")
    return json.loads(done.stdout or "{}")


def unbuilt_stages(repo: Path, built: Sequence[str]) -> dict[str, set[str]]:
    """The stages of ./dvc.yaml that reproducing `built` (with their upstream stages) does not run: address ->
    its outputs."""
    from dvc.repo import Repo

    # DVC resolves a stage's address against the working directory.
    with contextlib.chdir(repo), Repo(".") as dvc:
        rebuilt = {stage.addressing for target in built for stage in dvc.stage.collect(target, with_deps=True)}
        return {stage.addressing: {str(out.def_path) for out in stage.outs}
                for stage in dvc.stage.collect("dvc.yaml") if stage.addressing not in rebuilt}


def unbuilt_outputs(repo: Path, built: Sequence[str]) -> set[str]:
    """Outputs of the stages of ./dvc.yaml that reproducing `built` does not run."""
    return set().union(*unbuilt_stages(repo, built).values())


def problems(status: Mapping[str, Iterable[Any]], allowed_missing: set[str]) -> list[str]:
    """One line per thing `dvc status` reports, leaving out paths of `allowed_missing` that are absent."""
    lines = []
    for stage, entries in sorted(status.items()):
        for entry in entries:
            if isinstance(entry, str):  # 'changed command', 'always changed'
                lines.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                for path, state in changes.items():
                    if isinstance(state, Mapping):  # a params file: key -> state
                        lines += [f"{stage}: {kind}: {path} {key} {value}" for key, value in state.items()]
                    elif not (state in MISSING and path in allowed_missing):
                        lines.append(f"{stage}: {kind}: {path} {state}")
    return lines


def stale_cards(repo: Path) -> list[str]:
    """One line per publish report whose locally published card records another lineage than dvc.lock's entry of
    the stage it names (module docstring)."""
    lines = []
    for path in sorted((repo / PUBLISH_REPORTS).glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        folder = (report.get("model") or {}).get("path")
        card = repo / folder / model_card.CARD_FILE if report.get("target") == "local" and folder else None
        if card is None or not card.is_file():
            continue
        recorded = lineage.card_lineage(
            model_card.parse_front_matter(card.read_text(encoding="utf-8")).get("provenance") or {})
        stage = recorded["stage"]
        if not stage:  # published outside a DVC stage: no lineage to compare
            continue
        locked = lineage.lock_lineage(repo, stage)
        differing = ["its entry is missing"] if locked is None else lineage.differing_deps(recorded, locked)
        if differing:
            publish = f"publish@{report.get('property')}"
            # the model's folder in the store: its versions.json would otherwise still list the removed version
            store_copy = Path(folder).parent
            lines.append(f"{publish}: the card in {folder} records another {stage} entry than dvc.lock "
                         f"({', '.join(differing)}): a fresh clone publishes another card and rewrites the "
                         f"{publish} entry; remove {store_copy} and run `dvc repro -f -s {publish}`")
    return lines


def check(repo: Path, built: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems, unrecorded). problems: the report's lines, one per stage that was never run (no entry in its
    dvc.lock), then `problems` of the others, then ``stale_cards``. unrecorded: the stages of ./dvc.yaml that were
    neither rebuilt nor ever run; they are no problem: their outputs are not in git and their lock makes no claim
    (the models, until `make repro` records them on the final code). A release stage never run is a problem: its
    version is listed in params.yaml (release.versions lists the releases that are made) and its output is a folder
    in git."""
    status = dvc_status(repo)
    unbuilt = unbuilt_stages(repo, built)
    never_run = sorted(stage for stage in status if lineage.lock_entry(repo, stage) is None)
    unrecorded = [stage for stage in never_run if stage in unbuilt]
    return ([f"{stage}: never run (no entry in its dvc.lock)" for stage in never_run if stage not in unbuilt]
            + problems({stage: entries for stage, entries in status.items() if stage not in never_run},
                       set().union(*unbuilt.values())) + stale_cards(repo)), unrecorded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--built", nargs="+", default=["build"],
                        help="the targets that were reproduced (default: build, what `make data` runs)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    found, unrecorded = check(args.repo, args.built)
    if unrecorded:
        print(f"not recorded in dvc.lock (never run on this tree, not rebuilt here; `make repro` records them): "
              f"{', '.join(unrecorded)}")
    if found:
        print(f"dvc status: {len(found)} difference(s) between the workspace and the committed locks "
              f"({', '.join(PIPELINES)}):")
        print("\n".join(f"  {line}" for line in found))
        print("The committed locks must describe what the committed code and params produce: rerun the stages "
              "(make repro, make release) on the committed tree and commit dvc.lock and releases/dvc.lock.")
        return 1
    print(f"dvc status: the locks describe the workspace (every stage of {', '.join(PIPELINES)}, the outputs of "
          f"stages not rebuilt apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
