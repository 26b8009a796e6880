"""Importing e3nn without the two import-time costs that no network here needs (issue 13: a cold `zoo.load` + first
prediction in a fresh process under 3 s on the 2-core machine). zoo.nn.models imports e3nn inside `lean()`:

    with e3nn_import.lean():
        from e3nn import o3

- torch._dynamo: e3nn.o3 decorates one function with ``torch.compiler.disable`` when imported, and that call imports
  torch._dynamo: 1.5-2.5 s of a cold ``zoo.load`` (1.9 s of 6.4 measured with -X importtime), for nothing here,
  since no network is ever torch.compile'd. While e3nn is imported the decorator is the identity (what
  torch._dynamo.disable amounts to outside compiled code); torch's own is restored right after.
- sympy: e3nn.o3._angular_spherical_harmonics takes seven names from sympy (SYMPY_NAMES) when imported, 0.5-0.6
  CPU-s of a cold load + predict of 3.3 (measured with benchmarks/cli_and_cold_load.py), and uses them only to
  derive the Legendre polynomials of o3.Legendre / o3.SphericalHarmonicsAlphaBeta, which no network here builds.
  While e3nn is imported, ``sympy`` is a stand-in holding a `_DeferredSympyName` for each of the seven; the first
  call of any of them imports sympy and puts the real names into that e3nn module, so its Legendre code still works
  unchanged for a caller who builds it. ``pi`` is the one name e3nn reads without calling it, and it reads it only
  in ``_sympy_legendre`` after calling ``Integer``, when the real names are already in place. That reading is of
  e3nn DEFERRED_FOR_E3NN only: with any other version, or with sympy or e3nn.o3 already imported, sympy is not
  deferred. tests/test_zoo_load.py checks both that the cold path imports no sympy and that o3.Legendre still
  matches e3nn's sympy-free spherical harmonics.
"""

from __future__ import annotations

import contextlib
import sys
import types

import torch

DEFERRED_FOR_E3NN = "0.6.0"
SYMPY_USER = "e3nn.o3._angular_spherical_harmonics"
SYMPY_NAMES = ("Integer", "Poly", "diff", "factorial", "pi", "sqrt", "symbols")


class _DeferredSympyName:
    """Stands for ``sympy.<name>`` in SYMPY_USER until first called (module docstring)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        import sympy

        user = sys.modules[SYMPY_USER]
        for name in SYMPY_NAMES:
            if isinstance(getattr(user, name, None), _DeferredSympyName):
                setattr(user, name, getattr(sympy, name))
        return getattr(sympy, self.name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<sympy.{self.name}, imported when first called>"


@contextlib.contextmanager
def lean():
    """The scope in which to import e3nn (module docstring); everything it changes is restored when it ends."""
    import e3nn  # the package alone: a few ms, and it says its version

    defer_sympy = (e3nn.__version__ == DEFERRED_FOR_E3NN and "sympy" not in sys.modules
                   and SYMPY_USER not in sys.modules)
    if defer_sympy:
        stand_in = types.ModuleType("sympy", "stand-in while e3nn is imported (zoo.nn.e3nn_import)")
        for name in SYMPY_NAMES:
            setattr(stand_in, name, _DeferredSympyName(name))
        sys.modules["sympy"] = stand_in
    original_disable = torch.compiler.disable
    torch.compiler.disable = lambda fn=None, recursive=True, **_: fn if fn is not None else (lambda f: f)
    try:
        yield
    finally:
        torch.compiler.disable = original_disable
        if defer_sympy and sys.modules.get("sympy") is stand_in:
            del sys.modules["sympy"]  # a later `import sympy`, anywhere, imports the real one
