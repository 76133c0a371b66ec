"""The learner's joint actions, per acting batch: a small, exact record of medium-replay.

The adapters are deterministic given a batch's reset seed and the actions taken (the MPE prey
is a deterministic function of its observation), so a learner's episodes can be re-simulated
from its actions alone. For QMIX that is about 100 times smaller than the acting weights that
chose them: 0.2 MB for the 2144 episodes of 2s3z's medium-replay against 20 MB of compressed
agent snapshots (measured). Discrete actions are stored as bytes, continuous ones as the exact
float32 values the simulator was given.

A log holds, per acting batch, its reset seed and the learner episode it started at, and per
episode its length and actions. Rebuilding re-runs each batch through
:func:`marl_offline_bench.rollout` with :class:`RecordedActions` as the policy, keeps the
window's episodes, and checks their SHA-256 against the one recorded when the log was made. A
mismatch means the simulator itself changed (another engine version), and is reported.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import EpisodeArrays
from .envs import make_vec_env
from .rollout import rollout

__all__ = ["RecordedActions", "episodes_digest", "write_action_log", "read_action_log",
           "replay_action_log", "ActionLogError"]

_FORMAT = "marl-bench-action-log/1"


class ActionLogError(ValueError):
    """A missing or corrupt action log."""


class RecordedActions:
    """A policy that plays back one batch's recorded joint actions, step by step."""

    def __init__(self, actions: np.ndarray):
        self.actions = actions  # [num_envs, T, n_agents]
        self.t = 0

    def reset(self, num_envs: int) -> None:
        if num_envs != self.actions.shape[0]:
            raise ValueError(f"recorded for {self.actions.shape[0]} envs, asked for {num_envs}")
        self.t = 0

    def __call__(self, obs: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        t = min(self.t, self.actions.shape[1] - 1)
        self.t += 1
        step = self.actions[:, t]
        return step.astype(np.int64) if step.dtype == np.uint8 else step


def episodes_digest(data: EpisodeArrays) -> str:
    """SHA-256 over what a replay must reproduce: observations, states, actions, rewards, ends."""
    h = hashlib.sha256()
    for array in (data.obs, data.states, data.actions, data.rewards, data.terminals,
                  data.timeouts, data.episode_starts):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def write_action_log(path: str | Path, batches: list[tuple[int, int, EpisodeArrays]],
                     first_episode: int, until_episode: int, window: EpisodeArrays,
                     description: dict[str, Any]) -> str:
    """Write a log of acting batches; returns the file's sha256.

    Args:
        batches: (reset seed, first learner episode, all episodes of the batch) in acting order.
        first_episode, until_episode: the window of learner episodes the log rebuilds.
        window: those episodes, as replayed from the snapshots (their digest is recorded).
        description: JSON that says what the log is for.
    """
    path = Path(path)
    num_envs = {b[2].n_episodes for b in batches}
    if len(num_envs) != 1:
        raise ValueError(f"acting batches of different sizes: {sorted(num_envs)}")
    actions = np.concatenate([b[2].actions for b in batches])
    if actions.dtype.kind in "iu":
        if actions.min() < 0 or actions.max() > 255:
            raise ValueError("an action log holds discrete actions in [0, 255]")
        actions = actions.astype(np.uint8)
    else:
        actions = actions.astype(np.float32)   # exactly what the simulator was given
    meta = {"format": _FORMAT, "description": description, "num_envs": num_envs.pop(),
            "first_episode": first_episode, "until_episode": until_episode,
            "digest": episodes_digest(window), "n_agents": int(actions.shape[1])}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            batch_seed=np.array([b[0] for b in batches], np.int64),
            batch_episode=np.array([b[1] for b in batches], np.int64),
            lengths=np.concatenate([b[2].lengths for b in batches]).astype(np.int32),
            actions=actions)
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_action_log(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ActionLogError(f"no action log at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            log = {k: npz[k] for k in npz.files}
        meta = json.loads(log.pop("meta").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ActionLogError(f"{path} is not a readable action log ({err}); restore it from the "
                             "package (git checkout) or reinstall") from err
    if meta.get("format") != _FORMAT:
        raise ActionLogError(f"{path}: unknown format {meta.get('format')!r}")
    if log["lengths"].sum() != len(log["actions"]):
        raise ActionLogError(f"{path}: episode lengths and actions disagree; the file is corrupt")
    return {**log, "meta": meta}


def replay_action_log(path: str | Path, task_id: str, first_episode: int | None = None,
                      engine: str | None = None, progress: Any = None
                      ) -> tuple[EpisodeArrays, bool | None]:
    """Re-simulate a log's window (from ``first_episode`` on, if given).

    Returns the episodes and whether they match the recorded digest (None when only part of
    the window was rebuilt, which the digest does not cover).
    """
    log = read_action_log(path)
    meta = log["meta"]
    num_envs, until = int(meta["num_envs"]), int(meta["until_episode"])
    first = int(meta["first_episode"]) if first_episode is None else \
        max(int(meta["first_episode"]), first_episode)
    offsets = np.concatenate([[0], np.cumsum(log["lengths"])])
    env = make_vec_env(task_id, num_envs, engine=engine)
    parts = []
    try:
        for b, (seed, start) in enumerate(zip(log["batch_seed"].tolist(),
                                              log["batch_episode"].tolist())):
            if start + num_envs <= first or start >= until:
                continue
            lengths = log["lengths"][b * num_envs:(b + 1) * num_envs]
            recorded = np.zeros((num_envs, int(lengths.max())) + log["actions"].shape[1:],
                                log["actions"].dtype)
            for e in range(num_envs):
                lo = offsets[b * num_envs + e]
                recorded[e, :lengths[e]] = log["actions"][lo:lo + lengths[e]]
            data = rollout(env, RecordedActions(recorded), num_envs, seed)
            if not np.array_equal(data.lengths, lengths):
                raise ActionLogError(
                    f"{path}: acting batch {b} replays with episode lengths {data.lengths.tolist()}"
                    f", the log says {lengths.tolist()}; the simulator differs from the one that "
                    f"made the log ({meta['description'].get('engine')})")
            keep = np.arange(max(start, first), min(start + num_envs, until)) - start
            parts.append(data.select_episodes(keep))
            if progress is not None:
                progress.update(len(keep))
    finally:
        env.close()
    if not parts:
        raise ActionLogError(f"{path}: no acting batch covers episodes [{first}, {until})")
    data = EpisodeArrays.concatenate(parts)
    whole = first == int(meta["first_episode"])
    return data, (episodes_digest(data) == meta["digest"]) if whole else None
