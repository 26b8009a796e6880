"""`zoo.load(name, version=None)`: a released model, verified, ready to `.predict` structures.

Resolution, first hit wins:
    1. local store   ``<store>/models/<name>/<version>/`` (zoo.release.registry.LocalStore; the publish stage's target)
    2. shipped       a release in ``zoo/registry.json`` whose files ship with the code
    3. Hub cache     files downloaded before, under ``<cache>/models/<repo_id>/<commit>/`` (no network)
    4. Hub           the version's tag (``v1.2.0``) of the model repository, through ``zoo.release.hub.download_file``
                     (temporary file + rename: an interrupted download leaves nothing behind)
version=None takes the newest version that the local store or the registry knows (the local store's copy on a tie),
and only when neither knows any, the newest on the Hub.

Every file is hashed before use, from the very bytes that are then parsed (read once, so nothing can change in
between): against the registry's sha256 for a registered release, against the store's ``versions.json`` for
the local store, and for an unregistered Hub version the config is checked against the Hub's own hash and the
weights against the sha256 the config records. Weights are read with safetensors only: a pickle, or anything
else, in their place is refused, never unpickled.

Predictions are in the Cartesian frame of the structure as given (the networks are rotation-equivariant).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo import properties
from zoo.core import derived, tensors
from zoo.core.io import sha256_bytes, write_json
from zoo.nn import graphs, models, training
from zoo.properties import limits
from zoo.release import hub, model_card, registry

CACHE_ENV = "ZOO_CACHE"
ORGANISATION_ENV = "ZOO_HUB_ORG"
CARD_FILE = model_card.CARD_FILE
MODEL_FILES = (training.CONFIG_FILE, training.WEIGHTS_FILE, CARD_FILE)
_FORMAT_PREFIX, _, _FORMAT_NUMBER = training.MODEL_FORMAT.rpartition("/")
PREDICT_BATCH = 32
# cm^-1 per THz (1 THz / c); zoo.data.datasets.row_tensor uses the same constant for pymatgen's PhononDos.
_REFS_FILE = "zoo-versions.json"  # in the Hub cache: version -> commit of unregistered versions seen online


class ModelNotCachedError(hub.HubUnavailable):
    """The model is in no local source and the Hub cannot be reached."""


class FormatVersionError(ValueError):
    """The model files were written in a format this code does not read."""


class StructureReadError(ValueError):
    """An input could not be turned into a structure (the message names it)."""


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mp-tensor-zoo"


# ------------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True, eq=False)
class Prediction:
    """One structure's prediction.

    tensors  pymatgen objects per part: elastic {'total': ElasticTensor} (GPa); dielectric {'electronic', 'ionic',
             'total': Tensor} (total = electronic + ionic exactly; a 1.0.0 model gives {'electronic'} only);
             piezo {'total': PiezoTensor} (C/m^2); phonon {'dos': PhononDos} (THz, 3N-normalised states/THz per
             cell, pymatgen's units)
    derived  zoo.core.derived quantities (units in zoo.core.derived.UNITS); {} with `derived_error` set where undefined
             (e.g. a singular predicted stiffness)
    raw      the Voigt form (dielectric: one row per part, in the order of `tensors`), or the max-normalised DOS on
             PHONON_GRID_CM
    spread   for an ensemble model (config.json lists ensemble_seeds): the standard deviation of the members'
             predictions, in the form of `raw` (Voigt, or the DOS); None for a single network
    warnings where the prediction leaves the model's domain (zoo.release.limits), e.g. a possibly metallic crystal
             for the dielectric model, a phonon spectrum past the grid; [] when none applies
    """

    source: str
    structure: Any
    property: str
    units: str
    tensors: dict[str, Any]
    derived: dict[str, Any]
    derived_error: str | None = None
    raw: np.ndarray = field(repr=False, default=None)  # Voigt form, or the max-normalised DOS on PHONON_GRID_CM
    spread: np.ndarray | None = field(repr=False, default=None)  # ensembles: std across members, same form as raw
    warnings: list[str] = field(default_factory=list)

    @property
    def value(self):
        """The predicted pymatgen object (the single entry of `tensors`)."""
        return next(iter(self.tensors.values()))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the Voigt form (or DOS) and the derived quantities."""
        spec = properties.get(self.property)
        out = {"source": self.source, "formula": self.structure.composition.reduced_formula,
               "property": self.property, "units": self.units, "parts": list(self.tensors),
               "derived": self.derived, "derived_units": {k: _units(k) for k in self.derived},
               "warnings": list(self.warnings)}
        if spec.is_tensor:
            out["voigt"] = self.raw.tolist()
            out["frame"] = "Cartesian frame of the input structure; Voigt order 11,22,33,23,13,12"
        else:
            out["frequencies_cm"] = properties.PHONON_GRID_CM.tolist()
            out["dos_max_normalised"] = self.raw.tolist()
        if self.spread is not None:
            out["ensemble_spread"] = self.spread.tolist()  # std across ensemble members, same form as the value
        if self.derived_error:
            out["derived_error"] = self.derived_error
        return out


def _units(key: str) -> str:
    """Units of a derived key; per-part dielectric keys (eps_poly_total) take their base quantity's."""
    base, _, part = key.rpartition("_")
    return derived.UNITS.get(key) or (derived.UNITS.get(base, "") if part in properties.DIELECTRIC.tensor_parts else "")


@dataclass(frozen=True, eq=False)
class ZooModel:
    """A loaded model: `predict`, its `card` (README.md text, None if the folder has none) and where it came from."""

    name: str
    version: str | None
    source: str
    path: Path
    info: dict[str, Any]
    net: models.MattenNet | models.Ensemble = field(repr=False)
    card: str | None = field(repr=False)

    @property
    def property(self) -> str:
        return self.net.config.property

    def predict(self, structures, batch_size: int = PREDICT_BATCH, progress=None):
        """Predictions for a pymatgen Structure, an ASE Atoms (when ase is installed), a CIF/POSCAR path, or a
        list of them; a list gives a list. `progress`: a callable(n_done, n_total) after each batch."""
        single = not isinstance(structures, (list, tuple))
        labelled = read_structures([structures] if single else structures)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        cache = graphs.GraphCache(self.net.config.r_cut)
        outputs, spreads = [], []
        for start in range(0, len(labelled), batch_size):
            chunk = [structure for _, structure in labelled[start:start + batch_size]]
            batch = graphs.GraphBatch.collate(cache.graphs(chunk))
            if isinstance(self.net, models.Ensemble) and self.net.has_spread:
                mean, spread = self.net.predict_with_spread(batch)
                outputs.append(mean.numpy())
                spreads.append(spread.numpy())
            else:
                outputs.append(self.net.predict_cartesian(batch).numpy())
            if progress is not None:
                progress(min(start + batch_size, len(labelled)), len(labelled))
        values = np.concatenate(outputs) if outputs else np.zeros((0,))
        spread = np.concatenate(spreads) if spreads else [None] * len(values)
        parts = self.net.spec.output_parts(self.net.parts)
        out = [_prediction(self.net.spec, label, structure, value, member_spread, parts)
               for (label, structure), value, member_spread in zip(labelled, values, spread)]
        return out[0] if single else out


def _prediction(spec: properties.PropertySpec, label: str, structure, value: np.ndarray,
                spread: np.ndarray | None = None, parts: tuple[str, ...] | None = None) -> Prediction:
    """The Prediction of one structure from the network's float64 output (``MattenNet.predict_cartesian``: Cartesian,
    with a parts axis holding `parts` for a property with several, or the DOS)."""
    from pymatgen.analysis.elasticity import ElasticTensor
    from pymatgen.analysis.piezo import PiezoTensor
    from pymatgen.core.tensors import Tensor
    from pymatgen.phonon.dos import PhononDos

    parts = spec.output_parts(spec.predicted_parts) if parts is None else parts
    error = None
    try:
        if spec.name == "elastic":
            raw = tensors.cartesian_to_voigt(value, spec.voigt_kind)
            objects = {"total": ElasticTensor(value)}
            quantities = derived.elastic_properties(raw)
        elif spec.name == "dielectric":
            raw = tensors.cartesian_to_voigt(value, spec.voigt_kind)
            objects = {part: Tensor(tensor) for part, tensor in zip(parts, value)}
            quantities = derived.dielectric_properties(*(value[parts.index(part)] for part in spec.tensor_parts)) \
                if set(spec.tensor_parts) <= set(parts) else derived.dielectric_tensor_properties(value[0])
        elif spec.name == "piezo":
            raw = tensors.cartesian_to_voigt(value, spec.voigt_kind)
            objects = {"total": PiezoTensor(value)}
            quantities = derived.piezo_properties(raw)
        else:
            raw = value
            dos_3n = derived.normalise_dos_to_3n(properties.PHONON_GRID_CM, value, len(structure))
            objects = {"dos": PhononDos(properties.PHONON_GRID_CM / properties.CM_PER_THZ, dos_3n * properties.CM_PER_THZ)}
            quantities = derived.phonon_properties(properties.PHONON_GRID_CM, value, len(structure),
                                                   float(structure.composition.weight))
    except ValueError as err:  # e.g. a singular stiffness: the tensor stands, its derived quantities do not
        quantities, error = {}, str(err)
    if spread is not None and spec.is_tensor:
        # Voigt form of the members' Cartesian standard deviation (the Voigt map only selects components)
        spread = tensors.cartesian_to_voigt(spread, spec.voigt_kind)
    raw = np.asarray(raw)
    return Prediction(label, structure, spec.name, spec.units, objects, quantities, error, raw, spread,
                      limits.prediction_warnings(spec.name, structure, raw))


# ------------------------------------------------------------------------------------------------- inputs
def read_structures(items: Sequence[Any]) -> list[tuple[str, Any]]:
    """(label, pymatgen Structure) for each Structure, ASE Atoms or CIF/POSCAR path; StructureReadError names
    the input that cannot be read."""
    from pymatgen.core import IStructure, Structure

    out = []
    for position, item in enumerate(items):
        if isinstance(item, IStructure):
            out.append((f"structure {position} ({item.composition.reduced_formula})", item))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise StructureReadError(f"{path}: no such file")
            try:
                with warnings.catch_warnings():  # pymatgen warns about every oddity; failures are reported below
                    warnings.simplefilter("ignore")
                    structure = Structure.from_file(path)
            # pymatgen's parsers raise many types (ValueError, IndexError, KeyError, ...) on malformed files;
            # any of them means "not a readable structure", said in one line naming the file.
            except Exception as err:  # noqa: BLE001
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise StructureReadError(f"{path}: not a readable CIF/POSCAR structure ({reason})") from None
            if len(structure) == 0:
                raise StructureReadError(f"{path}: the file holds no atoms")
            out.append((str(path), structure))
        elif _is_ase_atoms(item):
            from pymatgen.io.ase import AseAtomsAdaptor

            out.append((f"atoms {position} ({item.get_chemical_formula()})", AseAtomsAdaptor.get_structure(item)))
        else:
            raise StructureReadError(f"structures[{position}] must be a pymatgen Structure, an ASE Atoms or a path "
                                     f"to a CIF/POSCAR file, got {type(item).__name__}")
    return out


def _is_ase_atoms(item) -> bool:
    try:
        from ase import Atoms
    except ImportError:  # ase is optional: without it no input can be an Atoms
        return False
    return isinstance(item, Atoms)


# ------------------------------------------------------------------------------------------------ loading
def known_models(registry_data: registry.Registry, store: registry.LocalStore) -> list[str]:
    return sorted(set(registry_data.models) | set(store.names()))


def load(name: str, version: str | None = None, *, store: str | os.PathLike | None = None,
         registry_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         endpoint: str | None = None, token: str | None = None, organisation: str | None = None) -> ZooModel:
    """The model `name` ('matten-elastic', ...) at `version` ('1.0.0'; None: the newest found; module docstring).

    store: the local store (default ``ZOO_STORE`` or ``<repo>/data/zoo``); cache_dir: the Hub cache (default
    ``ZOO_CACHE`` or ``$HF_HOME/mp-tensor-zoo``); endpoint/token: the Hub (default ``HF_ENDPOINT``/``HF_TOKEN``);
    organisation: the Hub namespace of a model the registry does not list (default ``ZOO_HUB_ORG`` or the
    registry's ``hub_organisation``).
    Errors: UnknownModelError (with close matches), VersionNotFoundError, ModelNotCachedError (offline and not
    cached), zoo.release.hub.ChecksumMismatchError (file and both hashes), FormatVersionError, zoo.release.hub.HubError.
    """
    if version is not None:
        registry.version_key(version)
    local = registry.LocalStore(store)
    known_registry = registry.read_registry(registry_path)
    if name not in known_models(known_registry, local):
        raise registry.unknown_model(name, known_models(known_registry, local))

    stored = local.versions(name)
    entry = known_registry.models.get(name)
    if version is None and (stored or (entry and entry.releases)):
        # The newest version the local store or the registry knows; on a tie the local store's copy is used.
        version = max([*stored, *(entry.releases if entry else ())], key=registry.version_key)
    if version in stored:
        return _load_folder(name, version, "local store", local.folder(name, version), stored[version])

    repo_id = entry.repo_id if entry else \
        f"{organisation or os.environ.get(ORGANISATION_ENV) or known_registry.hub_organisation}/{name}"
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    release = (entry.releases.get(version) if version else entry.latest()) if entry else None
    if release is not None:
        shipped = release.shipped_folder(known_registry.path)
        if shipped is not None and shipped.is_dir():
            return _load_folder(name, release.version, "shipped", shipped, release.files)
        # A release not yet on a Hub (revision null) is fetched by its version tag, still checked file by file.
        files = _download(repo_id, release.revision or hub.version_tag(release.version), cache, endpoint, token,
                          release.files)
        return _load_folder(name, release.version, "hub", files, release.files)

    refs_path = cache / "models" / repo_id / _REFS_FILE
    seen = json.loads(refs_path.read_text(encoding="utf-8")) if refs_path.is_file() else {}
    try:
        online = hub.list_versions(repo_id, "model", endpoint=endpoint, token=token)
    except hub.HubNotFoundError:
        online = {}
    except hub.HubUnavailable as err:
        cached = version or (max(seen, key=registry.version_key) if seen else None)
        if cached in seen:
            files = _download(repo_id, seen[cached], cache, endpoint, token, None)
            return _load_folder(name, cached, "hub cache", files, None)
        raise ModelNotCachedError(
            f"{name}{' ' + version if version else ''} is not in the local store ({local.root}), not shipped with "
            f"the code, not in the Hub cache ({cache}), and the Hub cannot be reached: {err}") from None
    if not online or (version is not None and version not in online):
        available = sorted(set(stored) | set(online) | set(entry.releases if entry else ()), key=registry.version_key)
        raise registry.VersionNotFoundError(
            f"{name} has no version {version or '(any)'}: local store {sorted(stored) or 'none'}, registry "
            f"{sorted(entry.releases) if entry and entry.releases else 'none'}, Hub {repo_id} "
            f"{list(online) or 'none'}" + (f"; available: {', '.join(available)}" if available else ""))
    chosen = version or list(online)[-1]
    files = _download(repo_id, online[chosen], cache, endpoint, token, None)
    write_json(refs_path, {**seen, chosen: online[chosen]})
    return _load_folder(name, chosen, "hub", files, None)


def _download(repo_id: str, commit: str, cache: Path, endpoint, token, hashes: dict[str, str] | None) -> Path:
    """The model's files at `commit` in the Hub cache (downloaded if missing), each verified; their folder.

    With `hashes` (a registered release) every file must have its sha256. Without, the config is checked against
    the Hub's hash and the weights against the sha256 in that config, so a config is read before the weights.
    """
    fetch = lambda filename, expected: hub.download_file(  # noqa: E731
        repo_id, filename, commit, repo_type="model", cache_dir=cache, endpoint=endpoint, token=token,
        expected_sha256=expected)
    config_path = fetch(training.CONFIG_FILE, (hashes or {}).get(training.CONFIG_FILE))
    weights_sha = (hashes or {}).get(training.WEIGHTS_FILE) or _read_config(config_path.read_bytes(),
                                                                            config_path)["weights"]["sha256"]
    fetch(training.WEIGHTS_FILE, weights_sha)
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


def _read_config(data: bytes, path: Path) -> dict[str, Any]:
    try:
        info = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    found = info.get("format_version") if isinstance(info, dict) else None
    prefix, _, number = str(found).rpartition("/")
    if prefix != _FORMAT_PREFIX or not number.isdigit():
        raise FormatVersionError(f"{path} has format {found!r}; this code reads {training.MODEL_FORMAT!r}")
    if int(number) > int(_FORMAT_NUMBER):
        raise FormatVersionError(f"{path} has format {found!r}, newer than this code reads "
                                 f"({training.MODEL_FORMAT!r}): upgrade mp-tensor-zoo to load it")
    if int(number) != int(_FORMAT_NUMBER):
        raise FormatVersionError(f"{path} has the old format {found!r}; this code reads {training.MODEL_FORMAT!r}")
    return info


def _load_folder(name: str, version: str | None, source: str, folder: Path,
                 hashes: dict[str, str] | None) -> ZooModel:
    """Verify every file of a model folder against `hashes` (and the weights against the config), then build
    the network from the verified bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    config_path, weights_path, card_path = (folder / f for f in MODEL_FILES)
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{folder} lacks {training.CONFIG_FILE} or {training.WEIGHTS_FILE}: not a model folder")
    hashes = hashes or {}
    info = _read_config(_verified_bytes(config_path, hashes.get(training.CONFIG_FILE)), config_path)
    weights = _verified_bytes(weights_path, hashes.get(training.WEIGHTS_FILE))
    recorded = info["weights"]["sha256"]
    if sha256_bytes(weights) != recorded:
        raise hub.ChecksumMismatchError(f"{weights_path} has sha256 {sha256_bytes(weights)}, but {config_path} "
                                        f"records {recorded}: the weights were not loaded")
    card = None
    if card_path.is_file():
        card = _verified_bytes(card_path, hashes.get(CARD_FILE)).decode("utf-8")
    elif CARD_FILE in hashes:
        raise FileNotFoundError(f"{card_path} is missing")
    try:
        state = load_safetensors(weights)  # safetensors parses a header and raw buffers: no code can run
    except SafetensorError as err:
        raise ValueError(f"{weights_path} is not a safetensors file ({err}); refusing to read it any other way") \
            from None
    net = training.network(info)
    net.load_state_dict(state, strict=True)
    return ZooModel(name=name, version=version, source=source, path=folder, info=info, net=net.eval(), card=card)
