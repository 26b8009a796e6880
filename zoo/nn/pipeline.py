"""The learning stages of dvc.yaml (train, evaluate), one function each: read the params file's sections
(zoo.core.config), run the stage on one property, say what happened. The stage scripts only parse arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from zoo import properties
from zoo.core.config import load_section
from zoo.nn import evaluation, learning_curve, training

LIVE_DIR = Path("data/reports/train")
STAGE_ERRORS = (ValueError, FileNotFoundError)


def train_stage(prop: str, params_path: Path, profile: str | None = None,
                say: Callable[[str], None] = print, *, models_root: Path = training.MODELS_DIR,
                live_dir: Path = LIVE_DIR) -> None:
    """data/models/matten-<prop>/ (and the dvclive metrics in data/reports/train/<prop>/) with the `train` profile
    (`profile` overrides train.profile for one run); `models_root` and `live_dir` replace data/models and
    data/reports/train (the release stage trains beside the pipeline's models, resuming in <models_root>/.resume)."""
    section = load_section("train", params_path)
    profile, settings = training.select_profile(section, profile, prop)
    started = time.perf_counter()
    folder, fitted = training.train_property(prop, settings, profile=profile, models_root=models_root,
                                             live_dir=Path(live_dir) / prop, workers=section.workers)
    elapsed = time.perf_counter() - started
    if fitted.global_rank != 0:
        return  # another process of a data-parallel run: rank 0 reports
    for result in fitted.members:
        epochs = result.epoch_seconds
        resumed = f", resumed after {result.resumed_after_epochs} epochs" \
            if result.resumed_after_epochs is not None else ""
        say(f"train {prop} ({profile}, seed {result.config.seed}): {result.epochs_run} epochs{resumed}, best "
            f"{result.best_epoch} (val loss {result.history[result.best_epoch]['val_loss']:.4f}"
            f"{', stopped early' if result.stopped_early else ''}); epoch time median "
            f"{sorted(epochs)[len(epochs) // 2] if epochs else float('nan'):.1f} s, setup {result.setup_seconds:.1f} s")
    say(f"train {prop}: {len(fitted.members)} network(s), total {elapsed:.1f} s -> {folder}")


def evaluate_stage(prop: str, params_path: Path, profile: str | None = None, say: Callable[[str], None] = print,
                   log: Callable[[str], None] = print, *, models_root: Path = training.MODELS_DIR,
                   reports_dir: Path = evaluation.REPORTS_DIR) -> None:
    """data/reports/<prop>-metrics.json and the plots: the model (in `models_root`) and its baselines on the test
    split and, where the dataset has one, the external split, written to `reports_dir`; the learning curve for the
    properties evaluate.learning_curve names."""
    train_section = load_section("train", params_path)
    profile, settings = training.select_profile(train_section, profile, prop)
    section = load_section("evaluate", params_path)
    curve = learning_curve.check_properties(section.learning_curve)
    started = time.perf_counter()
    document = evaluation.evaluate_property(prop, settings, gbm=section.composition_gbm, curve=curve,
                                            symmetry_settings=load_section("symmetry", params_path),
                                            model_dir=Path(models_root) / properties.get(prop).model_name,
                                            reports_dir=reports_dir, workers=train_section.workers,
                                            log=lambda line: log(f"evaluate {prop}: {line}"))
    elapsed = time.perf_counter() - started
    headline = document["headline"]
    scores = ", ".join(f"{name} {_value(metrics[headline])}" for name, metrics in document["baselines"].items())
    external = document.get("external")
    beyond = f"; external {headline} model {_value(external['model'][headline])}" if external else ""
    say(f"evaluate {prop} ({profile}): {headline} model {_value(document['model'][headline])}; baselines "
        f"{scores}{beyond}; {elapsed:.1f} s -> {evaluation.metrics_path(Path(reports_dir), prop)}")


def _value(metric: float | None) -> str:
    """A metric for the summary line; None where no record had it defined (e.g. Hill moduli of no positive definite
    prediction)."""
    return "undefined" if metric is None else f"{metric:.4g}"
