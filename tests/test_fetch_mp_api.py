"""The live MP API source, run with the real mp-api client against the loopback double in tests/fakes.

Nothing here may reach a real host: AWS credentials and endpoints are blanked, every socket connect outside
loopback fails the test, and mp-api's AWS (boto3/deltalake) entry points are trip-wired.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import time

import numpy as np
import pytest
from emmet.core.elasticity import ElasticityDoc
from emmet.core.mpid import AlphaID
from emmet.core.phonon import PhononBSDOSDoc
from emmet.core.polar import DielectricDoc, PiezoelectricDoc
from emmet.core.summary import SummaryDoc
from mp_api.client.core.client import BaseRester
from scipy.special import erf

from tests.fakes.mp_api import Fault, load_corpus, loopback_only, serve
from zoo.data.records import read_raw
from zoo.data.sources import mp_api
from zoo.data.sources.mp_api import (
    MPAPIError,
    MPAPIKeyError,
    fetch_property,
    resample_dos,
)
from zoo.properties import PHONON_GRID_CM, PROPERTIES

KEY = "0123456789abcdef0123456789abcdef"  # MP keys are 32 characters; a made-up one
FAST = {"backoff_s": 0.01, "max_delay_s": 2.0, "timeout_s": 5.0, "progress": False}

EMMET_MODELS = {
    "materials/elasticity": ElasticityDoc,
    "materials/dielectric": DielectricDoc,
    "materials/piezoelectric": PiezoelectricDoc,
    "materials/phonon": PhononBSDOSDoc,
    "materials/summary": SummaryDoc,
}


def _forbidden(*args, **kwargs):
    raise AssertionError("the fetch reached mp-api's AWS open-data path")


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "MP_API_KEY", "PMG_MAPI_KEY", "MP_API_ENDPOINT"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: any S3 call would fail here
        patch.setattr(socket.socket, "connect", loopback_only(socket.socket.connect))
        patch.setattr(socket.socket, "connect_ex", loopback_only(socket.socket.connect_ex))
        patch.setattr(BaseRester, "_query_delta_backed", _forbidden)
        patch.setattr(BaseRester, "_query_open_data", _forbidden)
        patch.setattr(BaseRester, "s3_client", property(_forbidden))
        yield


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture
def double(corpus):
    with serve(KEY, corpus) as server:
        yield server


@pytest.fixture(scope="module")
def clean_outputs(corpus, tmp_path_factory):
    """Fault-free fetch of every property: name -> (path, report)."""
    out = tmp_path_factory.mktemp("clean")
    results = {}
    with serve(KEY, corpus) as server:
        for name, spec in PROPERTIES.items():
            path = out / f"{name}.jsonl"
            results[name] = (path, fetch_property(spec, path, api_key=KEY, endpoint=server.endpoint,
                                                  chunk_size=10, **FAST))
    return results


def _legacy(served_id: str) -> str:
    return f"mp-{int(AlphaID(served_id))}"


def _served_sha(doc, fields) -> str:
    """sha256 of the canonical JSON of `doc` as served, i.e. projected onto the requested top-level fields."""
    served = {field: doc[field] for field in fields if field in doc}
    return hashlib.sha256(json.dumps(served, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()


def _cell_means_by_quadrature(freq_cm, dens, grid=PHONON_GRID_CM, steps=4000):
    """Cell averages of the linear interpolant (zero outside the served range) by the midpoint rule.

    An independent reference for `resample_dos`; midpoints keep a jump at the DOS's first point exact.
    """
    half = (grid[1] - grid[0]) / 2
    offsets = (np.arange(steps) + 0.5) / steps * 2 * half - half
    return np.array([np.interp(centre + offsets, freq_cm, dens, left=0.0, right=0.0).mean() for centre in grid])


# --------------------------------------------------------------------------------------- the double itself


def test_the_guard_refuses_non_loopback_hosts():
    with pytest.raises(AssertionError, match="not loopback"):
        socket.create_connection(("192.0.2.1", 443), timeout=0.1)  # TEST-NET-1, never routed


def test_served_documents_are_emmet_documents(corpus):
    for route, docs in corpus["routes"].items():
        for doc in docs:
            EMMET_MODELS[route].model_validate(doc)


@pytest.mark.parametrize(("route", "fields"), [
    *((spec.mp_endpoint, spec.mp_fields) for spec in PROPERTIES.values()),
    ("materials/summary", mp_api.task_listing_fields(PROPERTIES["phonon"].mp_api) + mp_api.STRUCTURE_LOOKUP_FIELDS),
])
def test_requested_fields_exist_on_the_emmet_models(route, fields):
    known = EMMET_MODELS[route].model_fields
    assert [f for f in fields if f.split(".")[0] not in known] == []


# ------------------------------------------------------------------------------------ fault-free fetching


def test_elastic_records_match_served_documents(clean_outputs, corpus):
    path, report = clean_outputs["elastic"]
    records = {r["record_id"]: r for r in read_raw(path)}
    docs = corpus["routes"]["materials/elasticity"]
    assert report["records_written"] == report["rows_read"] == len(docs) == len(records)
    for doc in docs:
        record = records[f"mp-api:elastic:{_legacy(doc['material_id'])}"]
        assert record["material_id"] == _legacy(doc["material_id"])
        assert record["formula"] == doc["formula_pretty"]
        assert record["structure"] == {"format": "pymatgen-dict", "data": doc["structure"]}
        assert record["values"]["stiffness_voigt"] == doc["elastic_tensor"]["ieee_format"]
        assert record["values"]["stiffness_voigt_original"] == doc["elastic_tensor"]["raw"]
        # served in TPa^-1, stored in 1/GPa
        np.testing.assert_allclose(record["values"]["compliance_voigt"],
                                   np.asarray(doc["compliance_tensor"]["raw"]) / 1000, rtol=1e-15)
        assert record["tensor_frames"] == {"stiffness_voigt": "ieee", "stiffness_voigt_original": "structure",
                                           "compliance_voigt": "structure"}
        assert record["reported"]["K_VRH"] == doc["bulk_modulus"]["vrh"]
        assert record["reported"]["space_group"] == doc["symmetry"]["number"]
        assert record["provenance"]["sha256"] == _served_sha(doc, PROPERTIES["elastic"].mp_fields)
        assert record["provenance"]["file"] == "materials/elasticity"


@pytest.mark.parametrize(("name", "route"), [("dielectric", "materials/dielectric"),
                                             ("piezo", "materials/piezoelectric")])
def test_dielectric_and_piezo_records_take_structures_from_summary(clean_outputs, corpus, name, route):
    path, report = clean_outputs[name]
    records = {r["record_id"]: r for r in read_raw(path)}
    summary = {_legacy(d["material_id"]): d for d in corpus["routes"]["materials/summary"]}
    docs = corpus["routes"][route]
    assert report["records_written"] == report["rows_read"] == len(docs) == len(records)
    for doc in docs:
        material_id = _legacy(doc["material_id"])
        record = records[f"mp-api:{name}:{material_id}"]
        if name == "dielectric":
            assert record["values"] == {"electronic": doc["electronic"], "total": doc["total"]}
            assert record["tensor_frames"] == {"electronic": "ieee", "total": "ieee"}
            assert record["reported"]["poly_ionic"] == doc["e_ionic"]
        else:
            assert record["values"] == {"piezo_voigt": doc["total"]}
            assert record["reported"]["eij_max"] == doc["e_ij_max"]
        if material_id == corpus["left_out_of_summary"]:
            # the lookup found no structure: kept as an unreadable marker, not dropped
            assert record["structure"]["data"]["unparsed"] == "null"
            assert material_id in record["structure"]["data"]["error"]
        else:
            assert record["structure"] == {"format": "pymatgen-dict", "data": summary[material_id]["structure"]}
    unreadable = 1 if name == "dielectric" else 0
    assert report["unreadable_fields"] == ({"structure.data": unreadable} if unreadable else {})


def test_phonon_records_are_resampled_dfpt_documents(clean_outputs, corpus):
    path, report = clean_outputs["phonon"]
    records = {r["record_id"]: r for r in read_raw(path)}
    served = {d["identifier"]: d for d in corpus["routes"]["materials/phonon"]}
    listed = [(d, method, i) for d in corpus["routes"]["materials/summary"]
              for method, ids in (d.get("phonon_IDs") or {}).items() for i in ids]
    wanted = [(d, i) for d, method, i in listed if method == "dfpt" and i in served]
    assert sorted(records) == sorted(f"mp-api:phonon:{i}" for _, i in wanted)
    assert report["rows_read"] == len(listed)
    assert {e["reason"]: e["count"] for e in report["excluded"]} == {
        "phonon_method_not_selected": sum(method != "dfpt" for _, method, _ in listed),
        "phonon_document_missing": sum(method == "dfpt" and i not in served for _, method, i in listed),
    }
    for summary_doc, identifier in wanted:
        record, doc = records[f"mp-api:phonon:{identifier}"], served[identifier]
        assert record["material_id"] == _legacy(summary_doc["material_id"])
        assert record["structure"]["data"] == doc["structure"]
        assert record["values"]["frequencies_cm"] == PHONON_GRID_CM.tolist()
        expected = _cell_means_by_quadrature(np.asarray(doc["phonon_dos"]["frequencies"]) * 33.35641,
                                             np.asarray(doc["phonon_dos"]["densities"]))
        np.testing.assert_allclose(record["values"]["dos"], expected / expected.max(), atol=2e-6)
        assert max(record["values"]["dos"]) == 1.0
        assert record["tensor_frames"] == {}


# -------------------------------------------------------------------------------------- faults and resume


def test_faults_are_retried_and_the_output_is_byte_identical(tmp_path, double, clean_outputs):
    double.schedule("heartbeat", Fault.http(503), Fault.reset())
    # page 0 fine; page 1: 429 (Retry-After 1 s), 500, fine; page 2: reset, invalid JSON, fine; page 3: too slow
    double.schedule("materials/dielectric", None, Fault.http(429, retry_after="1"), Fault.http(500), None,
                    Fault.reset(), Fault.invalid_json(), None, Fault.slow(1.5))
    double.schedule("materials/summary", Fault.truncated_body(), Fault.http(503), None, Fault.http(502))
    out = tmp_path / "dielectric.jsonl"
    started = time.monotonic()
    report = fetch_property(PROPERTIES["dielectric"], out, api_key=KEY, endpoint=double.endpoint,
                            chunk_size=5, max_retries=3, **{**FAST, "timeout_s": 0.5})
    elapsed = time.monotonic() - started

    assert out.read_bytes() == clean_outputs["dielectric"][0].read_bytes()
    outcomes = [s.outcome for s in double.log]
    for kind in ("503", "reset", "429", "500", "invalid_json", "truncated_body", "502"):
        assert kind in outcomes
    assert report["mp_api"]["retries"] == 10
    assert elapsed >= 1.0  # the Retry-After of the 429 was honoured
    # each fault cost exactly one extra request: mp-api's own adapter retries are out of the loop
    assert len(double.requests_to("materials/dielectric")) == 5 + 5
    assert len(double.requests_to("materials/summary")) == 5 + 3
    assert not (tmp_path / ".mp-api-dielectric").exists()


def test_gives_up_after_max_retries_with_a_clear_error(tmp_path, double):
    double.schedule("materials/elasticity", *[Fault.http(500)] * 10)
    out = tmp_path / "elastic.jsonl"
    with pytest.raises(MPAPIError, match=r"materials/elasticity page 0 failed after 3 attempts.*HTTP 500"):
        fetch_property(PROPERTIES["elastic"], out, api_key=KEY, endpoint=double.endpoint, max_retries=2, **FAST)
    assert len(double.requests_to("materials/elasticity")) == 3
    assert not out.exists()


def test_an_endpoint_that_is_not_the_mp_api_fails_at_once(tmp_path, double):
    with pytest.raises(MPAPIError, match="does not answer like the Materials Project API"):
        fetch_property(PROPERTIES["elastic"], tmp_path / "e.jsonl", api_key=KEY,
                       endpoint=double.endpoint + "not-the-api/", **FAST)
    assert len(double.log) == 1


def test_a_capped_page_is_an_error_not_a_silent_gap(tmp_path, corpus):
    with serve(KEY, corpus, max_limit=3) as server, pytest.raises(MPAPIError, match="lower chunk_size"):
        fetch_property(PROPERTIES["elastic"], tmp_path / "e.jsonl", api_key=KEY, endpoint=server.endpoint,
                       chunk_size=5, **FAST)


def _fetch_in_child(endpoint: str, out: str, state: str) -> None:
    fetch_property(PROPERTIES["dielectric"], out, api_key=KEY, endpoint=endpoint, chunk_size=5,
                   state_dir=state, **FAST)


def test_a_killed_run_resumes_without_refetching(tmp_path, double, clean_outputs):
    out, state = tmp_path / "dielectric.jsonl", tmp_path / "state"
    double.schedule("materials/dielectric", None, None, None, Fault.hang())  # page 3 never answers
    # fork: the child shares the loaded modules and the socket guard; SIGKILL is a crash, no cleanup runs
    child = multiprocessing.get_context("fork").Process(target=_fetch_in_child,
                                                        args=(double.endpoint, str(out), str(state)))
    child.start()
    deadline = time.monotonic() + 30
    while len(double.requests_to("materials/dielectric")) < 4:
        assert time.monotonic() < deadline and child.is_alive(), "the child never reached page 3"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    double.release()
    assert sorted(p.name for p in state.iterdir()) == ["page-00000.json", "page-00001.json", "page-00002.json",
                                                       "query.json"]
    assert not out.exists()

    before = len(double.log)
    report = fetch_property(PROPERTIES["dielectric"], out, api_key=KEY, endpoint=double.endpoint,
                            chunk_size=5, state_dir=state, **FAST)
    resumed = double.log[before:]
    assert out.read_bytes() == clean_outputs["dielectric"][0].read_bytes()
    assert report["mp_api"]["pages_resumed"] == 3
    assert sorted(int(s.params["_skip"]) for s in resumed if s.path == "materials/dielectric") == [15, 20]
    assert len([s for s in resumed if s.path == "materials/summary"]) == 2
    assert not state.exists()


def test_a_different_query_does_not_reuse_stored_pages(tmp_path, double, clean_outputs):
    state = tmp_path / "state"
    state.mkdir()
    (state / "query.json").write_text('{"chunk_size": 7}')
    (state / "page-00000.json").write_text('{"index": 0, "total_doc": 1, "listing": [], "lookup": []}')
    out = tmp_path / "dielectric.jsonl"
    fetch_property(PROPERTIES["dielectric"], out, api_key=KEY, endpoint=double.endpoint, chunk_size=5,
                   state_dir=state, **FAST)
    assert out.read_bytes() == clean_outputs["dielectric"][0].read_bytes()


def test_malformed_fields_are_kept_as_unreadable_markers(tmp_path, corpus):
    broken = copy.deepcopy(corpus)
    elastic_doc = broken["routes"]["materials/elasticity"][0]
    elastic_doc["elastic_tensor"]["ieee_format"] = elastic_doc["elastic_tensor"]["ieee_format"][:5]
    del elastic_doc["compliance_tensor"]
    phonon_doc = broken["routes"]["materials/phonon"][0]
    phonon_doc["phonon_dos"]["frequencies"] = phonon_doc["phonon_dos"]["frequencies"][::-1]
    with serve(KEY, broken) as server:
        reports = {name: fetch_property(PROPERTIES[name], tmp_path / f"{name}.jsonl", api_key=KEY,
                                        endpoint=server.endpoint, chunk_size=25, **FAST)
                   for name in ("elastic", "phonon")}
    assert reports["elastic"]["unreadable_fields"] == {"values.stiffness_voigt": 1}
    assert reports["phonon"]["unreadable_fields"] == {"values.dos": 1}
    elastic = {r["record_id"]: r for r in read_raw(tmp_path / "elastic.jsonl")}
    record = elastic[f"mp-api:elastic:{_legacy(elastic_doc['material_id'])}"]
    assert json.loads(record["values"]["stiffness_voigt"]["unparsed"]) == elastic_doc["elastic_tensor"]["ieee_format"]
    assert "6x6" in record["values"]["stiffness_voigt"]["error"]
    assert record["values"]["compliance_voigt"] is None  # absent, not malformed
    phonon = {r["record_id"]: r for r in read_raw(tmp_path / "phonon.jsonl")}
    assert "strictly increasing" in phonon[f"mp-api:phonon:{phonon_doc['identifier']}"]["values"]["dos"]["error"]


# ---------------------------------------------------------------------------------------------- API keys


@pytest.mark.parametrize("api_key", [None, "", "   "])
def test_missing_key_is_a_clear_error(tmp_path, double, api_key):
    with pytest.raises(MPAPIKeyError, match="MP_API_KEY is not set"):
        fetch_property(PROPERTIES["elastic"], tmp_path / "e.jsonl", api_key=api_key, endpoint=double.endpoint,
                       **FAST)
    assert double.log == []


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_a_clear_error_that_never_shows_the_key(tmp_path, corpus, caplog, capsys, status):
    wrong = "ffffffffffffffffffffffffffffffff"
    caplog.set_level(logging.DEBUG)
    with serve(KEY, corpus, reject_status=status) as server:
        with pytest.raises(MPAPIKeyError, match=f"rejected the API key in MP_API_KEY \\(HTTP {status}\\)") as err:
            fetch_property(PROPERTIES["dielectric"], tmp_path / "d.jsonl", api_key=wrong,
                           endpoint=server.endpoint, **{**FAST, "progress": True})
        assert len(server.requests_to("materials/dielectric")) == 1  # a rejected key is not retried
    captured = capsys.readouterr()
    for text in (str(err.value), repr(err.value), caplog.text, captured.out, captured.err):
        assert wrong not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_malformed_key_is_refused_before_any_data_request(tmp_path, double):
    with pytest.raises(MPAPIError, match="32 characters") as err:
        fetch_property(PROPERTIES["elastic"], tmp_path / "e.jsonl", api_key="not-a-key", endpoint=double.endpoint,
                       **FAST)
    assert "not-a-key" not in str(err.value)
    assert double.requests_to("materials/elasticity") == []


@pytest.mark.parametrize(("argument", "value"), [("chunk_size", 0), ("chunk_size", 5000), ("max_retries", -1),
                                                 ("backoff_s", float("nan")), ("timeout_s", 0)])
def test_bad_arguments_name_themselves(tmp_path, argument, value):
    with pytest.raises(ValueError, match=argument):
        fetch_property(PROPERTIES["elastic"], tmp_path / "e.jsonl", api_key=KEY, **{argument: value})


# ------------------------------------------------------------------------------------- DOS resampling


def test_resample_dos_of_a_constant_is_that_constant():
    freq = np.linspace(-50.0, 1100.0, 77)
    np.testing.assert_allclose(resample_dos(freq, np.full_like(freq, 2.5), PHONON_GRID_CM), 2.5, rtol=1e-12)


def test_resample_dos_matches_analytic_cell_means_of_a_gaussian():
    freq = np.linspace(0.0, 1000.0, 200001)
    centre, width = 403.0, 17.0
    dens = np.exp(-0.5 * ((freq - centre) / width) ** 2)
    lower, upper = PHONON_GRID_CM - 10.0, PHONON_GRID_CM + 10.0
    cdf = lambda x: width * np.sqrt(np.pi / 2) * erf((x - centre) / (np.sqrt(2) * width))  # noqa: E731
    np.testing.assert_allclose(resample_dos(freq, dens, PHONON_GRID_CM), (cdf(upper) - cdf(lower)) / 20.0, atol=1e-6)


def test_resample_dos_keeps_the_weight_on_the_grid_and_drops_the_rest():
    rng = np.random.default_rng(7)
    freq = np.sort(rng.uniform(-30.0, 1050.0, 400))
    dens = rng.uniform(0.0, 3.0, 400)
    result = resample_dos(freq, dens, PHONON_GRID_CM)
    inside = np.linspace(-10.0, 1010.0, 400001)
    np.testing.assert_allclose(np.sum(result) * 20.0, np.trapezoid(np.interp(inside, freq, dens), inside),
                               rtol=1e-6)
    assert np.all(resample_dos([1020.0, 1100.0], [1.0, 1.0], PHONON_GRID_CM) == 0.0)


def test_resample_dos_refuses_unordered_frequencies():
    with pytest.raises(ValueError, match="strictly increasing"):
        resample_dos([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], PHONON_GRID_CM)
