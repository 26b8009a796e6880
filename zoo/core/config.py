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

The training schemas live in zoo.core.train_config and the value checks in zoo.core.schema_checks; import them from
there (``config.TrainSettings`` stays importable: the shipped model cards name it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.core import paths, symmetry
from zoo.core.schema_checks import (
    check_int,
    check_keys,
    check_positive,
    is_real,
)
from zoo.core.train_config import (
    TrainConfig,
    TrainSettings,  # noqa: F401 (kept here too: the shipped model cards cite zoo.core.config.TrainSettings)
)
from zoo.core.versions import check_version

SECTIONS = ("properties", "symmetry", "fetch", "clean", "validate", "build", "train", "evaluate", "publish",
            "release")


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
    convention_min_records, frame_stability_strain, claimed_frame_settles, convention_pools:
    zoo.data.cleaning.evidence); duplicate_rtol: relative difference below which a duplicate is identical; workers:
    processes measuring records."""

    symmetrize_max_residual: float
    frame_distinct_rtol: float
    frame_margin_factor: float
    convention_min_agreement: float
    convention_min_records: int
    frame_stability_strain: float
    claimed_frame_settles: bool
    convention_pools: Mapping[str, Sequence[str]] | None
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
