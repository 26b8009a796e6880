"""Derived scalar quantities of the four properties, one function per property.

Each ``*_properties`` function takes one record's value and returns a plain, JSON-serialisable dict (Python
floats, bools, lists of floats, and ``None`` where a quantity is undefined). Key names are stable; the units
of every key are in ``UNITS``. For a property with several tensor parts (dielectric) a per-part quantity is
keyed ``<name>_<part>``, e.g. ``eps_poly_electronic``; ``zoo.properties`` lists the names per property.

Tensor conventions (Voigt order, compliance factors, symmetry tolerance) are those of ``zoo.core.tensors``.

Elastic (6x6 Voigt stiffness, GPa)
    Voigt/Reuss/Hill bulk and shear moduli, Hill Young's modulus E = 9KG/(3K+G), Poisson ratio
    (3K-2G)/(6K+2G) and universal anisotropy A_U = 5 G_V/G_R + K_V/K_R - 6 (``hill_moduli``: REFERENCE.md's
    formulas, tested equal to pymatgen's ``ElasticTensor``). The directional Young's modulus E(n) = 1/(n_i n_j n_k n_l S_ijkl) is
    extremised over the unit sphere by ``form_extrema_on_sphere``: a Fibonacci grid of
    ``SPHERE_GRID_POINTS`` directions (mean spacing ~3.2 deg), then BFGS refinement from the best grid point
    on each side. Refined extrema are stationary to a relative ~1e-10; a narrower extremum than the grid
    spacing could be missed, which on the 1,181 elastic (compliance) and 941 piezoelectric snapshot tensors
    never happened: against a 300,000-point grid both extrema were never worse and at most 4e-5 (relative
    to max |F|) better, which is that grid's own discretisation error.
Dielectric (3x3, dimensionless)
    eps_poly = mean eigenvalue, eigenvalues ascending, anisotropy ratio lambda_max/lambda_min, and the
    refractive index n = sqrt(eps_poly) of the *electronic* (high-frequency) part.
Piezoelectric (3x6 Voigt stress constants, C/m^2)
    The largest longitudinal coefficient max_n |e_ijk n_i n_j n_k| and a direction with e_l(n) > 0.
    Also ``eij_max_matminer``/``v_max_matminer``, which reproduce the matminer/de Jong et al. (2015)
    ``eij_max``/``v_max`` columns; see ``matminer_longitudinal_piezo`` for how they differ.
Phonon (DOS on a frequency grid in cm^-1)
    Mean frequency and harmonic heat capacity: zoo.core.phonon_derived (the two also under this module's name).

Bad input (wrong shape, NaN, asymmetry where symmetry is required, negative DOS, grid not increasing) raises
``ValueError`` naming the argument and what is wrong.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from zoo.core import tensor_checks, tensors

# Kept under this module's name too: the shipped model cards (zoo/releases/*/README.md) cite
# zoo.core.derived.heat_capacity_cv and zoo.core.derived.mean_frequency.
from zoo.core.phonon_derived import heat_capacity_cv, mean_frequency  # noqa: F401

# scipy (constants, optimize, spatial: ~2 s to import on the shared machine) is imported where it is used, so that
# importing the property specs, which name these functions, stays cheap (the `zoo list`/`zoo info` fast path).

# Units of every key the *_properties / heat_capacity_cv functions return.
UNITS: dict[str, str] = {
    # elastic
    "k_voigt": "GPa", "k_reuss": "GPa", "k_vrh": "GPa",
    "g_voigt": "GPa", "g_reuss": "GPa", "g_vrh": "GPa",
    "y_mod": "GPa", "homogeneous_poisson": "1", "universal_anisotropy": "1",
    "youngs_modulus_min": "GPa", "youngs_modulus_max": "GPa",
    "youngs_modulus_min_direction": "unit vector", "youngs_modulus_max_direction": "unit vector",
    "born_stable": "bool", "min_eigenvalue": "GPa (smallest eigenvalue of the 6x6 Voigt matrix)",
    # dielectric (single tensor; the set adds the suffix _electronic, _ionic, _total)
    "eps_poly": "1", "eigenvalues": "1 (ascending)", "anisotropy_ratio": "1", "refractive_index": "1",
    # piezo
    "max_longitudinal": "C/m^2", "max_longitudinal_direction": "unit vector",
    "eij_max_matminer": "C/m^2", "v_max_matminer": "direction, largest component 1",
    # phonon
    "mean_frequency_cm": "cm^-1",
    "temperature_k": "K",
    "cv_per_atom_kb": "k_B per atom", "cv_j_per_mol_atoms_k": "J/(K mol of atoms)", "cv_j_per_kg_k": "J/(kg K)",
    "cv_300k_per_atom_kb": "k_B per atom", "cv_300k_j_per_mol_atoms_k": "J/(K mol of atoms)",
    "cv_300k_j_per_kg_k": "J/(kg K)",
}

SPHERE_GRID_POINTS = 4000
# Each Fibonacci-grid point has about six Voronoi neighbours; eight nearest covers them all.
_GRID_NEIGHBOURS = 8
# Refinement starts per side (min, max). Checked on all 1,181 elastic and 941 piezo snapshot tensors against a
# 300,000-point grid; refining from more starts cost 20x the time for no measurable gain.
_MAX_STARTS = 1

# Relative tolerance for total = electronic + ionic (the parts are stored to ~6 significant figures).
PART_SUM_RTOL = 1e-6
# Singular stiffness: smallest |eigenvalue| below this fraction of the largest has no usable compliance.
_SINGULAR_RTOL = 1e-12


# matminer 0.4.1 / de Jong et al. (2015) searched integer directions [uvw] with |u|,|v|,|w| <= 7:
# the eij_max column is reproduced to its 6 printed decimals on all 941 rows with 7, not with 6 or 8.
MATMINER_MILLER_MAX = 7


# ------------------------------------------------------------------------------------------- input checks
def _array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """`value` as a float64 array of exactly `shape`, finite; ValueError naming `name` otherwise."""
    arr = tensor_checks.as_float64(value, name, shape)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return np.array(arr, dtype=np.float64)  # a copy, so callers' arrays are never modified


def _symmetric_matrix(value: Any, name: str, size: int) -> np.ndarray:
    """A finite symmetric (size, size) matrix, symmetrised; asymmetry above tensor_checks.SYMMETRY_RTOL is refused."""
    a = _array(value, name, (size, size))
    scale = float(np.abs(a).max())
    asymmetry = float(np.abs(a - a.T).max()) / scale if scale > 0 else 0.0
    if asymmetry > tensor_checks.SYMMETRY_RTOL:
        raise ValueError(
            f"{name} must be symmetric: relative asymmetry max|a - a^T| / max|a| = {asymmetry:.3g} "
            f"> {tensor_checks.SYMMETRY_RTOL:g}"
        )
    return 0.5 * (a + a.T)


def _vector(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


# ------------------------------------------------------------------------------- extrema on the unit sphere
@functools.lru_cache(maxsize=8)
def fibonacci_sphere(n_points: int = SPHERE_GRID_POINTS) -> np.ndarray:
    """`n_points` quasi-uniform unit vectors on a golden-angle spiral, shape (n_points, 3), read-only.

    Deterministic: point k has z = 1 - (2k + 1)/n and azimuth k times the golden angle pi (3 - sqrt 5).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 12:
        raise ValueError(f"n_points must be an integer >= 12, got {n_points!r}")
    k = np.arange(n_points, dtype=np.float64)
    z = 1.0 - (2.0 * k + 1.0) / n_points
    radius = np.sqrt(1.0 - z * z)
    azimuth = k * math.pi * (3.0 - math.sqrt(5.0))
    grid = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), z], axis=1)
    grid.setflags(write=False)
    return grid


@functools.lru_cache(maxsize=8)
def _grid_neighbours(n_points: int) -> np.ndarray:
    """Indices (n_points, _GRID_NEIGHBOURS) of each grid point's nearest other grid points."""
    from scipy.spatial import cKDTree

    _, index = cKDTree(fibonacci_sphere(n_points)).query(fibonacci_sphere(n_points), k=_GRID_NEIGHBOURS + 1)
    return index[:, 1:]


def _fully_symmetric(tensor: np.ndarray) -> np.ndarray:
    """Average of `tensor` over all index permutations: the part that n_i n_j ... contracts with."""
    rank = tensor.ndim
    return sum(np.transpose(tensor, p) for p in itertools.permutations(range(rank))) / math.factorial(rank)


def _powers(directions: np.ndarray, degree: int) -> np.ndarray:
    """Flattened tensor powers n (x) n (x) ... (degree factors), shape (m, 3**degree)."""
    out = np.ones((directions.shape[0], 1))
    for _ in range(degree):
        out = (out[:, :, None] * directions[:, None, :]).reshape(directions.shape[0], -1)
    return out


class SphereExtrema(NamedTuple):
    """Global extrema of a form F(n) on the unit sphere; the directions are unit vectors."""

    min_value: float
    min_direction: np.ndarray
    max_value: float
    max_direction: np.ndarray


def form_extrema_on_sphere(tensor: Any, n_grid: int = SPHERE_GRID_POINTS, name: str = "tensor") -> SphereExtrema:
    """Minimum and maximum over unit vectors n of F(n) = T_ij..k n_i n_j ... n_k for a (3,)*rank tensor T.

    Grid search on ``fibonacci_sphere(n_grid)``, then BFGS in a tangent-plane chart from every grid local
    extremum (the best one per side: on this grid a second start never changed the result by more than the
    grid refinement tolerance on the snapshot). Deterministic; see the module docstring for the accuracy.
    """
    rank = np.ndim(tensor)
    if rank < 1:
        raise ValueError(f"{name} must have rank >= 1, got a scalar")
    t = _array(tensor, name, (3,) * rank)
    symmetric = _fully_symmetric(t)
    grid = fibonacci_sphere(n_grid)
    values = _powers(grid, rank) @ symmetric.ravel()
    scale = float(np.abs(values).max())
    if scale == 0.0:
        # The form vanishes on a dense grid, so (being a polynomial of low degree) everywhere.
        return SphereExtrema(0.0, grid[0].copy(), 0.0, grid[0].copy())
    # Work with F/scale ~ 1 so that the BFGS tolerances are relative.
    normalised = symmetric / scale
    neighbours = _grid_neighbours(n_grid)
    results = []
    for sign in (1.0, -1.0):  # minimise F, then minimise -F
        signed = sign * values / scale
        local = np.flatnonzero(signed <= signed[neighbours].min(axis=1))
        starts = local[np.argsort(signed[local], kind="stable")][:_MAX_STARTS]
        best_value, best_direction = float(signed[starts[0]]), grid[starts[0]].copy()
        for start in starts:
            value, direction = _refine_on_sphere(normalised, rank, grid[start], sign)
            if value < best_value:
                best_value, best_direction = value, direction
        results.append((sign * best_value * scale, best_direction))
    (min_value, min_direction), (max_value, max_direction) = results
    return SphereExtrema(min_value, min_direction, max_value, max_direction)


def _refine_on_sphere(symmetric: np.ndarray, rank: int, start: np.ndarray, sign: float) -> tuple[float, np.ndarray]:
    """Locally minimise sign * F(n) near `start`, with n = (start + p1 t1 + p2 t2)/|.| (no pole singularity)."""
    helper = np.eye(3)[int(np.argmin(np.abs(start)))]
    tangent1 = helper - helper.dot(start) * start
    tangent1 /= np.linalg.norm(tangent1)
    tangent2 = np.cross(start, tangent1)
    tangents = np.stack([tangent1, tangent2])
    gradient_matrix = symmetric.reshape(3, -1)

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        point = start + p @ tangents
        norm = float(np.linalg.norm(point))
        n = point / norm
        lower = _powers(n[None, :], rank - 1)[0]
        grad_n = rank * (gradient_matrix @ lower)  # dF/dn for a fully symmetric T
        value = float(n @ grad_n) / rank
        # d n / d p_k = (t_k - (t_k . n) n) / norm
        grad_p = (tangents @ grad_n - (tangents @ n) * (n @ grad_n)) / norm
        return sign * value, sign * grad_p

    from scipy import optimize

    result = optimize.minimize(objective, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-10})
    point = start + result.x @ tangents
    return float(result.fun), point / np.linalg.norm(point)


# ------------------------------------------------------------------------------------------------ elastic
def voigt_moduli(c_voigt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K_V, G_V) of Voigt stiffness matrices (..., 6, 6), GPa: linear in c, defined for any tensor (no inverse)."""
    c = np.asarray(c_voigt, dtype=np.float64)
    diagonal = c[..., 0, 0] + c[..., 1, 1] + c[..., 2, 2]
    off = c[..., 0, 1] + c[..., 1, 2] + c[..., 2, 0]
    shear = c[..., 3, 3] + c[..., 4, 4] + c[..., 5, 5]
    return (diagonal + 2.0 * off) / 9.0, (diagonal - off + 3.0 * shear) / 15.0


def hill_moduli(c_voigt: np.ndarray, s_voigt: np.ndarray) -> dict[str, float]:
    """Voigt, Reuss and Hill bulk and shear moduli, Hill Young's modulus and Poisson ratio, universal anisotropy.

    The formulas of REFERENCE.md (the same ones pymatgen's ElasticTensor implements; the tests compare both).
    Written out here because pymatgen recomputes the Voigt matrix on every property access, which made the
    elastic dataset build ~20x slower.
    """
    s = s_voigt
    diagonal_s, off_s, shear_s = s[0, 0] + s[1, 1] + s[2, 2], s[0, 1] + s[1, 2] + s[2, 0], s[3, 3] + s[4, 4] + s[5, 5]
    k_voigt, g_voigt = voigt_moduli(c_voigt)
    k_reuss = 1.0 / (diagonal_s + 2.0 * off_s)
    g_reuss = 15.0 / (4.0 * diagonal_s - 4.0 * off_s + 3.0 * shear_s)
    k_vrh, g_vrh = (k_voigt + k_reuss) / 2.0, (g_voigt + g_reuss) / 2.0
    return {
        "k_voigt": float(k_voigt),
        "k_reuss": float(k_reuss),
        "k_vrh": float(k_vrh),
        "g_voigt": float(g_voigt),
        "g_reuss": float(g_reuss),
        "g_vrh": float(g_vrh),
        "y_mod": float(9.0 * k_vrh * g_vrh / (3.0 * k_vrh + g_vrh)),
        "homogeneous_poisson": float((3.0 * k_vrh - 2.0 * g_vrh) / (6.0 * k_vrh + 2.0 * g_vrh)),
        "universal_anisotropy": float(5.0 * g_voigt / g_reuss + k_voigt / k_reuss - 6.0),
    }


def elastic_properties(c_voigt: Any) -> dict[str, Any]:
    """Derived elastic quantities of a 6x6 Voigt stiffness in GPa (symmetric; Voigt order of zoo.core.tensors).

    Keys (units in ``UNITS``): k_voigt, k_reuss, k_vrh, g_voigt, g_reuss, g_vrh, y_mod (Hill, GPa),
    homogeneous_poisson, universal_anisotropy, youngs_modulus_min/_max and their _direction (unit vectors),
    born_stable (Voigt matrix positive definite), min_eigenvalue. Where the uniaxial compliance
    n_i n_j n_k n_l S_ijkl is not positive in every direction (an unstable tensor), E(n) is unbounded and
    the four youngs_modulus_* values are None. A singular stiffness (no compliance) raises ValueError.
    """
    c = _symmetric_matrix(c_voigt, "c_voigt", 6)
    eigenvalues = np.linalg.eigvalsh(c)
    largest = float(np.abs(eigenvalues).max())
    if largest == 0.0 or float(np.abs(eigenvalues).min()) <= _SINGULAR_RTOL * largest:
        raise ValueError("c_voigt is singular (an eigenvalue is ~0): the compliance and Reuss bounds are undefined")
    s_voigt = _symmetrised_inverse(c)
    moduli = hill_moduli(c, s_voigt)
    compliance = tensors.compliance_voigt_to_cartesian(s_voigt)
    uniaxial = form_extrema_on_sphere(compliance, name="compliance")
    if uniaxial.min_value > 0.0:
        # E = 1/q, so the stiffest direction is where the uniaxial compliance q is smallest.
        young_min, young_min_dir = 1.0 / uniaxial.max_value, _vector(uniaxial.max_direction)
        young_max, young_max_dir = 1.0 / uniaxial.min_value, _vector(uniaxial.min_direction)
    else:
        young_min = young_min_dir = young_max = young_max_dir = None
    min_eigenvalue = float(eigenvalues[0])
    return {
        **moduli,
        "youngs_modulus_min": young_min,
        "youngs_modulus_max": young_max,
        "youngs_modulus_min_direction": young_min_dir,
        "youngs_modulus_max_direction": young_max_dir,
        "born_stable": bool(min_eigenvalue > 0.0),
        "min_eigenvalue": min_eigenvalue,
    }


def _symmetrised_inverse(c: np.ndarray) -> np.ndarray:
    s = np.linalg.inv(c)
    return 0.5 * (s + s.T)  # inv() of a symmetric matrix is symmetric only to rounding


def directional_youngs_modulus(c_voigt: Any, directions: Any) -> np.ndarray:
    """E(n) = 1/(n_i n_j n_k n_l S_ijkl) in GPa for each row of `directions` (m, 3), normalised first."""
    c = _symmetric_matrix(c_voigt, "c_voigt", 6)
    n = _unit_rows(directions, "directions")
    compliance = tensors.compliance_voigt_to_cartesian(_symmetrised_inverse(c))
    return 1.0 / (_powers(n, 4) @ compliance.ravel())


def _unit_rows(directions: Any, name: str) -> np.ndarray:
    arr = tensor_checks.as_float64(directions, name, (3,))
    n = np.array(arr, dtype=np.float64).reshape(-1, 3)
    norms = np.linalg.norm(n, axis=1)
    if np.any(norms == 0.0):
        raise ValueError(f"{name} contains a zero vector")
    return n / norms[:, None]


# --------------------------------------------------------------------------------------------- dielectric
def dielectric_tensor_properties(eps: Any, name: str = "eps") -> dict[str, Any]:
    """eps_poly (mean eigenvalue), eigenvalues (ascending) and anisotropy_ratio lambda_max/lambda_min of one
    symmetric 3x3 dielectric tensor. anisotropy_ratio is None when lambda_min <= 0 (e.g. an ionic part of 0).
    """
    eigenvalues = np.linalg.eigvalsh(_symmetric_matrix(eps, name, 3))
    return {
        "eps_poly": float(eigenvalues.mean()),
        "eigenvalues": _vector(eigenvalues),
        "anisotropy_ratio": float(eigenvalues[-1] / eigenvalues[0]) if eigenvalues[0] > 0.0 else None,
    }


def dielectric_properties(electronic: Any, ionic: Any, total: Any) -> dict[str, Any]:
    """Per-part quantities of ``dielectric_tensor_properties`` keyed ``<name>_<part>`` (e.g.
    eps_poly_electronic, eigenvalues_total), plus refractive_index = sqrt(eps_poly_electronic): the optical
    index from the high-frequency (electronic) permittivity, as Materials Project's ``n``.
    total must equal electronic + ionic (relative PART_SUM_RTOL).
    """
    parts = {"electronic": electronic, "ionic": ionic, "total": total}
    matrices = {part: _symmetric_matrix(value, part, 3) for part, value in parts.items()}
    mismatch = float(np.abs(matrices["total"] - matrices["electronic"] - matrices["ionic"]).max())
    scale = max(float(np.abs(matrices["total"]).max()), 1.0)
    if mismatch > PART_SUM_RTOL * scale:
        raise ValueError(f"total must equal electronic + ionic: max difference {mismatch:.3g}")
    out: dict[str, Any] = {}
    for part, matrix in matrices.items():
        for key, value in dielectric_tensor_properties(matrix, part).items():
            out[f"{key}_{part}"] = value
    out["refractive_index"] = refractive_index(out["eps_poly_electronic"], "electronic")
    return out


def refractive_index(eps_poly_electronic: float, name: str = "eps") -> float:
    """n = sqrt(eps_poly) of the electronic (high-frequency) permittivity: the optical index, as Materials
    Project's ``n``. ValueError when the mean eigenvalue is not positive."""
    if not eps_poly_electronic > 0.0:
        raise ValueError(f"{name} has mean eigenvalue {eps_poly_electronic:.3g} <= 0: no refractive index")
    return math.sqrt(eps_poly_electronic)


# -------------------------------------------------------------------------------------------------- piezo
def longitudinal_piezo(e_voigt: Any, directions: Any) -> np.ndarray:
    """Longitudinal piezoelectric coefficient e_l(n) = e_ijk n_i n_j n_k (C/m^2) for each row of `directions`.

    It is the polarisation along n per unit uniaxial strain along n; odd in n, so |e_l| is what has a maximum.
    """
    e = _array(e_voigt, "e_voigt", (3, 6))
    n = _unit_rows(directions, "directions")
    return _powers(n, 3) @ tensors.piezo_voigt_to_cartesian(e).ravel()


def matminer_longitudinal_piezo(e_voigt: Any, directions: Any) -> np.ndarray:
    """The "longitudinal modulus" behind matminer's ``eij_max``: n . (e_Voigt m(n)), m(n) = Voigt(n n^T).

    m(n) = (n1^2, n2^2, n3^2, n2 n3, n1 n3, n1 n2) is the uniaxial strain along n in Voigt form *without*
    the engineering factor 2 on the shear components, so the e_14..e_36-type (shear) terms enter with half
    their weight in e_l(n) = e_ijk n_i n_j n_k. It is therefore not a tensor invariant: its maximum depends
    on the frame (the CSV's tensors are in the IEEE frame). Kept only to cross-check the snapshot's column.
    """
    e = _array(e_voigt, "e_voigt", (3, 6))
    n = _unit_rows(directions, "directions")
    strains = tensors.symmetric2_cartesian_to_voigt(n[:, :, None] * n[:, None, :])
    return np.einsum("mi,ij,mj->m", n, e, strains)


@functools.lru_cache(maxsize=1)
def _matminer_directions() -> np.ndarray:
    """Integer directions [uvw], |u|,|v|,|w| <= MATMINER_MILLER_MAX, not all zero (read-only, (m, 3))."""
    span = range(-MATMINER_MILLER_MAX, MATMINER_MILLER_MAX + 1)
    directions = np.array([uvw for uvw in itertools.product(span, repeat=3) if any(uvw)], dtype=np.float64)
    directions.setflags(write=False)
    return directions


def piezo_properties(e_voigt: Any) -> dict[str, Any]:
    """Derived piezoelectric quantities of a 3x6 Voigt stress tensor e (C/m^2, no factor 2).

    max_longitudinal: max over unit n of |e_ijk n_i n_j n_k|; max_longitudinal_direction: a unit n where
    e_l(n) = +max_longitudinal (None for a zero tensor). eij_max_matminer / v_max_matminer: matminer's
    ``eij_max`` / ``v_max`` definition (``matminer_longitudinal_piezo`` maximised in absolute value over
    the integer directions with indices up to 7; v_max scaled so its largest component is 1). Among
    symmetry-equivalent directions v_max_matminer may differ from the CSV's choice; the value does not.
    """
    e = _array(e_voigt, "e_voigt", (3, 6))
    extrema = form_extrema_on_sphere(tensors.piezo_voigt_to_cartesian(e), name="e_voigt")
    # e_l is odd in n, so max |e_l| = max e_l = -min e_l; the refined max is the better-resolved of the two.
    max_longitudinal = max(extrema.max_value, -extrema.min_value, 0.0)
    if max_longitudinal == 0.0:
        direction = None
    elif extrema.max_value >= -extrema.min_value:
        direction = _vector(extrema.max_direction)
    else:
        direction = _vector(-extrema.min_direction)
    integer_directions = _matminer_directions()
    matminer = np.abs(matminer_longitudinal_piezo(e, integer_directions))
    best = integer_directions[int(np.argmax(matminer))]
    return {
        "max_longitudinal": float(max_longitudinal),
        "max_longitudinal_direction": direction,
        "eij_max_matminer": float(matminer.max()),
        "v_max_matminer": _vector(best / best.max() if best.max() > 0 else -best / (-best).max()),
    }


