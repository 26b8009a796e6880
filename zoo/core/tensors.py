"""Tensor conventions of the whole project, stated once.

Frames
    A Cartesian tensor is expressed in the frame of its structure's lattice matrix (rows = lattice vectors, in A).
Voigt
    Pair order 11, 22, 33, 23, 13, 12 (``VOIGT_PAIRS``, zero-based).
    - symmetric rank 2 (dielectric): v_m = t_ij, no factors.
    - rank 3 piezoelectric *stress* constants e_ijk (C/m^2): e_im = e_ijk, no factor 2.
    - rank 4 stiffness C_ijkl (GPa): c_mn = C_ijkl, no factors.
    - rank 4 compliance S_ijkl (1/GPa): s_mn = f_m f_n S_ijkl with f = 1 for m in 11,22,33 and 2 for 23,13,12,
      so that strain_Voigt (engineering shears) = s . stress_Voigt.
Mandel (Kelvin)
    The stiffness as an orthonormal 6x6 matrix: m_mn = g_m g_n c_mn with g = 1 for 11, 22, 33 and sqrt(2) for 23,
    13, 12. |m|_F = |C|_F, and a rotation R acts as m' = Q m Q^T with Q an orthogonal 6x6 matrix, so the eigenvalues
    (Kelvin moduli) are rotation invariants and a matrix function (expm, logm) commutes with rotations.
Irreps
    e3nn ``CartesianTensor(formula)`` change of basis Q (shape (dim, 3**rank)), built in float64 and cached:
    x = Q t_flat, t_flat = Q^T x. Q is orthonormal, so |x|^2 = |t|_F^2 for tensors with the formula's symmetry.
Rotation
    T'_{ab..} = R_ai R_bj .. T_{ij..}. R may be improper (det -1); a polar tensor of odd rank changes sign under
    the inversion, which is what makes the piezo irreps odd (``1o``, ``3o``).

Every function takes numpy arrays or torch tensors, batched over leading dimensions, and returns the same
kind in float64 (torch tensors keep their device); the argument checks are in zoo.core.tensor_checks.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np

from zoo.core.tensor_checks import (
    SYMMETRY_RTOL,
    Array,
    as_float64,
    check_rotation,
    contiguous,
    is_torch,
    like,
    max_abs,
    require_symmetric,
    torch,
)

VOIGT_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# Voigt index of each Cartesian pair (i, j): symmetric, so (1, 2) and (2, 1) both map to 3.
VOIGT_INDEX = np.empty((3, 3), dtype=np.int64)
for _m, (_i, _j) in enumerate(VOIGT_PAIRS):
    VOIGT_INDEX[_i, _j] = VOIGT_INDEX[_j, _i] = _m
COMPLIANCE_VOIGT_FACTORS = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])

MANDEL_FACTORS = np.array([1.0, 1.0, 1.0, np.sqrt(2.0), np.sqrt(2.0), np.sqrt(2.0)])

_PAIR_I = np.array([p[0] for p in VOIGT_PAIRS])
_PAIR_J = np.array([p[1] for p in VOIGT_PAIRS])


# ---------------------------------------------------------------------------------------------------- Voigt
def symmetric2_voigt_to_cartesian(v: Array) -> Array:
    """(..., 6) -> (..., 3, 3), no factors."""
    v = as_float64(v, "v", (6,))
    return contiguous(v[..., VOIGT_INDEX])


def symmetric2_cartesian_to_voigt(t: Array) -> Array:
    """(..., 3, 3) symmetric -> (..., 6), no factors."""
    t = as_float64(t, "t", (3, 3))
    require_symmetric(t, (1, 0), "t", "symmetric (t_ij = t_ji)")
    return contiguous(t[..., _PAIR_I, _PAIR_J])


def stiffness_voigt_to_cartesian(c: Array) -> Array:
    """Voigt stiffness (..., 6, 6) -> C_ijkl (..., 3, 3, 3, 3), no factors. c must be symmetric."""
    c = as_float64(c, "c", (6, 6))
    require_symmetric(c, (1, 0), "c", "symmetric (c_mn = c_nm)")
    return contiguous(c[..., VOIGT_INDEX[:, :, None, None], VOIGT_INDEX[None, None, :, :]])


def stiffness_cartesian_to_voigt(C: Array) -> Array:
    """C_ijkl (..., 3, 3, 3, 3) with C_ijkl = C_jikl = C_klij -> Voigt (..., 6, 6)."""
    C = as_float64(C, "C", (3, 3, 3, 3))
    _require_full_elastic_symmetry(C, "C")
    return contiguous(C[..., _PAIR_I[:, None], _PAIR_J[:, None], _PAIR_I[None, :], _PAIR_J[None, :]])


def compliance_voigt_to_cartesian(s: Array) -> Array:
    """Voigt compliance (..., 6, 6) -> S_ijkl, dividing out the factors f_m f_n (see module doc)."""
    s = as_float64(s, "s", (6, 6))
    require_symmetric(s, (1, 0), "s", "symmetric (s_mn = s_nm)")
    factors = np.outer(COMPLIANCE_VOIGT_FACTORS, COMPLIANCE_VOIGT_FACTORS)
    scaled = s / like(s, factors)
    return contiguous(scaled[..., VOIGT_INDEX[:, :, None, None], VOIGT_INDEX[None, None, :, :]])


def compliance_cartesian_to_voigt(S: Array) -> Array:
    """S_ijkl -> Voigt compliance (..., 6, 6), multiplying by the factors f_m f_n (see module doc)."""
    S = as_float64(S, "S", (3, 3, 3, 3))
    _require_full_elastic_symmetry(S, "S")
    factors = np.outer(COMPLIANCE_VOIGT_FACTORS, COMPLIANCE_VOIGT_FACTORS)
    plain = S[..., _PAIR_I[:, None], _PAIR_J[:, None], _PAIR_I[None, :], _PAIR_J[None, :]]
    return plain * like(plain, factors)


def stiffness_voigt_to_mandel(c: Array) -> Array:
    """Voigt stiffness (..., 6, 6) -> Mandel (..., 6, 6), m_mn = g_m g_n c_mn (module doc)."""
    c = as_float64(c, "c", (6, 6))
    return c * like(c, np.outer(MANDEL_FACTORS, MANDEL_FACTORS))


def mandel_to_stiffness_voigt(m: Array) -> Array:
    """Inverse of ``stiffness_voigt_to_mandel``."""
    m = as_float64(m, "m", (6, 6))
    return m / like(m, np.outer(MANDEL_FACTORS, MANDEL_FACTORS))


def piezo_voigt_to_cartesian(e: Array) -> Array:
    """Piezoelectric stress constants, Voigt (..., 3, 6) -> e_ijk (..., 3, 3, 3), no factor 2."""
    e = as_float64(e, "e", (3, 6))
    return contiguous(e[..., :, VOIGT_INDEX])


def piezo_cartesian_to_voigt(E: Array) -> Array:
    """e_ijk (..., 3, 3, 3) with e_ijk = e_ikj -> Voigt (..., 3, 6), no factor 2."""
    E = as_float64(E, "E", (3, 3, 3))
    require_symmetric(E, (0, 2, 1), "E", "symmetric in its last two indices (e_ijk = e_ikj)")
    return contiguous(E[..., :, _PAIR_I, _PAIR_J])


_VOIGT_CONVERTERS = {
    "symmetric2": (symmetric2_voigt_to_cartesian, symmetric2_cartesian_to_voigt),
    "stiffness": (stiffness_voigt_to_cartesian, stiffness_cartesian_to_voigt),
    "compliance": (compliance_voigt_to_cartesian, compliance_cartesian_to_voigt),
    "piezo_stress": (piezo_voigt_to_cartesian, piezo_cartesian_to_voigt),
}


VOIGT_SHAPES = {"symmetric2": (6,), "stiffness": (6, 6), "compliance": (6, 6), "piezo_stress": (3, 6)}


def _converters(kind: str):
    try:
        return _VOIGT_CONVERTERS[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {sorted(_VOIGT_CONVERTERS)}, got {kind!r}") from None


def voigt_to_cartesian(v: Array, kind: str) -> Array:
    """Dispatch on a property's ``voigt_kind`` ('symmetric2', 'stiffness', 'compliance', 'piezo_stress')."""
    return _converters(kind)[0](v)


def cartesian_to_voigt(t: Array, kind: str) -> Array:
    """Inverse of ``voigt_to_cartesian`` for the same kind."""
    return _converters(kind)[1](t)


def _require_full_elastic_symmetry(C: Array, name: str) -> None:
    require_symmetric(C, (1, 0, 2, 3), name, "minor-symmetric (C_ijkl = C_jikl)")
    require_symmetric(C, (0, 1, 3, 2), name, "minor-symmetric (C_ijkl = C_ijlk)")
    require_symmetric(C, (2, 3, 0, 1), name, "major-symmetric (C_ijkl = C_klij)")


# --------------------------------------------------------------------------------------------------- irreps
def _formula_indices(formula: str) -> str:
    if not isinstance(formula, str) or not formula:
        raise ValueError(f"formula must be an e3nn CartesianTensor formula such as 'ij=ji', got {formula!r}")
    return formula.split("=")[0].replace("-", "")


def _basis_cache_dir() -> Path:
    root = os.environ.get("MPTZ_CACHE_DIR") or Path.home() / ".cache" / "mp-tensor-zoo"
    return Path(root) / "change-of-basis" / f"e3nn-{importlib.metadata.version('e3nn')}"


@functools.lru_cache(maxsize=None)
def _change_of_basis(formula: str) -> tuple[np.ndarray, str]:
    """Q (dim, 3**rank) float64 and the irreps string, for an e3nn CartesianTensor formula.

    e3nn solves for the basis numerically (~0.4 s for rank 4, plus ~2.5 s to import torch and e3nn), so it is
    kept per process and on disk per e3nn version (plain .npy, never pickled). Unless the default dtype is
    float64 while e3nn builds it, the basis comes back in float32, which would cap round trips at ~1e-7.
    """
    rank = len(_formula_indices(formula))
    cached = _basis_cache_dir() / hashlib.sha256(formula.encode()).hexdigest()[:16]
    try:
        irreps = json.loads(cached.with_suffix(".json").read_text())["irreps"]
        q = np.load(cached.with_suffix(".npy"), allow_pickle=False)
        if q.shape[1:] == (3**rank,) and q.dtype == np.float64:
            q.setflags(write=False)
            return q, irreps
    except (OSError, ValueError, KeyError):
        pass  # absent or unreadable: rebuild below
    q, irreps = _build_change_of_basis(formula, rank)
    from zoo.core.io import atomic_open, atomic_write_text

    try:
        with atomic_open(cached.with_suffix(".npy"), "wb") as handle:
            np.save(handle, q, allow_pickle=False)
        atomic_write_text(cached.with_suffix(".json"), json.dumps({"formula": formula, "irreps": irreps}))
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    q.setflags(write=False)
    return q, irreps


def _build_change_of_basis(formula: str, rank: int) -> tuple[np.ndarray, str]:
    try:
        from e3nn.io import CartesianTensor
    except ImportError as exc:
        raise ImportError(f"e3nn is needed to build the irreps basis of {formula!r}: {exc}") from None
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ct = CartesianTensor(formula)
        q = ct.reduced_tensor_products().change_of_basis
    except Exception as exc:  # e3nn raises assorted errors for malformed formulas
        raise ValueError(f"formula {formula!r} is not a valid e3nn CartesianTensor formula: {exc}") from None
    finally:
        torch.set_default_dtype(previous)
    return q.detach().cpu().numpy().astype(np.float64).reshape(q.shape[0], 3**rank), str(ct)


@functools.lru_cache(maxsize=None)
def _change_of_basis_torch(formula: str, device: str):
    return torch.tensor(_change_of_basis(formula)[0], dtype=torch.float64, device=device)


def change_of_basis(formula: str) -> np.ndarray:
    """The (read-only) e3nn change of basis Q, shape (dim, 3**rank): irreps = Q @ cartesian.flatten()."""
    return _change_of_basis(formula)[0]


def irreps_of(formula: str):
    """e3nn ``Irreps`` of a CartesianTensor formula, e.g. 'ijkl=jikl=klij' -> 2x0e+2x2e+1x4e."""
    from e3nn import o3

    return o3.Irreps(_change_of_basis(formula)[1])


def wigner_d(formula: str, R: Array) -> np.ndarray:
    """Block-diagonal Wigner-D matrix (dim, dim) of the formula's irreps for an orthogonal R, in float64.

    e3nn builds D in the default dtype; float32 would cap the equivariance checks at ~1e-6.
    """
    R = check_rotation(R)
    rotation = torch.as_tensor(np.asarray(R if not is_torch(R) else R.cpu()), dtype=torch.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps_of(formula).D_from_matrix(rotation).numpy()
    finally:
        torch.set_default_dtype(previous)


def _row_dot(x: Array) -> Array:
    """Squared norm over the last axis without a temporary of x's size."""
    return torch.einsum("...i,...i->...", x, x) if is_torch(x) else np.einsum("...i,...i->...", x, x)


def _q_for(x: Array, formula: str) -> Array:
    return _change_of_basis_torch(formula, str(x.device)) if is_torch(x) else _change_of_basis(formula)[0]


def cartesian_to_irreps(t: Array, formula: str) -> Array:
    """Cartesian (..., 3, ..., 3) with the formula's symmetry -> irreps (..., dim)."""
    rank = len(_formula_indices(formula))
    _change_of_basis(formula)  # validates the formula before the shape check, for a clearer error
    t = as_float64(t, "t", (3,) * rank, check_finite=False)
    q = _q_for(t, formula)
    batch = tuple(t.shape[: t.ndim - rank])
    flat = t.reshape(*batch, 3**rank)
    x = flat @ q.T
    # Q is orthonormal, so |t|^2 - |x|^2 is the squared part of t outside the formula's symmetric subspace, which
    # the projection would drop silently. Pythagoras costs one pass over t instead of a second matrix product;
    # its rounding floor (~1e-8 relative) is far below SYMMETRY_RTOL. A NaN or inf in t makes |t|^2 non-finite.
    norm2 = _row_dot(flat)
    kept2 = _row_dot(x)
    if is_torch(t):
        if not bool(torch.isfinite(norm2).all()):
            raise ValueError("t contains NaN or infinite values")
        lost = torch.sqrt(torch.clamp(norm2 - kept2, min=0.0)) / torch.sqrt(torch.clamp(norm2, min=1e-300))
    else:
        if not np.isfinite(norm2).all():
            raise ValueError("t contains NaN or infinite values")
        lost = np.sqrt(np.maximum(norm2 - kept2, 0.0)) / np.sqrt(np.maximum(norm2, 1e-300))
    worst = max_abs(lost) if lost.ndim else float(lost)
    if worst > SYMMETRY_RTOL:
        raise ValueError(
            f"t does not have the symmetry of formula {formula!r}: relative residual {worst:.3g} > {SYMMETRY_RTOL:g}"
        )
    return x


def irreps_to_cartesian(x: Array, formula: str) -> Array:
    """Irreps (..., dim) -> Cartesian (..., 3, ..., 3)."""
    rank = len(_formula_indices(formula))
    dim = _change_of_basis(formula)[0].shape[0]
    x = as_float64(x, "x", (dim,))
    q = _q_for(x, formula)
    batch = tuple(x.shape[:-1])
    return (x @ q).reshape(*batch, *((3,) * rank))


@functools.lru_cache(maxsize=None)
def _voigt_change_of_basis(kind: str, formula: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The linear map from the independent Voigt entries straight to irreps.

    Returns (independent, upper, lower, folded): flat indices of the independent Voigt entries (the upper
    triangle of a square Voigt matrix, everything for piezo), the paired indices whose equality a square Voigt
    matrix needs, and Qv with irreps = Qv @ voigt_flat[independent].
    """
    to_cartesian = _converters(kind)[0]
    voigt_shape = VOIGT_SHAPES[kind]
    size = int(np.prod(voigt_shape))
    if len(voigt_shape) == 2 and voigt_shape[0] == voigt_shape[1]:
        n = voigt_shape[0]
        rows, cols = np.triu_indices(n)
        independent = rows * n + cols
        upper_r, upper_c = np.triu_indices(n, k=1)
        upper, lower = upper_r * n + upper_c, upper_c * n + upper_r
    else:
        independent = np.arange(size)
        upper = lower = np.zeros(0, dtype=np.int64)
    # A symmetric Voigt matrix with one independent entry set to 1 (and its mirror): expand each to Cartesian.
    basis = np.zeros((len(independent), size))
    basis[np.arange(len(independent)), independent] = 1.0
    mirrored = basis.reshape(-1, *voigt_shape)
    if len(upper):
        mirrored = np.maximum(mirrored, np.swapaxes(mirrored, -1, -2))
    cartesian = to_cartesian(mirrored).reshape(len(independent), -1)
    folded = np.ascontiguousarray(_change_of_basis(formula)[0] @ cartesian.T)
    for array in (independent, upper, lower, folded):
        array.setflags(write=False)
    return independent, upper, lower, folded


def voigt_to_irreps(v: Array, kind: str, formula: str) -> Array:
    """Voigt form (..., 6, 6), (..., 3, 6) or (..., 6) -> irreps (..., dim) in one small matrix product.

    Equal to cartesian_to_irreps(voigt_to_cartesian(v, kind), formula), but works on the independent Voigt
    entries only (21 for elastic instead of 81 Cartesian components): the dataset build converts whole
    columns this way.
    """
    _converters(kind)
    independent, upper, lower, folded = _voigt_change_of_basis(kind, formula)
    shape = VOIGT_SHAPES[kind]
    v = as_float64(v, "v", shape, check_finite=False)
    flat = v.reshape(*v.shape[: v.ndim - len(shape)], int(np.prod(shape)))
    if is_torch(v):
        take = lambda columns: flat[..., torch.tensor(np.array(columns), device=v.device)]  # noqa: E731
    else:
        take = lambda columns: np.take(flat, columns, axis=-1)  # noqa: E731 (np.take: 3x faster than fancy indexing)
    scale = max_abs(flat)
    if not np.isfinite(scale):
        raise ValueError("v contains NaN or infinite values")
    if len(upper) and scale > 0:
        asym = max_abs(take(upper) - take(lower)) / scale
        if asym > SYMMETRY_RTOL:
            raise ValueError(f"v is not symmetric (v_mn = v_nm): relative asymmetry {asym:.3g} > {SYMMETRY_RTOL:g}")
    q = torch.tensor(folded, device=v.device) if is_torch(v) else folded
    return take(independent) @ q.T


# ------------------------------------------------------------------------------------------------- rotation
_AXES = "bcdefghi"


@functools.lru_cache(maxsize=None)
def _axis_rotation_subscripts(rank: int, axis: int) -> str:
    """einsum subscripts applying R to one axis: '...za,...bad->...bzd' for rank 3, axis 1."""
    before = _AXES[:rank].replace(_AXES[axis], "a")
    after = _AXES[:rank].replace(_AXES[axis], "z")
    return f"...za,...{before}->...{after}"


def rotate(t: Array, R: Array, rank: int | None = None) -> Array:
    """T'_{ab..} = R_ai R_bj .. T_{ij..} for a Cartesian tensor of any rank.

    `rank` defaults to t.ndim (one unbatched tensor); give it for batches, e.g. rotate(C_batch, R, rank=4).
    R may be one matrix or a batch broadcastable against t's batch dims.
    """
    if rank is None:
        rank = t.ndim if is_torch(t) else np.ndim(t)
    if not isinstance(rank, int) or rank < 0 or rank > len(_AXES):
        raise ValueError(f"rank must be an integer between 0 and {len(_AXES)}, got {rank!r}")
    t = as_float64(t, "t", (3,) * rank)
    R = check_rotation(R)
    if is_torch(t) != is_torch(R):
        R = like(t, R) if is_torch(t) else R.detach().cpu().numpy()
    # One axis at a time: rank small products instead of one (rank+1)-operand einsum, whose contraction-order
    # planning (optimize=True) cost more than the arithmetic for single tensors.
    einsum = torch.einsum if is_torch(t) else np.einsum
    for axis in range(rank):
        t = einsum(_axis_rotation_subscripts(rank, axis), R, t)
    return t


# ------------------------------------------------------------------------ functions of symmetric matrices
def symmetric_log(t: Array, floor: float = 0.0, minimum: float = 1e-6) -> Array:
    """log(T - floor I) of symmetric (..., 3, 3) matrices, eigenvalues of T - floor I clipped below at `minimum`
    (> 0) first: the inverse of ``symmetric_exp`` for matrices whose eigenvalues exceed floor + minimum.

    Functional calculus through the eigendecomposition, Q diag(log max(lambda, minimum)) Q^T: well defined for
    repeated eigenvalues and rotation-equivariant, log(R T R^T) = R log(T) R^T.
    """
    if not minimum > 0:
        raise ValueError(f"minimum must be positive, got {minimum!r}")
    t = as_float64(t, "t", (3, 3))
    require_symmetric(t, (1, 0), "t", "a symmetric 3x3 matrix")
    module = torch if is_torch(t) else np
    eye = module.eye(3, dtype=t.dtype, **({"device": t.device} if is_torch(t) else {}))
    eigenvalues, vectors = module.linalg.eigh(t - floor * eye)
    logs = module.log(module.clip(eigenvalues, minimum, None))
    return (vectors * logs[..., None, :]) @ module.swapaxes(vectors, -1, -2)


def symmetric_exp(a: Array, floor: float = 0.0) -> Array:
    """floor I + exp(A) of symmetric (..., 3, 3) matrices: every eigenvalue exceeds `floor`, whatever A is.

    The matrix exponential maps the symmetric matrices one to one onto the positive definite ones and commutes
    with rotations, exp(R A R^T) = R exp(A) R^T, so a network predicting A equivariantly predicts a positive
    definite tensor equivariantly. torch: torch.linalg.matrix_exp (differentiable, no eigenvector derivative).
    """
    a = as_float64(a, "a", (3, 3))
    require_symmetric(a, (1, 0), "a", "a symmetric 3x3 matrix")
    if is_torch(a):
        exp = torch.linalg.matrix_exp(0.5 * (a + a.transpose(-1, -2)))
        return exp + floor * torch.eye(3, dtype=a.dtype, device=a.device)
    eigenvalues, vectors = np.linalg.eigh(a)
    return (vectors * np.exp(eigenvalues)[..., None, :]) @ np.swapaxes(vectors, -1, -2) + floor * np.eye(3)
