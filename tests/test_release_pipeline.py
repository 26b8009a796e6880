"""The release pipeline (releases/dvc.yaml, `make release`) end to end, in a copy of the repository.

The copy (tests/repo_copy.py: the files git would commit) gets a tiny release profile and a version of its own for
piezo, and a piezo dataset built by the real build stage from 20 synthetic records (tests/dataset_builds.py). Then
`dvc repro` of the real `release@piezo` stage, run the way `make release` runs it: interrupted by Ctrl-C once it has
checkpointed, rerun (it resumes), forced to rerun from scratch (the same bytes: nothing is rewritten), rerun with
other training settings under the same version (refused), and with a new version (a second folder). After each, the
shipped folders, zoo/registry.json and releases/dvc.lock must agree, and `dvc status` must have nothing to report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import dataset_builds, training_pause
from tests.params_file import write_params
from tests.repo_copy import REPO, copy_repository, isolate_dvc
from tests.test_training import TINY_MODEL
from zoo.core.io import sha256_file
from zoo.core import config
from zoo.release import audit, lineage, lockcheck, model_card, registry, shipping

PROP, MODEL = "piezo", "matten-piezo"
STAGE = f"releases/dvc.yaml:release@{PROP}"
VERSION, NEXT = "9.0.0", "9.0.1"
# Many short epochs: the interrupted run pauses after the first (interrupt_once_checkpointed), the rerun resumes.
# per_property {}: one network (params.yaml's release settings for piezo average an ensemble), so that the run has one
# resume folder.
TINY_RELEASE = {"max_epochs": 30, "early_stopping_patience": 30, "batch_size": 8, "learning_rate": 0.01,
                "progress_bar": False, "model": TINY_MODEL, "per_property": {}}
RESUME = Path("data/releases/models/.resume") / MODEL


def tiny_params(release_profile: dict, version: str) -> dict:
    """The params sections the copy changes: the split of the synthetic records, the release profile and version,
    a smaller gradient-boosting baseline."""
    return {"build": {"split_salt": dataset_builds.SALT, "workers": 1},
            "train": {"profiles": {"release": release_profile}}, "evaluate": {"composition_gbm": {"max_iter": 10}},
            "release": {"versions": {PROP: version}}}


def dvc(copy: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=copy, capture_output=True,
                          text=True, env=os.environ.copy(), timeout=600)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def shipped_state(copy: Path) -> dict[str, str]:
    """sha256 of every shipped file of the model and of the registry."""
    files = {"registry.json": sha256_file(copy / "zoo" / "registry.json")}
    for path in sorted((copy / "zoo" / "releases" / MODEL).rglob("*")):
        if path.is_file():
            files[str(path.relative_to(copy))] = sha256_file(path)
    return files


def assert_consistent(copy: Path, version: str) -> None:
    """The registry's entry is the folder's files; the card's lineage is the lock's; dvc status is clean."""
    folder = copy / "zoo" / "releases" / MODEL / version
    release = registry.read_registry(copy / "zoo" / "registry.json").models[MODEL].releases[version]
    assert release.files == {p.name: sha256_file(p) for p in folder.iterdir()}
    assert release.shipped == f"releases/{MODEL}/{version}" and release.revision is None
    card = model_card.parse_front_matter((folder / model_card.CARD_FILE).read_text(encoding="utf-8"))
    locked = lineage.lock_lineage(copy, STAGE)
    assert card["provenance"]["dvc_stage"] == STAGE
    assert card["provenance"]["dependencies"] == locked["deps"]
    assert card["provenance"]["dataset_dvc_md5"] == locked["deps"][f"data/hub/datasets/mp-{PROP}-irreps"]
    assert json.loads(dvc(copy, "status", "--json", STAGE).stdout or "{}") == {}


def _ctrl_c_interrupts() -> None:
    """SIGINT's default action in the child, as in a terminal: a pytest started in the background of a
    non-interactive shell (`... &`) inherits SIGINT ignored, and so would the stage, which then never stops."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_once_checkpointed(copy: Path) -> subprocess.CompletedProcess:
    """`dvc repro` of the stage, stopped with Ctrl-C (SIGINT to its process group) once training checkpointed: the
    training pauses when its second epoch starts (tests/training_pause.py), so the interrupt does not race it."""
    paused = copy.parent / "training-paused"
    env = {**os.environ, **training_pause.install(copy.parent / "training-pause-plugin", paused)}
    process = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro", "--single-item", STAGE],
                               cwd=copy, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True, preexec_fn=_ctrl_c_interrupts)
    deadline = time.monotonic() + 600  # a bound for a hung run, not a wait tuned to the machine
    while not paused.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail(f"the stage ended (exit {process.returncode}) before its training paused:\n"
                    f"{process.stdout.read()[-3000:]}")
    assert paused.is_file(), "the training did not pause within 10 minutes"
    assert (copy / RESUME / "last.ckpt").is_file(), "the training paused after an epoch without its checkpoint"
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.fixture
def environment(tmp_path, monkeypatch) -> Path:
    """DVC's own folders under tmp_path, the venv's python first on PATH, loopback-only subprocesses."""
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        "from tests.fakes.loopback import install_loopback_guard\ninstall_loopback_guard()\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", f"{guard}{os.pathsep}{REPO}")
    return tmp_path


def synthetic_copy(root: Path, params: dict) -> Path:
    """A copy of the repository at `root` with `params` and a piezo dataset of 20 synthetic records, built by the
    real build stage and recorded in the copy's dvc.lock."""
    copy = copy_repository(root)
    write_params(copy / "params.yaml", **params)
    accepted, report, _ = dataset_builds.validate_into(root.parent / f"{root.name}-validated", PROP,
                                                      dataset_builds.clean_rows(PROP, dataset_builds.SIZES[PROP]))
    for source, target in ((accepted, f"data/clean/{PROP}.accepted.parquet"),
                           (report, f"data/reports/{PROP}-validation.json")):
        (copy / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy / target)
    done = subprocess.run([sys.executable, "stages/build.py", PROP], cwd=copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    dvc(copy, "commit", "--force", f"build@{PROP}")  # the copy's dvc.lock: this build, not the checkout's
    return copy


@pytest.fixture
def copy(environment) -> Path:
    """A copy of the repository with the tiny release profile and the synthetic piezo dataset."""
    return synthetic_copy(environment / "repo", tiny_params(TINY_RELEASE, VERSION))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_release_is_shipped_resumed_reproduced_and_never_replaced(copy):
    before = shipped_state(copy)

    # Interrupted: nothing shipped, the checkpoint kept.
    interrupted = interrupt_once_checkpointed(copy)
    assert interrupted.returncode != 0
    assert (copy / RESUME / "last.ckpt").is_file()
    assert shipped_state(copy) == before

    # Rerun: it resumes, then ships the version with its registry entry; the lock describes the run.
    resumed = dvc(copy, "repro", "--single-item", STAGE)
    assert "resumed after 1 epochs" in resumed.stdout + resumed.stderr  # the epoch before the pause
    assert not (copy / RESUME).exists()
    assert_consistent(copy, VERSION)
    shipped = shipped_state(copy)
    assert set(shipped) - set(before) == {f"zoo/releases/{MODEL}/{VERSION}/{name}"
                                          for name in ("README.md", "config.json", "model.safetensors")}
    lock = yaml.safe_load((copy / "releases" / "dvc.lock").read_text())["stages"][f"release@{PROP}"]
    assert [out["path"] for out in lock["outs"]] == [f"zoo/releases/{MODEL}/{VERSION}"]
    assert lock["params"]["params.yaml"]["release.versions.piezo"] == VERSION

    # Forced from scratch: the same weights as the resumed run, so nothing is rewritten (registry bytes included).
    forced = dvc(copy, "repro", "--force", "--single-item", STAGE)
    assert "already shipped with identical weights and config" in forced.stdout + forced.stderr
    assert shipped_state(copy) == shipped
    assert_consistent(copy, VERSION)

    # The audit re-derives the card, lineage included, from the shipped files and the copy's lock.
    report = audit.audit_model(MODEL, VERSION, project=copy, store=copy / "data" / "zoo",
                               registry_path=copy / "zoo" / "registry.json")
    checks = {check.name: check for check in report.checks}
    assert report.passed, [check.summary() for check in report.failures]
    assert checks["lineage lock"].status == audit.PASS
    assert checks["lineage output"].status == audit.PASS

    # Other training settings under a shipped version: refused, nothing changes.
    write_params(copy / "params.yaml", **tiny_params({**TINY_RELEASE, "seed": 1}, VERSION))
    refused = dvc(copy, "repro", "--single-item", STAGE, check=False)
    assert refused.returncode != 0
    assert f"bump release.versions.{PROP}" in refused.stdout + refused.stderr
    assert shipped_state(copy) == shipped

    # A new version: a second folder, the first one kept as it is.
    write_params(copy / "params.yaml", **tiny_params({**TINY_RELEASE, "seed": 1}, NEXT))
    dvc(copy, "repro", "--single-item", STAGE)
    assert_consistent(copy, NEXT)
    after = shipped_state(copy)
    assert {path: digest for path, digest in after.items() if f"/{NEXT}/" not in path and path != "registry.json"} \
        == {path: digest for path, digest in shipped.items() if path != "registry.json"}
    assert set(registry.read_registry(copy / "zoo" / "registry.json").models[MODEL].releases) >= {VERSION, NEXT}

    # Code the release ran changes: the lock no longer describes the tree, and the check CI runs says so.
    with open(copy / "zoo" / "release" / "shipping.py", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    problems = lockcheck.problems(lockcheck.dvc_status(copy), set())
    assert f"{STAGE}: changed deps: zoo/release/shipping.py modified" in problems


def test_release_settings_name_what_is_missing(tmp_path):
    params = config.load(write_params(tmp_path / "params.yaml",
                                      release={"profile": "fast", "versions": {PROP: VERSION}}))
    with pytest.raises(ValueError, match="release.profile 'fast' is none of train.profiles"):
        shipping.release_settings(params, PROP)
    params = dataclasses.replace(params, release=dataclasses.replace(params.release, versions={"elastic": "1.1.0"}))
    with pytest.raises(ValueError, match="release.versions has no version for 'piezo'"):
        shipping.release_settings(params, PROP)
    listed = config.load(write_params(tmp_path / "params.yaml", release={"versions": {PROP: VERSION}}))
    assert shipping.release_settings(listed, PROP) == (listed.release.profile, VERSION)


def test_make_release_reproduces_the_listed_release_stages_and_refuses_none(tmp_path, capsys):
    """`make release` reproduces the stages zoo.release.shipping lists; with none listed it must stop, as DVC would
    reproduce the whole default pipeline for a target that names no stage."""
    # versions replaced as a whole (write_params merges key by key, and the checkout may list other releases)
    mapping = yaml.safe_load(write_params(tmp_path / "checkout.yaml").read_text(encoding="utf-8"))
    mapping["release"]["versions"] = {PROP: VERSION}
    (tmp_path / "listed.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    assert shipping.main([str(tmp_path / "listed.yaml")]) == 0 and capsys.readouterr().out.split() == [STAGE]
    mapping["release"]["versions"] = {}
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    assert shipping.main([str(tmp_path / "none.yaml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "lists no release" in captured.err


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_model_stages_lock_entries_depend_on_nothing_but_code_data_and_params(environment):
    """train, evaluate and publish of ./dvc.yaml, run in two copies of the repository (other absolute paths, other
    times) on the same data and params, write the same dvc.lock entries, outputs included: so `make repro` on a
    fresh clone (on this machine) leaves the committed dvc.lock as it is. (The data stages: tests/test_determinism.)"""
    # The tiny profile, a few epochs, for ./dvc.yaml's train stage.
    params = tiny_params({**TINY_RELEASE, "max_epochs": 3}, VERSION)
    params["train"] = {"profile": "release", **params["train"]}
    entries = []
    for name in ("first", "elsewhere/second"):
        copy = synthetic_copy(environment / name, params)
        for stage in ("train", "evaluate", "publish"):
            dvc(copy, "repro", "--single-item", f"{stage}@{PROP}")
        entries.append({stage: lineage.lock_entry(copy, f"{stage}@{PROP}") for stage in ("train", "evaluate",
                                                                                           "publish")})
    assert entries[0]["publish"]["outs"] and entries[0] == entries[1]
