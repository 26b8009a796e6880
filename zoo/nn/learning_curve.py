"""Learning curve: how a model's error on held-out materials falls with the amount of training data.

For each fraction f of ``fractions`` (e.g. 25%, 50%, 100%), one network is trained with the model's own training
settings on the first round(f n) records of a fixed, seeded permutation of the training split (so the smaller sets
are nested in the larger ones), selecting on the whole validation split as always, and scored on the evaluated
split (the external split where the dataset has one). The 100% point is the trained model itself, or for an
ensemble its first member (the network the same settings give with the same seed): every point is one network
trained the same way. A curve still falling steeply at 100% says more data would help; a flat one that the model
is the limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo import properties
from zoo.core.config import LearningCurveSettings
from zoo.nn import models, training

__all__ = ["LearningCurveSettings", "check_properties", "plot", "start", "training_subset"]


def check_properties(settings: LearningCurveSettings) -> LearningCurveSettings:
    """The settings, once every property they name is one of the project's."""
    unknown = sorted(set(settings.properties) - set(properties.PROPERTIES))
    if unknown:
        raise ValueError(f"evaluate.learning_curve.properties names unknown properties {unknown}")
    return settings


def training_subset(train: training.SplitData, fraction: float, seed: int) -> training.SplitData:
    """The first round(fraction n) records of a permutation of the training split drawn from `seed`."""
    order = np.random.default_rng([seed, 2027]).permutation(len(train))
    return training.subset(train, np.sort(order[: max(1, round(fraction * len(train)))]))


def start(data: Mapping[str, training.SplitData], settings: training.TrainSettings, fractions: Sequence[float],
          pool: training.FitPool) -> Callable[..., dict[str, Any]]:
    """The learning curve in two steps: the networks of the points below 100% submitted to `pool` now (so that they
    train while the caller does other work), and ``measure``, which waits for them and scores the curve."""
    single = dataclasses.replace(settings, ensemble_size=1)
    subsets = {fraction: training_subset(data["train"], fraction, settings.seed) for fraction in fractions}
    fits = {fraction: training.submit_model({"train": subset, "validation": data["validation"]}, single, pool=pool)
            for fraction, subset in subsets.items() if not math.isclose(fraction, 1.0)}

    def measure(net, split: str, scores: Callable[[Any, training.SplitData], Mapping[str, Any]],
                metrics: Sequence[str], log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
        """The learning curve of `net` (the trained model) on data[split] (module docstring): `scores`(network,
        split) gives a network's metrics (zoo.nn.evaluation), of which `metrics` are kept per point."""
        full = net.members[0] if isinstance(net, models.Ensemble) else net
        points = []
        for fraction, subset in subsets.items():
            fitted = full if fraction not in fits else fits[fraction]().net
            found = scores(fitted, data[split])
            points.append({"fraction": fraction, "n_train": len(subset), **{key: found[key] for key in metrics}})
            log(f"learning curve {fraction:.0%}: {metrics[0]} {found[metrics[0]]:.4g}")
        return {"split": split, "seed": settings.seed, "points": points,
                "definition": "one network per point, the model's training settings (ensemble_size 1), on a nested "
                              "seeded subset of the training split; the 100% point is the model (an ensemble's "
                              "member 0); zoo.nn.learning_curve"}

    return measure


def plot(curve: Mapping[str, Any] | None, path: Path, property_name: str) -> None:
    """The curve's errors against the number of training records; a figure saying so where there is no curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if curve is None:
        figure = plt.figure(figsize=(4.6, 1.2))
        figure.text(0.5, 0.5, f"no learning curve for {property_name}\n(params evaluate.learning_curve.properties)",
                    ha="center", va="center", fontsize=9)
        figure.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(figure)
        return
    points = curve["points"]
    metrics = [key for key in points[0] if key.endswith("_mae") or key.endswith("_mse")]
    figure, axis = plt.subplots(figsize=(4.6, 3.4))
    for key in metrics:
        axis.plot([p["n_train"] for p in points], [p[key] for p in points], marker="o", label=key)
    axis.set_xlabel("training records")
    axis.set_ylabel(f"error on the {curve['split']} split")
    axis.set_title(f"learning curve ({curve['split']})", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
