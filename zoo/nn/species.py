"""Species embeddings: atomic number -> the scalar (0e) features an atom starts the network with.

    learned              one trained vector per element (``torch.nn.Embedding``). An element seen in few training
                         records keeps an almost random vector: a third of the newer Materials Project elastic
                         materials hold an element the 2015 snapshot shows fewer than five times.
    descriptors          a trained MLP of fixed, normalised physical descriptors of the element (``DESCRIPTORS``,
                         from pymatgen's periodic table): chemically similar elements start close, so a rare element
                         lands near its neighbours instead of at a random point (the atom features of CGCNN and
                         MEGNet follow the same idea)
    descriptors+learned  the same plus a learned per-element correction, initialised at zero, which frequent
                         elements can use to refine their place

The descriptor table is part of the model's weights (a buffer saved in model.safetensors), so a model keeps the
numbers it was trained with whatever pymatgen version later loads it.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from zoo.nn import e3nn_import
from zoo.nn.model_files import SPECIES_EMBEDDINGS

with e3nn_import.lean():  # as zoo.nn.models imports it (a no-op once e3nn is loaded)
    from e3nn import o3

# Largest atomic number the embeddings have a row for (oganesson).
MAX_ATOMIC_NUMBER = 118

# pymatgen Element properties used as numbers, and those taken as logarithms (they span orders of magnitude).
_NUMERIC = ("row", "group", "X", "atomic_radius", "atomic_radius_calculated", "average_ionic_radius",
            "van_der_waals_radius", "ionization_energy", "electron_affinity", "mendeleev_no", "melting_point")
_LOGARITHMIC = ("atomic_mass", "molar_volume", "density_of_solid", "bulk_modulus")
_BLOCKS = ("s", "p", "d", "f")
DESCRIPTORS: tuple[str, ...] = (
    *_NUMERIC, *(f"log_{name}" for name in _LOGARITHMIC), *(f"block_{b}" for b in _BLOCKS),
    *(f"valence_{b}" for b in _BLOCKS),
)


def _number(element, name: str) -> float:
    """A property as a float; NaN where pymatgen has none (or only a text such as 'no data')."""
    try:
        value = getattr(element, name)
        value = float(value) if value is not None else math.nan
    except (TypeError, ValueError, AttributeError, KeyError):  # pymatgen raises KeyError for some gaps
        return math.nan
    return value if math.isfinite(value) else math.nan


def _valence_electrons(element) -> dict[str, float]:
    """Electrons outside the noble-gas core by subshell: outermost s and p, the d shell below, the f two below."""
    try:
        shells = element.full_electronic_structure
    except KeyError:  # no data for the superheavy elements
        return dict.fromkeys(_BLOCKS, math.nan)
    outer = max(n for n, _, _ in shells)
    wanted = {"s": outer, "p": outer, "d": outer - 1, "f": outer - 2}
    return {b: float(sum(count for n, letter, count in shells if letter == b and n == wanted[b])) for b in _BLOCKS}


def _raw_row(z: int) -> list[float]:
    from pymatgen.core.periodic_table import Element

    element = Element.from_Z(z)
    row = [_number(element, name) for name in _NUMERIC]
    row += [math.log(value) if value > 0 else math.nan for value in (_number(element, n) for n in _LOGARITHMIC)]
    row += [float(element.block == b) for b in _BLOCKS]
    valence = _valence_electrons(element)
    return row + [valence[b] for b in _BLOCKS]


@functools.cache
def descriptor_table() -> np.ndarray:
    """(MAX_ATOMIC_NUMBER + 1, len(DESCRIPTORS)) float64: row z holds element z's descriptors, each column
    standardised over the elements (mean 0, standard deviation 1); row 0 is unused (zeros).

    A missing value takes the mean of the elements of the same group that have it (f-block: of the same row and
    block), else of the same row, else the column mean (0 after standardising): the neighbours an element is most
    like. pymatgen warns about the gaps in its data; those warnings are expected here and silenced.
    """
    from pymatgen.core.periodic_table import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.array([_raw_row(z) for z in range(1, MAX_ATOMIC_NUMBER + 1)])
        elements = [Element.from_Z(z) for z in range(1, MAX_ATOMIC_NUMBER + 1)]
        groups = np.array([e.group if e.block != "f" else -e.row for e in elements])
        rows = np.array([e.row for e in elements])
    filled = raw.copy()
    for column in range(raw.shape[1]):
        known = np.isfinite(raw[:, column])
        for i in np.flatnonzero(~known):
            for same in (groups == groups[i], rows == rows[i]):
                if (same & known).any():
                    filled[i, column] = raw[same & known, column].mean()
                    break
            else:
                filled[i, column] = raw[known, column].mean()
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    table = np.zeros((MAX_ATOMIC_NUMBER + 1, raw.shape[1]))
    table[1:] = (filled - mean) / np.where(std > 0, std, 1.0)
    table.setflags(write=False)
    return table


class SpeciesEmbedding(torch.nn.Module):
    """Atomic number -> `dim` scalars (irreps_out = dim x 0e), by the chosen kind (module docstring)."""

    def __init__(self, dim: int, kind: str = "learned"):
        super().__init__()
        if kind not in SPECIES_EMBEDDINGS:
            raise ValueError(f"species embedding must be one of {SPECIES_EMBEDDINGS}, got {kind!r}")
        self.kind = kind
        self.irreps_out = o3.Irreps(f"{dim}x0e")
        if kind == "learned":
            self.table = torch.nn.Embedding(MAX_ATOMIC_NUMBER + 1, dim)
            return
        # float64 here: the model's .to(dtype) casts it once, without a float32 detour
        self.register_buffer("descriptors", torch.tensor(descriptor_table(), dtype=torch.float64))
        self.descriptor_mlp = torch.nn.Sequential(torch.nn.Linear(len(DESCRIPTORS), dim), torch.nn.SiLU(),
                                                  torch.nn.Linear(dim, dim))
        if kind == "descriptors+learned":
            self.correction = torch.nn.Embedding(MAX_ATOMIC_NUMBER + 1, dim)
            torch.nn.init.zeros_(self.correction.weight)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        if self.kind == "learned":
            return self.table(atomic_numbers)
        features = self.descriptor_mlp(self.descriptors[atomic_numbers])
        return features + self.correction(atomic_numbers) if self.kind == "descriptors+learned" else features
