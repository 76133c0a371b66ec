"""Local worker processes that die with their parent, for the runs and the dataset builds.

Workers are spawned, not forked: a forked child would inherit torch's thread pools and open
HDF5 handles mid-use. A ``kill -9`` of the process that started the pool ends its workers too,
so no orphan keeps training, keeps writing a dataset, or holds a lock.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["spawned_pool", "die_with_parent"]


def spawned_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each ending when this process ends."""
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def die_with_parent(parent: int) -> None:
    """End this process when the process ``parent`` ends (a pool worker's initializer)."""
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
