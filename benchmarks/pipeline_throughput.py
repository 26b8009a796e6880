"""Records per second of the fetch, clean and validate stages on the whole snapshot, run as DVC runs them.

Each stage runs as its own process per property, in a scratch directory (the repository's data/ is not
touched). Start-up (interpreter + imports) is measured in the same run and reported as a share of each
stage's time, since on 2 cores it is a large part of the total.
Usage: python benchmarks/pipeline_throughput.py [--snapshot ../shared/datasets]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STAGES = ("fetch", "clean", "validate")
STAGE_IMPORTS = {"fetch": "zoo.data.sources.snapshot", "clean": "zoo.data.cleaning", "validate": "zoo.data.validation"}
PROPERTIES = ("elastic", "dielectric", "piezo", "phonon")


def run(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    from zoo.data.sources.snapshot import locate_root  # where fetch finds it

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", type=Path, default=locate_root())
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fetch"]["snapshot_root"] = str(args.snapshot.resolve())
    with tempfile.TemporaryDirectory(prefix="mptz-bench-") as scratch:
        work = Path(scratch)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        startup = {stage: run([sys.executable, "-c", f"import {module}"], work)
                   for stage, module in STAGE_IMPORTS.items()}
        timings: dict[str, dict[str, float]] = {stage: {} for stage in STAGES}
        for stage in STAGES:
            for prop in PROPERTIES:
                timings[stage][prop] = run([sys.executable, str(REPO / "stages" / f"{stage}.py"), prop,
                                            "--params", str(work / "params.yaml")], work)
        counts = {prop: json.loads((work / "data" / "reports" / f"{prop}-validation.json").read_text())["n_raw"]
                  for prop in PROPERTIES}
    total_records = sum(counts.values())
    print(f"cores: {os.cpu_count()}; records: {counts} ({total_records} in all)")
    for stage in STAGES:
        seconds = sum(timings[stage].values())
        per_prop = ", ".join(f"{p} {timings[stage][p]:.1f} s" for p in PROPERTIES)
        print(f"{stage:>8}: {total_records / seconds:7.0f} records/s, {seconds:6.1f} s ({per_prop}); "
              f"start-up {startup[stage]:.1f} s per process = {len(PROPERTIES) * startup[stage] / seconds:.0%} of it")
    total = sum(sum(t.values()) for t in timings.values())
    print(f"fetch + clean + validate, all four properties: {total:.1f} s (target: under 120 s)")


if __name__ == "__main__":
    main()
