"""Datasets on disk: Minari's HDF5 layout, written by our own h5py code, plus a flat cache.

Layout under Minari's root (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``)::

    marl-bench/<task_id>/<quality>-v<N>/
        data/main_data.hdf5     Minari's layout: one group per episode
        data/metadata.json      Minari's metadata, plus ours under "marl_bench"
        cache/*.npy             the same arrays concatenated, for fast load()
        cache/manifest.json     the checksum of the data file the cache was made from, and
                                the SHA-256 of every cache file
        episode_digests.json    a short digest of each episode's arrays (where two builds part)
        .verified.json          size, mtime and digest of every file at its last check
        .cache.lock             held while the cache is checked or rebuilt
    marl-bench/<task_id>/.<quality>-v<N>.lock      held by the process building the dataset
    marl-bench/<task_id>/.tmp-<quality>-v<N>-*/    a build in progress (owner in .owner.json)

The multi-agent step is packed into Minari's Dict spaces: the observation is
``Dict(<agent_id>: Box, state: Box[, avail_actions: MultiBinary([n, A])])``, the action
``Dict(<agent_id>: Discrete | Box)``, the reward is the team reward, and ``infos`` carry
``agent_rewards`` and (SMAC) ``won``.

Why not ``minari.create_dataset_from_buffers``: on short episodes its auto-chunked datasets cost
several times the raw bytes and its writer is slow (see ``benchmarks/write_speed.py``). Small
per-episode arrays here use HDF5's compact layout (stored in the object header), larger ones
contiguous storage.

Every write goes to a hidden temporary directory that is renamed into place when complete, so a
killed collect never leaves anything that looks like a dataset (Minari skips hidden folders).
Every file that :func:`read_dataset` reads is covered by a recorded SHA-256: the data file by the
metadata, each cache file by the cache manifest (which names the data file's digest). A check is
done once and remembered by size and mtime; a cache file that fails it is rebuilt from the
verified data file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from .dataset import EpisodeArrays
from .envs.base import TaskInfo

DATA_FILE = "main_data.hdf5"
#: 2: the manifest records every cache file's SHA-256 (caches of format 1 are rebuilt).
CACHE_FORMAT = 2
STAMP_FILE = ".verified.json"
DIGESTS_FILE = "episode_digests.json"
#: A recorded size and mtime vouch for a file only when the file is older than its check by this
#: much: coarse file-system clocks (a few ms on ext4, 2 s on FAT) could otherwise hide a write
#: made just after the check.
_RACY_NS = 2_000_000_000
#: A temporary build folder without an owner record is a leftover once it is this old.
_OWNERLESS_STALE_S = 3600.0
_MAPPED = ("obs", "states", "avail_actions")
_COMPACT_LIMIT = 60_000  # bytes; HDF5 compact datasets must stay under 64 KiB


class CorruptDatasetError(OSError):
    """A dataset file failed its checksum or could not be read."""


def minari_root() -> Path:
    """Minari's datasets root (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``).

    Raises:
        NotADirectoryError, PermissionError: the root is a file or cannot be created (naming
            it and the fix).
    """
    from minari.storage.datasets_root_dir import get_dataset_path

    fix = "Set MINARI_DATASETS_PATH to a folder you can write to."
    configured = os.environ.get("MINARI_DATASETS_PATH")
    if configured and Path(configured).exists() and not Path(configured).is_dir():
        raise NotADirectoryError(f"MINARI_DATASETS_PATH={configured} is a file, not a folder. "
                                 f"{fix}")
    try:
        return Path(get_dataset_path())
    except OSError as err:
        raise PermissionError(f"Minari's datasets folder cannot be created ({err}). {fix}") \
            from err


def dataset_dir(minari_id: str) -> Path:
    return minari_root() / minari_id


def is_built(minari_id: str) -> bool:
    return (dataset_dir(minari_id) / "data" / "metadata.json").exists()


def is_damaged(minari_id: str) -> bool:
    """Whether the dataset's folder exists without its metadata (a deleted or lost file)."""
    return dataset_dir(minari_id).exists() and not is_built(minari_id)


def check_writable(folder: Path, what: str, fix: str) -> None:
    """Fail early, before any work, when ``folder`` cannot be created or written.

    Raises:
        NotADirectoryError: ``folder`` (or a parent) is a file.
        PermissionError: ``folder`` cannot be created or written; the message says ``fix``.
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {folder} cannot be created: {parent} is a "
                                         f"file, not a folder. {fix}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{what} {folder} is not writable ({err.strerror or err}). "
                              f"{fix}") from err


# -- spaces ---------------------------------------------------------------------------------
def dataset_spaces(info: TaskInfo) -> tuple[spaces.Dict, spaces.Dict]:
    """Minari observation and action spaces of a task's datasets."""
    obs = {a: spaces.Box(-np.inf, np.inf, (d,), np.float32)
           for a, d in zip(info.agent_ids, info.obs_dims)}
    obs["state"] = spaces.Box(-np.inf, np.inf, (info.state_dim,), np.float32)
    if info.discrete:
        obs["avail_actions"] = spaces.MultiBinary([info.n_agents, info.n_actions])
        act = {a: spaces.Discrete(info.n_actions) for a in info.agent_ids}
    else:
        act = {a: spaces.Box(-1.0, 1.0, (d,), np.float32)
               for a, d in zip(info.agent_ids, info.action_dims)}
    return spaces.Dict(obs), spaces.Dict(act)


# -- writing --------------------------------------------------------------------------------
class _H5Writer:
    """Creates small datasets through h5py's low-level API, reusing types and dataspaces."""

    def __init__(self):
        self.compact = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        self.compact.set_layout(h5py.h5d.COMPACT)
        self.compact.set_obj_track_times(False)
        self.contiguous = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        self.contiguous.set_obj_track_times(False)
        self._types: dict = {}
        self._spaces: dict = {}

    def put(self, group: h5py.Group, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        dcpl = self.compact if array.nbytes <= _COMPACT_LIMIT else self.contiguous
        htype = self._types.get(array.dtype)
        if htype is None:
            htype = self._types[array.dtype] = h5py.h5t.py_create(array.dtype)
        space = self._spaces.get(array.shape)
        if space is None:
            space = self._spaces[array.shape] = h5py.h5s.create_simple(array.shape)
        dset = h5py.h5d.create(group.id, name.encode(), htype, space, dcpl=dcpl)
        if array.size:
            dset.write(h5py.h5s.ALL, h5py.h5s.ALL, array)


def _write_main_file(path: Path, info: TaskInfo, data: EpisodeArrays, progress=None) -> None:
    writer = _H5Writer()
    obs_dims = info.obs_dims
    act_dims = info.action_dims
    with h5py.File(path, "w", libver="latest", track_order=True) as f:
        for k in range(data.n_episodes):
            s, t = int(data.episode_starts[k]), int(data.episode_starts[k + 1])
            o0, o1 = s + k, t + k + 1
            g = f.create_group(f"episode_{k}")
            g.attrs["id"] = k
            g.attrs["total_steps"] = t - s
            g.attrs["seed"] = int(data.seeds[k])
            og = g.create_group("observations")
            for i, agent in enumerate(info.agent_ids):
                writer.put(og, agent, data.obs[o0:o1, i, : obs_dims[i]])
            writer.put(og, "state", data.states[o0:o1])
            if data.avail_actions is not None:
                writer.put(og, "avail_actions", data.avail_actions[o0:o1].astype(np.int8))
            ag = g.create_group("actions")
            for i, agent in enumerate(info.agent_ids):
                if info.discrete:
                    writer.put(ag, agent, data.actions[s:t, i])
                else:
                    writer.put(ag, agent, data.actions[s:t, i, : act_dims[i]])
            writer.put(g, "rewards", data.rewards[s:t])
            writer.put(g, "terminations", data.terminals[s:t])
            writer.put(g, "truncations", data.timeouts[s:t])
            ig = g.create_group("infos")
            writer.put(ig, "agent_rewards", data.agent_rewards[s:t])
            if data.won is not None:
                writer.put(ig, "won", data.won[s:t])
            if progress is not None:
                progress.update(1)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _write_cache(cache_dir: Path, data: EpisodeArrays, source_sha256: str) -> dict[str, str]:
    """Write the flat cache and its manifest; return each cache file's SHA-256 by file name."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in data.arrays().items():
        path = cache_dir / f"{name}.npy"
        np.save(path, array, allow_pickle=False)
        files[path.name] = sha256_file(path)
    manifest = {"format": CACHE_FORMAT, "source_sha256": source_sha256,
                "keys": sorted(data.arrays()), "files": files}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    return files


#: How :func:`episode_digests` hashes an episode (recorded beside the digests).
DIGEST_SCHEME = ("sha256[:16] over name, dtype, shape and bytes of each array of the episode "
                 "(obs, states, avail_actions, actions, rewards, agent_rewards, terminals, "
                 "timeouts, won) and its seed")


def episode_digests(data: EpisodeArrays) -> list[str]:
    """A 64-bit hex digest of each episode's arrays: where two builds part, episode by episode.

    Independent of the file layout, so a digest computed from a build's HDF5 file equals the one
    computed from the arrays it was written from.
    """
    steps = {"actions": data.actions, "rewards": data.rewards,
             "agent_rewards": data.agent_rewards, "terminals": data.terminals,
             "timeouts": data.timeouts, "won": data.won}
    rows = {"obs": data.obs, "states": data.states, "avail_actions": data.avail_actions}
    digests = []
    for k in range(data.n_episodes):
        s, t = int(data.episode_starts[k]), int(data.episode_starts[k + 1])
        h = hashlib.sha256()
        for name, array in rows.items():
            _hash_array(h, name, None if array is None else array[s + k: t + k + 1])
        for name, array in steps.items():
            _hash_array(h, name, None if array is None else array[s:t])
        h.update(int(data.seeds[k]).to_bytes(8, "little", signed=True))
        digests.append(h.hexdigest()[:16])
    return digests


def _hash_array(h, name: str, array: np.ndarray | None) -> None:
    if array is None:
        h.update(f"{name}:none;".encode())
        return
    array = np.ascontiguousarray(array)
    h.update(f"{name}:{array.dtype.newbyteorder('<').str}:{array.shape};".encode())
    h.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def read_episode_digests(minari_id: str, info: TaskInfo | None = None) -> list[str]:
    """The per-episode digests of a built dataset: recorded at build time, or computed from its
    (verified) data file for datasets built before they were recorded (needs ``info``)."""
    path = dataset_dir(minari_id) / DIGESTS_FILE
    try:
        recorded = json.loads(path.read_text())
        if recorded.get("scheme") == DIGEST_SCHEME:
            return list(recorded["digests"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    if info is None:
        raise FileNotFoundError(f"{path} is missing or unreadable; pass the task's info to "
                                "compute the digests from the data file.")
    return episode_digests(read_dataset(minari_id, info))


# -- build locks and temporary folders ------------------------------------------------------
_OWNER_FILE = ".owner.json"


def _this_host() -> str:
    return socket.gethostname()


def _new_temp_dir(final: Path) -> Path:
    """A fresh hidden build folder beside ``final``, recording which process owns it."""
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    (tmp / _OWNER_FILE).write_text(json.dumps(
        {"pid": os.getpid(), "host": _this_host(), "started": time.time()}))
    return tmp


def _owner_gone(tmp: Path) -> bool:
    """Whether the process that made a temporary build folder has ended."""
    try:
        owner = json.loads((tmp / _OWNER_FILE).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        # Written right after the folder is made: a folder without it is a legacy or broken
        # one, unless it is young enough to be a build that has just started.
        try:
            return time.time() - tmp.stat().st_mtime > _OWNERLESS_STALE_S
        except OSError:
            return False
    if host != _this_host():
        return False  # another machine's process (shared storage): cannot tell, keep it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def leftover_temp_dirs(parent: Path | None = None, name: str | None = None) -> list[Path]:
    """Temporary build folders whose owner process is gone (a killed collect's leftovers).

    Args:
        parent: a task's folder (``<root>/marl-bench/<task_id>``); default: every task's.
        name: only the leftovers of this dataset folder name (``random-v0``).
    """
    parents = [parent] if parent is not None else \
        [p for p in (minari_root() / "marl-bench").glob("*") if p.is_dir()]
    pattern = f".tmp-{name}-*" if name else ".tmp-*"
    return sorted(tmp for p in parents for tmp in p.glob(pattern)
                  if tmp.is_dir() and _owner_gone(tmp))


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 when it is gone)."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return total


@contextlib.contextmanager
def _file_lock(path: Path, waiting: str | None = None, required: bool = True):
    """Hold an exclusive ``flock`` on ``path`` (created if needed); released when the process
    ends, however it ends. Yields whether it had to wait for another holder. With
    ``required=False`` a lock file that cannot be created (read-only folder) is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError:
        if required:
            raise
        yield False  # a read-only folder: nobody can be writing there either
        return
    with handle:
        waited = False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            waited = True
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield waited
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_lock(minari_id: str, waiting: str | None = None):
    """Context manager held while a dataset is built: a second build of the same dataset waits
    for the first (printing ``waiting``) instead of racing it. Yields whether it waited."""
    final = dataset_dir(minari_id)
    return _file_lock(final.parent / f".{final.name}.lock", waiting)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_dataset(minari_id: str, info: TaskInfo, data: EpisodeArrays,
                  metadata: dict[str, Any], overwrite: bool = False, progress=None) -> Path:
    """Write episodes as a Minari HDF5 dataset plus flat cache, atomically.

    Args:
        minari_id: ``marl-bench/<task>/<quality>-v<N>``.
        info: the task's :class:`TaskInfo` (spaces, agent ids).
        data: the episodes.
        metadata: stored under ``metadata.json["marl_bench"]`` (recipe, statistics, ...).
        overwrite: replace an existing dataset; otherwise an existing one is an error.
        progress: an optional tqdm bar advanced once per episode written.

    Returns:
        The dataset's directory.
    """
    from minari import __version__ as minari_version
    from minari.dataset.minari_storage import MinariStorage
    from minari.namespace import create_namespace, list_local_namespaces

    final = dataset_dir(minari_id)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True (CLI: --force).")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in leftover_temp_dirs(final.parent, final.name):
        shutil.rmtree(stale, ignore_errors=True)  # its owner was killed
    tmp = _new_temp_dir(final)
    try:
        (tmp / "data").mkdir(parents=True)
        obs_space, act_space = dataset_spaces(info)
        storage = MinariStorage.new(tmp / "data", observation_space=obs_space,
                                    action_space=act_space, data_format="hdf5",
                                    jpeg_encoding=False)
        main_file = tmp / "data" / DATA_FILE
        _write_main_file(main_file, info, data, progress)
        digest = sha256_file(main_file)
        storage.update_metadata({
            "dataset_id": minari_id,
            "minari_version": minari_version,
            "total_episodes": int(data.n_episodes),
            "total_steps": int(data.n_transitions),
            "algorithm_name": str(metadata.get("recipe", {}).get("policy", "")),
            "marl_bench": {**metadata, "sha256": digest, "data_file": DATA_FILE},
            **{k: metadata[k] for k in ("ref_min_score", "ref_max_score",
                                       "num_episodes_average_score") if k in metadata},
        })
        storage.update_metadata({"dataset_size": storage.get_size()})
        cache_digests = _write_cache(tmp / "cache", data, digest)
        _atomic_write_text(tmp / DIGESTS_FILE, json.dumps(
            {"scheme": DIGEST_SCHEME, "digests": episode_digests(data)}))
        checked = {f"data/{DATA_FILE}": digest,
                   **{f"cache/{name}": sha for name, sha in cache_digests.items()}}
        _write_stamp(tmp, {rel: _checked(_stat_key(tmp / rel), sha, time.time_ns())
                           for rel, sha in checked.items()})
        (tmp / _OWNER_FILE).unlink()
        namespace = minari_id.rsplit("/", 1)[0]
        for depth in range(1, namespace.count("/") + 2):
            parent = "/".join(namespace.split("/")[:depth])
            if parent not in list_local_namespaces():
                try:
                    create_namespace(parent)
                except ValueError:
                    pass  # created meanwhile by a parallel collect
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- reading --------------------------------------------------------------------------------
def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _checked(key: dict[str, int], sha256: str, since_ns: int) -> dict[str, Any]:
    """A stamp entry: the file's size and mtime as stat'ed at ``since_ns``, before hashing."""
    return key | {"sha256": sha256, "checked_ns": since_ns}


def read_metadata(minari_id: str) -> dict[str, Any]:
    """A built dataset's ``metadata.json``.

    Raises:
        FileNotFoundError: the dataset has no metadata file.
        CorruptDatasetError: the file is not a JSON object (naming it and the fix).
    """
    path = dataset_dir(minari_id) / "data" / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise CorruptDatasetError(f"Cannot read {path}: {err}. Delete {path.parents[1]} "
                                  "and collect the dataset again.") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("marl_bench", {}), dict):
        raise CorruptDatasetError(
            f"{path} does not hold the metadata of a marl-bench dataset (a JSON object with a "
            f"'marl_bench' object; found {type(meta).__name__}). Delete {path.parents[1]} and "
            "collect the dataset again.")
    return meta


def _read_stamp(root: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((root / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else {}


def _write_stamp(root: Path, files: dict[str, dict[str, Any]]) -> None:
    try:
        _atomic_write_text(root / STAMP_FILE, json.dumps({"files": files}))
    except OSError:
        pass  # a read-only copy of a dataset: the next load checks again, nothing worse


def _vouched(stamp: dict[str, Any], rel: str, path: Path, expected: str) -> dict | None:
    """The stamp's entry for ``rel`` when it still vouches that ``path`` has digest
    ``expected``: same size and mtime, and checked well after that mtime (a write in the same
    clock tick as the check would not have moved the mtime); else None."""
    entry = stamp.get("files", {}).get(rel)
    try:
        key = _stat_key(path)
    except OSError:
        return None
    if (not isinstance(entry, dict) or entry.get("sha256") != expected
            or {k: entry.get(k) for k in key} != key
            or key["mtime_ns"] + _RACY_NS > int(entry.get("checked_ns", 0))):
        return None
    return entry


def verify(minari_id: str) -> str:
    """Check the data file against its recorded SHA-256 (once per size and mtime).

    Returns:
        The data file's SHA-256.

    Raises:
        CorruptDatasetError: naming the file, when the digest differs or the file is missing.
    """
    root = dataset_dir(minari_id)
    main_file = root / "data" / DATA_FILE
    expected = read_metadata(minari_id).get("marl_bench", {}).get("sha256")
    if not main_file.exists():
        raise CorruptDatasetError(f"{main_file} is missing; delete {root} and collect the "
                                  "dataset again.")
    if expected is None:
        raise CorruptDatasetError(f"{root / 'data' / 'metadata.json'} records no checksum; "
                                  "it was not written by marl-bench. Collect it again.")
    rel = f"data/{DATA_FILE}"
    stamp = _read_stamp(root)
    if _vouched(stamp, rel, main_file, expected):
        return expected
    since, key = time.time_ns(), _stat_key(main_file)
    actual = sha256_file(main_file)
    if actual != expected:
        raise CorruptDatasetError(
            f"{main_file} is corrupt or truncated: its SHA-256 is {actual[:16]}..., the "
            f"metadata records {expected[:16]}.... Delete {root} and run `marl-bench collect` "
            "for this dataset again."
        )
    files = dict(stamp.get("files", {}))
    files[rel] = _checked(key, actual, since)
    _write_stamp(root, files)
    return actual


def data_sha256(minari_id: str) -> str:
    """The SHA-256 of a built dataset's data file, checked against its record (the identity of
    the bytes a run trained on; compare with the canonical build's in the registry)."""
    return verify(minari_id)


def _read_cache(root: Path, digest: str) -> EpisodeArrays | None:
    """The cached arrays when every cache file matches the digest the manifest records for it.

    None when the cache is missing, of another format or made from another data file; a cache
    file that fails its check is reported in a warning (the caller rebuilds the cache).
    """
    cache_dir = root / "cache"
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
        files, keys = manifest["files"], manifest["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (manifest.get("format") != CACHE_FORMAT or manifest.get("source_sha256") != digest
            or not isinstance(files, dict) or sorted(files) != sorted(f"{k}.npy" for k in keys)):
        return None
    stamp = _read_stamp(root)
    checked = dict(stamp.get("files", {}))
    for name, expected in files.items():
        path, rel = cache_dir / name, f"cache/{name}"
        if _vouched(stamp, rel, path, expected):
            continue
        try:
            since, key = time.time_ns(), _stat_key(path)
            actual = sha256_file(path)
        except OSError:
            return None
        if actual != expected:
            warnings.warn(f"{path} fails its checksum (SHA-256 {actual[:16]}..., the cache "
                          f"manifest records {expected[:16]}...); rebuilding the cache from "
                          f"the verified {root / 'data' / DATA_FILE}.", RuntimeWarning,
                          stacklevel=3)
            return None
        checked[rel] = _checked(key, actual, since)
    if checked != stamp.get("files"):
        _write_stamp(root, checked)
    try:
        # The T+1-layout arrays are only ever read through copies (the transition view,
        # padded batches), so mapping them saves a full pass over the largest arrays.
        loaded = {k: np.load(cache_dir / f"{k}.npy", allow_pickle=False,
                             mmap_mode="r" if k in _MAPPED else None)
                  for k in keys}
        loaded.setdefault("avail_actions", None)
        loaded.setdefault("won", None)
        return EpisodeArrays(**loaded)
    except (OSError, ValueError, TypeError):
        return None


def read_episodes_from_hdf5(main_file: Path, info: TaskInfo) -> EpisodeArrays:
    """Rebuild the flat arrays from the Minari file (used when the cache is missing or stale)."""
    n, pad_obs = info.n_agents, info.obs_dim
    parts_obs, parts_state, parts_avail, parts_act = [], [], [], []
    parts = {k: [] for k in ("rewards", "terminals", "timeouts", "agent_rewards", "won")}
    lengths, seeds = [], []
    try:
        with h5py.File(main_file, "r") as f:
            count = len(f.keys())
            for k in range(count):
                g = f[f"episode_{k}"]
                og, ag = g["observations"], g["actions"]
                steps = int(g.attrs["total_steps"])
                obs = np.zeros((steps + 1, n, pad_obs), np.float32)
                for i, agent in enumerate(info.agent_ids):
                    obs[:, i, : info.obs_dims[i]] = og[agent][()]
                parts_obs.append(obs)
                parts_state.append(og["state"][()])
                if info.discrete:
                    parts_avail.append(og["avail_actions"][()].astype(bool))
                    parts_act.append(np.stack([ag[a][()] for a in info.agent_ids], 1).astype(np.int64))
                else:
                    act = np.zeros((steps, n, info.action_dim), np.float32)
                    for i, agent in enumerate(info.agent_ids):
                        act[:, i, : info.action_dims[i]] = ag[agent][()]
                    parts_act.append(act)
                parts["rewards"].append(g["rewards"][()])
                parts["terminals"].append(g["terminations"][()])
                parts["timeouts"].append(g["truncations"][()])
                parts["agent_rewards"].append(g["infos"]["agent_rewards"][()])
                if "won" in g["infos"]:
                    parts["won"].append(g["infos"]["won"][()])
                lengths.append(steps)
                seeds.append(int(g.attrs.get("seed", -1)))
    except (OSError, KeyError, ValueError) as err:
        raise CorruptDatasetError(f"Cannot read {main_file}: {err}. Delete the dataset and "
                                  "collect it again.") from err
    return EpisodeArrays(
        obs=np.concatenate(parts_obs), states=np.concatenate(parts_state).astype(np.float32),
        avail_actions=np.concatenate(parts_avail) if parts_avail else None,
        actions=np.concatenate(parts_act),
        rewards=np.concatenate(parts["rewards"]).astype(np.float32),
        agent_rewards=np.concatenate(parts["agent_rewards"]).astype(np.float32),
        terminals=np.concatenate(parts["terminals"]).astype(bool),
        timeouts=np.concatenate(parts["timeouts"]).astype(bool),
        won=np.concatenate(parts["won"]).astype(bool) if parts["won"] else None,
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        seeds=np.asarray(seeds, np.int64),
    )


def read_dataset(minari_id: str, info: TaskInfo) -> EpisodeArrays:
    """Verified episodes of a built dataset, from the flat cache when every cache file passes
    its check; otherwise rebuilt from the verified data file (and the cache rewritten).

    Raises:
        CorruptDatasetError: the data file fails its checksum or cannot be read (naming it).
    """
    digest = verify(minari_id)
    root = dataset_dir(minari_id)
    # One process at a time checks or rewrites a cache; the others then find it current.
    with _file_lock(root / ".cache.lock", required=False):
        data = _read_cache(root, digest)
        if data is None:
            data = read_episodes_from_hdf5(root / "data" / DATA_FILE, info)
            try:
                tmp = root / f".cache-{uuid.uuid4().hex[:8]}"
                files = _write_cache(tmp, data, digest)
                shutil.rmtree(root / "cache", ignore_errors=True)
                os.replace(tmp, root / "cache")
                stamp = _read_stamp(root)
                checked = {k: v for k, v in stamp.get("files", {}).items()
                           if not k.startswith("cache/")}
                now = time.time_ns()
                checked.update({f"cache/{n}": _checked(_stat_key(root / "cache" / n), sha, now)
                                for n, sha in files.items()})
                _write_stamp(root, checked)
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                # A read-only dataset folder still loads, from the data file each time.
                warnings.warn(f"Cannot rewrite the cache under {root} ({err}); loading from "
                              f"{root / 'data' / DATA_FILE} each time until it is writable.",
                              RuntimeWarning, stacklevel=2)
    return data
