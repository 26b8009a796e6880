"""Publishing to and downloading from a Hugging Face Hub: the primitives the publish stage and `zoo.load` call.

All traffic goes through the real ``huggingface_hub`` client (its ``HfApi`` and its shared HTTP session), to
the endpoint given, or ``HF_ENDPOINT`` (read by huggingface_hub at import time) when none is.

Versions
    A published version is a git tag ``v<MAJOR>.<MINOR>.<PATCH>`` on the repo, pointing at the commit that
    holds exactly the published folder. `publish_folder` refuses a version whose tag exists: a version is never
    overwritten. The commit sha it returns is the immutable name of that content; record it (cards, registry)
    so that loads can pin it and work offline from the cache.

Downloads
    `download_file` does not use ``hf_hub_download``. That function moves a blob into the huggingface cache
    (and links it into ``snapshots/``) before a caller could check it, and resumes cut transfers with Range
    requests on its own; undoing a bad blob means editing the cache's internal layout (blobs, snapshot
    links, refs) by hand. Instead, one HEAD (``get_hf_file_metadata``: commit sha, content hash, size, with the
    Hub's redirect handling) and one streaming GET of the file at that commit, through huggingface_hub's HTTP
    session, write to a temporary file under ``<cache_dir>/.incomplete/`` while hashing; the file is renamed
    into ``<cache_dir>/<repo_type>s/<namespace>/<name>/<commit sha>/<filename>`` only once its size and hash
    are right. A cut or corrupted transfer leaves nothing behind, and the next call starts clean. The hash
    checked is ``expected_sha256`` when given, else the Hub's own: the sha256 of an LFS file, the git blob
    sha1 of a regular one.

Errors
    `HubUnavailable`: offline mode (``HF_HUB_OFFLINE=1``) or the endpoint cannot be reached, or does not answer in
    time (`HubDeadlineError`). `HubNotFoundError`: no such repo (or not visible with the token), revision or file.
    `VersionExistsError`, `ChecksumMismatchError`, `IncompleteDownloadError`; an endpoint that is not an http(s) URL
    is a `HubError` saying so; any other refusal by the Hub is a `HubError` with the HTTP status and the Hub's
    message. Transient answers (429, 5xx, timeouts) are retried a few times with backoff, within the deadline.
    Tokens are passed to huggingface_hub and never appear in a message or a log line.

Deadlines (settings from the environment, read at each call; seconds)
    ZOO_HUB_CONNECT_TIMEOUT_S  (default 5)   to open a connection
    ZOO_HUB_READ_TIMEOUT_S     (default 20)  between two pieces of an answer
    ZOO_HUB_DEADLINE_S         (default 60)  for a whole operation: a listing, a download, a publication, or all the
                                             files of one `zoo.load` (``with deadline():`` around them)
    The first two are the timeouts of huggingface_hub's shared HTTP client (``set_client_factory``, installed on
    first use); its request hook also refuses every request past the deadline and shortens each request's timeouts
    to the time left, and the download loop checks the deadline between chunks. An endpoint that accepts
    connections and never answers fails after min(read timeout, deadline), never hangs.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.core.io import sha256_file
from zoo.core.versions import check_version, is_version

log = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
_RETRIES = 3
_FIRST_WAIT_S = 0.5  # doubled after each failed try
_CHUNK = 1 << 20
TIMEOUT_SETTINGS = {"ZOO_HUB_CONNECT_TIMEOUT_S": 5.0, "ZOO_HUB_READ_TIMEOUT_S": 20.0, "ZOO_HUB_DEADLINE_S": 60.0}


class HubError(RuntimeError):
    """The Hub refused or failed an operation (the message says which, and why)."""


class HubUnavailable(HubError):
    """The Hub cannot be reached: offline mode is on, or the endpoint does not answer."""


class HubDeadlineError(HubUnavailable):
    """The operation ran past its deadline (ZOO_HUB_DEADLINE_S)."""


class HubNotFoundError(HubError, LookupError):
    """The repo (or a revision or file in it) does not exist, or is not visible with the token given."""


class VersionExistsError(HubError):
    """The version was already published; published versions are never overwritten."""


class ChecksumMismatchError(HubError):
    """A downloaded file's hash is not the expected one; it was not kept."""


class IncompleteDownloadError(HubError):
    """The transfer ended before the whole file arrived; nothing was kept."""


# ----------------------------------------------------------------------------------------------- deadlines
def setting_s(name: str) -> float:
    """A timeout setting (TIMEOUT_SETTINGS) from the environment, in seconds; ValueError for a bad value."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return TIMEOUT_SETTINGS[name]
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


# (monotonic time at which the current operation must end, its length in s) or None outside any operation
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("zoo_hub_deadline",
                                                                                      default=None)


@contextlib.contextmanager
def deadline(seconds: float | None = None) -> Iterator[None]:
    """Every Hub request in the block must end within `seconds` (default ZOO_HUB_DEADLINE_S) of its start; inside
    an enclosing block the outer deadline holds."""
    if _DEADLINE.get() is not None:
        yield
        return
    length = setting_s("ZOO_HUB_DEADLINE_S") if seconds is None else seconds
    token = _DEADLINE.set((time.monotonic() + length, length))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _time_left(what: str) -> float | None:
    """Seconds left before the current deadline (None outside any); HubDeadlineError once it has passed."""
    current = _DEADLINE.get()
    if current is None:
        return None
    left = current[0] - time.monotonic()
    if left <= 0:
        raise HubDeadlineError(f"{what}: no answer from the Hub within the {current[1]:g} s deadline "
                               "(ZOO_HUB_DEADLINE_S)")
    return left


def _within_deadline(request) -> None:
    """huggingface_hub client request hook: refuse a request past the deadline; give it the timeout settings, cut
    to the time left (httpx reads a request's timeouts from its "timeout" extension)."""
    left = _time_left(f"{request.method} {request.url}")
    connect, read = setting_s("ZOO_HUB_CONNECT_TIMEOUT_S"), setting_s("ZOO_HUB_READ_TIMEOUT_S")
    limits = {"connect": connect, "read": read, "write": read, "pool": connect}
    request.extensions["timeout"] = {key: value if left is None else min(value, left) for key, value in limits.items()}


_client_installed = False


def _install_client() -> None:
    """Give huggingface_hub's shared client our timeouts and deadline hook (once per process)."""
    global _client_installed
    if _client_installed:
        return
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    def factory():
        client = _http.default_client_factory()  # huggingface_hub's own client: offline mode, request ids
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _within_deadline]}
        client.timeout = _timeouts()
        return client

    set_client_factory(factory)
    _client_installed = True


def _timeouts():
    import httpx2

    return httpx2.Timeout(setting_s("ZOO_HUB_READ_TIMEOUT_S"), connect=setting_s("ZOO_HUB_CONNECT_TIMEOUT_S"))


# ------------------------------------------------------------------------------------------------ checks

def version_tag(version: str) -> str:
    """The git tag of a semantic version: "1.2.0" -> "v1.2.0" (MAJOR.MINOR.PATCH, no pre-release part)."""
    return f"v{check_version(version)}"


def _check_repo(repo_id: str, repo_type: str) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"repo_id must be 'namespace/name' (letters, digits, '.', '_', '-'), got {repo_id!r}")
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")


def _check_filename(filename: str) -> None:
    parts = filename.split("/") if isinstance(filename, str) else []
    if not parts or any(part in ("", ".", "..") for part in parts) or "\\" in filename:
        raise ValueError(f"filename must be a relative path in the repo such as 'data/x.parquet', got {filename!r}")


def _endpoint(endpoint: str | None) -> str:
    """The endpoint to use (given, else HF_ENDPOINT as huggingface_hub read it), checked to be an http(s) URL."""
    from huggingface_hub import constants

    chosen = endpoint or constants.ENDPOINT
    parts = urlsplit(chosen) if isinstance(chosen, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in chosen:
        raise HubError(f"the Hub endpoint {chosen!r} (HF_ENDPOINT or endpoint=) is not an http(s) URL such as "
                       "https://huggingface.co")
    return chosen.rstrip("/")


@contextlib.contextmanager
def _hub_errors(action: str, endpoint: str) -> Iterator[None]:
    """Within the deadline (`deadline`), turn the client's exceptions into ours, with what was being done and where."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _install_client()
    try:
        with deadline():
            yield
    except OfflineModeIsEnabled:
        raise HubUnavailable(f"{action}: offline mode is on (HF_HUB_OFFLINE=1), the Hub at {endpoint} is not "
                             "contacted") from None
    except (httpx2.NetworkError, httpx2.TimeoutException) as error:
        raise HubUnavailable(f"{action}: cannot reach the Hub at {endpoint} "
                             f"({type(error).__name__}: {error or 'no answer in time'})") from error
    except RepositoryNotFoundError as error:
        raise HubNotFoundError(f"{action}: no such repository at {endpoint}, or it is private and the token does "
                               "not give access") from error
    except RevisionNotFoundError as error:
        raise HubNotFoundError(f"{action}: no such revision at {endpoint}") from error
    except RemoteEntryNotFoundError as error:
        raise HubNotFoundError(f"{action}: no such file at {endpoint}") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise HubError(f"{action}: the Hub at {endpoint} answered HTTP {status}: "
                       f"{error.server_message or error}") from error


# --------------------------------------------------------------------------------------------- publishing

def publish_folder(folder: str | os.PathLike, repo_id: str, repo_type: str, version: str, *,
                   endpoint: str | None = None, token: str | None = None, private: bool = False) -> str:
    """Publish `folder` as version `version` of a Hub repo; returns the commit sha the version tag points at.

    Creates the repo if needed; refuses (`VersionExistsError`) if the tag ``v<version>`` exists; commits the
    folder so that the repo holds exactly its files (remote files absent from the folder are deleted, except
    ``.gitattributes``), then tags that commit. If the folder equals what the branch already holds, no new
    commit is made and the existing head is tagged. Should another publisher take the same tag between our
    check and our tag, the commit stays on ``main`` untagged and `VersionExistsError` is raised. (With Xet
    on, huggingface_hub splits folders of hundreds of files into several commits; the tag goes on the last,
    which holds the whole folder.)
    """
    source = Path(folder)
    if not source.is_dir():
        raise ValueError(f"folder must be an existing directory, got {str(folder)!r}")
    if not any(path.is_file() for path in source.rglob("*")):
        raise ValueError(f"folder {str(folder)!r} holds no files to publish")
    _check_repo(repo_id, repo_type)
    tag = version_tag(version)
    base = _endpoint(endpoint)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=base, token=token)
    where = f"publishing {repo_type} {repo_id} {tag}"
    with _hub_errors(where, base):
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        existing = _version_tags(api, repo_id, repo_type)
        if tag in existing:
            raise VersionExistsError(f"{where}: version {version} already exists (tag {tag} at commit "
                                     f"{existing[tag]}); published versions are never overwritten, bump the version")
        commit = api.upload_folder(folder_path=source, repo_id=repo_id, repo_type=repo_type,
                                   commit_message=f"Publish {tag}", delete_patterns="*").oid
        try:
            api.create_tag(repo_id, tag=tag, revision=commit, repo_type=repo_type, tag_message=f"{repo_id} {tag}")
        except HfHubHTTPError as error:
            if error.response is not None and error.response.status_code == 409:
                raise VersionExistsError(f"{where}: tag {tag} was created by someone else meanwhile; commit "
                                         f"{commit} stays untagged") from error
            raise
    log.info("published %s %s %s at commit %s", repo_type, repo_id, tag, commit)
    return commit


def _version_tags(api, repo_id: str, repo_type: str) -> dict[str, str]:
    """Tags that name a version (v<MAJOR.MINOR.PATCH>) -> commit sha."""
    refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    return {ref.name: ref.target_commit for ref in refs.tags
            if ref.name.startswith("v") and is_version(ref.name[1:])}


def list_versions(repo_id: str, repo_type: str, *, endpoint: str | None = None,
                  token: str | None = None) -> dict[str, str]:
    """The published versions of a repo: version ("1.2.0") -> commit sha, oldest version first.

    Tags that are not ``v<MAJOR.MINOR.PATCH>`` are not versions and are left out.
    """
    _check_repo(repo_id, repo_type)
    base = _endpoint(endpoint)
    from huggingface_hub import HfApi

    with _hub_errors(f"listing the versions of {repo_type} {repo_id}", base):
        tags = _version_tags(HfApi(endpoint=base, token=token), repo_id, repo_type)
    ordered = sorted(tags, key=lambda tag: tuple(int(part) for part in tag[1:].split(".")))
    return {tag[1:]: tags[tag] for tag in ordered}


# -------------------------------------------------------------------------------------------- downloading

def download_file(repo_id: str, filename: str, revision: str, *, repo_type: str, cache_dir: str | os.PathLike,
                  endpoint: str | None = None, token: str | None = None,
                  expected_sha256: str | None = None) -> Path:
    """Download one file of a repo at a revision (branch, tag or commit sha) into `cache_dir`; returns its path.

    The file lands at ``<cache_dir>/<repo_type>s/<repo_id>/<commit sha>/<filename>`` only after its hash
    checked out (see the module docstring); a cached copy is reused. With a commit sha as `revision`, a
    cached file needs no network at all (so it works offline). With `expected_sha256`, a cached copy is
    re-hashed first and replaced if it does not match; otherwise cached files are trusted, since only
    verified files are ever renamed into the cache.
    """
    _check_repo(repo_id, repo_type)
    _check_filename(filename)
    if not isinstance(revision, str) or not revision:
        raise ValueError(f"revision must be a branch, tag or commit sha, got {revision!r}")
    if expected_sha256 is not None and not (isinstance(expected_sha256, str) and _SHA256.fullmatch(expected_sha256)):
        raise ValueError(f"expected_sha256 must be 64 lowercase hex digits, got {expected_sha256!r}")
    cache = Path(cache_dir)
    where = f"downloading {filename!r} from {repo_type} {repo_id}@{revision}"

    if _GIT_SHA1.fullmatch(revision):
        cached = _cached(cache / f"{repo_type}s" / repo_id / revision / filename, expected_sha256)
        if cached is not None:
            return cached
    base = _endpoint(endpoint)
    from huggingface_hub import hf_hub_url

    with _hub_errors(where, base):
        url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=base)
        metadata = _file_metadata(url, token, base)
        if metadata.commit_hash is None or metadata.etag is None:
            raise HubError(f"{where}: {base} sent no X-Repo-Commit or ETag header; is it a Hugging Face Hub?")
        target = cache / f"{repo_type}s" / repo_id / metadata.commit_hash / filename
        cached = _cached(target, expected_sha256)
        if cached is not None:
            return cached
        if expected_sha256 is not None:
            check = _Check("sha256", expected_sha256, hashlib.sha256())
        elif _SHA256.fullmatch(metadata.etag):  # an LFS file: the Hub states its sha256
            check = _Check("sha256", metadata.etag, hashlib.sha256())
        elif _GIT_SHA1.fullmatch(metadata.etag) and metadata.size is not None:  # a regular file: its git blob id
            check = _Check("git blob sha1", metadata.etag, hashlib.sha1(b"blob %d\0" % metadata.size))
        else:
            raise HubError(f"{where}: the Hub gave no content hash to check (ETag {metadata.etag!r}, size "
                           f"{metadata.size}); pass expected_sha256")
        at_commit = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=metadata.commit_hash, endpoint=base)
        _fetch_verified(at_commit, target, token, metadata.size, check, where, cache)
    log.info("downloaded %s %s@%s:%s to %s", repo_type, repo_id, metadata.commit_hash, filename, target)
    return target


def _cached(path: Path, expected_sha256: str | None) -> Path | None:
    if not path.is_file():
        return None
    if expected_sha256 is None or sha256_file(path) == expected_sha256:
        return path
    log.warning("cached %s does not have sha256 %s; downloading it again", path, expected_sha256)
    path.unlink()
    return None


@dataclass
class _Check:
    """The hash a download must have: its name, the expected hex digest, and the running digest."""

    algorithm: str
    expected: str
    digest: Any


def _file_metadata(url: str, token: str | None, endpoint: str):
    """HEAD of a resolve URL (commit sha, ETag, size), retrying transient answers within the deadline; connection
    errors raise at once."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError

    attempt = 0
    while True:
        try:
            # the deadline hook cuts the timeout to the time left
            return get_hf_file_metadata(url, token=token, timeout=setting_s("ZOO_HUB_READ_TIMEOUT_S"),
                                        endpoint=endpoint)
        except HfHubHTTPError as error:
            if error.response is None or error.response.status_code not in _TRANSIENT_STATUS or attempt == _RETRIES:
                raise
        except httpx2.TimeoutException:
            if attempt == _RETRIES:
                raise
        _sleep_within_deadline(_FIRST_WAIT_S * 2 ** attempt, url)
        attempt += 1


def _sleep_within_deadline(seconds: float, what: str) -> None:
    left = _time_left(what)
    if left is not None and left <= seconds:
        raise HubDeadlineError(f"{what}: no answer from the Hub within the deadline (ZOO_HUB_DEADLINE_S)")
    time.sleep(seconds)


@contextlib.contextmanager
def _stream(url: str, token: str | None):
    """A streaming GET through huggingface_hub's session, retrying transient answers and timeouts a few times
    within the deadline. (Not huggingface_hub's http_stream_backoff: it sleeps as long as a 429's Retry-After asks,
    however long, and knows no deadline.)"""
    import httpx2
    from huggingface_hub import get_session
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    attempt = 0
    while True:
        session = get_session()
        try:
            response = session.send(session.build_request("GET", url, headers=build_hf_headers(token=token)),
                                    stream=True)
        except httpx2.TimeoutException:
            if attempt == _RETRIES:
                raise
        else:
            if response.status_code not in _TRANSIENT_STATUS or attempt == _RETRIES:
                break
            response.close()
        _sleep_within_deadline(_FIRST_WAIT_S * 2 ** attempt, url)
        attempt += 1
    try:
        if response.status_code >= 400:
            response.read()  # the error body, for hf_raise_for_status's message
        hf_raise_for_status(response)
        yield response
    finally:
        response.close()


def _fetch_verified(url: str, target: Path, token: str | None, size: int | None, check: _Check,
                    where: str, cache: Path) -> None:
    """Stream `url` to a temporary file, check size and hash, then rename it onto `target` (else delete it)."""
    import httpx2

    staging = cache / ".incomplete"
    staging.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".partial", dir=staging)
    try:
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with _stream(url, token) as response:
                    for chunk in response.iter_bytes(_CHUNK):
                        _time_left(where)  # a trickle of bytes, each within the read timeout, still ends
                        out.write(chunk)
                        check.digest.update(chunk)
                        received += len(chunk)
            except (httpx2.RemoteProtocolError, httpx2.ReadError) as error:
                raise IncompleteDownloadError(f"{where}: the transfer broke off after {received} bytes "
                                              f"({type(error).__name__}); nothing was kept, try again") from error
            out.flush()
            os.fsync(out.fileno())
        if size is not None and received != size:
            raise IncompleteDownloadError(f"{where}: received {received} bytes, the Hub announced {size}; "
                                          "nothing was kept, try again")
        actual = check.digest.hexdigest()
        if actual != check.expected:
            raise ChecksumMismatchError(f"{where}: {target.name} has {check.algorithm} {actual}, expected "
                                        f"{check.expected}; the download was discarded")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
