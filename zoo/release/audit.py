"""`zoo audit`: re-derive what a model card or a dataset version claims from the files, and say what differs.

A published model is only as trustworthy as the claims on its card: that these weights, trained on that dataset,
score those metrics. The audit re-derives each claim from the files and reports one row per check (what was
compared, expected, found, pass / FAIL / not checked); any FAIL fails the audit.

Model audit (`audit_model`), the version `zoo.load` would load (local store first on a version tie):
    files     every file of the version against the sha256 recorded where it was found: the local store's
              versions.json for a locally published version, the registry's release entry (zoo/registry.json) for
              a shipped or downloaded release; the weights against config.json; the card's weights_sha256,
              model_version and dataset against config.json
    card      every value printed in the card's tables against its machine-readable header (zoo.release.model_card)
    dataset   the dataset version the card names, from the local build ``<project>/data/hub/datasets/<name>``
              (rebuilt with ``dvc repro build@<property>`` when absent): its version and Parquet files against
              dataset_version.json; its content fingerprint recomputed from the Parquet files against the model
              card, dataset_version.json and the dataset card
    lineage   the DVC md5 of the dataset folder in the workspace against dvc.lock's (build stage output) and against
              the md5 the model card recorded from the training stage's lock entry
    metrics   the checkpoint re-evaluated on the dataset's test split with the evaluate stage's code
              (zoo.nn.evaluation): every metric of the card, overall and per crystal system, compared as the card
              prints it (model_card.format_metric with the card's printed_format: 4 significant digits); the
              deterministic baselines (crystal_system_mean, composition_gbm with the recorded GBMSettings) refitted
              and compared the same way. The non-equivariant baseline is a trained network: it is compared only
              with retrain.
    retrain   (retrain=True) zoo.nn.training.fit with the TrainSettings recorded in config.json, on the CPU when they
              say accelerator 'auto': same ModelConfig and bit-identical weights expected (same seed, deterministic
              kernels), reported as the largest absolute weight difference; the retrained model's metrics, and the
              retrained non-equivariant baseline's (with its recorded settings), within RETRAIN_RTOL of the card.
Metrics are recomputed only from verified inputs: when the weights or config fail their hashes or the dataset is
not the card's, the metric rows say "not checked" and name the cause, which fails the audit itself.

Dataset audit (`audit_dataset`): the local build (or, with a version, the local store's copy of that version):
every file against dataset_version.json (and the store's versions.json), the fingerprint recomputed against
dataset_version.json and the dataset card, and for the local build dvc.lock's md5 against the workspace.

Long steps report through `step`, a callable(text) returning a context manager (the CLI shows a rich spinner).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core import environment
from zoo.core.config import GBMSettings, SymmetryConfig, TrainSettings, load_section
from zoo.core.io import sha256_file
from zoo.core.versions import version_key
from zoo.data import dataset_schema
from zoo.data import datasets as zoo_datasets
from zoo.data import splits
from zoo.nn import evaluation, training
from zoo.release import loading, model_card, registry, resolution

PASS, FAIL, NOT_CHECKED = "pass", "FAIL", "not checked"
# Tolerance on the metrics of retrained networks. On the CPU with the recorded seed retraining is bit-identical,
# so the metrics agree exactly; 1e-3 relative is the resolution of the card's 4 printed significant digits, the
# most a retraining elsewhere (other kernels, another thread count) can be held to.
RETRAIN_RTOL = 1e-3
LOCK_FILE = "dvc.lock"
MODEL_KEY = evaluation.MODEL_KEY
RETRAINED_KEY = "retrained model"
NON_EQUIVARIANT = "non_equivariant"
_SHOWN_DIFFERENCES = 4  # differing metrics named per row; the rest are counted
_HEX = frozenset("0123456789abcdef")

Step = Callable[[str], AbstractContextManager]


def _quiet(text: str) -> AbstractContextManager:
    return contextlib.nullcontext()


class AuditError(RuntimeError):
    """The audit could not run (e.g. the dataset could not be rebuilt); the message says why."""


class UnknownDatasetError(LookupError):
    """The name is none of the pipeline's datasets."""


# ------------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Check:
    """One row of the verdict: what was compared, the expected and found values, and the result."""

    name: str
    compared: str
    expected: str
    found: str
    status: str

    def summary(self) -> str:
        return f"{self.name} ({self.compared}): expected {abbreviate(self.expected)}, found {abbreviate(self.found)}"


@dataclass
class Report:
    """The verdict on one model version or dataset: a Check per row, and notes (e.g. that a dataset was rebuilt)."""

    subject: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, name: str, compared: str, expected: Any, found: Any, ok: bool | None) -> bool:
        """Record a row: ok True -> pass, False -> FAIL, None -> not checked. Returns ok is True."""
        status = NOT_CHECKED if ok is None else PASS if ok else FAIL
        self.checks.append(Check(name, compared, str(expected), str(found), status))
        return ok is True


def abbreviate(text: str) -> str:
    """`text` with each sha256 digest cut to its first 16 hex digits (enough to tell two apart)."""
    def short(word: str) -> str:
        prefix, colon, digest = word.rpartition(":")
        return f"{prefix}{colon}{digest[:16]}..." if len(digest) == 64 and set(digest) <= _HEX else word

    return " ".join(short(word) for word in text.split(" "))


def _file_check(report: Report, name: str, compared: str, path: Path, expected: str) -> bool:
    found = sha256_file(path) if path.is_file() else "missing"
    return report.add(name, compared, expected, found, found == expected)


# ------------------------------------------------------------------------------------------- model audit
@dataclass(frozen=True)
class _Version:
    """A model version as found: where its files are and the sha256s recorded for them there."""

    name: str
    version: str
    source: str
    folder: Path
    hashes: dict[str, str]
    recorded_in: str


def _resolve_model(name: str, version: str | None, store, registry_path, cache_dir, endpoint) -> _Version:
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
        return _Version(name, version, "local store", local.folder(name, version), stored[version],
                        f"versions.json of the local store {local.root}")
    release = releases.get(version)
    if release is None:
        raise registry.VersionNotFoundError(
            f"{name} has no version {version}: local store {sorted(stored, key=version_key) or 'none'}, "
            f"registry {sorted(releases, key=version_key) or 'none'}")
    recorded_in = f"registry release {version} ({known.path})"
    shipped = release.shipped_folder(known.path)
    if shipped is not None and shipped.is_dir():
        return _Version(name, version, "shipped", shipped, release.files, recorded_in)
    model = loading.load(name, version, store=store, registry_path=known.path, cache_dir=cache_dir,
                         endpoint=endpoint)
    return _Version(name, version, "Hub cache", model.path, release.files, recorded_in)


def audit_model(name: str, version: str | None = None, *, retrain: bool = False,
                project: str | os.PathLike = ".", store: str | os.PathLike | None = None,
                registry_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                endpoint: str | None = None, step: Step = _quiet) -> Report:
    """Audit model `name` at `version` (None: the one zoo.load picks); the module docstring lists the checks.

    project: the checkout holding dvc.yaml, dvc.lock and data/ (the dataset's local build); store, registry_path,
    cache_dir, endpoint: as for zoo.load (registry_path None: zoo.release.registry.REGISTRY_PATH).
    Errors (not rows): UnknownModelError with close matches, VersionNotFoundError, AuditError (no dataset build
    and it could not be rebuilt), zoo.release.hub errors when a release must be downloaded.
    """
    # Longer than ~60 lines: the audit's rows, in the order the report shows them.
    found = _resolve_model(name, version, store, registry.REGISTRY_PATH if registry_path is None else registry_path,
                           cache_dir, endpoint)
    report = Report(f"model {found.name} {found.version} ({found.source}: {found.folder})")
    files_ok = {file: _file_check(report, f"file {file}", f"sha256 vs {found.recorded_in}", found.folder / file,
                                  expected) for file, expected in sorted(found.hashes.items())}
    config_path = found.folder / training.CONFIG_FILE
    if not config_path.is_file():
        report.add("config", "config.json of the model", "present", "missing", False)
        return report
    info = json.loads(config_path.read_text(encoding="utf-8"))
    model_ok = _file_check(report, "weights", "sha256 of model.safetensors vs config.json",
                           found.folder / training.WEIGHTS_FILE, info["weights"]["sha256"])
    model_ok &= files_ok.get(training.CONFIG_FILE, True) and files_ok.get(training.WEIGHTS_FILE, True)

    card_path = found.folder / model_card.CARD_FILE
    card_text = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card = model_card.parse_front_matter(card_text)
    if not card:
        report.add("model card", "README.md with its YAML header", "present", "missing or without a header", False)
    else:
        _card_checks(report, card, card_text, info, found.version)
    claimed = {"name": _card_dataset_name(card) or info["dataset"]["name"],
               "version": card.get("dataset_version", info["dataset"]["version"]),
               "fingerprint": card.get("dataset_fingerprint", info["dataset"]["fingerprint"])}

    spec = properties.get(info["property"])
    project = Path(project)
    folder = local_build(project, spec, report, step)
    dataset_ok = _dataset_checks(report, folder, spec, step, claimed)
    workspace_md5 = _lock_check(report, project, folder, spec, step)
    card_md5 = (card.get("provenance") or {}).get("dataset_dvc_md5")
    report.add("card lineage", "md5 of the dataset folder the model was trained on (card, from dvc.lock) vs the "
               "workspace", card_md5 or "not recorded (the model was not trained by dvc repro)", workspace_md5,
               None if card_md5 is None else card_md5 == workspace_md5)

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
        _metric_checks(report, card, info, found.folder, folder.parent, spec, retrain, symmetry, step)
    return report


def _card_checks(report: Report, card: Mapping[str, Any], text: str, info: Mapping[str, Any], version: str) -> None:
    """The card's header against config.json and the audited version; its printed tables against its header."""
    report.add("card version", "model_version in the card vs the version audited", version,
               card.get("model_version"), str(card.get("model_version")) == version)
    report.add("card weights", "weights_sha256 in the card vs config.json", info["weights"]["sha256"],
               card.get("weights_sha256", "absent"), card.get("weights_sha256") == info["weights"]["sha256"])
    trained_on = info["dataset"]
    in_card = {"name": _card_dataset_name(card), "version": card.get("dataset_version"),
               "fingerprint": card.get("dataset_fingerprint")}
    report.add("card dataset", "dataset name, version, fingerprint in the card vs config.json",
               " ".join(str(trained_on[k]) for k in in_card), " ".join(str(v) for v in in_card.values()),
               all(str(v) == str(trained_on[k]) for k, v in in_card.items()))
    test_metrics = card.get("test_metrics")
    if isinstance(test_metrics, Mapping):
        differences = _printed_differences(model_card.printed_metrics(text), test_metrics)
        report.add("card tables", "every value printed in the card's tables vs its header",
                   _listed([d[:2] for d in differences]) or "as in the header",
                   _listed([(d[0], d[2]) for d in differences]) or "all equal", not differences)


def _card_dataset_name(card: Mapping[str, Any]) -> str | None:
    """The dataset repository's name in the card's `datasets` ('org/mp-elastic-irreps' -> 'mp-elastic-irreps')."""
    names = card.get("datasets") or []
    return str(names[0]).rsplit("/", 1)[-1] if names else None


def _printed_differences(printed: Mapping[str, Any], header: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(cell, header value as printed, printed value) for every printed cell that is not its header value."""
    show = _printer(header)
    out = []
    scores = {MODEL_KEY: header.get("model", {}), **header.get("baselines", {})}
    for predictor, values in printed["metrics"].items():
        for metric, text in values.items():
            expected = show(scores.get(predictor, {}), metric)
            if text != expected:
                out.append((f"{predictor} {metric}", expected, text))
    systems = header.get("per_crystal_system", {})
    metric = printed["per_crystal_system"]["metric"]
    for predictor, values in printed["per_crystal_system"]["values"].items():
        for system, text in values.items():
            expected = show(systems.get(predictor, {}).get(system, {}), metric)
            if text != expected:
                out.append((f"{predictor} {system} {metric}", expected, text))
    for system, text in printed["per_crystal_system"]["n"].items():
        expected = show(systems.get(MODEL_KEY, {}).get(system, {}), "n")
        if text != expected:
            out.append((f"{system} n", expected, text))
    return out


def _printer(test_metrics: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], str]:
    """scores, key -> the value as the card prints it (with the format the card records), or 'absent'."""
    float_format = test_metrics.get("printed_format", model_card.PRINTED_FORMAT)
    return lambda scores, key: model_card.format_metric(scores[key], float_format) if key in scores else "absent"


def _listed(pairs: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{what} {value}" for what, value in pairs[:_SHOWN_DIFFERENCES])
    more = len(pairs) - _SHOWN_DIFFERENCES
    return shown + (f"; and {more} more" if more > 0 else "")


# ------------------------------------------------------------------------------------------------ metrics
def _metric_checks(report: Report, card: Mapping[str, Any], info: Mapping[str, Any], model_folder: Path,
                   datasets_root: Path, spec: properties.PropertySpec, retrain: bool, symmetry: SymmetryConfig,
                   step: Step) -> None:
    """Re-evaluate the checkpoint and the card's baselines on the test split and compare with the card."""
    # Longer than ~60 lines: the predictions of every predictor are gathered, then compared, in one pass.
    test_metrics = card["test_metrics"]
    with step(f"loading {spec.dataset_name} and the checkpoint"):
        data, _ = training.load_splits(spec.name, datasets_root)
        loaded = training.load_model(model_folder)
        data = {name: training.for_parts(split, loaded.net.parts) for name, split in data.items()}
    test = data["test"]
    recorded = test_metrics.get("baseline_settings") or {}
    gbm = GBMSettings.from_params(recorded["composition_gbm"]) if "composition_gbm" in recorded else None
    baseline_training = _cpu(TrainSettings.from_params(recorded[NON_EQUIVARIANT])) \
        if NON_EQUIVARIANT in recorded and retrain else None
    predictors = evaluation.baseline_predictors(data, loaded.net.config, baseline_training, gbm)

    with step(f"predicting the test split ({len(test)} structures)"):
        predictions = {MODEL_KEY: evaluation.predict(loaded.net, test)}
    claimed_baselines = dict(test_metrics.get("baselines") or {})
    unchecked = []  # rows of the baselines not re-derived, added after the compared ones
    for name in claimed_baselines:
        if name == NON_EQUIVARIANT and not retrain:
            unchecked.append((f"metrics {name}", "card vs a retrained baseline", "-",
                              "not checked: a trained network, re-derived only with --retrain", None))
        elif name not in predictors:
            missing = "settings not recorded in the card" if name in ("composition_gbm", NON_EQUIVARIANT) else \
                "a baseline this code does not know"
            unchecked.append((f"metrics {name}", "card vs refitted baseline", "re-derivable", missing, False))
        else:
            with step(f"fitting the {name} baseline" + (" (training a network)" if name == NON_EQUIVARIANT else "")):
                predictions[name] = predictors[name]()
    if retrain:
        settings = _cpu(TrainSettings.from_params(
            {key: value for key, value in info["training"].items() if key != "profile"}))
        with step(f"retraining {info['model_name']} with the recorded settings (seed {settings.seed}, up to "
                  f"{settings.max_epochs} epochs on {settings.accelerator})"):
            result = training.fit_model(data, settings)
        _weight_check(report, loaded.net, result.net)
        predictions[RETRAINED_KEY] = evaluation.predict(result.net, test)
    infos = None
    if spec.is_tensor:
        with step("symmetry analysis of the test structures"):
            infos = [symmetry.analyze(structure) for structure in test.structures]
    overall, per_system, _, _ = evaluation.score(spec.name, predictions, test, infos)

    # The model's claims: its metrics, the test-split size and the headline value `zoo info` shows.
    headline = card.get("headline_metric") or {}
    model_claims = {**test_metrics.get("model", {}), "n_test": test_metrics.get("n_test"),
                    f"headline_metric {headline.get('name')}": headline.get("value")}

    def recomputed(key: str) -> dict[str, Any]:
        return {**overall[key], "n_test": len(test), f"headline_metric {test_metrics.get('headline')}":
                overall[key].get(test_metrics.get("headline"))}

    systems = test_metrics.get("per_crystal_system") or {}
    compare = functools.partial(_compare, report, show=_printer(test_metrics))
    compare(MODEL_KEY, "card vs the checkpoint re-evaluated on the test split", model_claims,
             systems.get(MODEL_KEY, {}), recomputed(MODEL_KEY), per_system[MODEL_KEY], None)
    how = {"crystal_system_mean": "refitted on the train split", "composition_gbm": "refitted with the recorded "
           "GBM settings", NON_EQUIVARIANT: "retrained with the recorded settings"}
    for name, claims in claimed_baselines.items():
        if name in overall:
            compare(name, f"card vs the baseline {how[name]}", claims, systems.get(name, {}), overall[name],
                     per_system[name], RETRAIN_RTOL if name == NON_EQUIVARIANT else None)
    if retrain:
        compare(RETRAINED_KEY, "card vs the model retrained with the recorded settings", model_claims,
                 systems.get(MODEL_KEY, {}), recomputed(RETRAINED_KEY), per_system[RETRAINED_KEY], RETRAIN_RTOL)
    for row in unchecked:
        report.add(*row)


def _cpu(settings: TrainSettings) -> TrainSettings:
    """The recorded settings for a retraining here: 'auto' resolved to the CPU (where runs are bit-identical), no
    progress bar (it would fight the audit's own display; it does not touch the numbers)."""
    return dataclasses.replace(settings, progress_bar=False,
                               accelerator="cpu" if settings.accelerator == "auto" else settings.accelerator)


def _weight_check(report: Report, original, retrained) -> None:
    """The retrained network against the checkpoint: same ModelConfig (which training derives partly from the
    data), then the largest absolute difference over all weights."""
    config = dataclasses.asdict(retrained.config)
    config_differs = sorted(k for k, v in dataclasses.asdict(original.config).items() if config[k] != v)
    if config_differs:
        report.add("retrain weights", "retrained vs checkpoint", "the same ModelConfig",
                   f"ModelConfig differs in {', '.join(config_differs)}", False)
        return
    ours, theirs = original.state_dict(), retrained.state_dict()
    largest = max((float((ours[k].double() - theirs[k].double()).abs().max()) for k in ours if ours[k].numel()),
                  default=0.0)
    report.add("retrain weights", f"retrained vs checkpoint, {len(ours)} tensors",
               "bit-identical (max |dw| = 0: same seed, deterministic CPU kernels)", f"max |dw| = {largest:.3g}",
               largest == 0.0)


def _compare(report: Report, name: str, compared: str, claims: Mapping[str, Any], system_claims: Mapping[str, Any],
             overall: Mapping[str, Any], per_system: Mapping[str, Any], rtol: float | None, *,
             show: Callable[[Mapping[str, Any], str], str]) -> None:
    """Two rows: the overall metrics and the per-crystal-system ones of `name`, card vs recomputed, as `show`
    prints them (rtol None) or within rtol (retrained networks)."""
    flat_claims = {f"{system} {metric}": value for system, scores in system_claims.items()
                   for metric, value in scores.items()}
    flat_found = {f"{system} {metric}": value for system, scores in per_system.items()
                  for metric, value in scores.items()}
    for label, claimed, found in ((f"metrics {name}", claims, overall),
                                  (f"metrics {name} per crystal system", flat_claims, flat_found)):
        differences, largest = [], 0.0
        for key, value in claimed.items():
            if key not in found:
                differences.append((key, show(claimed, key), "not computed"))
                continue
            if rtol is None:
                same = show(claimed, key) == show(found, key)
            else:
                delta = _relative_delta(value, found[key])
                largest = max(largest, delta)
                same = delta <= rtol
            if not same:
                differences.append((key, show(claimed, key), show(found, key)))
        if rtol is None:
            expected = _listed([d[:2] for d in differences]) or f"{len(claimed)} values as the card prints them"
            shown = _listed([(d[0], d[2]) for d in differences]) or "all equal"
        else:
            expected = _listed([d[:2] for d in differences]) or f"{len(claimed)} values within rel. {rtol:g}"
            shown = _listed([(d[0], d[2]) for d in differences]) or f"max rel. difference {largest:.2g}"
        report.add(label, compared, expected, shown, bool(claimed) and not differences)


def _relative_delta(claimed: Any, found: Any) -> float:
    if claimed is None or found is None:
        return 0.0 if claimed is found else math.inf
    scale = max(abs(claimed), abs(found))
    return 0.0 if scale == 0 else abs(claimed - found) / scale


# ------------------------------------------------------------------------------------------------ dataset
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

    tables = {split: pq.read_table(folder / dataset_schema.parquet_path(split)) for split in splits.SPLITS}
    return dataset_schema.content_fingerprint(spec.dataset_name, dataset_schema.dataset_features(spec), tables)


def _dataset_checks(report: Report, folder: Path, spec: properties.PropertySpec, step: Step,
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
        _file_check(report, f"dataset file {relative}", f"sha256 vs {where}", folder / relative, expected)
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
    entry = model_card.dvc_lock_entry(project / LOCK_FILE, stage) or {}
    return next((out.get("md5") for out in entry.get("outs") or [] if out.get("path") == path), None)


def _lock_check(report: Report, project: Path, folder: Path, spec: properties.PropertySpec, step: Step) -> str:
    """dvc.lock's md5 of the build output vs the workspace's (not checked without a lock entry); returns the
    workspace's."""
    path = (zoo_datasets.HUB_DATASETS_DIR / spec.dataset_name).as_posix()
    with step(f"hashing {path} as DVC does"):
        workspace = dvc_md5(folder)
    stage = f"build@{spec.name}"
    locked = lock_output_md5(project, stage, path)
    report.add("dvc.lock", f"md5 of {path} in dvc.lock ({stage}) vs the workspace",
               locked or f"no {stage} output in {project / LOCK_FILE}", workspace,
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
                  store: str | os.PathLike | None = None, step: Step = _quiet) -> Report:
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
            _file_check(report, f"file {relative}", f"sha256 vs versions.json of the local store {local.root}",
                        folder / relative, expected)
        _dataset_checks(report, folder, spec, step)
        return report
    report = Report(f"dataset {spec.dataset_name}")
    folder = local_build(project, spec, report, step)
    built = json.loads((folder / dataset_schema.VERSION_FILE).read_text(encoding="utf-8")).get("version")
    if version is not None and built != version:
        raise registry.VersionNotFoundError(
            f"{spec.dataset_name} {version} is neither in the local store (versions "
            f"{sorted(stored, key=version_key) or 'none'}) nor the local build ({folder}: version {built})")
    report.subject = f"dataset {spec.dataset_name} {built} (local build: {folder})"
    _dataset_checks(report, folder, spec, step)
    _lock_check(report, project, folder, spec, step)
    return report
