"""Per-property stages of dvc.yaml run in parallel (README, 'Training on a GPU or a cluster'): concurrent
`dvc --wait-for-lock repro` processes, one per property, in one workspace, give the bytes of a serial `dvc repro`,
and dvc.lock records every stage. DVC releases its repository lock while a stage's command runs and locks only that
stage's dependencies and outputs, so stages with disjoint outputs run side by side.

Two copies of the repository (tests/repo_copy.py), each with the same tiny datasets (tests/dataset_builds.py builds)
and a tiny cpu profile; the train stages of two properties run serially in one, at the same time in the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import dataset_builds
from tests.params_file import write_params
from tests.repo_copy import copy_repository, isolate_dvc
from zoo.core import environment
from zoo.release.determinism import hash_outputs

PROPERTIES = ("dielectric", "phonon")  # phonon: an ensemble of three networks in the cpu profile
TINY_MODEL = {"hidden_irreps": "4x0o+4x0e+2x1o+2x1e+2x2o+2x2e", "n_radial": 4, "radial_hidden": [8],
              "species_dim": 8, "invariant_hidden": 8}


def dvc(root: Path, *arguments: str) -> subprocess.Popen:
    env = {**os.environ, **environment.variables(),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "dvc", *arguments], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    for prop in PROPERTIES:
        result = dataset_builds.build(root / f"work-{prop}", prop, dataset_builds.clean_rows(prop, 32))
        result.path.rename(root / result.path.name)
    return root


def prepared_copy(dest: Path, datasets: Path) -> Path:
    copy = copy_repository(dest)
    write_params(copy / "params.yaml", train={"profiles": {"cpu": {"max_epochs": 1, "batch_size": 8,
                                                                   "progress_bar": False, "model": TINY_MODEL}}})
    target = copy / "data" / "hub" / "datasets"
    target.mkdir(parents=True)
    for prop in PROPERTIES:
        folder = f"mp-{prop}-irreps"
        subprocess.run(["cp", "-a", str(datasets / folder), str(target / folder)], check=True)
    return copy


@pytest.mark.slow  # four small trainings under DVC, in two copies: about a minute on an idle 2-core machine
@pytest.mark.timeout(1200)
def test_per_property_stages_in_parallel_give_the_serial_bytes(datasets, tmp_path, monkeypatch):
    isolate_dvc(monkeypatch, tmp_path / "dvc-home")
    serial, parallel = (prepared_copy(tmp_path / name, datasets) for name in ("serial", "parallel"))
    stages = [f"train@{prop}" for prop in PROPERTIES]
    finished(dvc(serial, "repro", "--single-item", *stages))
    running = [dvc(parallel, "--wait-for-lock", "repro", "--single-item", stage) for stage in stages]
    for process in running:
        finished(process)
    for copy in (serial, parallel):  # dvc.lock records both stages in each copy
        status = finished(dvc(copy, "status", "--json", *stages))
        assert json.loads(status.strip().splitlines()[-1] or "{}") == {}, status
    # The models, byte for byte. (dvclive's metrics under data/reports/train hold each epoch's wall time.)
    models = [f"data/models/matten-{prop}" for prop in PROPERTIES]
    expected, actual = hash_outputs(serial, models), hash_outputs(parallel, models)
    assert all(expected[model] for model in models) and actual == expected
