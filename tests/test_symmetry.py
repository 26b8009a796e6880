"""zoo.core.symmetry on real Materials Project structures: point groups, Neumann's principle, IEEE frames.

The fixtures in tests/data/structures/ are the `structure` CIF strings of rows of the matminer 0.4.1 snapshot
(../shared/datasets/matminer-0.4.1/), copied byte for byte. The elastic snapshot has no triclinic structure and
no point group 1 or 222, so those come from the piezoelectric and dielectric files.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.tensors import Tensor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.spatial.transform import Rotation

from zoo.core import symmetry
from zoo.core.tensors import (
    change_of_basis,
    irreps_to_cartesian,
    rotate,
    stiffness_voigt_to_cartesian,
)
from zoo.properties import PROPERTIES

STRUCTURES = Path(__file__).parent / "data" / "structures"
TENSOR_SPECS = [spec for spec in PROPERTIES.values() if spec.is_tensor]


@dataclass(frozen=True)
class Fixture:
    stem: str  # file name without .cif: <crystal system>-<material id>
    space_group: int  # as the snapshot reports it
    point_group: str
    laue_class: str


# Each line: the snapshot file and row (the CSV's own index column) the CIF was copied from.
FIXTURES = [
    Fixture("triclinic-mp-676400", 1, "1", "-1"),  # piezoelectric_tensor.csv row 887
    Fixture("triclinic-mp-27729", 2, "-1", "-1"),  # dielectric_constant.csv row 336
    Fixture("monoclinic-mp-12177", 4, "2", "2/m"),  # elastic_tensor.csv row 188
    Fixture("orthorhombic-mp-27724", 23, "222", "mmm"),  # piezoelectric_tensor.csv row 785
    Fixture("orthorhombic-mp-1042", 62, "mmm", "mmm"),  # elastic_tensor.csv row 28
    Fixture("tetragonal-mp-12565", 87, "4/m", "4/m"),  # elastic_tensor.csv row 201
    Fixture("tetragonal-mp-10676", 127, "4/mmm", "4/mmm"),  # elastic_tensor.csv row 42
    Fixture("tetragonal-mp-140", 139, "4/mmm", "4/mmm"),  # elastic_tensor.csv row 294
    Fixture("trigonal-mp-12699", 148, "-3", "-3"),  # elastic_tensor.csv row 223
    Fixture("trigonal-mp-104", 166, "-3m", "-3m"),  # elastic_tensor.csv row 27; rhombohedral primitive cell
    Fixture("hexagonal-mp-103", 194, "6/mmm", "6/mmm"),  # elastic_tensor.csv row 23
    Fixture("cubic-mp-625", 213, "432", "m-3m"),  # elastic_tensor.csv row 1022
    Fixture("cubic-mp-1156", 216, "-43m", "m-3m"),  # elastic_tensor.csv row 152
    Fixture("cubic-mp-101", 225, "m-3m", "m-3m"),  # elastic_tensor.csv row 7
]
FIXTURE_IDS = [f.stem for f in FIXTURES]

# REFERENCE.md: independent elastic constants in a fixed crystal frame, by Laue class.
ELASTIC_COUNT_BY_LAUE = {"-1": 21, "2/m": 13, "mmm": 9, "4/m": 7, "4/mmm": 6, "-3": 7, "-3m": 6, "6/m": 5,
                         "6/mmm": 5, "m-3": 3, "m-3m": 3}
# REFERENCE.md: independent piezoelectric stress constants for the point groups among the fixtures.
PIEZO_COUNT_BY_POINT_GROUP = {"1": 18, "2": 8, "222": 3, "-43m": 1, "432": 0}
# Symmetric rank 2 (Nye): triclinic 6, monoclinic 4, orthorhombic 3, uniaxial 2, cubic 1.
DIELECTRIC_COUNT_BY_SYSTEM = {"triclinic": 6, "monoclinic": 4, "orthorhombic": 3, "tetragonal": 2,
                              "trigonal": 2, "hexagonal": 2, "cubic": 1}
# Tetragonal fixtures whose conventional c is shorter than a (pymatgen's IEEE defect case).
TETRAGONAL_C_SHORTER_THAN_A = {"tetragonal-mp-12565", "tetragonal-mp-10676"}
POINT_GROUP_ORDER = {"1": 1, "-1": 2, "2": 2, "222": 4, "mmm": 8, "4/m": 8, "4/mmm": 16, "-3": 6, "-3m": 12,
                     "6/mmm": 24, "432": 24, "-43m": 24, "m-3m": 48}

# Snapshot elastic_tensor of mp-10676 (Sc2AlSi2, P4/mbm, c < a), Voigt GPa, claimed "IEEE orientation".
MP_10676_IEEE_STIFFNESS = np.array([
    [181.81316062549706, 70.24978636053943, 59.411497135528776, 0.0, 0.0, 0.0],
    [70.24978636053943, 181.81338980533292, 59.41163816317301, 0.0, 0.0, 0.0],
    [59.411497135528776, 59.41163816317301, 172.94700253316117, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 95.25342113666669, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 95.25336418333336, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 74.3666111066667],
])


def load(stem: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes that it rounds near-ideal fractional coordinates
        return Structure.from_file(STRUCTURES / f"{stem}.cif")


@pytest.fixture(scope="module")
def analysed() -> dict[str, tuple[Structure, symmetry.SymmetryInfo]]:
    out = {}
    for fixture in FIXTURES:
        structure = load(fixture.stem)
        out[fixture.stem] = (structure, symmetry.analyze(structure))
    return out


def random_tensor(formula: str, rng: np.random.Generator) -> np.ndarray:
    """A random tensor with the formula's index symmetry, every irreps component non-zero."""
    return irreps_to_cartesian(rng.normal(size=change_of_basis(formula).shape[0]), formula)


def rotated_copy(structure: Structure, Q: np.ndarray) -> Structure:
    """The same crystal with its Cartesian frame rotated by Q (lattice vectors a -> Q a)."""
    return Structure(Lattice(structure.lattice.matrix @ Q.T), structure.species, structure.frac_coords)


def same_set(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    """Whether two stacks of matrices hold the same matrices, in any order."""
    distance = np.abs(a[:, None] - b[None, :]).reshape(len(a), len(b), -1).max(axis=-1)
    return len(a) == len(b) and bool((distance.min(axis=1) < atol).all() and (distance.min(axis=0) < atol).all())


def test_fixture_files_are_all_listed():
    assert sorted(p.stem for p in STRUCTURES.glob("*.cif")) == sorted(FIXTURE_IDS)


# ------------------------------------------------------------------------------------------------- analysis
@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_analyze_reproduces_the_snapshot_space_group(fixture, analysed):
    _, info = analysed[fixture.stem]
    assert info.space_group_number == fixture.space_group
    assert info.crystal_system == fixture.stem.split("-")[0]
    assert info.point_group == fixture.point_group
    assert info.laue_class == fixture.laue_class
    assert info.is_centrosymmetric == (fixture.point_group == fixture.laue_class)
    assert info.cartesian_rotations.shape == (POINT_GROUP_ORDER[fixture.point_group], 3, 3)
    assert info.cartesian_rotations.dtype == np.float64
    assert (info.symprec, info.angle_tolerance) == (symmetry.SYMPREC, symmetry.ANGLE_TOLERANCE)


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_cartesian_rotations_are_an_exact_orthogonal_group(fixture, analysed):
    ops = analysed[fixture.stem][1].cartesian_rotations
    assert np.abs(ops @ np.swapaxes(ops, -1, -2) - np.eye(3)).max() < 1e-12
    products = np.einsum("aij,bjk->abik", ops, ops).reshape(-1, 3, 3)
    assert np.abs(products[:, None] - ops[None]).reshape(len(products), len(ops), 9).max(-1).min(-1).max() < 1e-12
    assert not ops.flags.writeable


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_cartesian_rotations_match_pymatgens_cartesian_operations(fixture, analysed):
    structure, info = analysed[fixture.stem]
    analyzer = SpacegroupAnalyzer(structure, symprec=symmetry.SYMPREC, angle_tolerance=symmetry.ANGLE_TOLERANCE)
    theirs = np.unique(np.round([op.rotation_matrix for op in analyzer.get_symmetry_operations(cartesian=True)], 6),
                       axis=0)
    # pymatgen's are L^T W L^-T without cleaning: equal to ours up to the fixtures' lattice distortion (~1e-7).
    assert same_set(info.cartesian_rotations, theirs, atol=1e-5)


def test_rotating_the_structure_conjugates_its_operations(analysed):
    structure, info = analysed["monoclinic-mp-12177"]
    Q = Rotation.from_euler("zyx", [0.3, -1.1, 0.7]).as_matrix()
    rotated = symmetry.analyze(rotated_copy(structure, Q))
    assert same_set(rotated.cartesian_rotations, Q @ info.cartesian_rotations @ Q.T, atol=1e-12)


def test_distorted_lattice_still_gives_an_exact_group():
    # A 0.2% shear keeps Ir in Fm-3m at SYMPREC but makes L^T W L^-T visibly non-orthogonal; the operations
    # must still be an exact orthogonal group, so that symmetrised tensors pass Neumann's check to rounding.
    structure = load("cubic-mp-101")
    shear = np.eye(3) + np.array([[0, 2e-3, 0], [2e-3, 0, 0], [0, 0, 0]])
    distorted = Structure(Lattice(structure.lattice.matrix @ shear), structure.species, structure.frac_coords)
    info = symmetry.analyze(distorted)
    assert info.point_group == "m-3m"

    lattice = distorted.lattice.matrix
    fractional = SpacegroupAnalyzer(distorted, symprec=symmetry.SYMPREC).get_symmetry_dataset().rotations
    naive = [lattice.T @ W @ np.linalg.inv(lattice.T) for W in fractional]
    assert max(np.abs(R @ R.T - np.eye(3)).max() for R in naive) > 1e-3

    elastic = random_tensor(PROPERTIES["elastic"].formula, np.random.default_rng(5))
    assert symmetry.neumann_residual(symmetry.symmetrize(elastic, info), info) < 1e-12


# --------------------------------------------------------------------------------------------------- Neumann
@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_symmetrize_projects_onto_invariant_tensors(fixture, spec, analysed):
    _, info = analysed[fixture.stem]
    rng = np.random.default_rng([FIXTURE_IDS.index(fixture.stem), TENSOR_SPECS.index(spec)])
    tensor = random_tensor(spec.formula, rng)
    n_free = symmetry.count_independent_components(spec.formula, info)
    n_all = change_of_basis(spec.formula).shape[0]
    symmetrized = symmetry.symmetrize(tensor, info)

    if n_free == 0:
        assert np.abs(symmetrized).max() < 1e-12 * np.abs(tensor).max()
    else:
        assert symmetry.neumann_residual(symmetrized, info) < 1e-10
        assert np.allclose(symmetry.symmetrize(symmetrized, info), symmetrized, rtol=0, atol=1e-12)
    # A generic tensor breaks the symmetry unless the group cannot constrain this kind at all
    # (point group 1; the inversion on even-rank tensors).
    if n_free < n_all:
        assert symmetry.neumann_residual(tensor, info) > 1e-3
    else:
        assert symmetry.neumann_residual(tensor, info) < 1e-12


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_independent_component_counts_match_reference(fixture, analysed):
    _, info = analysed[fixture.stem]
    count = {spec.name: symmetry.count_independent_components(spec.formula, info) for spec in TENSOR_SPECS}
    assert count["elastic"] == ELASTIC_COUNT_BY_LAUE[info.laue_class]
    assert count["dielectric"] == DIELECTRIC_COUNT_BY_SYSTEM[info.crystal_system]
    if info.is_centrosymmetric:
        assert count["piezo"] == 0
    else:
        assert count["piezo"] == PIEZO_COUNT_BY_POINT_GROUP[info.point_group]


def test_fixtures_cover_the_required_cases():
    laue = {f.laue_class for f in FIXTURES}
    assert {"4/m", "4/mmm", "-3", "-3m"} <= laue
    assert set(PIEZO_COUNT_BY_POINT_GROUP) <= {f.point_group for f in FIXTURES}
    assert {f.stem.split("-")[0] for f in FIXTURES} == set(DIELECTRIC_COUNT_BY_SYSTEM)


CENTROSYMMETRIC = [f for f in FIXTURES if f.point_group == f.laue_class]


@pytest.mark.parametrize("fixture", CENTROSYMMETRIC, ids=[f.stem for f in CENTROSYMMETRIC])
def test_centrosymmetric_structure_forces_zero_piezo(fixture, analysed):
    structure, info = analysed[fixture.stem]
    piezo = random_tensor(PROPERTIES["piezo"].formula, np.random.default_rng(11))
    assert np.abs(symmetry.symmetrize(piezo, info)).max() < 1e-12
    assert np.abs(symmetry.symmetrize(piezo, structure)).max() < 1e-12  # Structure accepted directly


def test_accepts_structure_info_or_rotation_array(analysed):
    structure, info = analysed["hexagonal-mp-103"]
    dielectric = random_tensor("ij=ji", np.random.default_rng(2))
    expected = symmetry.symmetrize(dielectric, info)
    assert np.allclose(symmetry.symmetrize(dielectric, structure), expected, rtol=0, atol=1e-14)
    from_array = symmetry.symmetrize(dielectric, np.array(info.cartesian_rotations))
    assert np.allclose(from_array, expected, rtol=0, atol=1e-14)
    assert symmetry.neumann_residual(dielectric, list(info.cartesian_rotations)) == pytest.approx(
        symmetry.neumann_residual(dielectric, structure), rel=1e-12)


def test_zero_tensor_has_zero_residual(analysed):
    assert symmetry.neumann_residual(np.zeros((3, 3, 3)), analysed["cubic-mp-1156"][1]) == 0.0


def test_residual_is_relative_frobenius_norm():
    # Mirror z -> -z on a rank-2 tensor flips the xz, zx, yz, zy entries: ||T' - T|| = 2 sqrt(4 a^2) / ||T||.
    mirror = np.array([np.eye(3), np.diag([1.0, 1.0, -1.0])])
    t = np.diag([1.0, 2.0, 3.0])
    t[0, 2] = t[2, 0] = t[1, 2] = t[2, 1] = 0.5
    expected = 2 * np.sqrt(4 * 0.25) / np.linalg.norm(t)
    assert symmetry.neumann_residual(t, mirror) == pytest.approx(expected, rel=1e-14)


# ------------------------------------------------------------------------------------------------------ IEEE
@pytest.mark.parametrize("spec", TENSOR_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_ieee_round_trip(fixture, spec, analysed):
    structure, _ = analysed[fixture.stem]
    tensor = random_tensor(spec.formula, np.random.default_rng(3))
    R = symmetry.ieee_rotation(structure)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    ieee = symmetry.to_ieee_frame(tensor, structure)
    assert np.allclose(ieee, rotate(tensor, R), rtol=0, atol=1e-13)
    assert np.allclose(symmetry.to_structure_frame_from_ieee(ieee, structure), tensor, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_ieee_frame_agrees_with_pymatgen_convert_to_ieee(fixture, analysed):
    structure, info = analysed[fixture.stem]
    pymatgen_R = np.asarray(Tensor.get_ieee_rotation(structure, refine_rotation=True))
    if fixture.stem in TETRAGONAL_C_SHORTER_THAN_A:
        # pymatgen puts the four-fold axis along x1 (see ieee_rotation); ours relabels its rows to put it on x3.
        four_fold = next(R for R in info.cartesian_rotations
                         if np.isclose(np.trace(R), 1) and np.isclose(np.linalg.det(R), 1))
        axis = np.linalg.eigh(four_fold + four_fold.T)[1][:, -1]  # eigenvalue 2: the rotation axis
        assert abs(pymatgen_R[0] @ axis) == pytest.approx(1.0, abs=1e-9)
        assert np.allclose(symmetry.ieee_rotation(structure), pymatgen_R[[1, 2, 0]], rtol=0, atol=1e-12)
        return
    elastic = symmetry.symmetrize(random_tensor(PROPERTIES["elastic"].formula, np.random.default_rng(4)), info)
    scale = np.abs(elastic).max()
    ours = symmetry.to_ieee_frame(elastic, structure)
    exact = np.asarray(Tensor(elastic).convert_to_ieee(structure, initial_fit=False))
    assert np.abs(ours - exact).max() < 1e-10 * scale
    # With its default initial fit pymatgen first averages over its uncleaned Cartesian operations, which moves
    # an already-invariant tensor by the lattice distortion (~1e-7 here).
    fitted = np.asarray(Tensor(elastic).convert_to_ieee(structure))
    assert np.abs(ours - fitted).max() < 1e-5 * scale


UNIAXIAL = [f for f in FIXTURES if f.stem.split("-")[0] in ("tetragonal", "trigonal", "hexagonal")]


@pytest.mark.parametrize("fixture", UNIAXIAL, ids=[f.stem for f in UNIAXIAL])
def test_ieee_frame_puts_the_unique_axis_along_x3(fixture, analysed):
    structure, info = analysed[fixture.stem]
    R = symmetry.ieee_rotation(structure)
    ops_in_ieee = R @ info.cartesian_rotations @ R.T
    assert np.allclose(np.abs(ops_in_ieee[:, 2, 2]), 1.0, atol=1e-9)


def test_snapshot_ieee_tensor_obeys_neumann_in_the_structure_frame(analysed):
    # Real data for the tetragonal c < a case: the snapshot's IEEE-oriented stiffness of mp-10676, brought into
    # the structure frame, is invariant under the structure's point group (to the data's own ~1e-6 asymmetry).
    structure, info = analysed["tetragonal-mp-10676"]
    ieee = stiffness_voigt_to_cartesian(MP_10676_IEEE_STIFFNESS)
    assert symmetry.neumann_residual(symmetry.to_structure_frame_from_ieee(ieee, structure), info) < 1e-5


@pytest.mark.parametrize(("stem", "kind"), [("orthorhombic-mp-27724", "piezo"), ("tetragonal-mp-10676", "elastic")])
def test_ieee_frame_does_not_depend_on_the_structure_orientation(stem, kind, analysed):
    # Orthorhombic and tetragonal cells fix the IEEE axes up to operations of the point group. (Not so for
    # trigonal -3m: the sense of x1 is a convention spglib's choice of a can flip, which flips the sign of C14.)
    structure, info = analysed[stem]
    tensor = symmetry.symmetrize(random_tensor(PROPERTIES[kind].formula, np.random.default_rng(6)), info)
    Q = Rotation.from_euler("zyz", [1.3, 0.4, -2.2]).as_matrix()
    via_rotated = symmetry.to_ieee_frame(rotate(tensor, Q), rotated_copy(structure, Q))
    assert np.allclose(via_rotated, symmetry.to_ieee_frame(tensor, structure), rtol=0, atol=1e-9 * np.abs(tensor).max())


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_tensor_is_refused_naming_the_argument(analysed):
    info = analysed["cubic-mp-101"][1]
    with pytest.raises(ValueError, match="tensor must be one full Cartesian tensor.*got shape \\(6, 6\\)"):
        symmetry.neumann_residual(np.eye(6), info)
    bad = np.eye(3)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="tensor contains NaN"):
        symmetry.symmetrize(bad, info)
    with pytest.raises(ValueError, match="tensor must be an array of numbers"):
        symmetry.to_ieee_frame("eye", analysed["cubic-mp-101"][0])


def test_bad_structure_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="structure must be a pymatgen Structure, got dict"):
        symmetry.analyze({"lattice": np.eye(3)})
    with pytest.raises(ValueError, match="structure must be a pymatgen Structure, got str"):
        symmetry.ieee_rotation("Si")
    with pytest.raises(ValueError, match="structure_or_rotations"):
        symmetry.neumann_residual(np.eye(3), "Si")
    with pytest.raises(ValueError, match="symprec must be a positive number"):
        symmetry.analyze(load("cubic-mp-101"), symprec=-0.1)


def test_spglib_failure_is_a_value_error():
    degenerate = Structure(Lattice([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 1e-9]]), ["Na"], [[0, 0, 0]])
    with pytest.raises(ValueError, match="structure: spglib could not determine the symmetry of Na"):
        symmetry.analyze(degenerate)
    with pytest.raises(ValueError, match="structure: could not find the IEEE frame of Na"):
        symmetry.ieee_rotation(degenerate)


def test_bad_rotations_are_refused():
    with pytest.raises(ValueError, match="structure_or_rotations is not an orthogonal matrix"):
        symmetry.symmetrize(np.eye(3), np.array([np.eye(3), 2 * np.eye(3)]))
    with pytest.raises(ValueError, match="structure_or_rotations is not a group"):
        symmetry.symmetrize(np.eye(3), np.array([np.eye(3), Rotation.from_euler("z", 0.1).as_matrix()]))
    with pytest.raises(ValueError, match="shape \\(n_ops, 3, 3\\)"):
        symmetry.symmetrize(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="formula"):
        symmetry.count_independent_components("", np.array([np.eye(3)]))
