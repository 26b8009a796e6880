"""The offline snapshot source: the pinned files of ``../shared/datasets`` -> canonical raw records.

Every file is pinned by sha256 in ``schemas/snapshot-manifest.json``; a file whose bytes differ is refused
(`SnapshotIntegrityError`), which is how a reproducibility audit knows the snapshot did not change. The bytes
are hashed and parsed from the same read, so nothing can change between the check and the parse.

Each property's spec says where its rows are (``PropertySpec.snapshots``: file, layout, which column holds which
value, the frames the source claims); one reader per file layout turns a row into a raw record
(``zoo.data.sources.snapshot_rows`` reads the fields). Readers never crash on a malformed field: they keep what
they can read and put the unreadable-value marker (``zoo.data.records.unreadable``) where a value could not be
read, so that clean can quarantine the record with a reason.

Elastic has three source files (SOURCES.md, ``mp-elastic-extra/README.md``): the matminer CSV of 2015 and two newer
sets in JSON lines, one layout per format, each emitting the same canonical raw record. Several records of one
material are merged later (``zoo.data.merging``), so every record carries the Materials Project release its source
file comes from (``provenance.mp_release_years``, the years the manifest states) for the merge rule to compare.

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
import re
import subprocess
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
from zoo.properties.source_fields import SnapshotField, SnapshotSource

SOURCE = "snapshot"
MANIFEST_PATH = paths.SNAPSHOT_MANIFEST
# The snapshot's folder for one command, whatever fetch.snapshot_root says (its bytes are pinned either way)
ROOT_ENV = "ZOO_SNAPSHOT_ROOT"
_ROOT_HINT = (f"put ../shared/datasets beside the repository, set fetch.snapshot_root in params.yaml, or export "
              f"{ROOT_ENV}=<the snapshot folder>")
# A clone of a clone of ... : how far back along local `origin` remotes the snapshot is looked for
_MAX_ORIGIN_HOPS = 4


def locate_root(configured: str | None = None, base: str | os.PathLike = paths.PROJECT_ROOT) -> Path:
    """The snapshot folder: $ZOO_SNAPSHOT_ROOT when set, else `configured` (fetch.snapshot_root; params.yaml's when
    None) relative to `base`, the checkout.

    A checkout cloned from a local repository (`git clone /path/to/repo elsewhere`) looks for the relative path
    beside that repository too, and beside its origin's origin: a clone made anywhere to try the project reads the
    snapshot its origin reads. Where it is found does not matter to the data, since every file is checked against
    the manifest's sha256. When it is nowhere, the checkout's own path is returned and reading it says what to do.
    """
    if os.environ.get(ROOT_ENV, "").strip():
        return Path(os.environ[ROOT_ENV].strip()).expanduser()
    if configured is None:
        from zoo.core.config import load_section  # the params file's fetch section, read only when not given

        configured = load_section("fetch").snapshot_root
    checkout = Path(base).resolve()
    own = checkout / configured
    seen = {checkout}
    for _ in range(_MAX_ORIGIN_HOPS + 1):
        candidate = checkout / configured
        if candidate.is_dir():
            return candidate
        checkout = _local_origin(checkout)
        if checkout is None or checkout in seen:
            break
        seen.add(checkout)
    return own


def _local_origin(checkout: Path) -> Path | None:
    """The local repository `checkout` was cloned from (its `origin` remote is a path), or None."""
    try:
        url = subprocess.run(["git", "-C", os.fspath(checkout), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, or a hung one: no origin to look beside
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url or re.match(r"^[^/]+@[^/]+:", url):  # a network remote (https://, git@host:...)
        return None
    origin = (checkout / url).resolve()  # a relative remote path is relative to the checkout
    return origin if origin.is_dir() else None


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
    record_tag: str = "", **provenance: Any,
) -> dict[str, Any]:
    return {
        # Zero-padded so that string order (the file's sort order) is row order; the newer files' rows are tagged.
        "record_id": f"{SOURCE}:{prop}:{record_tag}row-{row.number:05d}",
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


def _field(row: Row, item: SnapshotField) -> Any:
    """One field of a record read as its kind says (SnapshotField)."""
    if item.kind == "tensor":
        return tensor_field(row, item.column, item.shape, optional=item.optional)
    if item.kind in ("number", "integer"):
        return number_field(row, item.column, integer=item.kind == "integer")
    if item.kind == "boolean":
        return boolean_field(row, item.column)
    if item.kind == "text":
        return reported_text_field(row, item.column)
    if item.kind == "meta_point_group":
        return meta_point_group(row)
    if item.kind == "json_tensor":
        return json_tensor(row, item.column, item.shape)
    if item.kind == "json_text":
        return json_text(row, item.column)
    raise ValueError(f"snapshot field {item.key!r}: unknown kind {item.kind!r}")


def _fields(row: Row, items: tuple[SnapshotField, ...]) -> dict[str, Any]:
    return {item.key: _field(row, item) for item in items}


@dataclass(frozen=True)
class _Batch:
    records: list[dict[str, Any]]
    values_file: str
    rows_read: int
    inputs: dict[str, str]
    excluded: tuple[Exclusion, ...] = ()


def _matminer(prop: str, source: SnapshotSource, root: Path, manifest: Mapping[str, Any]) -> _Batch:
    """One record per row; material_id and formula columns; the structure as a POSCAR."""
    text, sha = _read_verified(root, manifest, source.file)
    rows = csv_rows(text, source.file)
    records = [_record(prop, source.file, sha, row, material_id=text_field(row, "material_id"),
                       formula=text_field(row, "formula"), structure=poscar_structure(row),
                       values=_fields(row, source.values), frames=source.frames,
                       reported=_fields(row, source.reported))
               for row in rows]
    return _Batch(records, source.file, len(rows), {source.file: sha})


def _ase_table(prop: str, source: SnapshotSource, root: Path, manifest: Mapping[str, Any]) -> _Batch:
    """Structures as ASE dicts; material ids recovered by row in `source.ids_file`; the trailing rows the manifest
    excludes are counted, not read."""
    text, sha = _read_verified(root, manifest, source.file)
    ids_text, ids_sha = _read_verified(root, manifest, source.ids_file)
    rows = csv_rows(text, source.file)
    exclusion = manifest["files"][source.file].get("excluded_rows")
    start, stop = (exclusion["start"], exclusion["stop"]) if exclusion else (len(rows), len(rows))
    if stop != len(rows):
        raise ValueError(f"manifest excludes {source.file} rows [{start}, {stop}) but the file has {len(rows)} rows")
    recovered = {int(row.fields["row"]): row for row in csv_rows(ids_text, source.ids_file)}
    records = []
    for row in rows[:start]:
        ids = recovered.get(row.number)
        # mp_ids.csv row 1521 (Mg3Bi2) recovered no id: material_id null, match 'none'; record_id is by row.
        recovery = ({"material_id_recovery": {"file": source.ids_file, "sha256": ids_sha,
                                              "match": ids.fields["match"]}} if ids else {})
        records.append(_record(
            prop, source.file, sha, row, material_id=text_field(ids, "material_id") if ids else None, formula=None,
            structure=ase_dict_structure(row), values=_fields(row, source.values), frames=source.frames,
            reported=_fields(row, source.reported), **recovery,
        ))
    excluded = ()
    if exclusion:
        excluded = (Exclusion(exclusion["reason"], stop - start, exclusion["description"], (start, stop)),)
    return _Batch(records, source.file, len(rows), {source.file: sha, source.ids_file: ids_sha}, excluded)


def _json_lines(prop: str, source: SnapshotSource, root: Path, manifest: Mapping[str, Any]) -> _Batch:
    """One JSON object per line: 'material_id' and (where given) 'formula' keys, the structure as a CIF
    ('cif-jsonl') or as lattice rows with Cartesian sites ('sites-jsonl'). Raw values the file does not give
    (elastic: the unsymmetrised and compliance tensors) are null."""
    text, sha = _read_verified(root, manifest, source.file)
    rows = json_lines(text)
    absent = {value.key: None for value in properties.get(prop).raw_values}
    records = [_record(prop, source.file, sha, row, material_id=json_text(row, "material_id"),
                       formula=json_text(row, "formula"), structure=_JSON_STRUCTURES[source.layout](row),
                       values={**absent, **_fields(row, source.values)}, frames=source.frames,
                       reported=_fields(row, source.reported), record_tag=source.record_tag)
               for row in rows]
    return _Batch(records, source.file, len(rows), {source.file: sha})


_JSON_STRUCTURES: dict[str, Callable[[Row], dict[str, Any]]] = {
    "cif-jsonl": lambda row: cif_structure(row, "cif"),
    "sites-jsonl": lambda row: sites_structure(row, "lattice_angstrom", "species", "cart_coords_angstrom"),
}
_LAYOUTS: dict[str, Callable[[str, SnapshotSource, Path, Mapping[str, Any]], _Batch]] = {
    "matminer": _matminer,
    "ase-table": _ase_table,
    **dict.fromkeys(_JSON_STRUCTURES, _json_lines),
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
    sources = spec.snapshots
    if not sources or any(source.layout not in _LAYOUTS for source in sources):
        raise ValueError(f"spec_name: {spec.name!r} has no snapshot source of a known layout ({', '.join(_LAYOUTS)})")
    manifest = load_manifest() if manifest is None else manifest
    batches = [_LAYOUTS[source.layout](spec.name, source, Path(root), manifest) for source in sources]
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
                           f"(a bug in zoo/data/sources/snapshot.py or the spec's snapshot fields, not in the data): "
                           f"{err}") from err
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
