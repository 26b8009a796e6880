"""Throwaway copies of this repository, for tests that run DVC (push, pull, repro) without touching the real one.

`copy_repository` copies what git would commit from the working tree: the tracked files as they are now and the
untracked files that are not ignored. So an uncommitted edit of dvc.lock, dvc.yaml or a stage is what gets
tested, and on CI's clean clone the copy is the commit itself. Nothing git ignores comes along: no .git, no DVC
cache, no pipeline outputs, no .dvc/config.local. The copy is a DVC project without git (`core.no_scm`), so DVC
never reads or writes the real repository's git state.

`isolate_dvc` points DVC's per-user and per-machine folders (global and system config, the site cache that holds
its state databases) into a temporary folder, so a test neither reads a developer's DVC settings nor leaves
files behind in /var/tmp.

`link_snapshot` makes the copy's `fetch.snapshot_root` (a path relative to params.yaml, ../shared/datasets by
default) lead to the real offline snapshot, so its fetch stage reads the same pinned files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

from zoo.data.sources.snapshot import locate_root

REPO = Path(__file__).resolve().parent.parent


def repository_files(repo: Path = REPO) -> list[str]:
    """Paths (relative to `repo`) of the files git would commit from the working tree, deleted ones left out."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    return sorted(name for name in listed.split("\0") if name and (repo / name).is_file())


def write_local_config(copy: Path, sections: Mapping[str, Mapping[str, str]]) -> None:
    """Write the copy's .dvc/config.local (it wins over the committed .dvc/config), e.g.
    {"cache": {"dir": "/abs/cache"}, 'remote "s3"': {"url": "s3://bucket/prefix"}}."""
    lines = []
    for name, options in sections.items():
        lines.append(f"['{name}']" if " " in name else f"[{name}]")
        lines += [f"    {key} = {value}" for key, value in options.items()]
    (copy / ".dvc" / "config.local").write_text("\n".join(lines) + "\n", encoding="utf-8")


def copy_repository(dest: Path, config: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """Copy the repository's files to `dest` (which must not exist) as a git-less DVC project; `config` adds
    sections to its .dvc/config.local (`core.no_scm` is always set). Returns `dest`."""
    dest.mkdir(parents=True)
    for name in repository_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    sections = {name: dict(options) for name, options in (config or {}).items()}
    sections.setdefault("core", {})["no_scm"] = "true"
    write_local_config(dest, sections)
    return dest


def isolate_dvc(monkeypatch, home: Path) -> None:
    """Send DVC's global config, system config and site cache to folders under `home` (a pytest monkeypatch)."""
    for variable, folder in (("DVC_GLOBAL_CONFIG_DIR", "global"), ("DVC_SYSTEM_CONFIG_DIR", "system"),
                             ("DVC_SITE_CACHE_DIR", "site-cache")):
        (home / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(variable, str(home / folder))


def link_snapshot(copy: Path) -> Path:
    """Make `copy`'s fetch.snapshot_root lead to the snapshot the real repository reads (a symlink); returns it.

    Raises FileNotFoundError when the real snapshot is absent (it lives outside the repository, in ../shared)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    root = (params.get("fetch") or {}).get("snapshot_root") or "../shared/datasets"
    real = locate_root(root, REPO).resolve()  # where the real repository's fetch finds it
    if not real.is_dir():
        raise FileNotFoundError(f"the offline snapshot {real} (fetch.snapshot_root {root!r} in params.yaml) is absent")
    link = Path(os.path.normpath(copy / root))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real, target_is_directory=True)
    return link
