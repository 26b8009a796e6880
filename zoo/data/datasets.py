"""The build stage's dataset repositories ``mp-<property>-irreps``: rows from the accepted records, splits, files.

One row per accepted record (``data/clean/<property>.accepted.parquet``, the validate stage's output), in the
columns of ``zoo.data.dataset_schema``; the folder is written through a staging folder and renamed into place.

Stored tensors are exactly symmetric: a square Voigt matrix or rank-2 tensor from the source is replaced by
(a + a^T)/2. The source's asymmetry is at most ``zoo.core.tensor_checks.SYMMETRY_RTOL`` of its norm (larger asymmetry is
refused with a ValueError naming the record), i.e. rounding of the printed values; without this step the
irreps vector, which keeps only the symmetric part, would not give back the stored tensor.

The rows themselves come from zoo.data.dataset_rows. Also the local folder's loading (``load_local``) and the row helpers of the user API (``zoo.datasets``).
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import properties
from zoo.core.config import SymmetryConfig
from zoo.core.io import atomic_write_text, sha256_file, staged_folder, write_json
from zoo.core.versions import check_version
from zoo.data import cards, splits
from zoo.data.dataset_rows import build_rows, split_key
from zoo.data.dataset_schema import (
    DATA_DIR,
    FINGERPRINT_DEFINITION,
    VERSION_FILE,
    arrow_schema,
    content_fingerprint,
    dataset_features,
    parquet_path,
    write_parquet,
)
from zoo.properties.spec import PropertySpec

HUB_DATASETS_DIR = Path("data/hub/datasets")


# ----------------------------------------------------------------------------------------------- validation
REQUIRED_INPUT_COLUMNS = (
    "record_id", "material_id", "formula", "structure_json", "crystal_system", "space_group_number",
    "space_group_symbol", "point_group", "laue_class", "is_centrosymmetric", "original_frame", "frame_action",
    "frame_evidence", "frame_rotation", "provenance_json", "holdout",
)


def _input_columns(spec: PropertySpec) -> tuple[str, ...]:
    return REQUIRED_INPUT_COLUMNS + spec.stored_columns + tuple(name for name, _, _ in spec.validation_facts)


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
        if name in ("material_id", "formula", "original_frame") or (name == "frame_evidence" and not spec.is_tensor):
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


def split_tables(spec: PropertySpec, rows: Mapping[str, list],
                 symmetry_settings: SymmetryConfig) -> dict[str, pa.Table]:
    """One Arrow table per split, rows sorted by record_id (build_rows already sorts them)."""
    schema = arrow_schema(spec, symmetry_settings)
    full = pa.Table.from_pydict(dict(rows), schema=schema)
    labels = np.asarray(rows["split"])
    present = [name for name in splits.ALL_SPLITS if name in splits.SPLITS or (labels == name).any()]
    return {name: full.take(np.flatnonzero(labels == name)) for name in present}


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
    symmetry_settings: SymmetryConfig,
    fractions: Mapping[str, float] = splits.DEFAULT_FRACTIONS,
    pinned_from: str | os.PathLike | None = None,
    workers: int = 1,
) -> BuildResult:
    """Build ``<out_root>/mp-<prop>-irreps/`` (card, version JSON, Parquet per split) from the validate outputs.

    symmetry_settings: the tolerances clean found the crystal systems with (params.yaml's symmetry section), stated
    in the glossary. pinned_from: a previous release's repository folder; its split assignments are kept
    (``zoo.data.splits``).
    The folder is written in a staging directory next to it and moved into place when complete.
    """
    # Longer than ~60 lines: checks, rows, files: one sequential flow whose steps share the staged folder.
    spec = properties.get(prop)
    version = check_version(version, "dataset_version")
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
    tables = split_tables(spec, rows, symmetry_settings)
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

    target = Path(out_root) / spec.dataset_name
    with staged_folder(target) as staging:
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
            frame_evidence=collections.Counter(rows["frame_evidence"]),
            pinned=pinned is not None, symmetry_settings=symmetry_settings,
        )
        atomic_write_text(staging / "README.md", card)
    return BuildResult(spec.dataset_name, target, version, fingerprint, counts, composition)


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
def load_local(name: str, local_root: str | os.PathLike = HUB_DATASETS_DIR):
    """The local build ``<local_root>/mp-<name>-irreps`` (name: a property or a dataset name) as a
    ``datasets.DatasetDict`` (train, validation, test), read from its files (``load_folder``)."""
    folder = Path(local_root) / repo_name(name)
    if not (folder / "README.md").is_file():
        raise ValueError(f"no local build of {name!r} in {folder}: run `dvc repro build@{folder.name.split('-')[1]}`")
    return load_folder(folder)


def load_folder(folder: str | os.PathLike):
    """A dataset repository folder (built or downloaded) as a ``datasets.DatasetDict``, read from its files.

    Through a private Arrow cache, then held in memory: ``datasets`` keys its cache of a local folder on the
    folder's name and schema, not on the files' contents (datasets 5.2: two builds of mp-elastic-irreps that differ
    only in values get one key), so the shared cache (~/.cache/huggingface/datasets) would hand back whichever
    build of that name any process on the machine loaded first, and a stage would train on another dataset than
    the one its dvc.lock entry names.
    """
    import datasets

    with tempfile.TemporaryDirectory(prefix="zoo-dataset-") as cache:
        return datasets.load_dataset(str(folder), cache_dir=cache, keep_in_memory=True)


def repo_name(name: str) -> str:
    """'elastic', 'mp-elastic-irreps' or 'org/mp-elastic-irreps' -> 'mp-elastic-irreps'."""
    base = name.rsplit("/", 1)[-1]
    return properties.get(base).dataset_name if base in properties.PROPERTIES else base


def row_structure(row: Mapping[str, Any]):
    """The pymatgen ``Structure`` of a dataset row (in the frame of its tensors)."""
    from pymatgen.core import Lattice, Structure

    try:
        return Structure(Lattice(np.asarray(row["lattice"], dtype=np.float64)), list(row["species"]),
                         np.asarray(row["frac_coords"], dtype=np.float64))
    except KeyError as err:
        raise ValueError(f"row lacks the structure column {err}") from None


def row_tensor(row: Mapping[str, Any], part: str | None = None):
    """The pymatgen object of a row's property value (the spec's ``row_value``).

    elastic: ``ElasticTensor`` (GPa); dielectric: ``SquareTensor`` of `part` ('electronic', 'ionic' or
    'total'; default 'total'); piezo: ``PiezoTensor`` (C/m^2); phonon: ``PhononDos`` with frequencies in THz
    and the 3N-normalised DOS in states/THz per cell (pymatgen's units).
    """
    spec = next((spec for spec in properties.PROPERTIES.values() if spec.row_marker in row), None)
    if spec is None:
        markers = ", ".join(spec.row_marker for spec in properties.PROPERTIES.values())
        raise ValueError(f"row holds none of the value columns of the datasets ({markers})")
    if part is not None and len(spec.dataset_parts) < 2:
        several = [s.name for s in properties.PROPERTIES.values() if len(s.dataset_parts) > 1]
        raise ValueError(f"part is only for {' and '.join(several)} rows (several tensor parts), got part={part!r}")
    return spec.row_value(row, part)
