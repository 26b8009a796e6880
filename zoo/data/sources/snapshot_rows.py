"""Reading the snapshot files' rows and fields: the parsing primitives of the snapshot adapters (``snapshot``).

A field that cannot be read never raises: it becomes the unreadable-value marker (``zoo.data.records.unreadable``)
holding the verbatim text and why, so that clean can quarantine the record with a reason.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo.data.records import unreadable

# ----------------------------------------------------------------------------------------- reading rows
@dataclass(frozen=True)
class Row:
    """One data row: zero-based number and column -> text. A row that cannot be aligned with the header has
    no fields, and `problem` says why; every field read from it becomes an unreadable marker."""

    number: int
    fields: Mapping[str, Any]  # text for a CSV, parsed JSON values for a JSON-lines file
    problem: str | None = None

    def missing(self, column: str) -> str:
        return self.problem or f"column {column!r} missing"


def csv_rows(text: str, relpath: str) -> list[Row]:
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
            rows.append(Row(number, dict(zip(header, fields))))
        else:
            rows.append(Row(number, {}, f"row has {len(fields)} fields where the header implies {width}"))
    return rows


# ------------------------------------------------------------------------------------------- field readers
def float_tree(value: Any, shape: tuple[int, ...], name: str) -> list[Any]:
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


def tensor_field(row: Row, column: str, shape: tuple[int, ...], *, optional: bool = False) -> Any:
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
        return float_tree(parsed, shape, column)
    except ValueError as err:
        return unreadable(text, str(err))


def number_field(row: Row, column: str, *, integer: bool = False) -> Any:
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


def boolean_field(row: Row, column: str) -> Any:
    text = row.fields.get(column)
    if text is None:
        return unreadable("", row.missing(column))
    if not text.strip():
        return None
    value = {"true": True, "false": False}.get(text.strip().lower())
    return value if value is not None else unreadable(text, f"{column}: not True/False")


def text_field(row: Row, column: str) -> str | None:
    """A plain text field (id, formula): stripped, None when empty or absent."""
    return (row.fields.get(column) or "").strip() or None


def reported_text_field(row: Row, column: str) -> Any:
    text = row.fields.get(column)
    return unreadable("", row.missing(column)) if text is None else (text.strip() or None)


def poscar_structure(row: Row) -> dict[str, Any]:
    text = row.fields.get("poscar")
    if text is None:
        return {"format": "poscar", "data": unreadable("", row.missing("poscar"))}
    return {"format": "poscar", "data": text if text.strip() else unreadable(text, "poscar: empty")}


def meta_point_group(row: Row) -> Any:
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


def ase_dict_structure(row: Row) -> dict[str, Any]:
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
            "positions": float_tree(atoms["positions"], (len(numbers), 3), "positions"),
            "cell": float_tree(atoms["cell"], (3, 3), "cell"),
            "pbc": pbc,
        }
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        return {"format": "ase-dict", "data": unreadable(text, f"structure: {err}")}
    return {"format": "ase-dict", "data": data}


# ------------------------------------------------------------------------------------------- JSON lines
def json_lines(text: str) -> list[Row]:
    """The rows of a JSON-lines file (one object per non-empty line); a line that is no JSON object is a row
    with no fields and a `problem`, so every field read from it becomes an unreadable marker."""
    rows = []
    for number, line in enumerate(line for line in text.split("\n") if line.strip()):
        try:
            fields = json.loads(line)
        except (ValueError, RecursionError) as err:
            rows.append(Row(number, {}, f"line is not JSON ({err})"))
            continue
        rows.append(Row(number, fields) if isinstance(fields, dict)
                    else Row(number, {}, f"line holds a {type(fields).__name__}, not a JSON object"))
    return rows


def json_tensor(row: Row, key: str, shape: tuple[int, ...]) -> Any:
    """A JSON-lines field of nested lists of `shape`, or the unreadable marker (its JSON text, verbatim)."""
    if key not in row.fields:
        return unreadable("", row.missing(key))
    try:
        return float_tree(row.fields[key], shape, key)
    except ValueError as err:
        return unreadable(json.dumps(row.fields[key]), str(err))


def json_text(row: Row, key: str) -> str | None:
    """A JSON-lines text field (id, formula): stripped, None when empty, absent or not text."""
    value = row.fields.get(key)
    return value.strip() or None if isinstance(value, str) else None


def cif_structure(row: Row, key: str) -> dict[str, Any]:
    value = row.fields.get(key)
    if value is None:
        return {"format": "cif", "data": unreadable("", row.missing(key))}
    if not isinstance(value, str) or not value.strip():
        return {"format": "cif", "data": unreadable(json.dumps(value), f"{key}: not a non-empty CIF text")}
    return {"format": "cif", "data": value}


def sites_structure(row: Row, lattice_key: str, species_key: str, coords_key: str) -> dict[str, Any]:
    """A cell given as lattice rows, element symbols and Cartesian coordinates (A) -> an ase-dict structure."""
    from ase.data import atomic_numbers  # a plain dict: symbol -> Z

    try:
        species = row.fields[species_key]
        if not (isinstance(species, list) and species and all(isinstance(s, str) for s in species)):
            raise ValueError(f"{species_key} must be a non-empty list of element symbols")
        unknown = sorted({s for s in species if s not in atomic_numbers or s == "X"})
        if unknown:
            raise ValueError(f"{species_key}: not element symbols: {unknown}")
        data = {
            "numbers": [atomic_numbers[s] for s in species],
            "positions": float_tree(row.fields[coords_key], (len(species), 3), coords_key),
            "cell": float_tree(row.fields[lattice_key], (3, 3), lattice_key),
            "pbc": [True, True, True],
        }
    except KeyError as err:
        missing = row.missing(str(err.args[0]))
        return {"format": "ase-dict", "data": unreadable("", missing)}
    except ValueError as err:
        given = {key: row.fields.get(key) for key in (lattice_key, species_key, coords_key)}
        return {"format": "ase-dict", "data": unreadable(json.dumps(given), f"structure: {err}")}
    return {"format": "ase-dict", "data": data}
