"""A prepared check of training on a GPU: the `gpu` profile trained for a few epochs on every property, the trained
model's equivariance on the device in float32 and float64, and its throughput against the CPU in the same run.

    python benchmarks/gpu_check.py [--device cuda] [--profile gpu] [--epochs 3] [--steps 5] [--max-records N]
                                   [--properties elastic ...] [--datasets-root data/hub/datasets] [--report FILE]

Per property, in this order:
1. settings: ``select_profile(params.train, profile, property)`` (the profile's losses, ensemble size and model),
   with only what a check changes: max_epochs = --epochs, the accelerator of --device, one process, no progress bar;
2. training on the device with ``zoo.nn.training.fit_model`` on the built dataset (--max-records: the first N
   records of each split), every ensemble member;
3. equivariance on the device: 8 test structures, their atoms displaced by 0.05 A (so that no output is zero by
   symmetry), and the same rotated by a random rotation R; the error is max |f(R x) - R.f(x)| / max |R.f(x)| over
   the structures (the DOS: f(x) for R.f(x)), for the trained network in float32 and a float64 copy of it (pass:
   below FLOAT32_RTOL and FLOAT64_RTOL), and, for information on CUDA, float32 with TF32 matmuls allowed (what
   torch.set_float32_matmul_precision('high') would cost);
4. throughput, device and CPU in the same run, one network of the trained architecture each: training steps of
   batch_size structures (Adam on the training loss; after WARMUP_STEPS untimed steps) and inference over the test
   split; structures/s and the ratio device / CPU.
Prints a table and, with --report, writes the figures as JSON. Exit status 1 when an equivariance check fails or a
loss is not finite; 2 when the device is not there. `--device cpu` runs every step on the CPU (the CI smoke test,
tests/test_gpu_check.py), so the script cannot rot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from zoo.core import environment

environment.apply()  # passive OpenMP waiting must be chosen before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core import tensors  # noqa: E402
from zoo.core.config import load_section  # noqa: E402
from zoo.data import datasets as zoo_datasets  # noqa: E402
from zoo.nn import graphs, models, training  # noqa: E402
from zoo.nn.model_config import ModelConfig

FLOAT32_RTOL = 1e-4
FLOAT64_RTOL = 1e-9
EQUIVARIANCE_STRUCTURES = 8
DISPLACEMENT_A = 0.05
WARMUP_STEPS = 2
INFERENCE_BATCH = 200


def run_settings(settings: training.TrainSettings, device: torch.device, epochs: int) -> training.TrainSettings:
    """The profile's settings with what the check changes (module docstring, step 1)."""
    return dataclasses.replace(settings, max_epochs=epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                               devices=1, num_nodes=1, strategy="auto", progress_bar=False)


def shrunk(data: dict[str, training.SplitData], max_records: int | None) -> dict[str, training.SplitData]:
    if max_records is None:
        return data
    return {name: training.subset(split, range(min(max_records, len(split)))) for name, split in data.items()}


def transformed(structure, rotation: np.ndarray, displacements: np.ndarray):
    """The crystal with its atoms displaced (A), then every lattice vector and position rotated (r -> R r)."""
    from pymatgen.core import Structure

    positions = structure.cart_coords + displacements
    return Structure(structure.lattice.matrix @ rotation.T, structure.species, positions @ rotation.T,
                     coords_are_cartesian=True)


def as_dtype(net, dtype: str, device: torch.device):
    """A copy of the network (or ensemble) in `dtype` on `device`, with the same weights."""
    seeds = net.seeds if isinstance(net, models.Ensemble) else None
    # members predicting different parts (one network per dielectric part) keep their parts
    member_parts = net.member_parts if isinstance(net, models.Ensemble) and len(net.groups) > 1 else None
    copy = models.build(dataclasses.replace(net.config, dtype=dtype), seeds, member_parts)
    copy.load_state_dict(net.state_dict())
    return copy.to(device).eval()


def equivariance_error(net, structures, device: torch.device, tf32: bool = False) -> float:
    """Largest relative error of f(R x) against R.f(x) over `structures` (module docstring, step 3)."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=0).as_matrix()
    rng = np.random.default_rng(0)
    # Displaced atoms break each crystal's symmetry, so no output is zero by Neumann's principle (a centrosymmetric
    # crystal's piezo tensor) and every component is checked.
    displaced = [transformed(s, np.eye(3), rng.normal(scale=DISPLACEMENT_A, size=(len(s), 3))) for s in structures]
    cache = graphs.GraphCache(net.config.r_cut)
    batches = [graphs.GraphBatch.collate(cache.graphs(group)).to(device)
               for group in (displaced, [transformed(s, rotation, np.zeros((len(s), 3))) for s in displaced])]
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        output, output_of_rotated = (net.predict_cartesian(batch).double().cpu() for batch in batches)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    expected = tensors.rotate(output, torch.from_numpy(rotation), rank=net.spec.rank) \
        if net.spec.is_tensor else output
    difference = (output_of_rotated - expected).reshape(len(structures), -1).norm(dim=1)
    return float(difference.max() / expected.reshape(len(structures), -1).norm(dim=1).max())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_rate(config: ModelConfig, loss_kind: str, split: training.SplitData, device: torch.device,
                  batch_size: int, steps: int) -> float:
    """Training structures/s on `device`: Adam steps on random batches of the split (module docstring, step 4)."""
    net = models.MattenNet(config).to(device)
    split = training.for_parts(split, config.parts) if config.parts else split
    full = net.attach_geometry(graphs.GraphBatch.collate(graphs.GraphCache(config.r_cut).graphs(split.structures))
                               .to(device))
    targets = torch.as_tensor(models.encode_targets(config, split.targets), dtype=net.dtype, device=device)
    loss = training.Loss(config, loss_kind).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    size = min(batch_size, len(split))
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            _synchronize(device)
            start = time.perf_counter()
        index = torch.as_tensor(rng.choice(len(split), size=size, replace=False), device=device)
        batch_targets = targets[index]
        value = loss(net(full.select(index)) - batch_targets, batch_targets).mean()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    _synchronize(device)
    return steps * size / (time.perf_counter() - start)


def inference_rate(net, structures, device: torch.device) -> float:
    """Inference structures/s on `device`, graphs built from the structures included."""
    net = as_dtype(net, net.config.dtype, device)
    cache = graphs.GraphCache(net.config.r_cut)
    _synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(structures), INFERENCE_BATCH):
        group = structures[first:first + INFERENCE_BATCH]
        net.predict_cartesian(graphs.GraphBatch.collate(cache.graphs(group)).to(device))
    _synchronize(device)
    return len(structures) / (time.perf_counter() - start)


def check_property(prop: str, args, device: torch.device) -> dict:
    """Steps 1-4 of the module docstring for one property; the figures."""
    profile, settings = training.select_profile(load_section("train", args.params), args.profile, prop)
    settings = run_settings(settings, device, args.epochs)
    data, _ = training.load_splits(prop, args.datasets_root)
    data = shrunk(data, args.max_records)
    started = time.perf_counter()
    fitted = training.fit_model(training.fitting_splits(data), settings)
    train_seconds = time.perf_counter() - started
    net, test = fitted.net, data["test"]
    sample = list(test.structures[:EQUIVARIANCE_STRUCTURES])
    cpu = torch.device("cpu")
    rates = {where: {"train": training_rate(net.config, settings.loss, data["train"], place, settings.batch_size,
                                            args.steps),
                     "inference": inference_rate(net, list(test.structures), place)}
             for where, place in (("device", device), ("cpu", cpu))}
    return {
        "property": prop, "profile": profile, "settings": settings.as_dict(),
        "records": {name: len(split) for name, split in data.items()},
        "members": [{"seed": m.config.seed, "epochs_run": m.epochs_run, "history": m.history,
                     "epoch_seconds": m.epoch_seconds} for m in fitted.members],
        "train_seconds": train_seconds,
        "parameters": sum(p.numel() for p in net.parameters()),
        "equivariance": {
            "float32": equivariance_error(as_dtype(net, "float32", device), sample, device),
            "float64": equivariance_error(as_dtype(net, "float64", device), sample, device),
            **({"float32_tf32": equivariance_error(as_dtype(net, "float32", device), sample, device, tf32=True)}
               if device.type == "cuda" else {})},
        "structures_per_s": rates,
        "ratio_device_over_cpu": {kind: rates["device"][kind] / rates["cpu"][kind] for kind in ("train", "inference")},
    }


def failures(result: dict) -> list[str]:
    out = []
    for dtype, limit in (("float32", FLOAT32_RTOL), ("float64", FLOAT64_RTOL)):
        if not result["equivariance"][dtype] < limit:
            out.append(f"{result['property']}: {dtype} equivariance error {result['equivariance'][dtype]:.3g} "
                       f">= {limit:g}")
    losses = [entry[key] for member in result["members"] for entry in member["history"]
              for key in ("train_loss", "val_loss")]
    if not losses or not all(math.isfinite(value) for value in losses):
        out.append(f"{result['property']}: a loss is not finite (or no epoch ran)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device to check (default: %(default)s); cpu: smoke test")
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per device (default: %(default)s)")
    parser.add_argument("--max-records", type=int, default=None, help="first N records of each split (shrunk data)")
    parser.add_argument("--properties", nargs="+", default=list(properties.PROPERTIES),
                        choices=list(properties.PROPERTIES))
    parser.add_argument("--datasets-root", type=Path, default=Path(zoo_datasets.HUB_DATASETS_DIR))
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}); --device cpu runs the smoke test",
              file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check: device {name}, torch {torch.__version__}, profile {args.profile}, {args.epochs} epochs")
    results, problems = [], []
    for prop in args.properties:
        result = check_property(prop, args, device)
        results.append(result)
        problems += failures(result)
        rates, ratio, eq = result["structures_per_s"], result["ratio_device_over_cpu"], result["equivariance"]
        tf32 = f" (TF32 matmuls {eq['float32_tf32']:.2e})" if "float32_tf32" in eq else ""
        print(f"{prop:>10}: {len(result['members'])} network(s) x {result['members'][0]['epochs_run']} epochs in "
              f"{result['train_seconds']:.1f} s ({result['parameters']:,} parameters); equivariance float32 "
              f"{eq['float32']:.2e} float64 {eq['float64']:.2e}{tf32}; train "
              f"{rates['device']['train']:.1f} vs cpu {rates['cpu']['train']:.1f} structures/s (x{ratio['train']:.1f}); "
              f"inference {rates['device']['inference']:.1f} vs cpu {rates['cpu']['inference']:.1f} "
              f"(x{ratio['inference']:.1f})")
    if args.report is not None:
        args.report.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results,
                                           "failures": problems}, indent=2) + "\n", encoding="utf-8")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
