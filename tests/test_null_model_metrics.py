"""The metrics that keep a null model from hiding (zoo.nn.evaluation): the all-zero tensor as piezo's baseline,
the headline without the top 1% of test records, and the sign of the largest component per point group."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.nn import evaluation, training
from zoo.nn.model_config import ModelConfig


def test_the_top_records_set_aside_are_the_largest_by_norm():
    norms = np.array([0.5, 3.0, 0.1, 2.0] * 50)  # 200 records: ceil(1%) = 2 set aside
    cartesian = norms[:, None, None, None] * np.ones((1, 3, 3, 3)) / np.sqrt(27)
    mask = evaluation.without_top(cartesian)
    assert (~mask).sum() == 2 and set(np.flatnonzero(~mask)) == {1, 5}  # the first two of the largest, by position
    assert evaluation.without_top(cartesian[:7]).sum() == 6  # at least one record goes


def test_sign_of_the_largest_component_per_point_group():
    wurtzite = Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                         [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    infos = [symmetry.analyze(wurtzite)] * 3 + [symmetry.analyze(rocksalt)]
    true = np.zeros((4, 3, 6))
    true[:3, 2, 2] = [1.0, 0.8, -0.6]
    true[:3, 2, 0] = -0.3
    pred = np.zeros((4, 3, 6))
    pred[:, 2, 2] = [0.5, -0.1, -0.2, 0.3]  # right, wrong, right; the centrosymmetric zero tensor is not counted
    signs = evaluation.sign_of_largest_component(pred, true, infos)
    assert signs == {"6mm": {"n": 3, "right": 2, "fraction": pytest.approx(2 / 3)},
                     "all": {"n": 3, "right": 2, "fraction": pytest.approx(2 / 3)}}
    assert evaluation.sign_of_largest_component(np.zeros_like(true), true, infos)["all"]["right"] == 0


def test_piezo_alone_is_scored_against_the_zero_tensor():
    assert properties.get("piezo").zero_baseline and properties.get("piezo").signed
    assert not any(properties.get(name).zero_baseline for name in ("elastic", "dielectric", "phonon"))
    spec = properties.get("piezo")
    structure = Structure.from_spacegroup("F-43m", Lattice.cubic(5.4), ["Zn", "S"], [[0, 0, 0], [0.25] * 3])
    e = np.zeros((3, 6))
    e[0, 3] = e[1, 4] = e[2, 5] = 0.1
    targets = np.stack([tensors.cartesian_to_irreps(tensors.piezo_voigt_to_cartesian(e), spec.formula)] * 2)
    split = training.SplitData("piezo", ("a", "b"), ("cubic", "cubic"), (structure, structure), targets)
    predictors = evaluation.baseline_predictors({"train": split, "test": split},
                                                ModelConfig("piezo"), settings=None, gbm=None)
    assert set(predictors) == {"crystal_system_mean", "zero_tensor"}
    np.testing.assert_array_equal(predictors["zero_tensor"]()(split), np.zeros_like(targets))
    overall, _, _, _ = evaluation.score("piezo", {"zero_tensor": np.zeros_like(targets)}, split,
                                        [symmetry.analyze(structure)] * 2)
    scores = overall["zero_tensor"]
    assert scores["component_mae"] == pytest.approx(0.1 * 3 / 18)
    assert scores["component_mae_without_top_1pct"] == pytest.approx(0.1 * 3 / 18)
    assert scores["largest_component_sign_accuracy"] == 0.0
