"""Baselines the evaluate stage scores beside each model, all fitted on the same training split.

crystal_system_mean   the training-set mean target (irreps vector, i.e. the mean Cartesian tensor, or the mean DOS)
                      of the record's crystal system; the overall training mean for a system absent from training
composition_gbm       element-fraction features (118 atomic fractions, no structure) -> scikit-learn
                      HistGradientBoostingRegressor, one per target component (irreps components: the basis is
                      orthonormal, so their squared errors are the Frobenius errors)
non_equivariant       the model's trunk with an invariant head predicting the independent Voigt components
                      (ModelConfig head 'invariant_voigt'), trained by zoo.nn.training with the model's settings;
                      tensors only (the DOS is invariant, so the model itself is the invariant-head network)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.core.config import GBMSettings
from zoo.nn import models
from zoo.nn.model_config import ModelConfig
from zoo.nn.training import SplitData

# Composition features: one column per element Z = 1..MAX_ATOMIC_NUMBER.
N_ELEMENTS = models.MAX_ATOMIC_NUMBER


class CrystalSystemMean:
    """Mean training target per crystal system."""

    def __init__(self, train: SplitData):
        if len(train) == 0:
            raise ValueError("train must hold at least one record")
        systems = np.asarray(train.crystal_systems)
        self.overall = train.targets.mean(axis=0)
        self.means = {system: train.targets[systems == system].mean(axis=0) for system in sorted(set(systems))}

    def predict(self, split: SplitData) -> np.ndarray:
        return np.stack([self.means.get(system, self.overall) for system in split.crystal_systems]) \
            if len(split) else np.zeros((0, len(self.overall)))


def element_fractions(structures: Sequence[Any]) -> np.ndarray:
    """(n, 118) atomic fractions of each element (column Z - 1)."""
    features = np.zeros((len(structures), N_ELEMENTS))
    for row, structure in enumerate(structures):
        for element, fraction in structure.composition.fractional_composition.items():
            features[row, element.Z - 1] = fraction
    return features


class CompositionGBM:
    """Gradient boosting on element fractions, one regressor per target component."""

    def __init__(self, train: SplitData, settings: GBMSettings):
        from sklearn.ensemble import HistGradientBoostingRegressor

        features = element_fractions(train.structures)
        self.constant: dict[int, float] = {}
        self.regressors = {}
        for column in range(train.targets.shape[1]):
            target = train.targets[:, column]
            if np.ptp(target) == 0.0:  # e.g. a component the data never populates: nothing to learn
                self.constant[column] = float(target[0])
                continue
            regressor = HistGradientBoostingRegressor(
                max_iter=settings.max_iter, learning_rate=settings.learning_rate,
                max_leaf_nodes=settings.max_leaf_nodes, min_samples_leaf=settings.min_samples_leaf,
                early_stopping=False, random_state=settings.seed)
            self.regressors[column] = regressor.fit(features, target)
        self.dim = train.targets.shape[1]

    def predict(self, split: SplitData) -> np.ndarray:
        features = element_fractions(split.structures)
        out = np.zeros((len(split), self.dim))
        for column, value in self.constant.items():
            out[:, column] = value
        for column, regressor in self.regressors.items():
            out[:, column] = regressor.predict(features)
        return out


def non_equivariant_overrides(config: ModelConfig) -> dict[str, Any]:
    """ModelConfig fields that turn the model's trunk into the non-equivariant baseline: same trunk (every field
    but the head and the readout it reads), the invariant_voigt head with its default readout (scalars)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for derived_by_training in ("property", "seed", "avg_num_neighbors", "output_scale", "output_shift"):
        fields.pop(derived_by_training)
    fields.update(head="invariant_voigt", readout_irreps=None)
    return fields
