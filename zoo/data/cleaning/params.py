"""What clean works with and what it reports per record: CleanParams and the issue codes (CleanIssue)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from zoo.core.config import CleanConfig, SymmetryConfig, load_section
from zoo.data.cleaning.evidence import FrameRules


ISSUE_CODES = (
    "unparsable_structure", "unparsable_tensor", "wrong_shape", "missing_field", "unknown_element",
    "duplicate_identical", "duplicate_conflict", "no_material_id", "frame_ambiguous",
)


# ------------------------------------------------------------------------------------------------- params
@dataclass(frozen=True)
class CleanParams:
    """What clean works with: params.yaml's `symmetry` and `clean` sections (zoo.core.config; the module docstring
    says what each does).

    symprec, angle_tolerance   spglib tolerances (A, degrees) for the point group and the standard frame
    neumann_rtol               residual at or below which a tensor is consistent and stored unchanged
                               (symmetry.neumann_tolerance)
    symmetrize_max_residual    largest residual treated as noise (projected); a candidate frame above it is
                               inconsistent, and a record with no consistent candidate 'unresolved'
    frame_distinct_rtol        two candidate tensors differ materially when their point-group projections differ by
                               more than this fraction of the norm (zoo.data.cleaning.evidence)
    frame_margin_factor        a class of candidates settles by margin when the runner-up fits this many times worse
    convention_min_agreement   share of the tested records on which a per-source convention must hold
    convention_min_records     fewest multi-frame records a per-source convention must be tested on
    frame_stability_strain     relative strain under which the spglib-built frames must not change (0: no check)
    duplicate_rtol             relative difference below which a duplicate is identical
    workers                    processes measuring records (1: in this process)
    """

    symprec: float
    angle_tolerance: float
    neumann_rtol: float
    symmetrize_max_residual: float
    frame_distinct_rtol: float
    frame_margin_factor: float
    convention_min_agreement: float
    convention_min_records: int
    frame_stability_strain: float
    duplicate_rtol: float
    workers: int

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("workers", "convention_min_records"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"clean.{item.name} must be a positive integer, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"clean.{item.name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and item.name != "frame_stability_strain"):
                raise ValueError(f"clean.{item.name} must be a positive number, got {value!r}")
        if self.convention_min_agreement > 1:
            raise ValueError(f"clean.convention_min_agreement is a share, at most 1; got {self.convention_min_agreement}")
        if self.symmetrize_max_residual < self.neumann_rtol:
            raise ValueError(
                f"clean.symmetrize_max_residual ({self.symmetrize_max_residual}) must be at least "
                f"clean.neumann_rtol ({self.neumann_rtol})"
            )

    def frame_rules(self) -> FrameRules:
        return FrameRules(
            neumann_rtol=self.neumann_rtol, symmetrize_max_residual=self.symmetrize_max_residual,
            distinct_rtol=self.frame_distinct_rtol, margin_factor=self.frame_margin_factor,
            convention_min_agreement=self.convention_min_agreement,
            convention_min_records=self.convention_min_records, stability_strain=self.frame_stability_strain)

    @classmethod
    def from_config(cls, symmetry_settings: SymmetryConfig, clean: CleanConfig) -> CleanParams:
        return cls(symprec=symmetry_settings.symprec, angle_tolerance=symmetry_settings.angle_tolerance,
                   neumann_rtol=symmetry_settings.neumann_tolerance, **asdict(clean))

    @classmethod
    def from_params(cls, path: str | os.PathLike | None = None) -> CleanParams:
        """From a params file (default: the checkout's params.yaml)."""
        return cls.from_config(load_section("symmetry", path), load_section("clean", path))


class CleanIssue(Exception):
    """Why clean cannot use a record: one of ISSUE_CODES and a sentence for the report."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in ISSUE_CODES:
            raise ValueError(f"code must be one of {ISSUE_CODES}, got {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self):  # measurements cross process boundaries; the default would pass the message only
        return (CleanIssue, (self.code, self.detail))
