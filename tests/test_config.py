"""zoo.core.config: params.yaml is the one home of every setting, each section has a schema, and the shared symmetry
settings reach every stage that analyses a structure."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymatgen.core import Structure

from tests.params_file import PARAMS, params_mapping, write_params
from zoo import properties
from zoo.core import config, environment, paths, symmetry
from zoo.data import cleaning, datasets, splits, validation
from zoo.data.sources import mp_api

REPO = Path(__file__).resolve().parents[1]
# Defaults a schema may keep, each with its reason.
ALLOWED_DEFAULTS = {
    # Models trained before ensembles existed record no ensemble_size; zoo audit reads those settings.
    (config.TrainSettings, "ensemble_size"),
    (config.TrainSettings, "separate_parts"),  # likewise for models trained before one network per part existed
    (config.Params, "properties"),  # the list of stages' items, not a setting
}


def _schemas() -> set[type]:
    nested = {cls for fields in config._NESTED.values() for cls in fields.values()}  # noqa: SLF001
    return set(config.SCHEMAS.values()) | nested | {config.TrainSettings, config.Params}


def test_the_schemas_hold_no_defaults():
    defaults = {(cls, item.name) for cls in _schemas() for item in dataclasses.fields(cls)
                if item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING}
    assert defaults <= ALLOWED_DEFAULTS


def test_params_yaml_fills_every_schema():
    params = config.load()
    assert params.properties == tuple(properties.PROPERTIES)
    for name, profile in params.train.profiles.items():
        settings = config.TrainSettings.from_params({k: v for k, v in profile.items() if k != config.PER_PROPERTY_KEY})
        assert settings.seed == 0, name


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
    column = next(c for c in datasets.dataset_columns("elastic", tight) if c.name == "crystal_system")
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
