"""The releases shipped with the code (zoo/registry.json, zoo/releases/): each loads offline on a fresh clone, in a
fresh process, verified against the registry's sha256s, and predicts physically sensible values for silicon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import properties
from zoo.release import registry

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


def test_every_model_has_a_shipped_release():
    assert set(SHIPPED) == {spec.model_name for spec in properties.PROPERTIES.values()}
    for name, release in SHIPPED.items():
        assert release is not None and release.shipped_folder().is_dir(), name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_release_loads_offline_in_a_fresh_process_and_predicts_silicon(name, tmp_path):
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "ZOO_STORE": str(tmp_path / "store"),
           "ZOO_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", PREDICT_SILICON, name], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["source"], out["version"]) == ("shipped", SHIPPED[name].version)
    derived = out["derived"]
    if name == "matten-elastic":  # DFT (PBE) K of Si: 88-98 GPa
        assert out["type"] == "ElasticTensor" and 60 < derived["k_vrh"] < 130
    elif name == "matten-dielectric":  # electronic eps of Si: 11.7 (exp.), ~13 (PBE); ionic ~0 (one element)
        assert out["type"] == "Tensor" and 5 < derived["eps_poly_electronic"] < 25
        assert derived["eps_poly_total"] == pytest.approx(derived["eps_poly_electronic"] + derived["eps_poly_ionic"])
    elif name == "matten-piezo":  # Si is centrosymmetric: an equivariant model must predict exactly zero
        assert out["type"] == "PiezoTensor" and max(abs(v) for row in out["raw"] for v in row) < 1e-6
    else:
        assert out["type"] == "PhononDos" and min(out["raw"]) >= 0 and derived["mean_frequency_cm"] > 0


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
