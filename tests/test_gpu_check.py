"""benchmarks/gpu_check.py on the CPU (`--device cpu`, the smoke test that keeps it from rotting) and, through it, the
`gpu` profile: selected for every property and trained for one step of each on the CPU with the profile's
MatTen-size model, so a broken profile fails here and not on a user's GPU.

Data: real builds (tests/dataset_builds.py) of 32 synthetic records per property, shrunk to 12 per split by the
script's --max-records: one step of 12 structures per network (batch_size 32).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import dataset_builds
from tests.params_file import PARAMS
from zoo import properties
from zoo.nn import training

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
MAX_RECORDS = 12


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The script's JSON report of a --device cpu run over every property (and its exit status)."""
    root = tmp_path_factory.mktemp("gpu-check")
    for prop in properties.PROPERTIES:
        result = dataset_builds.build(root / f"work-{prop}", prop, dataset_builds.clean_rows(prop, 32))
        result.path.rename(root / result.path.name)
    path = root / "report.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--datasets-root", str(root), "--epochs",
                          "1", "--steps", "1", "--max-records", str(MAX_RECORDS), "--report", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=1200)
    return {"status": run.returncode, "stdout": run.stdout, "stderr": run.stderr,
            **(json.loads(path.read_text()) if path.is_file() else {})}


@pytest.mark.slow  # MatTen-size networks on the CPU, five of them (phonon is an ensemble of three): ~2 min
@pytest.mark.timeout(1500)
def test_gpu_check_runs_on_the_cpu(report):
    assert report["status"] == 0, report["stderr"][-3000:]
    assert report["failures"] == []
    assert [result["property"] for result in report["results"]] == list(properties.PROPERTIES)
    module = gpu_check_module()
    for result in report["results"]:
        assert result["equivariance"]["float32"] < module.FLOAT32_RTOL, result["property"]
        assert result["equivariance"]["float64"] < module.FLOAT64_RTOL, result["property"]
        for kind in ("train", "inference"):
            assert result["ratio_device_over_cpu"][kind] > 0, (result["property"], kind)
        assert result["property"] in report["stdout"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_gpu_profile_trains_one_step_of_every_property(report):
    """What the script trained is select_profile(train, 'gpu', property), changed only in what a check changes."""
    assert report["status"] == 0, report["stderr"][-3000:]
    for result in report["results"]:
        prop = result["property"]
        profile, settings = training.select_profile(PARAMS.train, "gpu", prop)
        expected = dataclasses.replace(settings, max_epochs=1, accelerator="cpu", progress_bar=False)
        assert (result["profile"], result["settings"]) == (profile, expected.as_dict()), prop
        networks_per_seed = len(properties.get(prop).predicted_parts) if settings.separate_parts else 1
        assert len(result["members"]) == settings.ensemble_size * networks_per_seed, prop
        assert result["records"]["train"] == MAX_RECORDS <= settings.batch_size, prop  # one step per network
        for member in result["members"]:
            assert member["epochs_run"] == 1 and len(member["history"]) == 1, prop


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_gpu_check_says_when_there_is_no_gpu(capsys):
    assert gpu_check_module().main(["--device", "cuda"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
