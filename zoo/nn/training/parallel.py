"""Independent networks trained side by side: ensemble members, learning-curve points and the non-equivariant
baseline are separate single-process fits that share nothing, so on a machine with several cores (`train.workers`)
each can run in its own process.

A fit is fully seeded (``loop.fit``: the initialisation, the epoch order, deterministic algorithms), so it gives the
same network in a worker process as in this one, whatever else runs beside it or before it: the networks, and so
every output, are those of one-after-another training. A worker is a fresh interpreter (the 'spawn' start method:
no forked torch or OpenMP state); it inherits the environment (environment.env's settings). What a worker sends
back, and how this process rebuilds a network from it, is ``loop``'s (``loop.submit_fit``); this module only runs
the tasks.

``FitPool(1)`` runs nothing ahead: a submitted fit runs when its result is first asked for, in this process, as plain
sequential code would.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any

from zoo.core.schema_checks import check_int

__all__ = ["FitPool", "PendingFit"]


class PendingFit:
    """A submitted fit; ``result()`` waits for it (or runs it, when it runs in this process) and returns its
    result."""

    def __init__(self, compute: Callable[[], Any] | None = None, future: concurrent.futures.Future | None = None,
                 receive: Callable[[Any], Any] | None = None):
        self._compute, self._future, self._receive, self._result = compute, future, receive, None

    def result(self) -> Any:
        if self._result is None:
            self._result = self._compute() if self._future is None else self._receive(self._future.result())
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

    def submit(self, compute: Callable[[], Any], task: Callable[..., Any], arguments: tuple,
               receive: Callable[[Any], Any], in_process: bool = False) -> PendingFit:
        """A fit: `compute`() in this process when its result is asked for (a pool of one worker, or
        `in_process`), else `task`(*arguments) started now in a worker process (a module-level function: the
        worker imports it) and its return value passed through `receive` here."""
        if in_process or self.workers == 1:
            return PendingFit(compute=compute)
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return PendingFit(future=self._executor.submit(task, *arguments), receive=receive)
