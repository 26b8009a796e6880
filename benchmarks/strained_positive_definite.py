"""Positive definiteness of an elastic model's predictions on MP-like structures it never saw: the 2015 snapshot's
cells, randomly strained by up to 5% (issue 11's acceptance check), and the dataset's external split.

    python benchmarks/strained_positive_definite.py [--model matten-elastic] [--version 1.1.0] [--n 1000]
                                                    [--max-strain 0.05] [--seed 0]

Cells: the matminer-2015 records of the built elastic dataset (all splits; `dvc repro build@elastic`), drawn with a
seeded generator (with replacement when n exceeds them). Each gets a random symmetric strain e with every
component uniform in [-max_strain, max_strain]: lattice rows a -> a (I + e), fractional coordinates kept.
Prints the number of predicted stiffness tensors whose smallest eigenvalue is not positive, and the smallest
eigenvalue relative to the largest.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

import zoo
from zoo import properties
from zoo.data import datasets

SNAPSHOT_2015 = properties.get("elastic").snapshot.file  # the 2015 snapshot's cells


def strained_snapshot_cells(n: int, max_strain: float, seed: int) -> list[Structure]:
    dataset = datasets.load_local("elastic")
    rows = []
    for split in dataset:
        table = dataset[split].select_columns(["lattice", "species", "frac_coords", "source_file"]).to_dict()
        rows += [dict(zip(table, values)) for values in zip(*table.values()) if values[-1] == SNAPSHOT_2015]
    rng = np.random.default_rng(seed)
    cells = []
    for index in rng.choice(len(rows), size=n, replace=n > len(rows)):
        structure = datasets.row_structure(rows[index])
        strain = rng.uniform(-max_strain, max_strain, size=(3, 3))
        strain = (strain + strain.T) / 2
        lattice = Lattice(structure.lattice.matrix @ (np.eye(3) + strain))
        cells.append(Structure(lattice, structure.species, structure.frac_coords))
    return cells


def report(label: str, predictions) -> None:
    voigt = np.stack([np.asarray(p.value.voigt) for p in predictions])
    eigenvalues = np.linalg.eigvalsh(voigt)
    ratio = eigenvalues[:, 0] / np.abs(eigenvalues).max(axis=1)
    print(f"{label}: {len(voigt)} predictions, {int((eigenvalues[:, 0] <= 0).sum())} not positive definite; "
          f"smallest eigenvalue {eigenvalues[:, 0].min():.3g} GPa, smallest min/max ratio {ratio.min():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="matten-elastic")
    parser.add_argument("--version", default=None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--max-strain", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.load(args.model, version=args.version)
    print(f"{model.name} {model.version} ({model.source})")
    report(f"2015 snapshot cells strained by up to {args.max_strain:.0%}",
           model.predict(strained_snapshot_cells(args.n, args.max_strain, args.seed)))
    external = datasets.load_local("elastic").get("external")
    if external is not None:
        table = external.select_columns(["lattice", "species", "frac_coords"]).to_dict()
        structures = [datasets.row_structure(dict(zip(table, values))) for values in zip(*table.values())]
        report("external split", model.predict(structures))


if __name__ == "__main__":
    main()
