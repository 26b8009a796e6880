"""Publishing a trained, evaluated model and its dataset as versioned repositories (the publish stage, and the
last step of a release stage).

Model repository folder: model.safetensors and config.json (as the train stage wrote them: full ModelConfig,
property, irreps, units, format version, weights sha256) and README.md, the model card (zoo.release.model_card). The
dataset folder (data/hub/datasets/mp-<property>-irreps) is published as it is, under its own version.

Targets: `local` (default): the local zoo store (zoo.release.registry.LocalStore, `publish.store`); `hub`: a Hugging Face
Hub through zoo.release.hub (upload_folder + tag v<version>), at `publish.hub.endpoint` or HF_ENDPOINT, token HF_TOKEN,
namespace `publish.hub.organisation`; `stages/publish.py --target` overrides the target for one run. `shipped`, the
release stage's own (zoo.release.shipping): the model folder is committed with the code under
zoo/releases/<name>/<version>/ and its release entry (every file's sha256, the dataset fingerprint) added to
zoo/registry.json, so `zoo.load` works on a fresh clone offline (datasets are not shipped: the pipeline builds
them).

A published version is never overwritten. Publishing a version that already exists is refused unless it is the
very same model (weights and config byte-identical; the card, which records the lineage of the run that made it, is
kept as first published): then nothing is written and the report says "already published", so `dvc repro --force`
of an unchanged pipeline passes while a retrained model under an old version number stops the pipeline with the
instruction to bump the version. A dataset version already published with the same content fingerprint is left as
it is (several model versions share it); with another fingerprint it is refused.

The publish stage writes data/reports/publish/<property>.json: what was published where, every file's sha256, and
for the Hub the commit sha, i.e. the release entry to add to zoo/registry.json.

params.yaml, section `publish` (zoo.core.config.PublishConfig):
    model_version  semantic version of the models published by this run
    target         local | hub
    store          folder of the local store
    hub            {organisation, endpoint (null: HF_ENDPOINT or huggingface.co), private}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core.config import PublishConfig, load_section
from zoo.core.io import copy_folder_into_place, sha256_file, write_json
from zoo.core.versions import version_key
from zoo.data import dataset_schema
from zoo.data import datasets as zoo_datasets
from zoo.nn import evaluation, training
from zoo.release import hub, model_card, registry
from zoo.release.lineage import lock_lineage

SHIPPED = "shipped"
TARGETS = (*PublishConfig.TARGETS, SHIPPED)
# What makes a model version: its weights and its full config (which records the weights' sha256). The card records
# the lineage, which a rerun on other code (reproducing the same weights) would change: it is not part of a
# version's identity.
IDENTITY_FILES = (training.WEIGHTS_FILE, training.CONFIG_FILE)
PUBLISH_REPORTS = Path("data/reports/publish")
SHIPPED_DIR = "releases"  # under zoo/, beside registry.json
# What a failed publication raises: a message for the user, not a bug.
PUBLISH_ERRORS = (ValueError, KeyError, FileNotFoundError, registry.LocalVersionExistsError, hub.HubError)


def publish_property(property_name: str, *, version: str, target: str, store: str | os.PathLike | None = None,
                     organisation: str, endpoint: str | None = None, token: str | None = None,
                     private: bool = False, models_root: str | os.PathLike = training.MODELS_DIR,
                     datasets_root: str | os.PathLike = zoo_datasets.HUB_DATASETS_DIR,
                     reports_dir: str | os.PathLike = evaluation.REPORTS_DIR,
                     lineage: Mapping[str, Any] | None = None,
                     registry_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Publish the model of `property_name` and its dataset; returns the report (module docstring). lineage: the
    DVC stage that trained the model and its dependencies (zoo.release.lineage), recorded in the card."""
    # Longer than ~60 lines: one branch per target, each a few lines, sharing the staged model folder.
    spec = properties.get(property_name)
    version_key(version)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    model_dir = Path(models_root) / spec.model_name
    dataset_dir = Path(datasets_root) / spec.dataset_name
    info = json.loads((model_dir / training.CONFIG_FILE).read_text(encoding="utf-8"))
    if sha256_file(model_dir / training.WEIGHTS_FILE) != info["weights"]["sha256"]:
        raise ValueError(f"{model_dir / training.WEIGHTS_FILE} does not match the sha256 in its config.json")
    dataset_version = json.loads((dataset_dir / dataset_schema.VERSION_FILE).read_text(encoding="utf-8"))
    if dataset_version["fingerprint"] != info["dataset"]["fingerprint"]:
        raise ValueError(f"{model_dir} was trained on {spec.dataset_name} {info['dataset']['fingerprint']}, but "
                         f"{dataset_dir} is {dataset_version['fingerprint']}: retrain (dvc repro train@{spec.name})")
    metrics = json.loads(evaluation.metrics_path(Path(reports_dir), spec.name).read_text(encoding="utf-8"))
    per_system_path = evaluation.per_system_json_path(Path(reports_dir), spec.name)
    # Reports written before the per-crystal-system tables moved to their own file hold them inline.
    per_system = json.loads(per_system_path.read_text(encoding="utf-8")) if per_system_path.is_file() \
        else metrics.get("per_crystal_system", {})
    dataset_repo = f"{organisation}/{spec.dataset_name}"
    card = model_card.render_model_card(info, metrics, per_system, version=version, dataset_repo=dataset_repo,
                                        lineage=lineage)
    report: dict[str, Any] = {"property": spec.name, "target": target}
    with tempfile.TemporaryDirectory(prefix="zoo-publish-") as tmp:
        folder = Path(tmp) / spec.model_name
        folder.mkdir()
        for name in (training.WEIGHTS_FILE, training.CONFIG_FILE):
            shutil.copyfile(model_dir / name, folder / name)
        (folder / model_card.CARD_FILE).write_text(card, encoding="utf-8")
        if target == "local":
            local = registry.LocalStore(store)
            report["dataset"] = _publish_dataset_locally(local, dataset_dir, spec.dataset_name, dataset_version)
            published = local.versions(spec.model_name).get(version)
            if published is None:
                local.publish(folder, spec.model_name, version)
            else:
                _same_model(f"local store {local.root}", spec.model_name, version, published, folder)
            report["model"] = {"name": spec.model_name, "version": version,
                               "path": str(local.folder(spec.model_name, version)),
                               "files": local.versions(spec.model_name)[version], "published": published is None}
        elif target == SHIPPED:
            report["model"] = _ship(folder, spec.model_name, version, info["dataset"],
                                    Path(registry_path or registry.REGISTRY_PATH),
                                    bump=f"release.versions.{spec.name} (params.yaml)")
        else:
            report["dataset"] = _publish_dataset_to_hub(dataset_dir, dataset_repo, dataset_version, endpoint, token,
                                                        private)
            repo_id = f"{organisation}/{spec.model_name}"
            try:
                commit_sha = hub.publish_folder(folder, repo_id, "model", version, endpoint=endpoint, token=token,
                                                private=private)
                published = True
            except hub.VersionExistsError:
                with tempfile.TemporaryDirectory(prefix="zoo-publish-check-") as cache:
                    config = hub.download_file(repo_id, training.CONFIG_FILE, hub.version_tag(version),
                                               repo_type="model", cache_dir=cache, endpoint=endpoint, token=token)
                    _same_model(f"Hub repository {repo_id}", spec.model_name, version,
                                {training.CONFIG_FILE: sha256_file(config)}, folder)
                    commit_sha, published = config.parent.name, False
            report["model"] = {"name": spec.model_name, "version": version, "repo_id": repo_id, "published": published,
                               "registry_release": registry.release_entry(folder, commit_sha, info["dataset"])}
    return report


BUMP_MODEL_VERSION = "publish.model_version (params.yaml) or pass --version"


def _same_model(where: str, name: str, version: str, published: dict[str, str], folder: Path,
                bump: str = BUMP_MODEL_VERSION) -> None:
    """Accept a version that is already published only when it is this very model (IDENTITY_FILES that both sides
    have are byte-identical); otherwise refuse, saying what to `bump`: a published version is never overwritten."""
    differing = [file for file in IDENTITY_FILES if file in published and published[file] != sha256_file(folder / file)]
    if differing or not set(IDENTITY_FILES) & set(published):
        raise hub.VersionExistsError(
            f"model {name} version {version} is already published in the {where} with other "
            f"{' and '.join(differing) or 'files'}; published versions are never overwritten: bump {bump}")


def _ship(folder: Path, name: str, version: str, dataset: dict[str, str], registry_path: Path,
          bump: str) -> dict[str, Any]:
    """Ship the model with the code: copy `folder` to zoo/releases/<name>/<version>/ and add the release to the
    registry (revision null until it is also pushed to a Hub). An identical shipped version is left as it is; another
    model under a shipped version is refused, saying what to `bump`."""
    entry = json.loads(registry_path.read_text(encoding="utf-8"))
    model = entry["models"].get(name)
    if model is None:
        raise ValueError(f"{registry_path} has no model {name!r}: add its entry (property, repo_id) first")
    relative = f"{SHIPPED_DIR}/{name}/{version}"
    target = registry_path.parent / relative
    existing = model["releases"].get(version)
    if existing is not None or target.exists():
        _same_model(f"registry {registry_path}", name, version, (existing or {}).get("files", {}), folder, bump)
        if not target.is_dir():
            raise FileNotFoundError(f"{registry_path} lists {name} {version} as shipped in {target}, which is missing: "
                                    f"restore it (git checkout -- {target}) rather than shipping it again")
        return {"name": name, "version": version, "path": str(target), "published": False,
                "registry_release": existing}
    copy_folder_into_place(folder, target)
    release = registry.release_entry(target, None, dataset, shipped=relative)
    model["releases"][version] = release
    registry.write_registry(entry, registry_path)
    return {"name": name, "version": version, "path": str(target), "published": True, "registry_release": release}


def _publish_dataset_locally(local: registry.LocalStore, folder: Path, name: str,
                             version_info: dict[str, Any]) -> dict[str, Any]:
    version = version_info["version"]
    try:
        path = local.publish(folder, name, version, kind="datasets")
        return {"name": name, "version": version, "path": str(path), "published": True}
    except registry.LocalVersionExistsError:
        stored = json.loads((local.folder(name, version, "datasets") / dataset_schema.VERSION_FILE).read_text())
        _same_dataset(name, version, stored, version_info)
        return {"name": name, "version": version, "path": str(local.folder(name, version, "datasets")),
                "published": False}


def _publish_dataset_to_hub(folder: Path, repo_id: str, version_info: dict[str, Any], endpoint, token,
                            private: bool) -> dict[str, Any]:
    version = version_info["version"]
    try:
        commit = hub.publish_folder(folder, repo_id, "dataset", version, endpoint=endpoint, token=token,
                                    private=private)
        return {"repo_id": repo_id, "version": version, "revision": commit, "published": True}
    except hub.VersionExistsError:
        with tempfile.TemporaryDirectory(prefix="zoo-publish-check-") as cache:
            path = hub.download_file(repo_id, dataset_schema.VERSION_FILE, hub.version_tag(version), repo_type="dataset",
                                     cache_dir=cache, endpoint=endpoint, token=token)
            _same_dataset(repo_id, version, json.loads(path.read_text(encoding="utf-8")), version_info)
            commit = path.parent.name
        return {"repo_id": repo_id, "version": version, "revision": commit, "published": False}


def _same_dataset(name: str, version: str, published: dict[str, Any], local: dict[str, Any]) -> None:
    if published.get("fingerprint") != local["fingerprint"]:
        raise hub.VersionExistsError(
            f"dataset {name} version {version} is already published with fingerprint {published.get('fingerprint')}, "
            f"but the local build is {local['fingerprint']}: bump build.dataset_version; versions are never overwritten")


def publish_stage(property_name: str, params_path: str | os.PathLike, *, target: str | None = None,
                  version: str | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The publish stage: publish with the params file's `publish` section (`target`, `version`: this run's
    overrides), write data/reports/publish/<property>.json and say what happened. Raises PUBLISH_ERRORS."""
    settings: PublishConfig = load_section("publish", params_path)
    report = publish_property(
        property_name, version=version or str(settings.model_version), target=target or settings.target,
        store=settings.store, organisation=settings.hub.organisation, endpoint=settings.hub.endpoint,
        token=os.environ.get("HF_TOKEN"), private=bool(settings.hub.private),
        lineage=lock_lineage(".", f"train@{property_name}"))
    # The file states what the target holds, so it is the same whether this run or an earlier one published
    # (`dvc repro --force` gives identical bytes); whether this run wrote anything is said below.
    write_json(PUBLISH_REPORTS / f"{property_name}.json",
               {part: ({k: v for k, v in entry.items() if k != "published"} if isinstance(entry, dict) else entry)
                for part, entry in report.items()})
    model = report["model"]
    where = model.get("path") or model["repo_id"]
    state = "published" if model["published"] else "already published with identical weights and config"
    dataset = report.get("dataset")
    dataset_state = "" if dataset is None else (f"; dataset {dataset['version']} "
                                                f"{'published' if dataset['published'] else 'already published'}")
    say(f"publish {property_name}: {model['name']} {model['version']} {state} -> {where}{dataset_state}")
    return report
