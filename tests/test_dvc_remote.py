"""DVC remotes round trip: push the pipeline's outputs up to the datasets, pull them into a fresh copy, compare.

The outputs of `build` and the stages before it (fetch, clean, validate: models are left out, to keep this fast)
come from the real workspace, where `make data` (which CI runs before the tests) left them. A first copy of the
repository (tests/repo_copy.py: the files git would commit, no cache, no outputs) receives them and commits them
with DVC, as a developer does after `dvc repro`, then pushes. A second copy takes that dvc.lock (what `git pull`
would bring) and, with an empty cache of its own, pulls; every restored file must have the sha256 of the same
file in the real workspace. The real .dvc/cache is not read: it need not hold what dvc.lock names (a dvc.lock
committed from another clone, a workspace rebuilt since), and the round trip is about the remote, not about it.

Two remotes: the repository's committed default (a local directory beside the repository, README "Sharing data:
DVC remotes"), used exactly as a fresh clone would, with no setup; and S3, served by moto on loopback
(tests/fakes/s3.py). DVC runs in this process under the loopback guard: a connection to anything but loopback
fails the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvc.repo import Repo

from tests.fakes import loopback
from tests.fakes.s3 import serve_s3
from tests.repo_copy import REPO, copy_repository, isolate_dvc
from zoo.properties import PROPERTIES

TARGETS = [f"build@{prop}" for prop in PROPERTIES]

pytestmark = [
    pytest.mark.skipif(not (REPO / "data" / "hub" / "datasets").is_dir(),
                       reason="no pipeline outputs to push: data/hub/datasets is absent (run `make data`, as CI does)"),
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    refused_before = len(loopback.refused_hosts)
    with loopback.loopback_guard():
        yield
    assert loopback.refused_hosts[refused_before:] == [], "DVC tried to reach a host that is not loopback"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def open_repo(copy: Path) -> Iterator[Repo]:
    """The copy as a DVC Repo, opened from inside it: DVC resolves stage names against the dvc.yaml of the working
    directory, so from anywhere else `build@elastic` would name the real repository's stage."""
    with contextlib.chdir(copy), Repo(".") as repo:
        yield repo


def pipeline_outputs(repo: Repo) -> dict[str, bool]:
    """Every output (path relative to the repository: whether DVC caches it) of TARGETS and the stages before."""
    stages = {stage for target in TARGETS for stage in repo.stage.collect(target, with_deps=True)}
    return {str(Path(out.fs_path).relative_to(repo.root_dir)): out.use_cache for stage in stages for out in stage.outs}


def files_under(root: Path, output: str) -> dict[str, Path]:
    """Every file of one output (a file or a directory), keyed by its path relative to `root`."""
    path = root / output
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p for p in paths}


def round_trip(tmp_path: Path, remote_config: dict[str, dict[str, str]]) -> list[str]:
    """Commit the workspace's outputs of TARGETS (and the stages before) in one copy and push them; pull them into
    a fresh copy and check every restored file against the real workspace. Returns the outputs compared."""
    pusher = copy_repository(tmp_path / "pusher", remote_config)
    with open_repo(pusher) as repo:
        outputs = pipeline_outputs(repo)
        for output in outputs:
            source = REPO / output
            if source.is_dir():
                shutil.copytree(source, pusher / output)
            else:
                (pusher / output).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, pusher / output)
        for target in TARGETS:
            repo.commit(target, with_deps=True, force=True)  # force: record the deps as they are, no prompt
        pushed = repo.push(targets=TARGETS, with_deps=True)

    fresh = copy_repository(tmp_path / "fresh", remote_config)
    shutil.copy2(pusher / "dvc.lock", fresh / "dvc.lock")
    cached = sorted(output for output, use_cache in outputs.items() if use_cache)
    assert cached and not any((fresh / output).exists() for output in cached)
    with open_repo(fresh) as repo:
        pulled = repo.pull(targets=TARGETS, with_deps=True)
    assert pushed > 0 and pulled["stats"]["fetched"] == pushed, (pushed, pulled)

    for output in cached:
        source, restored = files_under(REPO, output), files_under(fresh, output)
        assert restored, f"{output} was not restored"
        assert sorted(restored) == sorted(source), f"{output}: restored files differ from the workspace's"
        for name, path in restored.items():
            assert sha256(path) == sha256(source[name]), f"{name}: restored bytes differ from the workspace's"
    return cached


def test_round_trip_through_the_default_local_remote(tmp_path):
    # No remote configured in the copies: the committed default (../dvc-remote beside the repository) is used.
    outputs = round_trip(tmp_path, {})
    remote = tmp_path / "dvc-remote"
    assert (remote / "files" / "md5").is_dir(), f"the default remote should be {remote}"
    assert {f"data/hub/datasets/mp-{prop}-irreps" for prop in PROPERTIES} <= set(outputs)
    assert {f"data/raw/{prop}.jsonl" for prop in PROPERTIES} <= set(outputs)


def test_round_trip_through_s3(tmp_path, monkeypatch):
    with serve_s3("mptz-dvc-remote") as s3:
        for name, value in s3.credentials_env.items():  # credentials from the environment, never in the config
            monkeypatch.setenv(name, value)
        round_trip(tmp_path, {
            "core": {"remote": "s3"},
            'remote "s3"': {"url": f"s3://{s3.bucket}/mp-tensor-zoo", "endpointurl": s3.endpoint},
        })
        keys = s3.object_keys("mp-tensor-zoo/")
    assert keys and all(key.startswith("mp-tensor-zoo/files/md5/") for key in keys)
    assert not (tmp_path / "dvc-remote").exists(), "the S3 round trip fell back to the default local remote"
