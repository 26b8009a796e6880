"""The clean stage's report: counts by issue and frame action, the measured frame preference, residual quantiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zoo import properties
from zoo.data.cleaning import evidence
from zoo.data.cleaning.frames import SYMMETRIZED_SUFFIX, UNRESOLVED, FrameChoice, Measured
from zoo.data.cleaning.params import CleanIssue, CleanParams


REPORT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)


# ---------------------------------------------------------------------------------------------- report
def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {f"q{int(q * 100):02d}" if q < 1 else "max": float(np.quantile(array, q)) for q in REPORT_QUANTILES}


@dataclass
class ReportStats:
    """Accumulates the deterministic report (no timings, so the same input gives the same report)."""

    neumann_rtol: float
    issues: list[dict[str, str]] = field(default_factory=list)
    parse_warnings: list[dict[str, Any]] = field(default_factory=list)
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    stored: list[float] = field(default_factory=list)
    symmetrization_change: list[float] = field(default_factory=list)
    candidate_consistent: Counter = field(default_factory=Counter)
    candidate_measured: Counter = field(default_factory=Counter)
    alternative_issues: list[dict[str, str]] = field(default_factory=list)

    def add_record(self, record: Mapping[str, Any], item: Measured, issue: CleanIssue | None) -> None:
        if issue is not None:
            self.issues.append({"record_id": record["record_id"], "code": issue.code, "detail": issue.detail})
        if item.warnings:
            self.parse_warnings.append({"record_id": record["record_id"], "warnings": item.warnings})
        if item.alternative_issue:
            self.alternative_issues.append({"record_id": record["record_id"], "detail": item.alternative_issue})

    def add_choice(self, item: Measured, choice: FrameChoice) -> None:
        self.before.append(choice.residual_before)
        self.after.append(choice.residual_after)
        self.stored.append(choice.stored_residual)
        if choice.action.endswith(SYMMETRIZED_SUFFIX):
            self.symmetrization_change.append(max(
                float(np.linalg.norm(choice.parts[key] - part) / np.linalg.norm(part))
                for key, part in choice.frame_parts.items()))
        for name, residual in item.residuals.items():
            if name in evidence.BASE_CANDIDATES:  # stability variants are reported by the frame decision
                self.candidate_measured[name] += 1
                self.candidate_consistent[name] += residual <= self.neumann_rtol

    def report(self, spec: properties.PropertySpec, params: CleanParams, rows: Sequence[Mapping[str, Any]],
               frames_report: Mapping[str, Any] | None) -> dict[str, Any]:
        def fraction_within(values: Sequence[float]) -> float | None:
            return float(np.mean(np.asarray(values) <= params.neumann_rtol)) if values else None

        report: dict[str, Any] = {
            "property": spec.name,
            "records": len(rows),
            # Without `workers`: it changes how fast, never what (the outputs are identical).
            "params": {key: value for key, value in asdict(params).items() if key != "workers"},
            "clean_issue": dict(sorted(Counter(row["clean_issue"] or "none" for row in rows).items())),
            "unreadable_alternative_column": self.alternative_issues,
            "frame_action": dict(sorted(Counter(row["frame_action"] or "not_measured" for row in rows).items())),
            "issues": self.issues,
            "parse_warnings": self.parse_warnings,
        }
        if spec.is_tensor:
            # frame_evidence: every row (a duplicate decided on its own evidence); frames.outcome: the records
            # without another issue, on which the per-source rules were measured (zoo.data.cleaning.evidence).
            unsettled = (UNRESOLVED, evidence.FRAME_AMBIGUOUS)
            report["frame_evidence"] = dict(sorted(Counter(
                row["frame_evidence"] or (row["frame_action"] if row["frame_action"] in unsettled else "not_measured")
                for row in rows).items()))
            report["frames"] = {
                **(frames_report or {}),
                "claimed": dict(sorted(Counter(row["original_frame"] or "none" for row in rows).items())),
                "consistent_by_candidate": {
                    name: {"consistent": int(self.candidate_consistent[name]),
                           "measured": int(self.candidate_measured[name])}
                    for name in evidence.BASE_CANDIDATES},
            }
            report["neumann_residual"] = {
                "records_measured": len(self.before),
                "within_neumann_rtol": {"before": fraction_within(self.before), "after": fraction_within(self.after),
                                        "stored": fraction_within(self.stored)},
                "quantiles": {"before": _quantiles(self.before), "after": _quantiles(self.after),
                              "stored": _quantiles(self.stored)},
                "symmetrization_relative_change": _quantiles(self.symmetrization_change),
            }
        return report
