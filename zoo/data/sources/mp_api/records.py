"""Served Materials Project documents -> canonical raw records, as each property's spec (MPSource) maps them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from emmet.core.types.typing import format_identifier

from zoo.core.io import canonical_json, sha256_bytes
from zoo.data.records import retrieved_with, unreadable
from zoo.data.sources import Exclusion
from zoo.properties.source_fields import MPSource, MPSpectrum
from zoo.properties.spec import PropertySpec
from zoo.data.sources.mp_api.client import SOURCE, SUMMARY_ROUTE, Lookup, MPAPIError


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class _Built:
    records: list[dict[str, Any]]
    rows_read: int
    exclusions: tuple[Exclusion, ...]
    inputs: dict[str, str]


def _doc_sha256(doc: Any) -> str:
    return sha256_bytes(canonical_json(doc).encode("utf-8"))


def _verbatim(value: Any) -> str:
    """The served JSON text of a value (for unreadable markers)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def _field(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_shape(value: Any, shape: tuple[int, ...]) -> bool:
    if not shape:
        return _is_number(value)
    return isinstance(value, list) and len(value) == shape[0] and all(_has_shape(v, shape[1:]) for v in value)


def _tensor(doc: dict[str, Any], dotted: str, shape: tuple[int, ...], scale: float | None = None) -> Any:
    """The served nested list at `dotted` (scaled by `scale`), or an unreadable marker saying why not."""
    value = _field(doc, dotted)
    if not _has_shape(value, shape):
        what = "missing" if value is None else "not"
        return unreadable(_verbatim(value), f"{dotted} is {what} a {'x'.join(map(str, shape))} array of numbers")
    if scale is None:
        return value
    return np.multiply(np.asarray(value, dtype=np.float64), scale).tolist()


def _optional_tensor(doc: dict[str, Any], dotted: str, shape: tuple[int, ...], scale: float | None = None) -> Any:
    return None if _field(doc, dotted) is None else _tensor(doc, dotted, shape, scale)


def _reported(doc: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Source scalars for cross-checks (record name -> served field); short numeric lists allowed."""
    out: dict[str, Any] = {}
    for name, dotted in names.items():
        value = _field(doc, dotted)
        plain = value is None or isinstance(value, (str, bool)) or _is_number(value)
        numeric_list = isinstance(value, list) and all(_is_number(v) for v in value)
        out[name] = value if plain or numeric_list else unreadable(_verbatim(value), f"{dotted} is not a scalar")
    return out


def _structure(doc: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """The served pymatgen Structure dict of `doc` (described as `source`), or a marker saying what was wrong."""
    value = None if doc is None else doc.get("structure")
    if isinstance(value, dict) and "lattice" in value and "sites" in value:
        return {"format": "pymatgen-dict", "data": value}
    if doc is None:
        error = f"{source} was not served"
    elif value is None:
        error = f"{source} has no structure"
    else:
        error = f"the structure of {source} is not a pymatgen Structure dict"
    return {"format": "pymatgen-dict", "data": unreadable(_verbatim(value), error)}


def _legacy_id(value: Any) -> str | None:
    """'mp-10003' for any served form of a Materials Project id ('mp-aaaaaout' in emmet 0.87)."""
    if value is None:
        return None
    return str(format_identifier(str(value), legacy=True))


def task_ids(summary_doc: dict[str, Any], source: MPSource) -> dict[str, list[str]]:
    """A summary document's task identifiers by method (its `source.task_ids_field`)."""
    ids = summary_doc.get(source.task_ids_field)
    if not isinstance(ids, dict):
        return {}
    return {str(method): [str(i) for i in values] for method, values in ids.items() if isinstance(values, list)}


def resample_dos(frequencies_cm: Any, densities: Any, grid_cm: np.ndarray) -> np.ndarray:
    """Average a DOS onto `grid_cm`: the mean of its piecewise-linear interpolant over each grid point's cell.

    Cells are bounded by the midpoints between grid points and extend half a spacing past both ends, so for
    the 0, 20, ..., 1000 cm^-1 grid they tile [-10, 1010]. The DOS is zero outside the served frequencies;
    weight below -10 cm^-1 (imaginary modes) or above 1010 cm^-1 is not on the grid. Averaging, unlike
    sampling at the grid points, keeps the spectral weight of a finely resolved, spiky DOS:
    ``sum(result * cell widths)`` equals its integral over the grid's span. Not normalised.
    """
    freq = np.asarray(frequencies_cm, dtype=np.float64)
    dens = np.asarray(densities, dtype=np.float64)
    grid = np.asarray(grid_cm, dtype=np.float64)
    if freq.ndim != 1 or freq.shape != dens.shape or freq.size < 2:
        raise ValueError(f"frequencies and densities must be 1-D of one length >= 2, got {freq.shape}, {dens.shape}")
    if not (np.isfinite(freq).all() and np.isfinite(dens).all()):
        raise ValueError("frequencies and densities must be finite")
    if np.any(np.diff(freq) <= 0):
        raise ValueError("frequencies must be strictly increasing")
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError("grid_cm must be a strictly increasing 1-D grid of >= 2 points")
    mid = (grid[1:] + grid[:-1]) / 2
    edges = np.concatenate([[grid[0] - (grid[1] - grid[0]) / 2], mid, [grid[-1] + (grid[-1] - grid[-2]) / 2]])
    # Integrate the interpolant exactly: its nodes plus the cell edges, clipped to where it is defined.
    clipped = np.clip(edges, freq[0], freq[-1])
    nodes = np.union1d(freq, clipped)
    values = np.interp(nodes, freq, dens)
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(nodes) * (values[1:] + values[:-1]) / 2)])
    weight = np.diff(np.interp(clipped, nodes, cumulative))
    return weight / np.diff(edges)


def _spectrum_values(doc: dict[str, Any], spectrum: MPSpectrum) -> dict[str, Any]:
    """{grid key: the grid, values key: the max-normalised spectrum on it, or an unreadable marker}."""
    frequencies = _field(doc, spectrum.frequencies)
    densities = _field(doc, spectrum.densities)
    served = _verbatim({"frequencies": frequencies, "densities": densities})
    grid = spectrum.grid.tolist()
    dotted = spectrum.frequencies.rpartition(".")[0] or spectrum.frequencies
    span = f"{spectrum.grid[0]:g}..{spectrum.grid[-1]:g}"
    if not (isinstance(frequencies, list) and isinstance(densities, list)
            and all(_is_number(v) for v in frequencies) and all(_is_number(v) for v in densities)):
        values = unreadable(served, f"{dotted}.frequencies/densities are not numeric lists")
        return {spectrum.grid_key: grid, spectrum.values_key: values}
    try:
        resampled = resample_dos(np.asarray(frequencies, dtype=np.float64) * spectrum.to_grid_units, densities,
                                 spectrum.grid)
    except ValueError as err:
        return {spectrum.grid_key: grid, spectrum.values_key: unreadable(served, f"{dotted} cannot be resampled: {err}")}
    peak = resampled.max()
    if not peak > 0:
        values = unreadable(served, f"{dotted} has no positive weight on {span} cm^-1")
        return {spectrum.grid_key: grid, spectrum.values_key: values}
    return {spectrum.grid_key: grid, spectrum.values_key: (resampled / peak).tolist()}


def _record(spec: PropertySpec, key: str, material_id: Any, doc: dict[str, Any], *, formula: Any,
            structure: dict[str, Any], values: dict[str, Any], frames: dict[str, str],
            reported: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_id": f"{SOURCE}:{spec.name}:{key}",
        "property": spec.name,
        "material_id": _legacy_id(material_id),
        "formula": formula if isinstance(formula, str) and formula else None,
        "structure": structure,
        "values": values,
        "tensor_frames": frames,
        "reported": reported,
        "provenance": {
            "source": SOURCE, "file": spec.mp_api.route, "row": None, "sha256": _doc_sha256(doc),
            "retrieved_with": retrieved_with(),
        },
    }


def _document_values(doc: dict[str, Any], source: MPSource) -> dict[str, Any]:
    """The record values of one served document (MPValue: the nested list at a field, or null when optional)."""
    read = {True: _optional_tensor, False: _tensor}
    return {value.key: read[value.optional](doc, value.field, value.shape, value.scale) for value in source.values}


def _material_record(spec: PropertySpec, doc: dict[str, Any], structure_doc: dict[str, Any] | None) -> dict[str, Any]:
    """The record of one material's document; its structure from the document or from its summary document."""
    source = spec.mp_api
    key = _legacy_id(doc.get("material_id")) or f"sha256-{_doc_sha256(doc)[:16]}"
    if source.structure_from_summary:
        structure = _structure(structure_doc, f"the {SUMMARY_ROUTE} document of {key}")
    else:
        structure = _structure(doc, f"the {source.route} document")
    return _record(spec, key, doc.get("material_id"), doc, formula=doc.get("formula_pretty"), structure=structure,
                   values=_document_values(doc, source), frames=dict(source.frames),
                   reported=_reported(doc, source.reported))


def _route_digest(docs: Iterable[dict[str, Any]]) -> str:
    """Order-free digest of the documents served by one route."""
    return sha256_bytes("\n".join(sorted(_doc_sha256(doc) for doc in docs)).encode("utf-8"))


def _dedupe(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop repeats of the same served document (offset paging over a live collection can repeat one)."""
    kept: dict[str, dict[str, Any]] = {}
    repeats = 0
    for record in records:
        seen = kept.get(record["record_id"])
        if seen is None:
            kept[record["record_id"]] = record
        elif seen == record:
            repeats += 1
        else:
            raise MPAPIError(f"{record['record_id']} was served twice with different content; run again")
    return list(kept.values()), repeats


def build_records(spec: PropertySpec, pages: list[dict[str, Any]], lookup: Lookup | None,
                   phonon_method: str) -> _Built:
    listing = [doc for page in pages for doc in page["listing"]]
    looked_up = [doc for page in pages for doc in page["lookup"]]
    if spec.mp_api.task_ids_field is not None:
        records, rows, exclusions, inputs = _task_records(spec, listing, looked_up, phonon_method)
    else:
        exclusions = []
        inputs = {spec.mp_api.route: _route_digest(listing)}
        structures: dict[str, dict[str, Any]] = {}
        if lookup is not None:
            inputs[SUMMARY_ROUTE] = _route_digest(looked_up)
            structures = {_legacy_id(doc.get(lookup.key_field)): doc for doc in looked_up
                          if doc.get(lookup.key_field) is not None}
        records = [_material_record(spec, doc, structures.get(_legacy_id(doc.get("material_id"))))
                   for doc in listing]
        rows = len(listing)
    records, repeats = _dedupe(records)
    if repeats:
        exclusions.append(Exclusion("duplicate_document", repeats,
                                    "the same document served on two pages of the offset paging"))
    return _Built(records, rows, tuple(exclusions), inputs)


def _task_records(spec: PropertySpec, listing: list[dict[str, Any]], looked_up: list[dict[str, Any]],
                  method: str) -> tuple[list[dict[str, Any]], int, list[Exclusion], dict[str, str]]:
    """Records of task documents (one per task of the selected method listed in summary): (records, task ids
    listed, exclusions, input digests)."""
    source = spec.mp_api
    inputs = {SUMMARY_ROUTE: _route_digest(listing), source.route: _route_digest(looked_up)}
    task_docs = {str(doc.get("identifier")): doc for doc in looked_up}
    records, rows, other_method, dangling = [], 0, 0, 0
    for summary_doc in listing:
        for task_method, identifiers in sorted(task_ids(summary_doc, source).items()):
            rows += len(identifiers)
            if task_method != method:
                other_method += len(identifiers)
                continue
            for identifier in identifiers:
                doc = task_docs.get(identifier)
                if doc is None:
                    dangling += 1
                    continue
                values = _spectrum_values(doc, source.spectrum) if source.spectrum else _document_values(doc, source)
                records.append(_record(
                    spec, identifier, summary_doc.get("material_id"), doc,
                    formula=doc.get("formula_pretty") or summary_doc.get("formula_pretty"),
                    structure=_structure(doc, f"the {source.route} document {identifier}"),
                    values=values, frames=dict(source.frames),
                    reported={**_reported(doc, source.reported),
                              **_reported(summary_doc, {"material_id_as_served": "material_id"})},
                ))
    exclusions = []
    if other_method:
        exclusions.append(Exclusion(f"{source.method_criterion}_not_selected", other_method,
                                    f"{source.has_props} tasks listed in {source.task_ids_field} whose method is "
                                    f"not {method!r}"))
    if dangling:
        exclusions.append(Exclusion(f"{source.has_props}_document_missing", dangling,
                                    f"{source.task_ids_field} that {source.route} did not serve"))
    return records, rows, exclusions, inputs
