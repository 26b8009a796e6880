"""Fetch sources: each turns one property's source data into canonical raw records (``zoo.data.records``).

``zoo.data.sources.snapshot`` reads the pinned offline snapshot; ``zoo.data.sources.mp_api`` queries the Materials
Project API. Both account for every source row they read in a `FetchReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from zoo.data.records import unreadable_fields


@dataclass(frozen=True)
class Exclusion:
    """Source rows deliberately not turned into records, and why (they are counted, never silently lost).

    reason: a short code; description: what the rows are, for people; rows: the half-open range
    [start, stop) of source rows, where the source has row numbers.
    """

    reason: str
    count: int
    description: str = ""
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class SourceCount:
    """What one source file contributed: rows read = records written + rows excluded."""

    rows_read: int
    records_written: int
    rows_excluded: int = 0


@dataclass(frozen=True)
class FetchReport:
    """What one fetch read and wrote. rows_read == records_written + sum of the exclusions' counts.

    inputs: source file (or endpoint) -> sha256. unreadable_fields: record location -> number of records
    in which that field was kept as an unreadable marker (clean quarantines those records). by_source: source
    file -> its SourceCount, for a property read from several files (empty for the MP API: one source).
    """

    property: str
    source: str
    output: str
    output_sha256: str
    rows_read: int
    records_written: int
    inputs: Mapping[str, str]
    excluded: tuple[Exclusion, ...] = ()
    unreadable_fields: Mapping[str, int] = field(default_factory=dict)
    by_source: Mapping[str, SourceCount] = field(default_factory=dict)

    def __post_init__(self) -> None:
        accounted = self.records_written + sum(exclusion.count for exclusion in self.excluded)
        if accounted != self.rows_read:
            raise ValueError(
                f"fetch of {self.property!r} from {self.source!r} read {self.rows_read} rows but accounts for "
                f"{accounted} ({self.records_written} written + excluded {[asdict(e) for e in self.excluded]})"
            )
        if self.by_source and (sum(c.rows_read for c in self.by_source.values()) != self.rows_read
                               or sum(c.records_written for c in self.by_source.values()) != self.records_written):
            raise ValueError(f"fetch of {self.property!r}: the per-source counts {self.by_source} do not add up to "
                             f"{self.rows_read} rows read and {self.records_written} records written")

    @property
    def rows_excluded(self) -> int:
        return sum(exclusion.count for exclusion in self.excluded)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and deterministic (no timings), so the report itself is reproducible."""
        report = asdict(self)
        report["excluded"] = [
            {**asdict(exclusion), "rows": list(exclusion.rows) if exclusion.rows else None}
            for exclusion in self.excluded
        ]
        report["inputs"] = dict(sorted(self.inputs.items()))
        report["unreadable_fields"] = dict(sorted(self.unreadable_fields.items()))
        report["by_source"] = {name: asdict(count) for name, count in sorted(self.by_source.items())}
        report["rows_excluded"] = self.rows_excluded
        return report


def count_unreadable_fields(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many records keep each field as an unreadable marker."""
    counts: Counter[str] = Counter()
    for record in records:
        counts.update(unreadable_fields(record))
    return dict(sorted(counts.items()))
