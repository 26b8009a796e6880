"""Where `zoo.load` finds a model version's files, and their verification, without building anything.

`resolve`: the resolution order of zoo.release.loading's docstring (local store, shipped, Hub cache, Hub), with the
Hub's deadline around the downloads, and an offline error that lists the versions available locally.
`verified_files`: every file against its sha256 (registry, store index, or the config for the weights), the config
parsed and checked field by field (zoo.nn.model_files). The `zoo info` command stops here; `zoo.load` goes on to
build the network (zoo.release.loading)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from typing import Any

from zoo.core.io import sha256_bytes, write_json
from zoo.core.versions import version_key
from zoo.nn import model_files
from zoo.release import hub, model_card, registry

CACHE_ENV = "ZOO_CACHE"
ORGANISATION_ENV = "ZOO_HUB_ORG"
CARD_FILE = model_card.CARD_FILE
MODEL_FILES = (model_files.CONFIG_FILE, model_files.WEIGHTS_FILE, CARD_FILE)
_FORMAT_PREFIX, _, _FORMAT_NUMBER = model_files.MODEL_FORMAT.rpartition("/")
_REFS_FILE = "zoo-versions.json"  # in the Hub cache: version -> commit of unregistered versions seen online


class FormatVersionError(ValueError):
    """The model files were written in a format this code does not read."""


class ModelNotCachedError(hub.HubUnavailable):
    """The model is in no local source and the Hub cannot be reached."""


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mp-tensor-zoo"


def known_models(registry_data: registry.Registry, store: registry.LocalStore) -> list[str]:
    return sorted(set(registry_data.models) | set(store.names()))


@dataclass(frozen=True)
class Resolved:
    """Where a model version's files are and what they must hash to (None: check the weights against the config
    only), and the property the registry lists for it."""

    name: str
    version: str | None
    source: str
    folder: Path
    hashes: dict[str, str] | None
    property: str | None = None


def resolve(name: str, version: str | None = None, *, store: str | os.PathLike | None = None,
            registry_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
            endpoint: str | None = None, token: str | None = None, organisation: str | None = None) -> Resolved:
    """Where `load` finds the model's files (downloading them from the Hub when needed), without building it.

    store: the local store (default ``ZOO_STORE`` or ``<repo>/data/zoo``); cache_dir: the Hub cache (default
    ``ZOO_CACHE`` or ``$HF_HOME/mp-tensor-zoo``); endpoint/token: the Hub (default ``HF_ENDPOINT``/``HF_TOKEN``);
    organisation: the Hub namespace of a model the registry does not list (default ``ZOO_HUB_ORG`` or the
    registry's ``hub_organisation``). Hub traffic has the deadline of zoo.release.hub (ZOO_HUB_DEADLINE_S).
    """
    if version is not None:
        version_key(version)
    local = registry.LocalStore(store)
    known_registry = registry.read_registry(registry_path)
    if name not in known_models(known_registry, local):
        raise registry.unknown_model(name, known_models(known_registry, local))

    stored = local.versions(name)
    entry = known_registry.models.get(name)
    prop = entry.property if entry else None
    if version is None and (stored or (entry and entry.releases)):
        # The newest version the local store or the registry knows; on a tie the local store's copy is used.
        version = max([*stored, *(entry.releases if entry else ())], key=version_key)
    if version in stored:
        return Resolved(name, version, "local store", local.folder(name, version), stored[version], prop)
    release = (entry.releases.get(version) if version else entry.latest()) if entry else None
    if release is not None:
        shipped = release.shipped_folder(known_registry.path)
        if shipped is not None and shipped.is_dir():
            return Resolved(name, release.version, "shipped", shipped, release.files, prop)

    repo_id = entry.repo_id if entry else \
        f"{organisation or os.environ.get(ORGANISATION_ENV) or known_registry.hub_organisation}/{name}"
    hub_side = _HubSide(name, version, repo_id, Path(cache_dir) if cache_dir is not None else default_cache(),
                        endpoint, token, prop)
    try:
        with hub.deadline():
            if release is not None:
                # A release not yet on a Hub (revision null) is fetched by its version tag, checked file by file.
                return hub_side.registered(release)
            return hub_side.unregistered(stored, entry)
    except hub.HubUnavailable as err:
        shipped_versions = [v for v, r in (entry.releases if entry else {}).items()
                            if r.shipped_folder(known_registry.path) is not None
                            and r.shipped_folder(known_registry.path).is_dir()]
        here = [f"{v} (local store)" for v in stored] + [f"{v} (shipped)" for v in shipped_versions] + \
            [f"{v} (Hub cache)" for v in hub_side.seen()]
        raise ModelNotCachedError(
            f"{name}{' ' + version if version else ''} is not in the local store ({local.root}), not shipped with "
            f"the code, not in the Hub cache ({hub_side.cache}), and the Hub cannot be reached: {err}. Versions "
            f"available locally: {', '.join(here) or 'none'}") from None


@dataclass(frozen=True)
class _HubSide:
    """Resolving a model version through the Hub cache and the Hub."""

    name: str
    version: str | None
    repo_id: str
    cache: Path
    endpoint: str | None
    token: str | None
    property: str | None

    @property
    def refs_path(self) -> Path:
        return self.cache / "models" / self.repo_id / _REFS_FILE

    def seen(self) -> dict[str, str]:
        """version -> commit of the unregistered versions downloaded before."""
        return json.loads(self.refs_path.read_text(encoding="utf-8")) if self.refs_path.is_file() else {}

    def registered(self, release: registry.Release) -> Resolved:
        files = _download(self.repo_id, release.revision or hub.version_tag(release.version), self.cache,
                          self.endpoint, self.token, release.files)
        return Resolved(self.name, release.version, "hub", files, release.files, self.property)

    def unregistered(self, stored: dict, entry: registry.RegisteredModel | None) -> Resolved:
        seen = self.seen()
        try:
            online = hub.list_versions(self.repo_id, "model", endpoint=self.endpoint, token=self.token)
        except hub.HubNotFoundError:
            online = {}
        except hub.HubUnavailable:
            cached = self.version or (max(seen, key=version_key) if seen else None)
            if cached not in seen:
                raise
            files = _download(self.repo_id, seen[cached], self.cache, self.endpoint, self.token, None)
            return Resolved(self.name, cached, "hub cache", files, None, self.property)
        if not online or (self.version is not None and self.version not in online):
            releases = set(entry.releases if entry else ())
            available = sorted(set(stored) | set(online) | releases, key=version_key)
            raise registry.VersionNotFoundError(
                f"{self.name} has no version {self.version or '(any)'}: local store {sorted(stored) or 'none'}, "
                f"registry {sorted(releases) or 'none'}, Hub {self.repo_id} {list(online) or 'none'}"
                + (f"; available: {', '.join(available)}" if available else ""))
        chosen = self.version or list(online)[-1]
        files = _download(self.repo_id, online[chosen], self.cache, self.endpoint, self.token, None)
        write_json(self.refs_path, {**seen, chosen: online[chosen]})
        return Resolved(self.name, chosen, "hub", files, None, self.property)


def _download(repo_id: str, commit: str, cache: Path, endpoint, token, hashes: dict[str, str] | None) -> Path:
    """The model's files at `commit` in the Hub cache (downloaded if missing), each verified; their folder.

    With `hashes` (a registered release) every file must have its sha256. Without, the config is checked against
    the Hub's hash and the weights against the sha256 in that config, so a config is read before the weights.
    """
    fetch = lambda filename, expected: hub.download_file(  # noqa: E731
        repo_id, filename, commit, repo_type="model", cache_dir=cache, endpoint=endpoint, token=token,
        expected_sha256=expected)
    config_path = fetch(model_files.CONFIG_FILE, (hashes or {}).get(model_files.CONFIG_FILE))
    weights_sha = (hashes or {}).get(model_files.WEIGHTS_FILE) or _read_config(config_path.read_bytes(),
                                                                               config_path)["weights"]["sha256"]
    fetch(model_files.WEIGHTS_FILE, weights_sha)
    try:
        fetch(CARD_FILE, (hashes or {}).get(CARD_FILE))
    except hub.HubNotFoundError:
        if hashes and CARD_FILE in hashes:
            raise
    return config_path.parent



def _verified_bytes(path: Path, expected: str | None) -> bytes:
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if expected is not None and actual != expected:
        raise hub.ChecksumMismatchError(f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or "
                                        "was changed; it was not loaded")
    return data


def _read_config(data: bytes, path: Path, expected_property: str | None = None) -> dict[str, Any]:
    """config.json's content: JSON, of the format this code reads, every field checked (zoo.nn.model_files)."""
    try:
        info = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise model_files.ConfigError(f"{path} is not JSON: {err}") from None
    found = info.get("format_version") if isinstance(info, dict) else None
    prefix, _, number = str(found).rpartition("/")
    if prefix != _FORMAT_PREFIX or not number.isdigit():
        raise FormatVersionError(f"{path} has format {found!r}; this code reads {model_files.MODEL_FORMAT!r}")
    if int(number) > int(_FORMAT_NUMBER):
        raise FormatVersionError(f"{path} has format {found!r}, newer than this code reads "
                                 f"({model_files.MODEL_FORMAT!r}): upgrade mp-tensor-zoo to load it")
    if int(number) != int(_FORMAT_NUMBER):
        raise FormatVersionError(f"{path} has the old format {found!r}; this code reads {model_files.MODEL_FORMAT!r}")
    return model_files.check_config(info, str(path), expected_property)


@dataclass(frozen=True)
class VerifiedFiles:
    """A model folder's files, every one checked against its hash, the config checked field by field."""

    resolved: Resolved
    info: dict[str, Any]
    weights: bytes
    card: model_card.ModelCard | None


def verified_files(found: Resolved) -> VerifiedFiles:
    """Read and verify the files of a resolved model: each against `found.hashes`, the weights against the config."""
    config_path, weights_path, card_path = (found.folder / f for f in MODEL_FILES)
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{found.folder} lacks {model_files.CONFIG_FILE} or {model_files.WEIGHTS_FILE}: not "
                                "a model folder")
    hashes = found.hashes or {}
    info = _read_config(_verified_bytes(config_path, hashes.get(model_files.CONFIG_FILE)), config_path,
                        found.property)
    weights = _verified_bytes(weights_path, hashes.get(model_files.WEIGHTS_FILE))
    recorded = info["weights"]["sha256"]
    if sha256_bytes(weights) != recorded:
        raise hub.ChecksumMismatchError(f"{weights_path} has sha256 {sha256_bytes(weights)}, but {config_path} "
                                        f"records {recorded}: the weights were not loaded")
    card = None
    if card_path.is_file():
        card = model_card.ModelCard(_verified_bytes(card_path, hashes.get(CARD_FILE)).decode("utf-8"), card_path)
    elif CARD_FILE in hashes:
        raise FileNotFoundError(f"{card_path} is missing")
    return VerifiedFiles(found, info, weights, card)
