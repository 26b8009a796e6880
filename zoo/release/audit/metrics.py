"""The metrics part of a model audit: the card's printed tables against its header, and every test metric of the
card (model and baselines, overall and per crystal system) against the checkpoint re-evaluated, the deterministic
baselines refitted and, with retrain, the networks retrained."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core.config import GBMSettings, SymmetryConfig
from zoo.core.train_config import TrainSettings
from zoo.nn import evaluation, training
from zoo.release import model_card
from zoo.release.audit.report import Report, Step, listed

# Tolerance on the metrics of retrained networks. On the CPU with the recorded seed retraining is bit-identical,
# so the metrics agree exactly; 1e-3 relative is the resolution of the card's 4 printed significant digits, the
# most a retraining elsewhere (other kernels, another thread count) can be held to.
RETRAIN_RTOL = 1e-3
MODEL_KEY = evaluation.MODEL_KEY
RETRAINED_KEY = "retrained model"
NON_EQUIVARIANT = "non_equivariant"


def printed_differences(printed: Mapping[str, Any], header: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(cell, header value as printed, printed value) for every printed cell that is not its header value."""
    show = printer(header)
    out = []
    scores = {MODEL_KEY: header.get("model", {}), **header.get("baselines", {})}
    for predictor, values in printed["metrics"].items():
        for metric, text in values.items():
            expected = show(scores.get(predictor, {}), metric)
            if text != expected:
                out.append((f"{predictor} {metric}", expected, text))
    systems = header.get("per_crystal_system", {})
    metric = printed["per_crystal_system"]["metric"]
    for predictor, values in printed["per_crystal_system"]["values"].items():
        for system, text in values.items():
            expected = show(systems.get(predictor, {}).get(system, {}), metric)
            if text != expected:
                out.append((f"{predictor} {system} {metric}", expected, text))
    for system, text in printed["per_crystal_system"]["n"].items():
        expected = show(systems.get(MODEL_KEY, {}).get(system, {}), "n")
        if text != expected:
            out.append((f"{system} n", expected, text))
    return out


def printer(test_metrics: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], str]:
    """scores, key -> the value as the card prints it (with the format the card records), or 'absent'."""
    float_format = test_metrics.get("printed_format", model_card.PRINTED_FORMAT)
    return lambda scores, key: model_card.format_metric(scores[key], float_format) if key in scores else "absent"


def metric_checks(report: Report, card: Mapping[str, Any], info: Mapping[str, Any], model_folder: Path,
                   datasets_root: Path, spec: properties.PropertySpec, retrain: bool, symmetry: SymmetryConfig,
                   step: Step) -> None:
    """Re-evaluate the checkpoint and the card's baselines on the test split and compare with the card."""
    # Longer than ~60 lines: the predictions of every predictor are gathered, then compared, in one pass.
    test_metrics = card["test_metrics"]
    with step(f"loading {spec.dataset_name} and the checkpoint"):
        data, _ = training.load_splits(spec.name, datasets_root)
        loaded = training.load_model(model_folder)
        data = {name: training.for_parts(split, loaded.net.parts) for name, split in data.items()}
    test = data["test"]
    recorded = test_metrics.get("baseline_settings") or {}
    gbm = GBMSettings.from_params(recorded["composition_gbm"]) if "composition_gbm" in recorded else None
    baseline_training = _cpu(TrainSettings.from_record(recorded[NON_EQUIVARIANT])) \
        if NON_EQUIVARIANT in recorded and retrain else None
    predictors = evaluation.baseline_predictors(data, loaded.net.config, baseline_training, gbm)

    with step(f"predicting the test split ({len(test)} structures)"):
        predictions = {MODEL_KEY: evaluation.predict(loaded.net, test)}
    claimed_baselines = dict(test_metrics.get("baselines") or {})
    unchecked = []  # rows of the baselines not re-derived, added after the compared ones
    for name in claimed_baselines:
        if name == NON_EQUIVARIANT and not retrain:
            unchecked.append((f"metrics {name}", "card vs a retrained baseline", "-",
                              "not checked: a trained network, re-derived only with --retrain", None))
        elif name not in predictors:
            missing = "settings not recorded in the card" if name in ("composition_gbm", NON_EQUIVARIANT) else \
                "a baseline this code does not know"
            unchecked.append((f"metrics {name}", "card vs refitted baseline", "re-derivable", missing, False))
        else:
            with step(f"fitting the {name} baseline" + (" (training a network)" if name == NON_EQUIVARIANT else "")):
                predictions[name] = predictors[name]()(test)
    if retrain:
        settings = _cpu(TrainSettings.from_record(
            {key: value for key, value in info["training"].items() if key != "profile"}))
        with step(f"retraining {info['model_name']} with the recorded settings (seed {settings.seed}, up to "
                  f"{settings.max_epochs} epochs on {settings.accelerator})"):
            result = training.fit_model(training.fitting_splits(data), settings)
        _weight_check(report, loaded.net, result.net)
        predictions[RETRAINED_KEY] = evaluation.predict(result.net, test)
    infos = None
    if spec.is_tensor:
        with step("symmetry analysis of the test structures"):
            infos = [symmetry.analyze(structure) for structure in test.structures]
    overall, per_system, _, _ = evaluation.score(spec.name, predictions, test, infos)

    # The model's claims: its metrics, the test-split size and the headline value `zoo info` shows.
    headline = card.get("headline_metric") or {}
    model_claims = {**test_metrics.get("model", {}), "n_test": test_metrics.get("n_test"),
                    f"headline_metric {headline.get('name')}": headline.get("value")}

    def recomputed(key: str) -> dict[str, Any]:
        return {**overall[key], "n_test": len(test), f"headline_metric {test_metrics.get('headline')}":
                overall[key].get(test_metrics.get("headline"))}

    systems = test_metrics.get("per_crystal_system") or {}
    compare = functools.partial(_compare, report, show=printer(test_metrics))
    compare(MODEL_KEY, "card vs the checkpoint re-evaluated on the test split", model_claims,
             systems.get(MODEL_KEY, {}), recomputed(MODEL_KEY), per_system[MODEL_KEY], None)
    how = {"crystal_system_mean": "refitted on the train split", "composition_gbm": "refitted with the recorded "
           "GBM settings", NON_EQUIVARIANT: "retrained with the recorded settings", "zero_tensor": "recomputed"}
    for name, claims in claimed_baselines.items():
        if name in overall:
            compare(name, f"card vs the baseline {how[name]}", claims, systems.get(name, {}), overall[name],
                     per_system[name], RETRAIN_RTOL if name == NON_EQUIVARIANT else None)
    if retrain:
        compare(RETRAINED_KEY, "card vs the model retrained with the recorded settings", model_claims,
                 systems.get(MODEL_KEY, {}), recomputed(RETRAINED_KEY), per_system[RETRAINED_KEY], RETRAIN_RTOL)
    for row in unchecked:
        report.add(*row)


def _cpu(settings: TrainSettings) -> TrainSettings:
    """The recorded settings for a retraining here: 'auto' resolved to the CPU (where runs are bit-identical), no
    progress bar (it would fight the audit's own display; it does not touch the numbers), one process: a
    data-parallel run's steps take the same structures in one process (TrainSettings.batch_size), so its weights
    come back to float rounding (the summation order differs), not bit for bit."""
    return dataclasses.replace(settings.single_process(), progress_bar=False,
                               accelerator="cpu" if settings.accelerator == "auto" else settings.accelerator)


def _weight_check(report: Report, original, retrained) -> None:
    """The retrained network against the checkpoint: same ModelConfig (which training derives partly from the
    data), then the largest absolute difference over all weights."""
    config = dataclasses.asdict(retrained.config)
    config_differs = sorted(k for k, v in dataclasses.asdict(original.config).items() if config[k] != v)
    if config_differs:
        report.add("retrain weights", "retrained vs checkpoint", "the same ModelConfig",
                   f"ModelConfig differs in {', '.join(config_differs)}", False)
        return
    ours, theirs = original.state_dict(), retrained.state_dict()
    largest = max((float((ours[k].double() - theirs[k].double()).abs().max()) for k in ours if ours[k].numel()),
                  default=0.0)
    report.add("retrain weights", f"retrained vs checkpoint, {len(ours)} tensors",
               "bit-identical (max |dw| = 0: same seed, deterministic CPU kernels)", f"max |dw| = {largest:.3g}",
               largest == 0.0)


def _compare(report: Report, name: str, compared: str, claims: Mapping[str, Any], system_claims: Mapping[str, Any],
             overall: Mapping[str, Any], per_system: Mapping[str, Any], rtol: float | None, *,
             show: Callable[[Mapping[str, Any], str], str]) -> None:
    """Two rows: the overall metrics and the per-crystal-system ones of `name`, card vs recomputed, as `show`
    prints them (rtol None) or within rtol (retrained networks)."""
    flat_claims = {f"{system} {metric}": value for system, scores in system_claims.items()
                   for metric, value in scores.items()}
    flat_found = {f"{system} {metric}": value for system, scores in per_system.items()
                  for metric, value in scores.items()}
    for label, claimed, found in ((f"metrics {name}", claims, overall),
                                  (f"metrics {name} per crystal system", flat_claims, flat_found)):
        differences, largest = [], 0.0
        for key, value in claimed.items():
            if key not in found:
                differences.append((key, show(claimed, key), "not computed"))
                continue
            if rtol is None:
                same = show(claimed, key) == show(found, key)
            else:
                delta = _relative_delta(value, found[key])
                largest = max(largest, delta)
                same = delta <= rtol
            if not same:
                differences.append((key, show(claimed, key), show(found, key)))
        if rtol is None:
            expected = listed([d[:2] for d in differences]) or f"{len(claimed)} values as the card prints them"
            shown = listed([(d[0], d[2]) for d in differences]) or "all equal"
        else:
            expected = listed([d[:2] for d in differences]) or f"{len(claimed)} values within rel. {rtol:g}"
            shown = listed([(d[0], d[2]) for d in differences]) or f"max rel. difference {largest:.2g}"
        report.add(label, compared, expected, shown, bool(claimed) and not differences)


def _relative_delta(claimed: Any, found: Any) -> float:
    if claimed is None or found is None:
        return 0.0 if claimed is found else math.inf
    scale = max(abs(claimed), abs(found))
    return 0.0 if scale == 0 else abs(claimed - found) / scale
