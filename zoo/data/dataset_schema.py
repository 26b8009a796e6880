"""The schema of the Hugging Face dataset repositories ``mp-<property>-irreps``: columns, features, files, fingerprint.

A repository folder (``data/hub/datasets/mp-<property>-irreps/``, built by ``zoo.data.datasets``) holds

    README.md                                  the dataset card (``zoo.data.cards``), YAML header for the Hub
    dataset_version.json                       version, content fingerprint, file hashes, counts
    data/{train,validation,test}-00000-of-00001.parquet
    data/external-00000-of-00001.parquet       only where a holdout source gave records (``zoo.data.splits``)

The columns and their ``datasets.Features`` are declared here (``dataset_columns``); tensor conventions (frame,
Voigt order and factors, irreps basis) are those of ``zoo.core.tensors``, quoted into the card and into each tensor
field's Arrow metadata.

Content fingerprint
    ``sha256`` of UTF-8 text: the canonical JSON (``zoo.core.io.canonical_json``) of
    ``{"dataset": <name>, "features": <Features.to_dict()>}``, a newline, then for each split in the order
    train, validation, test (then external, where there is one), each row in file order as canonical JSON
    followed by a newline. Floats are written
    as Python's shortest round-trip repr, so the text (and the fingerprint) is a function of the exact float64
    values, independent of the Parquet writer. The dataset version is a label and is not part of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from zoo import properties
from zoo.core import tensors
from zoo.core.config import SymmetryConfig
from zoo.core.io import canonical_json
from zoo.data import splits
from zoo.properties.spec import PropertySpec

VERSION_FILE = "dataset_version.json"
DATA_DIR = "data"
FINGERPRINT_DEFINITION = (
    "sha256 over UTF-8 text: canonical JSON (sorted keys, compact, floats as shortest round-trip repr) of "
    '{"dataset": name, "features": Features.to_dict()}, a newline, then every row as canonical JSON plus a '
    "newline, splits in the order train, validation, test, external (where present), rows in file order (sorted "
    "by record_id). The "
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


# Feature of each kind of derived column (zoo.properties.spec.DerivedColumn).
_DERIVED_FEATURES: dict[str, Any] = {"float": _F64, "vector3": _VECTOR3, "bool": Value("bool")}


def _identity_columns() -> list[Column]:
    return [
        Column("material_id", Value("string"), "", "Materials Project id (null where the source gives none)"),
        Column("record_id", Value("string"), "", "id of the raw record this row comes from (source:property:row)"),
        Column("formula", Value("string"), "", "reduced formula as given by the source"),
    ]


def _structure_columns(symmetry_settings: SymmetryConfig | None) -> list[Column]:
    tolerances = ("the tolerances of params.yaml's symmetry section" if symmetry_settings is None else
                  f"symprec {symmetry_settings.symprec} A, angle tolerance {symmetry_settings.angle_tolerance} deg")
    return [
        Column("lattice", _MATRIX3, "A", "lattice matrix; rows are the lattice vectors a, b, c (defines the frame)"),
        Column("species", List(Value("string")), "", "species of each site"),
        Column("frac_coords", List(_VECTOR3), "1", "fractional coordinates of each site"),
        Column("cart_coords", List(_VECTOR3), "A", "Cartesian coordinates of each site (frac_coords @ lattice)"),
        Column("n_sites", Value("int32"), "", "number of sites in the cell"),
        Column("volume", _F64, "A^3", "cell volume"),
        Column("crystal_system", Value("string"), "",
               f"crystal system (spglib, {tolerances}); the split strata"),
        Column("space_group", Value("int32"), "", "international space-group number"),
        Column("space_group_symbol", Value("string"), "", "Hermann-Mauguin space-group symbol"),
        Column("point_group", Value("string"), "", "Hermann-Mauguin point group"),
        Column("laue_class", Value("string"), "", "Laue class (point group with the inversion added)"),
        Column("is_centrosymmetric", Value("bool"), "", "whether the point group contains the inversion"),
    ]


def _tensor_columns(spec: PropertySpec) -> list[Column]:
    if not spec.is_tensor:
        return [Column(name, _fixed(shape), units, description)
                for name, shape, units, description in spec.invariant_columns]
    dim = tensors.change_of_basis(spec.formula).shape[0]
    out = []
    for part in spec.dataset_parts:
        out += [
            Column(f"{part.prefix}_cartesian", _fixed(spec.cartesian_shape), spec.units, f"{part.label}, Cartesian"),
            Column(f"{part.prefix}_voigt", _fixed(spec.voigt_shape), spec.units, f"{part.label}, Voigt form"),
            Column(f"{part.prefix}_irreps", _fixed((dim,)), spec.units,
                   f"{part.label} in the e3nn irreps basis {spec.irreps} (formula {spec.formula})"),
        ]
    return out


def _derived_columns(spec: PropertySpec) -> list[Column]:
    return [Column(c.name, _DERIVED_FEATURES[c.kind], c.units, c.description) for c in spec.derived_columns]


def _validation_columns(spec: PropertySpec) -> list[Column]:
    """Validation facts: metric columns of the validate stage (zoo.data.validation.metric_columns), copied unchanged."""
    return [Column(name, _F64, units, description) for name, units, description in spec.validation_facts]


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
        Column("frame_evidence", Value("string"), "",
               "what settled the frame (zoo.data.cleaning.evidence: unique, source_field, margin, source_convention, "
               "as_given; null: invariant)"),
        Column("frame_rotation", _MATRIX3, "1",
               "rotation R clean applied to the source tensor, T_ab.. = R_ai R_bj .. T_source_ij.. (identity if none)"),
    ]


def dataset_columns(prop: str | PropertySpec, symmetry_settings: SymmetryConfig | None = None) -> list[Column]:
    """Every column of a property's dataset, in file order (`symmetry_settings`: the tolerances the crystal systems
    were found with, which the glossary states; None where only the columns' types matter)."""
    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    return (
        _identity_columns() + _structure_columns(symmetry_settings) + _tensor_columns(spec) + _derived_columns(spec)
        + _validation_columns(spec) + _provenance_columns()
    )


def dataset_features(prop: str | PropertySpec) -> Features:
    """The explicit ``datasets.Features`` of a property's dataset (float64 throughout, fixed-size lists)."""
    return Features({column.name: column.feature for column in dataset_columns(prop)})


def tensor_column_map(prop: str | PropertySpec) -> dict[str, dict[str, Any]]:
    """For each irreps column: the Cartesian (and Voigt) column it decomposes, the e3nn formula, the irreps.

    Machine-readable, written into the card's YAML header and the Parquet schema metadata, so that
    ``e3nn.io.CartesianTensor(formula).to_cartesian(irreps)`` can be checked against the Cartesian column.
    An invariant (the phonon DOS, 51x0e) is its own irreps vector (the spec's ``invariant_column_map``).
    """
    import e3nn

    spec = prop if isinstance(prop, PropertySpec) else properties.get(prop)
    if not spec.is_tensor:
        return spec.invariant_column_map
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
        for part in spec.dataset_parts
    }


def arrow_schema(spec: PropertySpec, symmetry_settings: SymmetryConfig) -> pa.Schema:
    """The features' Arrow schema, with units (and for tensor columns the irreps facts) as field metadata and
    the tensor_columns map as schema metadata."""
    features = dataset_features(spec)
    schema = features.arrow_schema
    tensor_map = tensor_column_map(spec)
    fields = []
    for column in dataset_columns(spec, symmetry_settings):
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
