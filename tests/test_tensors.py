"""Properties that would catch a wrong Voigt factor, frame, basis or parity in zoo.core.tensors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from zoo.core import tensors as T
from zoo.properties import PROPERTIES

SETTINGS = settings(max_examples=40, deadline=None)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
batch_sizes = st.integers(min_value=1, max_value=4)
TENSOR_SPECS = [spec for spec in PROPERTIES.values() if spec.is_tensor]


def random_symmetric_cartesian(formula: str, rng: np.random.Generator, batch: int) -> np.ndarray:
    """A random tensor with the formula's symmetry, drawn in irreps space so every component is exercised."""
    dim = T.change_of_basis(formula).shape[0]
    return T.irreps_to_cartesian(rng.normal(scale=rng.uniform(0.1, 300.0), size=(batch, dim)), formula)


def random_orthogonal(rng: np.random.Generator, improper: bool) -> np.ndarray:
    R = Rotation.random(random_state=rng).as_matrix()
    return -R if improper else R


@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@SETTINGS
@given(seed=seeds, batch=batch_sizes)
def test_voigt_round_trip(spec, seed, batch):
    rng = np.random.default_rng(seed)
    cart = random_symmetric_cartesian(spec.formula, rng, batch)
    voigt = T.cartesian_to_voigt(cart, spec.voigt_kind)
    assert voigt.shape == (batch, *spec.voigt_shape)
    np.testing.assert_allclose(T.voigt_to_cartesian(voigt, spec.voigt_kind), cart, rtol=0, atol=1e-10 * np.abs(cart).max())


@SETTINGS
@given(seed=seeds)
def test_compliance_is_inverse_of_stiffness_with_voigt_factors(seed):
    """s = c^-1 as 6x6 matrices must equal the Voigt form of the Cartesian inverse S:C = identity on symmetric
    tensors; this fails if the factors 2 and 4 are misplaced."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 6))
    c = a @ a.T + 6 * np.eye(6)
    s = np.linalg.inv(c)
    C = T.stiffness_voigt_to_cartesian(c)
    S = T.compliance_voigt_to_cartesian(s)
    sym_identity = 0.5 * (np.einsum("ik,jl->ijkl", np.eye(3), np.eye(3)) + np.einsum("il,jk->ijkl", np.eye(3), np.eye(3)))
    np.testing.assert_allclose(np.einsum("ijmn,mnkl->ijkl", C, S), sym_identity, atol=1e-10)
    np.testing.assert_allclose(T.compliance_cartesian_to_voigt(S), s, atol=1e-12)


def test_voigt_known_components():
    c = np.zeros((6, 6))
    c[0, 1] = c[1, 0] = 7.0  # c12
    c[3, 3] = 5.0  # c44 -> C_2323 (zero-based 1,2,1,2)
    C = T.stiffness_voigt_to_cartesian(c)
    assert C[0, 0, 1, 1] == 7.0 and C[1, 1, 0, 0] == 7.0
    assert C[1, 2, 1, 2] == C[2, 1, 2, 1] == C[1, 2, 2, 1] == 5.0
    e = np.zeros((3, 6))
    e[2, 4] = 3.0  # e15 in 1-based Voigt = e_3,13
    E = T.piezo_voigt_to_cartesian(e)
    assert E[2, 0, 2] == E[2, 2, 0] == 3.0  # no factor 2 for stress constants
    s = np.zeros((6, 6))
    s[3, 3] = 4.0  # s44 = 4 S_2323
    assert T.compliance_voigt_to_cartesian(s)[1, 2, 1, 2] == 1.0


@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@SETTINGS
@given(seed=seeds, batch=batch_sizes)
def test_irreps_round_trip_and_norm(spec, seed, batch):
    rng = np.random.default_rng(seed)
    cart = random_symmetric_cartesian(spec.formula, rng, batch)
    x = T.cartesian_to_irreps(cart, spec.formula)
    assert x.shape == (batch, T.irreps_of(spec.formula).dim)
    scale = np.abs(cart).max()
    np.testing.assert_allclose(T.irreps_to_cartesian(x, spec.formula), cart, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose((x**2).sum(-1), (cart**2).reshape(batch, -1).sum(-1), rtol=1e-10)


@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@SETTINGS
@given(seed=seeds, improper=st.booleans())
def test_rotation_matches_wigner_d(spec, seed, improper):
    rng = np.random.default_rng(seed)
    cart = random_symmetric_cartesian(spec.formula, rng, 2)
    R = random_orthogonal(rng, improper)
    rotated = T.rotate(cart, R, rank=spec.rank)
    D = T.wigner_d(spec.formula, R)
    x = T.cartesian_to_irreps(cart, spec.formula)
    scale = np.abs(x).max()
    # 1e-8, not 1e-10: e3nn's D_from_matrix goes through Euler angles with acos, which loses about half the
    # digits near beta = 0 or pi; the Cartesian rotation itself is exact to rounding.
    np.testing.assert_allclose(T.cartesian_to_irreps(rotated, spec.formula), x @ D.T, rtol=0, atol=1e-8 * scale)


def test_irreps_strings_and_parity():
    assert {s.name: str(T.irreps_of(s.formula)) for s in TENSOR_SPECS} == {s.name: s.irreps for s in TENSOR_SPECS}
    cart = random_symmetric_cartesian(PROPERTIES["piezo"].formula, np.random.default_rng(1), 1)
    np.testing.assert_allclose(T.rotate(cart, -np.eye(3), rank=3), -cart)  # odd rank, polar: flips sign
    elastic = random_symmetric_cartesian(PROPERTIES["elastic"].formula, np.random.default_rng(1), 1)
    np.testing.assert_allclose(T.rotate(elastic, -np.eye(3), rank=4), elastic)


def test_torch_matches_numpy_and_keeps_float64():
    rng = np.random.default_rng(3)
    formula = PROPERTIES["elastic"].formula
    cart = random_symmetric_cartesian(formula, rng, 5)
    R = random_orthogonal(rng, False)
    x_t = T.cartesian_to_irreps(torch.tensor(cart), formula)
    assert x_t.dtype == torch.float64
    np.testing.assert_allclose(x_t.numpy(), T.cartesian_to_irreps(cart, formula), atol=1e-12)
    rot_t = T.rotate(torch.tensor(cart), torch.tensor(R), rank=4)
    np.testing.assert_allclose(rot_t.numpy(), T.rotate(cart, R, rank=4), atol=1e-10)
    voigt_t = T.stiffness_cartesian_to_voigt(torch.tensor(cart))
    np.testing.assert_allclose(voigt_t.numpy(), T.stiffness_cartesian_to_voigt(cart))


def test_batched_rotations_broadcast():
    rng = np.random.default_rng(4)
    cart = random_symmetric_cartesian("ij=ji", rng, 3)
    Rs = np.stack([random_orthogonal(rng, False) for _ in range(3)])
    batched = T.rotate(cart, Rs, rank=2)
    for n in range(3):
        np.testing.assert_allclose(batched[n], Rs[n] @ cart[n] @ Rs[n].T, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: T.stiffness_voigt_to_cartesian(np.zeros((5, 6))), r"c must have shape \(\.\.\., 6, 6\)"),
        (lambda: T.stiffness_voigt_to_cartesian(np.full((6, 6), np.nan)), "c contains NaN"),
        (lambda: T.stiffness_voigt_to_cartesian(np.triu(np.ones((6, 6)))), "c is not symmetric"),
        (lambda: T.piezo_voigt_to_cartesian(np.zeros((6, 3))), r"e must have shape \(\.\.\., 3, 6\)"),
        (lambda: T.piezo_cartesian_to_voigt(np.arange(27.0).reshape(3, 3, 3)), "E is not symmetric in its last two"),
        (lambda: T.cartesian_to_irreps(np.arange(9.0).reshape(3, 3), "ij=ji"), "t does not have the symmetry"),
        (lambda: T.rotate(np.eye(3), np.ones((3, 3))), "R is not an orthogonal matrix"),
        (lambda: T.rotate(np.eye(3), np.eye(2)), r"R must have shape \(\.\.\., 3, 3\)"),
        (lambda: T.irreps_to_cartesian(np.zeros(20), "ijkl=jikl=klij"), r"x must have shape \(\.\.\., 21\)"),
        (lambda: T.cartesian_to_irreps(np.eye(3), "not a formula="), "formula"),
        (lambda: T.voigt_to_cartesian(np.eye(6), "strain"), "kind must be one of"),
        (lambda: T.symmetric2_voigt_to_cartesian("abc"), "v must be an array of numbers"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@SETTINGS
@given(seed=seeds, batch=batch_sizes)
def test_voigt_to_irreps_equals_the_cartesian_route(spec, seed, batch):
    rng = np.random.default_rng(seed)
    cart = random_symmetric_cartesian(spec.formula, rng, batch)
    voigt = T.cartesian_to_voigt(cart, spec.voigt_kind)
    direct = T.voigt_to_irreps(voigt, spec.voigt_kind, spec.formula)
    np.testing.assert_allclose(direct, T.cartesian_to_irreps(cart, spec.formula), rtol=0, atol=1e-10 * np.abs(direct).max())
    torch_direct = T.voigt_to_irreps(torch.tensor(voigt), spec.voigt_kind, spec.formula)
    np.testing.assert_allclose(torch_direct.numpy(), direct, atol=1e-12 * np.abs(direct).max())


def test_voigt_to_irreps_refuses_asymmetric_and_nan():
    c = np.eye(6)
    c[0, 1] = 1.0
    with pytest.raises(ValueError, match="v is not symmetric"):
        T.voigt_to_irreps(c, "stiffness", "ijkl=jikl=klij")
    c[0, 1] = np.nan
    with pytest.raises(ValueError, match="v contains NaN"):
        T.voigt_to_irreps(c, "stiffness", "ijkl=jikl=klij")
    with pytest.raises(ValueError, match="v contains NaN"):
        T.voigt_to_irreps(np.full((3, 6), np.inf), "piezo_stress", "ijk=ikj")


@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
def test_cached_change_of_basis_is_e3nns(spec, tmp_path, monkeypatch):
    """The on-disk cache must hold exactly what e3nn builds, and a fresh cache directory must rebuild it."""
    rank = spec.rank
    fresh, irreps = T._build_change_of_basis(spec.formula, rank)
    np.testing.assert_array_equal(T.change_of_basis(spec.formula), fresh)
    assert irreps == spec.irreps
    monkeypatch.setenv("MPTZ_CACHE_DIR", str(tmp_path))
    T._change_of_basis.cache_clear()
    try:
        np.testing.assert_array_equal(T.change_of_basis(spec.formula), fresh)
        assert len(list(tmp_path.rglob("*.npy"))) == 1
        T._change_of_basis.cache_clear()
        np.testing.assert_array_equal(T.change_of_basis(spec.formula), fresh)  # now read back from disk
    finally:
        T._change_of_basis.cache_clear()


# ------------------------------------------------------------------------ functions of symmetric matrices
@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), floor=st.sampled_from([0.0, 1.0]), spread=st.floats(0.1, 1.5))
def test_symmetric_exp_is_above_its_floor_equivariant_and_inverted_by_log(seed, floor, spread):
    rng = np.random.default_rng(seed)
    a = rng.normal(scale=spread, size=(3, 3))
    a = a + a.T
    value = T.symmetric_exp(a, floor)
    assert np.linalg.eigvalsh(value).min() > floor
    np.testing.assert_allclose(T.symmetric_log(value, floor, minimum=1e-300), a, atol=1e-8 * max(1, np.abs(a).max()))
    R = Rotation.random(random_state=seed % 1000).as_matrix() * (-1) ** (seed % 2)  # proper and improper
    np.testing.assert_allclose(T.symmetric_exp(T.rotate(a, R), floor), T.rotate(value, R), atol=1e-9 * value.max())
    torch_value = T.symmetric_exp(torch.tensor(a), floor).numpy()
    np.testing.assert_allclose(torch_value, value, rtol=1e-10, atol=1e-12)


def test_symmetric_log_clips_eigenvalues_and_handles_repeated_ones():
    np.testing.assert_allclose(T.symmetric_log(np.eye(3) * 5.0, 1.0), np.eye(3) * np.log(4.0), atol=1e-14)
    zero = T.symmetric_log(np.zeros((3, 3)), 0.0, minimum=0.1)
    np.testing.assert_allclose(zero, np.eye(3) * np.log(0.1), atol=1e-14)
    with pytest.raises(ValueError, match="minimum"):
        T.symmetric_log(np.eye(3), 0.0, minimum=0.0)
    with pytest.raises(ValueError, match="symmetric"):
        T.symmetric_exp(np.arange(9.0).reshape(3, 3))
