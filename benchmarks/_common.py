"""Helpers shared by the benchmark scripts: a scratch Minari root and timers."""
from __future__ import annotations

import os
import tempfile
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager


def scratch_minari_root(prefix: str) -> str:
    """Point Minari at a fresh folder unless MINARI_DATASETS_PATH is already set."""
    if "MINARI_DATASETS_PATH" not in os.environ:
        os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix=prefix)
    return os.environ["MINARI_DATASETS_PATH"]


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def dir_bytes(path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def seconds_per_call(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     reduce: Callable[[list[float]], float] = statistics.median
                     ) -> dict[str, float]:
    """Wall time per call of each step, ``reduce`` (median) over ``repeats`` timed calls.

    The steps take turns, one call each per turn, so that load from other processes on a shared
    machine falls on all of them alike.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: reduce(values) for name, values in times.items()}
