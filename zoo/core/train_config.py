"""The training schemas of params.yaml (section ``train``): TrainSettings, how one network is trained, and
TrainConfig, the profiles and their resolution per property (per_property overrides, extends). Read through
zoo.core.config, which re-exports every name here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo.core.schema_checks import check_int, check_keys, check_positive, is_real

LOSSES = ("mse", "block_norm", "mandel", "mse_mean_frequency")
RESERVED_MODEL_FIELDS = ("property", "seed", "avg_num_neighbors", "output_scale", "output_shift")


STRATEGIES = ("auto", "ddp")


@dataclass(frozen=True)
class TrainSettings:
    """How to train (params.yaml, section ``train``, one profile resolved for one property: TrainConfig.resolve).

    max_epochs               upper limit on epochs
    batch_size               structures per optimiser step, over all processes: under data-parallel training each
                             of the devices x num_nodes processes takes an equal share of every step's structures
                             (batch_size must be a multiple of that), so the optimisation does not depend on the
                             number of processes (zoo.nn.training's docstring: 'Data-parallel training')
    learning_rate            Adam's initial learning rate
    plateau_factor           ReduceLROnPlateau: multiply the rate by this when the validation loss stalls ...
    plateau_patience         ... for this many epochs
    min_learning_rate        the rate never goes below this
    early_stopping_patience  stop after this many epochs without a better validation loss
    seed                     model initialisation and epoch permutations
    accelerator              Lightning accelerator: 'auto' (a GPU when there is one), 'cpu', 'gpu'
    devices                  processes per node, one device each (GPUs, or CPU processes with accelerator 'cpu')
    num_nodes                machines; devices x num_nodes > 1 is data-parallel training and needs strategy 'ddp'
    strategy                 Lightning strategy: 'auto' (one process) or 'ddp' (one process per device, launched by
                             Lightning, torchrun or SLURM; README, 'Training on a GPU or a cluster')
    threads                  torch intra-op threads on CPU (null: leave torch's default)
    deterministic            torch.use_deterministic_algorithms (True, False, or 'warn' where an op has no
                             deterministic kernel, e.g. some CUDA scatter ops)
    progress_bar             Lightning's progress bar
    loss                     'mse' (per-block normalised squared error), 'block_norm' (mean of per-block error
                             norms, robust to heavy-tailed targets), 'mandel' (squared Frobenius = Mandel norm of
                             the Cartesian error) or 'mse_mean_frequency' (phonon: mse plus the squared relative
                             error of the mean frequency); see ``zoo.nn.training.Loss``
    model                    ModelConfig fields (zoo.nn.models) other than property, seed, avg_num_neighbors and the
                             output normalisation, which training sets from the data (zoo.nn.training checks the
                             names against ModelConfig)
    ensemble_size            networks trained, with seeds seed, seed + 1, ...; more than one makes the model a
                             zoo.nn.models.Ensemble predicting their mean (and spread)
    separate_parts           (a property with several predicted parts, dielectric) one network per part, each part
                             selected on its own validation loss, instead of one network with a head per part;
                             ensemble_size networks per part
    loss_irrep_weights       (a tensor property) irrep -> weight of that irrep's blocks in the loss, e.g. {0e: 2}
                             (the isotropic blocks, which carry the bulk and shear moduli, count twice); irreps
                             not named weigh 1, and the weights are scaled to a mean of 1 over the blocks

    A model's config.json records these settings; ``from_record`` reads those of models trained before a setting
    existed (RECORDED_DEFAULTS).
    """

    max_epochs: int
    batch_size: int
    learning_rate: float
    plateau_factor: float
    plateau_patience: int
    min_learning_rate: float
    early_stopping_patience: int
    seed: int
    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    threads: int | None
    deterministic: bool | str
    progress_bar: bool
    loss: str
    model: Mapping[str, Any]
    ensemble_size: int
    separate_parts: bool
    loss_irrep_weights: Mapping[str, float]

    def __post_init__(self):
        # Longer than ~60 lines: one check per setting, each with its own message.
        for name in ("max_epochs", "batch_size", "plateau_patience", "early_stopping_patience", "ensemble_size",
                     "devices", "num_nodes"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.seed, "seed", minimum=0)
        if self.threads is not None:
            check_int(self.threads, "threads", minimum=1)
        for name in ("learning_rate", "min_learning_rate"):
            check_positive(getattr(self, name), name)
        if not is_real(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be a number in (0, 1), got {self.plateau_factor!r}")
        if self.accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
            raise ValueError(f"accelerator must be one of auto, cpu, gpu, cuda, mps, got {self.accelerator!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r} (Lightning's spawning "
                             "strategies cannot carry the training module, which is defined when training runs)")
        if self.world_size > 1 and self.strategy != "ddp":
            raise ValueError(f"devices x num_nodes = {self.world_size} processes need strategy 'ddp', got "
                             f"{self.strategy!r}")
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of devices x num_nodes = "
                             f"{self.world_size}: each process takes an equal share of a step's structures")
        if self.deterministic not in (True, False, "warn"):
            raise ValueError(f"deterministic must be true, false or 'warn', got {self.deterministic!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not isinstance(self.separate_parts, bool):
            raise ValueError(f"separate_parts must be true or false, got {self.separate_parts!r}")
        if not isinstance(self.loss_irrep_weights, Mapping) or not all(
                isinstance(irrep, str) and is_real(weight) and weight > 0
                for irrep, weight in self.loss_irrep_weights.items()):
            raise ValueError("loss_irrep_weights must map irreps (e.g. '0e') to positive numbers, got "
                             f"{self.loss_irrep_weights!r}")
        object.__setattr__(self, "loss_irrep_weights", dict(self.loss_irrep_weights))
        if not isinstance(self.model, Mapping):
            raise ValueError(f"model must be a mapping of ModelConfig fields, got {self.model!r}")
        reserved = sorted(set(self.model) & set(RESERVED_MODEL_FIELDS))
        if reserved:
            raise ValueError(f"model must not set {reserved}: training derives them (seed comes from settings.seed)")
        object.__setattr__(self, "model", dict(self.model))

    @property
    def world_size(self) -> int:
        """Training processes: devices x num_nodes."""
        return self.devices * self.num_nodes

    def single_process(self) -> TrainSettings:
        """These settings in one process: the same steps (batch_size counts the structures of all processes), so
        the same run up to the order of float summations. For stages that write their outputs from one process."""
        return dataclasses.replace(self, devices=1, num_nodes=1, strategy="auto")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> TrainSettings:
        """Settings from a resolved profile mapping (TrainConfig.resolve): every key required."""
        if not isinstance(section, Mapping):
            raise ValueError(f"a training profile must be a mapping of settings, got {section!r}")
        return cls(**check_keys(cls, section, "training profile"))

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any]) -> TrainSettings:
        """Settings as a model's config.json (or a metrics file) records them; a setting added after the model was
        trained takes the value every earlier model was trained with (RECORDED_DEFAULTS)."""
        if not isinstance(recorded, Mapping):
            raise ValueError(f"recorded training settings must be a mapping, got {recorded!r}")
        return cls.from_params({**RECORDED_DEFAULTS, **recorded})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings that did not exist when some shipped models were trained, with the value those were trained with: one
# network, one process on one device. Only ``TrainSettings.from_record`` uses them:
# a profile in params.yaml must write every setting.
RECORDED_DEFAULTS: dict[str, Any] = {"ensemble_size": 1, "devices": 1, "num_nodes": 1, "strategy": "auto",
                                     "separate_parts": False, "loss_irrep_weights": {}}

PER_PROPERTY_KEY = "per_property"
EXTENDS_KEY = "extends"


@dataclass(frozen=True)
class TrainConfig:
    """profile: the one `dvc repro` trains with; profiles: name -> a mapping of TrainSettings fields, plus two
    optional keys that ``resolve`` applies:

    per_property  {<property>: {settings}}: for that property these replace the profile's own (``model`` fields
                  one by one), so a profile can give the DOS its own loss or a small data set more epochs
    extends       the name of another profile: this profile starts, for each property, from that profile's resolved
                  settings (its per-property choices included), and what it writes itself replaces them. The gpu
                  profile extends release: it writes its hardware, budget and model size, and takes release's
                  per-property choices (loss, ensemble size, output constraints) whatever they become.

    Resolution for property p of a profile P extending Q: resolve(Q, p), then P's own settings, then
    P.per_property[p]; later ones win, ``model`` merged field by field.

    workers: processes training independent single-process networks side by side (an ensemble's members, the
    evaluate stage's learning-curve points and non-equivariant baseline; zoo.nn.training.parallel). Not a training
    setting: the networks are the same for any value.
    """

    profile: str
    profiles: Mapping[str, Mapping[str, Any]]
    workers: int

    def __post_init__(self) -> None:
        check_int(self.workers, "train.workers", 1)
        if not isinstance(self.profiles, Mapping) or not self.profiles:
            raise ValueError("the train section needs 'profiles', a mapping of profile name -> settings")
        if self.profile not in self.profiles:
            raise ValueError(f"train.profile must be one of {sorted(self.profiles)}, got {self.profile!r}")
        for name in self.profiles:
            self._chain(name)  # every profile's chain is checked: unknown parents, cycles, malformed keys

    def _chain(self, name: str) -> list[str]:
        """[name, its parent, the parent's parent, ...], checked."""
        chain = [name]
        while True:
            profile = self.profiles.get(chain[-1])
            if not isinstance(profile, Mapping):
                raise ValueError(f"profile {chain[-1]} must be a mapping of settings, got {profile!r}")
            per_property = profile.get(PER_PROPERTY_KEY)
            if per_property is not None and not (isinstance(per_property, Mapping) and
                                                 all(isinstance(v, Mapping) for v in per_property.values())):
                raise ValueError(f"profile {chain[-1]}: {PER_PROPERTY_KEY} must map property names to mappings of "
                                 f"settings, got {per_property!r}")
            parent = profile.get(EXTENDS_KEY)
            if parent is None:
                return chain
            if parent not in self.profiles:
                raise ValueError(f"profile {chain[-1]}: {EXTENDS_KEY} names {parent!r}, which is not a profile "
                                 f"({sorted(self.profiles)})")
            if parent in chain:
                raise ValueError(f"profiles extend each other in a cycle: {' -> '.join(chain + [parent])}")
            chain.append(parent)

    def resolve(self, name: str, property_name: str | None = None) -> dict[str, Any]:
        """The settings mapping of profile `name` for `property_name` (None: no per-property settings applied)."""
        if name not in self.profiles:
            raise ValueError(f"profile must be one of {sorted(self.profiles)}, got {name!r}")
        resolved: dict[str, Any] = {}
        for profile in reversed(self._chain(name)):
            own = {k: v for k, v in self.profiles[profile].items() if k not in (PER_PROPERTY_KEY, EXTENDS_KEY)}
            per_property = (self.profiles[profile].get(PER_PROPERTY_KEY) or {}).get(property_name) or {}
            resolved = _merged(_merged(resolved, own), per_property)
        return resolved

    def per_property_names(self) -> set[str]:
        """Every property any profile's per_property names (for the caller to check against zoo.properties)."""
        return {prop for profile in self.profiles.values() for prop in (profile.get(PER_PROPERTY_KEY) or {})}


def _merged(settings: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with `changes` applied; two ``model`` mappings merge field by field."""
    merged = {**settings, **changes}
    if isinstance(settings.get("model"), Mapping) and isinstance(changes.get("model"), Mapping):
        merged["model"] = {**settings["model"], **changes["model"]}
    return merged
