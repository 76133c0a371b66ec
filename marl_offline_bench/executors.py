"""Where runs execute: in this process, in a pool of local processes, or on a Ray cluster.

An executor has one method, ``run(jobs, note)``, that runs every job and calls
``note(outcome)`` once per job as it ends; each run writes its record through
:mod:`marl_offline_bench.training`, so no result is lost or written twice whichever executor
ran it. :class:`LocalExecutor` is this module's; :class:`~marl_offline_bench.ray_executor.
RayExecutor` is its cluster twin.

Local worker processes die with their parent: a ``kill -9`` of ``marl-bench evaluate`` ends
its workers too, so no orphan keeps training or holds a run's lock.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Callable

from .training import RunJob, RunOutcome, run_job

__all__ = ["LocalExecutor"]


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when the process that started it ends."""
    try:  # Linux: the kernel signals us the moment the parent dies
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:  # elsewhere (and as a second guard): poll for a new parent
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


@dataclass(frozen=True)
class LocalExecutor:
    """Runs jobs on this machine: in this process (``workers=1``) or in a pool of spawned
    worker processes, each with ``cpu_count // workers`` torch threads."""

    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")

    def describe(self) -> str:
        return f"{self.workers} worker(s)"

    def run(self, jobs: list[RunJob], note: Callable[[RunOutcome], None]) -> None:
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                note(run_job(job))
            return
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        jobs = [replace(j, torch_threads=threads, show_progress=False) for j in jobs]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                 initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    try:
                        note(future.result())
                    except Exception as err:  # the worker process itself died
                        note(RunOutcome(futures[future], "error",
                                        f"worker died: {type(err).__name__}: {err}"))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
