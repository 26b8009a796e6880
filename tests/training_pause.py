"""A Lightning plugin that holds a training still once it has checkpointed, so a test can interrupt it at a known point.

Lightning adds the callbacks that the factories of the entry-point group `lightning.pytorch.callbacks_factory` return
to every Trainer (Lightning's documented way to add callbacks to code one does not edit). `install(folder, paused)`
writes a distribution into `folder` whose factory is `callbacks`; a process with `folder` on PYTHONPATH and
PAUSED_FILE=`paused` in its environment gets `PauseAfterFirstEpoch`: at the start of the second epoch (the first one
done, its checkpoint written: Lightning's ModelCheckpoint saves when the epoch's validation ends) it writes
`paused` and waits until the process is interrupted (Ctrl-C). So the test waits for that file instead of racing the
training, however fast or slow the machine. Without PAUSED_FILE the factory adds nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

PAUSED_FILE = "ZOO_TEST_PAUSED_FILE"
ENTRY_POINT_GROUP = "lightning.pytorch.callbacks_factory"


def callbacks() -> list:
    paused = os.environ.get(PAUSED_FILE)
    return [] if not paused else [PauseAfterFirstEpoch(Path(paused))]


def install(folder: Path, paused: Path) -> dict[str, str]:
    """Write the plugin's distribution into `folder`; returns the environment variables that enable it."""
    dist_info = folder / "zoo_test_training_pause-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-test-training-pause\nVersion: 0\n",
                                        encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\npause = {__name__}:callbacks\n",
                                                encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
            PAUSED_FILE: str(paused)}


class PauseAfterFirstEpoch(Callback):
    """Writes `paused`, then sleeps until interrupted, when the second epoch of a fit starts (once per file)."""

    def __init__(self, paused: Path):
        self.paused = paused

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch < 1 or self.paused.exists():
            return
        self.paused.write_text(f"paused before epoch {trainer.current_epoch}\n", encoding="utf-8")
        while True:  # until Ctrl-C (SIGINT) raises KeyboardInterrupt here
            time.sleep(1)
