"""The Materials Project API client of the mp-api source: one GET per request through mp-api's own request
primitive, with every retry ours (zoo.data.sources.mp_api's docstring, 'Failures and retries')."""

from __future__ import annotations

import email.utils
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests
from mp_api.client import MPRester
from mp_api.client.core.client import BaseRester
from mp_api.client.core.exceptions import MPRestError
from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS
from requests.adapters import HTTPAdapter

from zoo.data.records import retrieved_with

_log = logging.getLogger(__name__)

SOURCE = "mp-api"
SUMMARY_ROUTE = "materials/summary"


class MPAPIError(RuntimeError):
    """The Materials Project API could not be fetched from (after the allowed retries), or answered oddly."""


class MPAPIKeyError(MPAPIError):
    """The API key is missing or was rejected. The message never contains the key."""


# ----------------------------------------------------------------------------------------------- what to ask


@dataclass(frozen=True)
class Query:
    """One REST route, the criteria every request to it carries, and the document fields it asks for."""

    route: str
    fields: tuple[str, ...]
    criteria: tuple[tuple[str, str], ...] = ()

    def params(self, **extra: Any) -> dict[str, Any]:
        return {**dict(self.criteria), "_fields": ",".join(self.fields), **extra}

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "fields": list(self.fields), "criteria": dict(self.criteria)}


@dataclass(frozen=True)
class Lookup:
    """A second request per page: documents of `query.route` whose `key_field` is one of the page's keys."""

    query: Query
    key_param: str  # the REST criterion taking the comma-separated keys
    key_field: str  # the document field those keys match


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


class Client:
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

    def query(self, query: Query, what: str, **extra: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
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
