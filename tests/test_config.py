"""zoo.core.config: params.yaml is the one home of every setting, each section has a schema, and the shared symmetry
settings reach every stage that analyses a structure."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymatgen.core import Structure

from tests.params_file import PARAMS, params_mapping, write_params
from zoo import properties
from zoo.core import config, environment, paths, symmetry, train_config
from zoo.data import cleaning, dataset_schema, splits, validation
from zoo.data.sources import mp_api

REPO = Path(__file__).resolve().parents[1]
# Defaults a schema may keep, each with its reason.
ALLOWED_DEFAULTS = {
    (config.Params, "properties"),  # the list of stages' items, not a setting
}


def _schemas() -> set[type]:
    nested = {cls for fields in config._NESTED.values() for cls in fields.values()}  # noqa: SLF001
    return set(config.SCHEMAS.values()) | nested | {train_config.TrainSettings, config.Params}


def test_the_schemas_hold_no_defaults():
    defaults = {(cls, item.name) for cls in _schemas() for item in dataclasses.fields(cls)
                if item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING}
    assert defaults <= ALLOWED_DEFAULTS


def test_params_yaml_fills_every_schema():
    params = config.load()
    assert params.properties == tuple(properties.PROPERTIES)
    for name in params.train.profiles:
        assert train_config.TrainSettings.from_params(params.train.resolve(name)).seed == 0, name


@pytest.mark.parametrize(("sections", "message"), [
    ({"clean": {"frame_tie_toll": 1e-6}}, r"clean: unknown key\(s\) \['frame_tie_toll'\]"),
    ({"fetch": {"mp_api": {"chunksize": 10}}}, r"fetch.mp_api: unknown key\(s\) \['chunksize'\]"),
    ({"symmetry": {"symprec": 0}}, "symmetry.symprec must be a positive number"),
    ({"publish": {"target": "ftp"}}, "publish.target must be one of local, hub"),
    ({"train": {"profile": "fast"}}, "train.profile must be one of"),
    ({"release": {"versions": {"piezo": "1.1"}}}, "release.versions.piezo must be a semantic version"),
])
def test_a_bad_section_is_refused_by_name(sections, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        config.load(write_params(tmp_path / "params.yaml", **sections))


def test_release_versions_lists_the_releases_made_and_may_be_empty(tmp_path):
    """Only the releases that are made are listed (each one is a release stage that must have a lock entry):
    none is a valid state, and DVC's foreach makes no stage of an empty mapping."""
    mapping = params_mapping()
    mapping["release"]["versions"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(mapping))
    assert config.load(tmp_path / "params.yaml").release.versions == {}
    mapping["release"]["versions"] = ["1.1.0"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(mapping))
    with pytest.raises(ValueError, match=r"release.versions must map properties to versions \({} for none\)"):
        config.load(tmp_path / "params.yaml")


def test_missing_keys_and_unknown_sections_are_refused(tmp_path):
    mapping = params_mapping()
    del mapping["validate"]["workers"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**mapping, "valdiate": {}}))
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['valdiate'\]"):
        config.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(mapping))
    with pytest.raises(ValueError, match=r"validate: missing key\(s\) \['workers'\]"):
        config.load(tmp_path / "params.yaml")


def test_library_defaults_agree_with_params_yaml():
    """Keyword defaults kept for callers outside the pipeline are the values params.yaml gives the stages."""
    assert (symmetry.SYMPREC, symmetry.ANGLE_TOLERANCE) == (PARAMS.symmetry.symprec, PARAMS.symmetry.angle_tolerance)
    assert splits.DEFAULT_FRACTIONS == PARAMS.build.split_fractions
    keywords = inspect.signature(mp_api.fetch_property).parameters
    assert {name: keywords[name].default for name in PARAMS.fetch.mp_api.as_kwargs()} == \
        PARAMS.fetch.mp_api.as_kwargs()


def test_one_environment_definition_for_makefile_ci_and_tests():
    variables = environment.variables()
    assert variables["DVC_NO_ANALYTICS"] == "1" and variables["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "include environment.env" in (REPO / "Makefile").read_text()
    assert "source environment.env" in (REPO / ".ci" / "run").read_text()
    assert paths.ENVIRONMENT_FILE == REPO / "environment.env"



def test_stage_scripts_apply_the_environment_before_numpy_and_torch_load():
    """OpenBLAS's kernels (OPENBLAS_CORETYPE) and OpenMP's waiting policy are read once, when numpy and torch load:
    importing zoo.core.stage_cli sets them without loading either, and every stage script imports it first."""
    import ast
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key not in environment.variables()}
    probe = ("import json, os, sys; import zoo.core.stage_cli; "
             "print(json.dumps({'loaded': sorted(m for m in ('numpy', 'torch') if m in sys.modules), "
             "'env': {k: os.environ.get(k) for k in ('OPENBLAS_CORETYPE', 'OMP_WAIT_POLICY', 'DVC_NO_ANALYTICS')}}))")
    result = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, check=True,
                                       capture_output=True, text=True).stdout)
    assert result["loaded"] == []
    assert result["env"] == {key: environment.variables()[key] for key in result["env"]}
    scripts = sorted((REPO / "stages").glob("*.py"))
    assert scripts
    for script in scripts:
        imports = [node for node in ast.parse(script.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))
                   and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        first_third_party = next(node for node in imports if not (isinstance(node, ast.Import) and all(
            alias.name in sys.stdlib_module_names for alias in node.names)))
        assert isinstance(first_third_party, ast.ImportFrom), script.name
        assert (first_third_party.module, [a.name for a in first_third_party.names]) == ("zoo.core", ["stage_cli"]), \
            f"{script.name}: the first non-standard-library import must be `from zoo.core import stage_cli`"

def _strained_cubic() -> Structure:
    """A cubic crystal strained by 0.5% along x: cubic at the Materials Project's symprec 0.1 A, tetragonal at
    0.001 A."""
    structure = Structure.from_file(REPO / "tests" / "data" / "structures" / "cubic-mp-101.cif")
    structure.apply_strain([0.005, 0.0, 0.0])
    return structure


def test_changing_symprec_in_params_changes_every_stage_together(tmp_path):
    path = write_params(tmp_path / "params.yaml", symmetry={"symprec": 0.001})
    structure = _strained_cubic()
    shared = config.load_section("symmetry")
    tight = config.load_section("symmetry", path)
    assert shared.analyze(structure).crystal_system == "cubic"
    assert tight.analyze(structure).crystal_system == "tetragonal"
    # clean and validate build their parameters from the file; evaluate and `zoo audit` analyse with the
    # SymmetryConfig they load from it, which tests/test_audit.py runs end to end
    # (test_symprec_in_params_reaches_evaluate_and_audit).
    assert cleaning.CleanParams.from_params(path).symprec == 0.001
    assert validation.ValidationParams.from_params(path).analyze(structure).crystal_system == "tetragonal"
    # build: the dataset card's glossary states the tolerances the crystal systems were found with.
    column = next(c for c in dataset_schema.dataset_columns("elastic", tight) if c.name == "crystal_system")
    assert "symprec 0.001 A" in column.description
    # The one Neumann tolerance: clean's neumann_rtol and validate's neumann_tolerance are the same setting.
    path = write_params(tmp_path / "params.yaml", symmetry={"neumann_tolerance": 2e-3})
    assert cleaning.CleanParams.from_params(path).neumann_rtol == 2e-3
    assert validation.ValidationParams.from_params(path).neumann_tolerance == 2e-3


def test_no_environment_override_of_the_params():
    """Settings that change a stage's outputs come from params.yaml only (DVC sees them); the environment holds
    only runtime choices (README: 'Environment variables')."""
    import ast

    found = []
    for path in sorted((REPO / "zoo").rglob("*.py")) + sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith(("MPTZ_FETCH", "ZOO_PUBLISH")):
                found.append(f"{path.relative_to(REPO)}: {node.value}")
    assert found == []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("MP_API_KEY", "HF_ENDPOINT", "HF_TOKEN", "ZOO_CACHE", "ZOO_STORE", "ZOO_HUB_ORG", "MPTZ_CACHE_DIR"):
        assert name in readme, name
    assert np.isfinite(PARAMS.symmetry.neumann_tolerance)


# ------------------------------------------------------------------------------------------ training profiles
def test_every_profile_resolves_to_complete_settings_for_every_property():
    """select_profile (TrainConfig.resolve, then TrainSettings with every key and the ModelConfig field check) for
    each profile of params.yaml and each property: a profile missing a setting or naming a wrong one fails here."""
    from zoo.nn import training
    from zoo.nn.model_config import ModelConfig

    for name in PARAMS.train.profiles:
        for prop in PARAMS.properties:
            settings = training.select_profile(PARAMS.train, name, prop)[1]
            assert isinstance(settings, train_config.TrainSettings)
            ModelConfig(prop, **settings.model)  # the model fields make a valid config for the property


def test_the_gpu_profile_takes_release_s_per_property_choices():
    """gpu extends release: for every property its loss, ensemble size and the model fields gpu does not write
    itself (heads, output constraints, embeddings) are release's, whatever release says; what gpu writes (hardware,
    budget, model size) is its own."""
    from zoo.nn import training

    gpu_profile = PARAMS.train.profiles["gpu"]
    assert gpu_profile[train_config.EXTENDS_KEY] == "release"
    assert not {"loss", "ensemble_size"} & set(gpu_profile), "gpu would override release's per-property choices"
    ensembles = set()
    for prop in PARAMS.properties:
        release = training.select_profile(PARAMS.train, "release", prop)[1]
        gpu = training.select_profile(PARAMS.train, "gpu", prop)[1]
        assert (gpu.loss, gpu.ensemble_size) == (release.loss, release.ensemble_size), prop
        inherited = {k: v for k, v in release.model.items() if k not in gpu_profile["model"]}
        assert {k: gpu.model[k] for k in inherited} == inherited, prop
        assert {k: gpu.model[k] for k in gpu_profile["model"]} == gpu_profile["model"], prop
        assert gpu.max_epochs == gpu_profile["max_epochs"] and gpu.accelerator == gpu_profile["accelerator"], prop
        ensembles.add(gpu.ensemble_size)
    assert max(ensembles) > 1  # the phonon ensemble came along


def test_extends_resolution_order_and_its_errors():
    base = {key: value for key, value in PARAMS.train.profiles["cpu"].items()
            if key not in (train_config.PER_PROPERTY_KEY, train_config.EXTENDS_KEY)}
    profiles = {
        "a": {**base, "max_epochs": 5, "loss": "block_norm", "model": {"n_layers": 2, "species_dim": 8},
              "per_property": {"phonon": {"loss": "mse", "max_epochs": 7, "model": {"species_dim": 4}}}},
        "b": {"extends": "a", "max_epochs": 50, "model": {"n_layers": 3},
              "per_property": {"elastic": {"batch_size": 8}}},
        "c": {"extends": "b", "learning_rate": 0.1},
    }
    train = train_config.TrainConfig("c", profiles, 1)
    phonon = train.resolve("c", "phonon")
    # a < a.per_property < b < b.per_property < c: b's own max_epochs beats a's per-property 7; model field by field
    assert (phonon["loss"], phonon["max_epochs"], phonon["learning_rate"]) == ("mse", 50, 0.1)
    assert phonon["model"] == {"n_layers": 3, "species_dim": 4}
    elastic = train.resolve("c", "elastic")
    assert (elastic["loss"], elastic["batch_size"], elastic["model"]) == ("block_norm", 8, {"n_layers": 3,
                                                                                          "species_dim": 8})
    assert train.resolve("b")["batch_size"] == base["batch_size"]  # no property: no per-property settings
    with pytest.raises(ValueError, match="extends names 'z', which is not a profile"):
        train_config.TrainConfig("a", {**profiles, "d": {"extends": "z"}}, 1)
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        train_config.TrainConfig("a", {**profiles, "a": {**profiles["a"], "extends": "b"}}, 1)
    with pytest.raises(ValueError, match="per_property must map property names"):
        train_config.TrainConfig("a", {"a": {**base, "per_property": {"phonon": 3}}}, 1)
    with pytest.raises(ValueError, match=r"training profile: missing key\(s\) \['devices'\]"):
        train_config.TrainSettings.from_params({k: v for k, v in base.items() if k != "devices"})


def test_settings_recorded_before_a_setting_existed_read_with_its_old_value():
    recorded = {k: v for k, v in PARAMS.train.resolve("cpu").items() if k not in train_config.RECORDED_DEFAULTS}
    settings = train_config.TrainSettings.from_record(recorded)
    assert (settings.devices, settings.num_nodes, settings.strategy, settings.ensemble_size) == (1, 1, "auto", 1)
    assert set(train_config.RECORDED_DEFAULTS) <= {item.name for item in dataclasses.fields(train_config.TrainSettings)}
    shipped = sorted((REPO / "zoo" / "releases").glob("*/*/config.json"))
    assert shipped
    for path in shipped:  # the shipped models' recorded settings
        training = {k: v for k, v in json.loads(path.read_text())["training"].items() if k != "profile"}
        assert train_config.TrainSettings.from_record(training).world_size == 1, path


@pytest.mark.parametrize(("changes", "message"), [
    ({"devices": 2}, "2 processes need strategy 'ddp'"),
    ({"devices": 2, "num_nodes": 2, "strategy": "ddp", "batch_size": 6}, "batch_size 6 must be a multiple of"),
    ({"strategy": "ddp_spawn"}, "strategy must be one of"),
    ({"devices": 0}, "devices must be an integer >= 1"),
])
def test_bad_parallel_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        train_config.TrainSettings.from_params({**PARAMS.train.resolve("cpu"), **changes})
