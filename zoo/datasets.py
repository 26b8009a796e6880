"""The datasets' user API: ``zoo.datasets.load(name)`` (a local build, the local store, or a Hub repository, downloaded
and checked) and the row helpers (``zoo.data.datasets``)."""

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


def load(name: str, *, version: str | None = None, local_root: str | os.PathLike | None = None,
         endpoint: str | None = None, token: str | None = None, cache_dir: str | os.PathLike | None = None):
    """A dataset as a ``datasets.DatasetDict`` (train, validation, test), from any working directory.

    name: 'elastic', 'mp-elastic-irreps' or 'org/mp-elastic-irreps'. The first of these that holds the dataset (of
    `version`, when given) is used:
        1. ``<local_root>/<repo>`` when local_root is given (then only that folder, or the Hub for 'org/name');
        2. the local build in the working directory, ``./data/hub/datasets/<repo>``;
        3. the local build of this checkout, ``<checkout>/data/hub/datasets/<repo>``;
        4. the local zoo store (``ZOO_STORE``), ``<store>/datasets/<repo>/<version or newest>``;
        5. the Hub: ``org/<repo>`` at the tag of `version` (default: main), org from the name or else
           zoo/registry.json's hub_organisation, through `download` (endpoint, token, cache_dir; the deadlines of
           zoo.release.hub). A Hub error says where the dataset was looked for locally.
    """
    from zoo.core import paths
    from zoo.release import registry

    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"name must be a dataset name such as 'mp-elastic-irreps' or 'org/mp-elastic-irreps', got {name!r}")
    repo = repo_name(name)
    if local_root is not None:
        if (Path(local_root) / repo / "README.md").is_file():
            return load_local(name, local_root)
        if "/" not in name:
            raise ValueError(f"no local build of {name!r} in {Path(local_root) / repo}: run `dvc repro "
                             f"build@{repo.split('-')[1]}`, or give the Hub repository as 'org/{repo}'")
        return load_folder(download(name, version=version, endpoint=endpoint, token=token, cache_dir=cache_dir))
    builds = [Path.cwd() / HUB_DATASETS_DIR / repo, paths.DATA_DIR / "hub" / "datasets" / repo]
    store = registry.LocalStore()
    stored = store.versions(repo, kind="datasets")
    chosen = version if version is not None else (list(stored)[-1] if stored else None)
    candidates = builds + ([store.folder(repo, chosen, kind="datasets")] if chosen in stored else [])
    for folder in candidates:
        if (folder / "README.md").is_file() and (version is None or _version_of(folder) == version):
            return load_folder(folder)
    repo_id = name if "/" in name else f"{registry.read_registry().hub_organisation}/{repo}"
    try:
        return load_folder(download(repo_id, version=version, endpoint=endpoint, token=token, cache_dir=cache_dir))
    except hub.HubError as err:
        looked = ", ".join(str(folder) for folder in dict.fromkeys(builds)) + f", the local store {store.root}"
        raise type(err)(f"{repo}{' ' + version if version else ''} is not built locally ({looked}) and the Hub "
                        f"failed: {err}") from None


def _version_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / VERSION_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, json.JSONDecodeError):
        return None


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
    for split in splits.ALL_SPLITS:  # external only where the build has one
        if parquet_path(split) in hashes:
            fetch(parquet_path(split), commit, expected_sha256=hashes[parquet_path(split)])
    return info_path.parent
