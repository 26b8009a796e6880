"""Crystal symmetry for tensor properties: point groups, Neumann's principle, IEEE orientation.

Neumann's principle: a tensor property T of a crystal is invariant under every operation R of the crystal's
point group, ``rotate(T, R) == T`` (``zoo.core.tensors.rotate``), in the Cartesian frame of the structure's lattice
matrix (the project's frame convention, stated in ``zoo.core.tensors``).

Symmetry is found by spglib through pymatgen's ``SpacegroupAnalyzer`` with the tolerances below (both imported where
they are used: the property specs import this module, and importing them must stay cheap for the `zoo` command).

Cartesian point-group operations. spglib gives integer rotations W acting on fractional coordinates
(x' = W x). With L the lattice matrix (rows = lattice vectors), Cartesian positions are r = L^T x, so the
Cartesian operation is R = L^T W L^-T. That R is orthogonal only to the extent that the lattice really has the
symmetry: spglib accepts lattices that are symmetric within ``symprec``, and in the matminer snapshot
max |R^T R - I| reaches 5e-2 at ``SYMPREC``. Projecting each R separately onto the nearest orthogonal matrix (SVD) fixes
orthogonality but not closure: the projected matrices are no longer exactly a group, so a group average is no
longer an exact projector and "symmetrised" tensors still fail Neumann's check at the level of the distortion.
Instead we symmetrise the lattice once: the metric G = L L^T is averaged over the group,
G' = (1/|G|) sum_W W^T G W, which is exactly invariant (W is an integer matrix); the lattice is strained to
L' = L M with M = (L^-1 G' L^-T)^(1/2) symmetric positive definite, i.e. a pure strain with no rotation, so the
Cartesian frame (orientation) of the structure is unchanged; then R = L'^T W L'^-T is orthogonal and closed
under products to rounding (~1e-15), and symmetrisation is an exact orthogonal projector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.core.schema_checks import check_positive
from zoo.core.tensor_checks import check_rotation
from zoo.core.tensors import (
    cartesian_to_irreps,
    change_of_basis,
    irreps_to_cartesian,
    rotate,
)

# Distance tolerance in A. 0.1 A is the Materials Project's own setting (emmet-core's SETTINGS.SYMPREC; pymatgen's
# SpacegroupAnalyzer docstring says so too) and it reproduces the space groups MP reports for its tensors: on the
# matminer snapshot, 0.1 A matches MP's space-group number in 1181/1181 elastic, 940/941 piezo and 1056/1056
# dielectric rows, against 1174, 896 and 1034 at 0.01 A. A stricter tolerance would find a lower symmetry than the
# one MP symmetrised the tensors to, and the Neumann check would then test the wrong group.
SYMPREC = 0.1
# Angle tolerance in degrees: spglib's and pymatgen's default, and emmet-core's SETTINGS.ANGLE_TOL.
ANGLE_TOLERANCE = 5.0

# A group-averaged projector has eigenvalues exactly 0 or 1; anything between is rounding.
_PROJECTOR_RANK_TOL = 1e-6
# Products of two operations must land on an operation of the set within this (rounding-level for our own
# operations; loose enough for operations written out with ~8 digits elsewhere).
_GROUP_CLOSURE_ATOL = 1e-6


@dataclass(frozen=True, eq=False)  # eq=False: a numpy field makes the generated __eq__ ambiguous
class SymmetryInfo:
    """Symmetry of one structure, as found by spglib with the stated tolerances.

    crystal_system       pymatgen's name: triclinic, monoclinic, orthorhombic, tetragonal, trigonal, hexagonal, cubic
    space_group_number   1..230
    space_group_symbol   Hermann-Mauguin short symbol, e.g. "Fm-3m"
    point_group          Hermann-Mauguin point group, e.g. "m-3m"
    laue_class           point group of the crystal's group with the inversion added, e.g. "4/m" for "-4"
    is_centrosymmetric   whether the inversion is one of the operations
    cartesian_rotations  (n_ops, 3, 3) float64, read-only: the distinct point-group operations in the Cartesian
                         frame of the structure's lattice matrix, exactly orthogonal and closed (module docstring)
    symprec, angle_tolerance  the tolerances (A, degrees) they were found with
    """

    crystal_system: str
    space_group_number: int
    space_group_symbol: str
    point_group: str
    laue_class: str
    is_centrosymmetric: bool
    cartesian_rotations: np.ndarray
    symprec: float
    angle_tolerance: float


# ------------------------------------------------------------------------------------------------- analysis
def _check_structure(structure, name: str = "structure"):
    # IStructure is the base class of pymatgen's (mutable) Structure, so both pass.
    from pymatgen.core.structure import IStructure

    if not isinstance(structure, IStructure):
        raise ValueError(f"{name} must be a pymatgen Structure, got {type(structure).__name__}")
    return structure


def _symmetric_lattice(lattice: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The lattice strained (no rotation) to make its metric exactly invariant under `rotations` (fractional W)."""
    metric = lattice @ lattice.T
    metric_avg = np.einsum("nji,jk,nkl->il", rotations, metric, rotations) / len(rotations)
    lattice_inv = np.linalg.inv(lattice)
    strain_sq = lattice_inv @ metric_avg @ lattice_inv.T
    strain_sq = (strain_sq + strain_sq.T) / 2  # symmetric in exact arithmetic; remove rounding before eigh
    eigvals, eigvecs = np.linalg.eigh(strain_sq)
    strain = (eigvecs * np.sqrt(eigvals)) @ eigvecs.T
    return lattice @ strain


def analyze(structure, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE) -> SymmetryInfo:
    """Space group, point group and Cartesian point-group operations of `structure` (see module docstring)."""
    import spglib
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = _check_structure(structure)
    symprec = check_positive(symprec, "symprec", convert=True)
    angle_tolerance = check_positive(angle_tolerance, "angle_tolerance", convert=True)
    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
        dataset = analyzer.get_symmetry_dataset()
        crystal_system = analyzer.get_crystal_system()
    except Exception as exc:  # spglib reports failure through several exception types
        raise ValueError(
            f"structure: spglib could not determine the symmetry of {structure.composition.reduced_formula} "
            f"(symprec={symprec} A, angle_tolerance={angle_tolerance} deg): {exc}"
        ) from None

    # Centring translations repeat each rotation; the point group is the set of distinct ones.
    fractional = np.unique(np.asarray(dataset.rotations, dtype=np.int64), axis=0)
    lattice = _symmetric_lattice(structure.lattice.matrix, fractional)
    cartesian = np.einsum("ji,njk,lk->nil", lattice, fractional, np.linalg.inv(lattice))
    cartesian = check_rotation(cartesian, name="cartesian point-group operations")
    cartesian.setflags(write=False)

    with_inversion = np.unique(np.concatenate([fractional, -fractional]), axis=0)
    is_centrosymmetric = len(with_inversion) == len(fractional)
    laue_class = spglib.get_pointgroup(with_inversion.astype(np.intc))[0].strip()

    return SymmetryInfo(
        crystal_system=str(crystal_system),
        space_group_number=int(dataset.number),
        space_group_symbol=str(dataset.international),
        point_group=str(dataset.pointgroup).strip(),
        laue_class=laue_class,
        is_centrosymmetric=is_centrosymmetric,
        cartesian_rotations=cartesian,
        symprec=symprec,
        angle_tolerance=angle_tolerance,
    )


def _check_group(rotations: np.ndarray, name: str) -> None:
    """Refuse a set of operations that is not closed under products (a group average would not project)."""
    products = np.einsum("aij,bjk->abik", rotations, rotations).reshape(-1, 1, 9)
    distance = np.abs(products - rotations.reshape(1, -1, 9)).max(axis=-1).min(axis=-1)
    worst = float(distance.max())
    if worst > _GROUP_CLOSURE_ATOL:
        raise ValueError(
            f"{name} is not a group: a product of two operations is {worst:.3g} away from every operation "
            f"(tolerance {_GROUP_CLOSURE_ATOL:g})"
        )


def _rotations_of(structure_or_rotations, name: str = "structure_or_rotations") -> np.ndarray:
    """Cartesian point-group operations (n, 3, 3) from a Structure, a SymmetryInfo or an array of rotations."""
    from pymatgen.core.structure import IStructure

    if isinstance(structure_or_rotations, SymmetryInfo):
        return structure_or_rotations.cartesian_rotations
    if isinstance(structure_or_rotations, IStructure):
        return analyze(structure_or_rotations).cartesian_rotations
    try:
        rotations = np.asarray(structure_or_rotations, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pymatgen Structure, a SymmetryInfo or an array of rotations (n, 3, 3), "
            f"got {type(structure_or_rotations).__name__}"
        ) from None
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or len(rotations) == 0:
        raise ValueError(f"{name} as an array must have shape (n_ops, 3, 3) with n_ops >= 1, got {rotations.shape}")
    rotations = check_rotation(rotations, name=name)
    _check_group(rotations, name)
    return rotations


# --------------------------------------------------------------------------------------------------- Neumann
_MAX_RANK = 8  # zoo.core.tensors.rotate handles up to rank 8


def _check_cartesian_tensor(tensor, name: str = "tensor") -> np.ndarray:
    try:
        array = np.asarray(tensor, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(tensor).__name__}") from None
    if not 1 <= array.ndim <= _MAX_RANK or any(size != 3 for size in array.shape):
        raise ValueError(
            f"{name} must be one full Cartesian tensor with every dimension 3 (e.g. (3, 3) or (3, 3, 3, 3)), "
            f"got shape {array.shape}; convert Voigt forms with zoo.core.tensors first"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def neumann_residual(tensor, structure_or_rotations) -> float:
    """max over operations R of ||rotate(T, R) - T||_F / ||T||_F: 0 for a tensor obeying Neumann's principle.

    The all-zero tensor returns 0.0: it is invariant under every operation (the ratio itself is undefined).
    The ratio is relative, so a tensor that is zero up to rounding (e.g. a symmetrised piezo tensor of a
    centrosymmetric crystal, ~1e-17) has a meaningless residual of order 1: test such tensors by their size.
    `structure_or_rotations`: a pymatgen Structure (analysed with the default tolerances), a SymmetryInfo,
    or an array (n_ops, 3, 3) of orthogonal Cartesian operations forming a group.
    """
    tensor = _check_cartesian_tensor(tensor)
    rotations = _rotations_of(structure_or_rotations)
    norm = float(np.linalg.norm(tensor))
    if norm == 0.0:
        return 0.0
    rotated = rotate(tensor, rotations, rank=tensor.ndim)
    differences = (rotated - tensor).reshape(len(rotations), -1)
    return float(np.linalg.norm(differences, axis=1).max() / norm)


def symmetrize(tensor, structure_or_rotations) -> np.ndarray:
    """Group average (1/|G|) sum_R rotate(T, R): the orthogonal projection of T onto the invariant tensors."""
    tensor = _check_cartesian_tensor(tensor)
    rotations = _rotations_of(structure_or_rotations)
    return rotate(tensor, rotations, rank=tensor.ndim).mean(axis=0)


def count_independent_components(formula: str, structure_or_rotations) -> int:
    """Number of independent components of a tensor with the e3nn CartesianTensor `formula` (e.g. 21 for
    'ijkl=jikl=klij' in general) that is invariant under the group: the rank of the group-averaged projector
    written in the formula's irreps basis.
    """
    basis = np.eye(change_of_basis(formula).shape[0])  # validates the formula
    rotations = _rotations_of(structure_or_rotations)
    cartesian_basis = irreps_to_cartesian(basis, formula)
    rank = cartesian_basis.ndim - 1
    projector = np.zeros((len(basis), len(basis)))
    for rotation in rotations:
        projector += cartesian_to_irreps(rotate(cartesian_basis, rotation, rank=rank), formula)
    projector /= len(rotations)
    return int(np.linalg.matrix_rank(projector, tol=_PROJECTOR_RANK_TOL))


def polar_axis(structure_or_rotations) -> np.ndarray | None:
    """The unit vector every point-group operation leaves unchanged (the polar axis; sign arbitrary), or None when
    the group has no such vector (not a polar group) or more than a line of them (point groups 1 and m)."""
    rotations = _rotations_of(structure_or_rotations)
    average = rotations.mean(axis=0)  # the projector onto the invariant vectors
    values, vectors = np.linalg.eigh((average + average.T) / 2)
    invariant = values > 1.0 - _PROJECTOR_RANK_TOL
    return vectors[:, -1] if invariant.sum() == 1 else None


# ------------------------------------------------------------------------------------------------------ IEEE
def ieee_rotation(structure) -> np.ndarray:
    """Orthogonal R (3, 3) taking the structure's Cartesian frame to the IEEE 1987 standard frame:
    T_ieee = rotate(T_structure, R).

    This is pymatgen's ``Tensor.get_ieee_rotation(structure, refine_rotation=True)``, the rotation its
    ``Tensor.convert_to_ieee`` applies (``Tensor.rotate`` uses the same T'_ab = R_ai R_bj T_ij as
    ``zoo.core.tensors.rotate``), with one defect corrected. Its rows are the IEEE axes x1, x2, x3 written in the
    structure's Cartesian frame, built from the conventional standard cell's lattice vectors expressed in that
    same frame (spglib's transformation matrix, not pymatgen's re-oriented conventional standard structure), so it
    applies to tensors in the structure's own frame. pymatgen finds that cell with its own fixed tolerances
    (0.01 A, 5 deg), not ``SYMPREC``.

    Two adjustments:
    - Tetragonal cells with c < a: pymatgen decides whether to swap axes by comparing the *unsorted* lengths, so it
      puts the four-fold axis c along x1 instead of x3 (open pymatgen PR #2616, "Update IEEE conversion routine
      for tetragonal systems"). The IEEE rule is c || x3, a || x1; we cyclically relabel the rows (a proper
      rotation) to restore it. The snapshot's "IEEE" elastic tensors of such crystals (e.g. mp-10676) have their
      unique axis along x3, which confirms the rule.
    - pymatgen's refinement normalises the first row only, so its matrix is orthogonal only to second order in
      the cell's deviation from its ideal angles; we return the nearest orthogonal matrix (polar factor by SVD).

    The frame is fixed only up to the choices the IEEE rules leave open, which spglib makes: for trigonal
    crystals the sense of x1 (a or -a) is such a choice and flips the sign of e.g. C14 under -3m.
    """
    from pymatgen.core.tensors import Tensor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = _check_structure(structure)
    try:
        rotation = np.asarray(Tensor.get_ieee_rotation(structure, refine_rotation=True), dtype=np.float64)
        # The same analysis get_ieee_rotation ran (pymatgen's default tolerances; spglib results are cached).
        analyzer = SpacegroupAnalyzer(structure)
        crystal_system = analyzer.get_crystal_system()
        transformation = np.asarray(analyzer.get_symmetry_dataset().transformation_matrix, dtype=np.float64)
    except Exception as exc:  # spglib reports failure through several exception types
        raise ValueError(
            f"structure: could not find the IEEE frame of {structure.composition.reduced_formula}: {exc}"
        ) from None
    if crystal_system == "tetragonal":
        # Conventional lattice in the structure's frame, as pymatgen builds it: rows P^-T L.
        conventional = np.linalg.solve(transformation.T, structure.lattice.matrix)
        four_fold_axis = conventional[2] / np.linalg.norm(conventional[2])
        if abs(rotation[0] @ four_fold_axis) > abs(rotation[2] @ four_fold_axis):
            rotation = rotation[[1, 2, 0]]  # (c, a, c x a) -> (a, c x a, c): still right-handed
    left, _, right = np.linalg.svd(rotation)
    return check_rotation(left @ right, name="IEEE rotation")


def to_ieee_frame(tensor, structure) -> np.ndarray:
    """A Cartesian tensor in the structure's frame, rotated to the IEEE standard frame."""
    tensor = _check_cartesian_tensor(tensor)
    return rotate(tensor, ieee_rotation(structure), rank=tensor.ndim)


def to_structure_frame_from_ieee(tensor, structure) -> np.ndarray:
    """A Cartesian tensor in the IEEE standard frame, rotated to the structure's frame (inverse of to_ieee_frame)."""
    tensor = _check_cartesian_tensor(tensor)
    return rotate(tensor, ieee_rotation(structure).T, rank=tensor.ndim)
