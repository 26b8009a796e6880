"""The build stage: zoo.data.datasets, zoo.data.cards and stages/build.py (the splits: tests/test_splits.py).

Clean records are made in tests/dataset_builds.py in the clean stage's format: real structures
(tests/data/structures), symmetry from zoo.core.symmetry, tensors that obey Neumann's principle (group averages of
random tensors). The real validate stage (zoo.data.validation) turns them into the build's inputs. The built repositories are then checked through
``datasets.load_dataset``, e3nn, pymatgen and the validate stage's own metrics, as a user would.
``test_pipeline_builds`` runs the same checks on the pipeline's outputs under data/hub/datasets where they exist.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pymatgen.core import Structure

from tests.dataset_builds import (
    REPO,
    SALT,
    SALTED,
    SIZES,
    build,
    card_parts,
    check_repository,
    clean_rows,
    read_rows,
    validate_into,
    with_bad_records,
)
from tests.fakes.hub import Fault
from tests.params_file import params_mapping, write_params
from tests.test_splits import assert_balanced
from zoo import datasets as user_datasets
from zoo import properties
from zoo.core import derived, phonon_derived
from zoo.core.io import sha256_file
from zoo.data import dataset_rows, splits
from zoo.data import dataset_schema as schema
from zoo.data import datasets as zd


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[zd.BuildResult, dict]]:
    """One small build per property (with two quarantined records each), shared by the tests that only read it:
    prop -> (result, validation report)."""
    root = tmp_path_factory.mktemp("builds")
    out = {}
    for prop in properties.PROPERTIES:
        clean = with_bad_records(prop, clean_rows(prop, SIZES[prop]))
        accepted, report_path, report = validate_into(root / prop / "inputs", prop, clean)
        result = zd.build_dataset(prop, accepted, report_path, root / prop / "hub", version="1.2.3", **SALTED)
        out[prop] = (result, report)
    return out


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("hf-cache"))


# ------------------------------------------------------------------------------------------ built datasets
@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_built_repository_loads_with_its_features_and_round_trips(built, hf_cache, prop):
    result, report = built[prop]
    check_repository(result.path, prop, report, hf_cache)


@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_rows_keep_the_accepted_values(built, prop):
    """Each accepted record is one row holding its values (tensors symmetrised); quarantined ones are absent."""
    result, report = built[prop]
    clean = {r["record_id"]: r for r in clean_rows(prop, SIZES[prop])}
    rows = read_rows(result.path)
    assert sorted(r["record_id"] for r in rows) == sorted(clean) and report["n_quarantined"] == 2
    for row in rows:
        source = clean[row["record_id"]]
        structure = Structure.from_dict(json.loads(source["structure_json"]))
        np.testing.assert_array_equal(row["lattice"], structure.lattice.matrix)
        np.testing.assert_array_equal(row["frac_coords"], structure.frac_coords)
        assert row["species"] == [str(site.specie) for site in structure]
        assert (row["crystal_system"], row["space_group"], row["point_group"]) == (
            source["crystal_system"], source["space_group_number"], source["point_group"])
        assert (row["source_row"], row["source_sha256"]) == (int(row["record_id"][-5:]), "ab" * 32)
        if prop == "elastic":
            np.testing.assert_allclose(row["stiffness_voigt"], source["stiffness_voigt"], rtol=0, atol=1e-12)
        elif prop == "dielectric":
            for part in properties.DIELECTRIC.tensor_parts:
                np.testing.assert_allclose(row[f"eps_{part}_cartesian"], source[part], rtol=0, atol=1e-14)
        elif prop == "piezo":
            assert row["piezo_voigt"] == source["piezo_voigt"]
        else:
            assert row["dos"] == source["dos"]


def test_phonon_record_without_material_id_is_keyed_by_record_id(built):
    unknown = [r for r in read_rows(built["phonon"][0].path) if r["material_id"] is None]
    assert [r["record_id"] for r in unknown] == ["test:phonon:row-00000"]
    assert zd.split_key(None, "test:phonon:row-00000") == "test:phonon:row-00000"


def test_derived_and_validation_columns(built):
    row = read_rows(built["elastic"][0].path)[0]
    expected = derived.elastic_properties(row["stiffness_voigt"])
    assert {k: row[k] for k in expected} == expected  # min_eigenvalue: validate's column, the same number
    row = read_rows(built["phonon"][0].path)[0]
    structure = zd.row_structure(row)
    expected = phonon_derived.phonon_properties(row["frequencies_cm"], row["dos"], len(structure),
                                         structure.composition.weight)
    assert {k: row[k] for k in expected} == expected
    assert row["dos_min"] == min(row["dos"])
    row = read_rows(built["dielectric"][0].path)[0]
    assert row["ionic_min_eig"] == pytest.approx(row["eigenvalues_ionic"][0], abs=1e-12)


def test_tensor_facts_are_in_the_parquet_metadata(built):
    arrow = pq.read_schema(built["piezo"][0].path / schema.parquet_path("test"))
    facts = json.loads(arrow.metadata[schema.ARROW_METADATA_KEY])
    assert facts["tensor_columns"] == schema.tensor_column_map("piezo")
    field = arrow.field("piezo_irreps").metadata
    assert field[b"irreps"] == b"2x1o+1x2o+1x3o" and field[b"formula"] == b"ijk=ikj" and field[b"units"] == b"C/m^2"


def test_rebuild_is_byte_identical_and_one_changed_record_changes_the_fingerprint(tmp_path):
    clean = clean_rows("dielectric", 30)
    first = build(tmp_path / "a", "dielectric", clean)
    again = build(tmp_path / "b", "dielectric", clean)
    assert first.fingerprint == again.fingerprint
    for name in splits.SPLITS:
        assert (first.path / schema.parquet_path(name)).read_bytes() == (again.path / schema.parquet_path(name)).read_bytes()
    assert (first.path / "README.md").read_text() == (again.path / "README.md").read_text()
    changed = [dict(row) for row in clean]
    changed[7]["ionic"] = (np.asarray(changed[7]["ionic"]) * 1.001).tolist()
    changed[7]["total"] = (np.asarray(changed[7]["electronic"]) + np.asarray(changed[7]["ionic"])).tolist()
    assert build(tmp_path / "c", "dielectric", changed).fingerprint != first.fingerprint
    relabelled = build(tmp_path / "d", "dielectric", clean, version="2.0.0")
    assert relabelled.fingerprint == first.fingerprint  # the version is a label, not content


def test_worker_processes_compute_the_same_derived_values():
    rows = clean_rows("dielectric", 24)
    tasks = [("dielectric", r["record_id"], (r["electronic"], r["ionic"], r["total"])) for r in rows]
    serial = dataset_rows.compute_derived(tasks, workers=1)
    assert dataset_rows.compute_derived(tasks, workers=2, pool_start_s=0.0) == serial  # forced onto the pool
    assert serial[5] == derived.dielectric_properties(rows[5]["electronic"], rows[5]["ionic"], rows[5]["total"])


def test_fingerprint_is_recomputable_from_the_parquet_files(built):
    for prop, (result, _) in built.items():
        tables = {name: pq.read_table(result.path / schema.parquet_path(name)) for name in splits.SPLITS}
        assert schema.content_fingerprint(result.name, schema.dataset_features(prop), tables) == result.fingerprint
        info = json.loads((result.path / schema.VERSION_FILE).read_text())
        assert info["fingerprint"] == result.fingerprint and info["version"] == "1.2.3"
        assert info["files_sha256"] == {schema.parquet_path(n): sha256_file(result.path / schema.parquet_path(n))
                                        for n in splits.SPLITS}


def test_rebuild_pinned_to_the_previous_release_moves_no_record(tmp_path):
    clean = clean_rows("phonon", 30)
    first = build(tmp_path / "a", "phonon", clean)
    more = clean_rows("phonon", 40, seed=3)[30:]
    grown = build(tmp_path / "b", "phonon", clean + more, pinned_from=first.path)
    before = zd.read_split_assignments(first.path)
    after = zd.read_split_assignments(grown.path)
    assert {key: after[key] for key in before} == before and len(after) == 40
    _, body = card_parts(grown.path)
    assert "kept the split of every record of the previous release" in body


# ---------------------------------------------------------------------------------------------------- card
@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_card_states_counts_quarantine_conventions_version_and_citations(built, prop):
    from datasets.info import DatasetInfo

    spec = properties.get(prop)
    result, report = built[prop]
    header, body = card_parts(result.path)
    rows = read_rows(result.path)
    counts = collections.Counter(row["split"] for row in rows)
    composition = splits.composition([r["crystal_system"] for r in rows], [r["split"] for r in rows])

    # YAML header: what the Hub and `datasets` read.
    assert header["license"] == "cc-by-4.0"
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": name, "path": f"data/{name}-*.parquet"} for name in splits.SPLITS]}]
    assert DatasetInfo._from_yaml_dict(header["dataset_info"]).features == schema.dataset_features(prop)
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == counts
    assert header["dataset_version"] == "1.2.3" and header["content_fingerprint"] == result.fingerprint
    assert header["tensor_columns"] == schema.tensor_column_map(prop)
    assert set(header["tags"]) >= {"materials-science", "irreps", "e3nn", prop}

    # Markdown body: counts per split and crystal system.
    total = len(rows)
    assert (f"| rows | {total} (train {counts['train']}, validation {counts['validation']}, "
            f"test {counts['test']}) |") in body
    for system, row in composition.items():
        size = sum(row.values())
        line = (f"| {system} | {size} | {100 * size / total:.2f} | {row['train']} | {row['validation']} | "
                f"{row['test']} |")
        assert line in body, line
    # Quarantine counts and reasons, as the validate report has them.
    assert f"Of {report['n_raw']} source records, {total} were accepted and {report['n_quarantined']}" in body
    assert report["reasons"] == {"duplicate_identical": 1, ("dos_negative" if prop == "phonon" else
                                 "piezo_nonzero_centrosymmetric" if prop == "piezo" else "neumann_violation"): 1}
    for reason, count in report["reasons"].items():
        assert f"| {reason} | {count} |" in body
    # Conventions: frame (and what clean did per row), units, Voigt order and factors, irreps basis.
    assert ("Cartesian frame of its row's `lattice` matrix" if spec.is_tensor else
            "The DOS does not depend on orientation") in body
    for (frame, action), n in collections.Counter((r["original_frame"], r["frame_action"]) for r in rows).items():
        assert f"| {frame} | {action} | {n} |" in body
    if spec.is_tensor:  # what settled each frame, and how many were quarantined because nothing did
        assert collections.Counter(r["frame_evidence"] for r in rows) == {"unique": total}
        assert f"| unique | {total} |" in body
        assert "0 further records were quarantined `frame_ambiguous`" in body
    assert f"**Units.** {spec.units}." in body
    if spec.is_tensor:
        assert "**Voigt order** 11, 22, 33, 23, 13, 12" in body
        assert "Voigt factors: none (f = 1" in body
        assert f'e3nn `CartesianTensor("{spec.formula}")`, irreps `{spec.irreps}`' in body
        assert f"is below the tolerance {report['neumann_tolerance']} for every row" in body
    else:
        assert f"its own irreps vector, `{spec.irreps}`" in body
    # Version, fingerprint and citations.
    assert "Version `1.2.3`" in body and f"Content fingerprint `{result.fingerprint}`" in body
    for citation in spec.citations:
        assert citation.bibtex in body
    assert "doi     = {10.1063/1.4812323}" in body  # the Materials Project, in every card


def test_card_glossary_lists_every_column_with_its_type(built):
    _, body = card_parts(built["elastic"][0].path)
    for column in schema.dataset_columns("elastic"):
        assert f"| `{column.name}` | " in body
    assert "| `stiffness_cartesian` | float64[3][3][3][3] | GPa |" in body
    assert "| `stiffness_irreps` | float64[21] | GPa |" in body


# ------------------------------------------------------------------------------------------ load & helpers
def test_load_finds_the_local_build_first(built, hf_cache):
    result, _ = built["piezo"]
    for name in ("piezo", "mp-piezo-irreps", "some-org/mp-piezo-irreps"):
        loaded = user_datasets.load(name, local_root=result.path.parent, cache_dir=hf_cache)
        assert {k: v.num_rows for k, v in loaded.items()} == result.counts


@pytest.fixture
def loopback_hub():
    """The loopback Hub double (tests/fakes/hub.py), with every non-loopback connection refused."""
    from tests.fakes.hub import guarded_connect, guarded_getaddrinfo, serve

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect(socket.socket.connect))
        patch.setattr(socket, "getaddrinfo", guarded_getaddrinfo(socket.getaddrinfo))
        with serve(token="hf_test_write_token_0123456789") as double:
            yield double


def test_load_downloads_from_the_hub_when_there_is_no_local_build(built, loopback_hub, tmp_path):
    from zoo.release import hub

    result, _ = built["piezo"]
    repo_id = "zoo-test/mp-piezo-irreps"
    hub.publish_folder(result.path, repo_id, "dataset", "1.2.3", endpoint=loopback_hub.endpoint,
                       token=loopback_hub.token)
    options = {"local_root": tmp_path / "no-builds", "endpoint": loopback_hub.endpoint, "cache_dir": tmp_path / "c"}
    loaded = user_datasets.load(repo_id, version="1.2.3", **options)
    local = user_datasets.load("piezo", local_root=result.path.parent, cache_dir=tmp_path / "local-cache")
    assert {name: loaded[name].to_list() for name in loaded} == {name: local[name].to_list() for name in local}
    assert loaded["train"].features == schema.dataset_features("piezo")

    # A Parquet file that changed on the way is refused against dataset_version.json's sha256.
    train = schema.parquet_path("train")
    loopback_hub.schedule_download(train, Fault.corrupt_byte())
    with pytest.raises(hub.ChecksumMismatchError, match=train):
        user_datasets.load(repo_id, version="1.2.3", **{**options, "cache_dir": tmp_path / "fresh"})
    with pytest.raises(hub.HubNotFoundError):
        user_datasets.load(repo_id, version="9.9.9", **options)


def test_load_without_a_local_build_or_hub_name_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="org/mp-elastic-irreps"):
        user_datasets.load("elastic", local_root=tmp_path)
    with pytest.raises(ValueError, match="name must be"):
        user_datasets.load("", local_root=tmp_path)


def test_row_helpers_give_pymatgen_objects(built):
    from pymatgen.analysis.elasticity import ElasticTensor
    from pymatgen.analysis.piezo import PiezoTensor
    from pymatgen.phonon.dos import PhononDos

    rows = {prop: read_rows(result.path)[3] for prop, (result, _) in built.items()}
    elastic = zd.row_tensor(rows["elastic"])
    assert isinstance(elastic, ElasticTensor)
    np.testing.assert_allclose(np.asarray(elastic), rows["elastic"]["stiffness_cartesian"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(elastic.voigt, rows["elastic"]["stiffness_voigt"], rtol=0, atol=1e-12)
    assert elastic.k_vrh == pytest.approx(rows["elastic"]["k_vrh"], rel=1e-12)
    piezo = zd.row_tensor(rows["piezo"])
    assert isinstance(piezo, PiezoTensor)
    np.testing.assert_allclose(np.asarray(piezo), rows["piezo"]["piezo_cartesian"], rtol=0, atol=1e-15)
    ionic = zd.row_tensor(rows["dielectric"], part="ionic")
    np.testing.assert_array_equal(np.asarray(ionic), rows["dielectric"]["eps_ionic_cartesian"])
    dos = zd.row_tensor(rows["phonon"])
    assert isinstance(dos, PhononDos)
    assert np.trapezoid(dos.densities, dos.frequencies) == pytest.approx(3 * rows["phonon"]["n_sites"])
    assert dos.frequencies[-1] == pytest.approx(1000 / 33.35641, rel=1e-6)
    structure = zd.row_structure(rows["elastic"])
    np.testing.assert_allclose(structure.cart_coords, rows["elastic"]["cart_coords"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="part must be one of"):
        zd.row_tensor(rows["dielectric"], part="static")
    with pytest.raises(ValueError, match="only for dielectric"):
        zd.row_tensor(rows["elastic"], part="ionic")
    with pytest.raises(ValueError, match="none of the value columns"):
        zd.row_tensor({"material_id": "mp-1"})


# ------------------------------------------------------------------------------------------------ bad input
def test_build_refuses_inconsistent_inputs(tmp_path):
    accepted, report_path, report = validate_into(tmp_path / "in", "phonon", clean_rows("phonon", 12))
    out = tmp_path / "hub"
    with pytest.raises(ValueError, match="semantic version"):
        zd.build_dataset("phonon", accepted, report_path, out, version="1.0", **SALTED)
    with pytest.raises(ValueError, match="would be empty"):  # 12 records over 7 crystal systems
        zd.build_dataset("phonon", accepted, report_path, out, version="1.0.0", **SALTED)
    report_path.write_text(json.dumps({**report, "n_accepted": 11, "n_raw": 11}))
    with pytest.raises(ValueError, match="stale"):
        zd.build_dataset("phonon", accepted, report_path, out, version="1.0.0", **SALTED)
    pq.write_table(pq.read_table(accepted).drop_columns(["structure_json"]), accepted)
    with pytest.raises(ValueError, match=r"lacks the columns \['structure_json'\]"):
        zd.build_dataset("phonon", accepted, report_path, out, version="1.0.0", **SALTED)
    with pytest.raises(FileNotFoundError, match="run the validate stage"):
        zd.build_dataset("phonon", tmp_path / "missing.parquet", report_path, out, version="1.0.0", **SALTED)
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_build_names_the_record_with_an_asymmetric_tensor(tmp_path):
    accepted, report, _ = validate_into(tmp_path, "elastic", clean_rows("elastic", 2))
    table = pq.read_table(accepted)
    voigt = table.column("stiffness_voigt").to_pylist()
    voigt[1][0][1] += 1e-3 * np.abs(voigt[1]).max()  # as if validate had let an asymmetric tensor through
    table = table.set_column(table.column_names.index("stiffness_voigt"), "stiffness_voigt", pa.array(voigt))
    pq.write_table(table, accepted)
    with pytest.raises(ValueError, match=r"stiffness_voigt.*test:elastic:row-00001.*not symmetric"):
        zd.build_dataset("elastic", accepted, report, tmp_path / "hub", version="1.0.0", **SALTED)


def test_build_refuses_records_above_the_neumann_tolerance(tmp_path):
    accepted, report_path, report = validate_into(tmp_path, "piezo", clean_rows("piezo", 3))
    report_path.write_text(json.dumps({**report, "neumann_tolerance": 0.0}))
    residuals = pq.read_table(accepted).column("neumann_residual").to_pylist()
    assert max(residuals) > 0.0  # group averages are exact only to rounding
    with pytest.raises(ValueError, match="above the validate tolerance 0.0"):
        zd.build_dataset("piezo", accepted, report_path, tmp_path / "hub", version="1.0.0", **SALTED)


# ---------------------------------------------------------------------------------------------------- stage
def _stage():
    spec = importlib.util.spec_from_file_location("build_stage", REPO / "stages" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_builds_from_the_validate_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    accepted, report, _ = validate_into(tmp_path / "data" / "validated", "phonon", clean_rows("phonon", 30))
    (tmp_path / "data" / "clean").mkdir()
    (tmp_path / "data" / "reports").mkdir()
    accepted.rename(tmp_path / "data" / "clean" / "phonon.accepted.parquet")
    report.rename(tmp_path / "data" / "reports" / "phonon-validation.json")
    params = {"build": {"dataset_version": "1.0.0", "split_salt": SALT,
                        "split_fractions": {"train": 0.8, "validation": 0.1, "test": 0.1},
                        "pinned_splits_from": None, "workers": 1}}
    write_params(tmp_path / "params.yaml", **params)
    stage = _stage()
    assert stage.main(["phonon"]) == 0
    out = capsys.readouterr().out
    assert "build phonon: 30 rows" in out and "fingerprint sha256:" in out
    header, _ = card_parts(tmp_path / "data" / "hub" / "datasets" / "mp-phonon-irreps")
    assert header["dataset_version"] == "1.0.0"

    for bad, message in (({"workers": 0}, "build.workers"), ({"dataset_version": "v1"}, "semantic version"),
                         ({"split_salt": None, "workers": 1}, "salt must be a non-empty string"),
                         ({"shuffle": True}, "unknown key(s) ['shuffle']")):
        write_params(tmp_path / "params.yaml", build={**params["build"], **bad})
        assert stage.main(["phonon"]) == 1
        assert message in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params_mapping(), "build": {"dataset_version": "1.0.0"}}))
    assert stage.main(["phonon"]) == 1
    missing = "missing key(s) ['pinned_splits_from', 'split_fractions', 'split_salt', 'workers']"
    assert missing in capsys.readouterr().err


# ----------------------------------------------------------------------------------- the pipeline's outputs
@pytest.mark.slow
@pytest.mark.parametrize("prop", list(properties.PROPERTIES))
def test_pipeline_builds(prop, hf_cache):
    """The acceptance checks on data/hub/datasets as `dvc repro` left it: every row round-trips and obeys
    Neumann's principle, splits are balanced within 2 points, the fingerprint matches the files."""
    folder = REPO / zd.HUB_DATASETS_DIR / properties.get(prop).dataset_name
    report_path = REPO / "data" / "reports" / f"{prop}-validation.json"
    if not (folder / "README.md").is_file() or not report_path.is_file():
        pytest.skip(f"{folder} is not built (run `dvc repro build@{prop}`)")
    report = json.loads(report_path.read_text())
    check_repository(folder, prop, report, hf_cache)
    header, _ = card_parts(folder)
    tables = {name: pq.read_table(folder / schema.parquet_path(name)) for name in splits.ALL_SPLITS
              if (folder / schema.parquet_path(name)).is_file()}
    assert schema.content_fingerprint(folder.name, schema.dataset_features(prop), tables) == header["content_fingerprint"]
    rows = read_rows(folder)
    assert_balanced([r["crystal_system"] for r in rows], [r["split"] for r in rows])
