"""The train and evaluate stages: zoo.nn.training, zoo.nn.evaluation, zoo.nn.baselines.

Datasets here are real builds (the validate and build stages' code, through tests/dataset_builds.py's helpers) of 32
synthetic records on the test structures: tensors obeying Neumann's principle, so an equivariant model's
predictions must obey it too. Models are tiny and train for a few epochs: these tests check the machinery
(outputs, determinism, resume, metrics), not accuracy.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from tests import dataset_builds
from tests.params_file import PARAMS, SYMMETRY, train_settings
from zoo import properties
from zoo.core import derived, phonon_derived, tensors
from zoo.nn import baselines, evaluation, models, training
from zoo.nn.learning_curve import LearningCurveSettings
from zoo.nn.model_config import ModelConfig
from zoo.nn.training import loop
from zoo.properties import PHONON_GRID_CM

N_RECORDS = 32
TINY_MODEL = {"hidden_irreps": "4x0o+4x0e+2x1o+2x1e+2x2o+2x2e", "n_radial": 4, "radial_hidden": [8],
              "species_dim": 8, "invariant_hidden": 8}
GBM = PARAMS.evaluate.composition_gbm
# A cpu profile without its per-property changes.
BASE = {key: value for key, value in PARAMS.train.profiles["cpu"].items() if key != "per_property"}
TINY = dict(batch_size=8, learning_rate=0.01, progress_bar=False, threads=1, model=TINY_MODEL)


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    """Built 32-record datasets of dielectric and phonon: <root>/mp-<prop>-irreps."""
    root = tmp_path_factory.mktemp("datasets")
    for prop in ("dielectric", "phonon"):
        result = dataset_builds.build(root / f"work-{prop}", prop, dataset_builds.clean_rows(prop, N_RECORDS))
        result.path.rename(root / result.path.name)
    return root


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """An uninterrupted 3-epoch dielectric run through the train stage's function."""
    models_root = tmp_path_factory.mktemp("models")
    settings = train_settings(max_epochs=3, loss="mse", **TINY)
    live = models_root / "live"
    folder, result = training.train_property("dielectric", settings, datasets_root=datasets_root,
                                             models_root=models_root, live_dir=live)
    return settings, folder, result, live


def weights_of(folder):
    from safetensors.torch import load_file

    return load_file(folder / training.WEIGHTS_FILE)


# ------------------------------------------------------------------------------------------------- train
def test_train_stage_writes_a_loadable_model(trained, datasets_root):
    settings, folder, result, live = trained
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "training_log.json"]
    config = json.loads((folder / "config.json").read_text())
    version = json.loads((datasets_root / "mp-dielectric-irreps" / "dataset_version.json").read_text())
    assert config["format_version"] == training.MODEL_FORMAT
    assert config["dataset"]["fingerprint"] == version["fingerprint"]
    assert config["irreps"] == "1x0e+1x2e"
    assert config["target_columns"] == ["eps_electronic_irreps", "eps_ionic_irreps"]
    assert config["parts"] == ["electronic", "ionic", "total"]
    assert config["training"]["max_epochs"] == 3 and config["model_config"]["hidden_irreps"] == "4x0o+4x0e+2x1o+2x1e+2x2o+2x2e"
    # The training split's applicability domain, for the warnings of zoo.release.applicability
    data, _ = training.load_splits("dielectric", datasets_root)
    domain = config["training_data"]
    assert domain["n_structures"] == len(data["train"])
    assert domain["element_counts"] == dict(sorted(collections.Counter(
        symbol for structure in data["train"].structures for symbol in {s.specie.symbol for s in structure}).items()))
    volumes = [structure.volume / len(structure) for structure in data["train"].structures]
    densities = [float(structure.density) for structure in data["train"].structures]
    np.testing.assert_allclose(domain["volume_per_atom_a3"], [min(volumes), max(volumes)], rtol=1e-12)
    np.testing.assert_allclose(domain["density_g_cm3"], [min(densities), max(densities)], rtol=1e-6)
    log = json.loads((folder / "training_log.json").read_text())
    assert [entry["epoch"] for entry in log["epochs"]] == [0, 1, 2]
    assert log["best_epoch"] == int(np.argmin([entry["val_loss"] for entry in log["epochs"]]))
    assert set(log["n_records"]) == {"train", "validation", "test"}
    assert sum(log["n_records"].values()) == N_RECORDS
    assert not any("time" in key for entry in log["epochs"] for key in entry)  # deterministic content only
    assert (live / "metrics.json").is_file()
    assert not (folder.parent / ".resume" / "matten-dielectric").exists()  # cleared once the run is complete

    loaded = training.load_model(folder)
    np.testing.assert_array_equal(evaluation.predict(loaded.net, data["test"]),
                                  evaluation.predict(result.net, data["test"]))


def test_interrupted_run_resumes_to_the_same_weights(trained, datasets_root, tmp_path):
    """Stopped after epoch 1 and resumed from last.ckpt, the run ends with the uninterrupted run's exact weights
    (also: two runs with the same settings give identical weights on the CPU), and the dvclive metrics and plots
    it continues are the uninterrupted run's, row for row."""
    settings, folder, _, uninterrupted_live = trained
    models_root, live = tmp_path / "models", tmp_path / "live"
    stopped, partial = training.train_property("dielectric", settings, datasets_root=datasets_root,
                                               models_root=models_root, stop_after_epochs=1, live_dir=live)
    assert stopped is None and partial.members[-1].epochs_run == 1 and partial.net is None
    assert (models_root / ".resume" / "matten-dielectric" / training.LAST_CHECKPOINT).is_file()
    # A process killed after logging epoch 1 but before saving its checkpoint leaves that epoch's dvclive rows (here:
    # the uninterrupted run's); the resumed run trains epoch 1 again and must not log it twice.
    for table in (uninterrupted_live / "plots").rglob("*.tsv"):
        logged = live / table.relative_to(uninterrupted_live)
        logged.write_text(logged.read_text() + table.read_text().splitlines(keepends=True)[2])
    resumed_folder, resumed = training.train_property("dielectric", settings, datasets_root=datasets_root,
                                                      models_root=models_root, live_dir=live)
    (member,) = resumed.members
    assert member.resumed_after_epochs == 1 and member.epochs_run == 3
    expected, actual = weights_of(folder), weights_of(resumed_folder)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert (folder / "training_log.json").read_text() == (resumed_folder / "training_log.json").read_text()
    written = {path.relative_to(live) for path in live.rglob("*") if path.is_file()}
    assert written == {path.relative_to(uninterrupted_live) for path in uninterrupted_live.rglob("*") if path.is_file()}
    for name in sorted(written):
        assert (live / name).read_text() == (uninterrupted_live / name).read_text(), name


def test_an_ensemble_is_the_mean_of_its_seeds_and_resumes_member_by_member(trained, datasets_root, tmp_path,
                                                                          monkeypatch):
    settings, single_folder, _, _ = trained
    ensemble = dataclasses.replace(settings, ensemble_size=2)
    models_root = tmp_path / "models"
    # The process dies while member 1 trains: member 0, complete, is kept and not trained again on the rerun.
    fit = loop.fit

    def dies_in_member_1(data, member_settings, **options):
        if member_settings.seed == 1:
            raise KeyboardInterrupt
        return fit(data, member_settings, **options)

    monkeypatch.setattr(loop, "fit", dies_in_member_1)
    with pytest.raises(KeyboardInterrupt):
        training.train_property("dielectric", ensemble, datasets_root=datasets_root, models_root=models_root)
    monkeypatch.setattr(loop, "fit", fit)
    folder, fitted = training.train_property("dielectric", ensemble, datasets_root=datasets_root,
                                             models_root=models_root)
    assert fitted.members[0].resumed_after_epochs == 3 and fitted.members[0].epoch_seconds == []
    assert fitted.members[1].resumed_after_epochs is None and len(fitted.members[1].epoch_seconds) == 3
    assert not (models_root / ".resume" / "matten-dielectric").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["ensemble_seeds"] == [0, 1] and config["model_config"]["seed"] == 0
    assert [member["seed"] for member in json.loads((folder / "training_log.json").read_text())["members"]] == [0, 1]
    loaded = training.load_model(folder)
    assert isinstance(loaded.net, models.Ensemble) and loaded.net.seeds == [0, 1]
    # Member 0 is the single run with seed 0, bit for bit; the ensemble predicts the members' mean.
    for name, tensor in weights_of(single_folder).items():
        assert torch.equal(loaded.net.members[0].state_dict()[name], tensor), name
    data, _ = training.load_splits("dielectric", datasets_root)
    members = [evaluation.predict(member, data["test"]) for member in loaded.net.members]
    np.testing.assert_allclose(evaluation.predict(loaded.net, data["test"]), np.mean(members, axis=0), atol=1e-6)
    assert not np.allclose(members[0], members[1])


def test_members_trained_side_by_side_are_the_members_trained_one_after_another(trained, datasets_root, tmp_path):
    """train.workers 2: the members train in two worker processes (zoo.nn.training.parallel) and come back as the
    networks, histories and model files that one-after-another training in this process gives, bit for bit."""
    settings, single_folder, _, _ = trained
    ensemble = dataclasses.replace(settings, ensemble_size=2)
    folders, fits = {}, {}
    for workers in (2, 1):
        folders[workers], fits[workers] = training.train_property(
            "dielectric", ensemble, datasets_root=datasets_root, models_root=tmp_path / f"workers-{workers}",
            workers=workers)
    for side_by_side, in_turn in zip(fits[2].members, fits[1].members, strict=True):
        assert side_by_side.history == in_turn.history and side_by_side.best_epoch == in_turn.best_epoch
        assert side_by_side.config == in_turn.config
    for name in (training.WEIGHTS_FILE, training.CONFIG_FILE, training.LOG_FILE):
        assert (folders[2] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    for name, tensor in weights_of(single_folder).items():  # member 0 is the single run with seed 0
        assert torch.equal(fits[2].members[0].net.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="train.workers must be an integer >= 1"):
        training.FitPool(0)


def test_an_error_in_a_pool_s_block_stops_the_fits_running_in_its_workers(datasets_root):
    """A failure or Ctrl-C while workers train must not wait for their fits to end (minutes to hours)."""
    data, _ = training.load_splits("dielectric", datasets_root)
    endless = train_settings(max_epochs=100_000, early_stopping_patience=100_000, loss="mse", **TINY)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="interrupted"):
        with training.FitPool(2) as pool:
            loop.submit_fit(pool, training.fitting_splits(data), endless)
            time.sleep(5)  # the worker starts and trains
            raise RuntimeError("interrupted")
    assert time.perf_counter() - started < 60


def test_separate_parts_train_one_network_per_part_and_predict_their_sum(trained, datasets_root, tmp_path):
    """separate_parts: an electronic and an ionic network (two seeds each), each selected on its own validation
    loss; saved and loaded as one model whose parts are the groups' means and whose total is their sum."""
    settings, _, _, _ = trained
    separate = training.TrainSettings(**{**settings.as_dict(), "ensemble_size": 2, "separate_parts": True,
                                         "model": {**settings.model, "output_map": "spd_log"}})
    folder, fitted = training.train_property("dielectric", separate, datasets_root=datasets_root,
                                             models_root=tmp_path / "models")
    assert [member.config.parts for member in fitted.members] == [("electronic",)] * 2 + [("ionic",)] * 2
    config = json.loads((folder / "config.json").read_text())
    assert config["ensemble_parts"] == [["electronic"], ["electronic"], ["ionic"], ["ionic"]]
    assert config["parts"] == ["electronic", "ionic", "total"] and config["model_config"]["output_scale"] is None
    log = json.loads((folder / "training_log.json").read_text())
    assert [member["parts"] for member in log["members"]] == [["electronic"], ["electronic"], ["ionic"], ["ionic"]]
    loaded = training.load_model(folder).net
    assert loaded.parts == ("electronic", "ionic") and loaded.has_spread
    data, _ = training.load_splits("dielectric", datasets_root)
    electronic = np.mean([evaluation.predict(m, data["test"]) for m in loaded.members[:2]], axis=0)
    ionic = np.mean([evaluation.predict(m, data["test"]) for m in loaded.members[2:]], axis=0)
    np.testing.assert_allclose(evaluation.predict(loaded, data["test"]), np.concatenate([electronic, ionic], axis=1),
                               atol=1e-9)
    from zoo.nn import graphs

    batch = graphs.GraphBatch.collate(graphs.GraphCache(loaded.config.r_cut).graphs(data["test"].structures[:3]))
    mean, spread = loaded.predict_with_spread(batch)
    assert torch.equal(mean[:, 2], mean[:, 0] + mean[:, 1])
    torch.testing.assert_close(spread[:, 2], (spread[:, 0] ** 2 + spread[:, 1] ** 2).sqrt())
    with pytest.raises(ValueError, match="separate_parts needs"):
        training.fit_model(data, training.TrainSettings(**{**separate.as_dict(), "model": {"parts": ["ionic"]}}))


def test_a_resume_folder_of_another_run_is_discarded(tmp_path):
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / training.LAST_CHECKPOINT).write_bytes(b"not ours")
    (folder / training.RUN_FILE).write_text(json.dumps({"run_key": "another run"}))
    assert loop.resumable_checkpoint(folder, "this run") is None
    assert not folder.exists()


def test_loss_weights_count_every_irreps_block_equally():
    config = ModelConfig("elastic", output_scale=(2.0, 3.0, 5.0, 7.0, 11.0))
    weights = training.loss_weights(config).numpy()
    # 2x0e + 2x2e + 1x4e: blocks of 1, 1, 5, 5, 9 components; a unit relative error in one whole block adds 1/5.
    blocks = [slice(0, 1), slice(1, 2), slice(2, 7), slice(7, 12), slice(12, 21)]
    for block, scale in zip(blocks, config.output_scale):
        assert weights[block].sum() * scale**2 == pytest.approx(1 / 5)


def test_loss_irrep_weights_scale_each_named_irreps_blocks_share_of_the_loss():
    """{0e: 3}: the two isotropic blocks of a stiffness weigh three times the others, the weights averaging 1 over
    the five blocks (so the loss keeps its size); no weights is the unweighted loss exactly."""
    from zoo.nn.training.loss import block_weights

    config = ModelConfig("elastic", output_scale=(2.0, 3.0, 5.0, 7.0, 11.0))
    np.testing.assert_allclose(block_weights(config, {"0e": 3}).numpy(), np.array([3, 3, 1, 1, 1]) * 5 / 9)
    errors = torch.as_tensor(np.random.default_rng(3).normal(size=(4, 21)))
    blocks = [slice(0, 1), slice(1, 2), slice(2, 7), slice(7, 12), slice(12, 21)]
    weights = np.array([3, 3, 1, 1, 1]) * 5 / 9
    norms = np.array([[np.linalg.norm(e[b]) / s for b, s in zip(blocks, config.output_scale)] for e in errors.numpy()])
    weighted = training.Loss(config, "block_norm", irrep_weights={"0e": 3}).double()
    np.testing.assert_allclose(weighted(errors).numpy(), (norms * weights).mean(axis=1), atol=2e-6)
    # mse: each block's mean squared relative error (loss_weights), times its weight
    squares = np.array([[np.mean(e[b] ** 2) / s**2 for b, s in zip(blocks, config.output_scale)]
                        for e in errors.numpy()])
    np.testing.assert_allclose(training.Loss(config, "mse", irrep_weights={"0e": 3}).double()(errors).numpy(),
                               (squares * weights).mean(axis=1), rtol=1e-6)  # float32 weight buffers
    for kind in ("mse", "block_norm", "mandel"):
        plain = training.Loss(config, kind).double()
        assert torch.equal(training.Loss(config, kind, irrep_weights={}).double()(errors), plain(errors))
    with pytest.raises(ValueError, match=r"names \['1o'\]"):
        training.Loss(config, "block_norm", irrep_weights={"1o": 2})
    with pytest.raises(ValueError, match="predicts a DOS"):
        training.Loss(ModelConfig("phonon"), "mse", irrep_weights={"0e": 2})
    with pytest.raises(ValueError, match="loss_irrep_weights must map irreps"):
        dataclasses.replace(train_settings(), loss_irrep_weights={"0e": -1})


def test_every_loss_is_described_in_the_training_log():
    # the elastic profiles' mandel loss once had no description: its train stage failed after training (KeyError)
    from zoo.core.train_config import LOSSES
    from zoo.nn.training.loss import LOSS_KINDS

    assert tuple(LOSS_KINDS) == LOSSES  # the same kinds in the same order: Loss names them in its error message


def test_mean_frequency_loss_adds_the_squared_relative_mean_frequency_error_to_the_dos_mse():
    from zoo.nn.training.loss import MEAN_FREQUENCY_WEIGHT, mean_frequency

    rng = np.random.default_rng(4)
    targets = torch.as_tensor(rng.uniform(0.0, 1.0, size=(3, PHONON_GRID_CM.size)))
    errors = torch.as_tensor(rng.uniform(0.0, 1.0, size=targets.shape)) - targets  # a DOS is non-negative
    grid = torch.as_tensor(PHONON_GRID_CM)
    # the torch mean frequency is the evaluate stage's (zoo.core.phonon_derived), record by record
    np.testing.assert_allclose(mean_frequency(targets, grid).numpy(),
                               [phonon_derived.mean_frequency(PHONON_GRID_CM, dos) for dos in targets.numpy()],
                               rtol=1e-12)
    loss = training.Loss(ModelConfig("phonon"), "mse_mean_frequency").double()
    true = np.array([phonon_derived.mean_frequency(PHONON_GRID_CM, dos) for dos in targets.numpy()])
    predicted = np.array([phonon_derived.mean_frequency(PHONON_GRID_CM, dos)
                          for dos in (targets + errors).numpy()])
    expected = (errors.numpy() ** 2).mean(axis=1) + MEAN_FREQUENCY_WEIGHT * ((predicted - true) / true) ** 2
    np.testing.assert_allclose(loss(errors, targets).numpy(), expected, rtol=1e-6)  # float32 weight buffers
    # a DOS that keeps its shape and scales up has the same mean frequency: only the MSE part is left
    scaled = 0.5 * targets
    np.testing.assert_allclose(loss(scaled, targets).numpy(), (scaled.numpy() ** 2).mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the targets"):
        loss(errors)
    with pytest.raises(ValueError, match="needs a spectrum on a frequency grid"):
        training.Loss(ModelConfig("elastic"), "mse_mean_frequency")


def test_block_norm_loss_is_the_mean_of_scaled_block_error_norms_and_rotation_invariant():
    config = ModelConfig("elastic", output_scale=(2.0, 3.0, 5.0, 7.0, 11.0))
    loss = training.Loss(config, "block_norm").double()
    errors = torch.as_tensor(np.random.default_rng(1).normal(size=(4, 21)))
    blocks = [slice(0, 1), slice(1, 2), slice(2, 7), slice(7, 12), slice(12, 21)]
    expected = np.mean([[np.linalg.norm(e[b]) / s for b, s in zip(blocks, config.output_scale)]
                        for e in errors.numpy()], axis=1)
    np.testing.assert_allclose(loss(errors).numpy(), expected, atol=2e-6)  # the smoothing eps is 1e-6
    # Rotating the error tensor (a rotation acts on each irrep block by its Wigner D) leaves the loss unchanged,
    # whereas a sum of |components| would not be.
    rotation = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    formula = properties.get("elastic").formula
    rotated = tensors.cartesian_to_irreps(tensors.rotate(tensors.irreps_to_cartesian(errors, formula), rotation, rank=4),
                                          formula)
    np.testing.assert_allclose(loss(torch.as_tensor(rotated)).numpy(), loss(errors).numpy(), rtol=1e-9)
    assert not np.allclose(np.abs(np.asarray(rotated)).sum(1), errors.abs().sum(1).numpy())
    # Differentiable at zero error (the smoothed norm).
    zero = torch.zeros(1, 21, dtype=torch.float64, requires_grad=True)
    loss(zero).sum().backward()
    assert torch.isfinite(zero.grad).all() and float(loss(zero.detach())) == 0.0


@pytest.mark.parametrize("settings, message", [
    (dict(loss="mae"), "loss must be one of"),
    (dict(max_epochs=0), "max_epochs"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(plateau_factor=1.5), "plateau_factor"),
    (dict(deterministic="maybe"), "deterministic"),
    (dict(model={"seed": 3}), "seed"),
    (dict(model={"hidden": "4x0e"}), "unknown ModelConfig fields"),
    (dict(epochs=3), "unknown key"),
])
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        training.select_profile({"profile": "cpu", "workers": 1, "profiles": {"cpu": {**BASE, **settings}}})


def test_profile_selection():
    section = {"profile": "cpu", "workers": 1, "profiles": {"cpu": {**BASE, "max_epochs": 5}, "release": {**BASE, "max_epochs": 50}}}
    assert training.select_profile(section) == ("cpu", train_settings(max_epochs=5))
    assert training.select_profile(section, "release")[1].max_epochs == 50
    with pytest.raises(ValueError, match="profile must be one of"):
        training.select_profile(section, "gpu")


def test_per_property_settings_replace_the_profile_s_for_that_property_only():
    profile = {**BASE, "max_epochs": 5, "loss": "block_norm", "model": {"n_layers": 3, "r_cut": 4.0},
               "per_property": {"phonon": {"loss": "mse", "model": {"readout_irreps": "64x0e"}}}}
    section = {"profile": "cpu", "workers": 1, "profiles": {"cpu": profile}}
    phonon = training.select_profile(section, property_name="phonon")[1]
    assert (phonon.loss, phonon.max_epochs) == ("mse", 5)
    assert phonon.model == {"n_layers": 3, "r_cut": 4.0, "readout_irreps": "64x0e"}
    elastic = training.select_profile(section, property_name="elastic")[1]
    assert (elastic.loss, elastic.model) == ("block_norm", {"n_layers": 3, "r_cut": 4.0})
    assert training.select_profile(section)[1] == elastic
    with pytest.raises(ValueError, match="unknown properties \\['phonons'\\]"):
        training.select_profile({"profile": "cpu", "workers": 1, "profiles": {"cpu": {**BASE, "per_property": {"phonons": {}}}}})


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_writes_metrics_with_baselines_and_plots(trained, datasets_root, tmp_path):
    settings, folder, _, _ = trained
    curve = LearningCurveSettings(fractions=(0.5, 1.0), properties=("dielectric",))
    document = evaluation.evaluate_property("dielectric", settings, model_dir=folder, datasets_root=datasets_root,
                                            reports_dir=tmp_path, gbm=dataclasses.replace(GBM, max_iter=20),
                                            symmetry_settings=SYMMETRY, curve=curve)
    written = json.loads((tmp_path / "dielectric-metrics.json").read_text())
    assert written == {key: value for key, value in document.items() if key != "per_crystal_system"}
    assert json.loads((tmp_path / written["per_crystal_system_file"]).read_text()) == document["per_crystal_system"]
    assert document["headline"] == "eps_poly_mae"
    assert set(document["baselines"]) == {"crystal_system_mean", "composition_gbm", "non_equivariant"}
    for metrics in [document["model"], *document["baselines"].values()]:
        assert metrics["eps_poly_mae"] >= 0 and metrics["n"] == document["n_test"]
        assert {"component_mae", "relative_frobenius_error", "anisotropy_ratio_mae", "eps_poly_mae_eps15",
                "eps_poly_mae_ionic", "eps_poly_mae_total", "component_mae_total", "eigenvalue_violation_rate_ionic",
                "n_eps15"} <= set(metrics)
        assert "anisotropy_ratio_mae_ionic" not in metrics  # a ratio of near-zero eigenvalues: not reported
    assert {row["metric"] for row in document["published"]} == {"eps_poly_mae_eps15", "anisotropy_ratio_mae_eps15"}
    # Equivariance: the model obeys each test crystal's point group (to float32 rounding); the invariant-head
    # baseline does not.
    assert document["model"]["symmetry_violation"] < 1e-4
    assert document["baselines"]["non_equivariant"]["symmetry_violation"] > 100 * document["model"]["symmetry_violation"]
    systems = set(document["per_crystal_system"]["model"])
    assert sum(document["per_crystal_system"]["model"][s]["n"] for s in systems) == document["n_test"]
    assert (tmp_path / "dielectric-parity.png").stat().st_size > 0
    assert (tmp_path / "dielectric-per-crystal-system.png").stat().st_size > 0
    # Without an external split, the curve is measured on the test split; its 100% point is the model itself.
    curve_points = document["learning_curve"]["points"]
    assert document["learning_curve"]["split"] == "test" and "external" not in document
    assert [p["n_train"] for p in curve_points] == [round(0.5 * n_train(datasets_root)), n_train(datasets_root)]
    assert curve_points[-1]["eps_poly_mae"] == pytest.approx(document["model"]["eps_poly_mae"])
    assert (tmp_path / "dielectric-learning-curve.png").stat().st_size > 0
    # Every test record is either 'rare' (holds an element fewer than 5 training records hold) or 'common'.
    breakdown = document["rare_element_breakdown"]["test"]
    for name in ("model", *document["baselines"]):
        assert breakdown[name]["rare"]["n"] + breakdown[name]["common"]["n"] == document["n_test"]


def n_train(datasets_root) -> int:
    return json.loads((datasets_root / "mp-dielectric-irreps" / "dataset_version.json").read_text())["num_rows"]["train"]


def test_rare_elements_are_counted_over_training_records():
    from pymatgen.core import Lattice, Structure

    def split_of(*formulas):
        structures = tuple(Structure(Lattice.cubic(4.0), list(f), [[0, 0, 0], [0.5, 0.5, 0.5]]) for f in formulas)
        return training.SplitData("elastic", tuple(map(str, range(len(formulas)))), ("cubic",) * len(formulas),
                                  structures, np.zeros((len(formulas), 21)))

    train = split_of(*[("Na", "Cl")] * 5, *[("K", "Cl")] * 4)
    counts = {"Na": 5, "Cl": 9, "K": 4}
    assert evaluation.has_rare_element(split_of(("Na", "Cl"), ("K", "Br"), ("Cs", "Cl")), counts).tolist() == \
        [False, True, True]
    breakdown = evaluation.rare_element_breakdown(
        "elastic", train, split_of(("Na", "Cl"), ("K", "Cl")),
        {"model": evaluation.record_quantities("elastic", np.tile(elastic_irreps(isotropic_voigt(100, 50)), (2, 1)),
                                               [None, None])},
        evaluation.record_quantities("elastic", np.stack([elastic_irreps(isotropic_voigt(100, 50)),
                                                          elastic_irreps(isotropic_voigt(50, 20))]), [None, None]))
    assert breakdown["rare_elements_present"] == ["K"]
    # approx: the Voigt average of the irreps round trip is exact only to rounding (which depends on the BLAS kernels)
    assert breakdown["model"]["common"]["k_voigt_mae"] == pytest.approx(0.0, abs=1e-9)
    assert breakdown["model"]["rare"]["k_voigt_mae"] == pytest.approx(50.0, rel=1e-12)


def test_evaluate_phonon_model(datasets_root, tmp_path):
    settings = train_settings(max_epochs=1, loss="mse", **TINY)
    folder, _ = training.train_property("phonon", settings, datasets_root=datasets_root, models_root=tmp_path)
    document = evaluation.evaluate_property("phonon", settings, model_dir=folder, datasets_root=datasets_root,
                                            reports_dir=tmp_path, gbm=dataclasses.replace(GBM, max_iter=5), plots=False,
                                            symmetry_settings=SYMMETRY)
    assert document["headline"] == "dos_mse"
    assert set(document["baselines"]) == {"crystal_system_mean", "composition_gbm"}
    assert "symmetry_violation" not in document["model"]
    for key in ("dos_mse", "mean_frequency_relative_error", "fraction_mean_frequency_error_below_10pct",
                "cv_300k_mae_kb_per_atom", "r2_max_normalised", "wasserstein_cm", "mean_frequency_mae_cm",
                "cv_300k_mae_j_per_mol_k"):
        assert document["model"][key] is not None
    assert [row["published"] for row in document["published"]] == [0.70, 0.56, 0.63, 21.0, 1.32, 10.6]


def test_dielectric_metrics_per_part_on_known_values():
    """Electronic 2 I and ionic 3 I for every record, predicted as 2.5 I and 3 I: eps_poly errors 0.5 / 0 / 0.5;
    the one record with true electronic eps 20 is left out of the _eps15 subset; the linear baseline's ionic
    eigenvalue below 0 counts as a violation."""
    spec = properties.get("dielectric")
    eye = tensors.cartesian_to_irreps(np.eye(3), spec.formula)
    true = np.concatenate([np.stack([2 * eye] * 3 + [20 * eye]), np.stack([3 * eye] * 4)], axis=1)
    pred = true.copy()
    pred[:, :6] += 0.5 * eye
    pred[3, 6:] = -0.1 * eye  # an ionic tensor below 0
    structures = [None] * 4
    quantities = evaluation.record_quantities("dielectric", pred, structures)
    truth = evaluation.record_quantities("dielectric", true, structures)
    metrics = evaluation.group_metrics("dielectric", quantities, truth, np.ones(4, dtype=bool))
    assert metrics["eps_poly_mae"] == pytest.approx(0.5) and metrics["eps_poly_mae_eps15"] == pytest.approx(0.5)
    assert metrics["n_eps15"] == 3 and metrics["eps_poly_mae_ionic_eps15"] == pytest.approx(0.0)
    assert metrics["eps_poly_mae_ionic"] == pytest.approx(3.1 / 4)
    assert metrics["eps_poly_mae_total"] == pytest.approx((0.5 * 3 + abs(20.4 - 23)) / 4)
    assert metrics["eigenvalue_violation_rate_ionic"] == 0.25 and metrics["eigenvalue_violation_rate"] == 0.0
    assert metrics["anisotropy_ratio_mae"] == pytest.approx(0.0)


def test_phonon_metrics_on_known_spectra():
    """A spectrum shifted by one 20 cm^-1 bin: Wasserstein distance 20 cm^-1 and mean frequency 20 cm^-1 off;
    the same spectrum predicted exactly: zero; R^2 against sklearn's variance-weighted definition."""
    from pymatgen.core import Lattice, Structure
    from sklearn.metrics import r2_score

    grid = properties.PHONON_GRID_CM
    true = np.stack([np.exp(-((grid - centre) / 60.0) ** 2) for centre in (200.0, 400.0, 600.0)])
    true[:, -5:] = 0.0  # nothing reaches the grid's end: no grid warning to score
    pred = true.copy()
    pred[0] = np.roll(true[0], 1)
    structure = Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    quantities, truth = (evaluation.record_quantities("phonon", values, [structure] * 3) for values in (pred, true))
    metrics = evaluation.group_metrics("phonon", quantities, truth, np.ones(3, dtype=bool))
    assert metrics["wasserstein_cm"] == pytest.approx(20.0 / 3, rel=1e-6)
    assert metrics["mean_frequency_mae_cm"] == pytest.approx(20.0 / 3, rel=1e-3)
    assert metrics["r2_max_normalised"] == pytest.approx(r2_score(true, pred, multioutput="variance_weighted"))
    assert metrics["fraction_mean_frequency_error_below_10pct"] == 1.0
    assert metrics["cv_300k_mae_j_per_mol_k"] > 0 and metrics["grid_warning_recall"] is None


def test_evaluate_refuses_a_model_of_another_dataset_version(trained, datasets_root, tmp_path):
    settings, folder, _, _ = trained
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("model.safetensors", "training_log.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["dataset"]["fingerprint"] = "sha256:" + "0" * 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="retrain"):
        evaluation.evaluate_property("dielectric", settings, model_dir=copy, datasets_root=datasets_root,
                                     reports_dir=tmp_path, gbm=GBM, symmetry_settings=SYMMETRY)


def elastic_irreps(c_voigt) -> np.ndarray:
    return tensors.cartesian_to_irreps(tensors.stiffness_voigt_to_cartesian(np.asarray(c_voigt)), "ijkl=jikl=klij")


def isotropic_voigt(k: float, g: float) -> np.ndarray:
    lam = k - 2 * g / 3
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[np.arange(3), np.arange(3)] = lam + 2 * g
    c[np.arange(3, 6), np.arange(3, 6)] = g
    return c


def test_elastic_metrics_against_hand_values():
    true_voigt = [isotropic_voigt(100.0, 50.0), isotropic_voigt(200.0, 80.0)]
    pred_voigt = [isotropic_voigt(110.0, 50.0), -isotropic_voigt(200.0, 80.0)]  # the second is negative definite
    structures = [None, None]
    true = evaluation.record_quantities("elastic", np.stack([elastic_irreps(c) for c in true_voigt]), structures)
    pred = evaluation.record_quantities("elastic", np.stack([elastic_irreps(c) for c in pred_voigt]), structures)
    np.testing.assert_allclose(true["k_vrh"], [derived.elastic_properties(c)["k_vrh"] for c in true_voigt])
    metrics = evaluation.group_metrics("elastic", pred, true, np.array([True, True]))
    # Voigt moduli are linear in the tensor: defined for both; Hill ones need a positive definite prediction.
    assert metrics["k_voigt_mae"] == pytest.approx((10.0 + 400.0) / 2)
    assert metrics["k_voigt_mae_over_mad"] == pytest.approx(205.0 / 50.0)
    assert metrics["g_voigt_mae"] == pytest.approx(160.0 / 2)
    assert metrics["k_vrh_mae"] == pytest.approx(10.0) and metrics["n_moduli_undefined"] == 1
    assert metrics["fraction_not_positive_definite"] == 0.5
    only_first = evaluation.group_metrics("elastic", pred, true, np.array([True, False]))
    assert only_first["k_vrh_mae"] == pytest.approx(10.0) and only_first["k_vrh_mae_over_mad"] is None


def test_hill_moduli_of_a_nearly_singular_prediction_are_not_scored():
    """A positive definite but nearly singular prediction has a huge compliance: its Reuss bound would swamp a
    Hill MAE (REFERENCE.md), so it is counted as undefined; its Voigt moduli are still scored."""
    eigenvalues, vectors = np.linalg.eigh(isotropic_voigt(100.0, 50.0))
    eigenvalues[0] = 1e-8 * eigenvalues[-1]  # positive, but eight orders below the largest
    nearly_singular = (vectors * eigenvalues) @ vectors.T
    nearly_singular = (nearly_singular + nearly_singular.T) / 2
    assert 0 < np.linalg.eigvalsh(nearly_singular)[0] < 1e-6 * np.linalg.eigvalsh(nearly_singular)[-1]
    true = evaluation.record_quantities("elastic", elastic_irreps(isotropic_voigt(100.0, 50.0))[None], [None])
    pred = evaluation.record_quantities("elastic", elastic_irreps(nearly_singular)[None], [None])
    metrics = evaluation.group_metrics("elastic", pred, true, np.array([True]))
    assert metrics["fraction_not_positive_definite"] == 0.0 and metrics["n_moduli_undefined"] == 1
    k_voigt = derived.voigt_moduli(nearly_singular)[0]
    assert metrics["k_vrh_mae"] is None and metrics["k_voigt_mae"] == pytest.approx(abs(k_voigt - 100.0))


def test_phonon_metrics_against_hand_values():
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(3.0), ["Si"], [[0, 0, 0]])
    true_dos = np.exp(-((PHONON_GRID_CM - 400.0) / 80.0) ** 2)
    shifted = np.exp(-((PHONON_GRID_CM - 420.0) / 80.0) ** 2)
    true = evaluation.record_quantities("phonon", true_dos[None], [structure])
    pred = evaluation.record_quantities("phonon", shifted[None] - 0.01, [structure])  # slightly negative tails
    assert pred["dos"].min() == 0.0
    metrics = evaluation.group_metrics("phonon", pred, true, np.array([True]))
    assert metrics["dos_mse"] == pytest.approx(np.mean((np.clip(shifted - 0.01, 0, None) - true_dos) ** 2))
    assert 0 < metrics["mean_frequency_relative_error"] < 0.1
    assert metrics["fraction_mean_frequency_error_below_10pct"] == 1.0


def test_crystal_system_mean_and_composition_features():
    from pymatgen.core import Lattice, Structure

    nacl = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    split = training.SplitData("dielectric", ("a", "b", "c"), ("cubic", "cubic", "hexagonal"), (nacl,) * 3,
                               np.array([[1.0] * 6, [3.0] * 6, [10.0] * 6]))
    mean = baselines.CrystalSystemMean(split)
    query = training.SplitData("dielectric", ("d", "e"), ("cubic", "triclinic"), (nacl,) * 2, np.zeros((2, 6)))
    np.testing.assert_allclose(mean.predict(query), [[2.0] * 6, [14.0 / 3] * 6])
    features = baselines.element_fractions([nacl])
    assert features[0, 10] == 0.5 and features[0, 16] == 0.5 and features.sum() == 1.0
    assert properties.get("dielectric").target_part == "electronic"
