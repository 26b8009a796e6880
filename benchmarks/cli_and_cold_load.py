"""How long a user waits: the `zoo` commands and a cold `zoo.load("matten-elastic")` + first prediction, each in a
fresh process, against same-run baselines (issue 13: under 1 s for the fast commands, under 3 s for load + predict).

Each command runs `--repeats` times (default 5), interleaved with the others so that load from other jobs on a
shared machine hits them alike; the table gives the median wall time, and the median CPU time of the process
(user + system, steadier than the wall time on a busy machine). Baselines, measured in the same rounds:
    python -c pass          the interpreter's start
    python -c "import torch"  the floor of any process that runs a network (torch alone)
The last column is the ratio of each median wall time to the torch baseline's. The machine (CPUs, load average)
is printed first.

Usage: python benchmarks/cli_and_cold_load.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the Makefile and the tests: no spinning OpenMP workers

PYTHON = sys.executable
ZOO = str(Path(PYTHON).with_name("zoo"))
COLD_PREDICT = """
from pymatgen.core import Lattice, Structure
import zoo
model = zoo.load("matten-elastic")
nacl = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                 [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
prediction = model.predict(nacl)
assert prediction.derived["k_vrh"] > 0
"""
COMMANDS = {
    "python -c pass (baseline)": [PYTHON, "-c", "pass"],
    "python -c 'import torch' (baseline)": [PYTHON, "-c", "import torch"],
    "zoo --version": [ZOO, "--version"],
    "zoo list": [ZOO, "list"],
    "zoo list --json": [ZOO, "list", "--json"],
    "zoo info nosuchmodel": [ZOO, "info", "nosuchmodel"],
    "zoo info matten-elastic": [ZOO, "info", "matten-elastic"],
    "zoo --help": [ZOO, "--help"],
    "cold zoo.load + first predict": [PYTHON, "-c", COLD_PREDICT],
}
TORCH = "python -c 'import torch' (baseline)"


def run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # `zoo info nosuchmodel` is meant to exit 1
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cpu_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "?"
    print(f"machine: {os.cpu_count()} CPUs ({cpu_name}); load average before: "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for command in COMMANDS.values():  # warm the file cache once; not counted
        run(command)
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            wall, cpu = run(command)
            walls[name].append(wall)
            cpus[name].append(cpu)
    torch_wall = statistics.median(walls[TORCH])
    width = max(map(len, COMMANDS))
    print(f"\n{'command':<{width}}  median wall s  (all runs)                        median CPU s  wall / torch")
    for name in COMMANDS:
        wall = statistics.median(walls[name])
        runs = " ".join(f"{w:.2f}" for w in walls[name])
        print(f"{name:<{width}}  {wall:13.2f}  ({runs:<32})  {statistics.median(cpus[name]):12.2f}  "
              f"{wall / torch_wall:12.2f}")
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
