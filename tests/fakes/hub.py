"""A loopback Hugging Face Hub for tests: the routes the real `huggingface_hub` and `datasets` clients call.

The server (stdlib ``http.server``, one thread per request, bound to 127.0.0.1 on an ephemeral port) keeps
model and dataset repositories in memory, as git-like immutable commits, and answers (``{t}`` is ``model``
or ``dataset``, ``{p}`` the URL prefix: empty for models, ``datasets/`` for datasets, ``{id}`` is
``namespace/name``, revisions are branch names, tag names or full commit shas):

    POST /api/repos/create                      create a repo (409 if it exists), first commit: .gitattributes
    POST /api/validate-yaml                     parse the YAML header of a README.md (400 + errors if invalid)
    GET  /api/{t}s/{id}[/revision/{rev}]        repo info: sha, cardData, siblings (with sizes and LFS info if ?blobs=1)
    GET  /api/{t}s/{id}/refs                    branches and tags
    GET  /api/{t}s/{id}/tree/{rev}[/{path}]     entries under path (?recursive=true for all), paged by a `Link` header
    POST /api/{t}s/{id}/paths-info/{rev}        entries of the given paths (form or JSON), unknown paths left out
    POST /api/{t}s/{id}/preupload/{rev}         "regular" or "lfs" per file, and the oid of the file already there
    POST /api/{t}s/{id}/commit/{rev}            NDJSON: header, file (base64), lfsFile, deletedFile
    POST /api/{t}s/{id}/tag/{rev}               tag a revision (409 if the tag exists; tags never move)
    POST /{p}{id}.git/info/lfs/objects/batch    LFS upload actions: a one-time loopback href per missing object
    PUT  /lfs-storage/{ticket}                  the LFS upload itself; size and sha256 are checked before storing
    POST /{p}{id}.git/info/lfs/objects/verify   LFS verify step (200 if the object is stored)
    HEAD|GET /{p}{id}/resolve/{rev}/{path}      file download: X-Repo-Commit, ETag (git blob sha1, or sha256 for LFS
                                                files, which also get X-Linked-Etag/X-Linked-Size); no redirects,
                                                and a Range header gets the whole file (HTTP allows it; the
                                                client then restarts the file)

A commit's sha is the sha1 of its canonical manifest (parent sha, title, description, and every path with
its git blob id), so the same history always has the same shas. Writes need ``Authorization: Bearer
<token>`` when the double has a token; a private repo reads as absent without it. Missing things answer 404
with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or ``EntryNotFound``, as the Hub does.

Faults are scheduled per file for the next GETs (or HEADs) of it: ``double.schedule_download("data/x.parquet",
Fault.cut_body())`` sends the full Content-Length and then half the bytes before closing; ``Fault.corrupt_byte()``
flips one byte of a complete answer; ``Fault.http(500)`` answers that status. Every request is logged
(``double.log``); requests no route matched are listed in ``double.unhandled`` so tests can assert the real
clients needed nothing more.

Tests must set ``HF_HUB_DISABLE_XET=1`` (before importing huggingface_hub), or the client uploads through
Xet, which this double does not speak. `install_loopback_guard` (from tests/fakes/loopback.py, re-exported
here) makes a process refuse any non-loopback connection or name lookup (recording each in `refused_hosts`);
this module has no heavy imports, so client subprocesses can install it cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

from tests.fakes.hub_store import (  # Fault, Served: re-exported for the tests
    GITATTRIBUTES,
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    REPO_TYPES,
    TREE_PAGE_SIZE,
    URL_PREFIX,
    Answer,
    Commit,
    ErrorAnswer,
    Fault,
    Repo,
    Served,
    StoredFile,
    card_data,
    front_matter,
    json_answer,
    make_commit,
    now,
    object_id,
)
from tests.fakes.loopback import LoopbackHTTPDouble

# The loopback guard lives in tests/fakes/loopback.py; these names are re-exported for the tests.
from tests.fakes.loopback import guarded_connect as guarded_connect
from tests.fakes.loopback import guarded_getaddrinfo as guarded_getaddrinfo
from tests.fakes.loopback import install_loopback_guard as install_loopback_guard
from tests.fakes.loopback import refused_hosts as refused_hosts


class HubDouble(LoopbackHTTPDouble):
    """The server; use as a context manager or call `start`/`stop`."""

    methods = ("GET", "HEAD", "POST", "PUT", "DELETE")
    thread_name = "hub-double"

    def __init__(self, token: str | None = "hf_double_write_token", *, user: str = "zoo-bot",
                 tree_page_size: int = TREE_PAGE_SIZE) -> None:
        super().__init__()
        self.token = token
        self.user = user
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[Served] = []
        self.unhandled: list[str] = []
        self._lfs_tickets: dict[str, tuple[tuple[str, str], str, int]] = {}  # ticket -> repo key, sha256, size
        self._download_faults: dict[tuple[str, str], deque[Fault]] = {}  # (method, path) -> faults
        self._lock = threading.RLock()

    # -- lifecycle

    @property
    def endpoint(self) -> str:
        """The base URL, without a trailing slash (as HF_ENDPOINT is written)."""
        return f"http://127.0.0.1:{self.port}"

    # -- test controls

    def schedule_download(self, path_in_repo: str, *faults: Fault, method: str = "GET") -> None:
        """The next GETs (or HEADs) of this file, in any repo, get these faults in order, then normal answers."""
        with self._lock:
            self._download_faults.setdefault((method, path_in_repo), deque()).extend(faults)

    def requests_to(self, fragment: str, method: str | None = None) -> list[Served]:
        with self._lock:
            return [s for s in self.log if fragment in s.path and (method is None or s.method == method)]

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # -- serving

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        segments = url.path.split("/")[1:]  # still %-quoted: a quoted revision or path may hold "/"
        try:
            body = self._read_body(handler)
            try:
                answer = self._route(handler.command, segments, query, body, handler.headers)
            except (ValueError, KeyError, TypeError) as error:  # a malformed body: JSON, base64, missing keys
                raise ErrorAnswer(400, f"malformed request body: {type(error).__name__}: {error}") from error
        except ErrorAnswer as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            answer = json_answer({"error": error.message, **error.extra}, error.status, headers)
        outcome = answer.fault.kind if answer.fault and answer.fault.kind != "http" else str(answer.status)
        with self._lock:
            self.log.append(Served(path=url.path, outcome=outcome, method=handler.command))
        try:
            self._send(handler, answer)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first
            handler.close_connection = True

    @staticmethod
    def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding"):  # huggingface_hub always sends a Content-Length
            handler.close_connection = True  # the unread body must not be taken for the next request
            raise ErrorAnswer(411, "the Hub double reads request bodies with a Content-Length only")
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))

    def _send(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        body, kind = answer.body, answer.fault.kind if answer.fault else None
        if kind == "corrupt_byte" and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if "Content-Length" not in answer.headers:
            handler.send_header("Content-Length", str(len(body)))
        if kind == "cut_body":
            handler.send_header("Connection", "close")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body[: len(body) // 2] if kind == "cut_body" else body)
        handler.wfile.flush()
        if kind == "cut_body":
            handler.close_connection = True

    def _route(self, method: str, raw: list[str], query: dict[str, str], body: bytes,
               headers: Mapping[str, str]) -> Answer:
        seg, requested = [unquote(s) for s in raw], "/".join(raw)
        with self._lock:
            if method == "POST" and seg == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body), headers)
            if method == "POST" and seg == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body))
            if method == "PUT" and len(seg) == 2 and seg[0] == "lfs-storage":
                return self._lfs_store(seg[1], body)
            if len(seg) >= 4 and seg[0] == "api" and seg[1] in ("models", "datasets"):
                repo_type, repo_id, rest = seg[1][:-1], f"{seg[2]}/{seg[3]}", raw[4:]
                return self._api_route(method, repo_type, repo_id, rest, query, body, headers)
            repo_type = "dataset" if seg[:1] == ["datasets"] else "model"
            seg = seg[1:] if repo_type == "dataset" else seg
            lfs_route = len(seg) == 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]
            if method == "POST" and lfs_route:
                repo = self._writable(repo_type, f"{seg[0]}/{seg[1][:-4]}", headers)
                if seg[5] == "batch":
                    return self._lfs_batch(repo, json.loads(body))
                if seg[5] == "verify":
                    return self._lfs_verify(repo, json.loads(body))
            if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
                repo = self._readable(repo_type, f"{seg[0]}/{seg[1]}", headers)
                return self._resolve(repo, seg[3], "/".join(seg[4:]), method)
        self.unhandled.append(f"{method} {requested}")
        return json_answer({"error": "the Hub double has no such route"}, 404)

    def _api_route(self, method: str, repo_type: str, repo_id: str, raw: list[str], query: dict[str, str],
                   body: bytes, headers: Mapping[str, str]) -> Answer:
        action, rev = (unquote(raw[0]) if raw else None), (unquote(raw[1]) if len(raw) > 1 else None)
        path = unquote("/".join(raw[2:])).strip("/")
        if method == "GET" and action is None:
            return self._info(self._readable(repo_type, repo_id, headers), "main", query)
        if method == "GET" and action == "revision" and rev is not None:
            return self._info(self._readable(repo_type, repo_id, headers), rev, query)
        if method == "GET" and action == "refs":
            return self._refs(self._readable(repo_type, repo_id, headers))
        if method == "GET" and action == "tree" and rev is not None:
            return self._tree(self._readable(repo_type, repo_id, headers), rev, path, query)
        if method == "POST" and action == "paths-info" and rev is not None:
            return self._paths_info(self._readable(repo_type, repo_id, headers), rev, body, headers)
        if method == "POST" and action == "preupload" and rev is not None:
            return self._preupload(self._writable(repo_type, repo_id, headers), rev, json.loads(body), query)
        if method == "POST" and action == "commit" and rev is not None:
            return self._commit(self._writable(repo_type, repo_id, headers), rev, body, query)
        if method == "POST" and action == "tag" and rev is not None:
            return self._tag(self._writable(repo_type, repo_id, headers), rev, json.loads(body))
        self.unhandled.append(f"{method} api/{repo_type}s/{repo_id}/{'/'.join(raw)}")
        return json_answer({"error": "the Hub double has no such route"}, 404)

    # -- access

    def _check_token(self, headers: Mapping[str, str]) -> None:
        if self.token is None:
            return
        given = headers.get("authorization")
        if given is None:
            raise ErrorAnswer(401, "Authorization header is required for this operation")
        if given != f"Bearer {self.token}":
            raise ErrorAnswer(401, "Invalid credentials in Authorization header")

    def _authenticated(self, headers: Mapping[str, str]) -> bool:
        return self.token is None or headers.get("authorization") == f"Bearer {self.token}"

    def _readable(self, repo_type: str, repo_id: str, headers: Mapping[str, str]) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authenticated(headers)):
            raise ErrorAnswer(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _writable(self, repo_type: str, repo_id: str, headers: Mapping[str, str]) -> Repo:
        self._check_token(headers)
        return self._readable(repo_type, repo_id, headers)

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> Commit:
        commit = repo.commit_at(revision)
        if commit is None:
            raise ErrorAnswer(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -- repos, cards, refs

    def _create_repo(self, payload: dict[str, Any], headers: Mapping[str, str]) -> Answer:
        self._check_token(headers)
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise ErrorAnswer(400, f"the Hub double serves model and dataset repos, not {repo_type!r}")
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ErrorAnswer(400, f"Invalid repo name {name!r}")
        repo_id = f"{payload.get('organization') or self.user}/{name}"
        if (repo_type, repo_id) in self.repos:  # huggingface_hub's create_repo(exist_ok=True) reads the url
            raise ErrorAnswer(409, f"You already created this {repo_type} repo: {repo_id}",
                              url=self._repo_url(self.repos[(repo_type, repo_id)]))
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_type, repo_id, private, now())
        first = make_commit(None, "initial commit", "", {".gitattributes": StoredFile(GITATTRIBUTES.encode(), False)})
        repo.commits[first.sha] = first
        repo.branches["main"] = first.sha
        self.repos[(repo_type, repo_id)] = repo
        return json_answer({"url": self._repo_url(repo), "name": repo_id, "id": object_id(repo)})

    @staticmethod
    def _validate_yaml(payload: dict[str, Any]) -> Answer:
        try:
            metadata = front_matter(payload.get("content", ""))
        except yaml.YAMLError as error:
            return json_answer({"errors": [{"message": f"Invalid YAML in the card header: {error}"}]}, 400)
        if metadata is None:
            warning = {"message": "Empty or missing yaml metadata in repo card"}
            return json_answer({"errors": [], "warnings": [warning]})
        if not isinstance(metadata, dict):
            return json_answer({"errors": [{"message": "The card header must be a YAML mapping"}]}, 400)
        return json_answer({"errors": [], "warnings": []})

    def _info(self, repo: Repo, revision: str, query: dict[str, str]) -> Answer:
        commit = self._commit_at(repo, revision)
        with_blobs = query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            stored, sibling = commit.files[path], {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(stored.data), blobId=stored.blob_id)
                if stored.lfs:
                    sibling["lfs"] = {"size": len(stored.data), "sha256": stored.sha256,
                                      "pointerSize": len(stored.lfs_pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": object_id(repo), "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(s.data) for s in commit.files.values()),
        }
        card = card_data(commit.files)
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return json_answer(info)

    @staticmethod
    def _refs(repo: Repo) -> Answer:
        return json_answer({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                         for n, s in sorted(repo.branches.items())],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())],
            "converts": [], "pullRequests": [],
        })

    def _tag(self, repo: Repo, revision: str, payload: dict[str, Any]) -> Answer:
        commit = self._commit_at(repo, revision)
        tag = payload.get("tag") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", tag):
            raise ErrorAnswer(400, f"Invalid tag name {tag!r}")
        if tag in repo.tags:
            raise ErrorAnswer(409, f"Tag reference {tag} already exists (at {repo.tags[tag]})")
        repo.tags[tag] = commit.sha
        return json_answer({})

    # -- listing

    @staticmethod
    def _directories(files: Mapping[str, StoredFile]) -> set[str]:
        return {"/".join(path.split("/")[:n]) for path in files for n in range(1, path.count("/") + 1)}

    def _entry(self, commit: Commit, path: str) -> dict[str, Any]:
        if path in commit.files:
            return commit.files[path].entry(path)
        # A folder's oid: the sha1 of what it holds, so it changes exactly when its content does.
        content = sorted((p, s.blob_id) for p, s in commit.files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest(), "size": 0,
                "path": path}

    def _tree(self, repo: Repo, revision: str, path: str, query: dict[str, str]) -> Answer:
        commit = self._commit_at(repo, revision)
        directories = self._directories(commit.files)
        if path and path not in directories:
            raise ErrorAnswer(404, f"Path {path} not found in {revision}", "EntryNotFound")
        prefix = f"{path}/" if path else ""
        recursive = query.get("recursive", "").lower() in ("1", "true")
        under = [p for p in sorted(set(commit.files) | directories) if p.startswith(prefix)]
        if not recursive:
            under = [p for p in under if "/" not in p[len(prefix):]]
        start = int(query.get("cursor", 0))
        page = [self._entry(commit, p) for p in under[start: start + self.tree_page_size]]
        headers = {}
        if start + self.tree_page_size < len(under):
            next_query = urlencode({**query, "cursor": start + self.tree_page_size})
            url = f"{self.endpoint}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(revision, safe='')}"
            url += f"/{quote(path, safe='')}" if path else ""
            headers["Link"] = f'<{url}?{next_query}>; rel="next"'
        return json_answer(page, headers=headers)

    def _paths_info(self, repo: Repo, revision: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        commit = self._commit_at(repo, revision)
        if headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:  # huggingface_hub sends a form: paths=a&paths=b&expand=false
            paths = parse_qs(body.decode()).get("paths", [])
        known = set(commit.files) | self._directories(commit.files)
        return json_answer([self._entry(commit, p.strip("/")) for p in paths if p.strip("/") in known])

    # -- upload

    @staticmethod
    def _upload_mode(path: str, size: int, sample: bytes) -> str:
        binary = b"\0" in sample
        return "lfs" if path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or binary else "regular"

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any], query: dict[str, str]) -> Answer:
        if query.get("create_pr"):
            raise ErrorAnswer(400, "the Hub double does not open pull requests")
        commit = self._commit_at(repo, revision)
        files = []
        for item in payload.get("files", []):
            path, existing = item["path"], commit.files.get(item["path"])
            sample = base64.b64decode(item.get("sample", ""))
            files.append({"path": path, "uploadMode": self._upload_mode(path, int(item["size"]), sample),
                          "shouldIgnore": False, "oid": existing.etag if existing else None})
        return json_answer({"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo: Repo, payload: dict[str, Any]) -> Answer:
        if payload.get("operation") != "upload":
            raise ErrorAnswer(400, "the Hub double only answers LFS upload batches")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:  # objects already stored need no action (the client skips them)
                ticket = secrets.token_urlsafe(16)
                self._lfs_tickets[ticket] = ((repo.repo_type, repo.repo_id), oid, size)
                git = f"{self.endpoint}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}.git"
                answer["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-storage/{ticket}", "header": {}},
                                     "verify": {"href": f"{git}/info/lfs/objects/verify", "header": {}}}
            objects.append(answer)
        return json_answer({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_store(self, ticket: str, body: bytes) -> Answer:
        if ticket not in self._lfs_tickets:
            raise ErrorAnswer(403, "unknown or used LFS upload ticket")
        key, oid, size = self._lfs_tickets[ticket]
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise ErrorAnswer(400, f"LFS upload does not match its announced oid {oid} and size {size}")
        del self._lfs_tickets[ticket]
        self.repos[key].lfs_objects[oid] = body
        return Answer(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    @staticmethod
    def _lfs_verify(repo: Repo, payload: dict[str, Any]) -> Answer:
        stored = repo.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise ErrorAnswer(404, f"LFS object {payload.get('oid')} not found")
        return json_answer({})

    def _commit(self, repo: Repo, revision: str, body: bytes, query: dict[str, str]) -> Answer:
        if query.get("create_pr"):
            raise ErrorAnswer(400, "the Hub double does not open pull requests")
        if revision not in repo.branches:
            raise ErrorAnswer(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise ErrorAnswer(400, "a commit must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not head.sha.startswith(parent):
            raise ErrorAnswer(412, f"A commit has happened since {parent}: {revision} is at {head.sha}")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"].strip("/")
            if key == "file":
                files[path] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = repo.lfs_objects.get(value["oid"])
                if data is None:
                    raise ErrorAnswer(422, f"LFS pointer for {path} points to {value['oid']}, never uploaded")
                files[path] = StoredFile(data, lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise ErrorAnswer(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            else:
                raise ErrorAnswer(400, f"unknown commit operation {key!r}")
        commit = make_commit(head.sha, header.get("summary") or "", header.get("description") or "", files)
        repo.commits[commit.sha] = commit
        repo.branches[revision] = commit.sha
        return json_answer({"commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}", "commitOid": commit.sha,
                             "success": True, "pullRequestUrl": None})

    # -- download

    def _resolve(self, repo: Repo, revision: str, path: str, method: str) -> Answer:
        commit = self._commit_at(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise ErrorAnswer(404, f"Entry not found: {path}", "EntryNotFound")
        queue = self._download_faults.get((method, path))
        fault = queue.popleft() if queue else None
        if fault is not None and fault.kind == "http":
            answer = json_answer({"error": f"double: HTTP {fault.status}"}, fault.status)
            answer.fault = fault
            return answer
        out = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.sha, "ETag": f'"{stored.etag}"'}
        if stored.lfs:
            out.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.data))})
        return Answer(200, stored.data, out, fault)


@contextmanager
def serve(token: str | None = "hf_double_write_token", **options: Any) -> Iterator[HubDouble]:
    with HubDouble(token, **options) as double:
        yield double
