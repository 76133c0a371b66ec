"""Where runs execute: in this process, in a pool of local processes, or on a Ray cluster.

An executor has one method, ``run(jobs, note)``, that runs every job and calls
``note(outcome)`` once per job as it ends; each run writes its record through
:mod:`marl_offline_bench.training`, so no result is lost or written twice whichever executor
ran it. :class:`LocalExecutor` is this module's; :class:`~marl_offline_bench.ray_executor.
RayExecutor` is its cluster twin.

Local workers are :func:`~marl_offline_bench.processes.spawned_pool`'s: a ``kill -9`` of
``marl-bench evaluate`` ends them too, so no orphan keeps training or holds a run's lock.
"""
from __future__ import annotations

import os
from concurrent.futures import as_completed
from dataclasses import dataclass, replace
from typing import Callable

from .processes import spawned_pool
from .training import RunJob, RunOutcome, run_job

__all__ = ["LocalExecutor"]


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
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        jobs = [replace(j, torch_threads=threads, show_progress=False) for j in jobs]
        with spawned_pool(self.workers) as pool:
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
