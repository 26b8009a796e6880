"""`zoo audit` (zoo.release.audit and the `audit` command) on a small DVC project made here.

The project runs the real build and train stages through `dvc repro` on 20 synthetic elastic records (made and
validated with tests/dataset_builds.py's helpers; the "raw" input of this project is the validate stage's output),
a 1-epoch tiny model; then the real evaluate and publish code (in this process) put version 1.0.0 into the project's
local store with its card. Each test audits that, or a copy of the project in which one thing was changed, and
checks that the audit passes, or fails naming what differs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pymatgen.core import Structure

from tests import dataset_builds
from tests.params_file import PARAMS as PROJECT_PARAMS
from tests.params_file import SYMMETRY, train_settings, write_params
from tests.test_training import TINY_MODEL
from tests.test_zoo_load import NAME, registry_file, rehash
from zoo import cli, properties
from zoo.core.io import canonical_json
from zoo.data import dataset_schema as schema
from zoo.nn import evaluation, training
from zoo.nn import pipeline as nn_pipeline
from zoo.release import audit, lineage, model_card, registry
from zoo.release import publishing as publish

REPO = Path(__file__).resolve().parent.parent
GBM = PROJECT_PARAMS.evaluate.composition_gbm
VERSION = "1.0.0"
N_RECORDS = 20
DATASET = "mp-elastic-irreps"
PROFILE = train_settings(max_epochs=1, batch_size=8, learning_rate=0.01, seed=0, accelerator="cpu", threads=1,
                         deterministic=True, progress_bar=False, loss="mse", model=TINY_MODEL).as_dict()
# The synthetic records have no previous release to keep the splits of (the checkout pins elastic's 1.0.0 splits).
PARAMS = {"build": {"dataset_version": "1.0.0", "split_salt": dataset_builds.SALT, "pinned_splits_from": None,
                    "workers": 1},
          "train": {"profile": "test", "workers": 1, "profiles": {"test": PROFILE}}}
# The build and train stages of the project's dvc.yaml, run by the project's own scripts.
DVC_YAML = {"stages": {
    "build": {"foreach": ["elastic"], "do": {
        "cmd": f"python {REPO / 'stages' / 'build.py'} ${{item}}",
        "deps": ["data/clean/${item}.accepted.parquet", "data/reports/${item}-validation.json"],
        "params": ["build"], "outs": ["data/hub/datasets/mp-${item}-irreps"]}},
    "train": {"foreach": ["elastic"], "do": {
        "cmd": f"python {REPO / 'stages' / 'train.py'} ${{item}}",
        "deps": ["data/hub/datasets/mp-${item}-irreps"], "params": ["train"], "outs": ["data/models/matten-${item}"]}},
}}


def write_inputs(project: Path, rows: list[dict]) -> None:
    """The validate stage's outputs for `rows` (clean-stage records), where the build stage reads them."""
    work = project / "work"
    accepted, report, _ = dataset_builds.validate_into(work, "elastic", rows)
    (project / "data" / "clean").mkdir(parents=True, exist_ok=True)
    (project / "data" / "reports").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(accepted, project / "data" / "clean" / "elastic.accepted.parquet")
    shutil.copyfile(report, project / "data" / "reports" / "elastic-validation.json")
    shutil.rmtree(work)


def project_rows() -> list[dict]:
    """The project's synthetic elastic records, the cubic structures strained by 0.5% along x: still cubic at the
    Materials Project's symprec (0.1 A), tetragonal at 0.001 A, so that a change of symprec shows in the metrics."""
    rows = dataset_builds.clean_rows("elastic", N_RECORDS)
    for row in rows:
        if row["crystal_system"] == "cubic":
            structure = Structure.from_dict(json.loads(row["structure_json"]))
            structure.apply_strain([0.005, 0.0, 0.0])
            row.update(structure_json=canonical_json(structure.as_dict()), volume=structure.volume)
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("project")
    write_inputs(project, project_rows())
    write_params(project / "params.yaml", **PARAMS)
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    audit.run_dvc(project, "init", "--no-scm")
    audit.run_dvc(project, "repro", "train@elastic")
    settings = training.TrainSettings.from_params(PROFILE)
    data = project / "data"
    evaluation.evaluate_property("elastic", settings, gbm=dataclasses.replace(GBM, max_iter=10),
                                 symmetry_settings=SYMMETRY,
                                 model_dir=data / "models" / NAME, datasets_root=data / "hub" / "datasets",
                                 reports_dir=data / "reports", plots=False)
    publish.publish_property("elastic", version=VERSION, target="local", store=data / "zoo", organisation="zoo-test",
                             models_root=data / "models", datasets_root=data / "hub" / "datasets",
                             reports_dir=data / "reports", lineage=lineage.lock_lineage(project, "train@elastic"))
    registry_file(project / "registry.json")  # the model, no releases: versions come from the local store
    return project


def copy_of(project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(project, tmp_path / "project", symlinks=True))


def run_audit(project: Path, **options) -> audit.Report:
    defaults = dict(project=project, store=project / "data" / "zoo", registry_path=project / "registry.json")
    return audit.audit_model(NAME, **{**defaults, **options})


def statuses(report: audit.Report) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


def failed(report: audit.Report) -> set[str]:
    return {check.name for check in report.failures}


def stored_model(project: Path) -> Path:
    return project / "data" / "zoo" / "models" / NAME / VERSION


@pytest.fixture
def cli_on(monkeypatch):
    """Point the `zoo` command at a project's store and registry; full-width tables."""
    def use(project: Path) -> None:
        monkeypatch.setenv(registry.STORE_ENV, str(project / "data" / "zoo"))
        monkeypatch.setattr(registry, "REGISTRY_PATH", project / "registry.json")
        monkeypatch.setenv("COLUMNS", "250")

    return use


# ---------------------------------------------------------------------------------------------- passing audits
def test_audit_of_a_published_model_passes_and_prints_its_table(project, cli_on, capsys):
    cli_on(project)
    assert cli.main(["audit", NAME, "--project", str(project)]) == 0
    out = capsys.readouterr().out
    for row in ("file model.safetensors", "card tables", "dataset fingerprint", "dvc.lock", "card lineage",
                "lineage lock", "lineage output", "metrics model per crystal system", "metrics crystal_system_mean",
                "metrics composition_gbm"):
        assert row in out
    assert "--retrain" in out and "PASS" in out
    report = run_audit(project)
    assert report.passed and report.subject.startswith(f"model {NAME} {VERSION} (local store")
    assert {name for name, status in statuses(report).items() if status != audit.PASS} == {"metrics non_equivariant"}
    (unchecked,) = [check for check in report.checks if check.status == audit.NOT_CHECKED]
    assert unchecked.found == "not checked: a trained network, re-derived only with --retrain"


def test_card_carries_the_facts_the_audit_needs(project):
    card = (stored_model(project) / model_card.CARD_FILE).read_text()
    header = model_card.parse_front_matter(card)
    config = json.loads((stored_model(project) / "config.json").read_text())
    assert header["weights_sha256"] == config["weights"]["sha256"]
    assert header["test_metrics"]["baseline_settings"]["composition_gbm"]["max_iter"] == 10
    assert header["test_metrics"]["baseline_settings"]["non_equivariant"]["seed"] == 0
    lock = lineage.lock_entry(project, "train@elastic")  # DVC's YAML 1.2, where 1e-05 is a number
    (dataset_dep,) = [dep for dep in lock["deps"] if dep["path"] == f"data/hub/datasets/{DATASET}"]
    # The lineage: the train stage's lock entry, content only (no commit, time or path), the dataset's md5 apart.
    assert header["provenance"] == {
        "dvc_stage": "train@elastic", "dependencies": {dep["path"]: dep["md5"] for dep in lock["deps"]},
        "params": lock["params"], "dataset_path": f"data/hub/datasets/{DATASET}",
        "dataset_dvc_md5": dataset_dep["md5"]}
    printed = model_card.printed_metrics(card)
    assert printed["metrics"]["model"]["k_vrh_mae"] == \
        model_card.format_metric(header["test_metrics"]["model"]["k_vrh_mae"])
    assert set(printed["per_crystal_system"]["n"]) == set(header["test_metrics"]["per_crystal_system"]["model"])


def test_retrain_reproduces_the_weights_bit_for_bit(project):
    report = run_audit(project, retrain=True)
    assert report.passed, [check.summary() for check in report.failures]
    checks = {check.name: check for check in report.checks}
    assert checks["retrain weights"].found == "max |dw| = 0"
    assert checks["metrics retrained model"].status == audit.PASS
    assert checks["metrics non_equivariant"].status == audit.PASS  # retrained with its recorded settings
    assert "retrained" in checks["metrics non_equivariant"].compared


def test_a_shipped_release_passes_and_a_changed_weight_byte_fails_naming_the_file(project, tmp_path):
    shipped = tmp_path / "zoo" / "releases" / NAME / VERSION
    shutil.copytree(stored_model(project), shipped)
    config = json.loads((shipped / "config.json").read_text())
    release = registry.release_entry(shipped, "0" * 40, config["dataset"], shipped=f"releases/{NAME}/{VERSION}")
    options = dict(store=tmp_path / "empty-store", registry_path=registry_file(tmp_path / "zoo" / "registry.json",
                                                                               {VERSION: release}))
    report = run_audit(project, **options)
    assert report.passed and "(shipped:" in report.subject

    weights = shipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    report = run_audit(project, **options)
    assert failed(report) == {"file model.safetensors", "weights"}
    assert statuses(report)["metrics model"] == audit.NOT_CHECKED  # not evaluated from unverified weights
    (summary,) = [c.summary() for c in report.failures if c.name == "file model.safetensors"]
    assert release["files"]["model.safetensors"][:16] in summary and "registry release 1.0.0" in summary


def test_a_release_on_the_hub_is_downloaded_verified_and_audited(project, tmp_path):
    from tests.fakes.hub import serve
    from tests.fakes.loopback import loopback_guard

    data = project / "data"
    with loopback_guard(), serve(token="hf_test_write_token_0123456789") as double:
        published = publish.publish_property(
            "elastic", version=VERSION, target="hub", organisation="zoo-test", endpoint=double.endpoint,
            token=double.token, models_root=data / "models", datasets_root=data / "hub" / "datasets",
            reports_dir=data / "reports", lineage=None)
        release = published["model"]["registry_release"]
        report = run_audit(project, store=tmp_path / "empty-store", cache_dir=tmp_path / "cache",
                           registry_path=registry_file(tmp_path / "registry.json", {VERSION: release}),
                           endpoint=double.endpoint)
    assert report.passed, [check.summary() for check in report.failures]
    assert "(Hub cache:" in report.subject and "file README.md" in statuses(report)


# --------------------------------------------------------------------------------------------- changed cards
def tampered_card(text: str, header_value: float | None = None, printed: str | None = None) -> str:
    """The card with the model's k_vrh_mae changed in the header and/or in the printed metrics table."""
    header = model_card.parse_front_matter(text)
    body = text.split("\n---\n", 1)[1]
    if header_value is not None:
        header["test_metrics"]["model"]["k_vrh_mae"] = header_value
    if printed is not None:
        lines = body.splitlines()
        start = lines.index(model_card.METRICS_HEADING)
        columns = next(line for line in lines[start:] if line.startswith(f"| {model_card.METRIC_COLUMN} |")).split("|")
        row = next(i for i, line in enumerate(lines) if i > start and line.startswith("| k_vrh_mae |"))
        cells = lines[row].split("|")
        cells[columns.index(f" {model_card.MODEL_LABEL} ")] = f" {printed} "
        lines[row] = "|".join(cells)
        body = "\n".join(lines) + "\n"
    return f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n{body}"


def test_a_changed_metric_in_the_card_fails_naming_the_metric(project, tmp_path, cli_on, capsys):
    copy = copy_of(project, tmp_path)
    card_path = stored_model(copy) / model_card.CARD_FILE
    original = card_path.read_text()
    true_value = model_card.parse_front_matter(original)["test_metrics"]["model"]["k_vrh_mae"]
    claimed = true_value * 1.5 + 1.0

    card_path.write_text(tampered_card(original, header_value=claimed))
    cli_on(copy)
    assert cli.main(["audit", NAME, "--project", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zoo audit: FAIL")
    assert "file README.md" in err and "metrics model" in err and "card tables" in err
    assert f"k_vrh_mae {model_card.format_metric(claimed)}" in err  # what the card says ...
    assert f"k_vrh_mae {model_card.format_metric(true_value)}" in err  # ... and what the checkpoint gives

    # Only the printed table changed, and the store's hashes made to agree with it: the table row still catches it.
    card_path.write_text(tampered_card(original, printed=model_card.format_metric(claimed)))
    rehash(copy / "data" / "zoo", VERSION)
    report = run_audit(copy)
    assert failed(report) == {"card tables"}
    (check,) = report.failures
    assert check.expected == f"model k_vrh_mae {model_card.format_metric(true_value)}"
    assert check.found == f"model k_vrh_mae {model_card.format_metric(claimed)}"


# ------------------------------------------------------------------------------------------- changed datasets
def test_a_changed_dataset_value_fails_naming_the_file_and_the_fingerprint(project, tmp_path, cli_on, capsys):
    copy = copy_of(project, tmp_path)
    folder = copy / "data" / "hub" / "datasets" / DATASET
    path = folder / schema.parquet_path("test")
    table = pq.read_table(path)
    column = table.column_names.index("stiffness_irreps")
    values = table.column(column).to_pylist()
    values[0][0] += 1.0  # one value of one test record
    field = table.schema.field(column)
    schema.write_parquet(table.set_column(column, field, pa.array(values, type=field.type)), path)

    report = run_audit(copy)
    assert failed(report) == {f"dataset file {schema.parquet_path('test')}", "dataset fingerprint",
                              "dataset_version.json", "dataset card", "dvc.lock", "card lineage"}
    assert statuses(report)["metrics model"] == audit.NOT_CHECKED
    fingerprint = {check.name: check for check in report.checks}["dataset fingerprint"]
    recorded = json.loads((folder / schema.VERSION_FILE).read_text())["fingerprint"]
    assert fingerprint.expected == recorded and fingerprint.found == audit.recompute_fingerprint(
        folder, properties.get("elastic")) != recorded

    cli_on(copy)
    assert cli.main(["audit", "--dataset", DATASET, "--project", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"dataset file {schema.parquet_path('test')}" in err and "dvc.lock" in err and "dataset_version.json" in err


def test_a_changed_raw_record_rebuilt_through_dvc_names_the_fingerprint_that_differs(project, tmp_path):
    """One record of the pipeline's input changes and the dataset is gone: the audit rebuilds it with
    `dvc repro build@elastic`, and the old model's audit reports that the dataset is no longer the card's."""
    copy = copy_of(project, tmp_path)
    rows = project_rows()
    rows[5]["stiffness_voigt"] = (np.asarray(rows[5]["stiffness_voigt"]) * 1.001).tolist()
    write_inputs(copy, rows)
    shutil.rmtree(copy / "data" / "hub" / "datasets" / DATASET)

    report = run_audit(copy)
    assert report.notes == [f"data/hub/datasets/{DATASET} was absent: rebuilt with `dvc repro build@elastic`"]
    card = model_card.parse_front_matter((stored_model(copy) / model_card.CARD_FILE).read_text())
    rebuilt = json.loads((copy / "data" / "hub" / "datasets" / DATASET / schema.VERSION_FILE).read_text())
    assert rebuilt["fingerprint"] != card["dataset_fingerprint"]
    assert {"dataset fingerprint", "card lineage"} <= failed(report)
    checks = {check.name: check for check in report.checks}
    assert checks["dataset fingerprint"].expected == card["dataset_fingerprint"]
    assert checks["dataset fingerprint"].found == rebuilt["fingerprint"]
    assert "model card (mp-elastic-irreps 1.0.0)" in checks["dataset fingerprint"].compared
    # The rebuilt folder is what dvc.lock now records, and itself consistent: only its lineage to the model broke.
    for name in ("dvc.lock", "dataset_version.json", "dataset card"):
        assert checks[name].status == audit.PASS


def test_a_missing_dataset_is_rebuilt_through_dvc_and_the_audit_passes(project, tmp_path):
    copy = copy_of(project, tmp_path)
    shutil.rmtree(copy / "data" / "hub" / "datasets" / DATASET)
    report = run_audit(copy)
    assert report.notes and "dvc repro build@elastic" in report.notes[0]
    assert report.passed, [check.summary() for check in report.failures]


def test_dataset_audit_of_the_build_and_of_a_stored_version(project, cli_on, capsys):
    cli_on(project)
    assert cli.main(["audit", "--dataset", DATASET, "--project", str(project)]) == 0
    out = capsys.readouterr().out
    assert "dataset_version.json" in out and "dvc.lock" in out and "PASS" in out
    stored = audit.audit_dataset(DATASET, "1.0.0", project=project, store=project / "data" / "zoo")
    assert stored.passed and "(local store:" in stored.subject
    assert "file dataset_version.json" in statuses(stored) and "dvc.lock" not in statuses(stored)
    with pytest.raises(registry.VersionNotFoundError, match="neither in the local store"):
        audit.audit_dataset(DATASET, "9.9.9", project=project, store=project / "data" / "zoo")


# ------------------------------------------------------------------------------------------------------ symprec
def test_symprec_in_params_reaches_evaluate_and_audit(project, tmp_path, monkeypatch):
    """symmetry.symprec 0.001 instead of 0.1 in the project's params.yaml: the strained cubic test structures are
    then tetragonal, so a predicted tensor's Neumann residual (symmetry_violation) is measured against other
    operations. The audit, analysing with the project's params, reports the card's value (made at 0.1) as
    different; the evaluate stage, run on the same params, writes what the audit recomputed; a version published
    from that evaluation passes its audit."""
    copy = copy_of(project, tmp_path)
    write_params(copy / "params.yaml", **PARAMS, symmetry={"symprec": 0.001})
    card = model_card.parse_front_matter((stored_model(copy) / model_card.CARD_FILE).read_text())
    report = run_audit(copy)
    checks = {check.name: check for check in report.checks}
    assert "metrics model" in failed(report)
    assert all(name.startswith("metrics ") for name in failed(report)), failed(report)
    claimed = model_card.format_metric(card["test_metrics"]["model"]["symmetry_violation"])
    assert f"symmetry_violation {claimed}" in checks["metrics model"].expected

    monkeypatch.chdir(copy)
    nn_pipeline.evaluate_stage("elastic", copy / "params.yaml", say=lambda line: None, log=lambda line: None)
    metrics = json.loads((copy / "data" / "reports" / "elastic-metrics.json").read_text())
    recomputed = model_card.format_metric(metrics["model"]["symmetry_violation"])
    assert recomputed != claimed and f"symmetry_violation {recomputed}" in checks["metrics model"].found

    data = copy / "data"
    publish.publish_property("elastic", version="1.0.1", target="local", store=data / "zoo", organisation="zoo-test",
                             models_root=data / "models", datasets_root=data / "hub" / "datasets",
                             reports_dir=data / "reports", lineage=lineage.lock_lineage(copy, "train@elastic"))
    again = run_audit(copy, version="1.0.1")
    assert again.passed, [check.summary() for check in again.failures]


# ------------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv, message", [
    (["audit", "mattenelastic"], "Did you mean 'matten-elastic'"),
    (["audit", "--dataset", "mp-elastc-irreps"], "Did you mean 'mp-elastic-irreps'"),
    (["audit", NAME, "--version", "9.9.9"], "has no version 9.9.9"),
    (["audit"], "give a model NAME or --dataset NAME"),
    (["audit", "--dataset", DATASET, "--retrain"], "--retrain applies to a model audit"),
])
def test_bad_requests_are_one_line_errors(project, cli_on, capsys, argv, message):
    cli_on(project)
    assert cli.main([*argv, "--project", str(project)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_without_a_build_or_a_project_to_rebuild_it_in_the_error_says_so(project, tmp_path):
    with pytest.raises(audit.AuditError, match="not the project checkout"):
        run_audit(tmp_path, store=project / "data" / "zoo", registry_path=project / "registry.json")
