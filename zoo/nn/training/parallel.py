"""Independent networks trained side by side: ensemble members, learning-curve points and the non-equivariant
baseline are separate single-process fits that share nothing, so on a machine with several cores (`train.workers`)
each can run in its own process.

A fit is fully seeded (``loop.fit``: the initialisation, the epoch order, deterministic algorithms), so it gives the
same network in a worker process as in this one, whatever else runs beside it or before it: the networks, and so
every output, are those of one-after-another training. A worker is a fresh interpreter (the 'spawn' start method:
no forked torch or OpenMP state); it inherits the environment (environment.env's settings) and sends back the
weights as safetensors bytes with the fit's record, from which this process rebuilds the network.

``FitPool(1)`` trains nothing ahead: a submitted fit runs when its result is first asked for, in this process, as
plain sequential code would. Fits with Lightning callbacks (objects of this process) and data-parallel fits (their
own processes) always run that way.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any

from zoo.core.schema_checks import check_int
from zoo.nn import models
from zoo.nn.model_config import ModelConfig

__all__ = ["FitPool", "PendingFit"]


class PendingFit:
    """A submitted fit; ``result()`` waits for it (or runs it, in a pool of one worker) and returns its FitResult."""

    def __init__(self, compute: Callable[[], FitResult] | None = None,
                 future: concurrent.futures.Future | None = None):
        self._compute, self._future, self._result = compute, future, None

    def result(self):
        """The fit's loop.FitResult."""
        if self._result is None:
            self._result = self._compute() if self._future is None else _from_worker(self._future.result())
        return self._result


class FitPool:
    """Up to `workers` fits at a time, each in its own process (module docstring); a context manager that shuts
    the processes down on exit: a fit still running is waited for, or, when the block ends in an error or an
    interrupt, stopped (a fit with a resume folder continues from its last epoch when run again)."""

    def __init__(self, workers: int = 1):
        self.workers = check_int(workers, "train.workers", 1)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> FitPool:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if self._executor is None:
            return
        if exc_type is not None:
            # The executor has no public way to stop a running task; its worker processes are in _processes.
            for process in list((self._executor._processes or {}).values()):
                process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None

    def submit(self, data, settings, **fit_arguments: Any) -> PendingFit:
        """``loop.fit(data, settings, **fit_arguments)``, started now in a worker process when the pool has more
        than one worker and the fit can run in one; otherwise run in this process when its result is asked for."""
        in_process = (self.workers == 1 or fit_arguments.get("callbacks")
                      or settings.devices * settings.num_nodes > 1)
        if in_process:
            from zoo.nn.training.loop import fit  # loop uses this module

            return PendingFit(compute=lambda: fit(data, settings, **fit_arguments))
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return PendingFit(future=self._executor.submit(_fit_in_worker, data, settings, fit_arguments))


def _fit_in_worker(data, settings, fit_arguments: dict[str, Any]) -> dict[str, Any]:
    """A worker's fit, as plain values (the network as its config and safetensors weights). Lightning's progress bar
    is off: several workers would draw over each other; the caller reports each finished fit."""
    from safetensors.torch import save

    from zoo.nn.training.loop import fit

    result = fit(data, settings, progress_bar=False, **fit_arguments)
    state = {name: tensor.detach().contiguous() for name, tensor in result.net.state_dict().items()}
    return {"weights": save(state), "config": result.config.to_json(), "history": result.history,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "complete": result.complete, "resumed_after_epochs": result.resumed_after_epochs,
            "epoch_seconds": result.epoch_seconds, "setup_seconds": result.setup_seconds}


def _from_worker(sent: dict[str, Any]):
    from safetensors.torch import load

    from zoo.nn.training.loop import FitResult

    config = ModelConfig.from_json(sent["config"])
    net = models.MattenNet(config)
    net.load_state_dict(load(sent["weights"]), strict=True)
    return FitResult(net=net.eval(), config=config, history=sent["history"], best_epoch=sent["best_epoch"],
                     epochs_run=sent["epochs_run"], stopped_early=sent["stopped_early"], complete=sent["complete"],
                     resumed_after_epochs=sent["resumed_after_epochs"], epoch_seconds=sent["epoch_seconds"],
                     setup_seconds=sent["setup_seconds"])
