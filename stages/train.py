"""DVC stage `train`: one property's built dataset -> a trained model folder.

    python stages/train.py <property> [--params params.yaml] [--profile cpu|release|gpu]

Reads data/hub/datasets/mp-<property>-irreps/ (the build stage's output); writes data/models/matten-<property>/
(model.safetensors, config.json, training_log.json), replacing the folder only once it is complete, and the
per-epoch metrics (losses, learning rate, epoch wall time) with dvclive into data/reports/train/<property>/.
An interrupted run continues from data/models/.resume/matten-<property>/last.ckpt when settings, model config and
dataset fingerprint are unchanged (zoo.nn.training).

params.yaml, section `train`:
    profile     the profile `dvc repro` trains with (--profile overrides it for one run)
    profiles    name -> zoo.nn.training.TrainSettings fields (max_epochs, batch_size, learning_rate, plateau_factor,
                plateau_patience, min_learning_rate, early_stopping_patience, seed, accelerator, threads,
                deterministic, progress_bar, loss, model: {ModelConfig fields}), and per_property:
                {<property>: {settings}} replacing those of the profile for one property
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# torch's OpenMP workers spin while they wait by default, which on a shared 2-core machine made steps several
# times slower (benchmarks/model_throughput.py); this must be chosen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402

from zoo import properties  # noqa: E402
from zoo.core.params import load_section  # noqa: E402
from zoo.nn import training

console = Console(stderr=True, soft_wrap=True)
LIVE_DIR = Path("data/reports/train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("property", choices=sorted(properties.PROPERTIES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--profile", default=None, help="training profile (default: train.profile of the params)")
    args = parser.parse_args(argv)
    try:
        profile, settings = training.select_profile(load_section(args.params, "train", required=True), args.profile,
                                                    args.property)
        started = time.perf_counter()
        folder, fitted = training.train_property(args.property, settings, profile=profile,
                                                 live_dir=LIVE_DIR / args.property)
        elapsed = time.perf_counter() - started
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]train {args.property} failed:[/] {err}")
        return 1
    for result in fitted.members:
        epochs = result.epoch_seconds
        resumed = f", resumed after {result.resumed_after_epochs} epochs" \
            if result.resumed_after_epochs is not None else ""
        print(
            f"train {args.property} ({profile}, seed {result.config.seed}): {result.epochs_run} epochs{resumed}, best "
            f"{result.best_epoch} (val loss {result.history[result.best_epoch]['val_loss']:.4f}"
            f"{', stopped early' if result.stopped_early else ''}); epoch time median "
            f"{sorted(epochs)[len(epochs) // 2] if epochs else float('nan'):.1f} s, setup {result.setup_seconds:.1f} s"
        )
    print(f"train {args.property}: {len(fitted.members)} network(s), total {elapsed:.1f} s -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
