"""zoo.release.lockcheck: `dvc status` of both pipelines, with only the outputs of stages CI does not rebuild allowed
to be absent. A small DVC project of its own (two pipeline files, as the project has) and the project's own stage
definitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.repo_copy import REPO, isolate_dvc
from zoo.release import lineage, lockcheck, model_card

TOP = {"stages": {
    "make": {"cmd": "python -c \"open('made.txt', 'w').write(open('input.txt').read())\"",
             "deps": ["input.txt"], "outs": ["made.txt"]},
    "use": {"cmd": "python -c \"open('used.txt', 'w').write(open('made.txt').read() + open('code.txt').read())\"",
            "deps": ["made.txt", "code.txt"], "outs": ["used.txt"]},
}}
RELEASES = {"stages": {"ship": {"wdir": "..", "cmd": "python -c \"open('shipped.txt', 'w').write('v1')\"",
                                "deps": ["made.txt"], "outs": [{"shipped.txt": {"cache": False}}]}}}


def run_dvc(project: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=project, check=True, capture_output=True)


def test_only_the_outputs_of_stages_not_rebuilt_may_be_missing(tmp_path, monkeypatch):
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    project = tmp_path / "project"
    (project / "releases").mkdir(parents=True)
    (project / "input.txt").write_text("a")
    (project / "code.txt").write_text("1")
    (project / "dvc.yaml").write_text(yaml.safe_dump(TOP))
    (project / "releases" / "dvc.yaml").write_text(yaml.safe_dump(RELEASES))
    run_dvc(project, "init", "--no-scm")
    run_dvc(project, "repro", "use")
    run_dvc(project, "repro", "releases/dvc.yaml")
    (project / "used.txt").unlink()  # `use` is not rebuilt here (as CI trains no model): its output is absent
    assert lockcheck.unbuilt_outputs(project, ["make"]) == {"used.txt"}
    assert lockcheck.check(project, ["make"]) == ([], [])
    assert lockcheck.main(["--repo", str(project), "--built", "make"]) == 0

    (project / "code.txt").write_text("2")  # code of the stage not rebuilt changed after its lock entry
    (project / "shipped.txt").write_text("v2")  # a shipped (git-tracked) output edited by hand
    assert lockcheck.check(project, ["make"])[0] == ["releases/dvc.yaml:ship: changed outs: shipped.txt modified",
                                                     "use: changed deps: code.txt modified"]
    assert lockcheck.main(["--repo", str(project), "--built", "make"]) == 1

    # A release stage without a lock entry (listed, not made) is one line, not one per dependency. A stage of
    # ./dvc.yaml that is not rebuilt and has no entry (a model not trained on this tree) is no problem: its output
    # is not in git and the lock claims nothing about it; it is named apart.
    stages = yaml.safe_load((project / "releases" / "dvc.yaml").read_text())
    stages["stages"]["ship-more"] = {**stages["stages"]["ship"], "outs": [{"more.txt": {"cache": False}}]}
    (project / "releases" / "dvc.yaml").write_text(yaml.safe_dump(stages))
    top = yaml.safe_load((project / "dvc.yaml").read_text())
    top["stages"]["later"] = {**top["stages"]["use"], "outs": ["later.txt"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump(top))
    found, unrecorded = lockcheck.check(project, ["make"])
    assert "releases/dvc.yaml:ship-more: never run (no entry in its dvc.lock)" in found
    assert unrecorded == ["later"] and not any(line.startswith("later") for line in found)


def test_params_commands_and_new_stages_are_named():
    status = {"releases/dvc.yaml:release@piezo": [
        {"changed deps": {"zoo/nn": "modified", "params.yaml": {"release.versions.piezo": "modified"}}},
        {"changed outs": {"zoo/releases/matten-piezo/1.1.0": "deleted"}}, "changed command"],
        "evaluate@piezo": [{"changed deps": {"data/models/matten-piezo": "deleted"}}]}
    assert lockcheck.problems(status, {"data/models/matten-piezo"}) == [
        "releases/dvc.yaml:release@piezo: changed deps: zoo/nn modified",
        "releases/dvc.yaml:release@piezo: changed deps: params.yaml release.versions.piezo modified",
        "releases/dvc.yaml:release@piezo: changed outs: zoo/releases/matten-piezo/1.1.0 deleted",
        "releases/dvc.yaml:release@piezo: changed command"]


def test_ci_does_not_rebuild_the_models_and_checks_the_rest():
    """`make data` rebuilds the datasets: the models, metrics and publish reports are what may be absent."""
    allowed = lockcheck.unbuilt_outputs(REPO, ["build"])
    assert {"data/models/matten-elastic", "data/reports/elastic-metrics.json",
            "data/reports/publish/elastic.json"} <= allowed
    assert not {"data/hub/datasets/mp-elastic-irreps", "data/raw/elastic.jsonl"} & allowed
    assert not any(path.startswith("zoo/releases") for path in allowed)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m zoo.release.lockcheck --built build" in ci and "git status --porcelain" in ci


def test_a_published_card_with_another_lineage_than_the_lock_is_named(tmp_path, monkeypatch):
    """After `dvc commit` of a train stage, the local store still holds the card of the old entry: a fresh clone
    would publish another card (README, 'What the lock means'). No report (CI) or a card that agrees: nothing."""
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    project = tmp_path / "project"
    project.mkdir()
    (project / "input.txt").write_text("a")
    (project / "code.txt").write_text("1")
    (project / "dvc.yaml").write_text(yaml.safe_dump(TOP))
    run_dvc(project, "init", "--no-scm")
    run_dvc(project, "repro", "use")
    assert lockcheck.stale_cards(project) == []

    folder = "data/zoo/models/matten-x/0.1.0"
    (project / folder).mkdir(parents=True)
    (project / lockcheck.PUBLISH_REPORTS).mkdir(parents=True)
    (project / lockcheck.PUBLISH_REPORTS / "x.json").write_text(json.dumps(
        {"property": "x", "target": "local", "model": {"path": folder}}))
    locked = lineage.lock_lineage(project, "use")

    def card(deps: dict) -> None:
        header = {"provenance": {"dvc_stage": "use", "dependencies": deps, "params": locked["params"]}}
        (project / folder / model_card.CARD_FILE).write_text(f"---\n{yaml.safe_dump(header)}---\n# card\n")

    card(locked["deps"])
    assert lockcheck.stale_cards(project) == []
    card({**locked["deps"], "code.txt": "0" * 32})  # the card of a run before the code's md5 was recommitted
    (line,) = lockcheck.stale_cards(project)
    assert line.startswith(f"publish@x: the card in {folder} records another use entry than dvc.lock (code.txt)")
    assert line.endswith("remove data/zoo/models/matten-x and run `dvc repro -f -s publish@x`")
    assert lockcheck.check(project, ["use"])[0] == [line]
