"""What a dataset card or a run record says of the code that made it: its commit and the
versions of the packages it ran on."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata as importlib_metadata

__all__ = ["git_commit", "package_versions"]


def package_versions() -> dict[str, str]:
    """The installed versions of the packages a result depends on, and Python's."""
    names = ["marl-offline-bench", "numpy", "torch", "jax", "jaxmarl", "mpe2", "pettingzoo",
             "gymnasium", "gymnasium-robotics", "mujoco", "minari", "h5py"]
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    versions["python"] = platform.python_version()
    return versions


def git_commit() -> str | None:
    """The code's commit: git's, or ``MARL_BENCH_COMMIT`` where the code is a copy without its
    git folder (a cluster node, an accelerator machine), so that its records still name it."""
    if os.environ.get("MARL_BENCH_COMMIT"):
        return os.environ["MARL_BENCH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=__file__.rsplit("/", 2)[0])
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
