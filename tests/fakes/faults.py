"""What the loopback HTTP doubles (tests/fakes/mp_api.py, tests/fakes/hub.py) share about their faults and logs.

Each double subclasses `Fault` with the kinds it can stage (as classmethods: ``Fault.reset()``, ``Fault.cut_body()``
...) and `Served` with what else it records of a request.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One scheduled misbehaviour of a double: its kind and, for kind 'http', the status answered."""

    kind: str
    status: int = 200

    @classmethod
    def http(cls, status: int) -> Fault:
        return cls("http", status=status)


@dataclass(frozen=True)
class Served:
    """One request a double received and what it did with it."""

    path: str
    outcome: str  # the HTTP status sent, or the fault kind
