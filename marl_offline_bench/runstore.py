"""Where runs live on disk: their records, checkpoints and locks, each written atomically.

::

    <out>/runs/<protocol>/<algo>/<dataset_id>/seed<k>.json    the record (status "done" or "failed")
    <out>/runs/<protocol>/<algo>/<dataset_id>/seed<k>.lock    held while the run is in progress
    <out>/checkpoints/<algo>/<dataset_id>/seed<k>.pt          resume state, deleted once recorded

Every write goes to a temporary file beside its target and is renamed into place, so a reader
sees the old file or the new one, never a partial one. A lock holds its owner's host, pid and
process start time; a lock whose owner is gone (or whose pid now names another process) is
stale and is taken over.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["record_path", "checkpoint_path", "learner_path", "remove_checkpoint",
           "keep_checkpoint_as_learner", "write_json_atomic",
           "read_record", "checkpoint_to_bytes", "checkpoint_from_bytes", "FileCheckpoints",
           "RunLock", "check_writable"]


def record_path(out: Path, algo: str, dataset_id: str, seed: int, protocol: str) -> Path:
    # The protocol is part of the path: a smoke run must never replace a quick run's record.
    return Path(out) / "runs" / protocol / algo / dataset_id / f"seed{seed}.json"


def checkpoint_path(out: Path, algo: str, dataset_id: str, seed: int) -> Path:
    return Path(out) / "checkpoints" / algo / dataset_id / f"seed{seed}.pt"


def learner_path(out: Path, algo: str, dataset_id: str, seed: int) -> Path:
    """Where ``--keep-learners`` keeps a finished run's final learner (a checkpoint file)."""
    return Path(out) / "learners" / algo / dataset_id / f"seed{seed}.pt"


def remove_checkpoint(path: Path) -> None:
    """Delete a run's checkpoint and the folders it leaves empty under ``checkpoints/``."""
    path.unlink(missing_ok=True)
    _remove_empty_folders(path)


def keep_checkpoint_as_learner(path: Path, learner: Path) -> None:
    """Move a finished run's checkpoint to ``learner`` (one rename: no copy is ever half
    written), leaving no empty folders under ``checkpoints/``."""
    learner.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, learner)
    _remove_empty_folders(path)


def _remove_empty_folders(path: Path) -> None:
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            break


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_record(path: Path) -> dict[str, Any] | None:
    """A run record, or None when there is none (or it cannot be parsed)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("ignoring unreadable record %s (%s); the run will be redone", path, err)
        return None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return checkpoint_from_bytes(path.read_bytes(), str(path))


def checkpoint_to_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint serialised as :func:`torch.save` writes it to a file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(blob: bytes, where: str) -> dict[str, Any] | None:
    """A checkpoint from its bytes, or None (with a warning naming ``where``) if unreadable."""
    import io

    import torch

    try:
        return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as err:  # any unreadable checkpoint means: start the run again
        logger.warning("ignoring unreadable checkpoint %s (%s); starting the run afresh",
                       where, err)
        return None


class FileCheckpoints:
    """A run's checkpoint in a file beside its record (the local executor's store).

    A checkpoint store has ``load() -> dict | None`` and ``save(state)``; the Ray executor's
    store keeps the same files on the driver's disk, reached through an actor.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        return _load_checkpoint(self.path)

    def save(self, state: dict[str, Any]) -> None:
        _save_checkpoint(self.path, state)

    def __str__(self) -> str:
        return str(self.path)


def process_start(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (Linux ``/proc``), or None where that
    cannot be read; with the pid it names one process even after the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def check_writable(folder: Path, what: str) -> None:
    """Raise a clear error, before any work, when ``folder`` cannot hold this run's files.

    Args:
        folder: the folder (created if missing).
        what: the option that named it, for the message (``--out``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file; give a folder (it is created if "
                                 "missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _tmp_beside(folder / "probe")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{what} {folder} is not writable ({err.strerror}); give a folder "
                              "you can write to.") from None


class RunLock:
    """An exclusive claim on one run across processes (and invocations) sharing ``out``.

    The lock file holds the owner's host and pid; a lock whose owner process is gone on this
    host is stale and is taken over.
    """

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                stale = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
                try:
                    os.rename(self.path, stale)  # only one taker wins the rename
                except FileNotFoundError:
                    continue
                stale.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": process_start(os.getpid())}, handle)
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return True
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Being written right now, or left half-written by a killed process: age decides.
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        if owner.get("host") != socket.gethostname():
            return False  # another machine's process: it cannot be checked from here
        try:
            pid = int(owner["pid"])
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        # The pid lives; it is the owner only if it started when the owner did (pids are reused).
        started = owner.get("started")
        return started is not None and process_start(pid) not in (None, started)

    def holder(self) -> str:
        """Who holds the lock, in words (for a ``busy`` message)."""
        try:
            owner = json.loads(self.path.read_text())
            return f"pid {owner.get('pid')} on {owner.get('host')}"
        except (OSError, ValueError):
            return "an unknown process"

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
