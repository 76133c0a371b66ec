"""Running policies on the vectorised adapters, and building datasets from what they do.

A policy is any callable ``policy(obs, avail_actions) -> actions`` on batches
(obs [B, n_agents, obs_dim], avail [B, n_agents, n_actions] or None; actions [B, n_agents] int
or [B, n_agents, action_dim] float in [-1, 1]). If it has a ``reset(num_envs)`` method (a
recurrent policy's hidden state, say), it is called before every batch of episodes.

Episodes run in lock-step batches of ``num_envs``: batch b is reset with a seed derived from
``(seed, b)``, so the same seed and ``num_envs`` give the same episodes.
"""
from __future__ import annotations

import math
import numbers
import platform
import subprocess
import time
from importlib import metadata as importlib_metadata
from typing import Any, Callable

import numpy as np

from .dataset import EpisodeArrays
from .envs import TaskInfo, VectorTaskEnv, make_vec_env, task_info
from .envs.conformance import random_actions
from .registry import (SCORE_COMPATIBLE_ENGINES, DatasetEntry, engine_variant, get_dataset,
                       get_task, reference_scores)

Policy = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]

#: How the shipped behaviour checkpoints act when they make medium, expert and mixed data:
#: QMIX greedily over available actions, as it was evaluated when chosen; MATD3's deterministic
#: actors with Gaussian noise of std 0.1 (its final exploration noise in training), clipped to
#: [-1, 1], so that continuous data cover more than one action per state.
BEHAVIOUR_EXPLORATION: dict[str, dict[str, float]] = {"qmix": {"epsilon": 0.0},
                                                      "matd3": {"noise_std": 0.1}}

#: How QMIX agents choose among Q-values when collecting, recorded in each recipe: in float64
#: with ties to the lowest index, the same on every CPU. Canonical builds recorded without this
#: key chose in float32, which torch's vectorised and scalar kernels can round apart.
ACTION_CHOICE = {"qmix": {"action_choice": "float64, ties to the lowest index"}}

#: batch sizes per family: big batches for the jitted engines, one per core for MuJoCo.
DEFAULT_NUM_ENVS = {"equal_line": 500, "mpe": 1000, "smac": 250, "mamujoco": 16}


class RandomPolicy:
    """Uniform over each agent's available actions (discrete) or over [-1, 1]^d (continuous)."""

    def __init__(self, info: TaskInfo, seed: int = 0):
        self.info = info
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        return random_actions(self.info, avail, obs.shape[0], self.rng)


def batch_seed(seed: int, batch: int) -> int:
    """The reset seed of lock-step batch ``batch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def rollout(env: VectorTaskEnv, policy: Policy, n_episodes: int, seed: int,
            progress: Any = None) -> EpisodeArrays:
    """Run ``n_episodes`` episodes of ``policy`` on ``env`` and return them concatenated.

    Args:
        env: a vector env; its ``num_envs`` episodes run together per batch.
        policy: see the module docstring.
        n_episodes: how many episodes to keep (the last batch is trimmed).
        seed: derives every batch's reset seed.
        progress: an optional tqdm bar, advanced by finished episodes.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    parts = []
    for b in range(math.ceil(n_episodes / env.num_envs)):
        keep = min(env.num_envs, n_episodes - b * env.num_envs)
        parts.append(_run_batch(env, policy, batch_seed(seed, b), keep))
        if progress is not None:
            progress.update(keep)
    return EpisodeArrays.concatenate(parts)


def _run_batch(env: VectorTaskEnv, policy: Policy, seed: int, keep: int) -> EpisodeArrays:
    info, batch, limit = env.info, env.num_envs, env.info.episode_limit
    if hasattr(policy, "reset"):
        policy.reset(batch)
    first = env.reset(seed)
    obs = np.zeros((batch, limit + 1) + first.obs.shape[1:], np.float32)
    states = np.zeros((batch, limit + 1, info.state_dim), np.float32)
    avail = None if first.avail_actions is None else \
        np.zeros((batch, limit + 1) + first.avail_actions.shape[1:], bool)
    act_shape = (info.n_agents,) if info.discrete else (info.n_agents, info.action_dim)
    actions = np.zeros((batch, limit) + act_shape, np.int64 if info.discrete else np.float32)
    rewards = np.zeros((batch, limit), np.float32)
    agent_rewards = np.zeros((batch, limit, info.n_agents), np.float32)
    terminals = np.zeros((batch, limit), bool)
    timeouts = np.zeros((batch, limit), bool)
    won = np.zeros((batch, limit), bool)
    lengths = np.full(batch, limit, np.int64)
    alive = np.ones(batch, bool)
    current = first
    obs[:, 0], states[:, 0] = current.obs, current.state
    if avail is not None:
        avail[:, 0] = current.avail_actions
    has_won = False
    for t in range(limit):
        act = np.asarray(policy(current.obs, current.avail_actions))
        out = env.step(act)
        live = alive
        actions[live, t] = act[live]
        rewards[live, t] = out.reward[live]
        agent_rewards[live, t] = out.agent_rewards[live]
        terminals[live, t] = out.terminated[live]
        timeouts[live, t] = out.truncated[live] & ~out.terminated[live]
        if out.won is not None:
            has_won = True
            won[live, t] = out.won[live]
        obs[live, t + 1] = out.next.obs[live]
        states[live, t + 1] = out.next.state[live]
        if avail is not None:
            avail[live, t + 1] = out.next.avail_actions[live]
        ended = live & (out.terminated | out.truncated)
        lengths[ended] = t + 1
        alive = live & ~ended
        current = out.next
        if not alive.any():
            break
    if alive.any():
        # The engine's own limit is the task's: an episode still running here is a time-out.
        timeouts[alive, limit - 1] = True
    lengths, seeds = lengths[:keep], np.full(keep, seed, np.int64)
    step_mask = np.arange(limit)[None, :] < lengths[:, None]
    obs_mask = np.arange(limit + 1)[None, :] <= lengths[:, None]
    return EpisodeArrays(
        obs=obs[:keep][obs_mask],
        states=states[:keep][obs_mask],
        avail_actions=None if avail is None else avail[:keep][obs_mask],
        actions=actions[:keep][step_mask],
        rewards=rewards[:keep][step_mask],
        agent_rewards=agent_rewards[:keep][step_mask],
        terminals=terminals[:keep][step_mask],
        timeouts=timeouts[:keep][step_mask],
        won=won[:keep][step_mask] if has_won else None,
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        seeds=seeds,
    )


# -- statistics and provenance ---------------------------------------------------------------
def episode_statistics(data: EpisodeArrays) -> dict[str, Any]:
    returns = data.episode_returns()
    stats = {
        "episodes": int(data.n_episodes),
        "transitions": int(data.n_transitions),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "episode_length_mean": float(data.lengths.mean()),
    }
    won = data.episode_won()
    if won is not None:
        stats["win_rate"] = float(won.mean())
    return stats


def package_versions() -> dict[str, str]:
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
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=__file__.rsplit("/", 2)[0])
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- building registered datasets -------------------------------------------------------------
def _shipped_checkpoint(task_id: str, quality: str):
    """The shipped behaviour checkpoint of a task, or None (``collection`` is imported lazily)."""
    try:
        from collection.behaviour import shipped_checkpoint
    except ImportError:
        return None
    path = shipped_checkpoint(task_id, quality)
    return path if path.is_file() else None


def _shipped_medium_replay(task_id: str):
    """The shipped file that rebuilds a task's medium-replay, or None."""
    try:
        from collection.behaviour import shipped_medium_replay
    except ImportError:
        return None
    return shipped_medium_replay(task_id)


def medium_replay_episodes(task_id: str) -> int:
    """How many episodes the shipped medium-replay of a task holds."""
    import json

    path = _shipped_medium_replay(task_id)
    return int(json.loads((path.parent / "config.json").read_text())["medium_replay"]["episodes"])


def build_blocker(entry: DatasetEntry) -> str | None:
    """Why this installation cannot build the dataset, or None when it can."""
    task = entry.task
    if task.needs:
        return f"{entry.dataset_id} cannot be built yet: the task needs {task.needs}."
    if entry.quality == "random":
        return None
    if entry.engine and entry.quality == "medium-replay":
        return (f"{entry.dataset_id}: medium-replay is the behaviour learner's own episodes, "
                f"on the engine it trained on; it has no {entry.engine} variant.")
    if entry.engine == "sc2":
        return (f"{entry.dataset_id} needs a {task.behaviour.upper()} agent trained on StarCraft "
                "II; the shipped ones were trained on SMAX, whose observations differ, and "
                "none trained on StarCraft II ships. On sc2 this version collects `random` only.")
    if entry.quality == "medium-replay":
        if _shipped_medium_replay(task.task_id) is None:
            return (f"{entry.dataset_id} is rebuilt from the {task.behaviour.upper()} learner's "
                    "own episodes up to medium performance, and this version does not ship "
                    f"what rebuilds them for {task.task_id} yet (`marl-bench list --buildable` "
                    "shows what can be built).")
        return None
    needed = ("medium", "expert") if entry.quality == "mixed" else (entry.quality,)
    missing = [q for q in needed if _shipped_checkpoint(task.task_id, q) is None]
    if missing:
        return (f"{entry.dataset_id} needs the trained {task.behaviour.upper()} "
                f"{' and '.join(missing)} checkpoint of {task.task_id}, and none ships with this "
                "version of the package yet (`marl-bench list --buildable` shows what can be "
                "built).")
    return None


def behaviour_policy(entry: DatasetEntry, info: TaskInfo, seed: int,
                     quality: str | None = None) -> Policy:
    """The policy that makes a dataset of this quality, or a clear error if it cannot yet.

    Shipped behaviour checkpoints act as :data:`BEHAVIOUR_EXPLORATION` says.
    """
    blocker = build_blocker(entry)
    if blocker:
        raise RuntimeError(blocker)
    quality = quality or entry.quality
    if quality == "random":
        return RandomPolicy(info, seed)
    from collection.behaviour import behaviour_policy as checkpoint_policy

    return checkpoint_policy(_shipped_checkpoint(entry.task_id, quality), seed=seed,
                             **BEHAVIOUR_EXPLORATION[entry.task.behaviour])


def _collect_episodes(entry: DatasetEntry, env: VectorTaskEnv, info: TaskInfo,
                      n_episodes: int, seed: int, bar, engine: str | None = None
                      ) -> tuple[EpisodeArrays, dict[str, Any]]:
    """Episodes of a quality and what to add to its recipe."""
    if entry.quality == "medium-replay":
        from collection.behaviour import rebuild_medium_replay

        data, how = rebuild_medium_replay(entry.task_id, n_episodes, engine=engine, progress=bar)
        # Not seeded here: the learner's own seeds made these episodes.
        return data, {"medium_replay": how, "seed": None, "num_envs": None}
    if entry.quality != "mixed":
        data = rollout(env, behaviour_policy(entry, info, seed), n_episodes, seed, progress=bar)
        extra: dict[str, Any] = {}
        if entry.quality in ("medium", "expert"):
            path = _shipped_checkpoint(entry.task_id, entry.quality)
            extra = {"behaviour_checkpoint": _checkpoint_name(path),
                     "behaviour_sha256": _sha256(path),
                     **BEHAVIOUR_EXPLORATION[entry.task.behaviour],
                     **ACTION_CHOICE.get(entry.task.behaviour, {})}
        return data, extra
    half = n_episodes // 2
    medium = rollout(env, behaviour_policy(entry, info, seed, "medium"), half, seed, progress=bar)
    expert = rollout(env, behaviour_policy(entry, info, seed + 1, "expert"), n_episodes - half,
                     seed + 1, progress=bar)
    extra = {"parts": {"medium": {"episodes": half, "seed": seed},
                       "expert": {"episodes": n_episodes - half, "seed": seed + 1}},
             **BEHAVIOUR_EXPLORATION[entry.task.behaviour],
             **ACTION_CHOICE.get(entry.task.behaviour, {}),
             "behaviour_checkpoints": [_checkpoint_name(_shipped_checkpoint(entry.task_id, q))
                                       for q in ("medium", "expert")],
             "behaviour_sha256": [_sha256(_shipped_checkpoint(entry.task_id, q))
                                  for q in ("medium", "expert")]}
    return EpisodeArrays.concatenate([medium, expert]), extra


def _checkpoint_name(path) -> str:
    """A shipped checkpoint as ``collection/checkpoints/<task>/<file>``; others by full path."""
    parts = path.resolve().parts
    if "collection" in parts and parts[parts.index("collection") + 1] == "checkpoints":
        return "/".join(parts[parts.index("collection"):])
    return str(path)


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_dataset(dataset_id: str, episodes: int | None = None, seed: int = 0,
                    num_envs: int | None = None, overwrite: bool = False,
                    show_progress: bool = True, engine: str | None = None):
    """Build a registered dataset on disk and return its directory.

    Args:
        dataset_id: a registered id, e.g. ``"equal_line-n6-random-v0"``.
        episodes: how many episodes (default: the registry's size for the task).
        seed: the collection seed (the same seed and num_envs repeat the same episodes).
        num_envs: lock-step batch size (default per family).
        overwrite: replace an existing dataset.
        show_progress: show tqdm bars.
        engine: simulator override (e.g. ``"sc2"`` for SMAC on StarCraft II).

    Two processes that build the same dataset at once do not race: the second waits on the
    dataset's build lock and then returns the first one's build (with ``overwrite``, builds
    its own after it).

    Raises:
        FileExistsError: already built (or a damaged folder is in the way) and not
            ``overwrite``.
        RuntimeError: this installation cannot build the dataset (the message says why).
        PermissionError, NotADirectoryError: the datasets root is not writable (checked
            before any episode is generated).
        ValueError: a non-positive ``episodes`` or ``num_envs`` or a negative ``seed``.
    """
    from . import storage

    # Another simulator's data get their own id (smac-2s3z-random-sc2-v0), never the default's.
    entry = engine_variant(dataset_id, engine)
    dataset_id, engine = entry.dataset_id, entry.engine
    task = entry.task
    if episodes is not None and (isinstance(episodes, bool) or episodes < 1):
        raise ValueError(f"episodes must be a positive number of episodes, got {episodes!r}.")
    if num_envs is not None and (isinstance(num_envs, bool) or num_envs < 1):
        raise ValueError(f"num_envs must be at least 1, got {num_envs!r}.")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    final = storage.dataset_dir(entry.minari_id)
    _check_not_built(entry, final, overwrite)
    blocker = build_blocker(entry)
    if blocker:
        raise RuntimeError(blocker)
    # Known before any episode is generated: a root we cannot write to.
    storage.check_writable(final.parent, "The datasets folder",
                           "Set MINARI_DATASETS_PATH to a folder you can write to (datasets "
                           "take up to a few GB each; see the README).")
    waiting = (f"{dataset_id}: another process is building it; waiting for it to finish "
               f"(lock {final.parent / ('.' + final.name + '.lock')})")
    with storage.build_lock(entry.minari_id, waiting) as waited:
        if waited and not overwrite and storage.is_built(entry.minari_id):
            # The process we waited for built it: use its build rather than repeat the work
            # (with overwrite, the caller asked for a build of its own: it follows the other).
            return final
        _check_not_built(entry, final, overwrite)
        return _collect_locked(entry, episodes, seed, num_envs, overwrite, show_progress)


def _check_not_built(entry: DatasetEntry, final, overwrite: bool) -> None:
    from . import storage

    if overwrite:
        return
    if storage.is_built(entry.minari_id):
        raise FileExistsError(f"{entry.dataset_id} is already built at {final}; use --force "
                              "to rebuild.")
    if final.exists():
        raise FileExistsError(f"{final} exists but has no data/metadata.json (a damaged "
                              f"dataset): rebuild it with --force (collect_dataset(..., "
                              f"overwrite=True)), or delete {final}.")


def _collect_locked(entry: DatasetEntry, episodes: int | None, seed: int,
                    num_envs: int | None, overwrite: bool, show_progress: bool):
    """The body of :func:`collect_dataset`, run while holding the dataset's build lock."""
    from tqdm.auto import tqdm

    from . import storage

    dataset_id, engine, task = entry.dataset_id, entry.engine, entry.task
    n_episodes = episodes or task.dataset_episodes
    if entry.quality == "medium-replay":
        # As many episodes as the learner's replay held, unless fewer (the last ones) are asked.
        window = medium_replay_episodes(task.task_id)
        n_episodes = min(episodes or window, window)
    num_envs = min(num_envs or DEFAULT_NUM_ENVS[task.family], n_episodes)
    info = task_info(task.task_id)
    env = make_vec_env(task.task_id, 1 if entry.quality == "medium-replay" else num_envs,
                       engine=engine)
    started = time.time()
    try:
        with tqdm(total=n_episodes, desc=f"collect {dataset_id}", unit="ep",
                  disable=not show_progress) as bar:
            data, recipe_extra = _collect_episodes(entry, env, info, n_episodes, seed, bar,
                                                   engine)
    finally:
        env.close()
    info = env.info
    refs = reference_scores(task.task_id) if entry.engine in (None, *SCORE_COMPATIBLE_ENGINES) \
        else {}
    stats = episode_statistics(data)
    if "ref_random" in refs and "ref_expert" in refs:
        lo, hi = refs["ref_random"]["value"], refs["ref_expert"]["value"]
        stats["normalized_score"] = 100.0 * (stats["return_mean"] - lo) / (hi - lo)
    metadata = {
        "dataset_id": dataset_id,
        "task_id": task.task_id,
        "quality": entry.quality,
        "recipe": {**entry.recipe, "episodes": n_episodes, "seed": seed, "num_envs": num_envs,
                   **recipe_extra},
        "engine": info.engine,
        "versions": package_versions(),
        "commit": git_commit(),
        "collect_seconds": round(time.time() - started, 2),
        "statistics": stats,
        "reference_scores": refs,
        "agent_ids": list(info.agent_ids),
    }
    if "ref_random" in refs and "ref_expert" in refs:
        metadata["ref_min_score"] = refs["ref_random"]["value"]
        metadata["ref_max_score"] = refs["ref_expert"]["value"]
        metadata["num_episodes_average_score"] = refs["ref_expert"]["episodes"]
    with tqdm(total=data.n_episodes, desc="write", unit="ep", disable=not show_progress) as bar:
        return storage.write_dataset(entry.minari_id, info, data, metadata,
                                     overwrite=overwrite, progress=bar)
