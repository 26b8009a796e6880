"""The newer elastic sources: their adapters (each format, each frame claim), the merge rule of several records of
one material (zoo.data.merging), and the external split's isolation (zoo.data.datasets, zoo.nn.training)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.params_file import PARAMS, train_settings
from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.io import canonical_json, sha256_file
from zoo.data import cleaning, dataset_rows, datasets, merging, splits, validation
from zoo.data.records import read_raw
from zoo.data.sources.snapshot import fetch_property, load_manifest, locate_root
from zoo.nn import training

SNAPSHOT = locate_root()
ELASTIC = properties.get("elastic")
ELASTIC_FILE = ELASTIC.snapshot.file
STRAINTENSORNET_FILE, ELATBOT_FILE = (source.file for source in ELASTIC.more_snapshots)
CLEAN = dataclasses.replace(cleaning.CleanParams.from_params(), workers=1)
VALIDATE = dataclasses.replace(validation.ValidationParams.from_params(), workers=1)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> list[dict]:
    if not (SNAPSHOT / "SOURCES.md").is_file():
        pytest.skip(f"the pinned snapshot is not at {SNAPSHOT}")
    out = tmp_path_factory.mktemp("raw") / "elastic.jsonl"
    fetch_property("elastic", SNAPSHOT, out)
    return read_raw(out)


def by_file(raw: list[dict], relpath: str) -> list[dict]:
    return [record for record in raw if record["provenance"]["file"] == relpath]


# ------------------------------------------------------------------------------------------------- adapters
def test_straintensornet_records_keep_the_cif_and_claim_the_ieee_frame(raw):
    records = by_file(raw, STRAINTENSORNET_FILE)
    first = json.loads((SNAPSHOT / STRAINTENSORNET_FILE).read_text().splitlines()[0])
    record = records[0]
    assert record["record_id"] == "snapshot:elastic:straintensornet-row-00000"
    assert (record["material_id"], record["formula"]) == ("mp-1008876", None)  # the file gives no formula
    assert record["structure"] == {"format": "cif", "data": first["cif"]}
    assert record["values"] == {"stiffness_voigt": first["elastic_tensor_voigt_ieee_gpa"],
                                "stiffness_voigt_original": None, "compliance_voigt": None}
    assert record["tensor_frames"] == {"stiffness_voigt": "ieee"}
    assert record["reported"] == {"crystal_system": "cubic"}
    assert record["provenance"]["mp_release_years"] == [2020, 2023]
    assert record["provenance"]["sha256"] == load_manifest()["files"][STRAINTENSORNET_FILE]["sha256"]
    assert len(records) == 1151 and all(r["tensor_frames"] == {"stiffness_voigt": "ieee"} for r in records)


def test_elatbot_records_keep_the_conventional_cell_as_given(raw):
    records = by_file(raw, ELATBOT_FILE)
    first = json.loads((SNAPSHOT / ELATBOT_FILE).read_text().splitlines()[0])
    record = records[0]
    assert record["record_id"] == "snapshot:elastic:elatbot-row-00000"
    assert (record["material_id"], record["formula"]) == ("mp-20487", "La3Ga")
    assert record["structure"] == {"format": "ase-dict", "data": {
        "numbers": [57, 57, 57, 31], "positions": first["cart_coords_angstrom"], "cell": first["lattice_angstrom"],
        "pbc": [True, True, True]}}
    assert record["values"]["stiffness_voigt"] == first["elastic_tensor_voigt_ieee_gpa"]
    assert record["tensor_frames"] == {"stiffness_voigt": "ieee"}
    assert len(records) == 500
    # The lattice is MP's, not re-oriented: the parsed structure keeps the given matrix (the frame of the tensor).
    structure, _ = cleaning.parse_structure(record["structure"])
    np.testing.assert_allclose(structure.lattice.matrix, first["lattice_angstrom"])


def test_matminer_records_keep_their_release_1_0_0_ids(raw):
    records = by_file(raw, ELASTIC_FILE)
    assert records[0]["record_id"] == "snapshot:elastic:row-00000"
    assert {tuple(r["provenance"]["mp_release_years"]) for r in records} == {(2015, 2015)}


def test_the_ieee_claim_of_each_new_source_is_what_neumann_measures(raw):
    """A sample of each new file: read as IEEE and brought to the structure's frame, the tensor satisfies Neumann's
    principle (the claim holds); the CIF-parsed orientation is the parser's, so as given it often does not."""
    for relpath, expected_ieee, as_given_below in ((STRAINTENSORNET_FILE, 0.9, 0.9), (ELATBOT_FILE, 0.85, 1.01)):
        consistent = {"ieee": 0, "as_given": 0}
        sample = by_file(raw, relpath)[::25]
        for record in sample:
            structure, _ = cleaning.parse_structure(record["structure"])
            tensor = tensors.voigt_to_cartesian(np.asarray(record["values"]["stiffness_voigt"]), "stiffness")
            info = symmetry.analyze(structure)
            ieee = tensors.rotate(tensor, symmetry.ieee_rotation(structure).T)
            consistent["ieee"] += symmetry.neumann_residual(ieee, info) <= 0.05
            consistent["as_given"] += symmetry.neumann_residual(tensor, info) <= 0.05
        assert consistent["ieee"] / len(sample) >= expected_ieee, (relpath, consistent)
        assert consistent["as_given"] / len(sample) < as_given_below, (relpath, consistent)


def test_malformed_json_lines_are_kept_as_unreadable_markers(tmp_path, raw):
    lines = (SNAPSHOT / ELATBOT_FILE).read_text().splitlines()[:4]
    broken = [json.loads(line) for line in lines]
    broken[1]["species"][0] = "Xx"                                 # no element
    broken[2]["elastic_tensor_voigt_ieee_gpa"] = [[1.0] * 6] * 5   # wrong shape
    text = "\n".join([json.dumps(broken[0]), json.dumps(broken[1]), json.dumps(broken[2]), "{not json"]) + "\n"
    stn = "".join((SNAPSHOT / STRAINTENSORNET_FILE).read_text().splitlines(keepends=True)[:1])
    with open(SNAPSHOT / ELASTIC_FILE, newline="", encoding="utf-8") as handle:
        ref = handle.readline()
        reader = csv.reader(handle)
        header, first_row = next(reader), next(reader)
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([header, first_row])
    files = {ELASTIC_FILE: (ref + buffer.getvalue(), 1), STRAINTENSORNET_FILE: (stn, 1), ELATBOT_FILE: (text, 4)}
    manifest = {"files": {}}
    for relpath, (content, rows) in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text(content)
        manifest["files"][relpath] = {"sha256": sha256_file(tmp_path / relpath), "rows": rows}
    report = fetch_property("elastic", tmp_path, tmp_path / "out.jsonl", manifest=manifest)
    records = by_file(read_raw(tmp_path / "out.jsonl"), ELATBOT_FILE)
    assert report.records_written == 6 and [r["provenance"]["row"] for r in records] == [0, 1, 2, 3]
    assert "not element symbols: ['Xx']" in records[1]["structure"]["data"]["error"]
    assert records[2]["values"]["stiffness_voigt"]["error"].startswith("expected a 6x6 array")
    assert records[3]["material_id"] is None and "line is not JSON" in records[3]["values"]["stiffness_voigt"]["error"]
    assert report.unreadable_fields == {"structure.data": 2, "values.stiffness_voigt": 2}
    assert "mp_release_years" not in records[0]["provenance"]  # this manifest states no release


# ----------------------------------------------------------------------------------------------- merge rule
def cubic(c11: float, c12: float, c44: float) -> list[list[float]]:
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    np.fill_diagonal(c[:3, :3], c11)
    c[3, 3] = c[4, 4] = c[5, 5] = c44
    return c.tolist()


def frame(rows: list[tuple]) -> pd.DataFrame:
    """A validated frame: (record_id, material_id, file, years, stiffness) per row, sorted by record_id."""
    return pd.DataFrame([{
        "record_id": record_id, "material_id": material_id, "stiffness_voigt": value,
        "provenance_json": canonical_json({"source": "snapshot", "file": file, "row": i, "sha256": "0" * 64,
                                           **({"mp_release_years": years} if years else {})}),
    } for i, (record_id, material_id, file, years, value) in enumerate(rows)]).sort_values("record_id")


def run_merge(rows, reasons=None, holdout=()):
    clean = frame(rows).reset_index(drop=True)
    params = merging.MergeParams(tuple(holdout), PARAMS.validate.merge_atol, PARAMS.validate.merge_rtol)
    return clean, merging.merge(clean, reasons or [set() for _ in rows], ELASTIC, ["stiffness_voigt"], params)


def test_agreeing_duplicates_are_merged_into_the_newer_record_with_provenance():
    # whole-GPa rounding of the newer file: within the tolerance
    clean, result = run_merge([("a:1", "mp-1", "old.csv", [2015, 2015], cubic(250.3, 120.4, 80.2)),
                               ("b:1", "mp-1", "new.jsonl", [2020, 2023], cubic(250.0, 120.0, 80.0))])
    assert result.reasons == [{"merged_duplicate"}, set()]
    merged = json.loads(result.provenance_json[1])["merged"]
    assert [(m["record_id"], m["file"], m["relation"]) for m in merged] == [("a:1", "old.csv", "agrees")]
    assert 0 < merged[0]["largest_invariant_difference"] < 5.0
    assert result.provenance_json[0] == clean["provenance_json"][0]  # the merged record keeps its own provenance
    assert result.report["by_source"]["old.csv"] == {"merged_duplicate": 1, "records": 1, "valid": 1}


def test_a_newer_release_supersedes_a_disagreeing_older_one():
    _, result = run_merge([("a:1", "mp-1", "old.csv", [2015, 2015], cubic(300.0, 120.0, 80.0)),
                           ("b:1", "mp-1", "new.jsonl", [2020, 2023], cubic(250.0, 120.0, 80.0))])
    assert result.reasons == [{"superseded_by_newer_release"}, set()]
    assert json.loads(result.provenance_json[1])["merged"][0]["relation"] == "superseded"


def test_conflicting_records_of_releases_that_cannot_be_ordered_are_all_quarantined():
    _, result = run_merge([("a:1", "mp-1", "one.jsonl", [2020, 2023], cubic(300.0, 120.0, 80.0)),
                           ("b:1", "mp-1", "two.jsonl", [2021, 2022], cubic(250.0, 120.0, 80.0)),
                           ("c:1", "mp-1", "old.csv", [2015, 2015], cubic(250.0, 120.0, 80.0)),
                           ("d:1", "mp-2", "two.jsonl", [2021, 2022], cubic(250.0, 120.0, 80.0))])
    assert result.reasons == [{"source_conflict"}] * 3 + [set()]
    # records of unknown release are never older or newer: if they agree they merge, else they conflict
    _, result = run_merge([("a:1", "mp-1", "one.jsonl", None, cubic(250.0, 120.0, 80.0)),
                           ("b:1", "mp-1", "old.csv", [2015, 2015], cubic(250.2, 120.0, 80.0))])
    assert result.reasons == [set(), {"merged_duplicate"}]


def test_rotated_copies_agree_and_an_invalid_record_does_not_take_part():
    tensor = tensors.voigt_to_cartesian(np.array(cubic(250.0, 120.0, 80.0)) + np.diag([0, 0, 30.0, 0, 0, 0]),
                                        "stiffness")
    rotation = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # another frame of the same tensor
    rotated = tensors.cartesian_to_voigt(tensors.rotate(tensor, rotation), "stiffness").tolist()
    plain = tensors.cartesian_to_voigt(tensor, "stiffness").tolist()
    _, result = run_merge([("a:1", "mp-1", "old.csv", [2015, 2015], plain),
                           ("b:1", "mp-1", "new.jsonl", [2020, 2023], rotated),
                           ("c:1", "mp-1", "newest.jsonl", [2024, 2024], cubic(1.0, 0.5, 0.2))],
                          reasons=[set(), set(), {"elastic_not_positive_definite"}])
    assert result.reasons == [{"merged_duplicate"}, set(), {"elastic_not_positive_definite"}]


def test_holdout_records_of_materials_another_source_holds_are_unused():
    rows = [("a:1", "mp-1", "train.csv", [2015, 2015], cubic(250.0, 120.0, 80.0)),
            ("h:1", "mp-1", "holdout.jsonl", [2020, 2023], cubic(200.0, 100.0, 60.0)),  # shared: unused
            ("h:2", "mp-2", "holdout.jsonl", [2020, 2023], cubic(200.0, 100.0, 60.0)),  # holdout only: kept
            ("h:3", "mp-3", "holdout.jsonl", [2020, 2023], cubic(200.0, 100.0, 60.0)),  # shared with an invalid
            ("x:3", "mp-3", "train.csv", [2015, 2015], cubic(200.0, 100.0, 60.0))]      # record: still unused
    _, result = run_merge(rows, reasons=[set(), set(), set(), set(), {"neumann_violation"}],
                          holdout=["holdout.jsonl"])
    assert result.reasons == [set(), {"holdout_overlap"}, set(), {"holdout_overlap"}, {"neumann_violation"}]
    assert result.holdout == [False, True, True, True, False]
    assert "merged" not in json.loads(result.provenance_json[0])  # nothing of the holdout merged into training


def test_validate_counts_every_source_and_merge_code(raw):
    """On real records: the 41 + 54 + 109 shared materials of the three files, every record accounted for."""
    shared = {r["material_id"] for r in by_file(raw, ELATBOT_FILE)} | {r["material_id"] for r in by_file(
        raw, STRAINTENSORNET_FILE)}
    sample = [r for r in raw if r["material_id"] in shared and int(r["material_id"].split("-")[1]) % 7 == 0]
    clean = pd.DataFrame(cleaning.clean_records(sample, ELASTIC, CLEAN).rows)
    assert VALIDATE.holdout_sources == (ELATBOT_FILE,)  # params.yaml's
    result = validation.validate(clean, "elastic", VALIDATE)
    by_source = result.report["by_source"]
    assert sum(counts["n_raw"] for counts in by_source.values()) == len(sample)
    for counts in by_source.values():
        assert counts["n_raw"] == counts["n_accepted"] + counts["n_quarantined"] == \
            counts["n_accepted"] + sum(counts["reasons"].values())
    assert result.accepted["material_id"].is_unique
    shared_with_training = {r["material_id"] for r in sample if r["provenance"]["file"] != ELATBOT_FILE}
    external = result.accepted[result.accepted[merging.HOLDOUT_COLUMN]]
    assert not set(external["material_id"]) & shared_with_training
    assert by_source[ELATBOT_FILE]["reasons"].get("holdout_overlap", 0) > 0


# ------------------------------------------------------------------------------------------- external split
def accepted_rows(material_ids, systems, holdout):
    return {"material_id": list(material_ids), "record_id": [f"r:{m}" for m in material_ids],
            "crystal_system": list(systems), "holdout": list(holdout)}


def test_holdout_records_form_the_external_split_and_move_no_pinned_record():
    ids = [f"mp-{i}" for i in range(60)]
    systems = ["cubic"] * 30 + ["hexagonal"] * 30
    first = dataset_rows._splits(accepted_rows(ids[:40], systems[:40], [False] * 40), "salt", splits.DEFAULT_FRACTIONS,
                             None)
    pinned = dict(zip(ids[:40], first))
    holdout = [False] * 50 + [True] * 10
    second = dataset_rows._splits(accepted_rows(ids, systems, holdout), "salt", splits.DEFAULT_FRACTIONS, pinned)
    assert second[:40] == first  # nothing pinned moves
    assert second[50:] == [splits.EXTERNAL] * 10 and splits.EXTERNAL not in second[:50]
    with pytest.raises(ValueError, match="two splits"):
        dataset_rows._splits(accepted_rows(ids[:3] + ids[:1], ["cubic"] * 4, [False] * 3 + [True]), "salt",
                         splits.DEFAULT_FRACTIONS, None)
    with pytest.raises(ValueError, match="pinned split"):
        dataset_rows._splits(accepted_rows(ids[:40], systems[:40], [True] + [False] * 39), "salt",
                         splits.DEFAULT_FRACTIONS, pinned)


def test_a_fit_never_sees_the_test_or_external_split():
    dummy = training.SplitData("elastic", ("a",), ("cubic",), (None,), np.zeros((1, 21)))
    data = {"train": dummy, "validation": dummy, "test": dummy, "external": dummy}
    assert set(training.fitting_splits(data)) == {"train", "validation"}
    with pytest.raises(ValueError, match="only"):
        training.fit(data, train_settings(max_epochs=1))


def test_pinned_splits_file_round_trips(tmp_path):
    pinned = Path(__file__).resolve().parents[1] / "schemas" / "pinned-splits" / "mp-elastic-irreps-1.0.0.json"
    assignments = datasets.read_split_assignments(pinned)
    assert len(assignments) == 1161 and set(assignments.values()) == set(splits.SPLITS)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": datasets.PINNED_SPLITS_FORMAT, "assignments": {"mp-1": "external"}}))
    with pytest.raises(ValueError, match="cannot be pinned"):
        datasets.read_split_assignments(bad)
