"""zoo.data.validation and stages/validate.py on a corpus of corrupt records mixed into real-looking good ones.

The corpus (tests/validation_corpus.py): good records on the real Materials Project structures of
tests/data/structures/, obeying Neumann's principle, and corrupt ones, each breaking one thing and naming the reason
code it must be quarantined with.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.params_file import SYMMETRY, write_params
from tests.validation_corpus import (
    PARAMS,
    REPO,
    REQUIRED_REPORT_KEYS,
    Corpus,
    build_corpus,
    structure,
)
from zoo import properties
from zoo.data import validation


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
