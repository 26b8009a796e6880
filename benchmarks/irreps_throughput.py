"""Irreps conversions per second for elastic tensors: one batched call against a per-tensor Python loop.

Both run in the same process on the same data, so the ratio is meaningful on a shared, noisy machine.
Usage: python benchmarks/irreps_throughput.py [--n 100000] [--loop-n 10000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from zoo.core import tensors
from zoo.properties import ELASTIC


def best_of(repeats: int, work):
    """Result and fastest wall time of `repeats` runs (the first run also pays for page faults)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return result, min(times)


def measure(n: int, loop_n: int, repeats: int = 5, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per input form ('voigt': 6x6 as stored in the datasets, 'cartesian': 3x3x3x3), batched vs looped rates."""
    rng = np.random.default_rng(seed)
    voigt = rng.normal(size=(n, 6, 6))
    voigt = voigt + np.swapaxes(voigt, -1, -2)
    inputs = {"voigt": voigt, "cartesian": tensors.stiffness_voigt_to_cartesian(voigt)}
    convert = {
        "voigt": lambda v: tensors.voigt_to_irreps(v, ELASTIC.voigt_kind, ELASTIC.formula),
        "cartesian": lambda t: tensors.cartesian_to_irreps(t, ELASTIC.formula),
    }
    results = {}
    for path, data in inputs.items():
        convert[path](data[:1])  # build the cached bases outside the timings
        batched, batched_s = best_of(repeats, lambda: convert[path](data))
        # The loop is timed on a prefix (it is slow) and checked against the batched result on the same rows.
        looped, loop_s = best_of(repeats, lambda: np.stack([convert[path](one) for one in data[:loop_n]]))
        np.testing.assert_allclose(looped, batched[:loop_n], rtol=0, atol=1e-10 * np.abs(batched).max())
        results[path] = {"batched_per_s": n / batched_s, "loop_per_s": loop_n / loop_s,
                         "ratio": (n / batched_s) / (loop_n / loop_s)}
    np.testing.assert_allclose(best_of(1, lambda: convert["voigt"](voigt))[0],
                               convert["cartesian"](inputs["cartesian"]), atol=1e-10 * np.abs(voigt).max())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="tensors converted in the batched call")
    parser.add_argument("--loop-n", type=int, default=10_000, help="tensors converted one at a time")
    args = parser.parse_args()
    results = measure(args.n, args.loop_n)
    print(f"cores: {os.cpu_count()}; {args.n:,} elastic tensors batched, {args.loop_n:,} one at a time")
    for path, figures in results.items():
        print(f"{path:>9} -> irreps: batched {figures['batched_per_s']:>12,.0f}/s  loop {figures['loop_per_s']:>9,.0f}/s"
              f"  ratio {figures['ratio']:.0f}x")


if __name__ == "__main__":
    main()
