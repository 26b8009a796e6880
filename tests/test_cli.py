"""The `zoo` command (zoo.cli.main) on a local store written by the publish stage (tests/test_zoo_load.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_predict_prints_text_literally_with_units_and_matrices(tmp_path, capsys):
    path = tmp_path / "[red]x.cif"
    silicon().to(filename=str(path))
    assert cli.main(["predict", NAME, str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path} (Si): Elastic stiffness tensor")  # the name as given, no markup eaten
    assert "[GPa], rounded to 0.1" in out and "k_vrh = " in out and " GPa" in out.split("k_vrh = ")[1].splitlines()[0]
    matrix = [line.split() for line in out.splitlines() if line.startswith("    ") and "=" not in line]
    assert len(matrix) == 6 and all(len(row) == 6 for row in matrix)
    assert all(len(cell.split(".")[1]) == 1 for row in matrix for cell in row)  # rounded as stated
    assert "WARNING training_domain_unknown:" in out


def test_predict_json_carries_the_warnings(tmp_path, capsys):
    path = tmp_path / "Si.cif"
    silicon().to(filename=str(path))
    assert cli.main(["predict", NAME, str(path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["predictions"]
    assert entry["units"] == "GPa" and {"code": "training_domain_unknown"}.items() <= entry["warnings"][0].items()


def test_list_json_and_version(capsys):
    assert cli.main(["list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models[NAME]["local_store"] == ["0.1.0"] and models[NAME]["property"] == "elastic"
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("zoo (mp-tensor-zoo) ")


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "missing.cif")
    assert cli.main(["predict", NAME, missing]) == 1
    err = capsys.readouterr().err
    assert err == f"zoo predict: error: {missing}: no such file\n"
    with pytest.raises(zoo.InputError):
        cli.main(["--debug", "predict", NAME, missing])


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["info", NAME], ["info", "nosuchmodel"], ["--version"],
                                  ["--help"]])
def test_the_fast_commands_import_no_torch_e3nn_or_pymatgen(args, store):
    """What keeps `zoo list`, `zoo info`, `--help`, `--version` and name errors under a second (benchmarks/cli_and_cold_load.py
    measures them): the heavy libraries are never imported."""
    script = (f"import sys\nfrom zoo import cli\ntry:\n    cli.main({args!r})\nexcept SystemExit:\n    pass\n"
              "print(sorted(m for m in ('torch', 'e3nn', 'pymatgen', 'datasets', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, registry.STORE_ENV: str(store)})
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
