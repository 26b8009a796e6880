"""Training and inference throughput of zoo.nn.models, against same-run baselines, on snapshot structures.

What it measures (each model size in its own child process, so start-up and peak memory are its own):
- graph building (zoo.nn.graphs.build_graph) and the on-disk graph cache;
- start-up: `import zoo.nn.models`, building the model and the change of basis predict_cartesian needs;
- training: Adam steps on random mini-batches (MSE against random targets) in three pipelines run in
  alternation, so machine noise hits them alike:
    cached    - whole data set collated once, fixed edge geometry attached once, mini-batches by ``select``
    geometry  - the same, but spherical harmonics and radial basis recomputed every step
    naive     - mini-batches collated from per-structure graphs and geometry computed every step
- inference end to end (graphs built from Structures, collated, predicted) at batch 32 and 200;
- peak resident memory of the child process.
Rates are given per wall-clock second and per CPU-second of the process: on a machine shared with other jobs the
second is the steadier figure (with one thread it approximates the wall time on an idle core).
Structures: the elastic snapshot (../shared/datasets, the set REFERENCE.md's MatTen timings used) if present,
otherwise tests/data/structures replicated.

Usage: python benchmarks/model_throughput.py [--n 1000] [--steps 6] [--sizes cpu,matten] [--threads N]
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

from zoo.core import environment  # noqa: E402
from zoo.data.sources.snapshot import locate_root  # noqa: E402

# torch's OpenMP workers spin while waiting by default; on a 2-core machine shared with other processes that
# made training steps 5x slower or worse in our measurements. Passive waiting (environment.env) must be chosen
# before torch is imported.
environment.apply()

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = locate_root() / "matminer-0.4.1" / "elastic_tensor.csv"
TEST_STRUCTURES = ROOT / "tests" / "data" / "structures"
R_CUT = 5.0
PROPERTY_NAMES = ("elastic", "dielectric", "piezo", "phonon")
# REFERENCE.md: the MatTen reference implementation on this machine type (2 cores, its published config).
MATTEN_REFERENCE = {"train_structures_per_s": 7.6, "train_edges_per_s": 3200, "infer_32_per_s": 24,
                    "infer_200_per_s": 17, "startup_s": 12.0, "peak_memory_gb": 5.4}


def load_structures(n: int):
    import pandas as pd
    from pymatgen.core import Structure

    if SNAPSHOT.exists():
        frame = pd.read_csv(SNAPSHOT, comment="#", usecols=["structure"], nrows=n)
        structures = [Structure.from_str(text, fmt="cif") for text in frame["structure"]]
        return structures, f"elastic snapshot ({SNAPSHOT.name})"
    base = [Structure.from_file(path) for path in sorted(TEST_STRUCTURES.glob("*.cif"))]
    return [base[i % len(base)] for i in range(n)], f"{len(base)} test structures replicated"


def build_graphs(structures) -> tuple[list, float]:
    from zoo.nn import graphs

    start = time.perf_counter()
    built = [graphs.build_graph(s, R_CUT) for s in structures]
    return built, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ child side
def model_config(size: str, property_name: str, average_neighbors: float):
    from zoo.nn.models import ModelConfig

    if size == "matten":
        return ModelConfig.matten_reference(property_name, avg_num_neighbors=average_neighbors)
    return ModelConfig(property_name, avg_num_neighbors=average_neighbors)


def measure_training(model, graph_list, full, steps: int, batch_size: int, seed: int = 0) -> dict:
    import numpy as np
    import torch

    from zoo.nn.graphs import GraphBatch

    cached = model.attach_geometry(full)
    pipelines = {
        "cached": lambda index: cached.select(index),
        "geometry": lambda index: full.select(index),
        "naive": lambda index: GraphBatch.collate([graph_list[i] for i in index]),
    }
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randn(len(graph_list), model.irreps_out.dim, dtype=model.dtype, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = {name: [] for name in pipelines}
    cpu_times = {name: 0.0 for name in pipelines}
    edges = {name: 0 for name in pipelines}
    for step in range(steps + 1):  # step 0 warms up allocator and caches, not timed
        index = rng.choice(len(graph_list), size=batch_size, replace=False)
        for name, make_batch in pipelines.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            batch = make_batch(index)
            loss = ((model(batch) - targets[index]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step:
                times[name].append(time.perf_counter() - start)
                cpu_times[name] += time.process_time() - cpu_start
                edges[name] += batch.n_edges
    result = {}
    for name in pipelines:
        total = sum(times[name])
        result[name] = {"structures_per_s": steps * batch_size / total, "edges_per_s": edges[name] / total,
                        "structures_per_cpu_s": steps * batch_size / cpu_times[name],
                        "edges_per_cpu_s": edges[name] / cpu_times[name],
                        "median_step_s": float(np.median(times[name]))}
    return result


def measure_inference(model, structures, batch_size: int) -> dict:
    """Structures per second and per CPU-second, from Structure objects to Cartesian predictions (graphs included)."""
    import torch

    from zoo.nn import graphs

    model.eval()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for first in range(0, len(structures), batch_size):
            chunk = structures[first : first + batch_size]
            batch = graphs.GraphBatch.collate([graphs.build_graph(s, model.config.r_cut) for s in chunk])
            model.predict_cartesian(batch)
    model.train()
    return {"per_s": len(structures) / (time.perf_counter() - start),
            "per_cpu_s": len(structures) / (time.process_time() - cpu_start)}


def worker(args) -> None:
    """One model size in a fresh process: start-up, training per property, inference, peak memory."""
    started = time.perf_counter()
    import resource

    import torch

    from zoo.core import tensors
    from zoo.nn import models

    imported = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pymatgen.core import Structure

    from zoo.nn import graphs

    graph_list = list(graphs.load_graphs(args.graph_file, R_CUT).values())
    structures = [Structure.from_dict(d) for d in json.loads(Path(args.structure_file).read_text())]
    average = graphs.average_neighbors(graph_list)
    full = graphs.GraphBatch.collate(graph_list)
    report = {"threads": torch.get_num_threads(), "properties": {}}
    for property_name in args.properties.split(","):
        config = model_config(args.size, property_name, average)
        build_start = time.perf_counter()
        model = models.MattenNet(config)
        build_s = time.perf_counter() - build_start
        entry = {"parameters": sum(p.numel() for p in model.parameters()), "build_s": build_s,
                 "config": json.loads(config.to_json())}
        if not report["properties"]:
            # predict_cartesian's change of basis is built once per process (zoo.core.tensors caches it): start-up.
            basis_start = time.perf_counter()
            tensors.change_of_basis(model.spec.formula)
            report["change_of_basis_s"] = time.perf_counter() - basis_start
            report["startup_s"] = imported - started + build_s + report["change_of_basis_s"]
            report["import_s"] = imported - started
        geometry_start = time.perf_counter()
        model.attach_geometry(full)
        entry["attach_geometry_s"] = time.perf_counter() - geometry_start
        entry["training"] = measure_training(model, graph_list, full, args.steps, args.batch)
        if property_name == "elastic":
            subset = structures[: args.infer]
            entry["inference"] = {str(b): measure_inference(model, subset, b) for b in (32, 200)}
        report["properties"][property_name] = entry
    report["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps(report))


# ----------------------------------------------------------------------------------------------- parent side
def print_size(size: str, report: dict, n_train: int) -> None:
    print(f"\n== {size} model ({report['threads']} torch threads): start-up {report['startup_s']:.1f} s "
          f"(imports {report['import_s']:.1f} s, change of basis {report['change_of_basis_s']:.1f} s), "
          f"peak memory {report['peak_memory_gb']:.2f} GB")
    for property_name, entry in report["properties"].items():
        training = entry["training"]
        cached = training["cached"]
        print(f"  {property_name:10s} {entry['parameters']:>9,} parameters, build {entry['build_s']:.1f} s; training "
              f"{cached['structures_per_s']:6.1f} structures/s = {cached['edges_per_s']:7.0f} edges/s "
              f"(per CPU-second: {cached['structures_per_cpu_s']:.1f} = {cached['edges_per_cpu_s']:.0f}); "
              f"epoch of {n_train} ~ {n_train / cached['structures_per_s']:.0f} s")
        geometry, naive = training["geometry"], training["naive"]
        print(f"  {'':10s} cached geometry vs recomputed each step: "
              f"x{cached['edges_per_cpu_s'] / geometry['edges_per_cpu_s']:.2f} per CPU-s "
              f"(x{cached['edges_per_s'] / geometry['edges_per_s']:.2f} wall); vs naive per-step collation + geometry: "
              f"x{cached['edges_per_cpu_s'] / naive['edges_per_cpu_s']:.2f} per CPU-s "
              f"(x{cached['edges_per_s'] / naive['edges_per_s']:.2f} wall); attaching once took "
              f"{entry['attach_geometry_s']:.2f} s")
        if "inference" in entry:
            rates = entry["inference"]
            print(f"  {'':10s} inference end to end: {rates['32']['per_s']:.1f} structures/s at batch 32, "
                  f"{rates['200']['per_s']:.1f} at batch 200 (per CPU-second {rates['32']['per_cpu_s']:.1f}, "
                  f"{rates['200']['per_cpu_s']:.1f})")


def compare_with_matten(report: dict) -> None:
    entry = report["properties"]["elastic"]
    cached = entry["training"]["cached"]
    ref = MATTEN_REFERENCE
    inference = entry["inference"]
    rows = [
        ("training structures/s", cached["structures_per_s"], cached["structures_per_cpu_s"],
         ref["train_structures_per_s"], "target >= 1.5x"),
        ("training edges/s", cached["edges_per_s"], cached["edges_per_cpu_s"], ref["train_edges_per_s"],
         "target >= 1.5x"),
        ("inference /s, batch 32", inference["32"]["per_s"], inference["32"]["per_cpu_s"], ref["infer_32_per_s"],
         "target >= 2x"),
        ("inference /s, batch 200", inference["200"]["per_s"], inference["200"]["per_cpu_s"], ref["infer_200_per_s"],
         "target >= 2x"),
        ("start-up s", report["startup_s"], None, ref["startup_s"], "target < 3 s"),
        ("peak memory GB", report["peak_memory_gb"], None, ref["peak_memory_gb"], "target <= 0.5x"),
    ]
    print("\n== MatTen-size elastic model vs REFERENCE.md's MatTen reference implementation (same machine type)")
    print(f"  {'':24s} {'ours (wall)':>12s} {'per CPU-s':>10s} {'MatTen':>9s} {'ratio':>7s}")
    for name, ours, per_cpu, theirs, target in rows:
        cpu_text = f"{per_cpu:10.1f}" if per_cpu is not None else f"{'':10s}"
        print(f"  {name:24s} {ours:12.1f} {cpu_text} {theirs:9.1f} {ours / theirs:6.2f}x   ({target})")


def main() -> None:
    # Longer than ~60 lines: the arguments, the shared graph timings, then one worker process per model size, in
    # the order the report prints them.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures in the data set")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per pipeline")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--infer", type=int, default=400, help="structures predicted per inference batch size")
    parser.add_argument("--sizes", default="cpu,matten", help="comma-separated: cpu (our default), matten")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--properties", help=argparse.SUPPRESS)
    parser.add_argument("--graph-file", help=argparse.SUPPRESS)
    parser.add_argument("--structure-file", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from zoo.nn import graphs

    print(f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); load average {os.getloadavg()[0]:.1f}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    start = time.perf_counter()
    structures, source = load_structures(args.n)
    print(f"{len(structures)} structures from {source}, parsed in {time.perf_counter() - start:.1f} s")
    graph_list, build_s = build_graphs(structures)
    print(f"graphs at r_cut {R_CUT} A: {len(structures) / build_s:,.0f} structures/s; "
          f"{sum(g.n_edges for g in graph_list) / len(graph_list):.0f} edges per structure, "
          f"{graphs.average_neighbors(graph_list):.1f} neighbours per atom")
    n_train = int(0.8 * len(structures))
    with tempfile.TemporaryDirectory() as scratch:
        graph_file = Path(scratch) / "graphs.safetensors"
        keyed = {graphs.structure_key(s, R_CUT): g for s, g in zip(structures, graph_list)}
        start = time.perf_counter()
        graphs.save_graphs(graph_file, keyed, R_CUT)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        graphs.load_graphs(graph_file, R_CUT)
        print(f"graph cache on disk: {graph_file.stat().st_size / 1e6:.1f} MB, saved in {saved:.2f} s, "
              f"loaded in {time.perf_counter() - start:.2f} s (building took {build_s:.2f} s)")
        structure_file = Path(scratch) / "structures.json"
        structure_file.write_text(json.dumps([s.as_dict() for s in structures]))
        reports = {}
        for size in args.sizes.split(","):
            property_list = ",".join(PROPERTY_NAMES) if size == "cpu" else "elastic"
            command = [sys.executable, __file__, "--worker", "1", "--size", size, "--properties", property_list,
                       "--graph-file", str(graph_file), "--structure-file", str(structure_file),
                       "--steps", str(args.steps), "--batch", str(args.batch), "--infer", str(args.infer),
                       "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{size} worker failed:\n{done.stderr[-4000:]}")
            reports[size] = json.loads(done.stdout.strip().splitlines()[-1])
            print_size(size, reports[size], n_train)
    if "cpu" in reports:
        rates = [e["training"]["cached"]["structures_per_s"] for e in reports["cpu"]["properties"].values()]
        epoch = sum(n_train / rate for rate in rates)
        print(f"\ncpu profile: one epoch of {n_train} training structures for each of the four models ~ {epoch:.0f} s "
              f"(training steps only, these structures for every property)")
    if "matten" in reports:
        compare_with_matten(reports["matten"])


if __name__ == "__main__":
    main()
