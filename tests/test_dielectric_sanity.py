"""The shipped dielectric model on six textbook crystals built from experimental lattice constants
(tests/reference_structures.py): every part predicted, physically bounded, near DFT-PBE; and none of the six is a
record of the data the model was trained on (structure matching against the whole dielectric snapshot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

import zoo
from tests.reference_structures import EXPECTED_CELLS, REFERENCE_EPS_POLY, reference_structures
from zoo.data.sources.snapshot import locate_root

SNAPSHOT = locate_root() / "matminer-0.4.1/dielectric_constant.csv"
ELECTRONIC_RTOL, TOTAL_RTOL = 0.30, 0.40  # issue 14's acceptance bands around the reference values
# ZnO's electronic reference (3.7) is the experimental eps_inf; PBE's is ~6 (the zincblende ZnO training record:
# 6.01), and the model reproduces PBE. Its band is checked against the PBE value instead (see the module docstring
# of tests/reference_structures.py).
PBE_INSTEAD = {"ZnO": 6.01}
# Where the shipped model misses issue 14's band (open): measured on matten-dielectric 1.2.0 (1.1.1 in brackets).
# Strict, so that a release that meets the band fails here until this entry goes.
KNOWN_MISSES = {
    "C": "1.2.0: electronic 14.76 [9.84] (band 5.7 +- 30%), total 20.17 [20.31]: an ionic part of ~5 [~10] for a "
         "crystal with no infrared-active mode; diamond's density is outside the training domain (volume_out_of_range)",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CELLS))
def test_each_reference_cell_is_the_crystal_it_names(name):
    """Formula, space group, the cation's coordination and bond, and the density: a cell built from a wrong Wyckoff
    setting is another compound (the quartz these tests used until December 2026 was Si6O6, 3.9 g/cm^3)."""
    structure = reference_structures()[name]
    space_group, coordination, bond, density = EXPECTED_CELLS[name]
    assert structure.composition.reduced_formula == name
    assert SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_symbol() == space_group
    neighbours = structure.get_neighbors(structure[0], 1.2 * bond)  # the first site is the cation
    assert len(neighbours) == coordination
    assert min(n.nn_distance for n in neighbours) == pytest.approx(bond, rel=0.02)
    assert structure.density == pytest.approx(density, rel=0.02)


@pytest.fixture(scope="module")
def predictions():
    model = zoo.load("matten-dielectric")
    if "ionic" not in model.net.parts:
        # the shipped 1.0.0 predicts the electronic part alone; `make release` ships 1.1.0 (issue 14)
        pytest.skip(f"matten-dielectric {model.version} predicts {model.net.parts} only: release 1.1.0 first")
    structures = reference_structures()
    return dict(zip(structures, model.predict(list(structures.values()))))


def test_every_part_is_predicted_and_physically_bounded(predictions):
    for name, prediction in predictions.items():
        assert list(prediction.tensors) == ["electronic", "ionic", "total"], name
        electronic, ionic, total = (np.asarray(prediction.tensors[part]) for part in ("electronic", "ionic", "total"))
        np.testing.assert_array_equal(total, electronic + ionic)
        assert np.linalg.eigvalsh(electronic).min() >= 1.0 and np.linalg.eigvalsh(total).min() >= 1.0, name
        assert np.linalg.eigvalsh(ionic).min() >= 0.0, name
        assert "likely_metal" not in [flag.code for flag in prediction.warnings], name  # none of the six is all-metal


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[name])) if name in KNOWN_MISSES
    else name for name in sorted(REFERENCE_EPS_POLY)])
def test_eps_poly_is_near_the_dft_value(predictions, name):
    electronic_reference, (total_low, total_high) = REFERENCE_EPS_POLY[name]
    electronic_reference = PBE_INSTEAD.get(name, electronic_reference)
    derived = predictions[name].derived
    assert abs(derived["eps_poly_electronic"] - electronic_reference) <= ELECTRONIC_RTOL * electronic_reference, \
        derived["eps_poly_electronic"]
    assert total_low * (1 - TOTAL_RTOL) <= derived["eps_poly_total"] <= total_high * (1 + TOTAL_RTOL), \
        derived["eps_poly_total"]


def test_none_of_the_six_is_in_the_dielectric_data():
    """Same reduced formula and matching structure (pymatgen StructureMatcher, default tolerances) against every row
    of the snapshot: Si, C, NaCl have no row; GaN and ZnO only their zincblende polymorphs; SiO2 seven other
    polymorphs, none of them alpha-quartz."""
    rows = pd.read_csv(SNAPSHOT, comment="#")
    matcher = StructureMatcher()
    found = {}
    for name, structure in reference_structures().items():
        same_formula = rows[rows["formula"] == name]
        found[name] = len(same_formula)
        for cif in same_formula["structure"]:
            assert not matcher.fit(structure, Structure.from_str(cif, fmt="cif")), name
    assert found == {"Si": 0, "C": 0, "NaCl": 0, "GaN": 1, "ZnO": 1, "SiO2": 7}
