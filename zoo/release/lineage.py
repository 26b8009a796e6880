"""A model's lineage: the DVC stage that made it and that stage's dependencies, hashed as DVC hashes them.

A lineage is a mapping::

    {"stage":  "train@elastic" or "releases/dvc.yaml:release@elastic"   (DVC's address of the stage),
     "cmd":    the stage's command,
     "deps":   {path: md5 as DVC records it ('<md5>.dir' for a folder)}, the code, schemas and dataset it ran on,
     "params": {params file: {key: value}}}

It is content-addressed: no commit, time, machine or absolute path enters it, so the card that records it is the
same wherever the stage runs. Two sources:

- ``lock_lineage``: a stage's entry in its dvc.lock, once DVC has written it (the publish stage reads the train
  stage's, which ran before it);
- ``stage_lineage``: computed while the stage itself runs, through DVC's own API (its ``.dvcignore`` rules, its
  md5s): the release stage trains, evaluates and ships in one command, so its lock entry does not exist yet. DVC
  hashes the deps again when the stage ends and records those in the lock; they are the same unless a dependency
  changed during the run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOCK_FILE = "dvc.lock"


def split_address(address: str) -> tuple[str, str]:
    """('releases/dvc.yaml', 'release@elastic') of 'releases/dvc.yaml:release@elastic'; ('dvc.yaml', name) of a
    stage of the top-level pipeline."""
    path, colon, name = address.rpartition(":")
    return (path if colon else "dvc.yaml"), name


def lock_entry(project: str | os.PathLike, address: str) -> dict[str, Any] | None:
    """The dvc.lock entry of the stage at `address` (beside its dvc.yaml); None without the file or the stage."""
    pipeline, name = split_address(address)
    lock_path = Path(project) / Path(pipeline).with_name(LOCK_FILE)
    if not lock_path.is_file():
        return None
    # DVC writes YAML 1.2 (ruamel.yaml): read it so, or a param such as 1e-05 would come back as a string (YAML 1.1).
    from ruamel.yaml import YAML

    return ((YAML(typ="safe", pure=True).load(lock_path.read_text(encoding="utf-8")) or {}).get("stages")
            or {}).get(name)


def from_lock_entry(address: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The lineage a dvc.lock entry records."""
    return {"stage": address, "cmd": entry.get("cmd"),
            "deps": {dep["path"]: dep.get("md5") for dep in entry.get("deps") or []},
            "params": dict(entry.get("params") or {})}


def card_lineage(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The lineage a model card's `provenance` header records (zoo.release.model_card), as ``differing_deps``
    compares it with a lock entry's."""
    return {"stage": provenance.get("dvc_stage"), "deps": dict(provenance.get("dependencies") or {}),
            "params": dict(provenance.get("params") or {})}


def lock_lineage(project: str | os.PathLike, address: str) -> dict[str, Any] | None:
    """The lineage dvc.lock records for the stage at `address` (None without an entry)."""
    entry = lock_entry(project, address)
    return None if entry is None else from_lock_entry(address, entry)


def lock_outputs(project: str | os.PathLike, address: str) -> dict[str, str]:
    """{path: md5} of the outputs dvc.lock records for the stage at `address` ({} without an entry)."""
    return {out["path"]: out.get("md5") for out in (lock_entry(project, address) or {}).get("outs") or []}


def stage_lineage(project: str | os.PathLike, address: str) -> dict[str, Any]:
    """The lineage of the stage at `address` as DVC sees it now: its command, the md5 of each dependency and the
    values of its params, computed by DVC (which needs no lock for this: it works while `dvc repro` runs the
    stage). ValueError when the project has no such stage."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    # DVC resolves a stage's address against the working directory.
    with contextlib.chdir(project), Repo(".") as repo:
        try:
            stages = repo.stage.collect(address)
        except DvcException as err:
            raise ValueError(f"no DVC stage {address} in {project}: {err}") from None
        if len(stages) != 1:
            raise ValueError(f"{address} names {len(stages)} DVC stages in {project}, not one")
        (stage,) = stages
        deps: dict[str, str] = {}
        params: dict[str, Any] = {}
        for dep in stage.deps:
            value = dep.get_hash().value
            if isinstance(value, dict):  # a params dependency: its values, by key
                params[dep.def_path] = dict(value)
            else:
                deps[dep.def_path] = value
        return {"stage": address, "cmd": stage.cmd, "deps": dict(sorted(deps.items())), "params": params}


def differing_deps(recorded: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """The dependencies (paths, and params files) whose md5 or values differ between two lineages."""
    deps_a, deps_b = recorded.get("deps") or {}, other.get("deps") or {}
    params_a, params_b = recorded.get("params") or {}, other.get("params") or {}
    return sorted([path for path in set(deps_a) | set(deps_b) if deps_a.get(path) != deps_b.get(path)]
                  + [path for path in set(params_a) | set(params_b) if params_a.get(path) != params_b.get(path)])
