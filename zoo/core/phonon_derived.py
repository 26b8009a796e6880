"""Derived scalar quantities of the phonon DOS; zoo.core.derived re-exports them (its docstring states the contract).

Phonon (DOS on a frequency grid in cm^-1, any normalisation)
    Mean frequency int g w dw / int g dw and the harmonic heat capacity
    C_V(T) = k_B int (x/2)^2 / sinh^2(x/2) g(w) dw, x = h c w / (k_B T), with g normalised to 3N states per
    cell (trapezoid rule on the given grid). 1 cm^-1 = h c (100 cm/m) = 1.98645e-23 J = 0.123984 meV, i.e.
    x = 1.438777 K * w[cm^-1] / T (scipy.constants, CODATA).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import numpy as np


@functools.cache
def cm_to_kelvin() -> float:
    """h c / k_B in K per cm^-1 (the second radiation constant per cm), from scipy.constants (CODATA)."""
    from scipy import constants

    return constants.h * constants.c * 100.0 / constants.k


# Below this x the Einstein kernel uses its series 1 - x^2/12 (relative error < 1e-17 there).
_SMALL_X = 1e-4
CV_REFERENCE_TEMPERATURE_K = 300.0


# ------------------------------------------------------------------------------------------------- phonon
def _finite_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _dos_inputs(freq_cm: Any, dos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (frequency grid, DOS): 1-D, same length >= 2, finite, grid strictly increasing and >= 0,
    DOS >= 0 with a positive integral."""
    w, g = _finite_array(freq_cm, "freq_cm"), _finite_array(dos, "dos")
    if w.ndim != 1 or w.size < 2:
        raise ValueError(f"freq_cm must be a 1-D grid of at least 2 frequencies, got shape {w.shape}")
    if g.shape != w.shape:
        raise ValueError(f"dos must have the shape of freq_cm {w.shape}, got {g.shape}")
    if np.any(np.diff(w) <= 0.0):
        raise ValueError("freq_cm must be strictly increasing")
    if w[0] < 0.0:
        raise ValueError(f"freq_cm must be >= 0 (no imaginary modes), got a minimum of {w[0]:g}")
    if np.any(g < 0.0):
        raise ValueError(f"dos must be non-negative, got a minimum of {g.min():g}")
    if np.trapezoid(g, w) <= 0.0:
        raise ValueError("dos must have a positive integral over freq_cm")
    return w, g


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_finite(value: Any, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0.0 or (value == 0.0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def normalise_dos_to_3n(freq_cm: Any, dos: Any, n_atoms: int) -> np.ndarray:
    """The DOS rescaled so that its trapezoid integral over freq_cm is 3 n_atoms (states per cm^-1 per cell)."""
    w, g = _dos_inputs(freq_cm, dos)
    n = _positive_int(n_atoms, "n_atoms")
    return g * (3.0 * n / np.trapezoid(g, w))


def dos_wasserstein(grid: Any, true: Any, pred: Any) -> float:
    """The 1-D Wasserstein distance (scipy.stats.wasserstein_distance, in the grid's units) between two DOS on the
    same grid taken as distributions (each normalised to sum 1, Mat2Spec's setting); NaN when either is all zero."""
    from scipy.stats import wasserstein_distance

    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if not (true.sum() > 0 and pred.sum() > 0):
        return float("nan")
    return float(wasserstein_distance(grid, grid, true, pred))


def dos_r2(true: Any, pred: Any) -> float | None:
    """R^2 of predicted spectra (records x bins), sklearn r2_score with multioutput='variance_weighted': 1 - SSE over
    the true values' per-bin variance (Chen et al.'s and Mat2Spec's setting); None for fewer than two records."""
    from sklearn.metrics import r2_score

    true = np.asarray(true, dtype=np.float64)
    return float(r2_score(true, np.asarray(pred, dtype=np.float64), multioutput="variance_weighted")) \
        if len(true) >= 2 else None


def mean_frequency(freq_cm: Any, dos: Any) -> float:
    """int g w dw / int g dw in cm^-1 (trapezoid rule; independent of the DOS normalisation)."""
    w, g = _dos_inputs(freq_cm, dos)
    return float(np.trapezoid(g * w, w) / np.trapezoid(g, w))


def einstein_cv_kernel(x: Any) -> np.ndarray:
    """(x/2)^2 / sinh^2(x/2) = x^2 e^-x / (1 - e^-x)^2 for x >= 0: 1 at x = 0, 0 as x -> inf, no overflow."""
    x = np.asarray(x, dtype=np.float64)
    small = x < _SMALL_X
    safe = np.where(small, 1.0, x)  # keeps the general branch finite where the series is used
    general = safe * safe * np.exp(-safe) / np.expm1(-safe) ** 2
    return np.where(small, 1.0 - x * x / 12.0, general)


def heat_capacity_cv(freq_cm: Any, dos: Any, n_atoms: int, temperature_k: float, cell_mass_amu: float) -> dict[str, float]:
    """Harmonic C_V at `temperature_k` from a phonon DOS (any normalisation; rescaled to 3 n_atoms).

    Keys: cv_per_atom_kb (units of k_B per atom, -> 3 at high T), cv_j_per_mol_atoms_k (J/(K mol of atoms),
    -> 3R), cv_j_per_kg_k (J/(kg K), dividing the per-cell value by `cell_mass_amu`), temperature_k.
    C_V(0) = 0; the w = 0 grid point contributes its x -> 0 limit at T > 0.
    """
    from scipy import constants

    g = normalise_dos_to_3n(freq_cm, dos, n_atoms)
    w = np.asarray(freq_cm, dtype=np.float64)
    n = _positive_int(n_atoms, "n_atoms")
    temperature = _positive_finite(temperature_k, "temperature_k", allow_zero=True)
    mass_kg = _positive_finite(cell_mass_amu, "cell_mass_amu") * constants.atomic_mass
    if temperature == 0.0:
        # Every mode with w > 0 is frozen out; the w = 0 point has zero measure.
        per_cell_kb = 0.0
    else:
        per_cell_kb = float(np.trapezoid(einstein_cv_kernel(cm_to_kelvin() * w / temperature) * g, w))
    return {
        "temperature_k": temperature,
        "cv_per_atom_kb": per_cell_kb / n,
        "cv_j_per_mol_atoms_k": per_cell_kb / n * constants.R,
        "cv_j_per_kg_k": per_cell_kb * constants.k / mass_kg,
    }


def phonon_properties(freq_cm: Any, dos: Any, n_atoms: int, cell_mass_amu: float) -> dict[str, float]:
    """mean_frequency_cm and C_V at 300 K (cv_300k_per_atom_kb, cv_300k_j_per_mol_atoms_k, cv_300k_j_per_kg_k)."""
    cv = heat_capacity_cv(freq_cm, dos, n_atoms, CV_REFERENCE_TEMPERATURE_K, cell_mass_amu)
    return {
        "mean_frequency_cm": mean_frequency(freq_cm, dos),
        "cv_300k_per_atom_kb": cv["cv_per_atom_kb"],
        "cv_300k_j_per_mol_atoms_k": cv["cv_j_per_mol_atoms_k"],
        "cv_300k_j_per_kg_k": cv["cv_j_per_kg_k"],
    }
