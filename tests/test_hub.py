"""zoo.release.hub against the loopback Hub double, with the real huggingface_hub and datasets clients.

Nothing here may reach a real host: every socket connect and name lookup outside loopback fails the test
(in this process and in the `datasets` subprocess), and HF_HUB_DISABLE_XET=1 (tests/conftest.py) keeps
huggingface_hub on the plain HTTP + LFS protocol that the double speaks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from safetensors.numpy import load_file, save_file

from tests.fakes.hub import Fault, serve
from tests.fakes.loopback import loopback_guard
from zoo.release.hub import (
    ChecksumMismatchError,
    HubError,
    HubNotFoundError,
    HubUnavailable,
    IncompleteDownloadError,
    VersionExistsError,
    download_file,
    list_versions,
    publish_folder,
    version_tag,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "zoo-test/matten-elastic"
DATASET = "zoo-test/mp-dielectric-irreps"

MODEL_CARD = """---
license: mit
library_name: e3nn
tags: [materials, equivariant]
datasets: [zoo-test/mp-dielectric-irreps]
---
# matten-elastic (test)
"""

DATASET_CARD = """---
license: cc-by-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: test
    path: data/test-*.parquet
---
# mp-dielectric-irreps (test)
"""


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    with loopback_guard():
        yield


@pytest.fixture(scope="module")
def hub():
    with serve(token="hf_test_write_token_0123456789") as double:
        yield double


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    weights = {"w": np.linspace(-1.0, 1.0, 48).reshape(4, 12), "b": np.arange(5, dtype=np.float64)}
    save_file(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"format_version": 1, "property": "elastic"}, sort_keys=True))
    (folder / "README.md").write_text(MODEL_CARD)
    return folder


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "data").mkdir()
    rng = np.random.default_rng(7)
    for split, n in (("train", 6), ("test", 3)):
        table = pa.table({
            "record_id": [f"snapshot:dielectric:row-{split}-{i}" for i in range(n)],
            "material_id": [f"mp-{100 + i}" if i % 3 else None for i in range(n)],
            "total": [(np.eye(3) * (2.0 + i) + rng.normal(0, 0.01, (3, 3))).tolist() for i in range(n)],
        })
        pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text(DATASET_CARD)
    return folder


@pytest.fixture(scope="module")
def published(hub, model_folder, dataset_folder) -> dict[str, str]:
    """The model as v0.1.0 and the dataset as v1.0.0: repo id -> commit sha."""
    return {
        MODEL: publish_folder(model_folder, MODEL, "model", "0.1.0", endpoint=hub.endpoint, token=hub.token),
        DATASET: publish_folder(dataset_folder, DATASET, "dataset", "1.0.0", endpoint=hub.endpoint, token=hub.token),
    }


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------ publishing

def test_published_model_downloads_by_tag_and_verifies(hub, published, model_folder, tmp_path):
    commit = published[MODEL]
    assert list_versions(MODEL, "model", endpoint=hub.endpoint)["0.1.0"] == commit

    path = download_file(MODEL, "model.safetensors", version_tag("0.1.0"), repo_type="model",
                         endpoint=hub.endpoint, cache_dir=tmp_path,
                         expected_sha256=_sha256(model_folder / "model.safetensors"))
    assert path == tmp_path / "models" / MODEL / commit / "model.safetensors"
    local, downloaded = load_file(model_folder / "model.safetensors"), load_file(path)
    assert downloaded.keys() == local.keys()
    for name, array in downloaded.items():
        np.testing.assert_array_equal(array, local[name])
    # Without expected_sha256 a regular file is checked against the Hub's git blob id.
    config = download_file(MODEL, "config.json", "v0.1.0", repo_type="model", endpoint=hub.endpoint,
                           cache_dir=tmp_path)
    assert config.read_bytes() == (model_folder / "config.json").read_bytes()
    assert _files_under(tmp_path / ".incomplete") == []

    # A commit sha found in the cache needs no request at all.
    before = len(hub.log)
    assert download_file(MODEL, "config.json", commit, repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path) == config
    assert len(hub.log) == before

    # The repo holds exactly the folder (plus the Hub's .gitattributes), binaries through LFS.
    api = HfApi(endpoint=hub.endpoint)
    assert sorted(f.path for f in api.list_repo_tree(MODEL, revision="v0.1.0", recursive=True)) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors"]
    info = {f.path: f for f in api.get_paths_info(MODEL, ["model.safetensors", "config.json", "nope.bin"],
                                                  revision="v0.1.0")}
    assert sorted(info) == ["config.json", "model.safetensors"] and info["config.json"].lfs is None
    assert info["model.safetensors"].lfs.sha256 == _sha256(model_folder / "model.safetensors")
    assert api.model_info(MODEL, revision="v0.1.0").card_data.library_name == "e3nn"
    assert hub.unhandled == []


def test_real_hf_hub_download_reads_the_double(hub, published, model_folder, tmp_path):
    # huggingface_hub's own downloader accepts the double's HEAD headers, and retries a cut body by itself.
    hub.schedule_download("model.safetensors", Fault.cut_body())
    path = hf_hub_download(MODEL, "model.safetensors", revision="v0.1.0", endpoint=hub.endpoint,
                           cache_dir=tmp_path)
    assert Path(path).read_bytes() == (model_folder / "model.safetensors").read_bytes()
    outcomes = [s.outcome for s in hub.requests_to(f"{MODEL}/resolve/v0.1.0/model.safetensors", "GET")]
    assert outcomes == ["cut_body", "200"]


def test_dataset_loads_by_tag_like_the_local_folder(hub, published, dataset_folder, tmp_path):
    import datasets

    local = datasets.load_dataset(str(dataset_folder), cache_dir=str(tmp_path / "local-cache"))
    expected = {split: local[split].to_list() for split in local}
    script = (
        "import json\n"
        "from tests.fakes import hub\n"
        "hub.install_loopback_guard()\n"
        "import datasets\n"
        f"by_tag = datasets.load_dataset({DATASET!r}, revision='v1.0.0')\n"
        f"latest = datasets.load_dataset({DATASET!r})\n"
        "print(json.dumps({'by_tag': {split: by_tag[split].to_list() for split in by_tag},\n"
        "                  'latest': {split: latest[split].to_list() for split in latest},\n"
        "                  'refused': hub.refused_hosts}))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE"))}
    # HF_UPDATE_DOWNLOAD_COUNTS=0: else datasets sends a HEAD to s3.amazonaws.com (its download counter) on
    # every Hub load, whatever HF_ENDPOINT says, and HF_HUB_DISABLE_TELEMETRY does not stop it.
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", HF_UPDATE_DOWNLOAD_COUNTS="0", DO_NOT_TRACK="1")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["by_tag"] == expected and loaded["latest"] == expected
    assert sorted(expected) == ["test", "train"] and len(expected["train"]) == 6
    # Loading the latest revision, datasets also asks its dataset viewer at "datasets-server.<endpoint host>"
    # and swallows the failure; the guard refused that lookup, and nothing else was attempted.
    assert set(loaded["refused"]) <= {"datasets-server.127.0.0.1"}
    # datasets pinned the tag to its commit and read the shards through LFS downloads.
    shard = f"datasets/{DATASET}/resolve/{published[DATASET]}/data/train-00000-of-00001.parquet"
    assert [s.outcome for s in hub.requests_to(shard, "GET")] == ["200"]
    assert hub.unhandled == []


def test_a_version_is_never_published_twice(hub, published, model_folder, tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "README.md").write_text(MODEL_CARD + "\nRetrained.\n")
    (newer / "model.safetensors").write_bytes((model_folder / "model.safetensors").read_bytes())

    # Refused before anything is uploaded: the branch does not move.
    repo = hub.repo(MODEL, "model")
    head, n_commits = repo.branches["main"], len(repo.commits)
    with pytest.raises(VersionExistsError, match=rf"0\.1\.0 already exists.*{published[MODEL]}"):
        publish_folder(newer, MODEL, "model", "0.1.0", endpoint=hub.endpoint, token=hub.token)
    assert (repo.branches["main"], len(repo.commits)) == (head, n_commits)
    with pytest.raises(HfHubHTTPError, match="409"):  # and the Hub itself never moves a tag
        HfApi(endpoint=hub.endpoint, token=hub.token).create_tag(MODEL, tag="v0.1.0", revision="main")

    # A new version replaces the folder's content (config.json dropped); the old version is untouched.
    second = publish_folder(newer, MODEL, "model", "0.10.0", endpoint=hub.endpoint, token=hub.token)
    third = publish_folder(model_folder, MODEL, "model", "0.9.0", endpoint=hub.endpoint, token=hub.token)
    assert list(list_versions(MODEL, "model", endpoint=hub.endpoint).items()) == [
        ("0.1.0", published[MODEL]), ("0.9.0", third), ("0.10.0", second)]
    assert "config.json" not in repo.commits[second].files
    assert repo.commits[published[MODEL]].files.keys() == repo.commits[third].files.keys()
    with pytest.raises(ValueError, match="semantic version"):
        publish_folder(model_folder, MODEL, "model", "1.0", endpoint=hub.endpoint, token=hub.token)


# ------------------------------------------------------------------------------------------ faulty downloads

def test_cut_download_leaves_the_cache_clean_and_the_next_call_succeeds(hub, published, model_folder, tmp_path):
    expected = _sha256(model_folder / "model.safetensors")
    hub.schedule_download("model.safetensors", Fault.cut_body())
    with pytest.raises(IncompleteDownloadError, match="model.safetensors"):
        download_file(MODEL, "model.safetensors", "v0.1.0", repo_type="model", endpoint=hub.endpoint,
                      cache_dir=tmp_path, expected_sha256=expected)
    assert _files_under(tmp_path) == []
    path = download_file(MODEL, "model.safetensors", "v0.1.0", repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path, expected_sha256=expected)
    assert _sha256(path) == expected and _files_under(tmp_path) == [path]


def test_corrupted_byte_is_refused_naming_the_file_and_both_hashes(hub, published, model_folder, tmp_path):
    data = (model_folder / "model.safetensors").read_bytes()
    middle = len(data) // 2
    corrupted = hashlib.sha256(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]).hexdigest()
    hub.schedule_download("model.safetensors", Fault.corrupt_byte())
    with pytest.raises(ChecksumMismatchError) as caught:
        download_file(MODEL, "model.safetensors", "v0.1.0", repo_type="model", endpoint=hub.endpoint,
                      cache_dir=tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    message = str(caught.value)
    assert "model.safetensors" in message and corrupted in message and hashlib.sha256(data).hexdigest() in message
    assert _files_under(tmp_path) == []

    # A regular file is checked against the git blob id the Hub states.
    config = (model_folder / "config.json").read_bytes()
    blob_id = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    hub.schedule_download("config.json", Fault.corrupt_byte())
    refused = rf"config\.json.*git blob sha1 [0-9a-f]{{40}}, expected {blob_id}"
    with pytest.raises(ChecksumMismatchError, match=refused):
        download_file(MODEL, "config.json", "v0.1.0", repo_type="model", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert _files_under(tmp_path) == []


def test_transient_server_errors_are_retried(hub, published, model_folder, tmp_path):
    hub.schedule_download("model.safetensors", Fault.http(503), method="HEAD")
    hub.schedule_download("model.safetensors", Fault.http(500))
    path = download_file(MODEL, "model.safetensors", "v0.1.0", repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path)
    assert path.read_bytes() == (model_folder / "model.safetensors").read_bytes()
    heads = [s.outcome for s in hub.requests_to(f"{MODEL}/resolve/v0.1.0/model.safetensors", "HEAD")]
    gets = [s.outcome for s in hub.requests_to(f"{published[MODEL]}/model.safetensors", "GET")]
    assert heads[-2:] == ["503", "200"] and gets[-2:] == ["500", "200"]


def test_a_tampered_cached_copy_is_replaced_when_the_hash_is_given(hub, published, model_folder, tmp_path):
    expected = _sha256(model_folder / "model.safetensors")
    path = download_file(MODEL, "model.safetensors", published[MODEL], repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path, expected_sha256=expected)
    path.write_bytes(b"not the weights")
    assert download_file(MODEL, "model.safetensors", published[MODEL], repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path, expected_sha256=expected) == path
    assert _sha256(path) == expected


# ----------------------------------------------------------------------------------------- errors and access

def test_unknown_repo_revision_and_file_are_clear_errors(hub, published, tmp_path):
    with pytest.raises(HubNotFoundError, match="zoo-test/no-such-model"):
        download_file("zoo-test/no-such-model", "config.json", "v0.1.0", repo_type="model",
                      endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(HubNotFoundError, match="no such repository"):
        list_versions("zoo-test/no-such-model", "model", endpoint=hub.endpoint)
    with pytest.raises(HubNotFoundError, match="no such revision"):
        download_file(MODEL, "config.json", "v9.9.9", repo_type="model", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(HubNotFoundError, match="no such file"):
        download_file(MODEL, "weights.bin", "v0.1.0", repo_type="model", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(HubNotFoundError):  # the model exists, but not as a dataset
        list_versions(MODEL, "dataset", endpoint=hub.endpoint)
    with pytest.raises(ValueError, match="repo_id"):
        list_versions("no-namespace", "model", endpoint=hub.endpoint)
    with pytest.raises(ValueError, match="filename"):
        download_file(MODEL, "../config.json", "v0.1.0", repo_type="model", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert _files_under(tmp_path) == []


def test_offline_mode_and_unreachable_endpoint_raise_hub_unavailable(hub, published, model_folder, tmp_path,
                                                                    monkeypatch):
    with socket.socket() as probe:  # a port that nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(HubUnavailable, match="cannot reach"):
        list_versions(MODEL, "model", endpoint=closed)
    with pytest.raises(HubUnavailable, match="cannot reach"):
        download_file(MODEL, "config.json", "v0.1.0", repo_type="model", endpoint=closed, cache_dir=tmp_path)

    cached = download_file(MODEL, "config.json", published[MODEL], repo_type="model", endpoint=hub.endpoint,
                           cache_dir=tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE"):
        download_file(MODEL, "config.json", "v0.1.0", repo_type="model", endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE"):
        publish_folder(model_folder, MODEL, "model", "3.0.0", endpoint=hub.endpoint, token=hub.token)
    # Pinned to a commit sha, a cached file is served offline.
    assert download_file(MODEL, "config.json", published[MODEL], repo_type="model", endpoint=hub.endpoint,
                         cache_dir=tmp_path) == cached


def test_writes_need_the_token_and_tokens_are_never_shown(hub, published, model_folder, caplog):
    wrong = "hf_wrong_token_abcdefghijklmnopqrstuvwxyz"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubError, match="HTTP 401") as caught:
        publish_folder(model_folder, "zoo-test/other", "model", "1.0.0", endpoint=hub.endpoint, token=wrong)
    commit = publish_folder(model_folder, "zoo-test/private", "model", "1.0.0", endpoint=hub.endpoint,
                            token=hub.token, private=True)
    # A private repo is invisible without the token.
    with pytest.raises(HubNotFoundError, match="private"):
        list_versions("zoo-test/private", "model", endpoint=hub.endpoint, token=wrong)
    assert list_versions("zoo-test/private", "model", endpoint=hub.endpoint, token=hub.token) == {"1.0.0": commit}
    shown = str(caught.value) + repr(caught.value.__cause__) + caplog.text
    assert wrong not in shown and hub.token not in caplog.text


def test_tree_listing_follows_pages(hub, published, monkeypatch):
    monkeypatch.setattr(hub, "tree_page_size", 2)
    before = len(hub.requests_to(f"/api/datasets/{DATASET}/tree/"))
    paths = [e.path for e in HfApi(endpoint=hub.endpoint).list_repo_tree(DATASET, repo_type="dataset",
                                                                          revision="v1.0.0", recursive=True)]
    assert sorted(paths) == [".gitattributes", "README.md", "data", "data/test-00000-of-00001.parquet",
                             "data/train-00000-of-00001.parquet"]
    assert len(hub.requests_to(f"/api/datasets/{DATASET}/tree/")) - before == 3


def test_the_loopback_guard_refuses_other_hosts(tmp_path):
    for endpoint in ("http://192.0.2.1", "https://huggingface.co"):
        with pytest.raises(AssertionError, match="not loopback"):
            download_file(MODEL, "config.json", "v0.1.0", repo_type="model", endpoint=endpoint, cache_dir=tmp_path)
