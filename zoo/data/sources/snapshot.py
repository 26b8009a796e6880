"""The offline snapshot source: the pinned legacy CSVs of ``../shared/datasets`` -> canonical raw records.

Every file is pinned by sha256 in ``schemas/snapshot-manifest.json``; a file whose bytes differ is refused
(`SnapshotIntegrityError`), which is how a reproducibility audit knows the snapshot did not change. The bytes
are hashed and parsed from the same read, so nothing can change between the check and the parse.

One adapter per property turns a legacy row into a raw record. Adapters never crash on a malformed field:
they keep what they can read and put the unreadable-value marker (``zoo.data.records.unreadable``) where a value
could not be read, so that clean can quarantine the record with a reason.

Elastic has three source files (SOURCES.md, ``mp-elastic-extra/README.md``): the matminer CSV of 2015 and two newer
sets in JSON lines, one adapter per format, each emitting the same canonical raw record. Several records of one
material are merged later (``zoo.data.merging``), so every record carries the Materials Project release its source
file comes from (``provenance.mp_release``, the years the manifest states) for the merge rule to compare.

Structures: the matminer CSVs carry the same cell twice, as a CIF and as a POSCAR. Records keep the POSCAR,
because it stores the lattice matrix itself and so fixes the Cartesian frame the tensors are compared in; a
CIF keeps only cell lengths and angles, and a parser re-orients the cell. (Measured on a sample of 1 in 12
rows with pymatgen: the POSCAR frame satisfies Neumann's principle at least as often as the CIF-parsed
frame for every tensor, e.g. e_electronic 87/88 vs 82/88, piezo 34/79 vs 26/79.) The StrainTensorNet file
gives only a CIF: its records keep it, and the parsed orientation is the parser's (the tensor is claimed in the IEEE
frame, which clean finds from the structure whatever its orientation). The ElaTBot file gives MP's conventional
standard cell as a lattice matrix with Cartesian sites: kept as an ASE-style dict, which fixes the frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core import paths
from zoo.core.io import sha256_bytes, sha256_file
from zoo.data.records import RawRecordError, retrieved_with, write_raw
from zoo.data.sources import Exclusion, FetchReport, SourceCount, count_unreadable_fields
from zoo.data.sources.snapshot_rows import (
    Row,
    ase_dict_structure,
    boolean_field,
    cif_structure,
    csv_rows,
    json_lines,
    json_tensor,
    json_text,
    meta_point_group,
    number_field,
    poscar_structure,
    reported_text_field,
    sites_structure,
    tensor_field,
    text_field,
)

SOURCE = "snapshot"
MANIFEST_PATH = paths.SNAPSHOT_MANIFEST
_ROOT_HINT = "put ../shared/datasets beside the repository, or set fetch.snapshot_root in params.yaml"

ELASTIC_FILE = "matminer-0.4.1/elastic_tensor.csv"
DIELECTRIC_FILE = "matminer-0.4.1/dielectric_constant.csv"
PIEZO_FILE = "matminer-0.4.1/piezoelectric_tensor.csv"
PHONON_FILE = "phonon-petretto/data_union.csv"
PHONON_IDS_FILE = "phonon-petretto/mp_ids.csv"
STRAINTENSORNET_FILE = "mp-elastic-extra/straintensornet_val.jsonl"
ELATBOT_FILE = "mp-elastic-extra/elatbot_val.jsonl"
# record_id keys: the matminer files keep the bare 'row-NNNNN' of release 1.0.0; other files prefix a tag.
_RECORD_TAGS = {STRAINTENSORNET_FILE: "straintensornet-", ELATBOT_FILE: "elatbot-"}

# The frames the sources claim (matminer's column descriptions), checked later by validate, not trusted:
# elastic_tensor "corresponding to IEEE orientation, symmetrized"; elastic_tensor_original "unsymmetrized,
# corresponding to POSCAR conventional standard cell orientation"; compliance_tensor is the inverse of
# elastic_tensor (S.C = 1 in every row), so IEEE too; the dielectric CSV states no frame; piezo is IEEE.
ELASTIC_FRAMES = {"stiffness_voigt": "ieee", "stiffness_voigt_original": "structure", "compliance_voigt": "ieee"}
DIELECTRIC_FRAMES = {"electronic": "unknown", "total": "unknown"}
PIEZO_FRAMES = {"piezo_voigt": "ieee"}
# Both newer elastic files: "6x6 Voigt stiffness in GPa, in the IEEE-standard frame of the structure as MP defines it"
# (mp-elastic-extra/README.md); they have no unsymmetrised or compliance column.
EXTRA_ELASTIC_FRAMES = {"stiffness_voigt": "ieee"}


class SnapshotIntegrityError(ValueError):
    """A snapshot file whose bytes are not the ones the manifest pins."""


# --------------------------------------------------------------------------------------------- integrity
def load_manifest(path: str | os.PathLike = MANIFEST_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if not isinstance(manifest.get("files"), dict) or not all(
        isinstance(entry, dict) and "sha256" in entry and "rows" in entry for entry in manifest["files"].values()
    ):
        raise ValueError(f"snapshot manifest {path} must map 'files' to entries with 'sha256' and 'rows'")
    return manifest


def _pinned(root: Path, manifest: Mapping[str, Any], relpath: str) -> tuple[Path, str]:
    entry = manifest["files"].get(relpath)
    if entry is None:
        raise ValueError(f"{relpath!r} is not in the snapshot manifest; pinned files: {', '.join(manifest['files'])}")
    return root / relpath, entry["sha256"]


def _missing(root: Path, relpath: str) -> FileNotFoundError:
    where = "does not exist" if not root.is_dir() else f"has no {relpath}"
    return FileNotFoundError(f"snapshot root {root} {where}: {_ROOT_HINT}")


def _refuse(relpath: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise SnapshotIntegrityError(
            f"snapshot file {relpath} has sha256 {actual}, but the manifest pins {expected}; "
            "the snapshot changed, refusing to read it"
        )


def verify_snapshot(
    root: str | os.PathLike, manifest: Mapping[str, Any] | None = None, files: list[str] | None = None
) -> dict[str, str]:
    """Check the sha256 of every pinned file (or only `files`); return relative path -> sha256.

    Raises SnapshotIntegrityError naming the file and both hashes for a file whose bytes differ, and
    FileNotFoundError saying where the snapshot should be for a missing one.
    """
    manifest = load_manifest() if manifest is None else manifest
    root = Path(root)
    hashes = {}
    for relpath in files if files is not None else manifest["files"]:
        path, expected = _pinned(root, manifest, relpath)
        if not path.is_file():
            raise _missing(root, relpath)
        hashes[relpath] = sha256_file(path)
        _refuse(relpath, expected, hashes[relpath])
    return hashes


def _read_verified(root: Path, manifest: Mapping[str, Any], relpath: str) -> tuple[str, str]:
    """The text of a pinned file and its sha256, from one read (refused if the hash differs)."""
    path, expected = _pinned(root, manifest, relpath)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise _missing(root, relpath) from None
    actual = sha256_bytes(data)
    _refuse(relpath, expected, actual)
    return data.decode("utf-8"), actual


# ------------------------------------------------------------------------------------------------ adapters
def _record(
    prop: str, relpath: str, sha: str, row: Row, *, material_id: str | None, formula: str | None,
    structure: dict[str, Any], values: dict[str, Any], frames: Mapping[str, str], reported: dict[str, Any],
    **provenance: Any,
) -> dict[str, Any]:
    return {
        # Zero-padded so that string order (the file's sort order) is row order.
        "record_id": f"{SOURCE}:{prop}:{_RECORD_TAGS.get(relpath, '')}row-{row.number:05d}",
        "property": prop,
        "material_id": material_id,
        "formula": formula,
        "structure": structure,
        "values": values,
        "tensor_frames": dict(frames),
        "reported": reported,
        "provenance": {"source": SOURCE, "file": relpath, "row": row.number, "sha256": sha,
                       "retrieved_with": retrieved_with(), **provenance},
    }


def _elastic_record(row: Row, sha: str) -> dict[str, Any]:
    values = {
        "stiffness_voigt": tensor_field(row, "elastic_tensor", (6, 6)),
        "stiffness_voigt_original": tensor_field(row, "elastic_tensor_original", (6, 6), optional=True),
        "compliance_voigt": tensor_field(row, "compliance_tensor", (6, 6), optional=True),
    }
    reported = {
        **{name: number_field(row, name) for name in (
            "K_Voigt", "K_Reuss", "K_VRH", "G_Voigt", "G_Reuss", "G_VRH", "elastic_anisotropy", "poisson_ratio",
            "volume")},
        **{name: number_field(row, name, integer=True) for name in ("space_group", "nsites", "kpoint_density")},
    }
    return _record("elastic", ELASTIC_FILE, sha, row, material_id=text_field(row, "material_id"),
                   formula=text_field(row, "formula"), structure=poscar_structure(row), values=values, frames=ELASTIC_FRAMES,
                   reported=reported)


def _dielectric_record(row: Row, sha: str) -> dict[str, Any]:
    values = {"electronic": tensor_field(row, "e_electronic", (3, 3)), "total": tensor_field(row, "e_total", (3, 3))}
    reported = {
        **{name: number_field(row, name) for name in ("poly_electronic", "poly_total", "n", "band_gap", "volume")},
        **{name: number_field(row, name, integer=True) for name in ("space_group", "nsites")},
        "pot_ferroelectric": boolean_field(row, "pot_ferroelectric"),
        "point_group": meta_point_group(row),
    }
    return _record("dielectric", DIELECTRIC_FILE, sha, row, material_id=text_field(row, "material_id"),
                   formula=text_field(row, "formula"), structure=poscar_structure(row), values=values,
                   frames=DIELECTRIC_FRAMES, reported=reported)


def _piezo_record(row: Row, sha: str) -> dict[str, Any]:
    values = {"piezo_voigt": tensor_field(row, "piezoelectric_tensor", (3, 6))}
    reported = {
        "eij_max": number_field(row, "eij_max"),
        "v_max": tensor_field(row, "v_max", (3,), optional=True),
        "point_group": reported_text_field(row, "point_group"),
        "volume": number_field(row, "volume"),
        **{name: number_field(row, name, integer=True) for name in ("space_group", "nsites")},
    }
    return _record("piezo", PIEZO_FILE, sha, row, material_id=text_field(row, "material_id"),
                   formula=text_field(row, "formula"), structure=poscar_structure(row), values=values, frames=PIEZO_FRAMES,
                   reported=reported)


def _straintensornet_record(row: Row, sha: str) -> dict[str, Any]:
    return _record("elastic", STRAINTENSORNET_FILE, sha, row, material_id=json_text(row, "material_id"),
                   formula=None, structure=cif_structure(row, "cif"),
                   values={"stiffness_voigt": json_tensor(row, "elastic_tensor_voigt_ieee_gpa", (6, 6)),
                           "stiffness_voigt_original": None, "compliance_voigt": None},
                   frames=EXTRA_ELASTIC_FRAMES, reported={"crystal_system": json_text(row, "crystal_system")})


def _elatbot_record(row: Row, sha: str) -> dict[str, Any]:
    return _record("elastic", ELATBOT_FILE, sha, row, material_id=json_text(row, "material_id"),
                   formula=json_text(row, "formula"),
                   structure=sites_structure(row, "lattice_angstrom", "species", "cart_coords_angstrom"),
                   values={"stiffness_voigt": json_tensor(row, "elastic_tensor_voigt_ieee_gpa", (6, 6)),
                           "stiffness_voigt_original": None, "compliance_voigt": None},
                   frames=EXTRA_ELASTIC_FRAMES, reported={})


@dataclass(frozen=True)
class _Batch:
    records: list[dict[str, Any]]
    values_file: str
    rows_read: int
    inputs: dict[str, str]
    excluded: tuple[Exclusion, ...] = ()


def _one_file(relpath: str, read_rows: Callable[[str, str], list[Row]],
              build: Callable[[Row, str], dict[str, Any]]) -> Callable[..., _Batch]:
    """An adapter for a file whose every row is one record."""
    def read(root: Path, manifest: Mapping[str, Any]) -> _Batch:
        text, sha = _read_verified(root, manifest, relpath)
        rows = read_rows(text, relpath)
        return _Batch([build(row, sha) for row in rows], relpath, len(rows), {relpath: sha})

    return read


def _matminer(relpath: str, build: Callable[[Row, str], dict[str, Any]]) -> Callable[..., _Batch]:
    return _one_file(relpath, csv_rows, build)


def _jsonl(relpath: str, build: Callable[[Row, str], dict[str, Any]]) -> Callable[..., _Batch]:
    return _one_file(relpath, lambda text, _: json_lines(text), build)


def _phonon(root: Path, manifest: Mapping[str, Any]) -> _Batch:
    text, sha = _read_verified(root, manifest, PHONON_FILE)
    ids_text, ids_sha = _read_verified(root, manifest, PHONON_IDS_FILE)
    rows = csv_rows(text, PHONON_FILE)
    exclusion = manifest["files"][PHONON_FILE].get("excluded_rows")
    start, stop = (exclusion["start"], exclusion["stop"]) if exclusion else (len(rows), len(rows))
    if stop != len(rows):
        raise ValueError(f"manifest excludes {PHONON_FILE} rows [{start}, {stop}) but the file has {len(rows)} rows")
    recovered = {int(row.fields["row"]): row for row in csv_rows(ids_text, PHONON_IDS_FILE)}
    grid_points = len(properties.PHONON_GRID_CM)
    records = []
    for row in rows[:start]:
        ids = recovered.get(row.number)
        # mp_ids.csv row 1521 (Mg3Bi2) recovered no id: material_id null, match 'none'; record_id is by row.
        recovery = ({"material_id_recovery": {"file": PHONON_IDS_FILE, "sha256": ids_sha,
                                              "match": ids.fields["match"]}} if ids else {})
        records.append(_record(
            "phonon", PHONON_FILE, sha, row, material_id=text_field(ids, "material_id") if ids else None, formula=None,
            structure=ase_dict_structure(row),
            values={"frequencies_cm": tensor_field(row, "phfreq", (grid_points,)),
                    "dos": tensor_field(row, "phdos", (grid_points,))},
            frames={}, reported={}, **recovery,
        ))
    excluded = ()
    if exclusion:
        excluded = (Exclusion(exclusion["reason"], stop - start, exclusion["description"], (start, stop)),)
    return _Batch(records, PHONON_FILE, len(rows), {PHONON_FILE: sha, PHONON_IDS_FILE: ids_sha}, excluded)


# One adapter per source file (format) of a property; their records go into one raw file.
_ADAPTERS: dict[str, tuple[Callable[[Path, Mapping[str, Any]], _Batch], ...]] = {
    "elastic": (_matminer(ELASTIC_FILE, _elastic_record), _jsonl(STRAINTENSORNET_FILE, _straintensornet_record),
                _jsonl(ELATBOT_FILE, _elatbot_record)),
    "dielectric": (_matminer(DIELECTRIC_FILE, _dielectric_record),),
    "piezo": (_matminer(PIEZO_FILE, _piezo_record),),
    "phonon": (_phonon,),
}


def _with_release(records: list[dict[str, Any]], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each record's provenance gets the years of the MP release its file comes from, where the manifest states
    them (the merge rule, ``zoo.data.merging``, compares them)."""
    years = entry.get("mp_release_years")
    if years is not None:
        for record in records:
            record["provenance"]["mp_release_years"] = list(years)
    return records


def fetch_property(
    spec_name: str, root: str | os.PathLike, out_path: str | os.PathLike,
    *, manifest: Mapping[str, Any] | None = None,
) -> FetchReport:
    """Read one property's pinned snapshot files and write its raw records to `out_path` (JSON lines).

    The output is deterministic: the same snapshot gives byte-identical files. Raises
    SnapshotIntegrityError / FileNotFoundError for a changed or missing snapshot file, and RuntimeError if
    the adapter produces a record that breaks the raw-record schema (a bug here, not in the data).
    """
    spec = properties.get(spec_name)
    if spec.name not in _ADAPTERS:
        raise ValueError(f"spec_name: no snapshot adapter for {spec.name!r}; adapters: {', '.join(_ADAPTERS)}")
    manifest = load_manifest() if manifest is None else manifest
    batches = [adapter(Path(root), manifest) for adapter in _ADAPTERS[spec.name]]
    for batch in batches:
        expected = manifest["files"][batch.values_file]["rows"]
        if len(batch.records) != expected:
            raise RuntimeError(f"snapshot adapter for {spec.name!r} made {len(batch.records)} records from "
                               f"{batch.values_file}, but the manifest pins {expected} rows")
    records = [record for batch in batches
               for record in _with_release(batch.records, manifest["files"][batch.values_file])]
    try:
        written = write_raw(out_path, records)
    except RawRecordError as err:
        raise RuntimeError(f"snapshot adapter for {spec.name!r} made a record that breaks the raw-record schema "
                           f"(a bug in zoo/data/sources/snapshot.py, not in the data): {err}") from err
    return FetchReport(
        property=spec.name, source=SOURCE, output=os.fspath(out_path), output_sha256=sha256_file(out_path),
        rows_read=sum(batch.rows_read for batch in batches), records_written=written,
        inputs={name: sha for batch in batches for name, sha in batch.inputs.items()},
        excluded=tuple(exclusion for batch in batches for exclusion in batch.excluded),
        unreadable_fields=count_unreadable_fields(records),
        by_source={batch.values_file: SourceCount(batch.rows_read, len(batch.records),
                                                  sum(exclusion.count for exclusion in batch.excluded))
                   for batch in batches},
    )
