"""The `zoo` command (zoo.cli.main) on a local store written by the publish stage (tests/test_zoo_load.py)."""

from __future__ import annotations

import json

import pytest

import zoo
from tests.test_zoo_load import NAME, publish_locally, silicon
from zoo import cli
from zoo.release import registry

# The shipped releases (zoo/registry.json) would answer zoo.load before the stores these tests build.
pytestmark = pytest.mark.usefixtures("empty_registry")

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return publish_locally(tmp_path_factory.mktemp("cli"))[0]


@pytest.fixture(autouse=True)
def use_store(store, monkeypatch):
    monkeypatch.setenv(registry.STORE_ENV, str(store))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at full width, names not cut


def test_help_explains_where_models_come_from(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "zoo predict matten-elastic" in text and "HF_HUB_OFFLINE" in text and "ZOO_STORE" in text


def test_list_and_info(capsys):
    assert cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "matten-elastic" in listing and "0.1.0" in listing and "matten-phonon" in listing
    assert cli.main(["info", NAME]) == 0
    info = capsys.readouterr().out
    assert "local store" in info and "k_vrh_mae = 10" in info and "elastic (GPa)" in info


def test_predict_json_prints_the_tensor_and_derived_quantities(tmp_path, capsys):
    path = tmp_path / "Si.cif"
    silicon().to(filename=str(path))
    assert cli.main(["predict", NAME, str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (entry,) = document["predictions"]
    expected = zoo.load(NAME).predict(silicon())
    # A CIF keeps cell lengths and angles only, so the structure read back is the same crystal turned: compare
    # what does not depend on the frame (float32 network: 1e-4 relative).
    for invariant in ("k_vrh", "g_vrh", "universal_anisotropy"):
        assert entry["derived"][invariant] == pytest.approx(expected.derived[invariant], rel=1e-4), invariant
    assert entry["derived_units"]["k_vrh"] == "GPa" and entry["source"] == str(path)


def test_a_malformed_cif_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 3\nloop_\n_atom_site_label\nxx yy\n")
    assert cli.main(["predict", NAME, str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(bad) in captured.err and "Traceback" not in captured.err


def test_an_unknown_model_suggests_the_close_name(capsys):
    assert cli.main(["info", "mattenelastic"]) == 1
    assert "Did you mean 'matten-elastic'" in capsys.readouterr().err
