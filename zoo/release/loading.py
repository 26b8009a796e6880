"""`zoo.load(name, version=None)`: a released model, verified, ready to `.predict` structures.

Resolution (zoo.release.resolution), first hit wins:
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

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from zoo import properties
from zoo.core import paths
from zoo.nn import model_files
from zoo.release import applicability, inputs, model_card, registry
from zoo.release.inputs import InputLimits
from zoo.release.resolution import (  # noqa: F401 (the errors zoo.load raises are named here too)
    FormatVersionError,
    ModelNotCachedError,
    Resolved,
    resolve,
    verified_files,
)

THREADS_ENV = "ZOO_THREADS"  # torch intra-op threads for building and running a model (default 1: models.serving)
PREDICT_BATCH = 32
# A stored buffer that disagrees with the config points at the config field it is computed from.
_BUFFER_FIELDS = {"output_scale": "output_scale", "output_shift": "output_shift", "frequencies": "r_cut"}


class CheckpointMismatchError(ValueError):
    """The weights are not those of the network the config describes."""


class PredictionError(ValueError):
    """The network gave no usable value for a structure (non-finite numbers)."""


def serving_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


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
             (GPa); dielectric {'electronic', 'ionic', 'total': Tensor} (total = electronic + ionic exactly; a 1.0.0
             model gives {'electronic'} only); piezo {'total': PiezoTensor} (C/m^2); phonon {'dos': PhononDos} (THz,
             3N-normalised states/THz per cell, pymatgen's units)
    derived  zoo.core.derived quantities (units in zoo.core.derived.UNITS; dielectric: per part, keyed
             <quantity>_<part>, and refractive_index sqrt(eps_poly) of the electronic part); {} with `derived_error`
             set where undefined (e.g. a singular predicted stiffness)
    raw      the Voigt form (dielectric: one row per part, in the order of `tensors`), or the max-normalised DOS on
             PHONON_GRID_CM
    spread   for an ensemble model (config.json lists ensemble_seeds): the standard deviation of the members'
             predictions, in the form of `raw` (Voigt, or the DOS); None for a single network
    warnings zoo.release.applicability.Flag (code, message) for each reason to distrust the number: outside the
             training domain, a metal for the dielectric model, an unstable stiffness, a phonon spectrum past the
             grid, ... (empty: none found)
    """

    source: str
    structure: Any
    property: str
    units: str
    tensors: Mapping[str, Any]
    derived: dict[str, Any]
    derived_error: str | None = None
    raw: np.ndarray = field(repr=False, default=None)  # Voigt form, or the max-normalised DOS on the phonon grid
    spread: np.ndarray | None = field(repr=False, default=None)  # ensembles: std across members, same form as raw
    warnings: tuple[applicability.Flag, ...] = ()

    @property
    def value(self):
        """The predicted pymatgen object (the single entry of `tensors`)."""
        return self.tensors[next(iter(self.tensors))]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the Voigt form (or DOS), the derived quantities and the warnings."""
        spec = properties.get(self.property)
        out = {"source": self.source, "formula": self.structure.composition.reduced_formula,
               "property": self.property, "units": self.units, "parts": list(self.tensors),
               "derived": self.derived, "derived_units": {k: _units(k, spec) for k in self.derived},
               "warnings": [flag.as_dict() for flag in self.warnings], **spec.prediction_dict(self.raw)}
        if self.spread is not None:
            out["ensemble_spread"] = self.spread.tolist()  # std across ensemble members, same form as the value
        if self.derived_error:
            out["derived_error"] = self.derived_error
        return out


def _units(key: str, spec: properties.PropertySpec) -> str:
    """Units of a derived key; per-part keys (dielectric eps_poly_total) take their base quantity's."""
    from zoo.core import derived

    base, _, part = key.rpartition("_")
    return derived.UNITS.get(key) or (derived.UNITS.get(base, "") if part in spec.tensor_parts else "")


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
                try:
                    if isinstance(self.net, models.Ensemble) and self.net.has_spread:
                        mean, spread = self.net.predict_with_spread(batch)
                        outputs.append(mean.numpy())
                        spreads.append(spread.numpy())
                    else:
                        outputs.append(self.net.predict_cartesian(batch).numpy())
                except models.NonFiniteOutputError as err:
                    raise PredictionError(f"{labelled[start + err.graphs[0]][0]}: the network produced non-finite "
                                          "values; no prediction is returned") from None
                if progress is not None:
                    progress(min(start + batch_size, len(labelled)), len(labelled))
        values = np.concatenate(outputs) if outputs else np.zeros((0,))
        spread = np.concatenate(spreads) if spreads else [None] * len(values)
        parts = self.net.spec.output_parts(self.net.parts)
        out = [_prediction(self.net.spec, label, structure, value, member_spread, self.training_domain, warn, parts)
               for (label, structure), value, member_spread in zip(labelled, values, spread)]
        return out[0] if single else out


def _prediction(spec: properties.PropertySpec, label: str, structure, value: np.ndarray,
                spread: np.ndarray | None = None, domain: applicability.TrainingDomain | None = None,
                warn: applicability.ApplicabilityLimits = applicability.ApplicabilityLimits(),
                parts: tuple[str, ...] | None = None) -> Prediction:
    """The Prediction of one structure from the network's float64 output (``MattenNet.predict_cartesian``: Cartesian,
    with a parts axis holding `parts` for a property with several, or the DOS)."""
    from zoo.core import tensors

    if not np.isfinite(value).all():
        raise PredictionError(f"{label}: the network produced non-finite values; no prediction is returned")
    error = None
    raw, objects = spec.prediction_parts(value, structure, parts)
    try:
        quantities = spec.prediction_derived(raw, value, structure, parts)
    except ValueError as err:  # e.g. a singular stiffness: the tensor stands, its derived quantities do not
        quantities, error = {}, str(err)
    if spread is not None and spec.is_tensor:
        # Voigt form of the members' Cartesian standard deviation (the Voigt map only selects components)
        spread = tensors.cartesian_to_voigt(spread, spec.voigt_kind)
    domain = domain or applicability.TrainingDomain(None, "not given")
    flags = applicability.prediction_flags(spec, structure, quantities, error, domain, warn, raw)
    return Prediction(label, structure, spec.name, spec.units, _Parts(objects), quantities, error, np.asarray(raw),
                      spread, flags)


# ------------------------------------------------------------------------------------------------ loading
def load(name: str, version: str | None = None, **options) -> ZooModel:
    """The model `name` ('matten-elastic', ...) at `version` ('1.0.0'; None: the newest found; module docstring).

    Options, as for `resolve`: store, registry_path, cache_dir, endpoint, token, organisation.
    Errors: UnknownModelError (with close matches), VersionNotFoundError, ModelNotCachedError (offline and not
    cached; it lists the versions available locally), zoo.release.hub.ChecksumMismatchError (file and both hashes),
    FormatVersionError, zoo.nn.model_files.ConfigError, CheckpointMismatchError, zoo.release.hub.HubError.
    """
    return load_resolved(resolve(name, version, **options))


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
    # The networks of an ensemble of one network per part (zoo.nn.models.build with member_parts) keep their output
    # normalisation in their weights only: the config computes no scale or shift to compare them with.
    stored_only = ("output_scale", "output_shift") if len(getattr(net, "groups", ())) > 1 else ()
    differ = [key for key in sorted(buffers & set(expected)) if not key.endswith(stored_only)
              and not torch.equal(state[key].to(expected[key].dtype), expected[key])]
    if differ:
        fields = sorted({f for part, f in _BUFFER_FIELDS.items() for key in differ if key.endswith(part)})
        raise CheckpointMismatchError(
            f"{config_path} does not describe {weights_path}: the stored {differ[0]} differs from the one the config "
            f"computes{' (config field ' + ', '.join(fields) + ')' if fields else ''}; was the config edited?")
