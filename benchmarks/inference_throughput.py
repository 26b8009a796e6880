"""Inference throughput of a zoo model: structures/s of `model.predict` on Materials Project structures.

    python benchmarks/inference_throughput.py [--model matten-elastic] [--n 1000] [--batch-size 32] [--threads 1]

Structures: the first N records (all splits, in file order) of the built dataset of the model's property
(data/hub/datasets/mp-<property>-irreps; `dvc repro build@<property>`), repeated if the dataset is smaller.
Times `zoo.load` (warm: the second load in the process) and `predict` end to end: neighbour graphs, the network,
the pymatgen objects and the zoo.core.derived quantities (for elastic: the Young's modulus extrema over the sphere).
"""

from __future__ import annotations

import argparse
import time

import torch

import zoo
from zoo import datasets, properties


def mp_structures(property_name: str, n: int) -> list:
    dataset = datasets.load(property_name)
    rows = []
    for split in dataset:
        table = dataset[split].select_columns(["lattice", "species", "frac_coords"]).to_dict()
        rows += [dict(zip(table, values)) for values in zip(*table.values())]
    return [datasets.row_structure(rows[i % len(rows)]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="matten-elastic")
    parser.add_argument("--n", type=int, default=1000, help="structures (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    model = zoo.load(args.model)
    first_load = time.perf_counter() - started
    started = time.perf_counter()
    model = zoo.load(args.model)
    warm_load = time.perf_counter() - started
    structures = mp_structures(properties.get(model.property).name, args.n)
    atoms = sum(len(s) for s in structures)

    started = time.perf_counter()
    predictions = model.predict(structures, batch_size=args.batch_size)
    elapsed = time.perf_counter() - started
    undefined = sum(p.derived_error is not None for p in predictions)
    print(f"{model.name} {model.version} ({model.source}): zoo.load {first_load:.2f} s first, {warm_load:.2f} s warm")
    print(f"predict {len(structures)} MP structures ({atoms} atoms), batch {args.batch_size}, {args.threads} "
          f"thread(s): {elapsed:.1f} s = {len(structures) / elapsed:.1f} structures/s "
          f"({undefined} with undefined derived quantities)")


if __name__ == "__main__":
    main()
