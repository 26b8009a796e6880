"""The dataset part of `zoo audit`: a dataset version's files, content fingerprint, card and dvc.lock entry, and the
local build a model audit re-derives the card's metrics on (rebuilt through DVC when it is absent)."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from zoo import properties
from zoo.core import environment
from zoo.core.versions import version_key
from zoo.data import dataset_schema
from zoo.data import datasets as zoo_datasets
from zoo.data import splits
from zoo.release import lineage, model_card, registry
from zoo.release.audit.report import AuditError, Report, Step, file_check, quiet


class UnknownDatasetError(LookupError):
    """The name is none of the pipeline's datasets."""


def local_build(project: Path, spec: properties.PropertySpec, report: Report, step: Step) -> Path:
    """``<project>/data/hub/datasets/<name>``, rebuilt with ``dvc repro build@<property>`` when it is absent."""
    folder = project / zoo_datasets.HUB_DATASETS_DIR / spec.dataset_name
    if (folder / dataset_schema.VERSION_FILE).is_file():
        return folder
    stage = f"build@{spec.name}"
    if not (project / "dvc.yaml").is_file():
        raise AuditError(f"{folder} does not exist and {project.resolve()} is not the project checkout (no "
                         "dvc.yaml) to rebuild it in: run the audit from the checkout or pass --project")
    with step(f"{spec.dataset_name} is not built here: dvc repro {stage}"):
        run_dvc(project, "repro", stage)
    if not (folder / dataset_schema.VERSION_FILE).is_file():
        raise AuditError(f"`dvc repro {stage}` in {project} did not produce {folder}")
    report.notes.append(f"{zoo_datasets.HUB_DATASETS_DIR / spec.dataset_name} was absent: rebuilt with "
                        f"`dvc repro {stage}`")
    return folder


def run_dvc(project: Path, *args: str) -> None:
    """Run DVC in `project`, with this interpreter's folder first on PATH: dvc.yaml's commands say `python`."""
    beside = Path(sys.executable).with_name("dvc")
    dvc = str(beside) if beside.is_file() else shutil.which("dvc")
    if dvc is None:
        raise AuditError("dvc is not installed: it is needed to rebuild the dataset (pip install dvc)")
    env = {**os.environ, **environment.variables(),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([dvc, *args], cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise AuditError(f"`dvc {' '.join(args)}` in {project} failed: {lines[-1] if lines else done.returncode}")


def recompute_fingerprint(folder: Path, spec: properties.PropertySpec) -> str:
    """The content fingerprint (zoo.data.datasets) of a dataset folder, from its Parquet files."""
    import pyarrow.parquet as pq

    tables = {split: pq.read_table(folder / dataset_schema.parquet_path(split)) for split in splits.ALL_SPLITS
              if split in splits.SPLITS or (folder / dataset_schema.parquet_path(split)).is_file()}
    return dataset_schema.content_fingerprint(spec.dataset_name, dataset_schema.dataset_features(spec), tables)


def dataset_checks(report: Report, folder: Path, spec: properties.PropertySpec, step: Step,
                    claimed: Mapping[str, str] | None = None) -> bool:
    """Files vs dataset_version.json; the recomputed fingerprint vs `claimed` (a model card's), dataset_version.json
    and the dataset card. True when the content is the claimed (or recorded) dataset."""
    recorded = json.loads((folder / dataset_schema.VERSION_FILE).read_text(encoding="utf-8"))
    where = f"{folder.name}/{dataset_schema.VERSION_FILE}"
    if claimed is not None:
        # The version is a label: another one over the same content (same fingerprint, checked below) is not an error.
        same = claimed["version"] == recorded.get("version")
        report.add("dataset version", f"version named in the model card vs {where}", claimed["version"],
                   recorded.get("version") if same else f"{recorded.get('version')} (another label; the content is "
                   "compared by fingerprint)", True if same else None)
    for relative, expected in sorted((recorded.get("files_sha256") or {}).items()):
        file_check(report, f"dataset file {relative}", f"sha256 vs {where}", folder / relative, expected)
    with step(f"recomputing the content fingerprint of {folder.name}"):
        try:
            fingerprint = recompute_fingerprint(folder, spec)
        except (OSError, ValueError) as err:  # a missing or unreadable Parquet file (pyarrow's errors are both)
            fingerprint = f"not computable ({err})"
    ok = True
    if claimed is not None:
        ok = report.add("dataset fingerprint", f"model card ({claimed['name']} {claimed['version']}) vs recomputed "
                        f"from the Parquet files of {folder}", claimed["fingerprint"], fingerprint,
                        claimed["fingerprint"] == fingerprint)
    ok &= report.add("dataset_version.json", "recorded fingerprint vs recomputed", recorded.get("fingerprint"),
                     fingerprint, recorded.get("fingerprint") == fingerprint)
    card = model_card.parse_front_matter((folder / "README.md").read_text(encoding="utf-8")) \
        if (folder / "README.md").is_file() else {}
    in_card = f"{card.get('dataset_version', 'absent')} {card.get('content_fingerprint', 'absent')}"
    report.add("dataset card", "version and fingerprint in the dataset card (README.md) vs recomputed",
               f"{recorded.get('version')} {fingerprint}", in_card,
               in_card == f"{recorded.get('version')} {fingerprint}")
    return ok


def dvc_md5(folder: Path) -> str:
    """The md5 DVC records for a folder output ('<md5>.dir'), computed the way DVC does (dvc-data)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    _, _, tree = build(HashFileDB(MemoryFileSystem(), "/"), str(folder), LocalFileSystem(), "md5")
    return tree.hash_info.value


def lock_output_md5(project: Path, stage: str, path: str) -> str | None:
    """The md5 dvc.lock records for output `path` of `stage` (None without dvc.lock, the stage or the output)."""
    return lineage.lock_outputs(project, stage).get(path)


def lock_check(report: Report, project: Path, folder: Path, spec: properties.PropertySpec, step: Step) -> str:
    """dvc.lock's md5 of the build output vs the workspace's (not checked without a lock entry); returns the
    workspace's."""
    path = (zoo_datasets.HUB_DATASETS_DIR / spec.dataset_name).as_posix()
    with step(f"hashing {path} as DVC does"):
        workspace = dvc_md5(folder)
    stage = f"build@{spec.name}"
    locked = lock_output_md5(project, stage, path)
    report.add("dvc.lock", f"md5 of {path} in dvc.lock ({stage}) vs the workspace",
               locked or f"no {stage} output in {project / lineage.LOCK_FILE}", workspace,
               None if locked is None else locked == workspace)
    return workspace


def _dataset_spec(name: str) -> properties.PropertySpec:
    by_name = {spec.dataset_name: spec for spec in properties.PROPERTIES.values()}
    if name not in by_name:
        close = difflib.get_close_matches(str(name), list(by_name), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownDatasetError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(sorted(by_name))}")
    return by_name[name]


def audit_dataset(name: str, version: str | None = None, *, project: str | os.PathLike = ".",
                  store: str | os.PathLike | None = None, step: Step = quiet) -> Report:
    """Audit dataset `name` ('mp-elastic-irreps'): the local build (rebuilt through DVC when absent), or with
    `version` the local store's copy of that version (else the local build if it is that version)."""
    spec = _dataset_spec(name)
    project = Path(project)
    local = registry.LocalStore(store)
    stored = local.versions(spec.dataset_name, "datasets")
    if version is not None:
        version_key(version)
    if version is not None and version in stored:
        folder = local.folder(spec.dataset_name, version, "datasets")
        report = Report(f"dataset {spec.dataset_name} {version} (local store: {folder})")
        for relative, expected in sorted(stored[version].items()):
            file_check(report, f"file {relative}", f"sha256 vs versions.json of the local store {local.root}",
                        folder / relative, expected)
        dataset_checks(report, folder, spec, step)
        return report
    report = Report(f"dataset {spec.dataset_name}")
    folder = local_build(project, spec, report, step)
    built = json.loads((folder / dataset_schema.VERSION_FILE).read_text(encoding="utf-8")).get("version")
    if version is not None and built != version:
        raise registry.VersionNotFoundError(
            f"{spec.dataset_name} {version} is neither in the local store (versions "
            f"{sorted(stored, key=version_key) or 'none'}) nor the local build ({folder}: version {built})")
    report.subject = f"dataset {spec.dataset_name} {built} (local build: {folder})"
    dataset_checks(report, folder, spec, step)
    lock_check(report, project, folder, spec, step)
    return report
