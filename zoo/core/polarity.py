"""The polarity of tetrahedral binaries, from the structure alone: a physical check of piezo tensor signs.

In a wurtzite or zinc-blende binary every atom sits in a tetrahedron of the other element, and the piezoelectric
response along a cation->anion bond comes from the same local bonding in both structures: the longitudinal
coefficient along the bond, e_long = e_ijk b_i b_j b_k (b the unit cation->anion bond vector, e the Cartesian
stress tensor in the structure's frame), has one sign per compound, and e33 of the wurtzite (c along the apex bond)
and e14 of the zinc blende (e_long along a bond = 2 e14 / sqrt(3)) agree in sign. A record whose sign differs from
its compound's other records has a tensor in the wrong frame. The check uses neighbour bonds and the structure's
point group only, never the clean stage's frame logic that it checks.

Which bond: the bond most nearly parallel to the polar axis (the vector every point-group operation leaves
unchanged, ``zoo.core.symmetry.polar_axis``: the wurtzite c axis, the apex bond), or, in a crystal without a polar
axis (zinc blende, -43m), the mean over the cation's four bonds, which are equivalent by symmetry. The value is the
mean over the cation sites.

Measured on the matminer piezo snapshot, in the records whose frame every candidate agrees on: e_long along the
apex bond is positive for ZnO (+1.04 C/m^2), AlN (+1.46), GaN (+0.47), InN (+0.88), CdS (+0.33), CdSe (+0.16),
ZnS (+0.09), BeO (+0.20) and AgI (+0.20) wurtzite, as with the usual convention (c from the cation to the anion
along the apex bond: e33 > 0, e31 < 0, spontaneous polarisation < 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zoo.core import symmetry, tensors

if TYPE_CHECKING:  # annotations only: `zoo list` / `zoo info` import the property specs and must not load pymatgen
    from pymatgen.core import Structure

# A tetrahedron's four bonds are equal by symmetry; in the snapshot's wurtzites the apex bond is at most 1% longer
# than the basal ones, while the next shell (cation-cation) is ~60% further.
BOND_LENGTH_SPREAD = 1.10
# The longest cation-anion bond considered, A (CdTe 2.81, AgI 2.81, InSb 2.81 in tetrahedral binaries).
MAX_BOND_LENGTH_A = 3.5
# Four bonds form a tetrahedron when every pair's angle cosine is within this of -1/3 (109.47 deg +- ~9 deg):
# wurtzites deviate by ~1 deg, while the FeSi-type (B20) shell of 1 + 3 bonds deviates by ~30 deg.
TETRAHEDRAL_COSINE_TOL = 0.15


@dataclass(frozen=True)
class TetrahedralBonds:
    """A binary in which every site has four nearest neighbours, all of the other element."""

    compound: str  # reduced formula
    cation: str  # the less electronegative element (Pauling)
    bonds: tuple[np.ndarray, ...]  # per cation site, (4, 3) unit cation->anion vectors (Cartesian, structure frame)


def _nearest_shell(structure: Structure, index: int) -> list:
    neighbours = structure.get_neighbors(structure[index], MAX_BOND_LENGTH_A)
    if not neighbours:
        return []
    shortest = min(n.nn_distance for n in neighbours)
    return [n for n in neighbours if n.nn_distance <= BOND_LENGTH_SPREAD * shortest]


def tetrahedral_bonds(structure: Structure) -> TetrahedralBonds | None:
    """The bonds of a tetrahedral binary (wurtzite, zinc blende and their polytypes: every site has four nearest
    neighbours of the other element at the corners of a tetrahedron), else None."""
    elements = sorted(structure.composition.elements, key=lambda element: (element.X, element.symbol))
    if len(elements) != 2 or elements[0].X == elements[1].X:
        return None
    cation, anion = elements
    bonds = []
    for index, site in enumerate(structure):
        shell = _nearest_shell(structure, index)
        if len(shell) != 4 or any(n.specie == site.specie for n in shell):
            return None
        vectors = np.array([n.coords - site.coords for n in shell])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines = (vectors @ vectors.T)[np.triu_indices(4, k=1)]
        if np.abs(cosines + 1.0 / 3.0).max() > TETRAHEDRAL_COSINE_TOL:
            return None
        if site.specie == cation:
            bonds.append(vectors)
    return TetrahedralBonds(structure.composition.reduced_formula, cation.symbol, tuple(bonds))


def bond_longitudinal(piezo_cartesian: np.ndarray, bonds: TetrahedralBonds, info: symmetry.SymmetryInfo) -> float:
    """e_long along the cation->anion bond (C/m^2): module docstring."""
    axis = symmetry.polar_axis(info)
    values = []
    for site_bonds in bonds.bonds:
        along = np.einsum("ijk,bi,bj,bk->b", piezo_cartesian, site_bonds, site_bonds, site_bonds)
        values.append(along.mean() if axis is None else along[np.argmax(np.abs(site_bonds @ axis))])
    return float(np.mean(values))


def piezo_bond_longitudinal(piezo_voigt: np.ndarray, structure: Structure,
                            info: symmetry.SymmetryInfo) -> tuple[str | None, float | None]:
    """(compound, e_long) of a tetrahedral binary's piezo record; (None, None) for any other structure."""
    bonds = tetrahedral_bonds(structure)
    if bonds is None:
        return None, None
    return bonds.compound, bond_longitudinal(tensors.piezo_voigt_to_cartesian(piezo_voigt), bonds, info)


def consistent_signs(compounds: Sequence[str | None], values: Sequence[float | None], min_abs: float) -> list[bool]:
    """Per record: whether its e_long has its compound's sign. A compound's sign is the sign of the strict majority
    of its records with |e_long| > min_abs; where the two signs are equally many, every such record fails. Records
    without a compound or value, or with |e_long| <= min_abs (no sign within the data's precision), pass."""
    votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    signs: list[int | None] = []
    for compound, value in zip(compounds, values):
        sign = None
        if compound is not None and value is not None and np.isfinite(value) and abs(value) > min_abs:
            sign = 1 if value > 0 else 0
            votes[compound][sign] += 1
        signs.append(sign)
    passed = []
    for compound, sign in zip(compounds, signs):
        if sign is None:
            passed.append(True)
            continue
        negative, positive = votes[compound]
        passed.append((positive > negative) if sign == 1 else (negative > positive))
    return passed
