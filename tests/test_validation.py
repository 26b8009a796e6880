"""zoo.data.validation and stages/validate.py on a corpus of corrupt records mixed into real-looking good ones.

Good records are built on the real Materials Project structures of tests/data/structures/ (see test_symmetry.py),
with random tensors projected onto the structure's point-group-invariant subspace by zoo.core.symmetry.symmetrize, so
they obey Neumann's principle, and with physical values (positive definite stiffness, eps >= 1, PSD ionic part,
non-negative DOS on the standard grid). Each corrupt record breaks one thing and names the reason code it must be
quarantined with. The frames are in the clean record format, built here directly (not by the clean stage).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from tests.params_file import SYMMETRY, write_params
from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.io import canonical_json
from zoo.data import validation

# The checkout's params, computed in this process (workers 1).
PARAMS = dataclasses.replace(validation.ValidationParams.from_params(), workers=1)

REPO = Path(__file__).resolve().parent.parent
STRUCTURES = Path(__file__).parent / "data" / "structures"
STEMS = sorted(path.stem for path in STRUCTURES.glob("*.cif"))
REQUIRED_REPORT_KEYS = {"n_raw", "n_accepted", "n_quarantined", "reasons", "neumann_tolerance",
                        "neumann_pass_fraction", "expectations"}


# --------------------------------------------------------------------------------------------- building records
@functools.cache
def structure(stem: str) -> Structure:
    return Structure.from_file(STRUCTURES / f"{stem}.cif")


@functools.cache
def info(stem: str) -> symmetry.SymmetryInfo:
    return symmetry.analyze(structure(stem))


def structure_json(stem: str) -> str:
    return canonical_json(structure(stem).as_dict())


def clean_row(prop: str, name: str, stem: str, values: dict[str, Any], *, clean_issue: str | None = None,
              structure_text: str | None | bool = True, material_id: str | None = None) -> dict[str, Any]:
    """One record in the clean format; `structure_text` True means the stem's own structure."""
    sym = info(stem)
    row = {
        "record_id": f"test:{prop}:{name}",
        "property": prop,
        "material_id": material_id or "mp-" + stem.split("-mp-")[1],
        "formula": structure(stem).composition.reduced_formula,
        "structure_json": structure_json(stem) if structure_text is True else structure_text,
        "n_sites": len(structure(stem)),
        "volume": structure(stem).volume,
        "crystal_system": sym.crystal_system,
        "space_group_number": sym.space_group_number,
        "space_group_symbol": sym.space_group_symbol,
        "point_group": sym.point_group,
        "laue_class": sym.laue_class,
        "is_centrosymmetric": sym.is_centrosymmetric,
        "original_frame": "structure",
        "frame_action": "none",
        "frame_rotation": np.eye(3).tolist(),
        "frame_residual_before": 0.0,
        "frame_residual_after": 0.0,
        "clean_issue": clean_issue,
        "provenance_json": canonical_json({"source": "test", "row": name}),
        "reported_json": canonical_json({}),
    }
    row.update(values)
    return row


def good_stiffness(stem: str, rng: np.random.Generator) -> np.ndarray:
    """A Born-stable 6x6 Voigt stiffness (GPa) obeying the structure's point group.

    Positive definite before the group average, and still after: a rotation acts on the Voigt matrix by a
    congruence, so every rotated copy is positive definite and so is their mean.
    """
    k, g = 120.0, 70.0  # an isotropic solid, plus an anisotropic positive semi-definite part
    isotropic = np.zeros((6, 6))
    isotropic[:3, :3] = k - 2 * g / 3
    isotropic += np.diag([2 * g] * 3 + [g] * 3)
    a = rng.normal(size=(6, 6))
    voigt = isotropic + 10.0 * a @ a.T / 6
    cartesian = symmetry.symmetrize(tensors.stiffness_voigt_to_cartesian(voigt), info(stem))
    return tensors.stiffness_cartesian_to_voigt(cartesian)


def psd(rng: np.random.Generator, scale: float) -> np.ndarray:
    a = rng.normal(size=(3, 3))
    return scale * a @ a.T / 3


def good_dielectric(stem: str, rng: np.random.Generator) -> dict[str, list]:
    electronic = symmetry.symmetrize(np.eye(3) * 2.0 + psd(rng, 1.0), info(stem))
    ionic = symmetry.symmetrize(psd(rng, 3.0), info(stem))
    return {"electronic": electronic.tolist(), "ionic": ionic.tolist(), "total": (electronic + ionic).tolist()}


def random_piezo(rng: np.random.Generator) -> np.ndarray:
    """A random Cartesian e_ijk, symmetric in jk, components of order 0.5 C/m^2."""
    e = rng.normal(scale=0.5, size=(3, 3, 3))
    return 0.5 * (e + e.transpose(0, 2, 1))


def good_piezo(stem: str, rng: np.random.Generator) -> list:
    e = symmetry.symmetrize(random_piezo(rng), info(stem))
    e[np.abs(e) < 1e-12] = 0.0  # components the group forbids come out at rounding level (~1e-17): zero them
    return tensors.piezo_cartesian_to_voigt(e).tolist()


def good_phonon(rng: np.random.Generator) -> dict[str, list]:
    dos = rng.uniform(0.0, 1.0, size=len(properties.PHONON_GRID_CM))
    dos[0] = 0.0
    return {"frequencies_cm": properties.PHONON_GRID_CM.tolist(), "dos": (dos / dos.max()).tolist()}


def with_structure(stem: str, change) -> str:
    """The stem's structure as a dict, changed by `change(dict)`, as clean's canonical JSON."""
    as_dict = structure(stem).as_dict()
    change(as_dict)
    return canonical_json(as_dict)


def add_close_site(as_dict: dict) -> None:
    """A second copy of site 0, 0.2 A away: two atoms on top of each other."""
    site = json.loads(json.dumps(as_dict["sites"][0]))
    site["xyz"] = (np.array(site["xyz"]) + [0.2, 0.0, 0.0]).tolist()
    lattice = np.array(as_dict["lattice"]["matrix"])
    site["abc"] = np.linalg.solve(lattice.T, site["xyz"]).tolist()
    as_dict["sites"].append(site)


def flatten_lattice(as_dict: dict) -> None:
    """Make the third lattice vector the sum of the first two: zero cell volume."""
    matrix = as_dict["lattice"]["matrix"]
    matrix[2] = (np.array(matrix[0]) + np.array(matrix[1])).tolist()


def unknown_element(as_dict: dict) -> None:
    as_dict["sites"][0]["species"][0]["element"] = "Xx"
    as_dict["sites"][0]["label"] = "Xx"


@dataclass(frozen=True)
class Corpus:
    prop: str
    frame: pd.DataFrame
    expected: dict[str, str | None]  # record_id -> primary reason code (None: accepted)


def rotated_about_z(tensor: np.ndarray, degrees: float) -> np.ndarray:
    return tensors.rotate(tensor, Rotation.from_euler("z", degrees, degrees=True).as_matrix())


def build_corpus(prop: str, seed: int = 7) -> Corpus:
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    expected: dict[str, str | None] = {}

    def add(name: str, stem: str, values: dict, code: str | None, **kwargs) -> None:
        rows.append(clean_row(prop, name, stem, values, **kwargs))
        expected[rows[-1]["record_id"]] = code

    if prop == "elastic":
        for stem in STEMS:
            add(f"good-{stem}", stem, {"stiffness_voigt": good_stiffness(stem, rng).tolist()}, None)
        stem = "orthorhombic-mp-1042"
        c = good_stiffness(stem, rng)
        nan = c.copy()
        nan[0, 0] = math.nan
        add("bad-nan", stem, {"stiffness_voigt": nan.tolist()}, "nan_value")
        add("bad-wrong-shape", stem, {"stiffness_voigt": c[:5].tolist()}, "wrong_shape")
        add("bad-ragged", stem, {"stiffness_voigt": [list(r) for r in c[:5]] + [list(c[5, :4])]}, "wrong_shape")
        asymmetric = c.copy()
        asymmetric[0, 1] += 5.0
        add("bad-asymmetric", stem, {"stiffness_voigt": asymmetric.tolist()}, "elastic_asymmetric")
        add("bad-not-positive-definite", stem, {"stiffness_voigt": (-c).tolist()}, "elastic_not_positive_definite")
        add("bad-modulus-units", stem, {"stiffness_voigt": (100.0 * c).tolist()}, "modulus_out_of_range")
        turned = tensors.stiffness_cartesian_to_voigt(rotated_about_z(tensors.stiffness_voigt_to_cartesian(c), 30.0))
        add("bad-neumann", stem, {"stiffness_voigt": turned.tolist()}, "neumann_violation")
        add("bad-missing", stem, {"stiffness_voigt": None}, "missing_field")
        add("bad-unparsable-cif", stem, {"stiffness_voigt": c.tolist()}, "unparsable_structure",
            clean_issue="unparsable_structure", structure_text=None)
        add("bad-garbage-structure", stem, {"stiffness_voigt": c.tolist()}, "unparsable_structure",
            structure_text="{not json")
        add("bad-duplicate-a", stem, {"stiffness_voigt": c.tolist()}, "duplicate_conflict",
            clean_issue="duplicate_conflict", material_id="mp-999999")
        add("bad-duplicate-b", stem, {"stiffness_voigt": (1.1 * c).tolist()}, "duplicate_conflict",
            clean_issue="duplicate_conflict", material_id="mp-999999")
        add("bad-overlapping-atoms", stem, {"stiffness_voigt": c.tolist()}, "structure_overlapping_atoms",
            structure_text=with_structure(stem, add_close_site))
        add("bad-zero-volume", stem, {"stiffness_voigt": c.tolist()}, "structure_nonpositive_volume",
            structure_text=with_structure(stem, flatten_lattice))
        add("bad-unknown-element", stem, {"stiffness_voigt": c.tolist()}, "unknown_element",
            structure_text=with_structure(stem, unknown_element))
    elif prop == "dielectric":
        for stem in STEMS:
            add(f"good-{stem}", stem, good_dielectric(stem, rng), None)
        stem = "tetragonal-mp-140"
        good = {key: np.array(value) for key, value in good_dielectric(stem, rng).items()}
        low = {"electronic": 0.5 * np.eye(3), "ionic": good["ionic"], "total": 0.5 * np.eye(3) + good["ionic"]}
        add("bad-eps-below-one", stem, {k: v.tolist() for k, v in low.items()}, "dielectric_eigenvalue_below_one")
        negative = {"electronic": 3.0 * np.eye(3), "ionic": -0.5 * np.eye(3), "total": 2.5 * np.eye(3)}
        add("bad-ionic-not-psd", stem, {k: v.tolist() for k, v in negative.items()}, "dielectric_ionic_not_psd")
        asymmetric = {k: v.copy() for k, v in good.items()}
        asymmetric["electronic"][0, 1] += 0.1
        asymmetric["total"][0, 1] += 0.1
        add("bad-asymmetric", stem, {k: v.tolist() for k, v in asymmetric.items()}, "dielectric_asymmetric")
        infinite = {k: v.copy() for k, v in good.items()}
        infinite["total"][2, 2] = math.inf
        add("bad-infinite", stem, {k: v.tolist() for k, v in infinite.items()}, "nan_value")
        add("bad-wrong-shape", stem, {**{k: v.tolist() for k, v in good.items()}, "ionic": [[1.0, 0.0], [0.0, 1.0]]},
            "wrong_shape")
        # A uniaxial tensor along x in a tetragonal crystal whose four-fold axis is not x.
        uniaxial = np.diag([6.0, 3.0, 3.0])
        add("bad-neumann", stem, {"electronic": uniaxial.tolist(), "ionic": np.zeros((3, 3)).tolist(),
                                  "total": uniaxial.tolist()}, "neumann_violation")
        add("bad-duplicate-identical", stem, {k: v.tolist() for k, v in good.items()}, "duplicate_identical",
            clean_issue="duplicate_identical")
    elif prop == "piezo":
        for stem in STEMS:
            add(f"good-{stem}", stem, {"piezo_voigt": good_piezo(stem, rng)}, None)
        # Below piezo_zero_atol_c_m2 a tensor is zero: an unsymmetrised noise-level one is accepted.
        noise = rng.uniform(-1e-5, 1e-5, size=(3, 6))
        add("good-noise-level", "monoclinic-mp-12177", {"piezo_voigt": noise.tolist()}, None)
        nonzero = tensors.piezo_cartesian_to_voigt(random_piezo(rng)).tolist()
        add("bad-centrosymmetric", "cubic-mp-101", {"piezo_voigt": nonzero}, "piezo_nonzero_centrosymmetric")
        add("bad-neumann", "orthorhombic-mp-27724", {"piezo_voigt": nonzero}, "neumann_violation")
        stem = "cubic-mp-1156"
        e = np.array(good_piezo(stem, rng))
        nan = e.copy()
        nan[0, 3] = math.nan
        add("bad-nan", stem, {"piezo_voigt": nan.tolist()}, "nan_value")
        add("bad-wrong-shape", stem, {"piezo_voigt": e[:, :3].tolist()}, "wrong_shape")
        add("bad-unparsable-tensor", stem, {"piezo_voigt": None}, "unparsable_tensor", clean_issue="unparsable_tensor")
        add("bad-frame-ambiguous", stem, {"piezo_voigt": e.tolist()}, "frame_ambiguous", clean_issue="frame_ambiguous")
        add("bad-implausible-magnitude", stem, {"piezo_voigt": (30.0 * e / np.abs(e).max()).tolist()},
            "implausible_magnitude")
    elif prop == "phonon":
        for stem in STEMS:
            add(f"good-{stem}", stem, good_phonon(rng), None)
        stem = "cubic-mp-1156"
        good = good_phonon(rng)
        n = len(good["dos"])
        add("bad-empty-dos", stem, {**good, "dos": []}, "dos_empty")
        add("bad-zero-dos", stem, {**good, "dos": [0.0] * n}, "dos_empty")
        add("bad-negative-dos", stem, {**good, "dos": [-0.2] + good["dos"][1:]}, "dos_negative")
        add("bad-wrong-grid", stem, {**good, "frequencies_cm": np.linspace(0.0, 500.0, n).tolist()}, "dos_wrong_grid")
        add("bad-nan-dos", stem, {**good, "dos": good["dos"][:10] + [math.nan] + good["dos"][11:]}, "dos_not_finite")
        add("bad-missing-dos", stem, {**good, "dos": None}, "missing_field")
        add("bad-short-dos", stem, {**good, "dos": good["dos"][:-1]}, "wrong_shape")
        add("bad-no-material-id", stem, good, "no_material_id", clean_issue="no_material_id")
        add("bad-overlapping-atoms", stem, good, "structure_overlapping_atoms",
            structure_text=with_structure(stem, add_close_site))
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # unsorted on purpose
    return Corpus(prop, frame, expected)


@pytest.fixture(scope="module")
def corpora() -> dict[str, Corpus]:
    return {prop: build_corpus(prop) for prop in properties.PROPERTIES}


@pytest.fixture(scope="module")
def results(corpora) -> dict[str, validation.ValidationResult]:
    return {prop: validation.validate(corpus.frame, prop, PARAMS) for prop, corpus in corpora.items()}


# ------------------------------------------------------------------------------------------------------- tests
def test_corpus_covers_at_least_twenty_kinds_of_corruption(corpora):
    bad = {rid for corpus in corpora.values() for rid, code in corpus.expected.items() if code}
    codes = {code for corpus in corpora.values() for code in corpus.expected.values() if code}
    assert len(bad) >= 20 and len(codes) >= 20, (len(bad), sorted(codes))


@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_every_record_lands_where_it_should_with_its_reason(prop, corpora, results):
    corpus, result = corpora[prop], results[prop]
    accepted = set(result.accepted["record_id"])
    assert accepted == {rid for rid, code in corpus.expected.items() if code is None}
    primary = dict(zip(result.quarantined["record_id"], result.quarantined["primary_reason"]))
    assert primary == {rid: code for rid, code in corpus.expected.items() if code is not None}
    for rid, reasons in zip(result.quarantined["record_id"], result.quarantined["reasons"]):
        assert reasons[0] == primary[rid]
        order = [validation.reason_priority(properties.get(prop)).index(code) for code in reasons]
        assert order == sorted(order) and len(set(reasons)) == len(reasons)


@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_counts_add_up_and_report_has_the_required_keys(prop, corpora, results):
    report = results[prop].report
    assert REQUIRED_REPORT_KEYS <= set(report)
    assert report["n_raw"] == len(corpora[prop].frame) == report["n_accepted"] + report["n_quarantined"]
    assert sum(report["reasons"].values()) == report["n_quarantined"]
    assert report["reasons"] == dict(pd.Series([c for c in corpora[prop].expected.values() if c]).value_counts())
    assert sum(report["reasons_all"].values()) >= report["n_quarantined"]
    for stats in report["expectations"]:
        assert stats["reason_code"] in validation.reason_priority(properties.get(prop))
        assert stats["success"] == (stats["unexpected_count"] == 0)
    json.dumps(report, allow_nan=False)  # plain JSON, no timestamps or numpy scalars


def test_neumann_report_and_metrics_of_good_records(results):
    for prop in ("elastic", "dielectric", "piezo"):
        result = results[prop]
        assert result.report["neumann_tolerance"] == PARAMS.neumann_tolerance == SYMMETRY.neumann_tolerance
        # Symmetrised good records obey Neumann's principle to rounding; the corpus also has records that do not.
        assert (result.accepted["neumann_residual"] < 1e-10).all()
        assert result.report["neumann_pass_fraction"] == 1.0
        assert 0.0 < result.report["neumann_pass_fraction_evaluated"] < 1.0
    assert results["phonon"].report["neumann_tolerance"] is None
    elastic = results["elastic"].accepted
    assert (elastic["min_eigenvalue"] > 0).all() and elastic["k_vrh"].between(50, 300).all()
    dielectric = results["dielectric"].accepted
    assert (dielectric["electronic_min_eig"] >= 1.0).all() and (dielectric["ionic_min_eig"] >= -1e-12).all()


def test_records_with_a_clean_issue_get_no_metrics(results):
    quarantined = results["elastic"].quarantined.set_index("record_id")
    duplicate = quarantined.loc["test:elastic:bad-duplicate-a"]
    assert list(duplicate["reasons"]) == ["duplicate_conflict"]
    assert pd.isna(duplicate["neumann_residual"]) and pd.isna(duplicate["values_present"])


def test_asymmetric_stiffness_is_also_not_spd_and_gets_no_moduli(results):
    quarantined = results["elastic"].quarantined.set_index("record_id")
    record = quarantined.loc["test:elastic:bad-asymmetric"]
    assert list(record["reasons"]) == ["elastic_asymmetric", "elastic_not_positive_definite"]
    assert pd.isna(record["k_vrh"]) and pd.isna(record["neumann_residual"])


def test_outputs_are_byte_identical_across_runs(corpora, tmp_path):
    corpus = corpora["piezo"]
    files = []
    for run in ("a", "b"):
        result = validation.validate(corpus.frame, "piezo", PARAMS)
        paths = [tmp_path / run / name for name in ("accepted.parquet", "quarantine.parquet", "report.json")]
        validation.write_outputs(result, *paths)
        files.append([path.read_bytes() for path in paths])
    assert files[0] == files[1]
    accepted = pd.read_parquet(tmp_path / "a" / "accepted.parquet")
    assert list(accepted["record_id"]) == sorted(accepted["record_id"])
    quarantine = pd.read_parquet(tmp_path / "a" / "quarantine.parquet")
    assert set(quarantine.columns) == set(accepted.columns) | {"reasons", "primary_reason"}
    assert quarantine["values_finite"].dtype == "bool" or str(quarantine["values_finite"].dtype) == "boolean"


def test_n_raw_mismatch_raises(corpora):
    corpus = corpora["phonon"]
    with pytest.raises(ValueError, match="n_raw=.* accepted .* quarantined"):
        validation.validate(corpus.frame, "phonon", PARAMS, n_raw=len(corpus.frame) + 1)


def test_clean_frame_problems_raise_clear_errors(corpora):
    frame = corpora["phonon"].frame
    with pytest.raises(ValueError, match=r"lacks the columns \['dos'\]"):
        validation.validate(frame.drop(columns=["dos"]), "phonon", PARAMS)
    with pytest.raises(ValueError, match="unknown clean_issue codes"):
        validation.validate(frame.assign(clean_issue="gremlins"), "phonon", PARAMS)
    with pytest.raises(ValueError, match="record_id repeated"):
        validation.validate(pd.concat([frame, frame.iloc[:1]]), "phonon", PARAMS)


def test_params_refuse_unknown_keys_and_bad_values(tmp_path):
    path = write_params(tmp_path / "params.yaml", symmetry={"neumann_tolerance": 0.05},
                        validate={"k_vrh_range_gpa": [1, 500]})
    params = validation.ValidationParams.from_params(path)
    assert params.neumann_tolerance == 0.05 and params.thresholds["k_vrh_range_gpa"] == (1.0, 500.0)
    assert params.expectation_parameters(properties.get("elastic"))["k_vrh_max_gpa"] == 500.0
    # A key no property names (a typo of a shared one here) is refused by name, as a missing one.
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['neuman_tolerance'\\]"):
        validation.ValidationParams.from_params(write_params(path, validate={"neuman_tolerance": 0.05}))
    with pytest.raises(ValueError, match="missing key\\(s\\) \\['piezo_zero_atol_c_m2'\\]"):
        dataclasses.replace(PARAMS, thresholds={k: v for k, v in PARAMS.thresholds.items()
                                                if k != "piezo_zero_atol_c_m2"})
    with pytest.raises(ValueError, match="k_vrh_range_gpa"):
        dataclasses.replace(PARAMS, thresholds={**PARAMS.thresholds, "k_vrh_range_gpa": (500.0, 1.0)})
    with pytest.raises(ValueError, match="neumann_tolerance"):
        dataclasses.replace(PARAMS, neumann_tolerance=-1.0)


@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_suites_carry_reason_codes_and_only_known_parameters(prop):
    suite = validation.load_suite(prop)
    referenced = {value["$PARAMETER"]
                  for expectation in json.loads(validation.suite_path(prop).read_text())["expectations"]
                  for value in expectation["kwargs"].values() if isinstance(value, dict) and "$PARAMETER" in value}
    assert referenced <= set(PARAMS.expectation_parameters(properties.get(prop)))
    metric_or_value = set(validation.metric_names(prop)) | {c.name for c in validation.value_columns(properties.get(prop))}
    columns = {column for e in suite.expectations for column in getattr(e, "column_list", None) or [e.column]}
    assert columns <= metric_or_value


def test_custom_expectations_check_the_tensor_itself():
    spd = np.diag([3.0, 2.0, 1.0])
    assert validation.is_symmetric_positive_definite(spd, 1e-6)
    assert not validation.is_symmetric_positive_definite(np.diag([3.0, 2.0, -1.0]), 1e-6)
    assert not validation.is_symmetric_positive_definite(spd + np.triu(np.ones((3, 3)), 1), 1e-6)
    assert not validation.is_symmetric_positive_definite(np.ones((2, 3)), 1e-6)
    assert validation.is_zero_tensor(np.full((3, 6), 1e-6), 1e-4)
    assert not validation.is_zero_tensor(np.full((3, 6), 1e-3), 1e-4)
    assert not validation.is_zero_tensor([[math.nan] * 6] * 3, 1e-4)


def test_min_interatomic_distance_counts_periodic_images():
    conventional = structure("cubic-mp-101")  # fcc Ir, 4 atoms in the cubic cell: nearest neighbours at a/sqrt(2)
    a = conventional.lattice.abc[0]
    primitive = conventional.get_primitive_structure()
    assert len(conventional) == 4 and len(primitive) == 1  # the one-atom cell only has its own images
    for cell in (conventional, primitive):
        assert validation.min_interatomic_distance(cell) == pytest.approx(a / math.sqrt(2), rel=1e-6)


def test_data_docs_are_built(corpora, tmp_path):
    docs = tmp_path / "data-docs" / "phonon"
    docs.mkdir(parents=True)
    (docs / "stale.html").write_text("from an earlier run")
    validation.validate(corpora["phonon"].frame, "phonon", PARAMS, docs_dir=docs)
    assert (docs / "index.html").is_file() and not (docs / "stale.html").exists()
    suite_page = (docs / "expectations" / "validate-phonon.html").read_text()
    assert "dos_min" in suite_page
    assert list(docs.glob("validations/validate-phonon/**/*.html"))
    assert [p.name for p in tmp_path.joinpath("data-docs").iterdir()] == ["phonon"]  # no staging left behind


def test_data_docs_are_byte_identical_when_rerun(corpora, tmp_path):
    """zoo.release.determinism compares the Data Docs byte for byte: no run time, load time, rendering time or random id."""
    def build(name: str) -> dict[str, bytes]:
        docs = tmp_path / name
        validation.validate(corpora["piezo"].frame, "piezo", PARAMS, docs_dir=docs)
        return {path.relative_to(docs).as_posix(): path.read_bytes() for path in docs.rglob("*") if path.is_file()}

    first, second = build("first"), build("second")
    assert sorted(name for name in first.keys() | second.keys() if first.get(name) != second.get(name)) == []
    [page] = [name for name in first if name.startswith("validations/")]
    suite, run_name, run_time, _ = page.split("/")[1:]
    assert (suite, run_time) == ("validate-piezo", "19700101T000000.000000Z") and run_name.startswith("sha256-")


def load_stage():
    spec = importlib.util.spec_from_file_location("validate_stage", REPO / "stages" / "validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_writes_outputs_and_refuses_lost_records(corpora, tmp_path, monkeypatch, capsys):
    validate_stage = load_stage()
    frame = corpora["phonon"].frame
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", validate={"workers": 2})
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "clean").mkdir(parents=True)
    ids = sorted(frame["record_id"])
    (tmp_path / "data" / "raw" / "phonon.jsonl").write_text("".join(json.dumps({"record_id": i}) + "\n" for i in ids))
    frame.to_parquet(tmp_path / "data" / "clean" / "phonon.parquet")
    assert validate_stage.main(["phonon"]) == 0
    report = json.loads((tmp_path / "data/reports/phonon-validation.json").read_text())
    assert report["n_raw"] == len(frame) and (tmp_path / "data/quarantine/phonon.parquet").is_file()
    assert (tmp_path / "data/clean/phonon.accepted.parquet").is_file()
    assert (tmp_path / "data/reports/data-docs/phonon/index.html").is_file()
    capsys.readouterr()

    (tmp_path / "data" / "raw" / "phonon.jsonl").write_text(
        "".join(json.dumps({"record_id": i}) + "\n" for i in ids + ["test:phonon:lost-in-clean"]))
    assert validate_stage.main(["phonon"]) == 1
    assert "missing from clean ['test:phonon:lost-in-clean']" in capsys.readouterr().err


@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_value_columns_match_the_clean_schema(prop):
    from zoo.data.cleaning import clean_schema

    spec = properties.get(prop)
    schema = clean_schema(spec)
    for column in validation.value_columns(spec):
        shape, dtype = [], schema.field(column.name).type
        while hasattr(dtype, "list_size"):
            shape.append(dtype.list_size)
            dtype = dtype.value_type
        assert tuple(shape) == column.shape, column.name


def test_metrics_do_not_depend_on_the_number_of_workers(corpora):
    frame = corpora["elastic"].frame
    one = validation.compute_metrics(frame, "elastic", PARAMS)
    two = validation.compute_metrics(frame, "elastic", dataclasses.replace(PARAMS, workers=2))
    pd.testing.assert_frame_equal(one, two)


def test_a_suite_expectation_without_a_known_reason_code_is_refused(tmp_path, monkeypatch):
    suite = json.loads(validation.suite_path("phonon").read_text())
    suite["expectations"][0]["meta"] = {"reason_code": "looks_odd"}
    (tmp_path / "phonon.json").write_text(json.dumps(suite))
    spec = dataclasses.replace(properties.get("phonon"), suite_file=tmp_path / "phonon.json")
    monkeypatch.setitem(properties.PROPERTIES, "phonon", spec)
    with pytest.raises(ValueError, match="reason_code 'looks_odd'"):
        validation.load_suite("phonon")
