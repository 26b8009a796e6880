"""Hugging Face dataset repositories ``mp-<property>-irreps``: schema, build, loading, and row helpers.

A repository folder (``data/hub/datasets/mp-<property>-irreps/``) holds

    README.md                                  the dataset card (``zoo.data.cards``), YAML header for the Hub
    dataset_version.json                       version, content fingerprint, file hashes, counts
    data/{train,validation,test}-00000-of-00001.parquet
    data/external-00000-of-00001.parquet       only where a holdout source gave records (``zoo.data.splits``)

One row per accepted record (``data/clean/<property>.accepted.parquet``, the validate stage's output). The
columns and their ``datasets.Features`` are declared here (``dataset_columns``); tensor conventions (frame, Voigt
order and factors, irreps basis) are those of ``zoo.core.tensors``, quoted into the card and into each tensor
field's Arrow metadata.

Stored tensors are exactly symmetric: a square Voigt matrix or rank-2 tensor from the source is replaced by
(a + a^T)/2. The source's asymmetry is at most ``zoo.core.tensors.SYMMETRY_RTOL`` of its norm (larger asymmetry is
refused with a ValueError naming the record), i.e. rounding of the printed values; without this step the
irreps vector, which keeps only the symmetric part, would not give back the stored tensor.

Content fingerprint
    ``sha256`` of UTF-8 text: the canonical JSON (``zoo.core.io.canonical_json``) of
    ``{"dataset": <name>, "features": <Features.to_dict()>}``, a newline, then for each split in the order
    train, validation, test (then external, where there is one), each row in file order as canonical JSON followed by a newline. Floats are written
    as Python's shortest round-trip repr, so the text (and the fingerprint) is a function of the exact float64
    values, independent of the Parquet writer. The dataset version is a label and is not part of it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from zoo import properties
from zoo.core import derived, symmetry, tensors
from zoo.core.io import atomic_write_text, canonical_json, sha256_file, write_json
from zoo.data import splits
from zoo.properties import PHONON_GRID_CM, PropertySpec

HUB_DATASETS_DIR = Path("data/hub/datasets")
VERSION_FILE = "dataset_version.json"
DATA_DIR = "data"
FINGERPRINT_DEFINITION = (
    "sha256 over UTF-8 text: canonical JSON (sorted keys, compact, floats as shortest round-trip repr) of "
    '{"dataset": name, "features": Features.to_dict()}, a newline, then every row as canonical JSON plus a '
    "newline, splits in the order train, validation, test, external (where present), rows in file order (sorted by record_id). The "
    "version is not part of it."
)
# Fixed writer settings, so that the same rows give the same bytes (pyarrow writes no timestamps).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 9,
    "row_group_size": 512,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}
# Key of the schema-level Arrow metadata carrying the tensor_columns map and the conventions.
ARROW_METADATA_KEY = b"mp_tensor_zoo"


_F64 = Value("float64")
_VECTOR3 = List(_F64, length=3)
_MATRIX3 = List(List(_F64, length=3), length=3)
_MERGED_SOURCE = {"record_id": Value("string"), "source_file": Value("string"), "source_row": Value("int64"),
                  "source_sha256": Value("string"), "relation": Value("string"),
                  "largest_invariant_difference": _F64}


def _fixed(shape: Sequence[int]) -> List:
    """Nested fixed-size float64 lists of `shape` (outermost first)."""
    feature: Any = _F64
    for size in reversed(shape):
        feature = List(feature, length=size)
    return feature


# --------------------------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Column:
    """One dataset column: its name, ``datasets`` feature, units and glossary text."""

    name: str
    feature: Any
    units: str
    description: str


@dataclass(frozen=True)
class TensorPart:
    """One stored tensor of a property and where it comes from in the accepted records.

    source_column  column of the accepted (clean) records holding it
    source_form    'voigt' or 'cartesian': the form the source column is in
    prefix         dataset columns are <prefix>_cartesian, <prefix>_voigt, <prefix>_irreps
    label          what it is, for the glossary
    """

    source_column: str
    source_form: str
    prefix: str
    label: str


# Where each property's tensors are in the accepted records, and what the dataset calls them.
TENSOR_PARTS: dict[str, tuple[TensorPart, ...]] = {
    "elastic": (TensorPart("stiffness_voigt", "voigt", "stiffness", "elastic stiffness tensor C_ijkl"),),
    "dielectric": tuple(
        TensorPart(part, "cartesian", f"eps_{part}", f"{part} part of the relative permittivity eps_ij")
        for part in properties.DIELECTRIC.tensor_parts
    ),
    "piezo": (TensorPart("piezo_voigt", "voigt", "piezo", "piezoelectric stress tensor e_ijk"),),
}

# The keys zoo.core.derived returns per property (checked at build time: a change there is a schema change here),
# with a feature type where it is not a float64 scalar, and a glossary line.
_DERIVED_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "elastic": {
        "k_voigt": "Voigt bulk modulus",
        "k_reuss": "Reuss bulk modulus",
        "k_vrh": "Voigt-Reuss-Hill bulk modulus",
        "g_voigt": "Voigt shear modulus",
        "g_reuss": "Reuss shear modulus",
        "g_vrh": "Voigt-Reuss-Hill shear modulus",
        "y_mod": "Young's modulus 9KG/(3K+G) from the Hill moduli",
        "homogeneous_poisson": "Poisson ratio (3K-2G)/(6K+2G) from the Hill moduli",
        "universal_anisotropy": "universal anisotropy index A_U = 5 G_V/G_R + K_V/K_R - 6",
        "youngs_modulus_min": "minimum over directions of the directional Young's modulus (null if unstable)",
        "youngs_modulus_max": "maximum over directions of the directional Young's modulus (null if unstable)",
        "youngs_modulus_min_direction": "direction of youngs_modulus_min, in the structure's frame",
        "youngs_modulus_max_direction": "direction of youngs_modulus_max, in the structure's frame",
        "born_stable": "Born stability: the 6x6 Voigt stiffness is positive definite",
    },
    "dielectric": {
        **{
            f"{key}_{part}": text.format(part=f"eps_{part}")
            for part in properties.DIELECTRIC.tensor_parts
            for key, text in (
                ("eps_poly", "polycrystalline average of {part} (mean eigenvalue)"),
                ("eigenvalues", "eigenvalues of {part}, ascending"),
                ("anisotropy_ratio", "anisotropy ratio lambda_max/lambda_min of {part} (null if lambda_min <= 0)"),
            )
        },
        "refractive_index": "refractive index n = sqrt(eps_poly_electronic)",
    },
    "piezo": {
        "max_longitudinal": "largest longitudinal coefficient max_n |e_ijk n_i n_j n_k|",
        "max_longitudinal_direction": "a unit direction where e_ijk n_i n_j n_k = +max_longitudinal (null for e = 0)",
        "eij_max_matminer": "matminer / de Jong et al. (2015) eij_max definition (frame dependent; cross-check)",
        "v_max_matminer": "direction of eij_max_matminer, largest component 1",
    },
    "phonon": {
        "mean_frequency_cm": "mean phonon frequency int g w dw / int g dw",
        "cv_300k_per_atom_kb": "harmonic heat capacity C_V at 300 K per atom",
        "cv_300k_j_per_mol_atoms_k": "harmonic heat capacity C_V at 300 K per mole of atoms",
        "cv_300k_j_per_kg_k": "harmonic heat capacity C_V at 300 K per unit mass",
    },
}
# zoo.core.derived keys that the validate stage already measured (same definition): the dataset keeps validate's column.
_DERIVED_KEYS_FROM_VALIDATE: dict[str, tuple[str, ...]] = {"elastic": ("min_eigenvalue",)}

# Validation facts: metric columns of the validate stage (zoo.data.validation.METRIC_COLUMNS), copied unchanged.
_NEUMANN_TEXT = (
    "Neumann residual (validate stage): max over the point group's operations R and over the record's tensor parts "
    "of norm(rotate(T, R) - T), divided by the largest part norm{floor} (Frobenius norms; 0 for exact symmetry)"
)
VALIDATION_FACTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "elastic": (
        ("neumann_residual", "1", _NEUMANN_TEXT.format(floor="")),
        ("min_eigenvalue", "GPa", "smallest eigenvalue of the 6x6 Voigt stiffness (> 0: Born stable)"),
    ),
    "dielectric": (
        ("neumann_residual", "1", _NEUMANN_TEXT.format(floor="")),
        *((f"{part}_min_eig", "1", f"smallest eigenvalue of eps_{part} (validate: >= 1 for electronic and total, "
           ">= 0 for ionic, within the stated slack)") for part in properties.DIELECTRIC.tensor_parts),
    ),
    "piezo": (
        ("neumann_residual", "1", _NEUMANN_TEXT.format(floor="; 0 for a tensor whose components are all within "
                                                       "validate's piezo_zero_atol_c_m2 of zero")),
    ),
    "phonon": (("dos_min", "1", "smallest value of dos (validate: >= 0)"),),
}

_DERIVED_FEATURES: dict[str, Any] = {
    "youngs_modulus_min_direction": _VECTOR3,
    "youngs_modulus_max_direction": _VECTOR3,
    "born_stable": Value("bool"),
    "max_longitudinal_direction": _VECTOR3,
    "v_max_matminer": _VECTOR3,
    **{f"eigenvalues_{part}": _VECTOR3 for part in properties.DIELECTRIC.tensor_parts},
}


def _derived_units(key: str) -> str:
    if _DERIVED_FEATURES.get(key) == Value("bool"):
        return ""  # a flag has no unit (derived.UNITS says "bool")
    if key in derived.UNITS:
        return derived.UNITS[key]
    base, _, part = key.rpartition("_")  # per-part dielectric keys, e.g. eps_poly_total -> eps_poly
    return derived.UNITS[base] if part in properties.DIELECTRIC.tensor_parts else ""


def _identity_columns() -> list[Column]:
    return [
        Column("material_id", Value("string"), "", "Materials Project id (null where the source gives none)"),
        Column("record_id", Value("string"), "", "id of the raw record this row comes from (source:property:row)"),
        Column("formula", Value("string"), "", "reduced formula as given by the source"),
    ]


def _structure_columns() -> list[Column]:
    return [
        Column("lattice", _MATRIX3, "A", "lattice matrix; rows are the lattice vectors a, b, c (defines the frame)"),
        Column("species", List(Value("string")), "", "species of each site"),
        Column("frac_coords", List(_VECTOR3), "1", "fractional coordinates of each site"),
        Column("cart_coords", List(_VECTOR3), "A", "Cartesian coordinates of each site (frac_coords @ lattice)"),
        Column("n_sites", Value("int32"), "", "number of sites in the cell"),
        Column("volume", _F64, "A^3", "cell volume"),
        Column("crystal_system", Value("string"), "",
               f"crystal system (spglib, symprec {symmetry.SYMPREC} A, angle tolerance {symmetry.ANGLE_TOLERANCE} "
               "deg); the split strata"),
        Column("space_group", Value("int32"), "", "international space-group number"),
        Column("space_group_symbol", Value("string"), "", "Hermann-Mauguin space-group symbol"),
        Column("point_group", Value("string"), "", "Hermann-Mauguin point group"),
        Column("laue_class", Value("string"), "", "Laue class (point group with the inversion added)"),
        Column("is_centrosymmetric", Value("bool"), "", "whether the point group contains the inversion"),
    ]


def _tensor_columns(spec: PropertySpec) -> list[Column]:
    if not spec.is_tensor:
        grid = len(PHONON_GRID_CM)
        return [
            Column("frequencies_cm", _fixed((grid,)), "cm^-1", f"frequency grid, {grid} points 0..1000"),
            Column("dos", _fixed((grid,)), "1 (maximum 1)", f"phonon DOS on the grid, maximum 1 (irreps {spec.irreps})"),
            Column("dos_3n", _fixed((grid,)), "states/cm^-1 per cell", "phonon DOS on the grid, integral 3N (trapezoid)"),
        ]
    dim = tensors.change_of_basis(spec.formula).shape[0]
    out = []
    for part in TENSOR_PARTS[spec.name]:
        out += [
            Column(f"{part.prefix}_cartesian", _fixed(spec.cartesian_shape), spec.units, f"{part.label}, Cartesian"),
            Column(f"{part.prefix}_voigt", _fixed(spec.voigt_shape), spec.units, f"{part.label}, Voigt form"),
            Column(f"{part.prefix}_irreps", _fixed((dim,)), spec.units,
                   f"{part.label} in the e3nn irreps basis {spec.irreps} (formula {spec.formula})"),
        ]
    return out


def _derived_columns(spec: PropertySpec) -> list[Column]:
    return [
        Column(key, _DERIVED_FEATURES.get(key, _F64), _derived_units(key), description)
        for key, description in _DERIVED_DESCRIPTIONS[spec.name].items()
    ]


def _validation_columns(spec: PropertySpec) -> list[Column]:
    return [Column(name, _F64, units, description) for name, units, description in VALIDATION_FACTS[spec.name]]


def _provenance_columns() -> list[Column]:
    return [
        Column("split", Value("string"), "", "train, validation, test, or external: the holdout (rules in the card)"),
        Column("source", Value("string"), "", "'snapshot' (pinned offline files) or 'mp-api'"),
        Column("source_file", Value("string"), "", "source file or API route"),
        Column("source_row", Value("int64"), "", "row in the source file (null for the API)"),
        Column("source_sha256", Value("string"), "", "sha256 of the source file (or served document)"),
        Column("retrieved_with", Value("string"), "", "software that fetched the record"),
        Column("merged_sources", List(_MERGED_SOURCE), "",
               "the other source records of this material merged into this row (zoo.data.merging): relation "
               "'agrees' (within the merge tolerance) or 'superseded' (an older MP release; this row's value is "
               "newer), with the largest difference of their rotation invariants; empty when one source holds it"),
        Column("original_frame", Value("string"), "", "frame the source claims for its tensor (null: invariant)"),
        Column("frame_action", Value("string"), "", "what clean did to bring the tensor into the structure's frame"),
        Column("frame_rotation", _MATRIX3, "1",
               "rotation R clean applied to the source tensor, T_ab.. = R_ai R_bj .. T_source_ij.. (identity if none)"),
    ]


def dataset_columns(prop: str | PropertySpec) -> list[Column]:
    """Every column of a property's dataset, in file order."""
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    return (
        _identity_columns() + _structure_columns() + _tensor_columns(spec) + _derived_columns(spec)
        + _validation_columns(spec) + _provenance_columns()
    )


def dataset_features(prop: str | PropertySpec) -> Features:
    """The explicit ``datasets.Features`` of a property's dataset (float64 throughout, fixed-size lists)."""
    return Features({column.name: column.feature for column in dataset_columns(prop)})


def tensor_column_map(prop: str | PropertySpec) -> dict[str, dict[str, Any]]:
    """For each irreps column: the Cartesian (and Voigt) column it decomposes, the e3nn formula, the irreps.

    Machine-readable, written into the card's YAML header and the Parquet schema metadata, so that
    ``e3nn.io.CartesianTensor(formula).to_cartesian(irreps)`` can be checked against the Cartesian column.
    Phonon: the DOS is invariant (51x0e), its own irreps vector, with the identity as change of basis.
    """
    import e3nn

    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    if not spec.is_tensor:
        return {"dos": {"cartesian_column": "dos", "voigt_column": None, "formula": None, "irreps": spec.irreps,
                        "units": "1 (maximum 1)", "change_of_basis": "identity (invariant scalars)"}}
    return {
        f"{part.prefix}_irreps": {
            "cartesian_column": f"{part.prefix}_cartesian",
            "voigt_column": f"{part.prefix}_voigt",
            "formula": spec.formula,
            "irreps": str(tensors.irreps_of(spec.formula)),
            "units": spec.units,
            "change_of_basis": (
                "irreps = Q @ cartesian.reshape(-1) (C order), cartesian = Q.T @ irreps, with "
                "Q = e3nn.io.CartesianTensor(formula).reduced_tensor_products().change_of_basis built in float64 "
                f"(orthonormal); e3nn {e3nn.__version__}: CartesianTensor(formula).to_cartesian(irreps)"
            ),
        }
        for part in TENSOR_PARTS[spec.name]
    }


# ----------------------------------------------------------------------------------------------- validation
REQUIRED_INPUT_COLUMNS = (
    "record_id", "material_id", "formula", "structure_json", "crystal_system", "space_group_number",
    "space_group_symbol", "point_group", "laue_class", "is_centrosymmetric", "original_frame", "frame_action",
    "frame_rotation", "provenance_json", "holdout",
)


def _input_columns(spec: PropertySpec) -> tuple[str, ...]:
    values = tuple(p.source_column for p in TENSOR_PARTS[spec.name]) if spec.is_tensor else ("frequencies_cm", "dos")
    return REQUIRED_INPUT_COLUMNS + values + tuple(name for name, _, _ in VALIDATION_FACTS[spec.name])


def read_accepted(path: str | os.PathLike, prop: str | PropertySpec) -> dict[str, list]:
    """The accepted records of a property as {column: list of Python values}, sorted by record_id.

    Raises ValueError naming the file for a missing column, an empty file, a null where a value is needed, or a
    repeated record_id.
    """
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"accepted records {path} not found: run the validate stage for {spec.name} first")
    table = pq.read_table(path)
    missing = [name for name in _input_columns(spec) if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing} that the build needs")
    if table.num_rows == 0:
        raise ValueError(f"{path} has no accepted records: a dataset needs at least one")
    columns = {name: table.column(name).to_pylist() for name in _input_columns(spec)}
    for name in _input_columns(spec):
        if name in ("material_id", "formula", "original_frame"):
            continue  # material_id may be unknown (key: record_id), formula missing; an invariant has no frame
        nulls = [columns["record_id"][i] for i, value in enumerate(columns[name]) if value is None]
        if nulls:
            raise ValueError(f"{path}: column {name!r} is null in accepted records {nulls[:5]}")
    repeated = [rid for rid, n in collections.Counter(columns["record_id"]).items() if n > 1]
    if repeated:
        raise ValueError(f"{path}: record_id repeated: {sorted(repeated)[:5]}")
    order = sorted(range(table.num_rows), key=lambda i: columns["record_id"][i])
    return {name: [values[i] for i in order] for name, values in columns.items()}


def read_validation_report(path: str | os.PathLike, n_accepted: int) -> dict[str, Any]:
    """The validate stage's report, checked against the accepted records it should describe."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"validation report {path} not found: run the validate stage first")
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
    needed = ("n_raw", "n_accepted", "n_quarantined", "reasons", "neumann_tolerance")
    missing = [key for key in needed if key not in report]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    if report["n_accepted"] != n_accepted:
        raise ValueError(
            f"{path} reports n_accepted={report['n_accepted']} but the accepted file has {n_accepted} rows: "
            "the report is stale, rerun validate"
        )
    if report["n_raw"] != report["n_accepted"] + report["n_quarantined"]:
        raise ValueError(f"{path}: n_raw != n_accepted + n_quarantined ({report['n_raw']}, {report['n_accepted']}, "
                         f"{report['n_quarantined']})")
    if not isinstance(report["reasons"], Mapping):
        raise ValueError(f"{path}: 'reasons' must map a reason code to a count, got {type(report['reasons']).__name__}")
    return report


# ------------------------------------------------------------------------------------------------- building
def split_key(material_id: str | None, record_id: str) -> str:
    """The key a record's split hangs on: its material id, or its record id where the material is unknown."""
    return material_id if material_id else record_id


def _first_bad_record(check: Callable[[np.ndarray], Any], array: np.ndarray, record_ids: Sequence[str]) -> str:
    """Re-run a batched check one record at a time to name the first record it refuses."""
    for record_id, item in zip(record_ids, array):
        try:
            check(item)
        except ValueError as err:
            return f"record {record_id}: {err}"
    return "no single record fails on its own"


def _checked(check: Callable[[np.ndarray], Any], array: np.ndarray, record_ids: Sequence[str], column: str) -> Any:
    """check(array) for the whole batch; a ValueError names the column and the first offending record."""
    try:
        return check(array)
    except ValueError:
        raise ValueError(f"column {column!r}: {_first_bad_record(check, array, record_ids)}") from None


def _symmetrised(array: np.ndarray) -> np.ndarray:
    """(a + a^T)/2 over the last two axes; exact for entries that were already symmetric."""
    return 0.5 * (array + np.swapaxes(array, -1, -2))


def tensor_forms(spec: PropertySpec, part: TensorPart, values: Sequence, record_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Cartesian, Voigt and irreps arrays (batched) of one tensor part, from the accepted records' column."""
    shape = spec.voigt_shape if part.source_form == "voigt" else spec.cartesian_shape
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {part.source_column!r} must hold {shape} arrays of numbers") from None
    if array.shape[1:] != tuple(shape):
        raise ValueError(f"column {part.source_column!r} must hold arrays of shape {shape}, got {array.shape[1:]}")
    square = len(shape) >= 2 and shape[-1] == shape[-2]
    if part.source_form == "voigt":
        # Refuse asymmetry beyond rounding before removing the rounding.
        _checked(lambda a: tensors.voigt_to_cartesian(a, spec.voigt_kind), array, record_ids, part.source_column)
        voigt = _symmetrised(array) if square else array
        cartesian = tensors.voigt_to_cartesian(voigt, spec.voigt_kind)
    else:
        _checked(lambda a: tensors.cartesian_to_voigt(a, spec.voigt_kind), array, record_ids, part.source_column)
        cartesian = _symmetrised(array) if square else array
        voigt = tensors.cartesian_to_voigt(cartesian, spec.voigt_kind)
    irreps = tensors.cartesian_to_irreps(cartesian, spec.formula)
    return {"cartesian": np.asarray(cartesian), "voigt": np.asarray(voigt), "irreps": np.asarray(irreps)}


def _structure_fields(structure_json: str, record_id: str) -> dict[str, Any]:
    from pymatgen.core import Structure

    try:
        structure = Structure.from_dict(json.loads(structure_json))
    except Exception as exc:  # pymatgen raises assorted errors for a malformed dict
        raise ValueError(f"record {record_id}: structure_json is not a pymatgen Structure: {exc}") from None
    if not structure.is_ordered:
        raise ValueError(f"record {record_id}: the structure is disordered; the dataset stores one species per site")
    return {
        "lattice": structure.lattice.matrix.tolist(),
        "species": [str(site.specie) for site in structure],
        "frac_coords": structure.frac_coords.tolist(),
        "cart_coords": structure.cart_coords.tolist(),
        "n_sites": len(structure),
        "volume": float(structure.volume),
        "cell_mass_amu": float(structure.composition.weight),
    }


# Records timed before deciding on worker processes, and the measured cost of starting one (forkserver, importing
# this module: ~3 s on an idle 2-core machine, twice that under load).
_PROBE_RECORDS = 8
_POOL_START_S = 6.0


def _derived_row(task: tuple[str, str, tuple]) -> dict[str, Any]:
    """zoo.core.derived for one record (a top-level function so that worker processes can run it)."""
    prop, record_id, args = task
    try:
        if prop == "elastic":
            return derived.elastic_properties(*args)
        if prop == "dielectric":
            return derived.dielectric_properties(*args)
        if prop == "piezo":
            return derived.piezo_properties(*args)
        return derived.phonon_properties(*args)
    except ValueError as err:
        raise ValueError(f"record {record_id}: zoo.core.derived refused its value: {err}") from None


def compute_derived(
    tasks: list[tuple[str, str, tuple]], workers: int, pool_start_s: float = _POOL_START_S
) -> list[dict[str, Any]]:
    """zoo.core.derived for every record, in order; in `workers` processes where that is faster.

    The first few records are computed here and timed; worker processes are started only if the rest would take
    longer than starting them (`pool_start_s` each; elastic and piezo tensors need ~0.1-0.2 s each, dielectric and phonon records
    ~1 ms). Workers are forked from a fork server that has imported this module once: forking the parent itself
    is unsafe (it runs torch and Arrow thread pools), and 'spawn' would import torch, pymatgen and datasets again
    in every worker. The results do not depend on where they were computed.
    """
    started = time.perf_counter()
    results = [_derived_row(task) for task in tasks[:_PROBE_RECORDS]]
    rest = tasks[_PROBE_RECORDS:]
    per_record = (time.perf_counter() - started) / max(len(results), 1)
    if workers <= 1 or per_record * len(rest) < pool_start_s * workers:
        return results + [_derived_row(task) for task in rest]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return results + list(pool.map(_derived_row, rest, chunksize=max(1, len(rest) // (8 * workers))))


def _provenance_fields(provenance_json: str, record_id: str) -> dict[str, Any]:
    try:
        provenance = json.loads(provenance_json)
        return {
            "source": provenance["source"],
            "source_file": provenance["file"],
            "source_row": provenance.get("row"),
            "source_sha256": provenance["sha256"],
            "retrieved_with": provenance.get("retrieved_with"),
            "merged_sources": [
                {"record_id": merged["record_id"], "source_file": merged["file"], "source_row": merged.get("row"),
                 "source_sha256": merged["sha256"], "relation": merged["relation"],
                 "largest_invariant_difference": merged["largest_invariant_difference"]}
                for merged in provenance.get("merged", [])],
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"record {record_id}: provenance_json lacks {err} or is not JSON") from None


def build_rows(
    spec: PropertySpec,
    accepted: Mapping[str, list],
    *,
    salt: str,
    fractions: Mapping[str, float] = splits.DEFAULT_FRACTIONS,
    pinned: Mapping[str, str] | None = None,
    workers: int = 1,
) -> dict[str, list]:
    """The dataset's columns ({name: list}, in dataset_columns order) from the accepted records."""
    record_ids = accepted["record_id"]
    n = len(record_ids)
    out: dict[str, list] = {
        "material_id": list(accepted["material_id"]),
        "record_id": list(record_ids),
        "formula": list(accepted["formula"]),
    }
    structures = [_structure_fields(s, rid) for s, rid in zip(accepted["structure_json"], record_ids)]
    for name in ("lattice", "species", "frac_coords", "cart_coords", "n_sites", "volume"):
        out[name] = [s[name] for s in structures]
    out["crystal_system"] = list(accepted["crystal_system"])
    out["space_group"] = [int(v) for v in accepted["space_group_number"]]
    for name in ("space_group_symbol", "point_group", "laue_class"):
        out[name] = list(accepted[name])
    out["is_centrosymmetric"] = [bool(v) for v in accepted["is_centrosymmetric"]]

    if spec.is_tensor:
        parts = {}
        for part in TENSOR_PARTS[spec.name]:
            forms = tensor_forms(spec, part, accepted[part.source_column], record_ids)
            parts[part.source_column] = forms
            for form, array in forms.items():
                out[f"{part.prefix}_{form}"] = array.tolist()
        if spec.name == "dielectric":
            args = [tuple(parts[p.source_column]["cartesian"][i] for p in TENSOR_PARTS["dielectric"]) for i in range(n)]
        else:
            args = [(parts[TENSOR_PARTS[spec.name][0].source_column]["voigt"][i],) for i in range(n)]
    else:
        frequencies = _checked_grid(accepted["frequencies_cm"], record_ids)
        dos = np.asarray(accepted["dos"], dtype=np.float64)
        out["frequencies_cm"] = frequencies.tolist()
        out["dos"] = dos.tolist()
        out["dos_3n"] = [
            derived.normalise_dos_to_3n(frequencies[i], dos[i], structures[i]["n_sites"]).tolist() for i in range(n)
        ]
        args = [(frequencies[i], dos[i], structures[i]["n_sites"], structures[i]["cell_mass_amu"]) for i in range(n)]

    tasks = [(spec.name, record_ids[i], args[i]) for i in range(n)]
    derived_rows = compute_derived(tasks, workers)
    expected = list(_DERIVED_DESCRIPTIONS[spec.name])
    returned = sorted(expected + list(_DERIVED_KEYS_FROM_VALIDATE.get(spec.name, ())))
    for record_id, row in zip(record_ids, derived_rows):
        if sorted(row) != returned:
            raise ValueError(
                f"record {record_id}: zoo.core.derived returned the keys {sorted(row)}, the {spec.dataset_name} schema "
                f"expects {returned}; update zoo.data.datasets (a schema change needs a new dataset version)"
            )
    for key in expected:
        out[key] = [row[key] for row in derived_rows]
    for name, _, _ in VALIDATION_FACTS[spec.name]:
        out[name] = [float(value) for value in accepted[name]]

    out["split"] = _splits(accepted, salt, fractions, pinned)
    provenance = [_provenance_fields(p, rid) for p, rid in zip(accepted["provenance_json"], record_ids)]
    for name in ("source", "source_file", "source_row", "source_sha256", "retrieved_with", "merged_sources"):
        out[name] = [p[name] for p in provenance]
    out["original_frame"] = list(accepted["original_frame"])
    out["frame_action"] = list(accepted["frame_action"])
    rotations = np.asarray(accepted["frame_rotation"], dtype=np.float64)
    if rotations.shape != (n, 3, 3):
        raise ValueError(f"column 'frame_rotation' must hold 3x3 matrices, got shape {rotations.shape[1:]}")
    out["frame_rotation"] = rotations.tolist()

    order = [column.name for column in dataset_columns(spec)]
    return {name: out[name] for name in order}


def _splits(accepted: Mapping[str, list], salt: str, fractions: Mapping[str, float],
            pinned: Mapping[str, str] | None) -> list[str]:
    """Each record's split: 'external' for a holdout record, else by the rule of ``zoo.data.splits``."""
    keys = [split_key(m, r) for m, r in zip(accepted["material_id"], accepted["record_id"])]
    repeated = sorted(key for key, count in collections.Counter(keys).items() if count > 1)
    if repeated:
        raise ValueError(f"materials with more than one accepted record (a material would be in two splits): "
                         f"{repeated[:5]}; validate merges them (zoo.data.merging)")
    holdout = [bool(flag) for flag in accepted["holdout"]]
    pinned_external = sorted(key for key, flag in zip(keys, holdout) if flag and pinned and key in pinned)
    if pinned_external:
        raise ValueError(f"holdout materials {pinned_external[:5]} have a pinned split of a previous release: "
                         "the external split must hold only materials no training source has")
    assigned = iter(splits.assign_splits([k for k, flag in zip(keys, holdout) if not flag],
                                         [s for s, flag in zip(accepted["crystal_system"], holdout) if not flag],
                                         salt, fractions, pinned))
    return [splits.EXTERNAL if flag else next(assigned) for flag in holdout]


def _checked_grid(values: Sequence, record_ids: Sequence[str]) -> np.ndarray:
    """The phonon frequency grids, each equal to PHONON_GRID_CM (the dataset's fixed grid)."""
    grids = np.asarray(values, dtype=np.float64)
    if grids.shape != (len(record_ids), len(PHONON_GRID_CM)):
        raise ValueError(f"column 'frequencies_cm' must hold {len(PHONON_GRID_CM)}-point grids, got {grids.shape[1:]}")
    off = np.flatnonzero(np.abs(grids - PHONON_GRID_CM).max(axis=1) > 1e-9)
    if off.size:
        raise ValueError(f"record {record_ids[off[0]]}: frequencies_cm is not the grid 0, 20, ..., 1000 cm^-1")
    return grids


# -------------------------------------------------------------------------------------------------- writing
def arrow_schema(spec: PropertySpec) -> pa.Schema:
    """The features' Arrow schema, with units (and for tensor columns the irreps facts) as field metadata and
    the tensor_columns map as schema metadata."""
    features = dataset_features(spec)
    schema = features.arrow_schema
    tensor_map = tensor_column_map(spec)
    fields = []
    for column in dataset_columns(spec):
        meta = {"units": column.units, "description": column.description}
        if column.name in tensor_map:
            meta.update({k: str(v) for k, v in tensor_map[column.name].items() if v is not None})
        fields.append(schema.field(column.name).with_metadata({k: v.encode() for k, v in meta.items()}))
    metadata = dict(schema.metadata or {})
    metadata[ARROW_METADATA_KEY] = canonical_json({
        "dataset": spec.dataset_name,
        "tensor_columns": tensor_map,
        "voigt_order": voigt_order_text(),
        "frame": "Cartesian frame of the row's lattice matrix (rows are the lattice vectors, A)",
    }).encode()
    return pa.schema(fields, metadata=metadata)


def voigt_order_text() -> str:
    """'11, 22, 33, 23, 13, 12' from zoo.core.tensors.VOIGT_PAIRS (1-based)."""
    return ", ".join(f"{i + 1}{j + 1}" for i, j in tensors.VOIGT_PAIRS)


def split_tables(spec: PropertySpec, rows: Mapping[str, list]) -> dict[str, pa.Table]:
    """One Arrow table per split, rows sorted by record_id (build_rows already sorts them)."""
    schema = arrow_schema(spec)
    full = pa.Table.from_pydict(dict(rows), schema=schema)
    labels = np.asarray(rows["split"])
    present = [name for name in splits.ALL_SPLITS if name in splits.SPLITS or (labels == name).any()]
    return {name: full.take(np.flatnonzero(labels == name)) for name in present}


def parquet_path(split: str) -> str:
    return f"{DATA_DIR}/{split}-00000-of-00001.parquet"


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, **PARQUET_OPTIONS)


def content_fingerprint(name: str, features: Features, tables: Mapping[str, pa.Table]) -> str:
    """'sha256:<hex>' as defined in the module docstring (FINGERPRINT_DEFINITION)."""
    digest = hashlib.sha256()
    digest.update(canonical_json({"dataset": name, "features": features.to_dict()}).encode("utf-8"))
    digest.update(b"\n")
    for split in (name for name in splits.ALL_SPLITS if name in tables):
        for row in tables[split].to_pylist():
            digest.update(canonical_json(row).encode("utf-8"))
            digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}"


def _make_readable(folder: Path) -> None:
    """Give the staged repository ordinary permissions (mkdtemp/mkstemp create them private), minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move a finished staging directory onto `target`, replacing what was there, without a half state at
    `target` (the old tree is renamed away first and removed only after the new one is in place)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


@dataclass(frozen=True)
class BuildResult:
    name: str
    path: Path
    version: str
    fingerprint: str
    counts: dict[str, int]
    composition: dict[str, dict[str, int]]


def build_dataset(
    prop: str,
    accepted_path: str | os.PathLike,
    report_path: str | os.PathLike,
    out_root: str | os.PathLike = HUB_DATASETS_DIR,
    *,
    version: str,
    salt: str,
    fractions: Mapping[str, float] = splits.DEFAULT_FRACTIONS,
    pinned_from: str | os.PathLike | None = None,
    workers: int = 1,
) -> BuildResult:
    """Build ``<out_root>/mp-<prop>-irreps/`` (card, version JSON, Parquet per split) from the validate outputs.

    pinned_from: a previous release's repository folder; its split assignments are kept (``zoo.data.splits``).
    The folder is written in a staging directory next to it and moved into place when complete.
    """
    from zoo.data import cards  # cards imports this module for the glossary

    spec = properties.get(prop)
    version = check_version(version)
    accepted = read_accepted(accepted_path, spec)
    report = read_validation_report(report_path, len(accepted["record_id"]))
    pinned = read_split_assignments(pinned_from) if pinned_from is not None else None
    if spec.is_tensor:
        tolerance = report["neumann_tolerance"]
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
            raise ValueError(f"{report_path}: neumann_tolerance must be a number for {spec.name}, got {tolerance!r}")
        above = [rid for rid, r in zip(accepted["record_id"], accepted["neumann_residual"]) if not r <= tolerance]
        if above:
            raise ValueError(f"{accepted_path}: neumann_residual is above the validate tolerance {tolerance} (or "
                             f"null) in accepted records {above[:5]}; validate should have quarantined them")
    rows = build_rows(spec, accepted, salt=salt, fractions=fractions, pinned=pinned, workers=workers)
    tables = split_tables(spec, rows)
    empty = [name for name in splits.SPLITS if tables[name].num_rows == 0]
    if empty:
        raise ValueError(
            f"split(s) {empty} of {spec.dataset_name} would be empty ({len(rows['record_id'])} records): a crystal "
            "system needs about 7 records before each split gets one"
        )
    features = dataset_features(spec)
    fingerprint = content_fingerprint(spec.dataset_name, features, tables)
    composition = splits.composition(rows["crystal_system"], rows["split"])
    counts = {name: table.num_rows for name, table in tables.items()}

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    target = out_root / spec.dataset_name
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.dataset_name}.", dir=out_root))
    try:
        (staging / DATA_DIR).mkdir()
        for name, table in tables.items():
            write_parquet(table, staging / parquet_path(name))
        files = {parquet_path(name): sha256_file(staging / parquet_path(name)) for name in tables}
        info = {
            "dataset": spec.dataset_name,
            "version": version,
            "fingerprint": fingerprint,
            "fingerprint_definition": FINGERPRINT_DEFINITION,
            "num_rows": counts,
            "files_sha256": files,
            "split_rule": {"salt": salt, "fractions": splits.check_fractions(fractions),
                           "pinned_from_previous_release": pinned is not None},
        }
        write_json(staging / VERSION_FILE, info)
        card = cards.render_dataset_card(
            spec, features=features, version=version, fingerprint=fingerprint, counts=counts,
            composition=composition, report=report, salt=salt, fractions=splits.check_fractions(fractions),
            frame_actions=collections.Counter(zip(rows["original_frame"], rows["frame_action"])),
            pinned=pinned is not None,
        )
        atomic_write_text(staging / "README.md", card)
        _make_readable(staging)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(spec.dataset_name, target, version, fingerprint, counts, composition)


def check_version(version: Any) -> str:
    """A semantic version 'MAJOR.MINOR.PATCH' (non-negative integers); ValueError otherwise."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
        raise ValueError(f"dataset_version must be a semantic version MAJOR.MINOR.PATCH such as '1.0.0', got {version!r}")
    return version


PINNED_SPLITS_FORMAT = "mp-tensor-zoo/pinned-splits/1"


def read_split_assignments(repo_dir: str | os.PathLike) -> dict[str, str]:
    """key -> split (train, validation or test) of a previous release, to pin a new build's splits to it: a built or
    downloaded dataset repository folder, or a pinned-splits JSON file (``write_split_assignments``)."""
    repo_dir = Path(repo_dir)
    if repo_dir.is_file():
        document = json.loads(repo_dir.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != PINNED_SPLITS_FORMAT:
            raise ValueError(f"{repo_dir} is not a pinned-splits file ({PINNED_SPLITS_FORMAT})")
        assignments = dict(document["assignments"])
        unknown = sorted(set(assignments.values()) - set(splits.SPLITS))
        if unknown:
            raise ValueError(f"{repo_dir}: splits {unknown} cannot be pinned; only {list(splits.SPLITS)}")
        return assignments
    assignments: dict[str, str] = {}
    for split in splits.SPLITS:
        path = repo_dir / parquet_path(split)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {repo_dir} is not a dataset repository built by zoo")
        table = pq.read_table(path, columns=["material_id", "record_id", "split"])
        for material_id, record_id, label in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            assignments[split_key(material_id, record_id)] = label
    return assignments


def write_split_assignments(repo_dir: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Keep a release's split assignments as a small JSON file (what ``build.pinned_splits_from`` can name)."""
    repo_dir = Path(repo_dir)
    info = json.loads((repo_dir / VERSION_FILE).read_text(encoding="utf-8"))
    document = {"format": PINNED_SPLITS_FORMAT, "dataset": info["dataset"], "version": info["version"],
                "fingerprint": info["fingerprint"], "key": "material_id (record_id where the material is unknown)",
                "assignments": dict(sorted(read_split_assignments(repo_dir).items()))}
    write_json(path, document)
    return document


# -------------------------------------------------------------------------------------------------- loading
def _repo_name(name: str) -> str:
    """'elastic', 'mp-elastic-irreps' or 'org/mp-elastic-irreps' -> 'mp-elastic-irreps'."""
    base = name.rsplit("/", 1)[-1]
    return properties.get(base).dataset_name if base in properties.PROPERTIES else base


def load(
    name: str,
    *,
    local_root: str | os.PathLike = HUB_DATASETS_DIR,
    version: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A dataset as a ``datasets.DatasetDict`` (train, validation, test): the local build if there is one,
    else the Hub.

    name: 'elastic', 'mp-elastic-irreps' or 'org/mp-elastic-irreps'. The local folder
    ``<local_root>/mp-elastic-irreps`` is used when it holds a README.md (whatever `version`). Otherwise, for
    'org/name', the repository is downloaded at the tag of `version` (e.g. '1.0.0' -> 'v1.0.0'; default: the
    main branch) through ``zoo.release.hub.download_file`` into `cache_dir` (default ``$HF_HOME/mp-tensor-zoo``):
    dataset_version.json and README.md checked against the Hub's hashes, each Parquet file against the sha256
    that dataset_version.json records. ``zoo.release.hub`` errors (HubUnavailable, HubNotFoundError,
    ChecksumMismatchError, ...) pass through.
    """
    import datasets

    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"name must be a dataset name such as 'mp-elastic-irreps' or 'org/mp-elastic-irreps', got {name!r}")
    local = Path(local_root) / _repo_name(name)
    if (local / "README.md").is_file():
        folder = local
    elif "/" in name:
        folder = download(name, version=version, endpoint=endpoint, token=token, cache_dir=cache_dir)
    else:
        raise ValueError(
            f"no local build of {name!r} in {local}: run `dvc repro build@{local.name.split('-')[1]}`, or give the "
            f"Hub repository as 'org/{local.name}'"
        )
    return datasets.load_dataset(str(folder), cache_dir=None if cache_dir is None else str(cache_dir))


def download(
    repo_id: str,
    *,
    version: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download a dataset repository (one commit: the tag of `version`, or main) and return its local folder."""
    from huggingface_hub import constants

    from zoo.release import hub

    revision = hub.version_tag(version) if version is not None else "main"
    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HOME) / "mp-tensor-zoo"
    fetch = functools.partial(hub.download_file, repo_id, repo_type="dataset", cache_dir=root, endpoint=endpoint,
                              token=token)
    info_path = fetch(VERSION_FILE, revision)
    commit = info_path.parent.name  # download_file stores files under their commit sha: pin the rest to it
    hashes = json.loads(info_path.read_text(encoding="utf-8")).get("files_sha256") or {}
    missing = [parquet_path(split) for split in splits.SPLITS if parquet_path(split) not in hashes]
    if missing:
        raise ValueError(f"{repo_id}@{commit}: {VERSION_FILE} gives no sha256 for {missing}: not a dataset built by zoo")
    fetch("README.md", commit)
    for split in splits.ALL_SPLITS:
        if parquet_path(split) in hashes:
            fetch(parquet_path(split), commit, expected_sha256=hashes[parquet_path(split)])
    return info_path.parent


def row_structure(row: Mapping[str, Any]):
    """The pymatgen ``Structure`` of a dataset row (in the frame of its tensors)."""
    from pymatgen.core import Lattice, Structure

    try:
        return Structure(Lattice(np.asarray(row["lattice"], dtype=np.float64)), list(row["species"]),
                         np.asarray(row["frac_coords"], dtype=np.float64))
    except KeyError as err:
        raise ValueError(f"row lacks the structure column {err}") from None


def row_tensor(row: Mapping[str, Any], part: str | None = None):
    """The pymatgen object of a row's property value.

    elastic: ``ElasticTensor`` (GPa); dielectric: ``SquareTensor`` of `part` ('electronic', 'ionic' or
    'total'; default 'total'); piezo: ``PiezoTensor`` (C/m^2); phonon: ``PhononDos`` with frequencies in THz
    and the 3N-normalised DOS in states/THz per cell (pymatgen's units).
    """
    from pymatgen.analysis.elasticity import ElasticTensor
    from pymatgen.analysis.piezo import PiezoTensor
    from pymatgen.core.tensors import SquareTensor
    from pymatgen.phonon.dos import PhononDos

    if part is not None and "eps_total_cartesian" not in row:
        raise ValueError(f"part is only for dielectric rows (electronic, ionic, total), got part={part!r}")
    if "stiffness_voigt" in row:
        return ElasticTensor.from_voigt(np.asarray(row["stiffness_voigt"], dtype=np.float64))
    if "piezo_voigt" in row:
        return PiezoTensor.from_voigt(np.asarray(row["piezo_voigt"], dtype=np.float64))
    if "eps_total_cartesian" in row:
        part = "total" if part is None else part
        if part not in properties.DIELECTRIC.tensor_parts:
            raise ValueError(f"part must be one of {list(properties.DIELECTRIC.tensor_parts)}, got {part!r}")
        return SquareTensor(np.asarray(row[f"eps_{part}_cartesian"], dtype=np.float64))
    if "dos_3n" in row:
        frequencies_thz = np.asarray(row["frequencies_cm"], dtype=np.float64) / properties.CM_PER_THZ
        return PhononDos(frequencies_thz, np.asarray(row["dos_3n"], dtype=np.float64) * properties.CM_PER_THZ)
    raise ValueError("row holds none of the value columns of the four datasets (stiffness_voigt, piezo_voigt, "
                     "eps_total_cartesian, dos_3n)")
