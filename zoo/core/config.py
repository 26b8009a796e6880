"""The typed configuration: one schema per params.yaml section, the one place that reads the params file.

params.yaml is where every pipeline setting's value is written, once: the schemas here have no defaults (a missing
key is refused, naming it, and so is an unknown one: a typo would otherwise silently do nothing). DVC tracks the
file, so what a stage reads is what ``dvc status`` compares. Sections and who reads them:

    symmetry   symprec, angle_tolerance (spglib), neumann_tolerance: clean, validate, build (the card), evaluate,
               and ``zoo audit`` read this one section
    fetch      source ('snapshot' | 'mp-api'), snapshot_root, mp_api (MPApiConfig)
    clean      CleanConfig; validate: ValidateConfig; build: BuildConfig
    train      TrainConfig: profile and profiles (each resolved per property to a TrainSettings: per_property
               overrides, extends)
    evaluate   EvaluateConfig (composition_gbm: GBMSettings); publish: PublishConfig
    release    ReleaseConfig: the profile and the version of each release `make release` ships (releases/dvc.yaml)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.core import paths, symmetry
from zoo.core.versions import check_version

SECTIONS = ("properties", "symmetry", "fetch", "clean", "validate", "build", "train", "evaluate", "publish",
            "release")


# ------------------------------------------------------------------------------------------------- checks
def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(value: Any, name: str) -> float:
    if not is_real(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def check_non_negative(value: Any, name: str) -> float:
    if not is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_keys(cls: type, section: Any, where: str) -> dict[str, Any]:
    """`section` as a dict with exactly the fields of dataclass `cls` that have no default (and any that have).
    A schema with an ``OTHER_KEYS`` field takes the section's other keys into that field, as a mapping, for a
    layer above to check (the validate section's property thresholds, which the property specs name)."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{where} must be a mapping of options, got {section!r}")
    others = getattr(cls, "OTHER_KEYS", None)
    known = {item.name for item in dataclasses.fields(cls)} - {others}
    required = {item.name for item in dataclasses.fields(cls)
                if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING} - {others}
    unknown, missing = sorted(set(section) - known), sorted(required - set(section))
    if unknown and others is None:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing} (params.yaml holds every value)")
    values = {key: value for key, value in section.items() if key in known}
    if others is not None:
        values[others] = {key: section[key] for key in unknown}
    return values


# ----------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class SymmetryConfig:
    """symprec (A) and angle_tolerance (degrees) of spglib, and neumann_tolerance: the relative Neumann residual
    up to which a tensor obeys its crystal's point group (clean keeps it as given, validate accepts it)."""

    symprec: float
    angle_tolerance: float
    neumann_tolerance: float

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            check_positive(getattr(self, item.name), f"symmetry.{item.name}")

    def analyze(self, structure) -> symmetry.SymmetryInfo:
        """``zoo.core.symmetry.analyze`` with these tolerances."""
        return symmetry.analyze(structure, symprec=self.symprec, angle_tolerance=self.angle_tolerance)


@dataclass(frozen=True)
class MPApiConfig:
    """Keyword options of ``zoo.data.sources.mp_api.fetch_property`` (its docstring says what each does)."""

    endpoint: str | None
    chunk_size: int
    max_retries: int
    backoff_s: float
    max_delay_s: float
    timeout_s: float
    phonon_method: str
    state_dir: str | None
    progress: bool

    def as_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FetchConfig:
    """source: 'snapshot' (the pinned offline files) or 'mp-api'; snapshot_root: relative to the params file."""

    source: str
    snapshot_root: str
    mp_api: MPApiConfig

    SOURCES = ("snapshot", "mp-api")

    def __post_init__(self) -> None:
        if self.source not in self.SOURCES:
            raise ValueError(f"fetch.source is {self.source!r}; expected one of {', '.join(self.SOURCES)}")


@dataclass(frozen=True)
class CleanConfig:
    """symmetrize_max_residual: largest residual treated as noise (projected), above it 'unresolved'; the frame
    decision's thresholds (frame_distinct_rtol, frame_margin_factor, convention_min_agreement,
    convention_min_records, frame_stability_strain: zoo.data.cleaning.evidence); duplicate_rtol: relative difference
    below which a duplicate is identical; workers: processes measuring records."""

    symmetrize_max_residual: float
    frame_distinct_rtol: float
    frame_margin_factor: float
    convention_min_agreement: float
    convention_min_records: int
    frame_stability_strain: float
    duplicate_rtol: float
    workers: int


@dataclass(frozen=True)
class ValidateConfig:
    """The validate stage's shared settings (zoo.data.validation.ValidationParams says what each does); thresholds:
    every other key of the section, a property's own threshold, which its spec names
    (PropertySpec.validate_thresholds) and checks: the validate stage refuses a key no spec names."""

    min_interatomic_distance_a: float
    holdout_sources: tuple[str, ...]
    merge_atol: float
    merge_rtol: float
    workers: int
    thresholds: Mapping[str, Any]

    OTHER_KEYS = "thresholds"


@dataclass(frozen=True)
class BuildConfig:
    """dataset_version: semantic version of the build; split_salt, split_fractions: the split rule
    (zoo.data.splits); pinned_splits_from: null, or {property: path} (a property not named pins nothing): a
    previous release's dataset folder or pinned-splits JSON file (zoo.data.datasets.write_split_assignments),
    relative to the params file, whose split assignments are kept, so that adding records moves none;
    workers: processes computing the derived quantities."""

    dataset_version: str
    split_salt: str
    split_fractions: Mapping[str, float]
    pinned_splits_from: Mapping[str, str] | None
    workers: int

    def __post_init__(self) -> None:
        check_int(self.workers, "build.workers", 1)
        if not isinstance(self.split_salt, str) or not self.split_salt:
            raise ValueError(f"build.split_salt must be a non-empty string, got {self.split_salt!r}")
        pinned = self.pinned_splits_from or {}
        if not isinstance(pinned, Mapping) or not all(isinstance(path, str) and path for path in pinned.values()):
            raise ValueError(f"build.pinned_splits_from must map property names to paths, got {pinned!r}")
        object.__setattr__(self, "pinned_splits_from", dict(pinned))

    def pinned_for(self, prop: str) -> str | None:
        """The pinned-splits path of one property (None: nothing pinned)."""
        return self.pinned_splits_from.get(prop)


LOSSES = ("mse", "block_norm", "mandel")
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
                             norms, robust to heavy-tailed targets) or 'mandel' (squared Frobenius = Mandel norm of
                             the Cartesian error); see ``zoo.nn.training.Loss``
    model                    ModelConfig fields (zoo.nn.models) other than property, seed, avg_num_neighbors and the
                             output normalisation, which training sets from the data (zoo.nn.training checks the
                             names against ModelConfig)
    ensemble_size            networks trained, with seeds seed, seed + 1, ...; more than one makes the model a
                             zoo.nn.models.Ensemble predicting their mean (and spread)
    separate_parts           (a property with several predicted parts, dielectric) one network per part, each part
                             selected on its own validation loss, instead of one network with a head per part;
                             ensemble_size networks per part

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
                                     "separate_parts": False}

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
    """

    profile: str
    profiles: Mapping[str, Mapping[str, Any]]

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class GBMSettings:
    """HistGradientBoostingRegressor settings of the composition baseline (params.yaml evaluate.composition_gbm)."""

    max_iter: int
    learning_rate: float
    max_leaf_nodes: int
    min_samples_leaf: int
    seed: int

    def __post_init__(self):
        for name in ("max_iter", "max_leaf_nodes", "min_samples_leaf"):
            check_int(getattr(self, name), f"composition_gbm.{name}", 1)
        check_int(self.seed, "composition_gbm.seed", 0)
        check_positive(self.learning_rate, "composition_gbm.learning_rate")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> GBMSettings:
        return cls(**check_keys(cls, section, "composition_gbm"))


@dataclass(frozen=True)
class LearningCurveSettings:
    """evaluate.learning_curve (zoo.nn.learning_curve): the training fractions (each in (0, 1], rising, the last
    1.0), one network each with the model's settings, and the properties that get a curve (it costs about
    sum(fractions) - 1 trainings of one network; the evaluate stage checks the names)."""

    fractions: tuple[float, ...]
    properties: tuple[str, ...]

    def __post_init__(self) -> None:
        fractions = tuple(self.fractions) if isinstance(self.fractions, (list, tuple)) else ()
        if not fractions or not all(is_real(f) and 0 < f <= 1 for f in fractions) \
                or list(fractions) != sorted(set(fractions)) or not math.isclose(fractions[-1], 1.0):
            raise ValueError(f"evaluate.learning_curve.fractions must rise strictly within (0, 1] and end at 1.0, "
                             f"got {self.fractions!r}")
        if not isinstance(self.properties, (list, tuple)) or not all(isinstance(p, str) for p in self.properties):
            raise ValueError(f"evaluate.learning_curve.properties must be a list of names, got {self.properties!r}")
        object.__setattr__(self, "fractions", tuple(float(f) for f in fractions))
        object.__setattr__(self, "properties", tuple(self.properties))

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> LearningCurveSettings:
        return cls(**check_keys(cls, section, "learning_curve"))


@dataclass(frozen=True)
class EvaluateConfig:
    composition_gbm: GBMSettings
    learning_curve: LearningCurveSettings


@dataclass(frozen=True)
class HubConfig:
    organisation: str
    endpoint: str | None
    private: bool


@dataclass(frozen=True)
class PublishConfig:
    """model_version: the version published (bump after retraining); target: 'local' | 'hub'; store: the local
    store folder; hub: organisation, endpoint, private. (Releases shipped with the code are the release stages'
    only: section release.)"""

    model_version: str
    target: str
    store: str
    hub: HubConfig

    TARGETS = ("local", "hub")

    def __post_init__(self) -> None:
        if self.target not in self.TARGETS:
            raise ValueError(f"publish.target must be one of {', '.join(self.TARGETS)}, got {self.target!r}")


@dataclass(frozen=True)
class ReleaseConfig:
    """The releases shipped with the code (releases/dvc.yaml, `make release`): profile, the training profile they
    are trained with (one of train.profiles); versions, property -> the version its release stage ships. A version
    is never shipped twice with other weights: a new release is a new version here. versions lists only the
    releases that are made (may be empty): each entry is a stage of releases/dvc.yaml, and a stage with no
    releases/dvc.lock entry is a release promised but not made (zoo.release.lockcheck fails CI on it)."""

    profile: str
    versions: Mapping[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(f"release.profile must name a training profile, got {self.profile!r}")
        if not isinstance(self.versions, Mapping):
            raise ValueError(f"release.versions must map properties to versions ({{}} for none), got {self.versions!r}")
        for prop, version in self.versions.items():
            check_version(version, f"release.versions.{prop}")


# Nested sections: field -> schema of its mapping.
_NESTED: dict[type, dict[str, type]] = {
    FetchConfig: {"mp_api": MPApiConfig},
    EvaluateConfig: {"composition_gbm": GBMSettings, "learning_curve": LearningCurveSettings},
    PublishConfig: {"hub": HubConfig},
}
SCHEMAS: dict[str, type] = {
    "symmetry": SymmetryConfig, "fetch": FetchConfig, "clean": CleanConfig, "validate": ValidateConfig,
    "build": BuildConfig, "train": TrainConfig, "evaluate": EvaluateConfig, "publish": PublishConfig,
    "release": ReleaseConfig,
}


def parse(cls: type, section: Any, where: str):
    """An instance of schema `cls` from a params mapping (nested sections included)."""
    values = check_keys(cls, section, where)
    for name, nested in _NESTED.get(cls, {}).items():
        values[name] = parse(nested, values[name], f"{where}.{name}")
    return cls(**values)


# ------------------------------------------------------------------------------------------------ reading
def read_params(path: str | Path | None = None) -> dict[str, Any]:
    """The params file as a mapping of sections (default: the checkout's params.yaml); unknown sections refused."""
    path = Path(paths.PARAMS_FILE if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found (run from the repository root or pass --params)")
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(params).__name__}")
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    return params


def load_section(name: str, path: str | Path | None = None):
    """One section of the params file as its schema (SCHEMAS[name])."""
    params = read_params(path)
    if name not in params:
        raise ValueError(f"{path or paths.PARAMS_FILE} has no '{name}' section")
    return parse(SCHEMAS[name], params[name], name)


@dataclass(frozen=True)
class Params:
    """Every section of a params file."""

    symmetry: SymmetryConfig
    fetch: FetchConfig
    clean: CleanConfig
    validate: ValidateConfig
    build: BuildConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    publish: PublishConfig
    release: ReleaseConfig
    properties: tuple[str, ...] = field(default=())


def load(path: str | Path | None = None) -> Params:
    """Every section of the params file (default: the checkout's params.yaml), each checked by its schema."""
    params = read_params(path)
    missing = [name for name in SCHEMAS if name not in params]
    if missing:
        raise ValueError(f"{path or paths.PARAMS_FILE} lacks the section(s) {missing}")
    return Params(properties=tuple(params.get("properties") or ()),
                  **{name: parse(cls, params[name], name) for name, cls in SCHEMAS.items()})
