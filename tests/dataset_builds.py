"""Synthetic inputs of the build stage and the checks of a built repository, shared by the build's tests
(tests/test_datasets.py, tests/test_splits.py) and the tests that build a small dataset (audit, distributed, ...).

Clean records are made here in the clean stage's format: real structures (tests/data/structures), symmetry from
zoo.core.symmetry, tensors that obey Neumann's principle (group averages of random tensors). The real validate stage
(zoo.data.validation) turns them into the build's inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from e3nn import o3
from pymatgen.core import Structure

from tests.params_file import SYMMETRY
from zoo import properties
from zoo.core import polarity, symmetry, tensors
from zoo.core.io import canonical_json
from zoo.data import dataset_schema as schema
from zoo.data import datasets as zd
from zoo.data import splits, validation
from zoo.properties import PHONON_GRID_CM

# The checkout's validate params, computed in this process (workers 1).
VALIDATION = dataclasses.replace(validation.ValidationParams.from_params(), workers=1)

REPO = Path(__file__).resolve().parent.parent
STRUCTURES = Path(__file__).parent / "data" / "structures"
SALT = "test-salt"
# The build's keyword arguments that every test shares.
SALTED = {"salt": SALT, "symmetry_settings": SYMMETRY}
# Records per synthetic dataset: the 14 test structures once each, then the 3 cubic ones again, so that the cubic
# stratum fills every split. Elastic and piezo are smaller: zoo.core.derived takes ~0.2 s per elastic tensor.
SIZES = {"elastic": 20, "dielectric": 30, "piezo": 20, "phonon": 30}


# ----------------------------------------------------------------------------------------- synthetic inputs
@functools.cache
def _structures() -> tuple[tuple[Structure, symmetry.SymmetryInfo], ...]:
    loaded = []
    for path in sorted(STRUCTURES.glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen's CIF parser reports coordinates it rounded
            structure = Structure.from_file(path)
        loaded.append((structure, symmetry.analyze(structure)))
    return tuple(loaded)


def _values(prop: str, info: symmetry.SymmetryInfo, rng: np.random.Generator, symmetric: bool = True) -> dict:
    """Source-like values; with `symmetric`, tensors obeying Neumann's principle (group averages)."""
    average = (lambda t: symmetry.symmetrize(t, info)) if symmetric else (lambda t: t)
    if prop == "elastic":
        a = rng.normal(size=(6, 6))
        stiffness = average(tensors.voigt_to_cartesian(30.0 * (a @ a.T + 6 * np.eye(6)), "stiffness"))
        return {"stiffness_voigt": tensors.stiffness_cartesian_to_voigt(0.5 * (stiffness + stiffness.transpose(2, 3, 0, 1)))}
    if prop == "dielectric":
        def positive(scale):
            a = rng.normal(size=(3, 3))
            return average(scale * a @ a.T)

        electronic, ionic = np.eye(3) + positive(1.0), positive(3.0)
        return {"electronic": electronic, "ionic": ionic, "total": electronic + ionic}
    if prop == "piezo":
        e = average(tensors.piezo_voigt_to_cartesian(rng.normal(size=(3, 6))))
        if np.abs(e).max() < 1e-9:
            e = np.zeros((3, 3, 3))  # the point group forbids piezoelectricity; the average is rounding noise
        return {"piezo_voigt": tensors.piezo_cartesian_to_voigt(e)}
    dos = np.abs(rng.normal(size=len(PHONON_GRID_CM)))
    return {"frequencies_cm": PHONON_GRID_CM.copy(), "dos": dos / dos.max()}


def clean_rows(prop: str, n: int, seed: int = 0) -> list[dict]:
    """n good records in the clean stage's format. The 14 test structures come once each, then the 3 cubic ones
    again, so that the cubic stratum fills every split. Phonon's first record has no material id (as the
    snapshot's Mg3Bi2 row)."""
    rng = np.random.default_rng(seed)
    structures = _structures()
    rows = []
    for k in range(n):
        structure, info = structures[k] if k < len(structures) else structures[k % 3]
        rows.append({
            "record_id": f"test:{prop}:row-{k:05d}", "property": prop,
            "material_id": None if prop == "phonon" and k == 0 else f"mp-{900000 + k}",
            "formula": structure.composition.reduced_formula,
            "structure_json": canonical_json(structure.as_dict()), "n_sites": len(structure),
            "volume": structure.volume, "crystal_system": info.crystal_system,
            "space_group_number": info.space_group_number, "space_group_symbol": info.space_group_symbol,
            "point_group": info.point_group, "laue_class": info.laue_class,
            "is_centrosymmetric": info.is_centrosymmetric, "original_frame": "structure", "frame_action": "none",
            "frame_evidence": "unique" if properties.get(prop).is_tensor else None,
            "frame_rotation": np.eye(3).tolist(), "frame_residual_before": 0.0, "frame_residual_after": 0.0,
            "clean_issue": None,
            "provenance_json": canonical_json({"file": f"test/{prop}.csv", "retrieved_with": "mp-tensor-zoo test",
                                               "row": k, "sha256": "ab" * 32, "source": "snapshot"}),
            "reported_json": "{}",
            **{key: np.asarray(value).tolist() for key, value in _values(prop, info, rng).items()},
        })
        if prop == "piezo":  # a tetrahedral binary (GaSb) has one polarity per compound (zoo.core.polarity)
            compound, e_long = polarity.piezo_bond_longitudinal(np.array(rows[-1]["piezo_voigt"]), structure, info)
            if compound is not None and e_long < 0:
                rows[-1]["piezo_voigt"] = (-np.array(rows[-1]["piezo_voigt"])).tolist()
    return rows


def with_bad_records(prop: str, rows: list[dict]) -> list[dict]:
    """`rows` plus two records validate must quarantine: a clean duplicate, and a physics failure (a tensor that
    breaks the cubic point group's symmetry, or a negative DOS)."""
    duplicate = {**rows[1], "record_id": f"test:{prop}:row-90000", "clean_issue": "duplicate_identical"}
    broken = {**rows[0], "record_id": f"test:{prop}:row-90001", "material_id": "mp-990001"}
    if prop == "phonon":
        broken["dos"] = [-0.5, *rows[0]["dos"][1:]]
    else:
        cubic = _structures()[0][1]
        broken.update({k: np.asarray(v).tolist() for k, v in
                       _values(prop, cubic, np.random.default_rng(9), symmetric=False).items()})
    return rows + [duplicate, broken]


def validate_into(folder: Path, prop: str, clean: list[dict]) -> tuple[Path, Path, dict]:
    """Run the real validate stage (zoo.data.validation) on clean records; its outputs are the build's inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    result = validation.validate(pd.DataFrame(clean), prop, VALIDATION)
    accepted, report = folder / f"{prop}.accepted.parquet", folder / f"{prop}-validation.json"
    validation.write_outputs(result, accepted, folder / f"{prop}.quarantine.parquet", report)
    return accepted, report, result.report


def build(folder: Path, prop: str, clean: list[dict], **options) -> zd.BuildResult:
    accepted, report, _ = validate_into(folder / "inputs", prop, clean)
    options = {"version": "1.2.3", "salt": SALT, "symmetry_settings": SYMMETRY, **options}
    return zd.build_dataset(prop, accepted, report, folder / "hub", **options)


# ----------------------------------------------------------------------------------- checks of a built repo
@functools.cache
def _e3nn_cartesian_tensor(formula: str):
    """e3nn's CartesianTensor and its reduced tensor products, built in float64 (e3nn builds the basis in the
    default dtype at each call unless given one; float32 would cap the round trip at ~1e-7)."""
    from e3nn.io import CartesianTensor

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ct = CartesianTensor(formula)
        return ct, ct.reduced_tensor_products()
    finally:
        torch.set_default_dtype(previous)


def check_repository(folder: Path, prop: str, report: dict, cache_dir: str) -> None:
    """The acceptance checks of one built repository, through datasets.load_dataset, e3nn and the validate
    stage's own Neumann residual (zoo.data.validation) against the stored structure."""
    import datasets

    spec = properties.get(prop)
    loaded = datasets.load_dataset(str(folder), cache_dir=cache_dir)
    # where a holdout source gave records, they form the external split (zoo.data.splits)
    external = (folder / schema.parquet_path(splits.EXTERNAL)).is_file()
    assert list(loaded) == list(splits.SPLITS) + ([splits.EXTERNAL] if external else [])
    assert external == (prop == "elastic" and folder.parent == REPO / zd.HUB_DATASETS_DIR)
    features = schema.dataset_features(prop)
    tensor_map = schema.tensor_column_map(prop)
    seen = {}
    for name, split in loaded.items():
        assert split.features == features
        assert set(split["split"]) == {name}
        for key in map(zd.split_key, split["material_id"], split["record_id"]):
            assert seen.setdefault(key, name) == name, f"{key} is in {seen[key]} and {name}"
        for irreps_column, facts in tensor_map.items():
            if not spec.is_tensor:  # the DOS is invariant: its own irreps vector
                assert facts["cartesian_column"] == irreps_column
                assert o3.Irreps(facts["irreps"]).dim == len(PHONON_GRID_CM)
                continue
            names = [irreps_column, facts["cartesian_column"], facts["voigt_column"]]
            columns = split.with_format("numpy", columns=names, dtype=np.float64)[:]
            cartesian = columns[facts["cartesian_column"]]
            ct, rtp = _e3nn_cartesian_tensor(facts["formula"])
            assert str(ct) == facts["irreps"] == str(tensors.irreps_of(spec.formula))
            back = ct.to_cartesian(torch.as_tensor(columns[irreps_column]), rtp).numpy()
            np.testing.assert_allclose(back, cartesian, rtol=0, atol=1e-10)
            voigt = columns[facts["voigt_column"]]
            np.testing.assert_array_equal(tensors.voigt_to_cartesian(voigt, spec.voigt_kind), cartesian)
        metrics = revalidate(prop, list(split), report)
        if spec.is_tensor:
            worst = metrics["neumann_residual"].max()
            assert worst <= report["neumann_tolerance"], (name, worst)
        else:
            assert (metrics["dos_min"] >= 0.0).all() and max(max(dos) for dos in split["dos"]) == 1.0
            for row in split:
                assert np.trapezoid(row["dos_3n"], row["frequencies_cm"]) == pytest.approx(3 * row["n_sites"])


def revalidate(prop: str, rows: list[dict], report: dict) -> pd.DataFrame:
    """The validate stage's own metrics (zoo.data.validation.compute_metrics, with the report's params) of the
    stored values against the stored structures, rebuilt from the dataset rows."""
    params = validation.ValidationParams.from_reported(report["params"])
    if prop == "phonon":
        stored = {"frequencies_cm": "frequencies_cm", "dos": "dos"}
    else:
        stored = {p.source_column: f"{p.prefix}_{p.source_form}" for p in properties.get(prop).dataset_parts}
    clean = pd.DataFrame([
        {"record_id": row["record_id"], "clean_issue": None, "is_centrosymmetric": row["is_centrosymmetric"],
         "structure_json": canonical_json(zd.row_structure(row).as_dict()),
         **{source: row[column] for source, column in stored.items()}}
        for row in rows
    ])
    return validation.compute_metrics(clean, prop, params)


def card_parts(folder: Path) -> tuple[dict, str]:
    """(YAML header, markdown body) of a repository's README.md."""
    text = (folder / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, "README.md must start with a YAML header between --- lines"
    return yaml.safe_load(match.group(1)), match.group(2)


def read_rows(folder: Path) -> list[dict]:
    """All rows of a built repository, splits in order."""
    return pa.concat_tables(pq.read_table(folder / schema.parquet_path(name)) for name in splits.SPLITS).to_pylist()


