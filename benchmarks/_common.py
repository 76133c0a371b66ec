"""Helpers shared by the benchmark scripts: a scratch Minari root and a timer."""
from __future__ import annotations

import os
import tempfile
import time
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
