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

import email.utils
import importlib.metadata
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests
from emmet.core.types.typing import format_identifier
from mp_api.client import MPRester
from mp_api.client.core.client import BaseRester
from mp_api.client.core.exceptions import MPRestError
from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS
from requests.adapters import HTTPAdapter
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from zoo.core.io import (
    atomic_write_text,
    canonical_json,
    sha256_bytes,
    sha256_file,
    write_json,
)
from zoo.data.records import retrieved_with, unreadable, write_raw
from zoo.data.sources import Exclusion, FetchReport, count_unreadable_fields
from zoo.properties.spec import MPSource, MPSpectrum, PropertySpec

_log = logging.getLogger(__name__)

SOURCE = "mp-api"
SUMMARY_ROUTE = "materials/summary"

# The DFPT set is the method of the snapshot (Petretto et al. 2018); MP also has phonopy and pheasy tasks.
DEFAULT_PHONON_METHOD = "dfpt"

# Bump when the stored page layout changes, so an old state directory is not reused.
_STATE_FORMAT = 1


class MPAPIError(RuntimeError):
    """The Materials Project API could not be fetched from (after the allowed retries), or answered oddly."""


class MPAPIKeyError(MPAPIError):
    """The API key is missing or was rejected. The message never contains the key."""


# ----------------------------------------------------------------------------------------------- what to ask


@dataclass(frozen=True)
class _Query:
    """One REST route, the criteria every request to it carries, and the document fields it asks for."""

    route: str
    fields: tuple[str, ...]
    criteria: tuple[tuple[str, str], ...] = ()

    def params(self, **extra: Any) -> dict[str, Any]:
        return {**dict(self.criteria), "_fields": ",".join(self.fields), **extra}

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "fields": list(self.fields), "criteria": dict(self.criteria)}


@dataclass(frozen=True)
class _Lookup:
    """A second request per page: documents of `query.route` whose `key_field` is one of the page's keys."""

    query: _Query
    key_param: str  # the REST criterion taking the comma-separated keys
    key_field: str  # the document field those keys match


# Summary-route fields; each property route's own fields are its spec's mp_api.fields.
STRUCTURE_LOOKUP_FIELDS = ("material_id", "structure")


def task_listing_fields(source: MPSource) -> tuple[str, ...]:
    return ("material_id", "formula_pretty", source.task_ids_field)


def _plan(spec: PropertySpec, phonon_method: str) -> tuple[_Query, _Lookup | None]:
    """The paged listing query and the per-page lookup for one property, as its spec's MPSource says."""
    source = spec.mp_api
    if source is None:
        raise ValueError(f"spec: no Materials Project source for property {spec.name!r}")
    if source.task_ids_field is not None:  # tasks listed per material in summary, looked up by identifier
        listing = _Query(SUMMARY_ROUTE, task_listing_fields(source), (("has_props", source.has_props),))
        tasks = _Query(source.route, source.fields, ((source.method_criterion, phonon_method),))
        return listing, _Lookup(tasks, "identifiers", "identifier")
    if source.structure_from_summary:
        return (_Query(source.route, source.fields),
                _Lookup(_Query(SUMMARY_ROUTE, STRUCTURE_LOOKUP_FIELDS), "material_ids", "material_id"))
    return _Query(source.route, source.fields), None


def _lookup_keys(spec: PropertySpec, listing: list[dict[str, Any]], phonon_method: str) -> list[str]:
    """The keys a page's lookup asks for: its materials (structures) or its tasks of the method."""
    if spec.mp_api.task_ids_field is not None:
        return sorted({str(i) for doc in listing for i in _task_ids(doc, spec.mp_api).get(phonon_method, [])})
    return sorted({str(doc["material_id"]) for doc in listing if doc.get("material_id") is not None})


# ------------------------------------------------------------------------------------------ talking to MP


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass(frozen=True)
class _Failure:
    transient: bool
    summary: str
    key_rejected: bool = False
    retry_after_s: float | None = None


class _Client:
    """MPRester on a session whose only retries are ours; one GET per `query` attempt, counted."""

    def __init__(self, api_key: str, endpoint: str | None, *, timeout_s: float, max_retries: int,
                 backoff_s: float, max_delay_s: float) -> None:
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_delay_s = max_delay_s
        self.attempts = 0
        self.retries = 0
        self._last_status: int | None = None
        self._last_retry_after: str | None = None

        self.session = requests.Session()
        # No adapter-level retries: urllib3's would multiply with ours and sleep through any Retry-After.
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=0))
        self.session.headers["x-api-key"] = api_key
        self.session.headers["user-agent"] = (
            f"{retrieved_with().replace(' ', '/')} mp-api/{importlib.metadata.version('mp-api')}"
        )
        # mp-api turns every non-200 into an MPRestError carrying only text; the hook keeps the status.
        self.session.hooks["response"].append(self._remember_response)

        # mp-api's default: the public API, or MP_API_ENDPOINT when set.
        self.endpoint = (endpoint or MAPI_CLIENT_SETTINGS.ENDPOINT).rstrip("/") + "/"
        self._call("heartbeat", self._probe_heartbeat)
        self.mpr: MPRester = self._call("connecting the mp-api client", self._connect)
        self.db_version = str(self.mpr.db_version)

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_status = response.status_code
        self._last_retry_after = response.headers.get("Retry-After")

    def _probe_heartbeat(self) -> None:
        # MPRester's own heartbeat GETs have no timeout and no retry: probing first, with both, turns a dead
        # or overloaded host into our retries, and a host that is not the MP API into a clear error at once.
        response = self.session.get(self.endpoint + "heartbeat", timeout=self._timeout_s)
        status = response.status_code
        if status in (401, 429) or status >= 500:
            raise MPRestError(f"heartbeat answered HTTP {status}")  # classified like any other answer
        if status == 403:  # mp-api only warns that it cannot hear the heartbeat; so do we
            return
        content_type = response.headers.get("Content-Type", "")
        if status != 200 or "json" not in content_type:
            raise MPAPIError(f"{self.endpoint} does not answer like the Materials Project API "
                             f"(GET heartbeat: HTTP {status}, {content_type or 'no content type'})")
        response.json()  # a body cut short raises here, and is retried

    def _connect(self) -> MPRester:
        return MPRester(api_key=self._api_key, endpoint=self.endpoint, session=self.session,
                        use_document_model=False, mute_progress_bars=True)

    def rester(self, route: str) -> BaseRester:
        rester = getattr(self.mpr.materials, route.split("/", 1)[1])
        if rester.suffix != route:
            raise MPAPIError(f"mp-api has no rester for route {route!r} (found {rester.suffix!r})")
        return rester

    def query(self, query: _Query, what: str, **extra: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One GET of `query` (plus `extra` criteria): the served documents and the response's meta."""
        rester = self.rester(query.route)
        params = query.params(**extra)

        def get() -> dict[str, Any]:
            data, _ = rester._submit_request_and_process(
                url=rester.endpoint, verify=True, params=params, use_document_model=False,
                timeout=self._timeout_s,
            )
            if not isinstance(data, dict) or not isinstance(data.get("data"), list):
                raise MPAPIError(f"{what}: the response has no 'data' list")
            return data

        data = self._call(what, get)
        return data["data"], data.get("meta") or {}

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            self._last_status = self._last_retry_after = None
            self.attempts += 1
            try:
                return call()
            except MPAPIError:
                raise
            except Exception as exc:  # classified below; anything not transient is re-raised
                failure = self._classify(exc)
                if failure.key_rejected:
                    raise MPAPIKeyError(
                        f"the Materials Project API rejected the API key in MP_API_KEY ({failure.summary}). "
                        "Check the key at https://next-gen.materialsproject.org/api, or fetch from the "
                        "offline snapshot instead."
                    ) from None
                if not failure.transient:
                    raise MPAPIError(self._redact(f"{what} failed: {failure.summary}")) from exc
                if attempt == attempts:
                    raise MPAPIError(self._redact(
                        f"{what} failed after {attempts} attempts ({self._max_retries} retries); "
                        f"last error: {failure.summary}"
                    )) from exc
                delay = min(self._max_delay_s,
                            max(self._backoff_s * 2 ** (attempt - 1), failure.retry_after_s or 0.0))
                _log.warning("%s", self._redact(
                    f"{what}: {failure.summary}; retry {attempt}/{self._max_retries} in {delay:.2f} s"
                ))
                self.retries += 1
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _classify(self, exc: BaseException) -> _Failure:
        chain = []
        link: BaseException | None = exc
        while link is not None and link not in chain:
            chain.append(link)
            link = link.__cause__ or link.__context__
        for link in chain:
            if isinstance(link, requests.RequestException):
                # Timeouts, refused/reset connections, bodies cut off mid-transfer, unparsable JSON.
                return _Failure(True, f"{type(link).__name__}: {self._brief(link)}")
            if isinstance(link, json.JSONDecodeError):  # orjson's decode error subclasses it
                return _Failure(True, f"response body is not valid JSON ({self._brief(link)})")
        status = self._last_status
        if isinstance(exc, MPRestError) and status is not None:
            if status in (401, 403):
                return _Failure(False, f"HTTP {status}", key_rejected=True)
            if status == 429 or 500 <= status <= 599:
                return _Failure(True, f"HTTP {status}", retry_after_s=_retry_after_seconds(self._last_retry_after))
            return _Failure(False, f"HTTP {status}: {self._brief(exc)}")
        if isinstance(exc, (KeyError, TypeError)) and status is None:
            # No response passed through our session, so this came from MPRester's own heartbeat GETs
            # (construction), reading a body without db_version: the server failed between two heartbeats.
            return _Failure(True, f"heartbeat answered without a database version ({exc!r})")
        return _Failure(False, f"{type(exc).__name__}: {self._brief(exc)}")

    @staticmethod
    def _brief(exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return text if len(text) <= 300 else text[:300] + " ..."

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<MP_API_KEY>")


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
    client = _Client(api_key.strip(), endpoint, timeout_s=float(timeout_s), max_retries=max_retries,
                     backoff_s=float(backoff_s), max_delay_s=float(max_delay_s))
    try:
        return _fetch_pages_and_write(spec, out_path, client, listing_query, lookup, chunk_size=chunk_size,
                                      phonon_method=phonon_method, state_dir=state_dir, progress=progress)
    finally:
        client.session.close()


def _fetch_pages_and_write(spec: PropertySpec, out_path: Path, client: _Client, listing_query: _Query,
                           lookup: _Lookup | None, *, chunk_size: int, phonon_method: str,
                           state_dir: str | Path | None, progress: bool) -> dict[str, Any]:
    """Page through `listing_query` (each page with its lookup), checkpointing, then write the records."""
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

    built = _build_records(spec, pages, lookup, phonon_method)
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


def _task_ids(summary_doc: dict[str, Any], source: MPSource) -> dict[str, list[str]]:
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


def _build_records(spec: PropertySpec, pages: list[dict[str, Any]], lookup: _Lookup | None,
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
        for task_method, identifiers in sorted(_task_ids(summary_doc, source).items()):
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
