"""Datasets on disk: Minari's HDF5 layout, written by our own h5py code, plus a flat cache.

Layout under Minari's root (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``)::

    marl-bench/<task_id>/<quality>-v<N>/
        data/main_data.hdf5     Minari's layout: one group per episode
        data/metadata.json      Minari's metadata, plus ours under "marl_bench"
        cache/*.npy             the same arrays concatenated, for fast load()
        cache/manifest.json     the checksum of the data file the cache was made from
        .verified.json          size, mtime and digest of the last successful check

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
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from .dataset import EpisodeArrays
from .envs.base import TaskInfo

DATA_FILE = "main_data.hdf5"
CACHE_FORMAT = 1
_MAPPED = ("obs", "states", "avail_actions")
_COMPACT_LIMIT = 60_000  # bytes; HDF5 compact datasets must stay under 64 KiB


class CorruptDatasetError(OSError):
    """A dataset file failed its checksum or could not be read."""


def minari_root() -> Path:
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_dir(minari_id: str) -> Path:
    return minari_root() / minari_id


def is_built(minari_id: str) -> bool:
    return (dataset_dir(minari_id) / "data" / "metadata.json").exists()


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


def _write_cache(cache_dir: Path, data: EpisodeArrays, source_sha256: str) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, array in data.arrays().items():
        np.save(cache_dir / f"{name}.npy", array, allow_pickle=False)
    manifest = {"format": CACHE_FORMAT, "source_sha256": source_sha256,
                "keys": sorted(data.arrays())}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))


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
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a collect that was killed
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
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
        _write_cache(tmp / "cache", data, digest)
        (tmp / ".verified.json").write_text(json.dumps(_stat_key(main_file) | {"sha256": digest}))
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


def read_metadata(minari_id: str) -> dict[str, Any]:
    path = dataset_dir(minari_id) / "data" / "metadata.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise CorruptDatasetError(f"Cannot read {path}: {err}. Delete the dataset folder "
                                  "and collect it again.") from err


def verify(minari_id: str) -> str:
    """Check the data file against its recorded SHA-256 (once per size and mtime).

    Raises:
        CorruptDatasetError: naming the file, when the digest differs or the file is missing.
    """
    root = dataset_dir(minari_id)
    main_file = root / "data" / DATA_FILE
    expected = read_metadata(minari_id).get("marl_bench", {}).get("sha256")
    if not main_file.exists():
        raise CorruptDatasetError(f"{main_file} is missing; collect the dataset again.")
    if expected is None:
        raise CorruptDatasetError(f"{root / 'data' / 'metadata.json'} records no checksum; "
                                  "it was not written by marl-bench. Collect it again.")
    stamp_file = root / ".verified.json"
    key = _stat_key(main_file)
    try:
        stamp = json.loads(stamp_file.read_text())
        if {k: stamp.get(k) for k in key} == key and stamp.get("sha256") == expected:
            return expected
    except (OSError, ValueError):
        pass
    actual = sha256_file(main_file)
    if actual != expected:
        raise CorruptDatasetError(
            f"{main_file} is corrupt or truncated: its SHA-256 is {actual[:16]}..., the "
            f"metadata records {expected[:16]}.... Delete {root} and run `marl-bench collect` "
            "for this dataset again."
        )
    tmp = stamp_file.with_suffix(f".{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(key | {"sha256": actual}))
    os.replace(tmp, stamp_file)
    return actual


def _read_cache(cache_dir: Path, digest: str) -> EpisodeArrays | None:
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("source_sha256") != digest:
        return None
    try:
        # The T+1-layout arrays are only ever read through copies (the transition view,
        # padded batches), so mapping them saves a full pass over the largest arrays.
        loaded = {k: np.load(cache_dir / f"{k}.npy", allow_pickle=False,
                             mmap_mode="r" if k in _MAPPED else None)
                  for k in manifest["keys"]}
    except (OSError, ValueError):
        return None
    loaded.setdefault("avail_actions", None)
    loaded.setdefault("won", None)
    return EpisodeArrays(**loaded)


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
    """Verified episodes of a built dataset, from the flat cache when it is current."""
    digest = verify(minari_id)
    root = dataset_dir(minari_id)
    data = _read_cache(root / "cache", digest)
    if data is None:
        data = read_episodes_from_hdf5(root / "data" / DATA_FILE, info)
        tmp = root / f".cache-{uuid.uuid4().hex[:8]}"
        _write_cache(tmp, data, digest)
        shutil.rmtree(root / "cache", ignore_errors=True)
        os.replace(tmp, root / "cache")
    return data
