"""Reading one stage's section of params.yaml: the one place that opens the params file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_section(params_path: Path, name: str, *, required: bool = False) -> dict[str, Any] | None:
    """The mapping under `name` in the params file; None when absent (unless `required`).

    Raises FileNotFoundError for a missing file and ValueError for a section that is not a mapping.
    """
    params_path = Path(params_path)
    if not params_path.is_file():
        raise FileNotFoundError(f"params file {params_path} not found (run from the repository root or pass --params)")
    with open(params_path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{params_path} must hold a mapping of stage sections, got {type(params).__name__}")
    section = params.get(name)
    if section is None:
        if required:
            raise ValueError(f"{params_path} has no '{name}' section")
        return None
    if not isinstance(section, dict):
        raise ValueError(f"'{name}' in {params_path} must be a mapping of options, got {section!r}")
    return dict(section)
