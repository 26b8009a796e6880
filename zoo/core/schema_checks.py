"""The checks the params schemas (zoo.core.config, zoo.core.train_config) apply to a value or a section; check_positive
also checks numeric arguments elsewhere (the symmetry tolerances, r_cut, the ModelConfig fields).

Each raises ValueError naming the setting, so a bad params.yaml is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(value: Any, name: str, unit: str = "", *, convert: bool = False) -> float:
    """`value` if it is a finite number > 0; else ValueError naming `name` (and the `unit` the number is in).
    With `convert`, anything float() takes counts (a numpy scalar, a numeric string) and the float is returned:
    the function arguments (r_cut, symprec, the ModelConfig fields) take those; the params schemas do not, so a
    quoted number in params.yaml is refused."""
    number = value
    if convert:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if not is_real(number) or number <= 0:
        of_unit = f" of {unit}" if unit else ""
        raise ValueError(f"{name} must be a positive number{of_unit}, got {value!r}")
    return number


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
