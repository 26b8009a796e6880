"""The model registry (``zoo/registry.json``) and the local zoo store: where `zoo.load` finds released models.

Registry (``zoo/registry.json``, format ``mp-tensor-zoo/registry/1``)::

    {"format": "mp-tensor-zoo/registry/1",
     "hub_organisation": "mp-tensor-zoo",            # default Hub namespace of unregistered lookups
     "models": {
       "matten-elastic": {
         "property": "elastic",                       # zoo.properties name
         "repo_id": "mp-tensor-zoo/matten-elastic",   # Hub model repository
         "releases": {
           "1.0.0": {                                 # semantic version = Hub tag v1.0.0
             "revision": "<40-hex commit sha the tag points at>",   # null: shipped, not on a Hub yet
             "files": {"config.json": "<sha256>", "model.safetensors": "<sha256>", "README.md": "<sha256>"},
             "dataset": {"name": "mp-elastic-irreps", "version": "1.0.0", "fingerprint": "sha256:..."},
             "shipped": "releases/matten-elastic/1.0.0"   # folder under zoo/ holding the files, or null
           }}}}}

A release is pinned by commit sha and by the sha256 of every file, so a load checks every byte against this
file (which travels with the code) whatever the source: shipped, Hub cache or download. Shipping release
weights = committing the published folder under ``zoo/releases/<name>/<version>/`` and its entry here (the
publish stage writes the entry to ``data/reports/publish/<property>.json``).

Local store (the publish stage's default target; ``ZOO_STORE`` or ``<repo>/data/zoo``)::

    <store>/models/<name>/<version>/{model.safetensors, config.json, README.md}   (a Hub model repo's files)
    <store>/models/<name>/versions.json       {version: {"files": {file: sha256}}}
    <store>/datasets/<name>/<version>/...     (a Hub dataset repo's files), versions.json likewise

A version folder appears by one rename of a complete staging folder, and an existing version is never replaced.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core import paths
from zoo.core.io import copy_folder_into_place, sha256_file, write_json
from zoo.core.versions import version_key

REGISTRY_FORMAT = "mp-tensor-zoo/registry/1"
REGISTRY_PATH = paths.REGISTRY_PATH
# The project checkout's store: <repo>/data/zoo, next to the other pipeline outputs.
DEFAULT_STORE = paths.DEFAULT_STORE
STORE_ENV = "ZOO_STORE"
VERSIONS_FILE = "versions.json"
KINDS = ("models", "datasets")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class UnknownModelError(LookupError):
    """No model of that name is registered or stored."""


class VersionNotFoundError(LookupError):
    """The model exists but not in the version asked for."""


class LocalVersionExistsError(FileExistsError):
    """The local store already holds that version; versions are never overwritten."""


def unknown_model(name: Any, known: list[str]) -> UnknownModelError:
    """The error for an unknown name: close matches first, then every known name."""
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(known)) or 'none'}")


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Release:
    name: str
    version: str
    repo_id: str
    property: str
    revision: str | None  # None: shipped with the code only, not (yet) published to a Hub
    files: dict[str, str]
    dataset: dict[str, str]
    shipped: str | None

    def shipped_folder(self, registry_path: str | os.PathLike | None = None) -> Path | None:
        """The folder of the shipped files (relative paths are under the registry file's folder), or None."""
        return None if self.shipped is None else Path(registry_path or REGISTRY_PATH).parent / self.shipped


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    property: str
    repo_id: str
    releases: dict[str, Release]

    def latest(self) -> Release | None:
        return self.releases[max(self.releases, key=version_key)] if self.releases else None


@dataclass(frozen=True)
class Registry:
    path: Path
    hub_organisation: str
    models: dict[str, RegisteredModel]


def read_registry(path: str | os.PathLike | None = None) -> Registry:
    """The registry file (default REGISTRY_PATH, read when called), checked field by field (a ValueError names the
    entry and the field)."""
    path = Path(path or REGISTRY_PATH)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"registry {path} cannot be read: {err}") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise ValueError(f"registry {path} must be a JSON object with format {REGISTRY_FORMAT!r}")
    organisation = data.get("hub_organisation")
    if not isinstance(organisation, str) or not organisation:
        raise ValueError(f"registry {path}: hub_organisation must be a non-empty string")
    models = {}
    for name, entry in (data.get("models") or {}).items():
        where = f"registry {path}, model {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"property", "repo_id", "releases"}:
            raise ValueError(f"{where}: needs exactly the fields property, repo_id, releases")
        prop = properties.get(entry["property"]).name
        releases = {}
        for version, release in entry["releases"].items():
            version_key(version)
            at = f"{where}, release {version}"
            if not isinstance(release, dict) or set(release) != {"revision", "files", "dataset", "shipped"}:
                raise ValueError(f"{at}: needs exactly the fields revision, files, dataset, shipped")
            revision = release["revision"]
            if revision is not None and (not isinstance(revision, str) or not _COMMIT.fullmatch(revision)):
                raise ValueError(f"{at}: revision must be a 40-hex commit sha (or null for a release not yet on a "
                                 f"Hub), got {revision!r}")
            if revision is None and release["shipped"] is None:
                raise ValueError(f"{at}: a release needs a Hub revision, shipped files, or both")
            files = release["files"]
            if not isinstance(files, dict) or not files or not all(
                    isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values()):
                raise ValueError(f"{at}: files must map each file name to its sha256 (64 lowercase hex digits)")
            releases[version] = Release(name, version, entry["repo_id"], prop, release["revision"], dict(files),
                                        dict(release["dataset"]), release["shipped"])
        models[name] = RegisteredModel(name, prop, entry["repo_id"], releases)
    return Registry(path, organisation, models)


def release_entry(folder: str | os.PathLike, revision: str | None, dataset: dict[str, str],
                  shipped: str | None = None) -> dict[str, Any]:
    """The registry release entry of a published model folder (every file hashed)."""
    folder = Path(folder)
    return {"revision": revision, "dataset": dict(dataset), "shipped": shipped,
            "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}}


def write_registry(data: dict[str, Any], path: str | os.PathLike | None = None) -> None:
    """Write registry `data` to `path` (default REGISTRY_PATH) atomically, after checking it reads back as a valid
    registry."""
    path = Path(path or REGISTRY_PATH)
    with tempfile.TemporaryDirectory(prefix=".registry-", dir=path.parent) as tmp:
        candidate = Path(tmp) / path.name
        write_json(candidate, data)
        read_registry(candidate)  # ValueError naming the bad entry; the registry on disk is left as it was
    write_json(path, data)


# --------------------------------------------------------------------------------------------- local store
class LocalStore:
    """Versioned model and dataset folders on disk (module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else os.environ.get(STORE_ENV) or DEFAULT_STORE)

    def _repo(self, kind: str, name: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"name must be a repository name (letters, digits, '.', '_', '-'), got {name!r}")
        return self.root / kind / name

    def names(self, kind: str = "models") -> list[str]:
        folder = self.root / kind
        return sorted(p.name for p in folder.iterdir() if (p / VERSIONS_FILE).is_file()) if folder.is_dir() else []

    def versions(self, name: str, kind: str = "models") -> dict[str, dict[str, str]]:
        """version -> {file: sha256}, oldest first; {} when nothing is stored."""
        index = self._repo(kind, name) / VERSIONS_FILE
        if not index.is_file():
            return {}
        recorded = json.loads(index.read_text(encoding="utf-8"))
        return {v: recorded[v]["files"] for v in sorted(recorded, key=version_key)}

    def folder(self, name: str, version: str, kind: str = "models") -> Path:
        version_key(version)
        return self._repo(kind, name) / version

    def publish(self, source: str | os.PathLike, name: str, version: str, kind: str = "models") -> Path:
        """Copy the files of `source` in as `version`; LocalVersionExistsError if that version is stored."""
        repo = self._repo(kind, name)
        target = self.folder(name, version, kind)
        if version in self.versions(name, kind) or target.exists():
            raise LocalVersionExistsError(f"{kind[:-1]} {name} version {version} is already in the local store "
                                          f"({target}); published versions are never overwritten, bump the version")
        try:
            copy_folder_into_place(source, target)
        except FileExistsError as err:
            raise LocalVersionExistsError(f"{kind[:-1]} {name} version {version} appeared in the local store "
                                          "meanwhile; it was not overwritten") from err
        files = {str(p.relative_to(target)): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()}
        index = {v: {"files": f} for v, f in self.versions(name, kind).items()}
        index[version] = {"files": files}
        write_json(repo / VERSIONS_FILE, index)
        return target
