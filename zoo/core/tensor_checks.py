"""The argument checks of zoo.core.tensors (shapes, finiteness, symmetry, orthogonality) and the array-kind helpers
that let every function there take numpy arrays or torch tensors. zoo.core.tensors re-exports the public names."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor


class _LazyModule:
    """Imports a module on first attribute access.

    Importing torch costs ~2.5 s; the data stages only ever pass numpy arrays, so they should not pay for it.
    A torch tensor can only reach these functions once torch is imported, so `is_torch` never imports it.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch = _LazyModule("torch")

# Relative tolerance for "this tensor has the symmetry its kind requires". Published tensors are printed to
# ~6 significant figures, so asymmetries below 1e-6 of the norm are rounding; larger ones are real data problems
# and are refused here (the validate stage quarantines them before they reach these functions).
SYMMETRY_RTOL = 1e-6
ROTATION_ATOL = 1e-6


# --------------------------------------------------------------------------------------------------- checks
def is_torch(x: Array) -> bool:
    loaded = sys.modules.get("torch")
    return loaded is not None and isinstance(x, loaded.Tensor)


def as_float64(x: Array, name: str, trailing_shape: tuple[int, ...], check_finite: bool = True) -> Array:
    """Return `x` as a float64 array (numpy or torch as given) whose last dims are `trailing_shape`.

    Raises ValueError naming `name` for a wrong shape or (unless the caller checks it more cheaply itself)
    non-finite values.
    """
    if is_torch(x):
        arr = x.to(torch.float64)
        finite = not check_finite or bool(torch.isfinite(arr).all())
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an array of numbers with shape (..., {shape_text(trailing_shape)}): {exc}") from None
        finite = not check_finite or bool(np.isfinite(arr).all())
    shape = tuple(arr.shape)
    k = len(trailing_shape)
    if len(shape) < k or shape[len(shape) - k :] != tuple(trailing_shape):
        raise ValueError(f"{name} must have shape (..., {shape_text(trailing_shape)}), got {shape}")
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def shape_text(shape: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in shape)


def max_abs(x: Array) -> float:
    """max |x| (NaN if x has one); numpy's max and min avoid an |x| temporary of x's size."""
    if is_torch(x):
        return float(x.detach().abs().max()) if x.numel() else 0.0
    return float(max(x.max(), -x.min())) if x.size else 0.0


def require_symmetric(t: Array, perm_axes: tuple[int, ...], name: str, what: str) -> None:
    """Refuse `t` unless it equals its transpose over the last len(perm_axes) axes (relative SYMMETRY_RTOL)."""
    n = len(perm_axes)
    lead = t.ndim - n
    axes = tuple(range(lead)) + tuple(lead + a for a in perm_axes)
    swapped = t.permute(*axes) if is_torch(t) else np.transpose(t, axes)
    scale = max_abs(t)
    if scale == 0.0:
        return
    asym = max_abs(t - swapped) / scale
    if asym > SYMMETRY_RTOL:
        raise ValueError(f"{name} is not {what}: relative asymmetry {asym:.3g} > {SYMMETRY_RTOL:g}")


def check_rotation(R: Array, name: str = "R") -> Array:
    """Return R as float64 after checking it is orthogonal (proper or improper), shape (..., 3, 3)."""
    R = as_float64(R, name, (3, 3))
    if is_torch(R):
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        err = max_abs(R @ R.transpose(-1, -2) - eye)
    else:
        err = max_abs(R @ np.swapaxes(R, -1, -2) - np.eye(3))
    if err > ROTATION_ATOL:
        raise ValueError(f"{name} is not an orthogonal matrix: max |R R^T - I| = {err:.3g} > {ROTATION_ATOL:g}")
    return R


def contiguous(x: Array) -> Array:
    """Fancy indexing can return strided views; later reshapes and matrix products want C order."""
    return x.contiguous() if is_torch(x) else np.ascontiguousarray(x)


def like(x: Array, values: np.ndarray) -> Array:
    """A numpy constant in the array kind (and device) of `x`."""
    return torch.as_tensor(values, dtype=torch.float64, device=x.device) if is_torch(x) else values


