"""The audit's verdict: one Check per row (what was compared, expected, found, pass / FAIL / not checked), a Report
per model version or dataset, and the helpers every part of the audit writes rows with."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.core.io import sha256_file

PASS, FAIL, NOT_CHECKED = "pass", "FAIL", "not checked"
SHOWN_DIFFERENCES = 4  # differing values named per row; the rest are counted
_HEX = frozenset("0123456789abcdef")

# Long steps report through a callable(text) returning a context manager (the CLI shows a rich spinner).
Step = Callable[[str], AbstractContextManager]


def quiet(text: str) -> AbstractContextManager:
    return contextlib.nullcontext()


class AuditError(RuntimeError):
    """The audit could not run (e.g. the dataset could not be rebuilt); the message says why."""


@dataclass(frozen=True)
class Check:
    """One row of the verdict: what was compared, the expected and found values, and the result."""

    name: str
    compared: str
    expected: str
    found: str
    status: str

    def summary(self) -> str:
        return f"{self.name} ({self.compared}): expected {abbreviate(self.expected)}, found {abbreviate(self.found)}"


@dataclass
class Report:
    """The verdict on one model version or dataset: a Check per row, and notes (e.g. that a dataset was rebuilt)."""

    subject: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, name: str, compared: str, expected: Any, found: Any, ok: bool | None) -> bool:
        """Record a row: ok True -> pass, False -> FAIL, None -> not checked. Returns ok is True."""
        status = NOT_CHECKED if ok is None else PASS if ok else FAIL
        self.checks.append(Check(name, compared, str(expected), str(found), status))
        return ok is True


def abbreviate(text: str) -> str:
    """`text` with each sha256 digest cut to its first 16 hex digits (enough to tell two apart)."""
    def short(word: str) -> str:
        prefix, colon, digest = word.rpartition(":")
        return f"{prefix}{colon}{digest[:16]}..." if len(digest) == 64 and set(digest) <= _HEX else word

    return " ".join(short(word) for word in text.split(" "))


def file_check(report: Report, name: str, compared: str, path: Path, expected: str) -> bool:
    found = sha256_file(path) if path.is_file() else "missing"
    return report.add(name, compared, expected, found, found == expected)


def listed(pairs: list[tuple[str, str]]) -> str:
    """'what value; what value; and N more' (the first SHOWN_DIFFERENCES pairs)."""
    shown = "; ".join(f"{what} {value}" for what, value in pairs[:SHOWN_DIFFERENCES])
    more = len(pairs) - SHOWN_DIFFERENCES
    return shown + (f"; and {more} more" if more > 0 else "")
