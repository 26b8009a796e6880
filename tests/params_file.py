"""The checkout's params.yaml for the tests: every setting's value has its one home there (zoo.core.config)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from zoo.core import config, paths, train_config

PARAMS = config.load()
SYMMETRY = PARAMS.symmetry


def params_mapping() -> dict[str, Any]:
    return yaml.safe_load(paths.PARAMS_FILE.read_text(encoding="utf-8"))


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, Mapping) and value else value
    return out


def write_params(path: str | Path, **sections: Mapping[str, Any]) -> Path:
    """The checkout's params.yaml with `sections` merged in (nested mappings key by key), written to `path`."""
    path = Path(path)
    path.write_text(yaml.safe_dump(_merge(params_mapping(), sections), sort_keys=False), encoding="utf-8")
    return path


def train_settings(profile: str = "cpu", **changes: Any) -> train_config.TrainSettings:
    """A profile's settings (without its per-property changes), with `changes`."""
    return train_config.TrainSettings.from_params({**PARAMS.train.resolve(profile), **changes})
