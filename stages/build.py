"""DVC stage `build`: one property's accepted records -> a Hugging Face dataset repository folder.

    python stages/build.py <property> [--params params.yaml]

Reads data/clean/<property>.accepted.parquet and data/reports/<property>-validation.json (the validate stage's
outputs); writes data/hub/datasets/mp-<property>-irreps/ (README.md card, dataset_version.json,
data/{train,validation,test}-00000-of-00001.parquet), replacing the folder only once it is complete.

params.yaml, section `build`:
    dataset_version     semantic version written into the card, e.g. "1.0.0"
    split_salt          string mixed into sha256(salt:material_id); changing it reshuffles every split
    split_fractions     {train: 0.8, validation: 0.1, test: 0.1}
    pinned_splits_from  null; or {property: path} (a property not named pins nothing): a previous release's
                        dataset folder or pinned-splits JSON file (zoo.data.datasets.write_split_assignments),
                        relative to the params file, whose split assignments are kept, so that adding records moves
                        none (zoo.data.splits)
    workers             processes computing the derived quantities (1: in this process)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from zoo import properties
from zoo.core.params import load_section
from zoo.data import datasets, splits

console = Console(stderr=True, soft_wrap=True)

REQUIRED_KEYS = ("dataset_version", "split_salt")


def load_build_params(params_path: Path, prop: str) -> dict[str, Any]:
    """The `build` section of the params file, checked, with defaults for the optional keys."""
    section = load_section(params_path, "build", required=True)
    missing = [key for key in REQUIRED_KEYS if key not in section]
    if missing:
        raise ValueError(f"build section of {params_path} lacks {missing}")
    unknown = sorted(set(section) - set(REQUIRED_KEYS) - {"split_fractions", "pinned_splits_from", "workers"})
    if unknown:
        raise ValueError(f"build section of {params_path} has unknown keys {unknown}")
    workers = section.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"build.workers in {params_path} must be a positive integer, got {workers!r}")
    pinned = section.get("pinned_splits_from") or {}
    if not isinstance(pinned, dict) or not set(pinned) <= set(properties.PROPERTIES):
        raise ValueError(f"build.pinned_splits_from in {params_path} must map property names to paths, got {pinned!r}")
    pinned = pinned.get(prop)
    return {
        "version": datasets.check_version(section["dataset_version"]),
        "salt": section["split_salt"],
        "fractions": splits.check_fractions(section.get("split_fractions", splits.DEFAULT_FRACTIONS)),
        "pinned_from": None if pinned is None else params_path.parent / pinned,
        "workers": workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    accepted = Path("data/clean") / f"{args.property}.accepted.parquet"
    report = Path("data/reports") / f"{args.property}-validation.json"
    try:
        build_params = load_build_params(args.params, args.property)
        started = time.perf_counter()
        with console.status(f"build {args.property}: converting, deriving, writing ..."):
            result = datasets.build_dataset(
                args.property, accepted, report, datasets.HUB_DATASETS_DIR, **build_params
            )
        elapsed = time.perf_counter() - started
    except (ValueError, FileNotFoundError) as err:  # bad params, missing or inconsistent validate outputs
        console.print(f"[bold red]build {args.property} failed:[/] {err}")
        return 1
    deviations = splits.share_deviations(result.composition)
    worst = max((abs(v) for row in deviations.values() for v in row.values()), default=0.0)
    print(
        f"build {args.property}: {sum(result.counts.values())} rows "
        f"({', '.join(f'{name} {count}' for name, count in result.counts.items())}; "
        f"largest crystal-system share deviation {worst:.2f} pp) -> {result.path} "
        f"version {result.version} fingerprint {result.fingerprint} in {elapsed:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
