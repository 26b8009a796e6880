"""A training run of a tiny model for tests/test_distributed.py, in its own process: with `--devices 2` Lightning's
DDP launcher starts a second process by running this same command again (as it does for stages/train.py), which is
why it cannot run inside pytest's process.

    python -m tests.ddp_training DATASETS_ROOT MODELS_ROOT [--devices 2] [--epochs 3] [--ensemble 1]
                                 [--kill-after-steps K [--kill-member M]] [--live-dir DIR]

--kill-after-steps K: every process kills itself with SIGKILL after the K-th optimiser step of ensemble member M
(default 0), as when a node is lost: no clean shutdown, nothing written at that point. Prints one JSON line per
process that finishes:
{"rank", "folder", "members": [{"resumed_after", "epochs_run", "history"}]}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from zoo.core import environment

environment.apply()  # before torch is imported

from lightning.pytorch.callbacks import Callback  # noqa: E402

from tests.params_file import train_settings  # noqa: E402
from zoo.nn import training  # noqa: E402

PROPERTY = "dielectric"
TINY_MODEL = {"hidden_irreps": "4x0o+4x0e+2x1o+2x1e+2x2o+2x2e", "n_radial": 4, "radial_hidden": [8],
              "species_dim": 8, "invariant_hidden": 8}


class KillAfterSteps(Callback):
    """SIGKILL this process once `steps` optimiser steps of the network with seed `seed` are done."""

    def __init__(self, steps: int, seed: int):
        self.steps, self.seed = steps, seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.net.config.seed == self.seed and trainer.global_step >= self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


def run_settings(devices: int, epochs: int, ensemble: int):
    """The cpu profile with a tiny model, batches of 8 structures, `devices` processes."""
    return train_settings(max_epochs=epochs, batch_size=8, learning_rate=0.01, loss="mse", threads=1,
                          progress_bar=False, accelerator="cpu", devices=devices,
                          strategy="ddp" if devices > 1 else "auto", ensemble_size=ensemble, model=TINY_MODEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets_root")
    parser.add_argument("models_root")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--kill-after-steps", type=int, default=None)
    parser.add_argument("--kill-member", type=int, default=0)
    parser.add_argument("--live-dir", default=None)
    args = parser.parse_args(argv)
    settings = run_settings(args.devices, args.epochs, args.ensemble)
    callbacks = [] if args.kill_after_steps is None else \
        [KillAfterSteps(args.kill_after_steps, settings.seed + args.kill_member)]
    folder, fitted = training.train_property(PROPERTY, settings, profile="test", datasets_root=args.datasets_root,
                                             models_root=args.models_root, live_dir=args.live_dir,
                                             callbacks=callbacks)
    print(json.dumps({"rank": fitted.global_rank, "folder": None if folder is None else str(folder),
                      "members": [{"resumed_after": member.resumed_after_epochs, "epochs_run": member.epochs_run,
                                   "history": member.history} for member in fitted.members]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
