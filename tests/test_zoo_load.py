"""zoo.load, the local store, the registry and the publish stage, with tiny untrained models written by
zoo.nn.training.save_model (these tests check the machinery: resolution, verification, refusals, output types).

The Hub tests run the real huggingface_hub client against the loopback Hub double (tests/fakes/hub.py); nothing
may reach a real host.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

import zoo
from tests.fakes.hub import Fault, serve
from tests.fakes.loopback import loopback_guard
from tests.params_file import train_settings
from zoo.nn import graphs, models, training
from zoo.nn.model_config import ModelConfig
from zoo.release import publishing as publish
from zoo.release import hub, loading, registry

# The shipped releases (zoo/registry.json) would answer zoo.load before the stores these tests build.
pytestmark = pytest.mark.usefixtures("empty_registry")

TINY = {"hidden_irreps": "4x0o+4x0e+2x1o+2x1e+2x2o+2x2e", "n_radial": 4, "radial_hidden": (8,), "species_dim": 8}
# A stiffness shift that keeps the untrained network's output positive definite (GPa; the 2 0e instances).
ELASTIC_SHIFT = (300.0, 200.0)
FINGERPRINT = "sha256:" + "ab" * 32
NAME = "matten-elastic"
DEAD_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


def silicon() -> Structure:
    """Diamond silicon, primitive fcc cell (a = 5.43 A)."""
    half = 5.43 / 2
    return Structure(Lattice([[0, half, half], [half, 0, half], [half, half, 0]]), ["Si", "Si"],
                     [[0, 0, 0], [0.25, 0.25, 0.25]])


def save_tiny_model(models_root: Path, prop: str = "elastic", seed: int = 0, **config) -> Path:
    overrides = {"output_shift": ELASTIC_SHIFT} if prop == "elastic" else {}
    net = models.MattenNet(ModelConfig(prop, **TINY, **overrides, **config, seed=seed))
    settings = train_settings(max_epochs=1, progress_bar=False, loss="mse")
    dataset = training.DatasetInfo(name=f"mp-{prop}-irreps", version="1.0.0", fingerprint=FINGERPRINT)
    return training.save_model(models_root / f"matten-{prop}", net, settings=settings, dataset=dataset,
                               log={"epochs": []}, profile="test")


def pipeline_outputs(root: Path, seed: int = 0) -> dict[str, Path]:
    """What the publish stage reads: a model folder, its dataset folder and the evaluate stage's metrics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = save_tiny_model(root / "models", seed=seed)
    dataset = root / "datasets" / "mp-elastic-irreps"
    (dataset / "data").mkdir(parents=True)
    pq.write_table(pa.table({"record_id": ["snapshot:elastic:row-0"]}), dataset / "data" / "train-00000-of-00001.parquet")
    (dataset / "dataset_version.json").write_text(json.dumps({"version": "1.0.0", "fingerprint": FINGERPRINT}))
    (dataset / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# mp-elastic-irreps (test)\n")
    weights_sha = json.loads((folder / "config.json").read_text())["weights"]["sha256"]
    scores = {"n": 3, "k_vrh_mae": 10.0, "component_mae": 5.0}
    reports = root / "reports"
    reports.mkdir()
    (reports / "elastic-metrics.json").write_text(json.dumps({
        "headline": "k_vrh_mae", "split": "test", "n_test": 3, "model": scores,
        "baselines": {"crystal_system_mean": {**scores, "k_vrh_mae": 50.0}}, "model_weights_sha256": weights_sha}))
    (reports / "elastic-metrics-per-crystal-system.json").write_text(json.dumps(
        {"model": {"cubic": scores}, "crystal_system_mean": {"cubic": {**scores, "k_vrh_mae": 40.0}}}))
    return {"models_root": root / "models", "datasets_root": root / "datasets", "reports_dir": reports}


def publish_locally(root: Path, version: str = "0.1.0") -> tuple[Path, dict]:
    store = root / "store"
    report = publish.publish_property("elastic", version=version, target="local", store=store,
                                      organisation="zoo-test", lineage=None,
                                      **pipeline_outputs(root))
    return store, report


def registry_file(path: Path, releases: dict | None = None, repo_id: str = f"zoo-test/{NAME}") -> Path:
    path.write_text(json.dumps({"format": registry.REGISTRY_FORMAT, "hub_organisation": "zoo-test", "models": {
        NAME: {"property": "elastic", "repo_id": repo_id, "releases": releases or {}}}}))
    return path


def rehash(store: Path, version: str = "0.1.0") -> None:
    """Record the current bytes of a stored version in versions.json (as if the store had been written so)."""
    folder = store / "models" / NAME / version
    index = store / "models" / NAME / registry.VERSIONS_FILE
    recorded = json.loads(index.read_text())
    recorded[version]["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    index.write_text(json.dumps(recorded))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    store, report = publish_locally(root)
    return root, store, report


# ------------------------------------------------------------------------------------------------ local store
def test_publish_local_then_load_predicts_an_elastic_tensor(local):
    from pymatgen.analysis.elasticity import ElasticTensor

    root, store, report = local
    assert report["dataset"]["published"] and report["model"]["version"] == "0.1.0"
    model = zoo.load(NAME, store=store, cache_dir=root / "cache", endpoint=DEAD_ENDPOINT)
    assert (model.source, model.version) == ("local store", "0.1.0")
    prediction = model.predict(silicon())
    assert isinstance(prediction.value, ElasticTensor)
    assert prediction.value.k_vrh == pytest.approx(prediction.derived["k_vrh"], rel=1e-9)
    assert prediction.derived["k_vrh"] > 0 and prediction.derived_error is None
    # The card: YAML header for the Hub, metrics with the baseline, provenance.
    assert model.card.text.startswith("---\n") and "library_name: e3nn" in model.card.text
    assert "crystal_system_mean" in model.card.text and FINGERPRINT in model.card.text
    assert "Not made by a DVC stage" in model.card.text  # published without a lineage
    # Equivariance carries through: a rotated structure gives the rotated stiffness.
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    rotated = Structure(Lattice(silicon().lattice.matrix @ rotation.T), ["Si", "Si"], silicon().frac_coords)
    np.testing.assert_allclose(model.predict(rotated).value, prediction.value.rotate(rotation, tol=1e-3),
                               atol=1e-3 * np.abs(prediction.value).max())


def test_a_version_is_never_published_twice_locally(local, tmp_path):
    root, store, _ = local
    options = dict(target="local", store=store, organisation="zoo-test",
                   datasets_root=root / "datasets", reports_dir=root / "reports")
    stored = store / "models" / NAME / "0.1.0"
    before = sorted(p.read_bytes() for p in stored.iterdir())
    # The very same model again (as `dvc repro --force` of an unchanged pipeline does): nothing is written.
    same = publish.publish_property("elastic", version="0.1.0", models_root=root / "models",
                                    **options)
    assert same["model"]["published"] is False
    # Another model under the same version: refused, the stored version untouched.
    retrained = pipeline_outputs(tmp_path / "retrained", seed=1)
    with pytest.raises(hub.VersionExistsError, match="model.safetensors.*never overwritten"):
        publish.publish_property("elastic", version="0.1.0", **{**options, **retrained})
    assert sorted(p.read_bytes() for p in stored.iterdir()) == before
    # A new model version reuses the published dataset version of the same fingerprint.
    again = publish.publish_property("elastic", version="0.2.0", models_root=root / "models", **options)
    assert again["dataset"]["published"] is False and again["model"]["published"] is True
    assert zoo.load(NAME, store=store, endpoint=DEAD_ENDPOINT).version == "0.2.0"
    assert zoo.load(NAME, "0.1.0", store=store, endpoint=DEAD_ENDPOINT).version == "0.1.0"


def test_shipped_release_loads_offline_and_is_never_replaced(tmp_path):
    root = tmp_path / "pipeline"
    (tmp_path / "zoo").mkdir()
    registry_path = registry_file(tmp_path / "zoo" / "registry.json")
    options = dict(target="shipped", organisation="zoo-test", lineage=None,
                   registry_path=registry_path)
    report = publish.publish_property("elastic", version="1.0.0", **options, **pipeline_outputs(root))
    release = registry.read_registry(registry_path).models[NAME].releases["1.0.0"]
    assert report["model"]["published"] and release.revision is None
    assert release.shipped_folder(registry_path) == tmp_path / "zoo" / "releases" / NAME / "1.0.0"
    model = zoo.load(NAME, store=tmp_path / "empty-store", registry_path=registry_path,
                     cache_dir=tmp_path / "cache", endpoint=DEAD_ENDPOINT)
    assert (model.source, model.version) == ("shipped", "1.0.0")
    assert model.predict(silicon()).derived["k_vrh"] > 0
    # Shipping the same model again changes nothing; another model under 1.0.0 is refused.
    registry_before = registry_path.read_bytes()
    again = publish.publish_property("elastic", version="1.0.0", models_root=root / "models",
                                     datasets_root=root / "datasets", reports_dir=root / "reports", **options)
    assert again["model"]["published"] is False and registry_path.read_bytes() == registry_before
    with pytest.raises(hub.VersionExistsError, match="never overwritten"):
        publish.publish_property("elastic", version="1.0.0", **options,
                                 **pipeline_outputs(tmp_path / "retrained", seed=1))
    assert registry_path.read_bytes() == registry_before


def test_the_newest_version_wins_across_local_store_and_registry(local, tmp_path):
    root, store, _ = local
    shipped = tmp_path / "zoo"
    shipped.mkdir()
    registry_path = registry_file(shipped / "registry.json")
    publish.publish_property("elastic", version="9.0.0", target="shipped", organisation="zoo-test",
                             registry_path=registry_path, models_root=root / "models",
                             datasets_root=root / "datasets", reports_dir=root / "reports")
    options = dict(store=store, registry_path=registry_path, cache_dir=tmp_path / "cache", endpoint=DEAD_ENDPOINT)
    assert (zoo.load(NAME, **options).source, zoo.load(NAME, **options).version) == ("shipped", "9.0.0")
    assert zoo.load(NAME, "0.1.0", **options).source == "local store"


def test_a_release_needs_a_revision_or_shipped_files(tmp_path):
    entry = {"revision": None, "shipped": None, "dataset": {}, "files": {"model.safetensors": "0" * 64}}
    with pytest.raises(ValueError, match="needs a Hub revision, shipped files, or both"):
        registry.read_registry(registry_file(tmp_path / "registry.json", {"1.0.0": entry}))


def test_unknown_name_suggests_the_close_match(local):
    with pytest.raises(registry.UnknownModelError) as error:
        zoo.load("mattenelastic", store=local[1])
    assert "Did you mean 'matten-elastic'" in str(error.value) and "matten-phonon" in str(error.value)


def test_offline_and_not_cached_is_a_clear_error(tmp_path):
    with pytest.raises(loading.ModelNotCachedError, match="cannot be reached") as error:
        zoo.load(NAME, "1.0.0", store=tmp_path / "empty", cache_dir=tmp_path / "cache",
                 registry_path=registry_file(tmp_path / "registry.json"), endpoint=DEAD_ENDPOINT)
    assert isinstance(error.value, hub.HubUnavailable)


@pytest.fixture
def copied_store(local, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(local[1], store)
    return store


def test_one_flipped_byte_is_refused_before_any_tensor_is_loaded(copied_store, monkeypatch):
    import safetensors.torch

    weights = copied_store / "models" / NAME / "0.1.0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    expected = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(safetensors.torch, "load", lambda *a: pytest.fail("weights were parsed before the check"))
    with pytest.raises(hub.ChecksumMismatchError) as error:
        zoo.load(NAME, "0.1.0", store=copied_store)
    message = str(error.value)
    assert "model.safetensors" in message and expected in message and hashlib.sha256(data).hexdigest() in message


class _Trap:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(copied_store, tmp_path):
    folder = copied_store / "models" / NAME / "0.1.0"
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Trap(marker))
    (folder / "model.safetensors").write_bytes(payload)
    config = json.loads((folder / "config.json").read_text())
    config["weights"]["sha256"] = hashlib.sha256(payload).hexdigest()  # every recorded hash agrees with the pickle
    (folder / "config.json").write_text(json.dumps(config))
    rehash(copied_store)
    with pytest.raises(ValueError, match="not a safetensors file"):
        zoo.load(NAME, "0.1.0", store=copied_store)
    assert not marker.exists()


def test_a_newer_format_version_asks_for_an_upgrade(copied_store):
    folder = copied_store / "models" / NAME / "0.1.0"
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = "mp-tensor-zoo/model/2"
    (folder / "config.json").write_text(json.dumps(config))
    rehash(copied_store)
    with pytest.raises(loading.FormatVersionError, match="newer than this code reads"):
        zoo.load(NAME, "0.1.0", store=copied_store)


def test_predict_reads_files_and_lists_and_names_bad_input(local, tmp_path):
    model = zoo.load(NAME, store=local[1])
    poscar = tmp_path / "POSCAR"
    silicon().to(filename=str(poscar))
    first, second = model.predict([silicon(), poscar], batch_size=1)
    np.testing.assert_allclose(first.value, second.value, atol=1e-9)
    assert second.source == str(poscar)
    bad = tmp_path / "bad.cif"
    bad.write_text("data_bad\nloop_\n_atom_site_label\nxx\n")
    with pytest.raises(zoo.InputError, match="bad.cif"):
        model.predict(bad)
    with pytest.raises(zoo.InputError, match=r"structures\[1\].*got int"):
        model.predict([silicon(), 3])
    with pytest.raises(zoo.InputError, match="no such file"):
        model.predict(tmp_path / "missing.cif")


@pytest.mark.parametrize("prop, parts, kind", [("dielectric", ["electronic", "ionic", "total"], "Tensor"),
                                               ("piezo", ["total"], "PiezoTensor"), ("phonon", ["dos"], "PhononDos")])
def test_each_property_returns_its_pymatgen_object(prop, parts, kind, tmp_path):
    folder = save_tiny_model(tmp_path / "models", prop)
    store = registry.LocalStore(tmp_path / "store")
    store.publish(folder, f"matten-{prop}", "0.1.0")
    prediction = zoo.load(f"matten-{prop}", store=store.root).predict(silicon())
    assert list(prediction.tensors) == parts and type(prediction.value).__name__ == kind
    assert json.loads(json.dumps(prediction.as_dict()))["property"] == prop


def test_a_dielectric_prediction_holds_three_parts_that_add_up(tmp_path):
    folder = save_tiny_model(tmp_path / "models", "dielectric", output_map="spd_log")
    store = registry.LocalStore(tmp_path / "store")
    store.publish(folder, "matten-dielectric", "0.1.0")
    prediction = zoo.load("matten-dielectric", store=store.root, endpoint=DEAD_ENDPOINT).predict(silicon())
    electronic, ionic, total = (np.asarray(prediction.tensors[part]) for part in ("electronic", "ionic", "total"))
    np.testing.assert_array_equal(total, electronic + ionic)
    assert prediction.raw.shape == (3, 6) and "likely_metal" not in [flag.code for flag in prediction.warnings]
    assert prediction.derived["eps_poly_total"] == pytest.approx(prediction.derived["eps_poly_electronic"]
                                                                 + prediction.derived["eps_poly_ionic"])
    described = json.loads(json.dumps(prediction.as_dict()))
    assert described["parts"] == ["electronic", "ionic", "total"]
    assert described["derived_units"]["eps_poly_total"] == "1"


def test_a_model_of_one_network_per_part_loads_with_each_networks_own_output_normalisation(tmp_path):
    """separate_parts (the release dielectric): each network's output scale and shift come from its own part's
    training targets and are kept in its weights only (the config's model_config has none), so loading accepts them."""
    config = ModelConfig("dielectric", **TINY, output_map="spd_log")
    net = models.build(config, seeds=[0, 0], member_parts=[("electronic",), ("ionic",)])
    for factor, member in zip((2.0, 3.0), net.members):
        member.output_scale.mul_(factor)  # as fit from the part's targets
        member.output_shift.add_(0.5)
    settings = train_settings(max_epochs=1, progress_bar=False, loss="mse", ensemble_size=1, separate_parts=True)
    dataset = training.DatasetInfo(name="mp-dielectric-irreps", version="1.0.0", fingerprint=FINGERPRINT)
    folder = training.save_model(tmp_path / "models" / "matten-dielectric", net, settings=settings, dataset=dataset,
                                 log={"members": []}, profile="test")
    store = registry.LocalStore(tmp_path / "store")
    store.publish(folder, "matten-dielectric", "0.1.0")
    model = zoo.load("matten-dielectric", store=store.root, endpoint=DEAD_ENDPOINT)
    batch = graphs.GraphBatch.collate(graphs.GraphCache(config.r_cut).graphs([silicon()]))
    torch.testing.assert_close(model.net.predict_cartesian(batch), net.predict_cartesian(batch))
    prediction = model.predict(silicon())
    np.testing.assert_array_equal(prediction.tensors["total"], np.asarray(prediction.tensors["electronic"])
                                  + np.asarray(prediction.tensors["ionic"]))


def test_a_metal_through_the_dielectric_model_and_diamond_through_the_phonon_model_carry_warnings(tmp_path):
    store = registry.LocalStore(tmp_path / "store")
    for prop in ("dielectric", "phonon"):
        store.publish(save_tiny_model(tmp_path / "models", prop), f"matten-{prop}", "0.1.0")
    copper = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])
    dielectric = zoo.load("matten-dielectric", store=store.root, endpoint=DEAD_ENDPOINT)
    flags = {flag.code: flag.message for flag in dielectric.predict(copper).warnings}
    assert flags["likely_metal"].startswith("Cu is probably a metal")
    # Si is a metalloid: no warning
    assert "likely_metal" not in [flag.code for flag in dielectric.predict(silicon()).warnings]
    phonon = zoo.load("matten-phonon", store=store.root, endpoint=DEAD_ENDPOINT)
    water_ice_like = Structure(Lattice.cubic(4.0), ["O", "H", "H"], [[0, 0, 0], [0.24, 0, 0], [0, 0.24, 0]])
    (flag,) = [flag for flag in phonon.predict(water_ice_like).warnings if flag.code == "beyond_phonon_grid"]
    assert "hydrogen" in flag.message
    assert flag.as_dict() in json.loads(json.dumps(phonon.predict(water_ice_like).as_dict()))["warnings"]


@pytest.mark.parametrize("prop", ["piezo", "phonon"])
def test_an_ensemble_model_predicts_the_members_mean_and_their_spread(prop, tmp_path):
    config = ModelConfig(prop, **TINY)
    settings = train_settings(max_epochs=1, progress_bar=False, loss="mse", ensemble_size=3)
    dataset = training.DatasetInfo(name=f"mp-{prop}-irreps", version="1.0.0", fingerprint=FINGERPRINT)
    folder = training.save_model(tmp_path / "models" / f"matten-{prop}", models.build(config, seeds=[0, 1, 2]),
                                 settings=settings, dataset=dataset, log={"members": []}, profile="test")
    store = registry.LocalStore(tmp_path / "store")
    store.publish(folder, f"matten-{prop}", "0.1.0")
    structure = Structure(Lattice.hexagonal(3.25, 5.2), ["Zn", "Zn", "O", "O"],  # wurtzite: polar, piezoelectric
                          [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.38], [2 / 3, 1 / 3, 0.88]])
    model = zoo.load(f"matten-{prop}", store=store.root, endpoint=DEAD_ENDPOINT)
    prediction = model.predict(structure)
    members = [loading._prediction(member.spec, "m", structure, member.predict_cartesian(
        graphs.GraphBatch.collate(graphs.GraphCache(config.r_cut).graphs([structure])))[0].numpy()).raw
        for member in model.net.members]
    np.testing.assert_allclose(prediction.raw, np.mean(members, axis=0), atol=1e-6)
    np.testing.assert_allclose(prediction.spread, np.std(members, axis=0, ddof=1), atol=1e-6)
    assert prediction.spread.shape == prediction.raw.shape and prediction.spread.max() > 0
    assert json.loads(json.dumps(prediction.as_dict()))["ensemble_spread"] == prediction.spread.tolist()


def test_ase_atoms_are_accepted_when_ase_is_installed(local):
    ase = pytest.importorskip("ase")
    from pymatgen.io.ase import AseAtomsAdaptor

    model = zoo.load(NAME, store=local[1])
    atoms = AseAtomsAdaptor.get_atoms(silicon())
    assert isinstance(atoms, ase.Atoms)
    np.testing.assert_allclose(model.predict(atoms).value, model.predict(silicon()).value, atol=1e-9)


# ------------------------------------------------------------------------------------------------------- Hub
@pytest.fixture(scope="module")
def loopback_only():
    with loopback_guard():
        yield


@pytest.fixture(scope="module")
def hub_published(loopback_only, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    with serve(token="hf_test_write_token_0123456789") as double:
        report = publish.publish_property("elastic", version="0.1.0", target="hub", organisation="zoo-test",
                                          endpoint=double.endpoint, token=double.token,
                                          **pipeline_outputs(root))
        yield double, root, report


def test_publish_to_the_hub_then_load_downloads_verifies_and_predicts_like_local(hub_published, tmp_path):
    double, root, report = hub_published
    assert report["dataset"]["published"] and report["dataset"]["repo_id"] == "zoo-test/mp-elastic-irreps"
    assert hub.list_versions("zoo-test/mp-elastic-irreps", "dataset", endpoint=double.endpoint) == \
        {"1.0.0": report["dataset"]["revision"]}
    registry_path = registry_file(tmp_path / "registry.json")
    options = dict(store=tmp_path / "empty-store", cache_dir=tmp_path / "cache", registry_path=registry_path)
    model = zoo.load(NAME, "0.1.0", endpoint=double.endpoint, **options)
    assert model.source == "hub"
    local = loading.load_resolved(loading.Resolved(NAME, None, "test", root / "models" / NAME, None))
    np.testing.assert_array_equal(model.predict(silicon()).value, local.predict(silicon()).value)
    # Later, with the Hub out of reach, the cached version loads without it.
    assert zoo.load(NAME, endpoint=DEAD_ENDPOINT, **options).source == "hub cache"
    with pytest.raises(registry.VersionNotFoundError, match="no version 9.9.9"):
        zoo.load(NAME, "9.9.9", endpoint=double.endpoint, **options)
    assert double.unhandled == []


def test_publishing_the_same_version_to_the_hub_is_refused(hub_published, tmp_path):
    double, root, report = hub_published
    options = dict(version="0.1.0", target="hub", organisation="zoo-test", endpoint=double.endpoint,
                   token=double.token, datasets_root=root / "datasets",
                   reports_dir=root / "reports")
    with pytest.raises(hub.VersionExistsError, match="already published in the Hub repository.*never overwritten"):
        publish.publish_property("elastic", **{**options, **pipeline_outputs(tmp_path / "retrained", seed=1)})
    # The same model again: recognised, nothing new committed, the tag still at the first commit.
    same = publish.publish_property("elastic", models_root=root / "models", **options)
    assert same["model"]["published"] is False
    assert hub.list_versions(f"zoo-test/{NAME}", "model", endpoint=double.endpoint) == \
        {"0.1.0": report["model"]["registry_release"]["revision"]}


def test_a_registered_release_is_pinned_and_a_cut_download_leaves_the_cache_clean(hub_published, tmp_path):
    double, root, report = hub_published
    release = report["model"]["registry_release"]
    registry_path = registry_file(tmp_path / "registry.json", {"0.1.0": release})
    options = dict(store=tmp_path / "empty-store", cache_dir=tmp_path / "cache", registry_path=registry_path,
                   endpoint=double.endpoint)
    double.schedule_download("model.safetensors", Fault.cut_body())
    with pytest.raises(hub.IncompleteDownloadError):
        zoo.load(NAME, **options)
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert "model.safetensors" not in cached and not any(p.endswith(".partial") for p in cached)
    model = zoo.load(NAME, **options)
    assert (model.version, model.path.name) == ("0.1.0", release["revision"])
    assert hashlib.sha256((model.path / "model.safetensors").read_bytes()).hexdigest() == \
        release["files"]["model.safetensors"]


# ------------------------------------------------------------------------------------------ zoo.datasets.load
@pytest.fixture
def nothing_built_here(tmp_path, monkeypatch):
    """A working directory, a checkout data folder and a local store without dataset builds."""
    from zoo.core import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "no-checkout-data")
    monkeypatch.setenv(registry.STORE_ENV, str(tmp_path / "empty-store"))


def test_datasets_load_works_from_any_directory_through_the_local_store(local, nothing_built_here, monkeypatch):
    import zoo.datasets

    monkeypatch.setenv(registry.STORE_ENV, str(local[1]))
    dataset = zoo.datasets.load("elastic")
    assert dataset["train"]["record_id"] == ["snapshot:elastic:row-0"]
    with pytest.raises(hub.HubUnavailable, match="not built locally .* the local store .* Hub failed"):
        zoo.datasets.load("elastic", version="9.9.9", endpoint=DEAD_ENDPOINT)


def test_datasets_load_falls_back_to_the_hub(hub_published, nothing_built_here, tmp_path):
    import zoo.datasets
    from tests import dataset_builds

    double = hub_published[0]
    built = dataset_builds.build(tmp_path / "build", "dielectric", dataset_builds.clean_rows("dielectric", 20))
    hub.publish_folder(built.path, "zoo-test/mp-dielectric-irreps", "dataset", "1.2.3", endpoint=double.endpoint,
                       token=double.token)
    dataset = zoo.datasets.load("zoo-test/mp-dielectric-irreps", version="1.2.3", endpoint=double.endpoint,
                                cache_dir=tmp_path / "cache")
    assert sum(len(split) for split in dataset.values()) == 20
    with pytest.raises(hub.HubNotFoundError, match="not built locally"):  # the registry's organisation has none
        zoo.datasets.load("dielectric", endpoint=double.endpoint, cache_dir=tmp_path / "cache")
