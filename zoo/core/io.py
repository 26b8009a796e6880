"""Atomic, deterministic file writing and hashing, shared by every stage.

Every output is written to a temporary file in the destination directory and renamed into place, so a crash
never leaves a half-written file that a later stage (or DVC) would take for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; outputs are ordinary shared files
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def canonical_json(obj: Any) -> str:
    """One deterministic JSON text for an object: sorted keys, no NaN, compact separators."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Human-readable but deterministic JSON (reports, manifests)."""
    atomic_write_text(path, json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one canonical JSON object per line, atomically; returns the number of lines."""
    count = 0
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(canonical_json(record))
            handle.write("\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def make_readable(folder: str | os.PathLike) -> None:
    """Give a staged folder ordinary permissions (mkdtemp/mkstemp create them private), minus the umask."""
    folder = Path(folder)
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """A fresh staging folder beside `target`, written by the block and renamed onto `target` only when the block
    succeeds, so `target` appears complete or not at all (removed on failure).

    replace=True: an existing `target` is renamed away first and removed after the new one is in place.
    replace=False: an existing `target` is never replaced (FileExistsError, also when another writer created it
    meanwhile: renaming a folder onto a non-empty one fails).
    """
    target = Path(target)
    if not replace and target.exists():
        raise FileExistsError(f"{target} exists; it is never replaced")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        make_readable(staging)
        if replace:
            _replace_folder(staging, target)
        else:
            try:
                os.rename(staging, target)
            except OSError as err:
                if target.exists():
                    raise FileExistsError(f"{target} appeared meanwhile; it was not replaced") from err
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename


def _replace_folder(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def copy_folder_into_place(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy folder `source` to `target` through a staging folder (``staged_folder``, never replacing `target`)."""
    with staged_folder(target, replace=False) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
