"""The datasets' user API: ``zoo.datasets.load(name)`` (a local build, or a Hub repository, downloaded and checked) and
the row helpers (``zoo.data.datasets``)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from zoo.data import splits
from zoo.data.dataset_schema import VERSION_FILE, parquet_path
from zoo.data.datasets import HUB_DATASETS_DIR, load_folder, load_local, repo_name, row_structure, row_tensor
from zoo.release import hub

__all__ = ["download", "load", "row_structure", "row_tensor"]


def load(
    name: str,
    *,
    local_root: str | os.PathLike = HUB_DATASETS_DIR,
    version: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A dataset as a ``datasets.DatasetDict`` (train, validation, test): the local build if there is one,
    else the Hub.

    name: 'elastic', 'mp-elastic-irreps' or 'org/mp-elastic-irreps'. The local folder
    ``<local_root>/mp-elastic-irreps`` is used when it holds a README.md (whatever `version`). Otherwise, for
    'org/name', the repository is downloaded at the tag of `version` (e.g. '1.0.0' -> 'v1.0.0'; default: the
    main branch) through ``zoo.release.hub.download_file`` into `cache_dir` (default ``$HF_HOME/mp-tensor-zoo``):
    dataset_version.json and README.md checked against the Hub's hashes, each Parquet file against the sha256
    that dataset_version.json records. ``zoo.release.hub`` errors (HubUnavailable, HubNotFoundError,
    ChecksumMismatchError, ...) pass through.
    """
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"name must be a dataset name such as 'mp-elastic-irreps' or 'org/mp-elastic-irreps', got {name!r}")
    local = Path(local_root) / repo_name(name)
    if (local / "README.md").is_file():
        return load_local(name, local_root)
    if "/" not in name:
        raise ValueError(
            f"no local build of {name!r} in {local}: run `dvc repro build@{local.name.split('-')[1]}`, or give the "
            f"Hub repository as 'org/{local.name}'"
        )
    folder = download(name, version=version, endpoint=endpoint, token=token, cache_dir=cache_dir)
    return load_folder(folder)


def download(
    repo_id: str,
    *,
    version: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download a dataset repository (one commit: the tag of `version`, or main) and return its local folder."""
    from huggingface_hub import constants

    revision = hub.version_tag(version) if version is not None else "main"
    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HOME) / "mp-tensor-zoo"
    fetch = functools.partial(hub.download_file, repo_id, repo_type="dataset", cache_dir=root, endpoint=endpoint,
                              token=token)
    info_path = fetch(VERSION_FILE, revision)
    commit = info_path.parent.name  # download_file stores files under their commit sha: pin the rest to it
    hashes = json.loads(info_path.read_text(encoding="utf-8")).get("files_sha256") or {}
    missing = [parquet_path(split) for split in splits.SPLITS if parquet_path(split) not in hashes]
    if missing:
        raise ValueError(f"{repo_id}@{commit}: {VERSION_FILE} gives no sha256 for {missing}: not a dataset built by zoo")
    fetch("README.md", commit)
    for split in splits.SPLITS:
        fetch(parquet_path(split), commit, expected_sha256=hashes[parquet_path(split)])
    return info_path.parent
