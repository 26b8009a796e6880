"""The live Materials Project source of the fetch stage: MP API documents -> canonical raw records.

How the data are reached
    Through the real client, ``mp_api.client.MPRester(api_key, endpoint=...)``, one REST GET per page:
    ``GET {endpoint}{route}/?_skip=..&_limit=..&_fields=..`` answered with ``{"data": [...], "meta":
    {"total_doc": N}}``. Each page goes through ``BaseRester._submit_request_and_process``, the client's
    single-request primitive that its own ``search`` pages with. We do not call ``search`` because it pages
    internally with no hook to checkpoint, and because a search with no criteria and ``num_chunks=None``
    leaves REST altogether and downloads the whole collection from the AWS open-data bucket
    (boto3/deltalake). This module never takes that path.

    elastic     ``materials/elasticity``, paged; structure, tensors and moduli from the document itself.
    dielectric  ``materials/dielectric``, paged; emmet excludes ``structure`` from serialised dielectric and
    piezo       ``materials/piezoelectric`` documents, so each page's structures are looked up in
                ``materials/summary`` by ``material_ids``.
    phonon      ``materials/summary`` with ``has_props=phonon`` is paged for each material's ``phonon_IDs``
                (phonon task identifiers by method); the phonon documents of the selected method are then
                looked up in ``materials/phonon`` by ``identifiers``. Records are keyed by that identifier.

What the records hold (from emmet-core 0.87 ``ElasticityDoc``, ``DielectricDoc``, ``PiezoelectricDoc``,
``PhononBSDOSDoc``)
    elastic     stiffness_voigt = ``elastic_tensor.ieee_format`` (GPa, IEEE frame, emmet rounds it to whole
                GPa); stiffness_voigt_original = ``elastic_tensor.raw`` (GPa, the served structure's frame);
                compliance_voigt = ``compliance_tensor.raw`` x 1e-3 (emmet serves TPa^-1, the record wants
                1/GPa; ``raw``, not ``ieee_format``, because emmet rounds the latter to whole TPa^-1).
    dielectric  ``electronic`` and ``total`` 3x3: emmet rotates both into the IEEE frame
                (``Tensor.convert_to_ieee``), so their frame claim is "ieee". The scalars e_electronic,
                e_ionic, e_total (means of the diagonals) and n go to ``reported`` for cross-checks.
    piezo       ``total`` 3x6 Voigt C/m^2, IEEE frame (emmet: ``PiezoTensor.convert_to_ieee``).
    phonon      ``phonon_dos.frequencies`` (THz) x 1e12/(100 c) -> cm^-1; the piecewise-linear DOS is averaged
                over the cell of each point of the 51-point grid 0, 20, ..., 1000 cm^-1 (cells tile
                [-10, 1010] cm^-1), then divided by its maximum, like the snapshot. See `resample_dos`.
    material_id is written in the legacy ``mp-<int>`` form (emmet 0.87 serialises ids as AlphaIDs such as
    ``mp-aaaaaout``; the snapshot and the splits use ``mp-10003``); the served form is kept in ``reported``.

Failures and retries
    mp-api mounts a urllib3 ``Retry`` on its own session (3 retries of 429/502/504, connect and read errors,
    0.1 s backoff); it does not retry 500/503, a body cut off mid-transfer, or a 200 whose JSON does not
    parse, and its heartbeat GETs have no timeout and no retry. We hand MPRester a session without adapter
    retries so that one loop here owns them all: 429, 5xx, timeouts, connection resets, truncated or invalid
    JSON bodies are retried with exponential backoff (``backoff_s * 2**k``, or the server's Retry-After when
    longer, each wait capped at ``max_delay_s``), at most ``max_retries`` times per request; then
    `MPAPIError`. 401/403 raise `MPAPIKeyError` at once. The key never appears in a message or a log line.

Resuming
    Each completed page (listing plus its lookup) is written atomically to ``state_dir/page-NNNNN.json``
    next to ``query.json`` (endpoint, database version, routes, fields, chunk size). A rerun with the same
    query loads the pages it has and fetches only the rest; a different query (or a new MP database release)
    starts over. Records are built only from the stored pages, so a resumed run writes the same bytes as an
    uninterrupted one. The state directory is removed once the output is written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from zoo.core.io import atomic_write_text, canonical_json, sha256_file, write_json
from zoo.data.records import write_raw
from zoo.data.sources import FetchReport, count_unreadable_fields
from zoo.properties.source_fields import MPSource
from zoo.properties.spec import PropertySpec
from zoo.data.sources.mp_api.client import SOURCE, SUMMARY_ROUTE, Client, Lookup, MPAPIError, MPAPIKeyError, Query
from zoo.data.sources.mp_api.records import build_records, resample_dos, task_ids

__all__ = ["MPAPIError", "MPAPIKeyError", "STRUCTURE_LOOKUP_FIELDS", "fetch_property", "resample_dos",
           "task_listing_fields"]

_log = logging.getLogger(__name__)

# The DFPT set is the method of the snapshot (Petretto et al. 2018); MP also has phonopy and pheasy tasks.
DEFAULT_PHONON_METHOD = "dfpt"

# Bump when the stored page layout changes, so an old state directory is not reused.
_STATE_FORMAT = 1


# Summary-route fields; each property route's own fields are its spec's mp_api.fields.
STRUCTURE_LOOKUP_FIELDS = ("material_id", "structure")


def task_listing_fields(source: MPSource) -> tuple[str, ...]:
    return ("material_id", "formula_pretty", source.task_ids_field)


def _plan(spec: PropertySpec, phonon_method: str) -> tuple[Query, Lookup | None]:
    """The paged listing query and the per-page lookup for one property, as its spec's MPSource says."""
    source = spec.mp_api
    if source is None:
        raise ValueError(f"spec: no Materials Project source for property {spec.name!r}")
    if source.task_ids_field is not None:  # tasks listed per material in summary, looked up by identifier
        listing = Query(SUMMARY_ROUTE, task_listing_fields(source), (("has_props", source.has_props),))
        tasks = Query(source.route, source.fields, ((source.method_criterion, phonon_method),))
        return listing, Lookup(tasks, "identifiers", "identifier")
    if source.structure_from_summary:
        return (Query(source.route, source.fields),
                Lookup(Query(SUMMARY_ROUTE, STRUCTURE_LOOKUP_FIELDS), "material_ids", "material_id"))
    return Query(source.route, source.fields), None


def _lookup_keys(spec: PropertySpec, listing: list[dict[str, Any]], phonon_method: str) -> list[str]:
    """The keys a page's lookup asks for: its materials (structures) or its tasks of the method."""
    if spec.mp_api.task_ids_field is not None:
        return sorted({str(i) for doc in listing for i in task_ids(doc, spec.mp_api).get(phonon_method, [])})
    return sorted({str(doc["material_id"]) for doc in listing if doc.get("material_id") is not None})


# ------------------------------------------------------------------------------------------- checkpoints


class _PageStore:
    """Completed pages of one query under `directory`, each written atomically; reset when the query changes."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any]) -> None:
        self.directory = directory
        query_file = directory / "query.json"
        stored = None
        if query_file.exists():
            try:
                stored = json.loads(query_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                stored = None
        if stored != fingerprint:
            if stored is not None:
                _log.info("%s holds pages of a different query; starting over", directory)
            self.clear()
            write_json(query_file, fingerprint)

    def path(self, index: int) -> Path:
        return self.directory / f"page-{index:05d}.json"

    def load(self, index: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot come from our atomic writes; refetch rather than trust it
            self.path(index).unlink()
            return None

    def save(self, index: int, page: dict[str, Any]) -> None:
        atomic_write_text(self.path(index), canonical_json(page))

    def clear(self) -> None:
        for stale in self.directory.glob("page-*.json"):
            stale.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _PageProgress:
    """A rich progress bar of pages and records on stderr (nothing when disabled)."""

    def __init__(self, enabled: bool, description: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pages"),
            TextColumn("{task.fields[records]} documents"), TimeElapsedColumn(),
            console=Console(stderr=True), disable=not enabled,
        )
        self._task = self._progress.add_task(description, total=None, records=0)
        self._records = 0

    def __enter__(self) -> _PageProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._progress.stop()

    def set_total(self, pages: int) -> None:
        self._progress.update(self._task, total=pages)

    def page_done(self, documents: int) -> None:
        self._records += documents
        self._progress.update(self._task, advance=1, records=self._records)


# ------------------------------------------------------------------------------------------------ fetch


def fetch_property(
    spec: PropertySpec,
    out_path: str | Path,
    *,
    api_key: str | None,
    endpoint: str | None = None,
    chunk_size: int = 200,
    max_retries: int = 6,
    backoff_s: float = 2.0,
    max_delay_s: float = 120.0,
    timeout_s: float = 60.0,
    phonon_method: str = DEFAULT_PHONON_METHOD,
    state_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch one property from the Materials Project API into canonical raw records at `out_path`.

    api_key: the Materials Project key (the stage passes ``MP_API_KEY``); endpoint: API root, default the
    public one. chunk_size: documents per page (the server's maximum is 1000). max_retries, backoff_s,
    max_delay_s, timeout_s: retry policy and per-request timeout (see the module docstring).
    phonon_method: which phonon tasks to keep ('dfpt' like the snapshot, 'phonopy', 'pheasy').
    state_dir: where completed pages are checkpointed, default ``<out dir>/.mp-api-<property>``.
    Returns the `FetchReport` as a dict, plus ``"mp_api"``: endpoint, database version, pages, pages resumed
    from the state directory, attempts and retries of this run (the only parts that vary between runs).
    """
    if not isinstance(spec, PropertySpec):
        raise ValueError(f"spec must be a zoo.properties.PropertySpec, got {type(spec).__name__}")
    if not api_key or not api_key.strip():
        raise MPAPIKeyError(
            "MP_API_KEY is not set: export your Materials Project API key "
            "(https://next-gen.materialsproject.org/api) or fetch from the offline snapshot instead."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= 1000:
        raise ValueError(f"chunk_size must be an integer in 1..1000 (the API's page limit), got {chunk_size!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    for name, value in (("backoff_s", backoff_s), ("max_delay_s", max_delay_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
    if not isinstance(phonon_method, str) or not phonon_method:
        raise ValueError(f"phonon_method must be a phonon method name such as 'dfpt', got {phonon_method!r}")

    out_path = Path(out_path)
    listing_query, lookup = _plan(spec, phonon_method)
    client = Client(api_key.strip(), endpoint, timeout_s=float(timeout_s), max_retries=max_retries,
                     backoff_s=float(backoff_s), max_delay_s=float(max_delay_s))
    try:
        return _fetch_pages_and_write(spec, out_path, client, listing_query, lookup, chunk_size=chunk_size,
                                      phonon_method=phonon_method, state_dir=state_dir, progress=progress)
    finally:
        client.session.close()


def _fetch_pages_and_write(spec: PropertySpec, out_path: Path, client: Client, listing_query: Query,
                           lookup: Lookup | None, *, chunk_size: int, phonon_method: str,
                           state_dir: str | Path | None, progress: bool) -> dict[str, Any]:
    """Page through `listing_query` (each page with its lookup), checkpointing, then write the records."""
    # Longer than ~60 lines: the paging loop and its per-page closure share the store, the client and the counts.
    store = _PageStore(
        Path(state_dir) if state_dir is not None else out_path.parent / f".mp-api-{spec.name}",
        {
            "format": _STATE_FORMAT, "property": spec.name, "endpoint": client.endpoint,
            "db_version": client.db_version, "chunk_size": chunk_size, "listing": listing_query.as_json(),
            "lookup": None if lookup is None else {**lookup.query.as_json(), "key_param": lookup.key_param},
        },
    )

    def fetch_page(index: int) -> dict[str, Any]:
        where = f"{listing_query.route} page {index}"
        listing, meta = client.query(listing_query, where, _skip=index * chunk_size, _limit=chunk_size)
        total = meta.get("total_doc")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise MPAPIError(f"{where}: the response's meta has no document count (total_doc={total!r})")
        expected = max(0, min(chunk_size, total - index * chunk_size))
        if len(listing) != expected:
            raise MPAPIError(
                f"{where}: expected {expected} documents (_skip={index * chunk_size}, _limit={chunk_size}, "
                f"total_doc={total}) but got {len(listing)}; if the server caps pages "
                f"(max_limit={meta.get('max_limit')!r}), lower chunk_size"
            )
        found: list[dict[str, Any]] = []
        keys = _lookup_keys(spec, listing, phonon_method) if lookup is not None else []
        if lookup is not None and keys:
            found, _ = client.query(lookup.query, f"{lookup.query.route} lookup for page {index}",
                                    **{lookup.key_param: ",".join(keys), "_limit": len(keys)})
        return {"index": index, "total_doc": total, "listing": listing, "lookup": found}

    pages: list[dict[str, Any]] = []
    resumed = 0
    with _PageProgress(progress, f"MP API {spec.name}") as bar:
        index = 0
        n_pages = 1
        while index < n_pages:
            page = store.load(index)
            if page is None:
                page = fetch_page(index)
                store.save(index, page)
            else:
                resumed += 1
            if index == 0:
                n_pages = max(1, math.ceil(page["total_doc"] / chunk_size))
                bar.set_total(n_pages)
            elif page["total_doc"] != pages[0]["total_doc"]:
                store.clear()
                raise MPAPIError(
                    f"{listing_query.route} changed while paging (total_doc {pages[0]['total_doc']} on page 0, "
                    f"{page['total_doc']} on page {index}); the stored pages were discarded, run again"
                )
            pages.append(page)
            bar.page_done(len(page["listing"]))
            index += 1

    built = build_records(spec, pages, lookup, phonon_method)
    written = write_raw(out_path, built.records)
    report = FetchReport(
        property=spec.name, source=SOURCE, output=str(out_path), output_sha256=sha256_file(out_path),
        rows_read=built.rows_read, records_written=written, inputs=built.inputs,
        excluded=built.exclusions, unreadable_fields=count_unreadable_fields(built.records),
    ).to_dict()
    store.remove()
    report["mp_api"] = {
        "endpoint": client.endpoint, "db_version": client.db_version, "pages": len(pages),
        "pages_resumed": resumed, "attempts": client.attempts, "retries": client.retries,
    }
    return report
