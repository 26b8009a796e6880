"""The releases shipped with the code (zoo/registry.json, zoo/releases/): the registry describes exactly the shipped
folders; each release loads offline on a fresh clone, in a fresh process, verified against the registry's sha256s,
and predicts physically sensible values for silicon.

The release stages (releases/dvc.yaml) write the folders and their registry entries; 1.0.0 was shipped before they
existed and stays as it is, outside DVC (its card records no DVC stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo import properties
from zoo.core import config
from zoo.core.io import sha256_file
from zoo.release import lineage, model_card, registry, shipping

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {name: model.latest() for name, model in registry.read_registry(registry.REGISTRY_PATH).models.items()}

# Run in a fresh interpreter with no store, an empty Hub cache and a Hub that refuses connections: only the
# shipped files can answer.
PREDICT_SILICON = """
import json, sys
import zoo
from pymatgen.core import Lattice, Structure
model = zoo.load(sys.argv[1])
silicon = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.469), ["Si"], [[0, 0, 0]])  # diamond, PBE a
prediction = model.predict(silicon)
print(json.dumps({"source": model.source, "version": model.version, "type": type(prediction.value).__name__,
                  "raw": prediction.raw.tolist(), "derived": prediction.derived}))
"""


def _offline_env(home: Path) -> dict[str, str]:
    return {"PATH": str(Path(sys.executable).parent), "HOME": str(home), "ZOO_STORE": str(home / "store"),
            "ZOO_CACHE": str(home / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_the_registry_describes_exactly_the_shipped_folders():
    """Every shipped release's entry names each file of its folder with its sha256, and every folder under
    zoo/releases/<model>/<version>/ has an entry: the four release stages share registry.json, which is no DVC
    output, so this is what holds it to the folders DVC and git track."""
    known = registry.read_registry(registry.REGISTRY_PATH)
    entries = {(name, version): release for name, model in known.models.items()
               for version, release in model.releases.items() if release.shipped is not None}
    folders = {(path.parent.name, path.name) for path in (ROOT / "zoo" / "releases").glob("*/*") if path.is_dir()}
    assert set(entries) == folders
    for (name, version), release in entries.items():
        folder = release.shipped_folder()
        assert folder == ROOT / "zoo" / "releases" / name / version
        assert release.files == {path.name: sha256_file(path) for path in folder.iterdir()}, (name, version)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert release.dataset == config["dataset"] and config["model_name"] == name


def test_every_model_has_a_shipped_release():
    assert set(SHIPPED) == {spec.model_name for spec in properties.PROPERTIES.values()}
    for name, release in SHIPPED.items():
        assert release is not None and release.shipped_folder().is_dir(), name


def test_release_versions_lists_exactly_the_releases_made():
    """params.yaml's release.versions names only releases that are made, so that the committed locks tell the truth:
    each listed version has its releases/dvc.lock entry, which ships that version's folder, with a registry entry
    and a card naming that stage; the lock holds no entry for a release not listed. Folders that no stage ships
    (1.0.0, or a version a newer one replaced in release.versions) stay in git outside DVC."""
    versions = config.load(ROOT / "params.yaml").release.versions
    lock_path = ROOT / "releases" / "dvc.lock"
    locked = set((yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}).get("stages") or {}) \
        if lock_path.is_file() else set()
    assert locked == {f"release@{prop}" for prop in versions}, "run `make release` and commit releases/dvc.lock"
    known = registry.read_registry(registry.REGISTRY_PATH)
    for prop, version in versions.items():
        spec, address = properties.get(prop), shipping.stage_address(prop)
        folder = f"zoo/releases/{spec.model_name}/{version}"
        assert set(lineage.lock_outputs(ROOT, address)) == {folder}
        assert known.models[spec.model_name].releases[version].shipped_folder() == ROOT / folder
        card = model_card.parse_front_matter((ROOT / folder / model_card.CARD_FILE).read_text(encoding="utf-8"))
        assert card["provenance"]["dvc_stage"] == address


@pytest.mark.parametrize("prop", sorted(config.load(ROOT / "params.yaml").release.versions))
def test_a_made_release_rerun_on_this_code_writes_its_config_byte_for_byte(prop, tmp_path):
    """`make release` reruns a listed release whenever the code changes, and the stage refuses a config.json that
    differs from the shipped one: the code must write the very same config for the same network and recorded
    settings (a field added since is left out where it holds the value an older config is read as)."""
    from safetensors.torch import load_file

    from zoo.core.train_config import TrainSettings
    from zoo.nn import models, training

    spec = properties.get(prop)
    folder = ROOT / "zoo" / "releases" / spec.model_name / config.load(ROOT / "params.yaml").release.versions[prop]
    if not folder.is_dir():
        pytest.skip(f"{folder} is not shipped yet")
    info = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    net = models.network(info)
    net.load_state_dict(load_file(folder / "model.safetensors"))
    settings = TrainSettings.from_record({key: value for key, value in info["training"].items() if key != "profile"})
    written = training.save_model(tmp_path / spec.model_name, net, settings=settings,
                                  dataset=training.DatasetInfo(**info["dataset"]), log={},
                                  profile=info["training"]["profile"], training_data=info.get("training_data"))
    assert (written / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    assert (written / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_release_loads_offline_in_a_fresh_process_and_predicts_silicon(name, tmp_path):
    done = subprocess.run([sys.executable, "-c", PREDICT_SILICON, name], cwd=tmp_path, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["source"], out["version"]) == ("shipped", SHIPPED[name].version)
    derived = out["derived"]
    if name == "matten-elastic":  # DFT (PBE) K of Si: 88-98 GPa
        assert out["type"] == "ElasticTensor" and 60 < derived["k_vrh"] < 130
    elif name == "matten-dielectric":  # electronic eps of Si: 11.7 (exp.), ~13 (PBE); ionic ~0 (one element)
        if "eps_poly_total" in derived:  # 1.1.0 on: electronic, ionic and their sum
            assert out["type"] == "Tensor" and 5 < derived["eps_poly_electronic"] < 25
            assert derived["eps_poly_total"] == pytest.approx(derived["eps_poly_electronic"]
                                                              + derived["eps_poly_ionic"])
        else:  # 1.0.0: the electronic part alone
            assert out["type"] == "Tensor" and 5 < derived["eps_poly"] < 25
    elif name == "matten-piezo":  # Si is centrosymmetric: an equivariant model must predict exactly zero
        assert out["type"] == "PiezoTensor" and max(abs(v) for row in out["raw"] for v in row) < 1e-6
    else:
        assert out["type"] == "PhononDos" and min(out["raw"]) >= 0 and derived["mean_frequency_cm"] > 0


# Libraries a cold `zoo.load` + predict has no use for: each would add from 0.3 s (sympy, huggingface_hub) to several
# seconds (torch._dynamo, lightning) to the 3 s that issue 13 allows (benchmarks/cli_and_cold_load.py measures it).
# Reading `prediction.value` is not part of it: pymatgen's tensor classes, with sympy, come in then (on demand).
NOT_FOR_SERVING = ("sympy", "torch._dynamo", "lightning", "pytorch_lightning", "datasets", "pyarrow", "pandas",
                   "great_expectations", "matplotlib", "huggingface_hub")
COLD_PREDICT = """
import json, sys
import zoo
from pymatgen.core import Lattice, Structure
model = zoo.load("matten-elastic")
prediction = model.predict(Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.469), ["Si"], [[0, 0, 0]]))
json.dumps(prediction.as_dict())
print(sorted(m for m in sys.argv[1:] if m in sys.modules))
"""


def test_cold_load_and_predict_import_none_of_the_libraries_serving_does_not_need(tmp_path):
    done = subprocess.run([sys.executable, "-c", COLD_PREDICT, *NOT_FOR_SERVING], cwd=tmp_path,
                          env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_card_prints_a_short_summary(name):
    from zoo.release import model_card

    path = SHIPPED[name].shipped_folder() / model_card.CARD_FILE
    card = model_card.ModelCard(path.read_text(encoding="utf-8"), path)
    summary = str(card)
    lines = summary.splitlines()
    assert len(lines) <= 25 < len(card.text.splitlines())  # the full card: 485-689 lines
    spec = properties.get(card.metadata["property"])
    assert lines[0] == f"{name} {SHIPPED[name].version}" and spec.units in lines[1]
    headline = card.metadata["test_metrics"]["headline"]
    assert any(headline in line for line in lines) and "model (this)" in summary
    assert all(baseline in summary for baseline in card.metadata["test_metrics"]["baselines"])
    assert "limits" in summary and "Partially occupied (disordered) structures are refused" in summary
    assert str(path) in lines[-1]
