"""A fifth property, defined here alone, runs fetch -> clean -> validate -> build without touching another module.

The toy property is a rank-2 symmetric tensor (a thermal expansion tensor alpha_ij, 1/K), stored as a Cartesian 3x3
matrix, read from a tiny snapshot CSV in the matminer layout. Its spec is registered for the test only
(monkeypatch on ``zoo.properties.PROPERTIES``); every stage reads the spec, so nothing else needs to know about it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pymatgen.core import Structure

from zoo import properties
from zoo.core import config, symmetry, tensors
from zoo.data import cleaning, datasets, validation
from zoo.data.records import read_raw
from zoo.data.sources import snapshot
from zoo.properties.source_fields import RawValue, SnapshotField, SnapshotSource
from zoo.properties.spec import NEUMANN_METRIC, NEUMANN_TEXT, PropertySpec, TensorPart

STRUCTURES = Path(__file__).parent / "data" / "structures"
NAME = "thermal_expansion"
CSV_FILE = "toy/thermal_expansion.csv"


def _suite(path: Path) -> Path:
    """The toy's expectation suite: the value, structure and symmetry checks every tensor property shares."""
    def in_set(column: str, code: str) -> dict:
        return {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": column, "value_set": [True]},
                "meta": {"reason_code": code}, "severity": "critical"}

    expectations = [
        in_set("values_present", "missing_field"), in_set("values_shape_ok", "wrong_shape"),
        in_set("values_finite", "nan_value"), in_set("structure_parsed", "unparsable_structure"),
        in_set("elements_known", "unknown_element"), in_set("symmetry_found", "symmetry_undetermined"),
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "neumann_residual", "max_value": {"$PARAMETER": "neumann_tolerance"}},
         "meta": {"reason_code": "neumann_violation"}, "severity": "critical"},
    ]
    path.write_text(json.dumps({"name": f"validate-{NAME}", "id": None, "expectations": expectations, "meta": {},
                                "notes": None}))
    return path


def _spec(suite: Path) -> PropertySpec:
    return PropertySpec(
        name=NAME, title="Thermal expansion tensor", units="1/K", cartesian_shape=(3, 3), voigt_shape=(6,),
        voigt_kind="symmetric2", formula="ij=ji", irreps="1x0e+1x2e", tensor_parts=("total",), target_part="total",
        mp_endpoint="materials/thermal_expansion", mp_fields=(), derived=(),
        raw_values=(RawValue("alpha", (3, 3), "3x3 thermal expansion tensor, 1/K"),),
        source_keys=("alpha",), stored_columns=("alpha",), stored_form="cartesian", symmetric_value=True,
        dataset_parts=(TensorPart("alpha", "cartesian", "alpha", "thermal expansion tensor alpha_ij"),),
        validation_facts=((NEUMANN_METRIC[0], "1", NEUMANN_TEXT.format(floor="")),),
        snapshot=SnapshotSource(file=CSV_FILE, layout="matminer",
                                values=(SnapshotField("alpha", "alpha", "tensor", (3, 3)),),
                                frames={"alpha": "structure"}),
        suite_file=suite,
    )


def _rows() -> list[dict[str, str]]:
    """14 records that obey Neumann's principle (12 cubic, 2 tetragonal), one that cannot (an anisotropic
    tensor in a cubic crystal) and one whose tensor is not 3x3."""
    rng = np.random.default_rng(5)
    cubic = [Structure.from_file(STRUCTURES / f"cubic-mp-{n}.cif") for n in (101, 1156, 625)]
    tetragonal = [Structure.from_file(STRUCTURES / f"tetragonal-mp-{n}.cif") for n in (10676, 12565)]
    rows = []
    for i, structure in enumerate(cubic * 4 + tetragonal):
        raw = rng.normal(size=(3, 3)) * 1e-5
        alpha = symmetry.symmetrize(raw + raw.T, structure)
        rows.append({"material_id": f"mp-9{i:03d}", "formula": structure.composition.reduced_formula,
                     "poscar": structure.to(fmt="poscar"), "alpha": json.dumps(alpha.tolist())})
    rows.append({"material_id": "mp-9100", "formula": "anisotropic", "poscar": cubic[0].to(fmt="poscar"),
                 "alpha": json.dumps(np.diag([1e-5, 2e-5, 3e-5]).tolist())})
    rows.append({"material_id": "mp-9101", "formula": "wrong shape", "poscar": cubic[1].to(fmt="poscar"),
                 "alpha": json.dumps([[1e-5, 0.0], [0.0, 1e-5]])})
    return rows


@pytest.fixture
def toy(tmp_path, monkeypatch):
    spec = _spec(_suite(tmp_path / "suite.json"))
    monkeypatch.setitem(properties.PROPERTIES, NAME, spec)
    root = tmp_path / "snapshot"
    (root / "toy").mkdir(parents=True)
    rows = _rows()
    with open(root / CSV_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    digest = hashlib.sha256((root / CSV_FILE).read_bytes()).hexdigest()
    return spec, root, {"files": {CSV_FILE: {"sha256": digest, "rows": len(rows)}}}


def test_a_fifth_property_runs_fetch_clean_validate_build(toy, tmp_path):
    spec, root, manifest = toy
    raw = tmp_path / "data" / "raw.jsonl"
    fetched = snapshot.fetch_property(NAME, root, raw, manifest=manifest)
    assert (fetched.rows_read, fetched.records_written) == (16, 16)
    assert fetched.unreadable_fields == {"values.alpha": 1}
    assert {record["property"] for record in read_raw(raw)} == {NAME}

    clean_path, clean_report = tmp_path / "data" / "clean.parquet", tmp_path / "data" / "clean.json"
    cleaned = cleaning.clean_property(spec, raw, clean_path, clean_report, cleaning.CleanParams.from_params())
    assert cleaned.report["clean_issue"] == {"none": 15, "unparsable_tensor": 1}
    assert cleaned.report["frame_action"]["unresolved"] == 1

    result = validation.validate(pd.read_parquet(clean_path), NAME, validation.ValidationParams.from_params(), n_raw=16)
    assert (len(result.accepted), len(result.quarantined)) == (14, 2)
    assert result.report["reasons"] == {"unparsable_tensor": 1, "neumann_violation": 1}
    accepted, quarantine, report = (tmp_path / "data" / name for name in ("accepted.parquet", "quarantine.parquet",
                                                                          "validation.json"))
    validation.write_outputs(result, accepted, quarantine, report)

    built = datasets.build_dataset(NAME, accepted, report, tmp_path / "hub", version="0.1.0", salt="toy",
                                   symmetry_settings=config.load_section("symmetry"))
    assert sum(built.counts.values()) == 14 and all(built.counts.values())
    table = pq.read_table(built.path / datasets.parquet_path("train"))
    assert {"alpha_cartesian", "alpha_voigt", "alpha_irreps", "neumann_residual"} <= set(table.column_names)
    cartesian = np.asarray(table.column("alpha_cartesian").to_pylist())
    irreps = np.asarray(table.column("alpha_irreps").to_pylist())
    np.testing.assert_allclose(tensors.irreps_to_cartesian(irreps, spec.formula), cartesian, rtol=0, atol=1e-18)
    card = (built.path / "README.md").read_text()
    assert spec.title in card and built.fingerprint in card
