"""Semantic versions 'MAJOR.MINOR.PATCH' (non-negative integers, no leading zeros): of datasets, models and tags."""

from __future__ import annotations

import re
from typing import Any

SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


def is_version(text: Any) -> bool:
    return isinstance(text, str) and SEMVER.fullmatch(text) is not None


def check_version(version: Any, name: str = "version") -> str:
    """`version` if it is a semantic version; a ValueError naming `name` otherwise."""
    if not is_version(version):
        raise ValueError(f"{name} must be a semantic version MAJOR.MINOR.PATCH such as '1.0.0', got {version!r}")
    return version


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key of a semantic version; ValueError for anything else."""
    return tuple(int(part) for part in check_version(version).split("."))  # type: ignore[return-value]
