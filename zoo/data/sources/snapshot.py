"""The offline snapshot source: the pinned legacy CSVs of ``../shared/datasets`` -> canonical raw records.

Every file is pinned by sha256 in ``schemas/snapshot-manifest.json``; a file whose bytes differ is refused
(`SnapshotIntegrityError`), which is how a reproducibility audit knows the snapshot did not change. The bytes
are hashed and parsed from the same read, so nothing can change between the check and the parse.

Each property's spec says where its rows are (``PropertySpec.snapshot``: file, layout, which column holds which
value, the frames the source claims); one reader per file layout turns a row into a raw record. Readers never
crash on a malformed field:
they keep what they can read and put the unreadable-value marker (``zoo.data.records.unreadable``) where a value
could not be read, so that clean can quarantine the record with a reason.

Structures: the matminer CSVs carry the same cell twice, as a CIF and as a POSCAR. Records keep the POSCAR,
because it stores the lattice matrix itself and so fixes the Cartesian frame the tensors are compared in; a
CIF keeps only cell lengths and angles, and a parser re-orients the cell. (Measured on a sample of 1 in 12
rows with pymatgen: the POSCAR frame satisfies Neumann's principle at least as often as the CIF-parsed
frame for every tensor, e.g. e_electronic 87/88 vs 82/88, piezo 34/79 vs 26/79.)
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core import paths
from zoo.core.io import sha256_bytes, sha256_file
from zoo.data.records import RawRecordError, retrieved_with, unreadable, write_raw
from zoo.data.sources import Exclusion, FetchReport, count_unreadable_fields
from zoo.properties.spec import SnapshotField, SnapshotSource

SOURCE = "snapshot"
MANIFEST_PATH = paths.SNAPSHOT_MANIFEST
_ROOT_HINT = "put ../shared/datasets beside the repository, or set fetch.snapshot_root in params.yaml"


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


# ----------------------------------------------------------------------------------------- reading rows
@dataclass(frozen=True)
class _Row:
    """One data row: zero-based number and column -> text. A row that cannot be aligned with the header has
    no fields, and `problem` says why; every field read from it becomes an unreadable marker."""

    number: int
    fields: Mapping[str, str]
    problem: str | None = None

    def missing(self, column: str) -> str:
        return self.problem or f"column {column!r} missing"


def _table(text: str, relpath: str) -> list[_Row]:
    """Parse a CSV whose first line may be a '# ref:' comment (only that line: CIF strings contain '#')."""
    if text.startswith("#"):
        text = text.partition("\n")[2]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    raw_rows = list(reader)
    # pandas wrote some files with an unnamed index column that the header does not name.
    width = Counter(len(fields) for fields in raw_rows).most_common(1)[0][0] if raw_rows else len(header)
    if width == len(header) + 1:
        header = ["", *header]
    elif width != len(header):
        raise ValueError(f"{relpath}: rows have {width} fields but the header names {len(header)} columns")
    rows = []
    for number, fields in enumerate(raw_rows):
        if len(fields) == width:
            rows.append(_Row(number, dict(zip(header, fields))))
        else:
            rows.append(_Row(number, {}, f"row has {len(fields)} fields where the header implies {width}"))
    return rows


# ------------------------------------------------------------------------------------------- field readers
def _float_tree(value: Any, shape: tuple[int, ...], name: str) -> list[Any]:
    """`value` as nested lists of finite floats of exactly `shape`; ValueError saying where it is not."""
    def walk(item: Any, depth: int, where: str) -> Any:
        if depth == len(shape):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise ValueError(f"{where} is {item!r}, not a number")
            if not math.isfinite(item):
                raise ValueError(f"{where} is {item!r}, not finite")
            return float(item)
        if not isinstance(item, list) or len(item) != shape[depth]:
            got = f"has {len(item)} items" if isinstance(item, list) else f"is a {type(item).__name__}"
            raise ValueError(f"expected a {'x'.join(map(str, shape))} array: {where} {got}, not {shape[depth]}")
        return [walk(element, depth + 1, f"{where}[{i}]") for i, element in enumerate(item)]

    return walk(value, 0, name)


def _tensor(row: _Row, column: str, shape: tuple[int, ...], *, optional: bool = False) -> Any:
    """A JSON nested-list field of `shape`; None for an empty optional field; else the unreadable marker."""
    text = row.fields.get(column)
    if text is None:
        return unreadable("", row.missing(column))
    if optional and not text.strip():
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
        return unreadable(text, f"{column}: not JSON ({err})")
    try:
        return _float_tree(parsed, shape, column)
    except ValueError as err:
        return unreadable(text, str(err))


def _number(row: _Row, column: str, *, integer: bool = False) -> Any:
    text = row.fields.get(column)
    if text is None:
        return unreadable("", row.missing(column))
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return unreadable(text, f"{column}: not a number")
    if not math.isfinite(value):
        return unreadable(text, f"{column}: non-finite number")
    if integer:
        # Some files print integers as floats ('216.0').
        return int(value) if value.is_integer() else unreadable(text, f"{column}: not an integer")
    return value


def _boolean(row: _Row, column: str) -> Any:
    text = row.fields.get(column)
    if text is None:
        return unreadable("", row.missing(column))
    if not text.strip():
        return None
    value = {"true": True, "false": False}.get(text.strip().lower())
    return value if value is not None else unreadable(text, f"{column}: not True/False")


def _text(row: _Row, column: str) -> str | None:
    """A plain text field (id, formula): stripped, None when empty or absent."""
    return (row.fields.get(column) or "").strip() or None


def _reported_text(row: _Row, column: str) -> Any:
    text = row.fields.get(column)
    return unreadable("", row.missing(column)) if text is None else (text.strip() or None)


def _poscar(row: _Row) -> dict[str, Any]:
    text = row.fields.get("poscar")
    if text is None:
        return {"format": "poscar", "data": unreadable("", row.missing("poscar"))}
    return {"format": "poscar", "data": text if text.strip() else unreadable(text, "poscar: empty")}


def _meta_point_group(row: _Row) -> Any:
    """The point group the dielectric CSV keeps inside its 'meta' column (a Python-2 dict repr)."""
    text = row.fields.get("meta")
    if text is None:
        return unreadable("", row.missing("meta"))
    try:
        meta = ast.literal_eval(text)  # a literal, never eval: the text is data
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return unreadable(text, "meta: not a Python literal")
    point_group = meta.get("point_group") if isinstance(meta, dict) else None
    if not isinstance(point_group, str) or not point_group.strip():
        return unreadable(text, "meta: no point_group")
    return point_group.strip()


def _ase_dict(row: _Row) -> dict[str, Any]:
    """The phonon CSV's structure: a Python dict repr of ASE atoms (numbers, positions, cell, pbc)."""
    text = row.fields.get("structure")
    if text is None:
        return {"format": "ase-dict", "data": unreadable("", row.missing("structure"))}
    try:
        atoms = ast.literal_eval(text)  # a literal, never eval: the text is data
        if not isinstance(atoms, dict) or set(atoms) != {"numbers", "positions", "cell", "pbc"}:
            raise ValueError("expected a dict with exactly numbers, positions, cell, pbc")
        numbers = atoms["numbers"]
        if not (isinstance(numbers, list) and numbers
                and all(isinstance(z, int) and not isinstance(z, bool) and z >= 1 for z in numbers)):
            raise ValueError("numbers must be a non-empty list of atomic numbers")
        pbc = atoms["pbc"]
        if not (isinstance(pbc, list) and len(pbc) == 3 and all(isinstance(flag, bool) for flag in pbc)):
            raise ValueError("pbc must be three booleans")
        data = {
            "numbers": numbers,
            "positions": _float_tree(atoms["positions"], (len(numbers), 3), "positions"),
            "cell": _float_tree(atoms["cell"], (3, 3), "cell"),
            "pbc": pbc,
        }
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        return {"format": "ase-dict", "data": unreadable(text, f"structure: {err}")}
    return {"format": "ase-dict", "data": data}


# ------------------------------------------------------------------------------------------------ adapters
def _record(
    prop: str, relpath: str, sha: str, row: _Row, *, material_id: str | None, formula: str | None,
    structure: dict[str, Any], values: dict[str, Any], frames: Mapping[str, str], reported: dict[str, Any],
    **provenance: Any,
) -> dict[str, Any]:
    return {
        # Zero-padded so that string order (the file's sort order) is row order.
        "record_id": f"{SOURCE}:{prop}:row-{row.number:05d}",
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


def _field(row: _Row, item: SnapshotField) -> Any:
    """One field of a record read as its kind says (SnapshotField)."""
    if item.kind == "tensor":
        return _tensor(row, item.column, item.shape, optional=item.optional)
    if item.kind in ("number", "integer"):
        return _number(row, item.column, integer=item.kind == "integer")
    if item.kind == "boolean":
        return _boolean(row, item.column)
    if item.kind == "text":
        return _reported_text(row, item.column)
    if item.kind == "meta_point_group":
        return _meta_point_group(row)
    raise ValueError(f"snapshot field {item.key!r}: unknown kind {item.kind!r}")


def _fields(row: _Row, items: tuple[SnapshotField, ...]) -> dict[str, Any]:
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
    rows = _table(text, source.file)
    records = [_record(prop, source.file, sha, row, material_id=_text(row, "material_id"),
                       formula=_text(row, "formula"), structure=_poscar(row), values=_fields(row, source.values),
                       frames=source.frames, reported=_fields(row, source.reported))
               for row in rows]
    return _Batch(records, source.file, len(rows), {source.file: sha})


def _ase_table(prop: str, source: SnapshotSource, root: Path, manifest: Mapping[str, Any]) -> _Batch:
    """Structures as ASE dicts; material ids recovered by row in `source.ids_file`; the trailing rows the manifest
    excludes are counted, not read."""
    text, sha = _read_verified(root, manifest, source.file)
    ids_text, ids_sha = _read_verified(root, manifest, source.ids_file)
    rows = _table(text, source.file)
    exclusion = manifest["files"][source.file].get("excluded_rows")
    start, stop = (exclusion["start"], exclusion["stop"]) if exclusion else (len(rows), len(rows))
    if stop != len(rows):
        raise ValueError(f"manifest excludes {source.file} rows [{start}, {stop}) but the file has {len(rows)} rows")
    recovered = {int(row.fields["row"]): row for row in _table(ids_text, source.ids_file)}
    records = []
    for row in rows[:start]:
        ids = recovered.get(row.number)
        # mp_ids.csv row 1521 (Mg3Bi2) recovered no id: material_id null, match 'none'; record_id is by row.
        recovery = ({"material_id_recovery": {"file": source.ids_file, "sha256": ids_sha,
                                              "match": ids.fields["match"]}} if ids else {})
        records.append(_record(
            prop, source.file, sha, row, material_id=_text(ids, "material_id") if ids else None, formula=None,
            structure=_ase_dict(row), values=_fields(row, source.values), frames=source.frames,
            reported=_fields(row, source.reported), **recovery,
        ))
    excluded = ()
    if exclusion:
        excluded = (Exclusion(exclusion["reason"], stop - start, exclusion["description"], (start, stop)),)
    return _Batch(records, source.file, len(rows), {source.file: sha, source.ids_file: ids_sha}, excluded)


_LAYOUTS: dict[str, Callable[[str, SnapshotSource, Path, Mapping[str, Any]], _Batch]] = {
    "matminer": _matminer,
    "ase-table": _ase_table,
}


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
    if spec.snapshot is None or spec.snapshot.layout not in _LAYOUTS:
        raise ValueError(f"spec_name: {spec.name!r} has no snapshot source of a known layout ({', '.join(_LAYOUTS)})")
    manifest = load_manifest() if manifest is None else manifest
    batch = _LAYOUTS[spec.snapshot.layout](spec.name, spec.snapshot, Path(root), manifest)
    expected = manifest["files"][batch.values_file]["rows"]
    if len(batch.records) != expected:
        raise RuntimeError(f"snapshot adapter for {spec.name!r} made {len(batch.records)} records from "
                           f"{batch.values_file}, but the manifest pins {expected} rows")
    try:
        written = write_raw(out_path, batch.records)
    except RawRecordError as err:
        raise RuntimeError(f"snapshot adapter for {spec.name!r} made a record that breaks the raw-record schema "
                           f"(a bug in zoo/data/sources/snapshot.py or the spec's snapshot fields, not in the data): {err}") from err
    return FetchReport(
        property=spec.name, source=SOURCE, output=os.fspath(out_path), output_sha256=sha256_file(out_path),
        rows_read=batch.rows_read, records_written=written, inputs=batch.inputs, excluded=batch.excluded,
        unreadable_fields=count_unreadable_fields(batch.records),
    )
