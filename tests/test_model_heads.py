"""The output maps of zoo.nn.models: the dielectric parts (electronic + ionic, SPD by a matrix logarithm) and
the positive definite elastic head. Models are tiny and float64 where a symmetry is checked."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from tests.test_models import (
    EQUIVARIANCE_RTOL,
    all_structures,
    batch_of,
    generic_structure,
    load,
    one_thread,  # noqa: F401 (its autouse fixture: one thread here too)
    relative_error,
    rotated_output,
    tiny_config,
    tiny_model,
    transformed,
)
from zoo import properties
from zoo.core import symmetry, tensors
from zoo.nn import model_config, models
from zoo.nn.model_config import ModelConfig


# ------------------------------------------------------------------------------------------ dielectric parts
def spd_log_model(seed: int = 0, **overrides) -> models.MattenNet:
    return models.MattenNet(tiny_config("dielectric", output_map="spd_log", seed=seed, **overrides))


def test_dielectric_total_is_electronic_plus_ionic_exactly():
    for model in (tiny_model("dielectric"), spd_log_model()):
        assert model.parts == ("electronic", "ionic")
        output = model.predict_cartesian(batch_of(*all_structures()))
        assert output.shape == (len(all_structures()), 3, 3, 3)  # electronic, ionic, total
        assert torch.equal(output[:, 2], output[:, 0] + output[:, 1])


@pytest.mark.parametrize("seed", range(4))
def test_spd_log_outputs_obey_the_eigenvalue_floors_for_any_weights(seed):
    """eps >= 1 (electronic, total) and ionic >= 0 by construction, for random weights (scaled up to widen the
    outputs) on random (also strained) structures: float64 eigenvalues of every prediction, to rounding relative to
    the largest one."""
    model = spd_log_model(seed=seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    rng = np.random.default_rng(seed)
    structures = [Structure(s.lattice.matrix @ (np.eye(3) + rng.normal(scale=0.1, size=(3, 3))), s.species,
                            s.frac_coords) for s in all_structures()]
    output = model.predict_cartesian(batch_of(*structures, generic_structure()))
    eigenvalues = torch.linalg.eigvalsh(output).numpy()
    assert np.isfinite(eigenvalues).all() and eigenvalues.max() > 2.0
    rounding = 1e-12 * np.abs(eigenvalues).max(axis=2)
    assert (eigenvalues[:, 0, 0] >= 1.0 - rounding[:, 0]).all() and (eigenvalues[:, 2, 0] >= 1.0 - rounding[:, 2]).all()
    assert (eigenvalues[:, 1, 0] >= -rounding[:, 1]).all()


def test_spd_log_is_equivariant_and_keeps_crystal_symmetry():
    model = spd_log_model()
    rotation = Rotation.random(random_state=11).as_matrix()
    structure = generic_structure()
    output = model.predict_cartesian(batch_of(structure))[0]
    rotated = model.predict_cartesian(batch_of(transformed(structure, rotation)))[0]
    assert relative_error(rotated, rotated_output("dielectric", output, rotation)) < EQUIVARIANCE_RTOL
    inverted = model.predict_cartesian(batch_of(transformed(structure, -np.eye(3))))[0]
    assert relative_error(inverted, output) < EQUIVARIANCE_RTOL
    for name in ("hexagonal-mp-103", "cubic-mp-1156"):
        info = symmetry.analyze(load(name))
        for part in model.predict_cartesian(batch_of(load(name)))[0].numpy():
            assert symmetry.neumann_residual(part, info) < 1e-5, name


def test_spd_log_targets_round_trip_through_the_network_output_space():
    """encode_targets (log of the excess over the floor) and decode_outputs (floor + exp) are inverse on tensors
    above their floors; eigenvalues below floor + SPD_LOG_MINIMUM come back raised to it."""
    config = tiny_config("dielectric", output_map="spd_log")
    rng = np.random.default_rng(2)
    a = rng.normal(scale=0.3, size=(6, 2, 3, 3))
    a = a + np.swapaxes(a, -1, -2)  # eigenvalues of exp(a) well above SPD_LOG_MINIMUM
    cartesian = tensors.symmetric_exp(a) + np.array([1.0, 0.0])[None, :, None, None] * np.eye(3)
    irreps = tensors.cartesian_to_irreps(cartesian, "ij=ji").reshape(6, 12)
    encoded = models.encode_targets(config, irreps)
    np.testing.assert_allclose(models.decode_outputs(config, encoded), irreps, atol=1e-10)
    ionic_zero = irreps.copy()
    ionic_zero[:, 6:] = 0.0  # an ionic part of exactly 0 (Si): log clipped at SPD_LOG_MINIMUM
    decoded = models.decode_outputs(config, models.encode_targets(config, ionic_zero))
    np.testing.assert_allclose(tensors.irreps_to_cartesian(decoded[:, 6:], "ij=ji"),
                               np.broadcast_to(models.SPD_LOG_MINIMUM * np.eye(3), (6, 3, 3)), atol=1e-12)


def test_a_release_1_0_config_loads_as_the_electronic_part_alone():
    text = (Path(__file__).parents[1] / "zoo/releases/matten-dielectric/1.0.0/config.json").read_text()
    saved = json.loads(text)["model_config"]
    config = ModelConfig.from_json(json.dumps(saved))
    assert config.parts == ("electronic",) and config.output_map == "linear"
    assert models.MattenNet(config).predict_cartesian(batch_of(load("cubic-mp-101"))).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("overrides, message", [
    ({"parts": ("total",)}, "sum of"),
    ({"parts": ("electronic", "electronic")}, "distinct"),
    ({"parts": ("static",)}, "distinct parts"),
    ({"output_map": "exp"}, "output_map"),
])
def test_dielectric_parts_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig("dielectric", **overrides)
    with pytest.raises(ValueError, match="symmetric rank-2"):
        ModelConfig("elastic", output_map="spd_log")


# ------------------------------------------------------------------------------------ positive definite head

ELASTIC_FORMULA = properties.get("elastic").formula


@functools.lru_cache(maxsize=None)
def spd_model(seed: int = 0) -> models.MattenNet:
    return models.MattenNet(tiny_config("elastic", head="equivariant_spd", seed=seed))


def voigt_of(irreps) -> np.ndarray:
    return tensors.cartesian_to_voigt(tensors.irreps_to_cartesian(np.asarray(irreps), ELASTIC_FORMULA), "stiffness")


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (4, 21), elements=st.floats(-3.0, 3.0)))
def test_spd_head_output_is_positive_definite_for_any_logarithm(logarithm):
    """Whatever the network produces (here: any irreps vector with components up to 3, i.e. eigenvalues of the
    logarithm up to about +-14, stiffness eigenvalues from 1e-6 to 1e6 GPa; real ones lie in 1..1000), the
    stiffness it outputs is symmetric positive definite. (Beyond a condition number of ~1e15, float64 itself
    cannot tell the smallest eigenvalue from zero.)"""
    output = spd_model()._exponential(torch.as_tensor(logarithm)).detach().numpy()
    eigenvalues = np.linalg.eigvalsh(tensors.stiffness_voigt_to_mandel(voigt_of(output)))
    assert (eigenvalues > 0).all()
    mandel = (logarithm @ model_config.mandel_maps(ELASTIC_FORMULA)[0]).reshape(-1, 6, 6)
    np.testing.assert_allclose(np.log(eigenvalues), np.sort(np.linalg.eigvalsh(mandel), axis=1), atol=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_spd_head_is_positive_definite_and_equivariant_on_real_structures(seed):
    model = spd_model(seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    structures = [generic_structure(), *all_structures()]
    output = model.predict_cartesian(batch_of(*structures))
    assert (np.linalg.eigvalsh(tensors.cartesian_to_voigt(output, "stiffness").numpy()) > 0).all()
    rotated = model.predict_cartesian(batch_of(transformed(structures[0], rotation)))[0]
    assert relative_error(rotated, tensors.rotate(output[0], torch.from_numpy(rotation))) < EQUIVARIANCE_RTOL


def test_spd_head_logarithm_round_trip_and_normalisation():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(5, 6, 6))
    stiffness = np.einsum("nij,nkj->nik", factors, factors) * 30 + np.eye(6) * 5  # positive definite, GPa
    targets = tensors.voigt_to_irreps(stiffness, "stiffness", ELASTIC_FORMULA)
    logarithm = model_config.log_stiffness_irreps(targets, ELASTIC_FORMULA)
    back = spd_model()._exponential(torch.as_tensor(logarithm)).detach().numpy()
    np.testing.assert_allclose(back, targets, rtol=1e-9, atol=1e-9)
    scale, shift = model_config.fit_output_normalisation("elastic", targets, "equivariant_spd")
    assert scale == model_config.fit_output_normalisation("elastic", logarithm)[0]
    with pytest.raises(ValueError, match="positive definite"):
        model_config.log_stiffness_irreps(-targets, ELASTIC_FORMULA)
    with pytest.raises(ValueError, match="stiffness"):
        tiny_config("dielectric", head="equivariant_spd")


