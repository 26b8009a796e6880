"""Test-split metrics of a trained model and of its baselines (zoo.nn.baselines), overall and per crystal system.

Metrics (every predictor, every group; quantities from zoo.core.derived, conventions from zoo.core.tensors):
    all tensors  component_mae: mean |pred - true| over the Voigt components (6x6 stiffness, 6 dielectric,
                 3x6 piezo), in the property's units; relative_frobenius_error: mean over records of
                 ||pred - true||_F / ||true||_F of the Cartesian tensors (records with a zero true tensor skipped)
    elastic      Hill K, G, E: MAE (GPa) and MAE/MAD, MAD being the mean absolute deviation of the true values
                 from their mean (MatTen's scaled error); fraction_not_positive_definite of the predicted 6x6
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
Headline metric per property: HEADLINES.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import properties
from zoo.core import derived, symmetry, tensors
from zoo.core.io import write_json
from zoo.nn import baselines, graphs, models, training
from zoo.properties import PHONON_GRID_CM, limits

REPORTS_DIR = Path("data/reports")
HEADLINES = {"elastic": "k_vrh_mae", "dielectric": "eps_poly_mae", "piezo": "component_mae", "phonon": "dos_mse"}
MODEL_KEY = "model"
PREDICT_BATCH = 64
MEAN_FREQUENCY_TOLERANCE = 0.10
# AnisoNet's data set keeps eps_poly (electronic) <= 15 (Lou & Ganose 2024): metrics on that subset carry this suffix.
ANISONET_MAX_EPS_POLY = 15.0
COMPARABLE_SUFFIX = "_eps15"
# An eigenvalue more than this below its floor (eps >= 1, ionic >= 0) counts as a violation (float32 rounding).
FLOOR_SLACK = 1e-6


# What the metrics of a property mean, written into its metrics document (the module docstring says it at length).
METRIC_DEFINITIONS = {
    "dielectric": {
        "parts": "metric names without a part suffix are of the electronic part (the headline part); _ionic and "
                 "_total of the ionic part and of total = electronic + ionic",
        "_eps15": f"on the test records whose true electronic eps_poly <= {ANISONET_MAX_EPS_POLY:g} (n_eps15), "
                  "AnisoNet's data filter",
        "eigenvalue_violation_rate": f"fraction of predictions with an eigenvalue below the part's floor (1 for "
                                     f"electronic and total, 0 for ionic) by more than {FLOOR_SLACK:g}",
    },
    "phonon": {
        "r2_max_normalised": "sklearn r2_score(true, predicted max-normalised DOS, multioutput='variance_weighted')",
        "wasserstein_cm": "mean over records of scipy.stats.wasserstein_distance on the grid, DOS as weights "
                          "(sum-normalised), cm^-1",
        "cv_300k_mae_j_per_mol_k": "MAE of C_V(300 K) in J/(K mol of atoms), DOS normalised to 3N states "
                                   "(zoo.core.derived.heat_capacity_cv)",
        "mean_frequency_mae_cm": "MAE of the mean frequency int g w / int g (zoo.core.derived.mean_frequency), cm^-1",
        "grid_warning_recall": "share of the records whose true DOS is non-zero at 1000 cm^-1 that get the grid "
                               "warning (zoo.properties.limits.beyond_phonon_grid) from the predicted DOS",
        "grid_warning_precision": "share of the warned records whose true DOS is non-zero at 1000 cm^-1",
    },
}


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
    """Per-record derived quantities of predicted or true values (irreps vectors of `parts`, concatenated, default
    the property's predicted_parts; or the DOS), NaN where undefined."""
    spec = properties.get(property_name)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if not spec.is_tensor:
        return phonon_quantities(values, structures)
    parts = tuple(spec.predicted_parts if parts is None else parts)
    cartesian = tensors.irreps_to_cartesian(values.reshape(n, len(parts), -1), spec.formula)
    if spec.has_parts:
        return dielectric_quantities(spec, parts, cartesian)
    cartesian = cartesian[:, 0]
    out = {"cartesian": cartesian, "voigt": tensors.cartesian_to_voigt(cartesian, spec.voigt_kind)}
    if spec.name == "elastic":
        moduli = {key: np.full(n, np.nan) for key in ("k_vrh", "g_vrh", "y_mod")}
        eigenvalues = np.linalg.eigvalsh(out["voigt"])
        for i, c in enumerate(out["voigt"]):
            if np.abs(eigenvalues[i]).min() <= 1e-12 * np.abs(eigenvalues[i]).max():
                continue  # singular: no compliance, no Reuss bounds
            hill = derived.hill_moduli(c, np.linalg.inv(c))
            for key in moduli:
                moduli[key][i] = hill[key]
        out.update(moduli, min_eigenvalue=eigenvalues[:, 0])
    elif spec.name == "piezo":
        out["max_longitudinal"] = np.array([derived.piezo_properties(e)["max_longitudinal"] for e in out["voigt"]])
    return out


def part_suffix(spec: properties.PropertySpec, part: str) -> str:
    """'' for the target (headline) part, '_<part>' for the others: the names of per-part quantities and metrics."""
    return "" if part == spec.target_part else f"_{part}"


def dielectric_quantities(spec: properties.PropertySpec, parts: tuple[str, ...],
                          cartesian: np.ndarray) -> dict[str, np.ndarray]:
    """Per part (and the summed total when both summands are there; names: ``part_suffix``): the Cartesian tensor,
    its Voigt form, eps_poly, a_r (NaN where lambda_min <= 0) and the smallest eigenvalue's margin over the floor.
    "cartesian_parts" stacks every part's tensor (n, n_parts, 3, 3) for the symmetry check."""
    tensors_by_part = {part: cartesian[:, k] for k, part in enumerate(parts)}
    if spec.summed_part is not None and set(spec.summed_part[1]) <= set(parts):
        total, summands = spec.summed_part
        tensors_by_part[total] = sum(tensors_by_part[part] for part in summands)
    out: dict[str, np.ndarray] = {"cartesian_parts": np.stack(list(tensors_by_part.values()), axis=1)}
    for part, tensor in tensors_by_part.items():
        suffix = part_suffix(spec, part)
        eigenvalues = np.linalg.eigvalsh(tensor)
        positive = eigenvalues[:, 0] > 0
        out[f"cartesian{suffix}"] = tensor
        out[f"voigt{suffix}"] = tensors.cartesian_to_voigt(tensor, spec.voigt_kind)
        out[f"eps_poly{suffix}"] = eigenvalues.mean(axis=1)
        out[f"anisotropy_ratio{suffix}"] = np.where(
            positive, eigenvalues[:, -1] / np.where(positive, eigenvalues[:, 0], 1.0), np.nan)
        out[f"floor_margin{suffix}"] = eigenvalues[:, 0] - spec.eigenvalue_floor(part)
    return out


def phonon_quantities(values: np.ndarray, structures: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per record: the DOS (clipped at 0), mean frequency (cm^-1) and C_V at 300 K (k_B per atom and J/(K mol of
    atoms)), NaN for an all-zero DOS (no spectrum to average)."""
    dos = np.clip(values, 0.0, None)
    n = len(dos)
    mean_frequency, cv_kb, cv_molar = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i, (g, structure) in enumerate(zip(dos, structures)):
        if np.trapezoid(g, PHONON_GRID_CM) <= 0.0:
            continue
        mean_frequency[i] = derived.mean_frequency(PHONON_GRID_CM, g)
        cv = derived.heat_capacity_cv(PHONON_GRID_CM, g, len(structure), derived.CV_REFERENCE_TEMPERATURE_K,
                                      float(structure.composition.weight))
        cv_kb[i], cv_molar[i] = cv["cv_per_atom_kb"], cv["cv_j_per_mol_atoms_k"]
    warned = np.array([limits.beyond_phonon_grid(structure, g) is not None for structure, g in zip(structures, dos)],
                      dtype=bool)
    return {"dos": dos, "mean_frequency_cm": mean_frequency, "cv_300k_per_atom_kb": cv_kb,
            "cv_300k_j_per_mol_atoms_k": cv_molar, "grid_warning": warned}


# -------------------------------------------------------------------------------------------- aggregation
def _mean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _mae_pair(pred: np.ndarray, true: np.ndarray) -> tuple[float | None, int]:
    """MAE over records where both are defined, and the number of records where the prediction is not."""
    defined = np.isfinite(pred) & np.isfinite(true)
    undefined = int((~np.isfinite(pred) & np.isfinite(true)).sum())
    return (_mean(np.abs(pred[defined] - true[defined])) if defined.any() else None), undefined


def group_metrics(property_name: str, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                  mask: np.ndarray) -> dict[str, Any]:
    """The metrics of the records selected by `mask` (module docstring)."""
    spec = properties.get(property_name)
    pick = lambda q, key: np.asarray(q[key])[mask]  # noqa: E731
    out: dict[str, Any] = {"n": int(mask.sum())}
    if not spec.is_tensor:
        return {**out, **phonon_metrics(lambda q, key: pick(q, key), pred, true)}
    if spec.has_parts:
        return {**out, **dielectric_metrics(spec, pred, true, mask)}
    out.update(tensor_errors(pick(pred, "voigt"), pick(true, "voigt"), pick(pred, "cartesian"),
                             pick(true, "cartesian")))
    if spec.name == "elastic":
        for key in ("k_vrh", "g_vrh", "y_mod"):
            truth = pick(true, key)
            mae, undefined = _mae_pair(pick(pred, key), truth)
            mad = float(np.abs(truth - truth.mean()).mean()) if truth.size else 0.0
            out[f"{key}_mae"] = mae
            out[f"{key}_mae_over_mad"] = mae / mad if mae is not None and mad > 0 else None
        out["n_moduli_undefined"] = undefined
        out["fraction_not_positive_definite"] = float(np.mean(pick(pred, "min_eigenvalue") <= 0)) \
            if mask.any() else None
    elif spec.name == "piezo":
        out["max_longitudinal_mae"], _ = _mae_pair(pick(pred, "max_longitudinal"), pick(true, "max_longitudinal"))
    return out


def tensor_errors(voigt_pred: np.ndarray, voigt_true: np.ndarray, cart_pred: np.ndarray,
                  cart_true: np.ndarray) -> dict[str, float | None]:
    """component_mae (over the Voigt components) and relative_frobenius_error (records with a non-zero true tensor)."""
    n = len(cart_true)
    axes = tuple(range(1, cart_true.ndim))
    norms = np.sqrt((cart_true ** 2).sum(axis=axes))
    nonzero = norms > 0
    return {"component_mae": _mean(np.abs(voigt_pred - voigt_true).reshape(n, -1).mean(axis=1)),
            "relative_frobenius_error": _mean(np.sqrt(((cart_pred - cart_true) ** 2).sum(axis=axes))[nonzero]
                                              / norms[nonzero])}


def dielectric_metrics(spec: properties.PropertySpec, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                       mask: np.ndarray) -> dict[str, Any]:
    """The per-part metrics (module docstring) of the records selected by `mask`, and on its eps15 subset."""
    out: dict[str, Any] = {}
    # (a model of the ionic part alone has no electronic truth to select by: no subset)
    comparable = mask & (np.asarray(true["eps_poly"]) <= ANISONET_MAX_EPS_POLY) if "eps_poly" in true else None
    for part in spec.tensor_parts:
        suffix = part_suffix(spec, part)
        if f"eps_poly{suffix}" not in pred:
            continue
        # a_r (and the relative error) of a part whose eigenvalues may be 0 (ionic) divide by near-zeros: not reported
        with_ratio = spec.eigenvalue_floor(part) > 0
        for name, selected in (("", mask), (COMPARABLE_SUFFIX, comparable)):
            if selected is None:
                continue
            eps_true, eps_pred = np.asarray(true[f"eps_poly{suffix}"])[selected], \
                np.asarray(pred[f"eps_poly{suffix}"])[selected]
            out[f"eps_poly_mae{suffix}{name}"], _ = _mae_pair(eps_pred, eps_true)
            if with_ratio:
                out[f"anisotropy_ratio_mae{suffix}{name}"], undefined = _mae_pair(
                    np.asarray(pred[f"anisotropy_ratio{suffix}"])[selected],
                    np.asarray(true[f"anisotropy_ratio{suffix}"])[selected])
                if not name:
                    out[f"n_anisotropy_ratio_undefined{suffix}"] = undefined
        errors = tensor_errors(*(np.asarray(q[f"{key}{suffix}"])[mask] for key in ("voigt", "cartesian")
                                 for q in (pred, true)))
        out[f"component_mae{suffix}"] = errors["component_mae"]
        if with_ratio:
            out[f"relative_frobenius_error{suffix}"] = errors["relative_frobenius_error"]
        margins = np.asarray(pred[f"floor_margin{suffix}"])[mask]
        out[f"eigenvalue_violation_rate{suffix}"] = float(np.mean(margins < -FLOOR_SLACK)) if margins.size else None
    if comparable is not None:
        out[f"n{COMPARABLE_SUFFIX}"] = int(comparable.sum())
    return out


def phonon_metrics(pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], pred: Mapping[str, np.ndarray],
                   true: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The DOS metrics (module docstring) of the records `pick` selects."""
    from scipy.stats import wasserstein_distance
    from sklearn.metrics import r2_score

    dos_true, dos_pred = pick(true, "dos"), pick(pred, "dos")
    out: dict[str, Any] = {"dos_mse": _mean(((dos_pred - dos_true) ** 2).mean(axis=1))}
    out["r2_max_normalised"] = float(r2_score(dos_true, dos_pred, multioutput="variance_weighted")) \
        if len(dos_true) >= 2 else None
    distances = [wasserstein_distance(PHONON_GRID_CM, PHONON_GRID_CM, g, h) if g.sum() > 0 and h.sum() > 0
                 else np.nan for g, h in zip(dos_true, dos_pred)]
    out["wasserstein_cm"] = _mean(distances)
    mean_true, mean_pred = pick(true, "mean_frequency_cm"), pick(pred, "mean_frequency_cm")
    out["mean_frequency_mae_cm"], _ = _mae_pair(mean_pred, mean_true)
    relative = np.abs(mean_pred - mean_true) / mean_true
    out["mean_frequency_relative_error"] = _mean(relative)
    out["fraction_mean_frequency_error_below_10pct"] = float(np.mean(np.nan_to_num(relative, nan=np.inf)
                                                                     < MEAN_FREQUENCY_TOLERANCE)) \
        if relative.size else None
    for key, unit in (("cv_300k_per_atom_kb", "kb_per_atom"), ("cv_300k_j_per_mol_atoms_k", "j_per_mol_k")):
        out[f"cv_300k_mae_{unit}"], _ = _mae_pair(pick(pred, key), pick(true, key))
    # The grid warning (zoo.properties.limits.beyond_phonon_grid) against the truth: a true DOS non-zero at the edge
    reaches = dos_true[:, -1] > 0
    warned = pick(pred, "grid_warning")
    out["grid_warning_recall"] = float((warned & reaches).sum() / reaches.sum()) if reaches.any() else None
    out["grid_warning_precision"] = float((warned & reaches).sum() / warned.sum()) if warned.any() else None
    return out


def symmetry_violation(property_name: str, pred: Mapping[str, np.ndarray],
                       infos: Sequence[symmetry.SymmetryInfo]) -> float | None:
    """Mean Neumann residual of the predicted tensors under each record's point group (the largest over the parts
    of a property with several); None for the DOS and without `infos`."""
    spec = properties.get(property_name)
    if not spec.is_tensor or infos is None:
        return None
    if spec.has_parts:
        return _mean([max(symmetry.neumann_residual(t, info) for t in parts)
                      for parts, info in zip(pred["cartesian_parts"], infos)])
    return _mean([symmetry.neumann_residual(t, info) for t, info in zip(pred["cartesian"], infos)])


# ---------------------------------------------------------------------------------------- predictors, scores
def baseline_predictors(data: Mapping[str, training.SplitData], model_config: models.ModelConfig,
                        settings: training.TrainSettings | None,
                        gbm: baselines.GBMSettings | None) -> dict[str, Callable[[], np.ndarray]]:
    """name -> a function fitting that baseline on data['train'] and returning its test-split predictions.

    One definition for the evaluate stage and for `zoo audit`, which re-derives a card's baseline metrics: the
    non-equivariant network (tensors only) is the model's trunk (`model_config`) trained with `settings`. A
    baseline whose settings are None is left out (an audit of a card that does not record them).
    """
    train, test = data["train"], data["test"]
    out: dict[str, Callable[[], np.ndarray]] = {
        "crystal_system_mean": lambda: baselines.CrystalSystemMean(train).predict(test)}
    if gbm is not None:
        out["composition_gbm"] = lambda: baselines.CompositionGBM(train, gbm).predict(test)
    if settings is not None and properties.get(model_config.property).is_tensor:
        overrides = baselines.non_equivariant_overrides(model_config)
        out["non_equivariant"] = lambda: predict(training.fit_model(data, settings, config_overrides=overrides).net,
                                                 test)
    return out


def baseline_settings(property_name: str, settings: training.TrainSettings,
                      gbm: baselines.GBMSettings) -> dict[str, Any]:
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
    for name, q in quantities.items():
        overall[name] = group_metrics(spec.name, q, true, everything)
        if spec.is_tensor:
            overall[name]["symmetry_violation"] = symmetry_violation(spec.name, q, infos)
        per_system[name] = {system: group_metrics(spec.name, q, true, systems == system)
                            for system in sorted(set(systems))}
    return overall, per_system, quantities, true


# ----------------------------------------------------------------------------------------------- the stage
def evaluate_property(property_name: str, settings: training.TrainSettings, *,
                      gbm: baselines.GBMSettings = baselines.GBMSettings(),
                      model_dir: str | os.PathLike | None = None,
                      datasets_root: str | os.PathLike = training.zoo_datasets.HUB_DATASETS_DIR,
                      reports_dir: str | os.PathLike = REPORTS_DIR, plots: bool = True,
                      log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The evaluate stage: score the trained model and the baselines (trained here, on the same split, the
    non-equivariant one with `settings`) on the test split; write ``<reports_dir>/<property>-metrics.json`` and
    ``<property>-metrics-per-crystal-system.json`` and the parity and per-crystal-system plots. Returns the metrics
    document, per_crystal_system included."""
    spec = properties.get(property_name)
    model_dir = training.MODELS_DIR / spec.model_name if model_dir is None else Path(model_dir)
    loaded = training.load_model(model_dir)
    data, dataset = training.load_splits(spec.name, datasets_root)
    data = {name: training.for_parts(split, loaded.net.parts) for name, split in data.items()}
    if loaded.info["dataset"]["fingerprint"] != dataset.fingerprint:
        raise ValueError(f"{model_dir} was trained on {spec.dataset_name} {loaded.info['dataset']['fingerprint']}, "
                         f"but the dataset now is {dataset.fingerprint}: retrain it (dvc repro train@{spec.name})")
    test = data["test"]
    timings: dict[str, float] = {}

    def timed(name: str, compute: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = compute()
        timings[name] = time.perf_counter() - started
        log(f"{name}: {timings[name]:.1f} s")
        return result

    predictions = {MODEL_KEY: timed("model", lambda: predict(loaded.net, test))}
    for name, compute in baseline_predictors(data, loaded.net.config, settings, gbm).items():
        predictions[name] = timed(name, compute)
    infos = timed("symmetry analysis", lambda: [symmetry.analyze(s) for s in test.structures]) \
        if spec.is_tensor else None
    scored, per_system, quantities, true = score(spec.name, predictions, test, infos)
    headline = HEADLINES[spec.name]
    document = {
        "property": spec.name,
        "model_name": spec.model_name,
        "units": spec.units,
        "split": "test",
        "n_test": len(test),
        "headline": headline,
        MODEL_KEY: scored.pop(MODEL_KEY),
        "baselines": scored,
        "per_crystal_system": per_system,
        "baseline_settings": baseline_settings(spec.name, settings, gbm),
        "dataset": {"name": dataset.name, "version": dataset.version, "fingerprint": dataset.fingerprint},
        "model_weights_sha256": loaded.info["weights"]["sha256"],
        "definitions": {
            "symmetry_violation": "mean over test records of zoo.core.symmetry.neumann_residual(predicted Cartesian "
                                  "tensor, point group of the record's structure)",
            "baselines": "zoo.nn.baselines (module docstring); trained on the same train split in this run, with "
                         "baseline_settings (non_equivariant: zoo.nn.training.TrainSettings)",
        },
    }
    if not spec.is_tensor:
        document["definitions"]["non_equivariant"] = ("not applicable: the DOS is invariant, so the model's own head "
                                                      "is already invariant")
    document["definitions"].update(METRIC_DEFINITIONS.get(spec.name, {}))
    document["published"] = published_comparison(spec, document[MODEL_KEY], document["baselines"])
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    # The per-crystal-system tables go to their own file so that `dvc metrics show` stays readable.
    document["per_crystal_system_file"] = per_system_json_path(reports_dir, spec.name).name
    write_json(metrics_path(reports_dir, spec.name), {k: v for k, v in document.items() if k != "per_crystal_system"})
    write_json(per_system_json_path(reports_dir, spec.name), per_system)
    if plots:
        timed("plots", lambda: write_plots(spec.name, quantities, true, document, reports_dir))
    return document


# -------------------------------------------------------------------------------------------------- plots
PARITY_QUANTITY = {"elastic": ("k_vrh", "Hill bulk modulus K (GPa)"),
                   "dielectric": ("eps_poly", "eps_poly (electronic)"),
                   "piezo": ("voigt", "piezo components e_ij (C/m^2)"),
                   "phonon": ("mean_frequency_cm", "mean phonon frequency (cm^-1)")}


def metrics_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-metrics.json"


def per_system_json_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-metrics-per-crystal-system.json"


def parity_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-parity.png"


def per_system_path(reports_dir: Path, property_name: str) -> Path:
    return Path(reports_dir) / f"{property_name}-per-crystal-system.png"


def write_plots(property_name: str, quantities: Mapping[str, Mapping[str, np.ndarray]],
                true: Mapping[str, np.ndarray], document: Mapping[str, Any], reports_dir: Path) -> None:
    """Parity plot of PARITY_QUANTITY for every predictor; bars of the headline metric per crystal system."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    key, label = PARITY_QUANTITY[property_name]
    names = list(quantities)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names):
        x, y = np.ravel(true[key]), np.ravel(quantities[name][key])
        finite = np.isfinite(x) & np.isfinite(y)
        axis.scatter(x[finite], y[finite], s=6, alpha=0.6)
        low, high = float(np.min(x[finite], initial=0)), float(np.max(x[finite], initial=1))
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        axis.set_title(name, fontsize=9)
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
