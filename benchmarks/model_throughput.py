"""Training and inference throughput of zoo.models, against same-run baselines, on snapshot structures.

What it measures (each model size in its own child process, so start-up and peak memory are its own):
- neighbour lists: vesin (zoo.graphs.build_graph, canonical order included) against pymatgen's get_neighbor_list;
- start-up: `import zoo.models` plus building the model;
- training: optimizer steps on random mini-batches (per-block normalised MSE against random targets) in three
  pipelines run in alternation, so machine noise hits them alike:
    cached    - whole data set collated once, fixed edge geometry attached once, mini-batches by ``select``
    geometry  - the same, but spherical harmonics and radial basis recomputed every step
    naive     - mini-batches collated from per-structure graphs and geometry computed every step
- inference end to end (graphs built from Structures, collated, predicted) at batch 32 and 200;
- peak resident memory of the child process.
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

# torch's OpenMP workers spin while waiting by default; on a 2-core machine shared with other processes that
# made steps up to 7x slower in our measurements. Passive waiting must be chosen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / ".." / "shared" / "datasets" / "matminer-0.4.1" / "elastic_tensor.csv"
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
        return [Structure.from_str(text, fmt="cif") for text in frame["structure"]], f"elastic snapshot ({SNAPSHOT.name})"
    base = [Structure.from_file(path) for path in sorted(TEST_STRUCTURES.glob("*.cif"))]
    return [base[i % len(base)] for i in range(n)], f"{len(base)} test structures replicated"


def neighbour_list_rates(structures) -> dict:
    from zoo import graphs

    start = time.perf_counter()
    built = [graphs.build_graph(s, R_CUT) for s in structures]
    vesin_s = time.perf_counter() - start
    start = time.perf_counter()
    pymatgen_edges = sum(len(s.get_neighbor_list(R_CUT)[0]) for s in structures)
    pymatgen_s = time.perf_counter() - start
    edges = sum(g.n_edges for g in built)
    if edges != pymatgen_edges:
        raise RuntimeError(f"vesin found {edges} edges, pymatgen {pymatgen_edges}")
    return {"vesin_s": vesin_s, "pymatgen_s": pymatgen_s, "edges_per_structure": edges / len(structures),
            "average_neighbors": graphs.average_neighbors(built), "graphs": built}


# ------------------------------------------------------------------------------------------------ child side
def model_config(size: str, property_name: str, average_neighbors: float):
    from zoo.models import ModelConfig

    if size == "matten":
        return ModelConfig.matten_reference(property_name, avg_num_neighbors=average_neighbors)
    return ModelConfig(property_name, avg_num_neighbors=average_neighbors)


def measure_training(model, graph_list, full, steps: int, batch_size: int, seed: int = 0) -> dict:
    import numpy as np
    import torch

    from zoo.graphs import GraphBatch

    cached = model.attach_geometry(full)
    pipelines = {
        "cached": lambda index: cached.select(index),
        "geometry": lambda index: full.select(index),
        "naive": lambda index: GraphBatch.collate([graph_list[i] for i in index]),
    }
    rng = np.random.default_rng(seed)
    targets = torch.randn(len(graph_list), model.irreps_out.dim, dtype=model.dtype, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = {name: [] for name in pipelines}
    edges = {name: 0 for name in pipelines}
    for step in range(steps + 1):  # step 0 warms up allocator and caches, not timed
        index = rng.choice(len(graph_list), size=batch_size, replace=False)
        for name, make_batch in pipelines.items():
            start = time.perf_counter()
            batch = make_batch(index)
            loss = ((model(batch) - targets[index]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step:
                times[name].append(time.perf_counter() - start)
                edges[name] += batch.n_edges
    result = {}
    for name in pipelines:
        total = sum(times[name])
        result[name] = {"structures_per_s": steps * batch_size / total, "edges_per_s": edges[name] / total,
                        "median_step_s": float(np.median(times[name]))}
    return result


def measure_inference(model, structures, batch_size: int) -> float:
    """Structures/s from Structure objects to Cartesian predictions (graph building included)."""
    import torch

    from zoo import graphs

    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(structures), batch_size):
            chunk = structures[first : first + batch_size]
            batch = graphs.GraphBatch.collate([graphs.build_graph(s, model.config.r_cut) for s in chunk])
            model.predict_cartesian(batch)
    model.train()
    return len(structures) / (time.perf_counter() - start)


def worker(args) -> None:
    """One model size in a fresh process: start-up, training per property, inference, peak memory."""
    started = time.perf_counter()
    import resource

    import torch

    from zoo import models

    imported = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pymatgen.core import Structure

    from zoo import graphs

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
            report["startup_s"] = imported - started + build_s
            report["import_s"] = imported - started
        geometry_start = time.perf_counter()
        model.attach_geometry(full)
        entry["attach_geometry_s"] = time.perf_counter() - geometry_start
        entry["training"] = measure_training(model, graph_list, full, args.steps, args.batch)
        if property_name == "elastic":
            subset = structures[: args.infer]
            entry["inference_per_s"] = {str(b): measure_inference(model, subset, b) for b in (32, 200)}
        report["properties"][property_name] = entry
    report["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps(report))


# ----------------------------------------------------------------------------------------------- parent side
def print_size(size: str, report: dict, n_train: int) -> None:
    print(f"\n== {size} model ({report['threads']} torch threads): start-up {report['startup_s']:.1f} s "
          f"(imports {report['import_s']:.1f} s), peak memory {report['peak_memory_gb']:.2f} GB")
    for property_name, entry in report["properties"].items():
        training = entry["training"]
        cached = training["cached"]
        print(f"  {property_name:10s} {entry['parameters']:>9,} parameters, build {entry['build_s']:.1f} s; training "
              f"{cached['structures_per_s']:6.1f} structures/s = {cached['edges_per_s']:7.0f} edges/s "
              f"(median step {cached['median_step_s']:.2f} s); epoch of {n_train} ~ "
              f"{n_train / cached['structures_per_s']:.0f} s")
        print(f"  {'':10s} cached geometry vs recomputed each step: x{cached['edges_per_s'] / training['geometry']['edges_per_s']:.2f}; "
              f"vs naive per-step collation + geometry: x{cached['edges_per_s'] / training['naive']['edges_per_s']:.2f} "
              f"(attach once: {entry['attach_geometry_s']:.2f} s)")
        if "inference_per_s" in entry:
            rates = entry["inference_per_s"]
            print(f"  {'':10s} inference end to end: {rates['32']:.1f} structures/s at batch 32, "
                  f"{rates['200']:.1f} at batch 200")


def compare_with_matten(report: dict) -> None:
    entry = report["properties"]["elastic"]
    cached = entry["training"]["cached"]
    ref = MATTEN_REFERENCE
    rows = [
        ("training structures/s", cached["structures_per_s"], ref["train_structures_per_s"], "target >= 1.5x"),
        ("training edges/s", cached["edges_per_s"], ref["train_edges_per_s"], "target >= 1.5x"),
        ("inference /s, batch 32", entry["inference_per_s"]["32"], ref["infer_32_per_s"], "target >= 2x"),
        ("inference /s, batch 200", entry["inference_per_s"]["200"], ref["infer_200_per_s"], "target >= 2x"),
        ("start-up s", report["startup_s"], ref["startup_s"], "target < 3 s"),
        ("peak memory GB", report["peak_memory_gb"], ref["peak_memory_gb"], "target <= 0.5x"),
    ]
    print("\n== MatTen-size elastic model vs REFERENCE.md's MatTen reference implementation (same machine type)")
    for name, ours, theirs, target in rows:
        print(f"  {name:24s} ours {ours:9.1f}   MatTen {theirs:9.1f}   ratio x{ours / theirs:5.2f}   ({target})")


def main() -> None:
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

    from zoo import graphs

    print(f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); load average {os.getloadavg()[0]:.1f}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    start = time.perf_counter()
    structures, source = load_structures(args.n)
    print(f"{len(structures)} structures from {source}, parsed in {time.perf_counter() - start:.1f} s")
    rates = neighbour_list_rates(structures)
    print(f"neighbour lists at r_cut {R_CUT} A: vesin {len(structures) / rates['vesin_s']:,.0f} structures/s, "
          f"pymatgen get_neighbor_list {len(structures) / rates['pymatgen_s']:,.0f} structures/s "
          f"(vesin x{rates['pymatgen_s'] / rates['vesin_s']:.1f}); {rates['edges_per_structure']:.0f} edges per "
          f"structure, {rates['average_neighbors']:.1f} neighbours per atom")
    n_train = int(0.8 * len(structures))
    with tempfile.TemporaryDirectory() as scratch:
        graph_file = Path(scratch) / "graphs.safetensors"
        keyed = {graphs.structure_key(s, R_CUT): g for s, g in zip(structures, rates["graphs"])}
        start = time.perf_counter()
        graphs.save_graphs(graph_file, keyed, R_CUT)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        graphs.load_graphs(graph_file, R_CUT)
        print(f"graph cache on disk: {graph_file.stat().st_size / 1e6:.1f} MB, saved in {saved:.2f} s, "
              f"loaded in {time.perf_counter() - start:.2f} s (building took {rates['vesin_s']:.2f} s)")
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
        epoch = sum(n_train / e["training"]["cached"]["structures_per_s"] for e in reports["cpu"]["properties"].values())
        print(f"\ncpu profile: one epoch of {n_train} training structures for each of the four models ~ {epoch:.0f} s "
              f"(training steps only, these structures for every property)")
    if "matten" in reports:
        compare_with_matten(reports["matten"])


if __name__ == "__main__":
    main()
