"""The canonical raw record (the fetch stage's output): its JSON Schema, checking, reading and writing.

Both fetch sources (the offline snapshot and the Materials Project API) produce these records and write them
through `write_raw`; the clean stage reads them back with `read_raw`. The record format and the
unreadable-value convention are documented in ``schemas/raw-record.schema.json``; this module only enforces it.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from zoo import properties
from zoo.core import paths
from zoo.core.io import write_jsonl

SCHEMA_PATH = paths.RAW_RECORD_SCHEMA

# The key that marks a source field fetch could not read (see the schema's description).
UNPARSED_KEY = "unparsed"

# Error messages quote the offending value; a CIF or a 6x6 matrix would drown the message.
_MAX_MESSAGE_CHARS = 400


class RawRecordError(ValueError):
    """A record (or a raw file) that does not follow the canonical raw record format."""


@functools.cache
def _envelope() -> dict[str, Any]:
    """The property-agnostic part of the schema: schemas/raw-record.schema.json, loaded once."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def _array_schema(shape: tuple[int, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    for size in reversed(shape):
        schema = {"type": "array", "minItems": size, "maxItems": size, "items": schema}
    return schema


def _property_rule(spec: properties.PropertySpec) -> dict[str, Any]:
    """The part of the schema one property adds: its record_id prefix, its values and their claimed frames."""
    values = {
        "type": "object",
        "required": [value.key for value in spec.raw_values],
        "additionalProperties": False,
        "properties": {value.key: {
            "description": value.description,
            "anyOf": [_array_schema(value.shape), {"$ref": "#/$defs/unreadable"}]
            + ([{"type": "null"}] if value.nullable else [])} for value in spec.raw_values},
    }
    frames = ({"required": list(spec.source_keys), "propertyNames": {"enum": [v.key for v in spec.raw_values]}}
              if spec.is_tensor else {"maxProperties": 0})
    return {
        "if": {"properties": {"property": {"const": spec.name}}},
        "then": {"properties": {"record_id": {"pattern": f"^[^:]+:{spec.name}:"}, "values": values,
                                "tensor_frames": frames}},
    }


def raw_record_schema() -> dict[str, Any]:
    """The raw-record JSON Schema (Draft 2020-12): the file's envelope plus, for every known property, the rule
    its spec gives."""
    return _schema_and_validator()[0]


def _validator() -> Draft202012Validator:
    return _schema_and_validator()[1]


# Built once per set of known specs (a test may register its own).
_BUILT: dict[tuple[tuple[str, int], ...], tuple[dict[str, Any], Draft202012Validator]] = {}


def _schema_and_validator() -> tuple[dict[str, Any], Draft202012Validator]:
    key = tuple((name, id(spec)) for name, spec in properties.PROPERTIES.items())
    if key not in _BUILT:
        schema = copy.deepcopy(_envelope())
        schema["properties"]["property"]["enum"] = list(properties.PROPERTIES)
        schema["allOf"] = [_property_rule(spec) for spec in properties.PROPERTIES.values()] + schema["allOf"]
        Draft202012Validator.check_schema(schema)
        _BUILT[key] = (schema, Draft202012Validator(schema))
    return _BUILT[key]


@functools.cache
def retrieved_with() -> str:
    """The provenance tag of records made by this code: 'mp-tensor-zoo <installed version>'."""
    return f"mp-tensor-zoo {importlib.metadata.version('mp-tensor-zoo')}"


def unreadable(raw: str, error: str) -> dict[str, str]:
    """The marker kept in place of a source field that could not be read: the verbatim text and why."""
    return {UNPARSED_KEY: raw, "error": error}


def is_unreadable(value: Any) -> bool:
    return isinstance(value, dict) and UNPARSED_KEY in value


def unreadable_fields(record: Mapping[str, Any]) -> list[str]:
    """Dotted locations of the unreadable markers in a record, e.g. ['values.stiffness_voigt']."""
    found = [f"{section}.{key}" for section in ("values", "reported")
             for key, value in record.get(section, {}).items() if is_unreadable(value)]
    if is_unreadable(record.get("structure", {}).get("data")):
        found.append("structure.data")
    return sorted(found)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + " ..."


def validate_raw_record(record: Any) -> None:
    """Raise RawRecordError naming the record and the first offending field if `record` breaks the schema."""
    validator = _validator()
    if validator.is_valid(record):  # fast path; collecting errors to pick the best one costs ~40% more
        return
    error = best_match(validator.iter_errors(record))
    record_id = record.get("record_id") if isinstance(record, dict) else None
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    raise RawRecordError(
        f"raw record {record_id!r} does not match {SCHEMA_PATH.name} at {where}: {_shorten(error.message)}"
    )


def write_raw(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Check every record, then write them atomically as canonical JSON lines sorted by record_id.

    Returns the number of records written. Nothing is written if any record is invalid or an id repeats.
    """
    checked = list(records)
    for record in checked:
        validate_raw_record(record)
    checked.sort(key=lambda record: record["record_id"])
    for previous, current in zip(checked, checked[1:]):
        if previous["record_id"] == current["record_id"]:
            raise RawRecordError(f"record_id {current['record_id']!r} occurs more than once")
    return write_jsonl(path, checked)


def read_raw(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a data/raw/<property>.jsonl file, checking each record and the file's ordering contract.

    Raises RawRecordError naming the file and line for unparsable JSON, a record that breaks the schema,
    or record_ids out of order or repeated.
    """
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                validate_raw_record(record)
            except json.JSONDecodeError as err:
                raise RawRecordError(f"{path}:{line_number}: not a JSON object: {err}") from None
            except RawRecordError as err:
                raise RawRecordError(f"{path}:{line_number}: {err}") from None
            if records and record["record_id"] <= records[-1]["record_id"]:
                raise RawRecordError(
                    f"{path}:{line_number}: record_id {record['record_id']!r} is not after "
                    f"{records[-1]['record_id']!r}; raw files are sorted by record_id with no repeats"
                )
            records.append(record)
    return records
