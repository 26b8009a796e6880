"""Checks on the pipeline as `make repro` leaves it (CI runs the pipeline before the tests; skipped otherwise)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.properties import PROPERTIES

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "data" / "reports"
built = pytest.mark.skipif(
    not all((REPORTS / f"{p}-validation.json").is_file() for p in PROPERTIES),
    reason="the pipeline has not been run here (`make repro`)",
)


@built
def test_second_repro_has_nothing_to_do():
    """dvc status compares each stage's deps, params and outs with dvc.lock: empty means `dvc repro build` (what
    `make data` runs) would skip every stage up to the datasets."""
    dvc = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(dvc), "status", "--json", "--with-deps", "build"], cwd=REPO, capture_output=True, text=True, env=env,
                            check=True)
    assert json.loads(result.stdout or "{}") == {}, result.stdout


@built
@pytest.mark.parametrize("prop", list(PROPERTIES))
def test_every_record_is_accounted_for(prop):
    fetched = json.loads((REPORTS / f"{prop}-fetch.json").read_text())
    validated = json.loads((REPORTS / f"{prop}-validation.json").read_text())
    assert validated["n_raw"] == fetched["records_written"]
    assert validated["n_raw"] == validated["n_accepted"] + validated["n_quarantined"]
    assert sum(validated["reasons"].values()) == validated["n_quarantined"]
    if PROPERTIES[prop].is_tensor:
        assert validated["neumann_tolerance"] == 1e-3
        assert validated["neumann_pass_fraction"] >= 0.99
