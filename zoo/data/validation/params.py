"""The validate stage's codes and thresholds: reason codes in priority order (the shared ones; each property's own are
in its spec), the value columns, ValidationParams."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from zoo import properties
from zoo.core import symmetry, tensor_checks
from zoo.core.config import SymmetryConfig, ValidateConfig, load_section
from zoo.core.schema_checks import check_non_negative, check_positive
from zoo.data import merging
from zoo.data.cleaning import ISSUE_CODES
from zoo.properties.spec import PropertySpec


# The clean stage's issue codes (a record with one is quarantined with it), then validate's own codes: one fixed
# priority order, data integrity first, then the structure, then physics (``reason_priority``: the shared codes
# here, each property's own in its spec). ``primary_reason`` is the first code of a record in this order.
CLEAN_ISSUE_CODES: tuple[str, ...] = ISSUE_CODES
VALUE_CODES: tuple[str, ...] = ("nan_value",)
STRUCTURE_CODES: tuple[str, ...] = ("structure_nonpositive_volume", "structure_overlapping_atoms",
                                    "symmetry_undetermined")
NEUMANN_CODES: tuple[str, ...] = ("neumann_violation",)
# After every check: only a record that passed them takes part in the merge of a material's sources.
MERGE_CODES: tuple[str, ...] = merging.MERGE_CODES


def reason_priority(spec: PropertySpec) -> tuple[str, ...]:
    """A property's quarantine codes in priority order: clean's issues, the value checks (shared, then the
    spec's value_codes), the structure and symmetry checks, the spec's physics_codes, the Neumann check, the merge
    of several sources (zoo.data.merging)."""
    return (CLEAN_ISSUE_CODES + VALUE_CODES + spec.value_codes + STRUCTURE_CODES + spec.physics_codes
            + NEUMANN_CODES + MERGE_CODES)


def _every_property_in_order() -> tuple[str, ...]:
    specs = list(properties.PROPERTIES.values())
    return (CLEAN_ISSUE_CODES + VALUE_CODES + tuple(code for spec in specs for code in spec.value_codes)
            + STRUCTURE_CODES + tuple(code for spec in specs for code in spec.physics_codes) + NEUMANN_CODES
            + MERGE_CODES)


# Every code of the registered properties in one order that restricts to each property's reason_priority.
REASON_PRIORITY: tuple[str, ...] = _every_property_in_order()


@dataclass(frozen=True)
class ValueColumn:
    """A clean-format column holding (part of) a record's value.

    name   column name in the clean frame
    shape  shape of one stored value (Voigt for elastic and piezo, Cartesian for dielectric)
    """

    name: str
    shape: tuple[int, ...]


def value_columns(spec: PropertySpec) -> tuple[ValueColumn, ...]:
    """The columns of the clean frame that hold a property's values (the spec's stored columns)."""
    return tuple(ValueColumn(name, spec.stored_shape) for name in spec.stored_columns)


# ------------------------------------------------------------------------------------------------------ params
@dataclass(frozen=True)
class ValidationParams:
    """Thresholds of the physics checks: params.yaml's ``symmetry`` and ``validate`` sections (zoo.core.config).

    symprec, angle_tolerance    spglib tolerances of the point group the Neumann residual is measured against
    neumann_tolerance           max relative Neumann residual of an accepted tensor record
    min_interatomic_distance_a  shortest allowed distance between two sites (periodic images included), A
    holdout_sources             source files kept out of training: their materials that no other file holds form
                                the dataset's external split (zoo.data.merging)
    merge_atol, merge_rtol      when two records of one material agree (zoo.data.merging; atol in the property's
                                units)
    workers                     processes computing the metrics (1: in this process); does not change results
    thresholds                  the properties' own thresholds, by key (each named by one registered spec's
                                validate_thresholds, checked by its check_thresholds; zoo/properties/<property>.py
                                says what each does)
    """

    symprec: float
    angle_tolerance: float
    neumann_tolerance: float
    min_interatomic_distance_a: float
    holdout_sources: tuple[str, ...]
    merge_atol: float
    merge_rtol: float
    workers: int
    thresholds: Mapping[str, Any]

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"validate.workers must be a positive integer, got {self.workers!r}")
        sources = self.holdout_sources
        if isinstance(sources, str) or not isinstance(sources, (list, tuple)) \
                or not all(isinstance(item, str) and item for item in sources):
            raise ValueError(f"validate.holdout_sources must be a list of source file paths, got {sources!r}")
        object.__setattr__(self, "holdout_sources", tuple(sources))
        for name in ("neumann_tolerance", "min_interatomic_distance_a", "merge_atol", "merge_rtol"):
            check_non_negative(getattr(self, name), f"validate.{name}")
        for name in ("symprec", "angle_tolerance"):
            check_positive(getattr(self, name), f"symmetry.{name}")
        object.__setattr__(self, "thresholds", _checked_thresholds(self.thresholds))

    @classmethod
    def from_config(cls, symmetry_settings: SymmetryConfig, validate: ValidateConfig) -> ValidationParams:
        return cls(**asdict(symmetry_settings), min_interatomic_distance_a=validate.min_interatomic_distance_a,
                   holdout_sources=validate.holdout_sources, merge_atol=validate.merge_atol,
                   merge_rtol=validate.merge_rtol, workers=validate.workers, thresholds=validate.thresholds)

    @classmethod
    def from_params(cls, path: str | os.PathLike | None = None) -> ValidationParams:
        """From a params file (default: the checkout's params.yaml)."""
        return cls.from_config(load_section("symmetry", path), load_section("validate", path))

    def merge_params(self) -> merging.MergeParams:
        return merging.MergeParams(self.holdout_sources, self.merge_atol, self.merge_rtol)

    def analyze(self, structure) -> symmetry.SymmetryInfo:
        """The structure's symmetry with these tolerances."""
        return symmetry.analyze(structure, symprec=self.symprec, angle_tolerance=self.angle_tolerance)

    def expectation_parameters(self, spec: PropertySpec) -> dict[str, float]:
        """The values of the ``$PARAMETER`` references in the property's suite: the shared ones and its own."""
        return {
            "symmetry_rtol": tensor_checks.SYMMETRY_RTOL,
            "neumann_tolerance": self.neumann_tolerance,
            "min_interatomic_distance_a": self.min_interatomic_distance_a,
            **spec.suite_parameters({key: self.thresholds[key] for key in spec.validate_thresholds}),
        }

    def reported(self) -> dict[str, Any]:
        """The settings as the validation report records them, one flat mapping (workers left out: it changes how
        fast, never what)."""
        return {"symprec": self.symprec, "angle_tolerance": self.angle_tolerance,
                "neumann_tolerance": self.neumann_tolerance,
                "min_interatomic_distance_a": self.min_interatomic_distance_a,
                "holdout_sources": list(self.holdout_sources), "merge_atol": self.merge_atol,
                "merge_rtol": self.merge_rtol, **self.thresholds}

    @classmethod
    def from_reported(cls, reported: Mapping[str, Any], workers: int = 1) -> ValidationParams:
        """The settings a validation report records (``reported``), e.g. to measure a dataset's records again."""
        shared = ("symprec", "angle_tolerance", "neumann_tolerance", "min_interatomic_distance_a", "holdout_sources",
                  "merge_atol", "merge_rtol")
        named = _named_thresholds()
        return cls(**{key: reported[key] for key in shared}, workers=workers,
                   thresholds={key: value for key, value in reported.items() if key in named})


def _named_thresholds() -> dict[str, PropertySpec]:
    """threshold key -> the registered spec that names it."""
    return {key: spec for spec in properties.PROPERTIES.values() for key in spec.validate_thresholds}


def _checked_thresholds(thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """Every key named by a registered spec, none other, each checked by its spec."""
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"the validate thresholds must be a mapping, got {thresholds!r}")
    named = _named_thresholds()
    unknown, missing = sorted(set(thresholds) - set(named)), sorted(set(named) - set(thresholds))
    if unknown:
        raise ValueError(f"validate: unknown key(s) {unknown}; the properties' own keys: {sorted(named)}")
    if missing:
        raise ValueError(f"validate: missing key(s) {missing} (params.yaml holds every value)")
    out: dict[str, Any] = {}
    for spec in properties.PROPERTIES.values():
        out.update(spec.check_thresholds({key: thresholds[key] for key in spec.validate_thresholds}))
    return out
