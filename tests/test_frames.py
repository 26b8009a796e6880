"""zoo.data.cleaning.evidence: a tensor's frame is settled only on evidence, never by an order among candidates.

A constructed polar crystal (wurtzite ZnO) is given with its tensor in the right frame, in the frame of the crystal
turned upside down, and in a frame nothing settles; a triclinic crystal shows that Neumann's principle alone says
nothing for point group 1; the decision rules themselves are checked on hand-made measurements.
"""

import dataclasses
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core import polarity
from zoo.data import cleaning
from zoo.data.cleaning import evidence as frames

SOURCE = {"file": "constructed.csv", "source": "test"}
# ZnO-like wurtzite stress constants (C/m^2) in the upright frame: c along +z, the Zn->O apex bond along +c.
ZNO_VOIGT = np.array([[0.0, 0.0, 0.0, 0.0, -0.45, 0.0],
                      [0.0, 0.0, 0.0, -0.45, 0.0, 0.0],
                      [-0.55, -0.55, 1.04, 0.0, 0.0, 0.0]])
UPSIDE_DOWN = Rotation.from_euler("x", 180, degrees=True).as_matrix()


def wurtzite() -> Structure:
    """ZnO in P6_3mc, c along +z, Zn at z = 0 and O at z = u: the apex bond Zn->O points along +z."""
    return Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                     [[1 / 3, 2 / 3, 0.0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])


def turned(structure: Structure, rotation: np.ndarray) -> Structure:
    """The same crystal turned rigidly (lattice rows rotated, fractional coordinates kept)."""
    return Structure(Lattice(structure.lattice.matrix @ rotation.T), structure.species, structure.frac_coords)


def record(record_id: str, structure: Structure, voigt: np.ndarray, claim: str = "ieee") -> dict:
    return {"record_id": record_id, "property": "piezo", "material_id": None, "formula": "ZnO",
            "structure": {"format": "pymatgen-dict", "data": structure.as_dict()},
            "values": {"piezo_voigt": np.asarray(voigt).tolist()}, "tensor_frames": {"piezo_voigt": claim},
            "reported": {}, "provenance": SOURCE}


CLEAN = dataclasses.replace(cleaning.CleanParams.from_params(), workers=1)
RULES = dataclasses.replace(CLEAN.frame_rules(), convention_min_records=2)  # the rules alone: small examples


def clean(records: list[dict], **params) -> tuple[dict, dict]:
    result = cleaning.clean_records(records, properties.get("piezo"), dataclasses.replace(CLEAN, **params))
    return {row["record_id"]: row for row in result.rows}, result.report


def bond_coefficient(row: dict) -> float:
    """e_long along the Zn->O apex bond of the stored tensor in the stored structure (zoo.data.polarity)."""
    structure = Structure.from_dict(json.loads(row["structure_json"]))
    compound, value = polarity.piezo_bond_longitudinal(np.array(row["piezo_voigt"]), structure,
                                                      symmetry.analyze(structure))
    assert compound == "ZnO"
    return value


def test_the_constructed_tensor_obeys_the_crystal_and_its_bond_coefficient_is_e33():
    info = symmetry.analyze(wurtzite())
    assert info.point_group == "6mm"
    assert symmetry.neumann_residual(tensors.piezo_voigt_to_cartesian(ZNO_VOIGT), info) < 1e-12
    assert polarity.piezo_bond_longitudinal(ZNO_VOIGT, wurtzite(), info) == ("ZnO", pytest.approx(1.04))


def test_polar_crystal_with_its_tensor_in_the_right_frame_is_kept():
    rows, _ = clean([record("right", wurtzite(), ZNO_VOIGT)])
    row = rows["right"]
    assert row["clean_issue"] is None and row["frame_evidence"] == "unique" and row["frame_action"] == "none"
    np.testing.assert_array_equal(row["piezo_voigt"], ZNO_VOIGT)
    assert bond_coefficient(row) == pytest.approx(1.04)


def _turned_copies(n: int) -> list[dict]:
    """The crystal turned every which way, its tensor as the source gives it (upright frame): as given it fits
    nothing, the spglib frames fit and agree, so each is settled by Neumann's principle alone and tests the
    source's convention."""
    rng = np.random.default_rng(12)
    return [record(f"copy-{k:02d}", turned(wurtzite(), Rotation.random(random_state=rng).as_matrix()), ZNO_VOIGT)
            for k in range(n)]


def test_polar_crystal_with_its_tensor_in_the_inverted_frame_is_kept_after_rotation():
    """Stored upside down, the crystal's Zn->O bond points along -z while the tensor is given upright: as given it
    still obeys 6mm (Neumann's principle cannot see the polarity) but with the wrong sign. The source claims IEEE,
    so as given is no evidence; its records settled by Neumann alone show it uses the spglib standard frame, and the
    claimed IEEE frame agrees here: the tensor is rotated back, and the bond coefficient is positive again."""
    inverted = record("inverted", turned(wurtzite(), UPSIDE_DOWN), ZNO_VOIGT)
    rows, report = clean([inverted, *_turned_copies(20)])
    row = rows["inverted"]
    assert row["clean_issue"] is None and row["frame_evidence"] == "source_convention"
    assert row["frame_action"] in ("rotated_standard_to_structure", "rotated_ieee_to_structure")
    assert bond_coefficient(row) == pytest.approx(1.04)
    candidates = {item["candidate"]: item["class"] for item in json.loads(row["frame_candidates_json"])}
    assert candidates["none"] is not None and candidates["none"] != candidates["standard"] == candidates["ieee"]
    table = report["frames"]["conventions"]["constructed.csv"]
    for name in ("ieee", "standard"):  # both give the settled tensor in every copy; here they agree as well
        assert table[name] == {"confirmed": 20, "refuted": 0, "agreement": 1.0, "holds": True}
    assert table["none"]["holds"] is False
    assert sum(report["frames"]["settled_by_convention"]["constructed.csv"].values()) == 1
    assert {rows[f"copy-{k:02d}"]["frame_evidence"] for k in range(20)} == {"unique"}


def test_polar_crystal_in_a_frame_no_evidence_settles_is_quarantined():
    """The same upside-down record with nothing else from its source: two frames fit with opposite polarity and no
    evidence chooses, so clean marks it frame_ambiguous with every candidate, residual and class."""
    rows, report = clean([record("inverted", turned(wurtzite(), UPSIDE_DOWN), ZNO_VOIGT)])
    row = rows["inverted"]
    assert row["clean_issue"] == "frame_ambiguous" and row["frame_evidence"] is None
    np.testing.assert_array_equal(row["piezo_voigt"], ZNO_VOIGT)  # stored as given
    candidates = json.loads(row["frame_candidates_json"])
    assert {item["candidate"] for item in candidates} == {"none", "ieee", "standard"}
    assert all(item["residual"] < 1e-9 for item in candidates)
    assert len({item["class"] for item in candidates}) == 2
    assert report["frames"]["outcome"]["frame_ambiguous"] == 1


def test_a_source_claiming_the_structure_frame_keeps_a_consistent_tensor_as_given():
    """as_given is evidence for a source that does not claim another frame."""
    rows, _ = clean([record("claimed", turned(wurtzite(), UPSIDE_DOWN), ZNO_VOIGT, claim="structure")])
    row = rows["claimed"]
    assert row["frame_evidence"] == "as_given" and row["frame_action"] == "none"
    assert bond_coefficient(row) == pytest.approx(-1.04)  # what the source says, in the stored frame


def test_triclinic_record_without_frame_evidence_is_quarantined():
    """In point group 1 every candidate obeys Neumann's principle: as given is no evidence, the derived frames give
    other tensors, and a lone record has no convention."""
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 81.0, 97.0, 104.0)
    structure = Structure(lattice, ["Li", "Ni", "O", "F"], [[0.0, 0.0, 0.0], [0.31, 0.47, 0.12],
                                                            [0.63, 0.21, 0.58], [0.15, 0.76, 0.39]])
    assert symmetry.analyze(structure).point_group == "1"
    voigt = np.random.default_rng(3).normal(scale=0.3, size=(3, 6))
    rows, _ = clean([record("triclinic", structure, voigt, claim="structure")])
    row = rows["triclinic"]
    assert row["clean_issue"] == "frame_ambiguous"
    classes = [item["class"] for item in json.loads(row["frame_candidates_json"])]
    assert None not in classes and len(set(classes)) >= 2


# ------------------------------------------------------------------------------------------ the rules alone
def measured(classes, residuals=None, informative=True, claim=None, source="s", reversed_pairs=()):
    names = [name for members in classes for name in members]
    residuals = residuals or dict.fromkeys(names, 1e-9)
    return frames.RecordFrames(source=source, residuals=residuals, classes=classes, informative=informative,
                               claim=claim, reversed_pairs=reversed_pairs)


def test_one_class_is_settled_and_none_is_preferred_when_it_fits():
    decisions, report = frames.decide([measured([["standard", "none"]])], RULES)
    assert decisions[0] == frames.FrameDecision("settled", "unique", "none")
    assert report["outcome"]["unique"] == 1


def test_no_consistent_candidate_is_unresolved():
    decisions, _ = frames.decide([measured([], {"none": 0.3, "ieee": 0.4})], RULES)
    assert decisions[0].status == "unresolved"


def test_the_source_field_settles_its_class():
    record = measured([["none"], ["ieee", "original"]])
    assert frames.decide([record], RULES)[0][0] == frames.FrameDecision("settled", "source_field", "ieee")
    alone = measured([["none"], ["original"]])
    assert frames.decide([alone], RULES)[0][0] == frames.FrameDecision("settled", "source_field", "original")


def test_a_margin_settles_only_well_above_noise():
    clear = measured([["standard"], ["none"]], {"standard": 1e-8, "none": 0.02})
    close = measured([["standard"], ["none"]], {"standard": 4e-6, "none": 6e-6})  # DyBO3: no margin
    decisions, _ = frames.decide([clear, close], RULES)
    assert decisions[0] == frames.FrameDecision("settled", "margin", "standard")
    assert decisions[1].status == "frame_ambiguous"


def test_as_given_needs_an_informative_point_group_and_no_contrary_claim():
    kept = measured([["none"], ["standard"]], claim="structure")
    triclinic = measured([["none"], ["standard"]], informative=False, claim="structure")
    claimed_ieee = measured([["none"], ["standard"]], claim="ieee")
    decisions, _ = frames.decide([kept, triclinic, claimed_ieee], RULES)
    assert [d.evidence for d in decisions] == ["as_given", None, None]


def test_as_given_is_switched_off_for_a_source_where_the_source_field_contradicts_it():
    contradicted = measured([["none"], ["ieee", "original"]], claim="unknown")
    undecided = measured([["none"], ["standard"]], claim="unknown")
    decisions, report = frames.decide([contradicted, undecided], RULES)
    assert decisions[1].status == "frame_ambiguous"
    assert report["as_given_check"]["s"] == {"agree": 0, "disagree": 1, "allowed": False}


def test_a_convention_holds_per_source_and_needs_enough_agreeing_records():
    confirming = [measured([["standard"]], {"standard": 1e-9, "none": 0.5}) for _ in range(3)]
    refuting = measured([["none"]], {"none": 1e-9, "standard": 0.5}, source="other")
    undecided = measured([["none"], ["standard"]], claim="ieee")
    elsewhere = measured([["none"], ["standard"]], claim="ieee", source="other")
    decisions, report = frames.decide([*confirming, refuting, undecided, elsewhere], RULES)
    assert decisions[4] == frames.FrameDecision("settled", "source_convention", "standard")
    assert decisions[5].status == "frame_ambiguous"  # the other source's records do not carry it
    assert report["conventions"]["other"]["standard"]["holds"] is False


def test_an_unstable_frame_settles_nothing():
    confirming = [measured([["standard"]], {"standard": 1e-9, "none": 0.5}) for _ in range(3)]
    split = measured([["none", "standard"], ["standard@3"]], claim="ieee")
    decisions, report = frames.decide([*confirming, split], RULES)
    assert decisions[3].status == "frame_ambiguous"
    assert report["unstable_derived_frame"] == 1


def test_a_convention_does_not_reverse_the_polarity_of_the_claimed_frame():
    """Conventions are measured on axes; where the claimed IEEE frame gives the opposite sense, nothing settles."""
    confirming = [measured([["standard"]], {"standard": 1e-9, "ieee": 0.5}) for _ in range(3)]
    opposite = measured([["ieee"], ["standard"]], claim="ieee", reversed_pairs=[(0, 1)])
    relabelled = measured([["ieee"], ["standard"]], claim="ieee")
    decisions, _ = frames.decide([*confirming, opposite, relabelled], RULES)
    assert decisions[3].status == "frame_ambiguous"
    assert decisions[4] == frames.FrameDecision("settled", "source_convention", "standard")


def test_classes_separate_materially_different_tensors_and_find_reversed_polarity():
    info = symmetry.analyze(wurtzite())
    e = tensors.piezo_voigt_to_cartesian(ZNO_VOIGT)
    half_turn = Rotation.from_euler("z", 60, degrees=True).as_matrix()  # in 6mm: the same tensor
    rotations = {"none": np.eye(3), "ieee": half_turn, "standard": UPSIDE_DOWN}
    rotated = {name: {"piezo_voigt": tensors.rotate(e, rotation)} for name, rotation in rotations.items()}
    residuals = {name: symmetry.neumann_residual(parts["piezo_voigt"], info) for name, parts in rotated.items()}
    classes, reversed_pairs = frames.classify(rotations, rotated, residuals, info, RULES)
    assert sorted(map(sorted, classes)) == [["ieee", "none"], ["standard"]]
    assert reversed_pairs == [(0, 1)]
    zero = {name: {"piezo_voigt": np.zeros((3, 3, 3))} for name in rotations}
    assert frames.classify(rotations, zero, dict.fromkeys(rotations, 0.0), info, RULES)[0] == \
        [["none", "ieee", "standard"]]


def test_stability_strains_are_pure_and_tiny():
    strains = frames.stability_strains(1e-7)
    assert len(strains) == 12
    for strain in strains:
        np.testing.assert_array_equal(strain, strain.T)
        assert np.abs(strain).max() == pytest.approx(1e-7)
    assert frames.stability_strains(0.0)[0].any() == False  # noqa: E712 (numpy bool)
