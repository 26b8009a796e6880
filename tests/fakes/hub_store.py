"""The Hub double's store (tests/fakes/hub.py serves it): repositories as git-like immutable commits of stored
files, the faults a test schedules, the log of requests, and the answers the routes build.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from tests.fakes import faults

REPO_TYPES = ("model", "dataset")
URL_PREFIX = {"model": "", "dataset": "datasets/"}
# Stored through LFS whatever their size, like the patterns of the Hub's default .gitattributes.
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".npy", ".npz",
                ".onnx", ".msgpack", ".zip", ".gz", ".tar", ".zst")
LFS_MIN_SIZE = 10 * 1024 * 1024  # larger files go to LFS too (the Hub's threshold)
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
TREE_PAGE_SIZE = 1000  # the Hub's page size for tree listings
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class StoredFile:
    """The content of one file at one commit, and whether it is stored through LFS."""

    data: bytes
    lfs: bool

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def lfs_pointer(self) -> bytes:
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        return pointer.encode()

    @cached_property
    def blob_id(self) -> str:
        """The git blob sha1: of the content, or of the LFS pointer file for LFS files (as git stores them)."""
        stored = self.lfs_pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()

    @property
    def etag(self) -> str:
        """What the client caches by: the sha256 for LFS files, the git blob sha1 for regular ones."""
        return self.sha256 if self.lfs else self.blob_id

    def entry(self, path: str) -> dict[str, Any]:
        """A file entry as the tree and paths-info routes list it."""
        out: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": len(self.data), "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.lfs_pointer)}
        return out


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    description: str
    date: str
    files: Mapping[str, StoredFile]


def make_commit(parent: str | None, title: str, description: str, files: Mapping[str, StoredFile]) -> Commit:
    manifest = {"parent": parent, "title": title, "description": description,
                "files": sorted((path, stored.blob_id) for path, stored in files.items())}
    sha = hashlib.sha1(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Commit(sha, parent, title, description, now(), dict(files))


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content

    def commit_at(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and COMMIT_SHA.fullmatch(revision):
            sha = revision
        return self.commits.get(sha) if sha else None


@dataclass(frozen=True)
class Fault(faults.Fault):
    """One scheduled misbehaviour of a file download (see the module docstring)."""

    @classmethod
    def cut_body(cls) -> Fault:
        return cls("cut_body")

    @classmethod
    def corrupt_byte(cls) -> Fault:
        return cls("corrupt_byte")


@dataclass(frozen=True)
class Served(faults.Served):
    """One request the double received (its method too) and what it did with it."""

    method: str


class ErrorAnswer(Exception):
    """An error answer: HTTP status, the Hub's X-Error-Code (if any), and a message."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None


def json_answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def object_id(repo: Repo) -> str:
    """The Hub's 24-hex database id of a repo (made up, stable)."""
    return hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24]


def card_data(files: Mapping[str, StoredFile]) -> dict[str, Any] | None:
    readme = files.get("README.md")
    if readme is None:
        return None
    try:
        metadata = front_matter(readme.data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    return metadata if isinstance(metadata, dict) else None


def front_matter(text: str) -> Any:
    """The YAML header of a card (between a first line `---` and the next `---` line), None if there is none."""
    match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, flags=re.S)
    return yaml.safe_load(match.group(1)) if match else None

