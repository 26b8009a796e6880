"""zoo.core.polarity and validate's polarity expectation: tetrahedral binaries have one sign of the longitudinal
piezo coefficient along the cation->anion bond per compound, across wurtzite and zinc blende.

The records go through the clean stage and then validate, as in the pipeline; the structures are built here.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from zoo import properties
from zoo.core import polarity, symmetry, tensors
from zoo.data import cleaning, validation

CLEAN = dataclasses.replace(cleaning.CleanParams.from_params(), workers=1)
PARAMS = dataclasses.replace(validation.ValidationParams.from_params(), workers=1)
WURTZITE_VOIGT = np.array([[0.0, 0.0, 0.0, 0.0, -0.45, 0.0],
                           [0.0, 0.0, 0.0, -0.45, 0.0, 0.0],
                           [-0.55, -0.55, 1.04, 0.0, 0.0, 0.0]])
E14 = 0.65  # zinc blende: e_long along a bond = 2 e14 / sqrt(3)
ZINC_BLENDE_VOIGT = np.array([[0.0, 0.0, 0.0, E14, 0.0, 0.0],
                              [0.0, 0.0, 0.0, 0.0, E14, 0.0],
                              [0.0, 0.0, 0.0, 0.0, 0.0, E14]])


def wurtzite() -> Structure:
    """ZnO, P6_3mc, the Zn->O apex bond along +z."""
    return Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                     [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])


def zinc_blende() -> Structure:
    """ZnO, F-43m, conventional cubic cell: Zn at the fcc sites, O displaced by +(1/4, 1/4, 1/4)."""
    return Structure.from_spacegroup("F-43m", Lattice.cubic(4.58), ["Zn", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def rock_salt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.3), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_bond_coefficients_of_wurtzite_and_zinc_blende():
    for structure, voigt, expected in ((wurtzite(), WURTZITE_VOIGT, 1.04),
                                       (zinc_blende(), ZINC_BLENDE_VOIGT, 2 * E14 / np.sqrt(3))):
        info = symmetry.analyze(structure)
        assert symmetry.neumann_residual(tensors.piezo_voigt_to_cartesian(voigt), info) < 1e-12
        bonds = polarity.tetrahedral_bonds(structure)
        assert bonds.compound == "ZnO" and bonds.cation == "Zn"
        assert all(b.shape == (4, 3) for b in bonds.bonds)
        assert polarity.piezo_bond_longitudinal(voigt, structure, info) == ("ZnO", pytest.approx(expected))
        # Turning the crystal upside down with its tensor changes nothing; flipping the tensor alone flips the sign.
        assert polarity.piezo_bond_longitudinal(-voigt, structure, info)[1] == pytest.approx(-expected)
    assert symmetry.polar_axis(symmetry.analyze(zinc_blende())) is None
    np.testing.assert_allclose(np.abs(symmetry.polar_axis(symmetry.analyze(wurtzite()))), [0, 0, 1], atol=1e-9)


def test_only_tetrahedral_binaries_count():
    assert polarity.tetrahedral_bonds(rock_salt()) is None  # six neighbours
    ternary = zinc_blende().copy()
    ternary.replace(0, "Cd")
    assert polarity.tetrahedral_bonds(ternary) is None
    assert polarity.piezo_bond_longitudinal(np.zeros((3, 6)), rock_salt(), symmetry.analyze(rock_salt())) == \
        (None, None)


def test_consistent_signs_takes_the_strict_majority_and_fails_ties():
    compounds = ["ZnO", "ZnO", "ZnO", "GaN", "GaN", "AlN", None, "ZnO"]
    values = [1.0, 0.8, -0.7, 0.5, -0.5, -0.3, -1.0, 0.001]
    assert polarity.consistent_signs(compounds, values, min_abs=0.01) == \
        [True, True, False, False, False, True, True, True]


def _record(record_id: str, structure: Structure, voigt: np.ndarray) -> dict:
    return {"record_id": record_id, "property": "piezo", "material_id": f"mp-{record_id}", "formula": "ZnO",
            "structure": {"format": "pymatgen-dict", "data": structure.as_dict()},
            "values": {"piezo_voigt": voigt.tolist()}, "tensor_frames": {"piezo_voigt": "structure"},
            "reported": {}, "provenance": {"file": "constructed.csv", "source": "test"}}


def _validate(records: list[dict]) -> validation.ValidationResult:
    rows = cleaning.clean_records(records, properties.get("piezo"), CLEAN).rows
    assert all(row["clean_issue"] is None for row in rows), [row["frame_candidates_json"] for row in rows]
    return validation.validate(pd.DataFrame(rows), "piezo", PARAMS)


def test_a_wurtzite_zinc_blende_pair_of_one_sign_is_accepted():
    result = _validate([_record("1", wurtzite(), WURTZITE_VOIGT), _record("2", zinc_blende(), ZINC_BLENDE_VOIGT)])
    assert len(result.accepted) == 2 and result.quarantined.empty
    assert (result.accepted["bond_longitudinal_e"] > 0).all()
    assert set(result.accepted["polarity_compound"]) == {"ZnO"}


def test_a_wurtzite_zinc_blende_pair_with_one_sign_flipped_is_quarantined():
    """Two records, opposite signs: no majority says which is right, so both go, with polarity_inconsistent."""
    result = _validate([_record("1", wurtzite(), WURTZITE_VOIGT), _record("2", zinc_blende(), -ZINC_BLENDE_VOIGT)])
    assert result.accepted.empty
    assert list(result.quarantined["primary_reason"]) == ["polarity_inconsistent"] * 2
    assert result.report["reasons"] == {"polarity_inconsistent": 2}


def test_the_flipped_record_alone_is_quarantined_when_the_others_agree():
    result = _validate([_record("1", wurtzite(), WURTZITE_VOIGT), _record("2", zinc_blende(), ZINC_BLENDE_VOIGT),
                        _record("3", zinc_blende(), -ZINC_BLENDE_VOIGT)])
    assert set(result.accepted["record_id"]) == {"1", "2"}
    assert list(result.quarantined["record_id"]) == ["3"]


def test_the_tolerance_is_a_suite_parameter():
    small = _record("2", zinc_blende(), -0.01 * ZINC_BLENDE_VOIGT)  # |e_long| 0.0075 C/m^2: no sign at 0.02
    rows = cleaning.clean_records([_record("1", wurtzite(), WURTZITE_VOIGT), small], properties.get("piezo"),
                                  CLEAN).rows
    frame = pd.DataFrame(rows)
    assert validation.validate(frame, "piezo", PARAMS).quarantined.empty
    strict = dataclasses.replace(PARAMS, thresholds={**PARAMS.thresholds, "polarity_min_abs_c_m2": 0.001})
    assert len(validation.validate(frame, "piezo", strict).quarantined) == 2


def test_implausible_magnitude_is_quarantined_with_its_own_code():
    rows = cleaning.clean_records([_record("1", wurtzite(), 25.0 * WURTZITE_VOIGT)], properties.get("piezo"),
                                  CLEAN).rows
    result = validation.validate(pd.DataFrame(rows), "piezo", PARAMS)
    assert list(result.quarantined["primary_reason"]) == ["implausible_magnitude"]
    lenient = dataclasses.replace(PARAMS, thresholds={**PARAMS.thresholds, "piezo_max_abs_c_m2": 30.0})
    assert validation.validate(pd.DataFrame(rows), "piezo", lenient).quarantined.empty
