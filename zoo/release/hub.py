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
    `HubUnavailable`: offline mode (``HF_HUB_OFFLINE=1``) or the endpoint cannot be reached. `HubNotFoundError`:
    no such repo (or not visible with the token), revision or file. `VersionExistsError`, `ChecksumMismatchError`,
    `IncompleteDownloadError`; any other refusal by the Hub is a `HubError` with the HTTP status and the
    Hub's message. Transient answers (429, 5xx, timeouts) are retried a few times with backoff. Tokens are
    passed to huggingface_hub and never appear in a message or a log line.
"""

from __future__ import annotations

import contextlib
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

import httpx2
from huggingface_hub import (
    HfApi,
    HfFileMetadata,
    constants,
    get_hf_file_metadata,
    hf_hub_url,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import (
    build_hf_headers,
    hf_raise_for_status,
    http_stream_backoff,
)

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
_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class HubError(RuntimeError):
    """The Hub refused or failed an operation (the message says which, and why)."""


class HubUnavailable(HubError):
    """The Hub cannot be reached: offline mode is on, or the endpoint does not answer."""


class HubNotFoundError(HubError, LookupError):
    """The repo (or a revision or file in it) does not exist, or is not visible with the token given."""


class VersionExistsError(HubError):
    """The version was already published; published versions are never overwritten."""


class ChecksumMismatchError(HubError):
    """A downloaded file's hash is not the expected one; it was not kept."""


class IncompleteDownloadError(HubError):
    """The transfer ended before the whole file arrived; nothing was kept."""


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
    return (endpoint or constants.ENDPOINT).rstrip("/")


@contextlib.contextmanager
def _hub_errors(action: str, endpoint: str) -> Iterator[None]:
    """Turn the client's exceptions into ours, with what was being done and where."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubUnavailable(f"{action}: offline mode is on (HF_HUB_OFFLINE=1), the Hub at {endpoint} is not "
                             "contacted") from None
    except (httpx2.NetworkError, httpx2.TimeoutException) as error:
        raise HubUnavailable(f"{action}: cannot reach the Hub at {endpoint} "
                             f"({type(error).__name__}: {error})") from error
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


def _version_tags(api: HfApi, repo_id: str, repo_type: str) -> dict[str, str]:
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
    base = _endpoint(endpoint)
    where = f"downloading {filename!r} from {repo_type} {repo_id}@{revision}"

    if _GIT_SHA1.fullmatch(revision):
        cached = _cached(cache / f"{repo_type}s" / repo_id / revision / filename, expected_sha256)
        if cached is not None:
            return cached
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


def _file_metadata(url: str, token: str | None, endpoint: str) -> HfFileMetadata:
    """HEAD of a resolve URL (commit sha, ETag, size), retrying transient answers; connection errors raise at once."""
    attempt = 0
    while True:
        try:
            return get_hf_file_metadata(url, token=token, timeout=_TIMEOUT_S, endpoint=endpoint)
        except HfHubHTTPError as error:
            if error.response is None or error.response.status_code not in _TRANSIENT_STATUS or attempt == _RETRIES:
                raise
        except httpx2.TimeoutException:
            if attempt == _RETRIES:
                raise
        time.sleep(_FIRST_WAIT_S * 2 ** attempt)
        attempt += 1


def _fetch_verified(url: str, target: Path, token: str | None, size: int | None, check: _Check,
                    where: str, cache: Path) -> None:
    """Stream `url` to a temporary file, check size and hash, then rename it onto `target` (else delete it)."""
    staging = cache / ".incomplete"
    staging.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".partial", dir=staging)
    try:
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with http_stream_backoff("GET", url, headers=build_hf_headers(token=token), timeout=_TIMEOUT_S,
                                         max_retries=_RETRIES, base_wait_time=_FIRST_WAIT_S,
                                         retry_on_exceptions=(httpx2.TimeoutException,),
                                         retry_on_status_codes=_TRANSIENT_STATUS) as response:
                    hf_raise_for_status(response)
                    for chunk in response.iter_bytes(_CHUNK):
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
