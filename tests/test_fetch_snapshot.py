"""The snapshot fetch source and the fetch stage, against the real pinned snapshot in ../shared/datasets."""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import re
import shutil
import subprocess
import socket
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.params_file import write_params
from zoo import properties
from zoo.core.io import read_jsonl, sha256_file
from zoo.data.records import (
    RawRecordError,
    raw_record_schema,
    read_raw,
    unreadable_fields,
    validate_raw_record,
)
from zoo.data.sources.snapshot import (
    SnapshotIntegrityError,
    fetch_property,
    ROOT_ENV,
    load_manifest,
    locate_root,
    verify_snapshot,
)

ELASTIC_FILE = properties.get("elastic").snapshot.file
STRAINTENSORNET_FILE, ELATBOT_FILE = (source.file for source in properties.get("elastic").more_snapshots)
PHONON_FILE = properties.get("phonon").snapshot.file
PHONON_IDS_FILE = properties.get("phonon").snapshot.ids_file

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = locate_root()  # ../shared/datasets, as fetch finds it
EXPECTED_RECORDS = {"elastic": 1181 + 1151 + 500, "dielectric": 1056, "piezo": 941, "phonon": 1522}


@pytest.fixture(scope="module")
def snapshot_root() -> Path:
    if not (SNAPSHOT / "SOURCES.md").is_file():
        pytest.skip(f"the pinned snapshot is not at {SNAPSHOT} (../shared/datasets beside the repository)")
    return SNAPSHOT


@pytest.fixture(scope="module")
def raw(snapshot_root, tmp_path_factory) -> dict:
    """One fetch per property, shared by the tests below (fetching is the slow part): prop -> (report, path)."""
    out = tmp_path_factory.mktemp("raw")
    return {prop: (fetch_property(prop, snapshot_root, out / f"{prop}.jsonl"), out / f"{prop}.jsonl")
            for prop in EXPECTED_RECORDS}


def records_of(raw: dict, prop: str) -> list[dict]:
    return read_jsonl(raw[prop][1])


def read_snapshot_csv(path: Path) -> pd.DataFrame:
    # An independent parser for cross-checks: skip the '# ref:' line by position, not with comment='#'
    # (CIF strings contain '#'); pandas takes the header's missing first name as an unnamed index.
    return pd.read_csv(path, skiprows=1 if path.read_text().startswith("#") else 0)


# ------------------------------------------------------------------------------------------- manifest
def test_manifest_pins_the_hashes_and_row_counts_of_sources_md(snapshot_root):
    table = re.findall(r"^\| `([^`]+)` \| ([0-9a-f]{64}) \| ([\d,]+)", (snapshot_root / "SOURCES.md").read_text(), re.M)
    assert len(table) == 7
    pinned = load_manifest()["files"]
    assert {path: (entry["sha256"], entry["rows"]) for path, entry in pinned.items()} == {
        path: (sha, int(rows.replace(",", ""))) for path, sha, rows in table
    }


def test_verify_snapshot_accepts_the_pinned_files(snapshot_root):
    assert verify_snapshot(snapshot_root) == {path: entry["sha256"] for path, entry in load_manifest()["files"].items()}


def test_a_tampered_file_is_refused_naming_it_and_both_hashes(snapshot_root, tmp_path):
    for relpath in load_manifest()["files"]:  # copyfile: the copies are writable, unlike the shared originals
        (tmp_path / "snap" / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(snapshot_root / relpath, tmp_path / "snap" / relpath)
    tampered = tmp_path / "snap" / ELASTIC_FILE
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    tampered.write_bytes(bytes(data))
    expected = load_manifest()["files"][ELASTIC_FILE]["sha256"]
    actual = sha256_file(tampered)
    for refuse in (lambda: verify_snapshot(tmp_path / "snap"),
                   lambda: fetch_property("elastic", tmp_path / "snap", tmp_path / "elastic.jsonl")):
        with pytest.raises(SnapshotIntegrityError) as info:
            refuse()
        assert ELASTIC_FILE in str(info.value) and expected in str(info.value) and actual in str(info.value)
    assert not (tmp_path / "elastic.jsonl").exists()
    # The untouched files of the same copy still pass.
    untouched = [path for path in load_manifest()["files"] if path != ELASTIC_FILE]
    assert set(verify_snapshot(tmp_path / "snap", files=untouched)) == set(untouched)


def test_a_missing_snapshot_says_where_it_should_be(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\.\./shared/datasets.*snapshot_root"):
        fetch_property("dielectric", tmp_path / "nowhere", tmp_path / "dielectric.jsonl")
    with pytest.raises(FileNotFoundError, match=f"has no {re.escape(PHONON_IDS_FILE)}.*snapshot_root"):
        verify_snapshot(tmp_path, files=[PHONON_IDS_FILE])


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_local_clone_made_anywhere_finds_the_snapshot_beside_its_origin(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    origin, snapshot = tmp_path / "work" / "repo", tmp_path / "work" / "shared" / "datasets"
    origin.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    _git("init", "-q", cwd=origin)
    (origin / "params.yaml").write_text("fetch: {}\n")
    _git("add", "params.yaml", cwd=origin)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one", cwd=origin)
    clone, clone_of_clone = tmp_path / "elsewhere" / "clone", tmp_path / "further" / "clone"
    _git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    _git("clone", "-q", str(clone), str(clone_of_clone), cwd=tmp_path)
    assert locate_root("../shared/datasets", origin).resolve() == snapshot
    assert locate_root("../shared/datasets", clone).resolve() == snapshot
    assert locate_root("../shared/datasets", clone_of_clone).resolve() == snapshot
    # Found nowhere: the checkout's own path, which the reader's error names; a network origin is not followed.
    assert locate_root("../elsewhere/datasets", clone) == clone.resolve() / "../elsewhere/datasets"
    _git("remote", "set-url", "origin", "https://example.invalid/repo.git", cwd=clone)
    assert locate_root("../shared/datasets", clone) == clone.resolve() / "../shared/datasets"
    # The environment variable wins over params.yaml and the origin.
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "mine"))
    assert locate_root("../shared/datasets", origin) == tmp_path / "mine"


# ------------------------------------------------------------------------------------ adapters, counts
@pytest.mark.parametrize("prop", sorted(EXPECTED_RECORDS))
def test_each_adapter_writes_every_row_as_a_schema_valid_record(raw, prop):
    report, out = raw[prop]
    records = read_raw(out)  # re-validates every record, and checks ids sorted and unique
    assert len(records) == report.records_written == EXPECTED_RECORDS[prop]
    assert {record["property"] for record in records} == {prop}
    assert report.unreadable_fields == {}  # the pinned snapshot has no unreadable field
    assert report.output_sha256 == sha256_file(out)
    assert report.inputs == {path: load_manifest()["files"][path]["sha256"] for path in report.inputs}
    if prop == "phonon":
        assert report.rows_read == 1605 and report.rows_excluded == 83
        assert [(e.reason, e.rows) for e in report.excluded] == [("not_materials_project_data", (1522, 1605))]
        assert set(report.inputs) == {PHONON_FILE, PHONON_IDS_FILE}
    elif prop == "elastic":  # three files, each counted on its own
        assert {name: (c.rows_read, c.records_written) for name, c in report.by_source.items()} == {
            ELASTIC_FILE: (1181, 1181), STRAINTENSORNET_FILE: (1151, 1151), ELATBOT_FILE: (500, 500)}
        assert report.to_dict()["by_source"][ELATBOT_FILE] == {"rows_read": 500, "records_written": 500,
                                                               "rows_excluded": 0}
        assert Counter(r["provenance"]["file"] for r in records) == {ELASTIC_FILE: 1181, STRAINTENSORNET_FILE: 1151,
                                                                     ELATBOT_FILE: 500}
    else:
        assert report.rows_read == report.records_written and report.excluded == ()


@pytest.mark.parametrize("prop", ["piezo", "phonon"])  # both code paths: a matminer table; two phonon files
def test_fetch_is_byte_identical_across_runs(raw, prop, snapshot_root, tmp_path):
    first, first_path = raw[prop]
    second = fetch_property(prop, snapshot_root, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == first_path.read_bytes()
    assert first.to_dict() | {"output": None} == second.to_dict() | {"output": None}


@pytest.mark.parametrize("prop", sorted(EXPECTED_RECORDS))
def test_every_record_matches_an_independent_parse_of_its_csv(raw, prop, snapshot_root):
    records = records_of(raw, prop)
    if prop == "phonon":
        frame = pd.read_csv(snapshot_root / PHONON_FILE, index_col=0).iloc[:1522]
        ids = pd.read_csv(snapshot_root / PHONON_IDS_FILE)
        for record, (_, row), (_, id_row) in zip(records, frame.iterrows(), ids.iterrows(), strict=True):
            assert record["values"]["dos"] == json.loads(row["phdos"])
            assert record["values"]["frequencies_cm"] == json.loads(row["phfreq"])
            assert record["structure"] == {"format": "ase-dict", "data": ast.literal_eval(row["structure"])}
            assert record["material_id"] == (None if pd.isna(id_row["material_id"]) else id_row["material_id"])
            assert record["provenance"]["material_id_recovery"]["match"] == id_row["match"]
        return
    path, columns = {
        "elastic": (ELASTIC_FILE, {"stiffness_voigt": "elastic_tensor", "stiffness_voigt_original":
                                   "elastic_tensor_original", "compliance_voigt": "compliance_tensor"}),
        "dielectric": ("matminer-0.4.1/dielectric_constant.csv", {"electronic": "e_electronic", "total": "e_total"}),
        "piezo": ("matminer-0.4.1/piezoelectric_tensor.csv", {"piezo_voigt": "piezoelectric_tensor"}),
    }[prop]
    records = [record for record in records if record["provenance"]["file"] == path]
    frame = read_snapshot_csv(snapshot_root / path)
    assert len(frame) == len(records)
    for record, (_, row) in zip(records, frame.iterrows()):
        assert {key: record["values"][key] for key in columns} == {
            key: json.loads(row[column]) for key, column in columns.items()}
        assert (record["material_id"], record["formula"]) == (row["material_id"], row["formula"])
        assert record["structure"] == {"format": "poscar", "data": row["poscar"]}
        assert record["reported"]["space_group"] == row["space_group"]
        assert record["provenance"]["file"] == path


def test_known_rows_spot_check(raw):
    """Values read off the CSV text by eye, so a shared misreading by both parsers would still fail."""
    def row(prop, number):  # of the spec's first snapshot file (elastic has three)
        relpath = properties.get(prop).snapshot.file
        return next(record for record in records_of(raw, prop)
                    if record["provenance"]["row"] == number and record["provenance"]["file"] == relpath)

    elastic = row("elastic", 0)
    assert (elastic["record_id"], elastic["material_id"], elastic["formula"]) == (
        "snapshot:elastic:row-00000", "mp-10003", "Nb4CoSi")
    assert elastic["values"]["stiffness_voigt"][0][:3] == [311.33514638650246, 144.45092552856926, 126.17558149507941]
    assert elastic["values"]["compliance_voigt"][0][0] == 0.004385293093993
    assert elastic["reported"]["K_VRH"] == 194.268884359 and elastic["reported"]["space_group"] == 124
    assert elastic["structure"]["data"].startswith("Nb8 Co2 Si2\n1.0\n6.221780 0.000000 0.000000\n")
    assert elastic["tensor_frames"] == {"stiffness_voigt": "ieee", "stiffness_voigt_original": "structure",
                                        "compliance_voigt": "ieee"}

    dielectric = row("dielectric", 0)  # this file has an unnamed index column before 'idx'
    assert (dielectric["material_id"], dielectric["formula"]) == ("mp-441", "Rb2Te")
    assert dielectric["values"]["electronic"][0] == [3.44115795, -3.097e-05, -6.276e-05]
    assert dielectric["values"]["total"][2][2] == 6.23520681
    assert {key: dielectric["reported"][key] for key in ("band_gap", "n", "poly_electronic", "pot_ferroelectric",
                                                         "point_group")} == {
        "band_gap": 1.88, "n": 1.86, "poly_electronic": 3.44, "pot_ferroelectric": False, "point_group": "m-3m"}

    piezo = row("piezo", 0)
    assert (piezo["material_id"], piezo["formula"]) == ("mp-22925", "AgI")
    assert piezo["values"]["piezo_voigt"] == [[0.0, 0.0, 0.0, -0.15842, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, -0.15842, 0.0],
                                              [0.0, 0.0, 0.0, 0.0, 0.0, -0.15842]]
    assert piezo["reported"]["eij_max"] == 0.091464 and piezo["reported"]["v_max"] == [1.0, 1.0, 1.0]
    assert (piezo["reported"]["space_group"], piezo["reported"]["nsites"]) == (216, 2)  # '216.0' and '2.0' in the CSV

    phonon = row("phonon", 0)
    assert phonon["material_id"] == "mp-1000" and phonon["structure"]["data"]["numbers"] == [56, 52]
    assert phonon["values"]["dos"][:2] == [0.0, 0.1603814665137704]
    assert phonon["values"]["frequencies_cm"] == [20.0 * i for i in range(51)]
    assert row("phonon", 71)["provenance"]["material_id_recovery"]["match"] == "row_order"
    unmatched = row("phonon", 1521)  # Mg3Bi2: no id recovered, still its own record
    assert unmatched["material_id"] is None and unmatched["record_id"] == "snapshot:phonon:row-01521"
    assert unmatched["provenance"]["material_id_recovery"]["match"] == "none"
    assert unmatched["structure"]["data"]["numbers"] == [12, 12, 12, 83, 83]


# --------------------------------------------------------------------------------- malformed source rows
def _csv_text(header: list[str], rows: list[list[str]], ref: str | None) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return (ref + "\n" if ref else "") + buffer.getvalue()


def _snapshot_of(tmp_path: Path, files: dict[str, tuple[str, int]], excluded: dict | None = None):
    """A snapshot root holding `files` (path -> (text, rows)) and a manifest pinning them."""
    manifest = {"files": {}}
    for relpath, (text, rows) in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_text(text, encoding="utf-8")
        manifest["files"][relpath] = {"sha256": sha256_file(tmp_path / relpath), "rows": rows}
    if excluded:
        manifest["files"][PHONON_FILE]["excluded_rows"] = excluded
    return tmp_path, manifest


def _first_lines(snapshot_root: Path, n: int) -> dict[str, tuple[str, int]]:
    """The first n lines of each JSON-lines elastic file, for a snapshot that needs every elastic source."""
    return {relpath: ("".join((snapshot_root / relpath).read_text().splitlines(keepends=True)[:n]), n)
            for relpath in (STRAINTENSORNET_FILE, ELATBOT_FILE)}


def test_malformed_elastic_fields_are_kept_as_unreadable_markers(snapshot_root, tmp_path):
    with open(snapshot_root / ELASTIC_FILE, newline="", encoding="utf-8") as handle:
        ref = handle.readline().rstrip("\n")
        reader = csv.reader(handle)
        header = next(reader)
        rows = [next(reader) for _ in range(5)]
    col = {name: i for i, name in enumerate(header)}
    rows[1][col["elastic_tensor"]] = "[[1.0, 2.0], [3.0"                      # does not parse
    rows[2][col["elastic_tensor"]] = json.dumps([[1.0] * 6] * 5)              # wrong shape
    rows[2][col["K_VRH"]] = "abc"
    rows[2][col["space_group"]] = "12.5"
    rows[3][col["compliance_tensor"]] = json.dumps([[float("nan")] * 6] * 6)  # NaN
    rows[3][col["elastic_tensor_original"]] = ""                              # absent: null, not unreadable
    rows[4] = rows[4][:-1]                                                    # cannot be aligned with the header
    root, manifest = _snapshot_of(tmp_path / "snap", {ELASTIC_FILE: (_csv_text(header, rows, ref), 5),
                                                      **_first_lines(snapshot_root, 2)})

    report = fetch_property("elastic", root, tmp_path / "elastic.jsonl", manifest=manifest)
    records = [r for r in read_raw(tmp_path / "elastic.jsonl") if r["provenance"]["file"] == ELASTIC_FILE]
    assert report.records_written == 5 + 2 + 2
    values = [record["values"] for record in records]
    assert values[1]["stiffness_voigt"]["unparsed"] == "[[1.0, 2.0], [3.0"
    assert values[1]["stiffness_voigt"]["error"].startswith("elastic_tensor: not JSON")
    assert values[2]["stiffness_voigt"]["error"] == "expected a 6x6 array: elastic_tensor has 5 items, not 6"
    assert records[2]["reported"]["K_VRH"] == {"unparsed": "abc", "error": "K_VRH: not a number"}
    assert "not an integer" in records[2]["reported"]["space_group"]["error"]
    assert values[3]["compliance_voigt"]["error"] == "compliance_tensor[0][0] is nan, not finite"
    assert values[3]["stiffness_voigt_original"] is None
    assert isinstance(values[3]["stiffness_voigt"], list)
    assert records[4]["material_id"] is None
    assert all("row has 19 fields where the header implies 20" in value["error"] for value in values[4].values())
    assert unreadable_fields(records[0]) == [] and values[0]["stiffness_voigt"][0][0] == 311.33514638650246
    assert report.unreadable_fields["values.stiffness_voigt"] == 3  # rows 1, 2 and the misaligned row 4
    assert report.unreadable_fields["values.compliance_voigt"] == 2
    assert report.unreadable_fields["structure.data"] == 1


def test_malformed_phonon_rows_and_a_missing_id_are_kept(snapshot_root, tmp_path):
    with open(snapshot_root / PHONON_FILE, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [next(reader) for _ in range(5)]
    cell = "[[1, 0, 0], [0, 1, 0], [0, 0, 1]]"
    rows[1][1] = f"{{'numbers': [1], 'positions': [[0.0, 0.0]], 'cell': {cell}, 'pbc': [True, True, True]}}"
    rows[2][3] = "[0. 1. 0.5]"  # the numpy repr of the excluded rows: not JSON
    rows[3][1] = f"{{'numbers': array([6]), 'positions': [[0.0, 0.0, 0.0]], 'cell': {cell}, 'pbc': [True] * 3}}"
    ids = "row,material_id,match\n0,mp-1000,structure\n1,mp-2,row_order\n"  # no entry for rows 2 and 3
    root, manifest = _snapshot_of(
        tmp_path / "snap", {PHONON_FILE: (_csv_text(header, rows, None), 4), PHONON_IDS_FILE: (ids, 2)},
        excluded={"start": 4, "stop": 5, "reason": "test_exclusion", "description": "the last row"},
    )
    report = fetch_property("phonon", root, tmp_path / "phonon.jsonl", manifest=manifest)
    records = read_raw(tmp_path / "phonon.jsonl")
    assert (report.rows_read, report.records_written, report.rows_excluded) == (5, 4, 1)
    assert records[1]["structure"]["data"]["error"] == (
        "structure: expected a 1x3 array: positions[0] has 2 items, not 3")
    assert records[1]["values"]["dos"] == json.loads(rows[1][3])  # the rest of the row is kept
    assert records[2]["values"]["dos"]["unparsed"] == "[0. 1. 0.5]"
    assert records[3]["structure"]["data"]["unparsed"] == rows[3][1]  # a call is not a literal: never evaluated
    assert records[2]["material_id"] is None and "material_id_recovery" not in records[2]["provenance"]
    assert report.unreadable_fields == {"structure.data": 2, "values.dos": 1}


# ----------------------------------------------------------------------------------------------- schema
def test_schema_names_exactly_the_known_properties():
    assert set(raw_record_schema()["properties"]["property"]["enum"]) == set(properties.PROPERTIES)


def test_schema_refuses_an_adapter_bug_naming_the_field(raw):
    record = records_of(raw, "piezo")[0]
    validate_raw_record(record)
    broken = json.loads(json.dumps(record))
    broken["values"]["piezo_voigt"] = broken["values"]["piezo_voigt"][:2]  # a 2x6 tensor, not marked unreadable
    with pytest.raises(RawRecordError, match=r"snapshot:piezo:row-00000.*values/piezo_voigt"):
        validate_raw_record(broken)
    for key, value in (("record_id", "snapshot:piezo:row-0"), ("record_id", "snapshot:elastic:row-00000"),
                       ("tensor_frames", {"piezo_voigt": "lab"})):
        with pytest.raises(RawRecordError, match=key):
            validate_raw_record(record | {key: value})


# ------------------------------------------------------------------------------------------------ stage
def _stage():
    spec = importlib.util.spec_from_file_location("fetch_stage", REPO / "stages" / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_writes_records_and_report(raw, snapshot_root, tmp_path, monkeypatch, capsys):
    write_params(tmp_path / "params.yaml", fetch={"source": "snapshot", "snapshot_root": str(snapshot_root)})
    monkeypatch.chdir(tmp_path)
    assert _stage().main(["piezo"]) == 0
    report = json.loads((tmp_path / "data/reports/piezo-fetch.json").read_text())
    assert (report["records_written"], report["rows_read"], report["source"]) == (941, 941, "snapshot")
    assert report["output_sha256"] == sha256_file(tmp_path / "data/raw/piezo.jsonl") == raw["piezo"][0].output_sha256
    assert re.search(r"fetch piezo: 941 records from snapshot .* records/s\)", capsys.readouterr().out)


def test_stage_errors_are_one_clear_line(tmp_path, monkeypatch, capsys):
    write_params(tmp_path / "params.yaml", fetch={"source": "snapshot", "mp_api": {"endpoint": "http://127.0.0.1:9/"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    stage = _stage()
    assert stage.main(["dielectric"]) == 1  # the snapshot_root ../shared/datasets is not beside tmp_path
    assert "../shared/datasets" in capsys.readouterr().err
    write_params(tmp_path / "params.yaml", fetch={"source": "mp-api"})
    monkeypatch.delenv("MP_API_KEY", raising=False)
    assert stage.main(["dielectric"]) == 1
    assert "MP_API_KEY is not set" in capsys.readouterr().err
    write_params(tmp_path / "params.yaml", fetch={"source": "ftp"})
    assert stage.main(["dielectric"]) == 1
    assert "fetch.source is 'ftp'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_stage_dispatches_to_the_mp_api_source_with_params_options(tmp_path, monkeypatch):
    """The mp-api branch: key from the environment, options from params, against the loopback double."""
    from tests.fakes.mp_api import loopback_only, serve

    key = "0123456789abcdef0123456789abcdef"
    monkeypatch.setattr(socket.socket, "connect", loopback_only(socket.socket.connect))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MP_API_KEY", key)
    stage = _stage()
    with serve(key) as server:
        write_params(tmp_path / "params.yaml", fetch={"source": "mp-api", "mp_api": {
            "endpoint": server.endpoint, "chunk_size": 10, "max_retries": 1, "backoff_s": 0.01, "progress": False}})
        assert stage.main(["piezo"]) == 0
        report = json.loads((tmp_path / "data/reports/piezo-fetch.json").read_text())
        assert report["source"] == "mp-api" and report["records_written"] == len(read_raw("data/raw/piezo.jsonl")) > 0
        write_params(tmp_path / "params.yaml", fetch={"source": "mp-api", "mp_api": {"chunk": 10}})
        assert stage.main(["piezo"]) == 1  # an unknown option is named, not a TypeError traceback
