"""Physics validation of clean records (the validate stage): every record is accepted or quarantined with reasons.

Flow of ``validate(clean, prop, params)``:

1. A record with a ``clean_issue`` is quarantined with that code; nothing else is computed for it.
2. For every other record ``compute_metrics`` derives physics metric columns (``metric_columns``) from the
   clean columns: shape and finiteness of the values, Voigt asymmetry and eigenvalues, Hill moduli, the Neumann
   residual against the stored structure's point group, DOS checks, structure sanity (volume, shortest
   interatomic distance, element symbols).
3. The property's Great Expectations suite, stored as JSON in ``schemas/expectations/<prop>.json``, holds the
   expectations on those columns (and, through the custom expectations defined here, on the tensor columns
   themselves). Thresholds are GX suite parameters (``{"$PARAMETER": name}``) filled from ``ValidationParams``
   and from ``zoo.core.tensor_checks.SYMMETRY_RTOL``, so each threshold has one home. The suite runs in an ephemeral GX
   context with result format COMPLETE; each failing row index becomes the expectation's ``meta.reason_code``.
   With a docs directory, GX's Data Docs of the run are built there, byte-identical for the same inputs (section
   "reproducible Data Docs").
4. A record's ``reasons`` are its codes sorted by ``REASON_PRIORITY``; ``primary_reason`` is the first. A record
   with no reason is accepted.

Null metrics. A metric is null where a more basic check of the same record already fails (no eigenvalues of a
tensor holding NaN, no Neumann residual without a usable structure). GX column-map expectations skip nulls, so a
record is given the code of its basic failure, not codes for the consequences. The one intended overlap: the
custom "symmetric and positive definite" expectation also fails for an asymmetric Voigt matrix (it is not SPD),
so such a record has both codes, elastic_asymmetric first.

Neumann residual. For each tensor part T (Cartesian, in the frame of the stored structure) and each Cartesian
point-group operation R of the structure (``zoo.core.symmetry.analyze``): |rotate(T, R) - T|_F, maximised over R and
over the record's parts, divided by the largest part norm |T|_F of the record (dielectric: the small ionic part
is measured against the total, not against its own rounding-dominated norm). 0 for a tensor that obeys
Neumann's principle exactly. A piezo tensor with every component at most ``piezo_zero_atol_c_m2`` is zero within
the data's precision and has residual 0 (its sign pattern is noise).

Tolerances: params.yaml sections ``symmetry`` (symprec, angle_tolerance, neumann_tolerance, shared with clean) and
``validate`` (the thresholds below, ``ValidationParams``), with the measurements that chose them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoo.core import environment  # noqa: E402

environment.apply()  # before GX is imported: it reads GX_ANALYTICS_ENABLED at import

import great_expectations as gx  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core import paths, tensor_checks
from zoo.core.io import atomic_write_bytes, write_json  # noqa: E402
from zoo.data import merging  # noqa: E402
from zoo.properties.spec import PropertySpec  # noqa: E402
from zoo.data.validation.expectations import is_symmetric_positive_definite, is_zero_tensor
from zoo.data.validation.metrics import (
    compute_metrics,
    metric_columns,
    metric_names,
    min_interatomic_distance,
    typed_metrics,
)
from zoo.data.validation.params import (
    CLEAN_ISSUE_CODES,
    REASON_PRIORITY,
    ValidationParams,
    ValueColumn,
    reason_priority,
    value_columns,
)
from zoo.data.validation.suites import ExpectationOutcome, frame_parquet_bytes, load_suite, run_suite, suite_path

# The package's API: the flow below, and the parts its modules hold.
__all__ = [
    "CLEAN_ISSUE_CODES", "REASON_PRIORITY", "ExpectationOutcome", "ValidationParams", "ValidationResult",
    "ValueColumn", "compute_metrics", "is_symmetric_positive_definite", "is_zero_tensor", "load_suite",
    "metric_columns", "metric_names", "min_interatomic_distance", "reason_priority", "run_suite", "suite_path",
    "validate", "value_columns", "write_outputs",
]


# ------------------------------------------------------------------------------------------------------ validate
@dataclass(frozen=True)
class ValidationResult:
    accepted: pd.DataFrame  # clean columns + metric columns, sorted by record_id
    quarantined: pd.DataFrame  # clean columns + metric columns + reasons + primary_reason
    report: dict[str, Any]


def _check_clean_frame(clean: pd.DataFrame, spec: PropertySpec) -> None:
    needed = ["record_id", "clean_issue", "structure_json"] + [c.name for c in value_columns(spec)]
    needed += spec.suite_columns
    missing = [name for name in needed if name not in clean.columns]
    if missing:
        raise ValueError(f"clean frame for {spec.name} lacks the columns {missing}")
    clashing = sorted(set(clean.columns) & (set(metric_names(spec)) | {"reasons", "primary_reason"}))
    if clashing:
        raise ValueError(f"clean frame for {spec.name} already has the validate columns {clashing}")
    repeated = clean["record_id"][clean["record_id"].duplicated()].tolist()
    if repeated:
        raise ValueError(f"clean frame for {spec.name}: record_id repeated: {sorted(repeated)[:5]}")
    issues = clean["clean_issue"].dropna()
    unknown = sorted(set(issues) - set(CLEAN_ISSUE_CODES))
    if unknown:
        raise ValueError(f"clean frame for {spec.name}: unknown clean_issue codes {unknown}; known: {CLEAN_ISSUE_CODES}")


def validate(clean: pd.DataFrame, prop: str, params: ValidationParams, n_raw: int | None = None,
             docs_dir: str | os.PathLike | None = None) -> ValidationResult:
    """Accept or quarantine every row of a clean frame (module docstring).

    `n_raw` (the raw record count; default len(clean)) must equal n_accepted + n_quarantined, else ValueError.
    With `docs_dir`, GX's Data Docs of the run are built there.
    """
    spec = properties.get(prop)
    _check_clean_frame(clean, spec)
    clean = clean.sort_values("record_id", kind="stable").reset_index(drop=True)
    n_raw = len(clean) if n_raw is None else n_raw

    has_issue = clean["clean_issue"].notna().to_numpy()
    reasons: list[set[str]] = [{issue} if bad else set() for issue, bad in zip(clean["clean_issue"], has_issue)]
    to_check = clean.loc[~has_issue]
    # Rows with a clean_issue get null metrics: nothing is computed for them.
    metrics = typed_metrics(compute_metrics(to_check, spec, params).reindex(clean.index), spec)
    outcomes: list[ExpectationOutcome] = []
    if len(to_check):
        passthrough = [v.name for v in value_columns(spec)] + list(spec.suite_columns)
        batch = pd.concat([metrics.loc[to_check.index], to_check[passthrough]], axis=1)
        outcomes = run_suite(batch, spec.name, params, docs_dir)
        for outcome in outcomes:
            for i in outcome.unexpected_index:
                reasons[i].add(outcome.reason_code)

    merged = merging.merge(clean, reasons, spec, [column.name for column in value_columns(spec)],
                           params.merge_params())
    clean = clean.assign(provenance_json=merged.provenance_json, **{merging.HOLDOUT_COLUMN: merged.holdout})
    rank = {code: position for position, code in enumerate(reason_priority(spec))}
    ordered = [sorted(codes, key=rank.__getitem__) for codes in merged.reasons]
    full = pd.concat([clean, _output_types(metrics, spec)], axis=1)
    is_bad = np.array([bool(codes) for codes in ordered], dtype=bool)
    accepted = full.loc[~is_bad].reset_index(drop=True)
    quarantined = full.loc[is_bad].reset_index(drop=True)
    quarantined["reasons"] = pd.Series([codes for codes in ordered if codes], dtype=object)
    quarantined["primary_reason"] = pd.Series([codes[0] for codes in ordered if codes], dtype=object)
    if n_raw != len(accepted) + len(quarantined):
        raise ValueError(f"validate {spec.name}: n_raw={n_raw} but {len(accepted)} accepted + {len(quarantined)} "
                         f"quarantined = {len(accepted) + len(quarantined)}: records were lost or invented upstream")
    report = _report(spec, params, n_raw, accepted, quarantined, metrics, outcomes)
    report["merge"] = merged.report
    report["by_source"] = _by_source(accepted, quarantined, spec)
    return ValidationResult(accepted=accepted, quarantined=quarantined, report=report)


def _output_types(metrics: pd.DataFrame, spec: PropertySpec) -> pd.DataFrame:
    """Flags as pandas' nullable boolean, so Parquet stores them as bool with nulls whatever the values."""
    out = metrics.copy()
    for name, kind, _ in metric_columns(spec):
        if kind == "flag":
            out[name] = out[name].astype("boolean")
    return out


def _by_source(accepted: pd.DataFrame, quarantined: pd.DataFrame, spec: PropertySpec) -> dict[str, dict[str, Any]]:
    """Per source file: raw records, accepted, quarantined, and the quarantined by primary reason (they add up)."""
    def file_of(frame: pd.DataFrame) -> list[str]:
        return [str(json.loads(text).get("file")) for text in frame["provenance_json"]]

    accepted_files, quarantined_files = file_of(accepted), file_of(quarantined)
    out = {}
    for file in sorted(set(accepted_files) | set(quarantined_files)):
        codes = [code for code, where in zip(quarantined["primary_reason"], quarantined_files) if where == file]
        n_accepted = accepted_files.count(file)
        out[file] = {"n_raw": n_accepted + len(codes), "n_accepted": n_accepted, "n_quarantined": len(codes),
                     "reasons": _count(codes, spec)}
    return out


def _count(codes: Sequence[str], spec: PropertySpec) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: reason_priority(spec).index(item[0])))


def _report(spec, params, n_raw, accepted, quarantined, metrics, outcomes) -> dict[str, Any]:
    neumann: dict[str, Any] = {"neumann_tolerance": None, "neumann_pass_fraction": None,
                               "neumann_pass_fraction_evaluated": None, "neumann_residual_quantiles_accepted": None}
    if spec.is_tensor:
        evaluated = metrics["neumann_residual"].dropna().to_numpy(dtype=np.float64)
        neumann["neumann_tolerance"] = params.neumann_tolerance
        if evaluated.size:
            neumann["neumann_pass_fraction_evaluated"] = float(np.mean(evaluated <= params.neumann_tolerance))
        residuals = accepted["neumann_residual"].dropna().to_numpy(dtype=np.float64)
        if residuals.size:
            neumann["neumann_pass_fraction"] = float(np.mean(residuals <= params.neumann_tolerance))
            levels = (0.5, 0.9, 0.99, 1.0)
            neumann["neumann_residual_quantiles_accepted"] = {
                f"q{round(level * 100)}": float(q) for level, q in zip(levels, np.quantile(residuals, levels))}
    return {
        "property": spec.name,
        "n_raw": int(n_raw),
        "n_accepted": len(accepted),
        "n_quarantined": len(quarantined),
        "reasons": _count(quarantined["primary_reason"].tolist(), spec),
        "reasons_all": _count([code for codes in quarantined["reasons"] for code in codes], spec),
        "reason_counting": "reasons counts each quarantined record once, under its primary_reason (the first of "
                           "its codes in REASON_PRIORITY); reasons_all counts every code of every record",
        **neumann,
        "neumann_pass_fraction_definition": "neumann_pass_fraction: share of accepted records whose residual is at "
                                            "most neumann_tolerance (1.0 unless a check is broken, since the "
                                            "tolerance also gates acceptance); neumann_pass_fraction_evaluated: "
                                            "the same share over every record with a computable residual. "
                                            "How many needed a frame rotation or a projection is in "
                                            "<prop>-clean.json",
        # workers does not change results, and the report must not change with it
        "params": {**params.reported(), "symmetry_rtol": tensor_checks.SYMMETRY_RTOL},
        "suite": _project_relative(suite_path(spec.name)),
        "great_expectations_version": gx.__version__,
        "expectations": [outcome.stats() for outcome in outcomes],
    }


def _project_relative(path: Path) -> str:
    """`path` relative to the checkout (a suite outside it, e.g. a test's own, as it is)."""
    try:
        return str(path.relative_to(paths.PROJECT_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------------- output
def write_outputs(result: ValidationResult, accepted_path: str | os.PathLike, quarantine_path: str | os.PathLike,
                  report_path: str | os.PathLike) -> None:
    """Write the three outputs atomically; the files are a function of the inputs alone (no times, no ids)."""
    atomic_write_bytes(accepted_path, frame_parquet_bytes(result.accepted))
    atomic_write_bytes(quarantine_path, frame_parquet_bytes(result.quarantined))
    write_json(report_path, result.report)
