"""Data-parallel training (zoo.nn.training, 'Data-parallel training'): every process its own share of each step,
the same decisions everywhere, one resume folder and one model folder written by rank 0.

The runs use 2 CPU processes (DDP over gloo) in a subprocess (tests/ddp_training.py), because Lightning's launcher
starts the second process by running the same command again. The dataset is a real 32-record build of
tests/dataset_builds.py; the model is tiny.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests import dataset_builds
from tests.ddp_training import PROPERTY, run_settings
from tests.test_zoo_load import DEAD_ENDPOINT, silicon
from zoo.nn import training
from zoo.nn.training.loaders import PADDING, EpochSampler, ShareSampler, step_weight
from zoo.release import registry

REPO = Path(__file__).resolve().parents[1]
EPOCHS, ENSEMBLE = 2, 2  # 28 training records in steps of 8: 4 steps per epoch, 8 per member


# ------------------------------------------------------------------------------------------------ sharing
@pytest.mark.parametrize("n, step_size, world_size", [(28, 8, 2), (29, 8, 4), (5, 4, 4), (64, 16, 1)])
def test_each_step_is_shared_out_among_the_processes(n, step_size, world_size):
    sampler = EpochSampler(n, seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    shares = [list(ShareSampler(sampler, step_size, rank, world_size)) for rank in range(world_size)]
    steps = [order[start:start + step_size] for start in range(0, n, step_size)]
    assert all(len(rank_steps) == len(steps) for rank_steps in shares)  # the same number of steps everywhere
    for k, step in enumerate(steps):
        parts = [rank_steps[k] for rank_steps in shares]
        assert len({len(part) for part in parts}) == 1  # the same share size everywhere (DDP's collectives)
        assert [i for part in parts for i in part if i != PADDING] == step  # together: the step, in order
        weights = [step_weight(n, step_size, k, world_size) for _ in parts]
        # DDP averages over the processes: the per-record losses summed, x weight, / world_size = the step's mean
        assert sum(w * sum(1 for i in part if i != PADDING) for w, part in zip(weights, parts)) / world_size == \
            pytest.approx(1.0)
    if world_size == 1:
        expected = list(torch.utils.data.BatchSampler(sampler, step_size, drop_last=False))
        assert shares[0] == expected  # one process: torch's batches, as before data-parallel training existed


# -------------------------------------------------------------------------------------------- DDP runs
@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    result = dataset_builds.build(root / "work", PROPERTY, dataset_builds.clean_rows(PROPERTY, 32))
    result.path.rename(root / result.path.name)
    return root


def run_ddp(datasets_root: Path, models_root: Path, *options: str) -> tuple[int, list[dict], str]:
    """(exit status, the JSON lines the processes printed, stderr) of tests/ddp_training.py with 2 processes. The
    run gets a session of its own, ended afterwards, so no process of it outlives the test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ddp_training", str(datasets_root), str(models_root), "--devices", "2",
         "--epochs", str(EPOCHS), "--ensemble", str(ENSEMBLE), *options],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=600)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # every process of the run has ended
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return process.returncode, sorted(lines, key=lambda line: line["rank"]), err


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / training.WEIGHTS_FILE)


@pytest.mark.slow  # about 4 runs of a tiny 2-member ensemble: 1.5 min on an idle 2-core machine
@pytest.mark.timeout(1200)
def test_ddp_run_killed_and_resumed_gives_the_uninterrupted_run_s_model(datasets_root, tmp_path, empty_registry):
    live = tmp_path / "live"
    status, finished, err = run_ddp(datasets_root, tmp_path / "uninterrupted", "--live-dir", str(live))
    assert status == 0, err[-3000:]
    for folder in (live, live / "member-1"):  # dvclive, from rank 0: one epoch per line
        assert json.loads((folder / "metrics.json").read_text())["epoch"] == EPOCHS - 1
        assert len((folder / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()) == EPOCHS + 1
    assert [line["rank"] for line in finished] == [0, 1]
    assert finished[0]["members"] == finished[1]["members"]  # the same history, hence decisions, on both ranks
    assert finished[1]["folder"] is None  # rank 0 alone writes the model
    uninterrupted = Path(finished[0]["folder"])

    # Both processes die (SIGKILL) after step 6 of member 1, in its second epoch: member 0 is complete, member 1
    # has the checkpoint of its first epoch, written by rank 0.
    models_root = tmp_path / "interrupted"
    status, finished, err = run_ddp(datasets_root, models_root, "--kill-after-steps", "6", "--kill-member", "1")
    assert status == -signal.SIGKILL and finished == [], err[-3000:]
    resume = models_root / ".resume" / f"matten-{PROPERTY}"
    assert sorted(p.name for p in (resume / "member-0").iterdir()) == ["member.json", "member.safetensors"]
    assert sorted(p.name for p in (resume / "member-1" / "run").iterdir()) == [training.LAST_CHECKPOINT,
                                                                                training.RUN_FILE]
    assert not (models_root / f"matten-{PROPERTY}").exists()

    status, finished, err = run_ddp(datasets_root, models_root)
    assert status == 0, err[-3000:]
    for line in finished:  # on both ranks: member 0 read back, member 1 continued after its first epoch
        assert [(m["resumed_after"], m["epochs_run"]) for m in line["members"]] == [(EPOCHS, EPOCHS), (1, EPOCHS)]
    resumed = Path(finished[0]["folder"])
    assert not resume.exists()
    # The same seed gives the same weights on rerun, and resuming after a kill changes nothing: bit for bit.
    expected, actual = weights(uninterrupted), weights(resumed)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    assert (uninterrupted / training.LOG_FILE).read_bytes() == (resumed / training.LOG_FILE).read_bytes()

    # The same kind of artefact as a single-process run, and zoo.load reads it.
    assert sorted(p.name for p in resumed.iterdir()) == ["config.json", "model.safetensors", "training_log.json"]
    recorded = json.loads((resumed / training.CONFIG_FILE).read_text())["training"]
    assert (recorded["devices"], recorded["strategy"], recorded["ensemble_size"]) == (2, "ddp", ENSEMBLE)
    store = registry.LocalStore(tmp_path / "store")
    store.publish(resumed, f"matten-{PROPERTY}", "0.1.0")
    model = zoo.load(f"matten-{PROPERTY}", store=store.root, endpoint=DEAD_ENDPOINT)
    assert model.net.seeds == [0, 1]
    prediction = model.predict(silicon())
    assert np.isfinite(prediction.raw).all() and prediction.spread is not None

    # One process taking whole steps makes the same run up to float summation order.
    folder, _ = training.train_property(PROPERTY, run_settings(devices=1, epochs=EPOCHS, ensemble=ENSEMBLE),
                                        datasets_root=datasets_root, models_root=tmp_path / "single")
    one_process = json.loads((folder / training.LOG_FILE).read_text())["members"]
    two_processes = json.loads((resumed / training.LOG_FILE).read_text())["members"]
    for one, two in zip(one_process, two_processes):
        for a, b in zip(one["epochs"], two["epochs"]):
            for key in ("train_loss", "val_loss", "learning_rate"):
                assert b[key] == pytest.approx(a[key], rel=1e-4), key
    for name, tensor in weights(folder).items():
        torch.testing.assert_close(actual[name], tensor, atol=1e-4, rtol=1e-4)
