"""The model part of `zoo audit`: find the version zoo.load would load, check its files, its card and the card's
lineage, then hand the dataset and the metrics to their parts (zoo.release.audit.datasets, .metrics)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core.config import load_section
from zoo.core.io import sha256_file
from zoo.core.versions import version_key
from zoo.nn import training
from zoo.release import lineage, loading, model_card, registry, resolution
from zoo.release.audit.datasets import dataset_checks, dvc_md5, local_build, lock_check
from zoo.release.audit.metrics import MODEL_KEY, metric_checks, printed_differences
from zoo.release.audit.report import Report, Step, file_check, listed, quiet


@dataclass(frozen=True)
class ModelVersion:
    """A model version as found: where its files are and the sha256s recorded for them there."""

    name: str
    version: str
    source: str
    folder: Path
    hashes: dict[str, str]
    recorded_in: str


def resolve_model(name: str, version: str | None, store, registry_path, cache_dir, endpoint) -> ModelVersion:
    """The version `zoo.load(name, version)` loads: the newest the local store or the registry knows when version
    is None, the local store's copy on a tie; a registered release that is not shipped is fetched (and verified)
    by zoo.load into the Hub cache."""
    local = registry.LocalStore(store)
    known = registry.read_registry(registry_path)
    names = resolution.known_models(known, local)
    if name not in names:
        raise registry.unknown_model(name, names)
    if version is not None:
        version_key(version)
    stored = local.versions(name)
    entry = known.models.get(name)
    releases = entry.releases if entry else {}
    if version is None:
        if not stored and not releases:
            raise registry.VersionNotFoundError(
                f"{name} has no version in the local store ({local.root}) or the registry ({known.path}): nothing to "
                "audit; publish one first (python stages/publish.py <property>)")
        version = max([*stored, *releases], key=version_key)
    if version in stored:
        return ModelVersion(name, version, "local store", local.folder(name, version), stored[version],
                        f"versions.json of the local store {local.root}")
    release = releases.get(version)
    if release is None:
        raise registry.VersionNotFoundError(
            f"{name} has no version {version}: local store {sorted(stored, key=version_key) or 'none'}, "
            f"registry {sorted(releases, key=version_key) or 'none'}")
    recorded_in = f"registry release {version} ({known.path})"
    shipped = release.shipped_folder(known.path)
    if shipped is not None and shipped.is_dir():
        return ModelVersion(name, version, "shipped", shipped, release.files, recorded_in)
    model = loading.load(name, version, store=store, registry_path=known.path, cache_dir=cache_dir,
                         endpoint=endpoint)
    return ModelVersion(name, version, "Hub cache", model.path, release.files, recorded_in)


def audit_model(name: str, version: str | None = None, *, retrain: bool = False,
                project: str | os.PathLike = ".", store: str | os.PathLike | None = None,
                registry_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                endpoint: str | None = None, step: Step = quiet) -> Report:
    """Audit model `name` at `version` (None: the one zoo.load picks); the module docstring lists the checks.

    project: the checkout holding dvc.yaml, dvc.lock and data/ (the dataset's local build); store, registry_path,
    cache_dir, endpoint: as for zoo.load (registry_path None: zoo.release.registry.REGISTRY_PATH).
    Errors (not rows): UnknownModelError with close matches, VersionNotFoundError, AuditError (no dataset build
    and it could not be rebuilt), zoo.release.hub errors when a release must be downloaded.
    """
    # Longer than ~60 lines: the audit's rows, in the order the report shows them.
    found = resolve_model(name, version, store, registry.REGISTRY_PATH if registry_path is None else registry_path,
                           cache_dir, endpoint)
    report = Report(f"model {found.name} {found.version} ({found.source}: {found.folder})")
    files_ok = {file: file_check(report, f"file {file}", f"sha256 vs {found.recorded_in}", found.folder / file,
                                  expected) for file, expected in sorted(found.hashes.items())}
    config_path = found.folder / training.CONFIG_FILE
    if not config_path.is_file():
        report.add("config", "config.json of the model", "present", "missing", False)
        return report
    info = json.loads(config_path.read_text(encoding="utf-8"))
    model_ok = file_check(report, "weights", "sha256 of model.safetensors vs config.json",
                           found.folder / training.WEIGHTS_FILE, info["weights"]["sha256"])
    model_ok &= files_ok.get(training.CONFIG_FILE, True) and files_ok.get(training.WEIGHTS_FILE, True)

    card_path = found.folder / model_card.CARD_FILE
    card_text = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card = model_card.parse_front_matter(card_text)
    if not card:
        report.add("model card", "README.md with its YAML header", "present", "missing or without a header", False)
    else:
        card_checks(report, card, card_text, info, found.version)
    claimed = {"name": card_dataset_name(card) or info["dataset"]["name"],
               "version": card.get("dataset_version", info["dataset"]["version"]),
               "fingerprint": card.get("dataset_fingerprint", info["dataset"]["fingerprint"])}

    spec = properties.get(info["property"])
    project = Path(project)
    folder = local_build(project, spec, report, step)
    dataset_ok = dataset_checks(report, folder, spec, step, claimed)
    workspace_md5 = lock_check(report, project, folder, spec, step)
    card_md5 = (card.get("provenance") or {}).get("dataset_dvc_md5")
    report.add("card lineage", "md5 of the dataset folder the model was trained on (card, from dvc.lock) vs the "
               "workspace", card_md5 or "not recorded (the model was not trained by dvc repro)", workspace_md5,
               None if card_md5 is None else card_md5 == workspace_md5)
    lineage_checks(report, card, project, found.folder, info["weights"]["sha256"])

    reasons = [reason for ok, reason in ((model_ok, "the model files failed verification"),
                                         (dataset_ok, "the dataset is not the card's")) if not ok]
    test_metrics = card.get("test_metrics")
    if not isinstance(test_metrics, Mapping):
        report.add("metrics", "the card's test metrics", "recorded in the header (test_metrics)",
                   "absent: the card predates zoo audit (publish a new version)", False)
    elif reasons:
        for predictor in [MODEL_KEY, *test_metrics.get("baselines", {})]:
            report.add(f"metrics {predictor}", "card vs recomputed", "-", f"not recomputed: {'; '.join(reasons)}",
                       None)
    else:
        # The symmetry analysis of the test structures uses the project's settings, as its evaluate stage did.
        symmetry = load_section("symmetry", project / "params.yaml")
        metric_checks(report, card, info, found.folder, folder.parent, spec, retrain, symmetry, step)
    return report


def card_checks(report: Report, card: Mapping[str, Any], text: str, info: Mapping[str, Any], version: str) -> None:
    """The card's header against config.json and the audited version; its printed tables against its header."""
    report.add("card version", "model_version in the card vs the version audited", version,
               card.get("model_version"), str(card.get("model_version")) == version)
    report.add("card weights", "weights_sha256 in the card vs config.json", info["weights"]["sha256"],
               card.get("weights_sha256", "absent"), card.get("weights_sha256") == info["weights"]["sha256"])
    trained_on = info["dataset"]
    in_card = {"name": card_dataset_name(card), "version": card.get("dataset_version"),
               "fingerprint": card.get("dataset_fingerprint")}
    report.add("card dataset", "dataset name, version, fingerprint in the card vs config.json",
               " ".join(str(trained_on[k]) for k in in_card), " ".join(str(v) for v in in_card.values()),
               all(str(v) == str(trained_on[k]) for k, v in in_card.items()))
    test_metrics = card.get("test_metrics")
    if isinstance(test_metrics, Mapping):
        differences = printed_differences(model_card.printed_metrics(text), test_metrics)
        report.add("card tables", "every value printed in the card's tables vs its header",
                   listed([d[:2] for d in differences]) or "as in the header",
                   listed([(d[0], d[2]) for d in differences]) or "all equal", not differences)


def card_dataset_name(card: Mapping[str, Any]) -> str | None:
    """The dataset repository's name in the card's `datasets` ('org/mp-elastic-irreps' -> 'mp-elastic-irreps')."""
    names = card.get("datasets") or []
    return str(names[0]).rsplit("/", 1)[-1] if names else None


def lineage_checks(report: Report, card: Mapping[str, Any], project: Path, folder: Path, weights_sha256: str) -> None:
    """The card's lineage (zoo.release.lineage: the DVC stage that made the model, its dependencies' md5s and params)
    against that stage's dvc.lock entry, when the entry is of this model: its output is the audited folder (a
    release stage) or a folder of the project holding the same weights (the train stage)."""
    provenance = card.get("provenance") or {}
    stage = provenance.get("dvc_stage")
    compared = "the card's lineage (dependencies' md5 and params) vs dvc.lock"
    if not stage:
        report.add("lineage lock", compared, "a lineage recorded in the card",
                   "none: made outside a DVC stage (or before cards recorded one)", None)
        return
    pipeline, name = lineage.split_address(stage)
    where = f"{Path(pipeline).with_name(lineage.LOCK_FILE)}, {name}"
    locked = lineage.lock_lineage(project, stage)
    output = None if locked is None else _locked_output(project, stage, folder, weights_sha256)
    if output is None:
        found = "no entry of the stage" if locked is None else \
            f"an entry of another model ({', '.join(lineage.lock_outputs(project, stage))}: a later run)"
        report.add("lineage lock", f"{compared} ({where})", "the entry of the run that made this model", found, None)
        return
    path, locked_md5, found_md5 = output
    report.add("lineage output", f"md5 of {path} in {where} vs the files", locked_md5, found_md5,
               locked_md5 == found_md5)
    recorded = lineage.card_lineage(provenance)
    differing = lineage.differing_deps(recorded, locked)
    # A release stage keeps a shipped folder only when a rerun reproduced its weights and config byte for byte,
    # so a lock entry of its folder with other dependencies records such a rerun: not a contradiction.
    report.add("lineage lock", f"{compared} ({where})", "the same md5s and values",
               "the same" if not differing else f"{', '.join(differing)} differ: a later run reproduced the model",
               True if not differing else None)


def _locked_output(project: Path, stage: str, folder: Path,
                   weights_sha256: str) -> tuple[str, str, str] | None:
    """(path, md5 in dvc.lock, md5 of the files) of the stage's locked output that is this model, or None."""
    outputs = lineage.lock_outputs(project, stage)
    try:
        relative = folder.resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        relative = None
    if relative in outputs:
        return relative, outputs[relative], dvc_md5(folder)
    for path, md5 in outputs.items():
        weights = project / path / training.WEIGHTS_FILE
        if weights.is_file() and sha256_file(weights) == weights_sha256:
            return path, md5, dvc_md5(project / path)
    return None
