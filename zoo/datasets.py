"""The datasets' user API: ``zoo.datasets.load(name)`` and the row helpers (implemented in ``zoo.data.datasets``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo.data.datasets import VERSION_FILE, load_folder, repo_name, row_structure, row_tensor

__all__ = ["load", "row_structure", "row_tensor"]


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
           zoo/registry.json's hub_organisation, downloaded and checked as ``zoo.data.datasets.download`` does
           (endpoint, token, cache_dir; the deadlines of zoo.release.hub).
    A Hub error says where the dataset was looked for locally.
    """
    from zoo.data import datasets as data
    from zoo.release import hub, registry

    if local_root is not None:
        return data.load(name, local_root=local_root, version=version, endpoint=endpoint, token=token,
                         cache_dir=cache_dir)
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"name must be a dataset name such as 'mp-elastic-irreps' or 'org/mp-elastic-irreps', "
                         f"got {name!r}")
    repo = repo_name(name)
    from zoo.core import paths

    builds = [Path.cwd() / "data" / "hub" / "datasets" / repo, paths.DATA_DIR / "hub" / "datasets" / repo]
    store = registry.LocalStore()
    stored = store.versions(repo, kind="datasets")
    chosen = version if version is not None else (list(stored)[-1] if stored else None)
    candidates = builds + ([store.folder(repo, chosen, kind="datasets")] if chosen in stored else [])
    for folder in candidates:
        if (folder / "README.md").is_file() and (version is None or _version_of(folder) == version):
            return load_folder(folder, cache_dir)
    organisation = name.split("/")[0] if "/" in name else registry.read_registry().hub_organisation
    try:
        return data.load(f"{organisation}/{repo}", local_root=builds[0].parent, version=version, endpoint=endpoint,
                         token=token, cache_dir=cache_dir)
    except hub.HubError as err:
        looked = ", ".join(str(folder) for folder in dict.fromkeys(builds)) + f", the local store {store.root}"
        raise type(err)(f"{repo}{' ' + version if version else ''} is not built locally ({looked}) and the Hub "
                        f"failed: {err}") from None


def _version_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / VERSION_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, json.JSONDecodeError):
        return None
