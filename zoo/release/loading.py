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

Before any network runs, every input is read and checked (zoo.release.inputs: a bad one raises `InputError`
naming it), and the config is checked field by field (zoo.nn.model_files) and against the weights: a tensor of
another shape, or a buffer the config computes differently (output_scale, output_shift, the radial frequencies of
r_cut), refuses the model with one line. Predictions are in the Cartesian frame of the structure as given (the
networks are rotation-equivariant), and each carries its applicability warnings (zoo.release.applicability).

Nothing heavy is imported with this module: torch, e3nn and the network modules come in when a model is built,
pymatgen's tensor classes when a prediction's `tensors` are first read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from zoo import properties
from zoo.core import paths
from zoo.core.io import sha256_bytes, write_json
from zoo.nn import model_files
from zoo.release import applicability, hub, inputs, model_card, registry
from zoo.release.inputs import InputError, InputLimits

CACHE_ENV = "ZOO_CACHE"
ORGANISATION_ENV = "ZOO_HUB_ORG"
THREADS_ENV = "ZOO_THREADS"  # torch intra-op threads for building and running a model (default 1: models.serving)
CARD_FILE = model_card.CARD_FILE
MODEL_FILES = (model_files.CONFIG_FILE, model_files.WEIGHTS_FILE, CARD_FILE)
_FORMAT_PREFIX, _, _FORMAT_NUMBER = model_files.MODEL_FORMAT.rpartition("/")
PREDICT_BATCH = 32
_REFS_FILE = "zoo-versions.json"  # in the Hub cache: version -> commit of unregistered versions seen online
# A stored buffer that disagrees with the config points at the config field it is computed from.
_BUFFER_FIELDS = {"output_scale": "output_scale", "output_shift": "output_shift", "frequencies": "r_cut"}


class ModelNotCachedError(hub.HubUnavailable):
    """The model is in no local source and the Hub cannot be reached."""


class FormatVersionError(ValueError):
    """The model files were written in a format this code does not read."""


class CheckpointMismatchError(ValueError):
    """The weights are not those of the network the config describes."""


class PredictionError(ValueError):
    """The network gave no usable value for a structure (non-finite numbers)."""


def serving_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def default_cache() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mp-tensor-zoo"


# ------------------------------------------------------------------------------------------------ the model
class _Parts(Mapping):
    """part -> pymatgen object, each built when first read (pymatgen's tensor modules take a second to import)."""

    def __init__(self, builders: dict[str, Callable[[], Any]]):
        self._builders, self._built = builders, {}

    def __getitem__(self, part: str) -> Any:
        if part not in self._built:
            self._built[part] = self._builders[part]()
        return self._built[part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"<{', '.join(self._builders)}: pymatgen objects>"


@dataclass(frozen=True, eq=False)
class Prediction:
    """One structure's prediction.

    tensors  pymatgen objects per part (a mapping, each built on first access): elastic {'total': ElasticTensor}
             (GPa); dielectric {'electronic': Tensor} (the part the model predicts; ionic and total are not
             predicted); piezo {'total': PiezoTensor} (C/m^2); phonon {'dos': PhononDos} (THz, 3N-normalised
             states/THz per cell, pymatgen's units)
    derived  zoo.core.derived quantities (units in zoo.core.derived.UNITS; dielectric includes refractive_index
             sqrt(eps_poly) of the electronic part); {} with `derived_error` set where undefined (e.g. a singular
             predicted stiffness)
    spread   for an ensemble model (config.json lists ensemble_seeds): the standard deviation of the members'
             predictions, in the form of `raw` (Voigt, or the DOS); None for a single network
    warnings zoo.release.applicability.Flag (code, message) for each reason to distrust the number: outside the
             training domain, a metal for the dielectric model, an unstable stiffness, ... (empty: none found)
    """

    source: str
    structure: Any
    property: str
    units: str
    tensors: Mapping[str, Any]
    derived: dict[str, Any]
    derived_error: str | None = None
    raw: np.ndarray = field(repr=False, default=None)  # Voigt form, or the max-normalised DOS on PHONON_GRID_CM
    spread: np.ndarray | None = field(repr=False, default=None)  # ensembles: std across members, same form as raw
    warnings: tuple[applicability.Flag, ...] = ()

    @property
    def value(self):
        """The predicted pymatgen object (the single entry of `tensors`)."""
        return self.tensors[next(iter(self.tensors))]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the Voigt form (or DOS), the derived quantities and the warnings."""
        from zoo.core import derived

        spec = properties.get(self.property)
        out = {"source": self.source, "formula": self.structure.composition.reduced_formula,
               "property": self.property, "units": self.units, "part": next(iter(self.tensors)),
               "derived": self.derived, "derived_units": {k: derived.UNITS.get(k, "") for k in self.derived},
               "warnings": [flag.as_dict() for flag in self.warnings]}
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


@dataclass(frozen=True, eq=False)
class ZooModel:
    """A loaded model: `predict`, its `card` (zoo.release.model_card.ModelCard, None if the folder has none; print
    it for a summary) and where it came from."""

    name: str
    version: str | None
    source: str
    path: Path
    info: dict[str, Any]
    net: Any = field(repr=False)  # zoo.nn.models.MattenNet or Ensemble
    card: model_card.ModelCard | None = field(repr=False)

    @property
    def property(self) -> str:
        return self.net.config.property

    @cached_property
    def training_domain(self) -> applicability.TrainingDomain:
        """The training data's elements and ranges (zoo.release.applicability), or why they are unknown."""
        dataset = self.info["dataset"]
        candidates = [paths.DATA_DIR / "hub" / "datasets" / dataset["name"],
                      Path.cwd() / "data" / "hub" / "datasets" / dataset["name"],
                      registry.LocalStore().folder(dataset["name"], dataset["version"], kind="datasets")]
        return applicability.training_domain(self.info, candidates)

    def predict(self, structures, batch_size: int = PREDICT_BATCH, progress=None, *,
                limits: InputLimits | None = None,
                warn: applicability.ApplicabilityLimits = applicability.ApplicabilityLimits()):
        """Predictions for a pymatgen Structure, an ASE Atoms (when ase is installed), a CIF/POSCAR path or CIF/POSCAR
        text, or a list of them; a list gives a list. Every input is checked first (InputError names the first bad
        one; `limits`: zoo.release.inputs.InputLimits). `progress`: a callable(n_done, n_total) after each batch."""
        from zoo.nn import graphs, models

        single = not isinstance(structures, (list, tuple))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        labelled = inputs.read_structures([structures] if single else structures, limits or InputLimits())
        r_cut = self.net.config.r_cut
        cache = graphs.GraphCache(r_cut)
        built = []
        for label, structure in labelled:
            graph = cache.graph(structure)
            inputs.check_neighbours(label, structure, graph.edge_index[1], r_cut)
            built.append(graph)
        outputs, spreads = [], []
        with models.serving(serving_threads()):
            for start in range(0, len(labelled), batch_size):
                batch = graphs.GraphBatch.collate(built[start:start + batch_size])
                if isinstance(self.net, models.Ensemble):
                    mean, spread = self.net.predict_with_spread(batch)
                    outputs.append(mean.numpy())
                    spreads.append(spread.numpy())
                else:
                    outputs.append(self.net.predict_cartesian(batch).numpy())
                if progress is not None:
                    progress(min(start + batch_size, len(labelled)), len(labelled))
        values = np.concatenate(outputs) if outputs else np.zeros((0,))
        spread = np.concatenate(spreads) if spreads else [None] * len(values)
        out = [_prediction(self.net.spec, label, structure, value, member_spread, self.training_domain, warn)
               for (label, structure), value, member_spread in zip(labelled, values, spread)]
        return out[0] if single else out


def _prediction(spec: properties.PropertySpec, label: str, structure, value: np.ndarray,
                spread: np.ndarray | None = None, domain: applicability.TrainingDomain | None = None,
                warn: applicability.ApplicabilityLimits = applicability.ApplicabilityLimits()) -> Prediction:
    from zoo.core import derived, tensors

    if not np.isfinite(value).all():
        raise PredictionError(f"{label}: the network produced non-finite values; no prediction is returned")
    error, quantities = None, {}
    if spec.is_tensor:
        raw = tensors.cartesian_to_voigt(value, spec.voigt_kind)
    else:
        raw = value
    try:
        if spec.name == "elastic":
            quantities = derived.elastic_properties(raw)
        elif spec.name == "dielectric":
            quantities = derived.dielectric_tensor_properties(value)
            quantities["refractive_index"] = derived.refractive_index(quantities["eps_poly"])
        elif spec.name == "piezo":
            quantities = derived.piezo_properties(raw)
        else:
            quantities = derived.phonon_properties(properties.PHONON_GRID_CM, value, len(structure),
                                                   float(structure.composition.weight))
    except ValueError as err:  # e.g. a singular stiffness: the tensor stands, its derived quantities do not
        quantities, error = {}, str(err)
    if spread is not None and spec.is_tensor:
        # Voigt form of the members' Cartesian standard deviation (the Voigt map only selects components)
        spread = tensors.cartesian_to_voigt(spread, spec.voigt_kind)
    domain = domain or applicability.TrainingDomain(None, "not given")
    flags = applicability.prediction_flags(spec.name, structure, quantities, error, domain, warn)
    return Prediction(label, structure, spec.name, spec.units, _Parts({_part(spec): _builder(spec, value, structure)}),
                      quantities, error, np.asarray(raw), spread, flags)


def _part(spec: properties.PropertySpec) -> str:
    return spec.target_part if spec.is_tensor else "dos"


def _builder(spec: properties.PropertySpec, value: np.ndarray, structure) -> Callable[[], Any]:
    """The pymatgen object of a predicted value, built when called."""
    def build():
        from zoo.core import derived

        if spec.name == "elastic":
            from pymatgen.analysis.elasticity import ElasticTensor

            return ElasticTensor(value)
        if spec.name == "dielectric":
            from pymatgen.core.tensors import Tensor

            return Tensor(value)
        if spec.name == "piezo":
            from pymatgen.analysis.piezo import PiezoTensor

            return PiezoTensor(value)
        from pymatgen.phonon.dos import PhononDos

        dos_3n = derived.normalise_dos_to_3n(properties.PHONON_GRID_CM, value, len(structure))
        return PhononDos(properties.PHONON_GRID_CM / properties.CM_PER_THZ, dos_3n * properties.CM_PER_THZ)

    return build


# ------------------------------------------------------------------------------------------------ loading
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


def load(name: str, version: str | None = None, **options) -> ZooModel:
    """The model `name` ('matten-elastic', ...) at `version` ('1.0.0'; None: the newest found; module docstring).

    Options, as for `resolve`: store, registry_path, cache_dir, endpoint, token, organisation.
    Errors: UnknownModelError (with close matches), VersionNotFoundError, ModelNotCachedError (offline and not
    cached; it lists the versions available locally), zoo.release.hub.ChecksumMismatchError (file and both hashes),
    FormatVersionError, zoo.nn.model_files.ConfigError, CheckpointMismatchError, zoo.release.hub.HubError.
    """
    return load_resolved(resolve(name, version, **options))


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
        registry.version_key(version)
    local = registry.LocalStore(store)
    known_registry = registry.read_registry(registry_path)
    if name not in known_models(known_registry, local):
        raise registry.unknown_model(name, known_models(known_registry, local))

    stored = local.versions(name)
    entry = known_registry.models.get(name)
    prop = entry.property if entry else None
    if version is None and (stored or (entry and entry.releases)):
        # The newest version the local store or the registry knows; on a tie the local store's copy is used.
        version = max([*stored, *(entry.releases if entry else ())], key=registry.version_key)
    if version in stored:
        return Resolved(name, version, "local store", local.folder(name, version), stored[version], prop)

    repo_id = entry.repo_id if entry else \
        f"{organisation or os.environ.get(ORGANISATION_ENV) or known_registry.hub_organisation}/{name}"
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    refs_path = cache / "models" / repo_id / _REFS_FILE
    seen = json.loads(refs_path.read_text(encoding="utf-8")) if refs_path.is_file() else {}
    release = (entry.releases.get(version) if version else entry.latest()) if entry else None

    def offline(err: hub.HubUnavailable) -> ModelNotCachedError:
        shipped = [v for v, r in (entry.releases if entry else {}).items()
                   if r.shipped_folder(known_registry.path) is not None
                   and r.shipped_folder(known_registry.path).is_dir()]
        here = [f"{v} (local store)" for v in stored] + [f"{v} (shipped)" for v in shipped] + \
            [f"{v} (Hub cache)" for v in seen]
        return ModelNotCachedError(
            f"{name}{' ' + version if version else ''} is not in the local store ({local.root}), not shipped with "
            f"the code, not in the Hub cache ({cache}), and the Hub cannot be reached: {err}. Versions available "
            f"locally: {', '.join(here) or 'none'}")

    with hub.deadline():
        if release is not None:
            shipped = release.shipped_folder(known_registry.path)
            if shipped is not None and shipped.is_dir():
                return Resolved(name, release.version, "shipped", shipped, release.files, prop)
            # A release not yet on a Hub (revision null) is fetched by its version tag, still checked file by file.
            try:
                files = _download(repo_id, release.revision or hub.version_tag(release.version), cache, endpoint,
                                  token, release.files)
            except hub.HubUnavailable as err:
                raise offline(err) from None
            return Resolved(name, release.version, "hub", files, release.files, prop)
        try:
            online = hub.list_versions(repo_id, "model", endpoint=endpoint, token=token)
        except hub.HubNotFoundError:
            online = {}
        except hub.HubUnavailable as err:
            cached = version or (max(seen, key=registry.version_key) if seen else None)
            if cached in seen:
                try:
                    return Resolved(name, cached, "hub cache",
                                    _download(repo_id, seen[cached], cache, endpoint, token, None), None, prop)
                except hub.HubUnavailable:
                    pass  # a file of that version never made it into the cache
            raise offline(err) from None
        if not online or (version is not None and version not in online):
            available = sorted(set(stored) | set(online) | set(entry.releases if entry else ()),
                               key=registry.version_key)
            raise registry.VersionNotFoundError(
                f"{name} has no version {version or '(any)'}: local store {sorted(stored) or 'none'}, registry "
                f"{sorted(entry.releases) if entry and entry.releases else 'none'}, Hub {repo_id} "
                f"{list(online) or 'none'}" + (f"; available: {', '.join(available)}" if available else ""))
        chosen = version or list(online)[-1]
        files = _download(repo_id, online[chosen], cache, endpoint, token, None)
    write_json(refs_path, {**seen, chosen: online[chosen]})
    return Resolved(name, chosen, "hub", files, None, prop)


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


def load_resolved(found: Resolved) -> ZooModel:
    """Verify every file of a resolved model, then build the network from the verified bytes."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from zoo.nn import models

    files = verified_files(found)
    config_path, weights_path = found.folder / model_files.CONFIG_FILE, found.folder / model_files.WEIGHTS_FILE
    try:
        state = load_safetensors(files.weights)  # safetensors parses a header and raw buffers: no code can run
    except SafetensorError as err:
        raise ValueError(f"{weights_path} is not a safetensors file ({err}); refusing to read it any other way") \
            from None
    try:
        with models.serving(serving_threads()):
            net = models.network(files.info)
    except ValueError as err:  # fields that are each in range but do not fit together (ModelConfig)
        raise model_files.ConfigError(f"{config_path}: model_config {err}") from None
    _check_state(net, state, config_path, weights_path)
    net.load_state_dict(state, strict=True)
    return ZooModel(name=found.name, version=found.version, source=found.source, path=found.folder, info=files.info,
                    net=net.eval(), card=files.card)


def _check_state(net, state: dict[str, Any], config_path: Path, weights_path: Path) -> None:
    """CheckpointMismatchError, in one line, unless the weights hold exactly the tensors of the configured network,
    in its shapes, with the fixed buffers (computed from the config) equal to the ones stored."""
    import torch

    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    where = f"{weights_path} does not fit {config_path}"
    if missing or unexpected:
        raise CheckpointMismatchError(f"{where}: {len(missing)} tensor(s) the config needs are missing"
                                      f"{' (' + missing[0] + ', ...)' if missing else ''}, {len(unexpected)} are "
                                      f"unexpected{' (' + unexpected[0] + ', ...)' if unexpected else ''}")
    shapes = [(key, tuple(state[key].shape), tuple(tensor.shape)) for key, tensor in expected.items()
              if tuple(state[key].shape) != tuple(tensor.shape)]
    if shapes:
        key, stored, needed = shapes[0]
        raise CheckpointMismatchError(f"{where}: {key} has shape {stored} in the weights and {needed} in the "
                                      f"configured network ({len(shapes)} tensor(s) differ)")
    buffers = {name for name, _ in net.named_buffers()}
    differ = [key for key in sorted(buffers & set(expected))
              if not torch.equal(state[key].to(expected[key].dtype), expected[key])]
    if differ:
        fields = sorted({f for part, f in _BUFFER_FIELDS.items() for key in differ if key.endswith(part)})
        raise CheckpointMismatchError(
            f"{config_path} does not describe {weights_path}: the stored {differ[0]} differs from the one the config "
            f"computes{' (config field ' + ', '.join(fields) + ')' if fields else ''}; was the config edited?")
