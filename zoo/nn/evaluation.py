"""Metrics of a trained model and of its baselines (zoo.nn.baselines) on the test split and, where the dataset has
one, on the external split (materials no training source holds: how the model generalises), overall, per crystal
system (test), and split by whether a record holds an element rare in training; plus a learning curve
(zoo.nn.learning_curve).

Metrics (every predictor, every group; quantities from zoo.core.derived, conventions from zoo.core.tensors):
    all tensors  component_mae: mean |pred - true| over the Voigt components (6x6 stiffness, 6 dielectric,
                 3x6 piezo), in the property's units; relative_frobenius_error: mean over records of
                 ||pred - true||_F / ||true||_F of the Cartesian tensors (records with a zero true tensor skipped)
    elastic      Voigt K_V, G_V (linear in the tensor, defined for every prediction) and Hill K, G, E: MAE (GPa)
                 and MAE/MAD, MAD being the mean absolute deviation of the true values from their mean (MatTen's
                 scaled error); fraction_not_positive_definite of the predicted 6x6. A prediction that is not
                 positive definite, or nearly singular, has no Hill moduli: counted in n_moduli_undefined, not
                 scored (zoo.properties.elastic.HILL_EIGENVALUE_FLOOR)
    dielectric   per part (electronic, then ionic and total when the model predicts them; metric names without a
                 part suffix are the electronic part's, the headline part, as in release 1.0.0 and AnisoNet):
                 eps_poly_mae, anisotropy_ratio_mae (a_r = lambda_max/lambda_min; a predicted tensor with
                 lambda_min <= 0 has no a_r and is counted, not scored), component_mae, relative_frobenius_error,
                 eigenvalue_violation_rate (the fraction of predictions with an eigenvalue below the part's floor:
                 1 for electronic and total, 0 for ionic; 1e-6 slack). The same eps_poly and a_r MAEs again with the
                 suffix _eps15 on the records whose true electronic eps_poly <= 15 (n_eps15 of them): AnisoNet's
                 data set filter, for comparability with its published figures (PropertySpec.published)
    piezo        max_longitudinal_mae: the largest longitudinal coefficient max_n |e_ijk n_i n_j n_k| (C/m^2)
    phonon       dos_mse (max-normalised DOS, mean over bins and records); r2_max_normalised (sklearn r2_score
                 over records x bins, variance_weighted: 1 - SSE / the true DOS's per-bin variance, Mat2Spec and
                 Chen et al.'s setting); mean frequency (zoo.core.derived.mean_frequency): MAE in cm^-1, mean
                 relative error and the fraction of records below 10% (Chen et al.'s figure);
                 wasserstein_cm: the mean over records of the 1-D Wasserstein distance (scipy) between the true and
                 predicted DOS as distributions over the grid (each normalised to sum 1, Mat2Spec's setting), cm^-1;
                 C_V at 300 K (zoo.core.derived.heat_capacity_cv, DOS normalised to 3N states): MAE in J/(K mol of
                 atoms) and in k_B per atom. A baseline's DOS is clipped at 0 before scoring (a DOS cannot be
                 negative; the model's softplus output already is)
    symmetry_violation (tensors)  mean over test records of zoo.core.symmetry.neumann_residual of the predicted tensor
                 under the record's point group (spglib analysis done once per structure and shared by all
                 predictors). The equivariant model's residual is not exactly 0: the structures are symmetric
                 only within the symmetry tolerance (0.1 A), and float32 rounding adds ~1e-6.
    <headline>_without_top_1pct (tensors)  the headline over the test records left when the ceil(1%) with the
                 largest true Frobenius norm are set aside: a figure a handful of extreme records cannot carry
    largest_component_sign_accuracy (a spec that is ``signed``: piezo)  over the polar test records (a non-zero true
                 tensor), the share whose predicted component at the true tensor's largest |e_ij| has the true sign
                 (a zero prediction has none); per point group in the document's ``sign_of_largest_component``
Headline metric and parity quantity per property: the spec's ``headline`` and ``parity``; each property's own
metrics are its spec's ``prediction_quantities`` and ``group_metrics`` (zoo/properties/<property>.py). A spec with
``zero_baseline`` (piezo) is scored against the all-zero tensor too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.config import GBMSettings, LearningCurveSettings, SymmetryConfig
from zoo.core.train_config import TrainSettings
from zoo.core.io import write_json
from zoo.data import splits
from zoo.data.datasets import HUB_DATASETS_DIR
from zoo.nn import baselines, graphs, learning_curve, training
from zoo.nn.model_config import ModelConfig
from zoo.properties.spec import finite_mean, tensor_errors

REPORTS_DIR = Path("data/reports")
SCORED_SPLITS = ("test", splits.EXTERNAL)
# An element is rare when fewer training records than this hold it (issue 11's definition).
RARE_ELEMENT_RECORDS = 5
MODEL_KEY = "model"
PREDICT_BATCH = 64
TOP_FRACTION = 0.01  # set aside for <headline>_without_top_1pct


def published_comparison(spec: properties.PropertySpec, model: Mapping[str, Any],
                         baselines_scores: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per published result of the property (PropertySpec.published): the paper's value beside ours and
    the best baseline's (lowest error, or highest R^2 and fraction below 10%)."""
    higher_is_better = {"r2_max_normalised", "fraction_mean_frequency_error_below_10pct"}
    rows = []
    for result in spec.published:
        scores = {name: values.get(result.metric) for name, values in baselines_scores.items()
                  if values.get(result.metric) is not None}
        pick = max if result.metric in higher_is_better else min
        best = pick(scores, key=scores.get) if scores else None
        rows.append({"metric": result.metric, "published": result.value, "source": result.source,
                     "setting": result.setting, "model": model.get(result.metric),
                     "best_baseline": best, "best_baseline_value": scores.get(best)})
    return rows


# ------------------------------------------------------------------------------------------------ predict
def predict(net, split: training.SplitData, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """(n, n_parts * dim) float64 predictions of `net` (the tensors' irreps, per predicted part, or the DOS) for
    every record of `split`."""
    net.eval()
    full = graphs.GraphBatch.collate(graphs.GraphCache(net.config.r_cut).graphs(split.structures))
    full = net.attach_geometry(full)
    out = []
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        out.append(net.predict_irreps(full.select(index)).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.irreps_out.dim))


# ------------------------------------------------------------------------------------- per-record values
def record_quantities(property_name: str, values: np.ndarray, structures: Sequence[Any],
                      parts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-record quantities of predicted or true values (irreps vectors of `parts`, concatenated, default the
    property's predicted_parts; or the DOS), NaN where undefined: a tensor's Cartesian and Voigt forms, and the
    spec's ``prediction_quantities``. For a property with several parts, the forms are passed to the spec as
    'parts' and 'cartesian_parts' (n, n_parts, *shape), and the spec names the per-part quantities."""
    spec = properties.get(property_name)
    values = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {}
    if spec.is_tensor:
        parts = tuple(spec.predicted_parts if parts is None else parts)
        cartesian = tensors.irreps_to_cartesian(values.reshape(len(values), len(parts), -1), spec.formula)
        if spec.has_parts:
            out = {"parts": parts, "cartesian_parts": cartesian}
        else:
            single = cartesian[:, 0]
            out = {"cartesian": single, "voigt": tensors.cartesian_to_voigt(single, spec.voigt_kind)}
    out.update(spec.prediction_quantities(values, structures, out))
    out.pop("parts", None)
    return out


# -------------------------------------------------------------------------------------------- aggregation
def group_metrics(property_name: str, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                  mask: np.ndarray) -> dict[str, Any]:
    """The metrics of the records selected by `mask` (module docstring): a tensor's component and Frobenius
    errors, and the spec's ``group_metrics``."""
    spec = properties.get(property_name)
    pick = lambda q, key: np.asarray(q[key])[mask]  # noqa: E731
    out: dict[str, Any] = {"n": int(mask.sum())}
    if not mask.any():
        return out  # an empty group (e.g. no record with a rare element) has no metrics
    if spec.is_tensor and "voigt" in pred:  # (a model of the ionic part alone has no headline-part tensor)
        out.update(tensor_errors(pick(pred, "voigt"), pick(true, "voigt"), pick(pred, "cartesian"),
                                 pick(true, "cartesian")))
    out.update(spec.group_metrics(pred, true, pick, mask))
    return out


def symmetry_violation(property_name: str, pred: Mapping[str, np.ndarray],
                       infos: Sequence[symmetry.SymmetryInfo]) -> float | None:
    """Mean Neumann residual of the predicted tensors under each record's point group (the largest over the parts
    of a property with several); None for the DOS and without `infos`."""
    spec = properties.get(property_name)
    if not spec.is_tensor or infos is None:
        return None
    if "cartesian_parts" in pred:
        return finite_mean([max(symmetry.neumann_residual(t, info) for t in parts)
                            for parts, info in zip(pred["cartesian_parts"], infos)])
    return finite_mean([symmetry.neumann_residual(t, info) for t, info in zip(pred["cartesian"], infos)])


# ---------------------------------------------------------------------------------------- predictors, scores
Predictor = Callable[[training.SplitData], np.ndarray]


def baseline_predictors(data: Mapping[str, training.SplitData], model_config: ModelConfig,
                        settings: TrainSettings | None, gbm: GBMSettings | None,
                        pool: training.FitPool | None = None) -> dict[str, Callable[[], Predictor]]:
    """name -> a function fitting that baseline on data['train'] (and, for the network, selecting on
    data['validation']) and returning its predictor: a split -> its predictions.

    One definition for the evaluate stage and for `zoo audit`, which re-derives a card's baseline metrics: the
    non-equivariant network (tensors only) is the model's trunk (`model_config`) trained with `settings`. A
    baseline whose settings are None is left out (an audit of a card that does not record them). The network's
    members train in `pool` (None: in this process).
    """
    train = data["train"]
    out: dict[str, Callable[[], Predictor]] = {"crystal_system_mean": lambda: baselines.CrystalSystemMean(train).predict}
    if properties.get(model_config.property).zero_baseline:
        out["zero_tensor"] = lambda: lambda split: np.zeros_like(split.targets)
    if gbm is not None:
        out["composition_gbm"] = lambda: baselines.CompositionGBM(train, gbm).predict
    if settings is not None and properties.get(model_config.property).is_tensor:
        overrides = baselines.non_equivariant_overrides(model_config)

        def fit_network() -> Predictor:
            net = training.fit_model(training.fitting_splits(data), settings, config_overrides=overrides,
                                     pool=pool).net
            return lambda split: predict(net, split)

        out["non_equivariant"] = fit_network
    return out


def baseline_settings(property_name: str, settings: TrainSettings,
                      gbm: GBMSettings) -> dict[str, Any]:
    """The settings the baselines were fitted with, as the metrics document records them (so that a model card
    carries them and `zoo audit` can fit the same baselines again)."""
    out: dict[str, Any] = {"composition_gbm": dataclasses.asdict(gbm)}
    if properties.get(property_name).is_tensor:
        out["non_equivariant"] = settings.as_dict()
    return out


def score(property_name: str, predictions: Mapping[str, np.ndarray], test: training.SplitData,
          infos: Sequence[symmetry.SymmetryInfo] | None) -> tuple[dict, dict, dict, dict]:
    """(overall, per_crystal_system, quantities, true) of each predictor's test-split predictions.

    overall: name -> group_metrics over every test record (plus symmetry_violation for tensors, which needs
    `infos`, the symmetry analysis of each test structure); per_crystal_system: name -> system -> group_metrics;
    quantities / true: record_quantities of the predictions / of the targets (for the plots).
    """
    spec = properties.get(property_name)
    true = record_quantities(spec.name, test.targets, test.structures, test.parts)
    quantities = {name: record_quantities(spec.name, values, test.structures, test.parts)
                  for name, values in predictions.items()}
    systems = np.asarray(test.crystal_systems)
    everything = np.ones(len(test), dtype=bool)
    overall, per_system = {}, {}
    trimmed = without_top(true["cartesian"]) if spec.is_tensor else None
    for name, q in quantities.items():
        overall[name] = group_metrics(spec.name, q, true, everything)
        if spec.is_tensor:
            overall[name]["symmetry_violation"] = symmetry_violation(spec.name, q, infos)
            # .get: a headline can be undefined for some predictions (elastic Hill moduli of a tensor not PD)
            overall[name][f"{spec.headline}_without_top_1pct"] = group_metrics(spec.name, q, true, trimmed).get(
                spec.headline)
        if spec.signed:
            overall[name]["largest_component_sign_accuracy"] = sign_of_largest_component(
                q["voigt"], true["voigt"], infos)["all"]["fraction"]
        per_system[name] = {system: group_metrics(spec.name, q, true, systems == system)
                            for system in sorted(set(systems))}
    return overall, per_system, quantities, true


def without_top(true_cartesian: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Mask of the records left when the ceil(fraction * n) with the largest true Frobenius norm are set aside (ties
    broken by position, so the mask is a function of the data)."""
    norms = np.sqrt((true_cartesian ** 2).reshape(len(true_cartesian), -1).sum(axis=1))
    mask = np.ones(len(norms), dtype=bool)
    mask[np.argsort(-norms, kind="stable")[:math.ceil(fraction * len(norms))]] = False
    return mask


def sign_of_largest_component(pred_voigt: np.ndarray, true_voigt: np.ndarray,
                              infos: Sequence[symmetry.SymmetryInfo]) -> dict[str, dict[str, Any]]:
    """Per point group (and 'all'), over the polar test records (non-zero true tensor): n, how many predictions
    have the true sign at the true tensor's largest |component| ('right'), and the fraction."""
    counts: dict[str, list[int]] = {"all": [0, 0]}
    for pred, true, info in zip(pred_voigt, true_voigt, infos):
        flat = np.abs(true).ravel()
        if flat.max() == 0.0:
            continue
        index = np.unravel_index(int(np.argmax(flat)), true.shape)
        right = int(np.sign(pred[index]) == np.sign(true[index]))
        for key in (info.point_group, "all"):
            counts.setdefault(key, [0, 0])
            counts[key][0] += 1
            counts[key][1] += right
    return {key: {"n": n, "right": right, "fraction": right / n if n else None}
            for key, (n, right) in sorted(counts.items())}


# ----------------------------------------------------------------------------------------------- the stage
def has_rare_element(split: training.SplitData, train_counts: Mapping[str, int],
                     threshold: int = RARE_ELEMENT_RECORDS) -> np.ndarray:
    """Per record of `split`: whether it holds an element that fewer than `threshold` training records hold."""
    return np.array([any(train_counts.get(str(element), 0) < threshold for element in structure.composition.elements)
                     for structure in split.structures], dtype=bool)


def rare_element_breakdown(property_name: str, train: training.SplitData, split: training.SplitData,
                           quantities: Mapping[str, Mapping[str, np.ndarray]],
                           true: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Each predictor's metrics on the records with an element rare in training and on the others."""
    counts = Counter(str(element) for structure in train.structures for element in structure.composition.elements)
    rare = has_rare_element(split, counts)
    held = sorted({str(e) for structure, flag in zip(split.structures, rare) if flag
                   for e in structure.composition.elements if counts.get(str(e), 0) < RARE_ELEMENT_RECORDS})
    return {"rare_elements_present": held,
            **{name: {"rare": group_metrics(property_name, q, true, rare),
                      "common": group_metrics(property_name, q, true, ~rare)} for name, q in quantities.items()}}


def evaluate_property(property_name: str, settings: TrainSettings, *,
                      gbm: GBMSettings, symmetry_settings: SymmetryConfig,
                      curve: LearningCurveSettings | None = None,
                      model_dir: str | os.PathLike | None = None,
                      datasets_root: str | os.PathLike = HUB_DATASETS_DIR,
                      reports_dir: str | os.PathLike = REPORTS_DIR, plots: bool = True, workers: int = 1,
                      log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The evaluate stage: score the trained model and the baselines (trained here, on the same split, the
    non-equivariant one with `settings`) on the test split and, where the dataset has one, the external split;
    with `curve`, the learning curve (zoo.nn.learning_curve). Writes ``<reports_dir>/<property>-metrics.json`` and
    ``<property>-metrics-per-crystal-system.json`` and the plots. Returns the metrics document, per_crystal_system
    included. The stage is one process (it writes the reports): a data-parallel profile's baseline is trained in one
    process, which takes the same steps (TrainSettings.single_process). The networks it trains (the learning curve's,
    the non-equivariant baseline's) train side by side in up to `workers` processes, the curve's first."""
    # Longer than ~60 lines: one sequential flow building the metrics document (its parts are functions already).
    settings = settings.single_process()
    spec = properties.get(property_name)
    model_dir = training.MODELS_DIR / spec.model_name if model_dir is None else Path(model_dir)
    loaded = training.load_model(model_dir)
    data, dataset = training.load_splits(spec.name, datasets_root)
    data = {name: training.for_parts(split, loaded.net.parts) for name, split in data.items()}
    if loaded.info["dataset"]["fingerprint"] != dataset.fingerprint:
        raise ValueError(f"{model_dir} was trained on {spec.dataset_name} {loaded.info['dataset']['fingerprint']}, "
                         f"but the dataset now is {dataset.fingerprint}: retrain it (dvc repro train@{spec.name})")
    timings: dict[str, float] = {}

    def timed(name: str, compute: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = compute()
        timings[name] = time.perf_counter() - started
        log(f"{name}: {timings[name]:.1f} s")
        return result

    with training.FitPool(workers) as pool:
        curve_measure = learning_curve.start(data, settings, curve.fractions, pool) \
            if curve is not None and spec.name in curve.properties else None
        document, results, scored = _evaluate_splits(spec, data, dataset, loaded, settings, gbm, symmetry_settings,
                                                      pool, timed)
        if curve_measure is not None:
            def scores(net, split: training.SplitData) -> dict[str, Any]:
                true = record_quantities(spec.name, split.targets, split.structures, split.parts)
                found = record_quantities(spec.name, predict(net, split), split.structures, split.parts)
                return group_metrics(spec.name, found, true, np.ones(len(split), dtype=bool))

            document["learning_curve"] = timed("learning curve", lambda: curve_measure(
                loaded.net, scored[-1], scores, (spec.headline, *spec.learning_curve_metrics), log))
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    # The per-crystal-system tables go to their own file so that `dvc metrics show` stays readable.
    document["per_crystal_system_file"] = per_system_json_path(reports_dir, spec.name).name
    write_json(metrics_path(reports_dir, spec.name), {k: v for k, v in document.items() if k != "per_crystal_system"})
    write_json(per_system_json_path(reports_dir, spec.name), document["per_crystal_system"])
    if plots:
        timed("plots", lambda: write_plots(spec.name, results, document, reports_dir))
    return document


def _evaluate_splits(spec, data, dataset, loaded, settings, gbm, symmetry_settings, pool, timed,
                     ) -> tuple[dict[str, Any], dict[str, tuple], list[str]]:
    """(the metrics document, score's results per split, the scored splits): the baselines fitted (the network's
    in `pool`), the model and each baseline scored on the test split and the external one where there is one."""
    scored = [name for name in SCORED_SPLITS if name in data]
    predictors: dict[str, Predictor] = {MODEL_KEY: lambda split: predict(loaded.net, split)}
    for name, fit_baseline in baseline_predictors(data, loaded.net.config, settings, gbm, pool).items():
        predictors[name] = timed(f"fitting {name}", fit_baseline)
    predictions = {split: {name: timed(f"{name} on {split}", lambda: predictor(data[split]))
                           for name, predictor in predictors.items()} for split in scored}
    results, symmetry_infos = {}, {}
    for split in scored:
        structures = data[split].structures
        symmetry_infos[split] = timed(f"symmetry analysis ({split})",
                                      lambda: [symmetry_settings.analyze(s) for s in structures]) \
            if spec.is_tensor else None
        results[split] = score(spec.name, predictions[split], data[split], symmetry_infos[split])
    return _document(spec, dataset, loaded, settings, gbm, data, results, symmetry_infos["test"]), results, scored


def _document(spec, dataset, loaded, settings, gbm, data, results, test_infos) -> dict[str, Any]:
    """The metrics document: the test split's metrics at the top (what model cards read), the other scored
    splits under their names, the rare-element breakdown of each."""
    test_scores, per_system, test_quantities, test_true = results["test"]
    test = data["test"]
    headline = spec.headline
    extra: dict[str, Any] = {}
    if spec.is_tensor:
        kept = without_top(test_true["cartesian"])
        extra["without_top_1pct"] = {"n_set_aside": int((~kept).sum()),
                                     "record_ids": [rid for rid, keep in zip(test.record_ids, kept) if not keep]}
    if spec.signed:
        extra["sign_of_largest_component"] = {
            name: sign_of_largest_component(q["voigt"], test_true["voigt"], test_infos)
            for name, q in test_quantities.items()}
    document = {
        "property": spec.name,
        "model_name": spec.model_name,
        "units": spec.units,
        "split": "test",
        "n_test": len(data["test"]),
        "headline": headline,
        MODEL_KEY: test_scores[MODEL_KEY],
        "baselines": {name: value for name, value in test_scores.items() if name != MODEL_KEY},
        "per_crystal_system": per_system,
        **extra,
    }
    for split, (scores, _, _, _) in results.items():
        if split != "test":
            document[split] = {"n": len(data[split]), MODEL_KEY: scores[MODEL_KEY],
                               "baselines": {name: value for name, value in scores.items() if name != MODEL_KEY}}
    document["rare_element_breakdown"] = {
        "definition": f"records holding an element that fewer than {RARE_ELEMENT_RECORDS} training records hold "
                      "('rare') vs the others ('common')",
        **{split: rare_element_breakdown(spec.name, data["train"], data[split], quantities, true)
           for split, (_, _, quantities, true) in results.items()}}
    document.update({
        "baseline_settings": baseline_settings(spec.name, settings, gbm),
        "dataset": {"name": dataset.name, "version": dataset.version, "fingerprint": dataset.fingerprint},
        "model_weights_sha256": loaded.info["weights"]["sha256"],
        "definitions": {
            "symmetry_violation": "mean over test records of zoo.core.symmetry.neumann_residual(predicted Cartesian "
                                  "tensor, point group of the record's structure)",
            "baselines": "zoo.nn.baselines (module docstring); trained on the same train split in this run, with "
                         "baseline_settings (non_equivariant: zoo.core.config.TrainSettings)",
            "external": "materials no training source holds (the dataset card's external split); never used for "
                        "training, model selection or early stopping",
        },
    })
    if not spec.is_tensor:
        document["definitions"]["non_equivariant"] = ("not applicable: the DOS is invariant, so the model's own head "
                                                      "is already invariant")
    document["definitions"].update(dict(spec.metric_definitions))
    document["published"] = published_comparison(spec, document[MODEL_KEY], document["baselines"])
    return document


# -------------------------------------------------------------------------------------------------- plots
def metrics_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-metrics.json"


def per_system_json_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-metrics-per-crystal-system.json"


def parity_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-parity.png"


def per_system_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-per-crystal-system.png"


def learning_curve_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-learning-curve.png"


def write_plots(property_name: str, results: Mapping[str, tuple], document: Mapping[str, Any],
                reports_dir: Path) -> None:
    """Parity plots of the spec's parity quantity for every predictor (one row per scored split); bars of the headline
    metric per crystal system (test); the learning curve where the document has one."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    key, label = properties.get(property_name).parity
    names = list(results["test"][2])
    figure, axes = plt.subplots(len(results), len(names), figsize=(3.2 * len(names), 3.4 * len(results)),
                                squeeze=False)
    for row, (split, (_, _, quantities, true)) in zip(axes, results.items()):
        for axis, name in zip(row, names):
            x, y = np.ravel(true[key]), np.ravel(quantities[name][key])
            finite = np.isfinite(x) & np.isfinite(y)
            axis.scatter(x[finite], y[finite], s=6, alpha=0.6)
            low, high = float(np.min(x[finite], initial=0)), float(np.max(x[finite], initial=1))
            axis.plot([low, high], [low, high], color="black", linewidth=0.8)
            axis.set_title(f"{name} ({split})", fontsize=9)
            axis.set_xlabel(f"true {label}", fontsize=8)
            axis.set_ylabel("predicted", fontsize=8)
    figure.tight_layout()
    figure.savefig(parity_path(reports_dir, property_name), dpi=110, metadata={"Software": None})
    plt.close(figure)

    headline = document["headline"]
    systems = sorted(document["per_crystal_system"][MODEL_KEY])
    figure, axis = plt.subplots(figsize=(1.2 * len(systems) + 2, 3.6))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [document["per_crystal_system"][name][s][headline] for s in systems]
        axis.bar(np.arange(len(systems)) + k * width, [np.nan if v is None else v for v in values], width, label=name)
    axis.set_xticks(np.arange(len(systems)) + 0.4 - width / 2, systems, rotation=30, fontsize=8)
    axis.set_ylabel(headline)
    axis.set_title(f"{property_name}: {headline} per crystal system (test)", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(per_system_path(reports_dir, property_name), dpi=110, metadata={"Software": None})
    plt.close(figure)
    # Always written (a DVC plot of every property); without a curve it says so.
    learning_curve.plot(document.get("learning_curve"), learning_curve_path(reports_dir, property_name),
                        property_name)
