"""The release stage (releases/dvc.yaml, `make release`): train, evaluate and ship one property's model with the code.

`release@<property>` reads params.yaml's `release` section (zoo.core.config.ReleaseConfig: the training profile and
the property's version) and, in one command:

1. records its lineage (zoo.release.lineage.stage_lineage): the md5 of every dependency as DVC computes it, and its
   params. Its dvc.lock entry is written only when the stage ends, so the card records these; DVC hashes the same
   files again at the end and the lock holds the same values (`zoo audit` compares them);
2. trains with the profile into data/releases/models/ (an interrupted run continues from
   data/releases/models/.resume/ when rerun, as the train stage's does from data/models/.resume/; a run of the
   train stage in between does not touch it);
3. evaluates into data/releases/reports/ (metrics, per-crystal-system tables, plots) with the model's baselines;
4. ships zoo/releases/<model>/<version>/ (model.safetensors, config.json, README.md: the card with the metrics and
   the lineage) and adds its entry to zoo/registry.json (zoo.release.publishing, target 'shipped').

The shipped folder is the stage's DVC output, tracked by git (cache: false) and never deleted by DVC before a rerun
(persist: true), so a fresh clone has it and `dvc status` compares it with releases/dvc.lock. zoo/registry.json is
shared by the four stages, so it is nobody's DVC output: each stage adds its own entry, in deterministic bytes
(sorted JSON), and tests/test_releases.py checks every entry against its folder's files.

A version is shipped once. A rerun (its code or data changed, or `dvc repro --force`) must reproduce the shipped
weights and config byte for byte: then nothing is written (the card keeps the first run's lineage) and the lock
records the new run. Any other model is refused: a new release is a new version in `release.versions`, i.e. a new
output folder, the old one staying in git as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo import properties
from zoo.core import config
from zoo.nn import pipeline
from zoo.release import publishing, registry
from zoo.release.lineage import stage_lineage

RELEASE_PIPELINE = "releases/dvc.yaml"
# Where the stage trains and evaluates, beside the pipeline's data/models and data/reports (not DVC outputs: the
# stage's output is the shipped folder). Paths are relative to the project root, where DVC runs the stage.
WORK_DIR = Path("data/releases")
REGISTRY_FILE = Path("zoo/registry.json")
STAGE_ERRORS = publishing.PUBLISH_ERRORS


def stage_address(property_name: str) -> str:
    """DVC's address of a property's release stage."""
    return f"{RELEASE_PIPELINE}:release@{property_name}"


def release_targets(params: config.Params) -> list[str]:
    """The DVC addresses of the release stages params.yaml lists (release.versions: the releases that are made)."""
    return [stage_address(name) for name in params.release.versions]


def release_settings(params: config.Params, property_name: str) -> tuple[str, str]:
    """(training profile, version) of a property's release; ValueError naming what is missing."""
    release = params.release
    if property_name not in release.versions:
        raise ValueError(f"release.versions has no version for {property_name!r} (params.yaml)")
    if release.profile not in params.train.profiles:
        raise ValueError(f"release.profile {release.profile!r} is none of train.profiles "
                         f"({', '.join(params.train.profiles)})")
    return release.profile, release.versions[property_name]


def release_stage(property_name: str, params_path: Path, say: Callable[[str], None] = print,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate and ship the release of `property_name` (module docstring); returns the publish report.
    Raises STAGE_ERRORS (a shipped version with other weights among them)."""
    spec = properties.get(property_name)
    params = config.load(params_path)
    profile, version = release_settings(params, spec.name)
    shipped = registry.read_registry(REGISTRY_FILE).models.get(spec.model_name)
    if shipped is not None and version in shipped.releases:
        say(f"release {spec.name}: {spec.model_name} {version} is already shipped: this run must reproduce its weights "
            f"and config byte for byte, or it is refused (a new release is a new release.versions.{spec.name})")
    lineage = stage_lineage(".", stage_address(spec.name))
    models_root, reports_dir = WORK_DIR / "models", WORK_DIR / "reports"
    pipeline.train_stage(spec.name, params_path, profile, say, models_root=models_root, live_dir=reports_dir / "train")
    pipeline.evaluate_stage(spec.name, params_path, profile, say, log, models_root=models_root,
                            reports_dir=reports_dir)
    report = publishing.publish_property(
        spec.name, version=version, target=publishing.SHIPPED, organisation=params.publish.hub.organisation,
        models_root=models_root, reports_dir=reports_dir, lineage=lineage, registry_path=REGISTRY_FILE)
    model = report["model"]
    state = "shipped" if model["published"] else "already shipped with identical weights and config: unchanged"
    say(f"release {spec.name}: {model['name']} {version} {state} -> {model['path']}")
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m zoo.release.shipping [params.yaml]` (make release): the release stages to reproduce, one a line;
    none is an error, because `dvc repro` with a target that names no stage reproduces the whole default pipeline
    (dvc.yaml, models included) instead of nothing (DVC 3.67)."""
    args = sys.argv[1:] if argv is None else argv
    params_path = Path(args[0]) if args else Path("params.yaml")
    targets = release_targets(config.load(params_path))
    if not targets:
        print(f"release.versions in {params_path} lists no release: add `<property>: \"<version>\"` to make one "
              "(README, section Releases)", file=sys.stderr)
        return 1
    print("\n".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
