"""zoo.release.determinism: the data stages of one property, rerun in a copy of the repository, give the same bytes.

The end-to-end test runs the check's own logic (`zoo.release.determinism.check`) on fetch, clean, validate and build of
piezo in a throwaway copy of the repository (tests/repo_copy.py) that reads the real offline snapshot: run 0
makes the outputs, one forced rerun remakes them, and every output must be byte-identical, the Great
Expectations Data Docs included. The stages run in subprocesses that refuse non-loopback connections
(a sitecustomize module installs the loopback guard of tests/fakes/loopback.py in each of them). The other tests
give the comparison helpers small files of their own.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from tests.repo_copy import REPO, copy_repository, isolate_dvc, link_snapshot
from zoo.release import determinism

STAGES = ["fetch@piezo", "clean@piezo", "validate@piezo", "build@piezo"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_piezo_data_stages_are_byte_identical_when_rerun(tmp_path, monkeypatch):
    copy = copy_repository(tmp_path / "repo")
    try:
        link_snapshot(copy)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        "from tests.fakes.loopback import install_loopback_guard\ninstall_loopback_guard()\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", f"{guard}:{REPO}")

    report = determinism.check(copy, STAGES, runs=1)

    outputs = {output.path: output for output in report.outputs}
    assert {"data/raw/piezo.jsonl", "data/reports/piezo-fetch.json", "data/clean/piezo.parquet",
            "data/clean/piezo.accepted.parquet", "data/quarantine/piezo.parquet",
            "data/reports/piezo-validation.json", "data/hub/datasets/mp-piezo-irreps"} <= set(outputs)
    assert all(output.files > 0 for output in report.outputs), "an output of run 0 has no files"
    assert report.failures == [], determinism.format_report(report)
    for path, output in outputs.items():
        assert output.identical, f"{path}: {output.differences}"
    table = determinism.format_report(report)
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.startswith("data/")}
    assert rows["data/hub/datasets/mp-piezo-irreps"] == ["build@piezo", "5", "yes"]
    docs = rows["data/reports/data-docs/piezo"]
    assert docs[0] == "validate@piezo" and docs[-1] == "yes"
    assert table.splitlines()[-1].startswith(f"{len(outputs)} outputs, 1 forced rerun(s) compared with run 0: "
                                             f"deterministic")


def test_unknown_stage_is_a_clear_error(tmp_path, monkeypatch):
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    copy = copy_repository(tmp_path / "repo")
    with pytest.raises(determinism.DeterminismError, match="cannot select the stages no-such-stage"):
        determinism.pipeline_outputs(copy, ["no-such-stage"])
    assert determinism.main(["--repo", str(tmp_path), "--stages", "build@piezo"]) == 2


def test_no_output_is_known_to_vary():
    for path in ("data/reports/data-docs/piezo", "data/reports/piezo-validation.json", "data/reports/piezo-fetch.json",
                 "data/hub/datasets/mp-piezo-irreps", "data/models/matten-piezo"):
        assert determinism.nondeterminism_reason(path) is None, path


def test_parquet_difference_counts_rows_and_the_largest_numeric_gap(tmp_path):
    before, after = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ids = ["mp-1", "mp-2", "mp-3"]
    pq.write_table(pa.table({"id": ids, "x": [1.0, 2.0, float("nan")], "v": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}),
                   before)
    pq.write_table(pa.table({"id": ids, "x": [1.0, 2.5, float("nan")], "v": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.001]]}),
                   after)
    assert determinism.describe_difference(before, after) == \
        "2 of 3 rows differ (columns x, v), max numeric difference 0.5"
    pq.write_table(pa.table({"id": ids[:2], "x": [1.0, 2.0], "v": [[1.0, 2.0], [3.0, 4.0]]}), after)
    assert determinism.describe_difference(before, after) == "3 rows in run 0, 2 now"


def test_safetensors_difference_names_the_worst_tensor(tmp_path):
    before, after = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, dtype=np.float32)}
    save_file(weights, before)
    save_file({**weights, "w": weights["w"] + np.float32(0.25)}, after)
    assert determinism.describe_difference(before, after) == "1 of 2 tensors differ, max |difference| 0.25 (w)"


def test_json_difference_lists_the_keys(tmp_path):
    before, after = tmp_path / "a.json", tmp_path / "b.json"
    before.write_text(json.dumps({"n": 3, "timing": {"seconds": 1.5}, "list": [1, 2], "same": float("nan")}))
    after.write_text(json.dumps({"n": 3, "timing": {"seconds": 1.7}, "list": [1, 3], "same": float("nan")}))
    assert determinism.describe_difference(before, after) == "2 values differ: list[1], timing.seconds"


def test_text_difference_gives_the_lines(tmp_path):
    before, after = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    before.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    after.write_text('{"a": 1}\n{"a": 20}\n{"a": 3}\n')
    assert determinism.describe_difference(before, after) == "1 of 3 lines differ: line 2"


def test_only_outputs_not_known_to_vary_fail_the_check(monkeypatch):
    monkeypatch.setattr(determinism, "NONDETERMINISTIC", {"data/reports/data-docs/*": "a clock, in this test"})
    raw = determinism.OutputCheck("data/raw/piezo.jsonl", "fetch@piezo", 1, [
        determinism.Difference(1, "data/raw/piezo.jsonl", "1 of 941 lines differ: line 7")])
    docs = determinism.OutputCheck("data/reports/data-docs/piezo", "validate@piezo", 23, [
        determinism.Difference(1, "data/reports/data-docs/piezo/index.html", "2 of 616 lines differ: line 263, 442")])
    clean = determinism.OutputCheck("data/clean/piezo.parquet", "clean@piezo", 1)
    report = determinism.Report(runs=1, outputs=[raw, clean, docs])
    assert report.failures == [raw]
    table = determinism.format_report(report).splitlines()
    assert table[2].split() == ["data/raw/piezo.jsonl", "fetch@piezo", "1", "NO"]
    assert table[3] == "    run 1: data/raw/piezo.jsonl: 1 of 941 lines differ: line 7"
    assert table[4].split() == ["data/clean/piezo.parquet", "clean@piezo", "1", "yes"]
    assert table[5].split() == ["data/reports/data-docs/piezo", "validate@piezo", "23", "no,", "known", "to", "vary"]
    assert table[6] == "    why it varies: a clock, in this test"
    assert table[-1] == "3 outputs, 1 forced rerun(s) compared with run 0: 1 differ unexpectedly (1 known to vary)"
