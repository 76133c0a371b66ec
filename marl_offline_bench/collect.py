"""Building registered datasets: the behaviour that makes each quality, run on the vectorised
adapters (:mod:`marl_offline_bench.rollout`), written by :mod:`marl_offline_bench.storage`.

The shipped behaviour agents act from :data:`marl_offline_bench.behaviour.SHIPPED_ROOT`; a
build can act from another folder of the same layout (``behaviour_root``, e.g. the agents that
``marl-bench collect --train`` retrained).
"""
from __future__ import annotations

import numbers
import time
from collections.abc import Iterator
from typing import Any

from .dataset import EpisodeArrays
from .envs import TaskInfo, VectorTaskEnv, make_vec_env, task_info
from .provenance import git_commit, package_versions
from .behaviour import (SHIPPED_ROOT, medium_replay_description, rebuild_medium_replay,
                        shipped_checkpoint, shipped_medium_replay)
from .behaviour import behaviour_policy as checkpoint_policy
from .rollout import DEFAULT_NUM_ENVS, Policy, RandomPolicy, rollout
from .scores import score_normalizer
from .registry import SCORE_COMPATIBLE_ENGINES, DatasetEntry, engine_variant, reference_scores

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


# -- statistics ------------------------------------------------------------------------------
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


# -- building registered datasets -------------------------------------------------------------
def _shipped_checkpoint(task_id: str, quality: str, root=None):
    """A task's behaviour checkpoint under ``root`` (default: the package's), or None."""
    path = shipped_checkpoint(task_id, quality, root)
    return path if path.is_file() else None


def medium_replay_episodes(task_id: str, root=None) -> int:
    """How many episodes the shipped medium-replay of a task holds."""
    return int(medium_replay_description(task_id, root)["episodes"])


def build_blocker(entry: DatasetEntry, behaviour_root=None) -> str | None:
    """Why this installation cannot build the dataset, or None when it can.

    ``behaviour_root``: the folder of behaviour agents to act from (default: the package's).
    """
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
        if shipped_medium_replay(task.task_id, behaviour_root) is None:
            return (f"{entry.dataset_id} is rebuilt from the {task.behaviour.upper()} learner's "
                    "own episodes up to medium performance, and this version does not ship "
                    f"what rebuilds them for {task.task_id} yet (`marl-bench list --buildable` "
                    "shows what can be built).")
        return None
    needed = ("medium", "expert") if entry.quality == "mixed" else (entry.quality,)
    missing = [q for q in needed if _shipped_checkpoint(task.task_id, q, behaviour_root) is None]
    if missing:
        return (f"{entry.dataset_id} needs the trained {task.behaviour.upper()} "
                f"{' and '.join(missing)} checkpoint of {task.task_id}, and none ships with this "
                "version of the package yet (`marl-bench list --buildable` shows what can be "
                "built).")
    return None


def behaviour_policy(entry: DatasetEntry, info: TaskInfo, seed: int,
                     quality: str | None = None, behaviour_root=None) -> Policy:
    """The policy that makes a dataset of this quality, or a clear error if it cannot yet.

    Shipped behaviour checkpoints act as :data:`BEHAVIOUR_EXPLORATION` says.
    """
    blocker = build_blocker(entry, behaviour_root)
    if blocker:
        raise RuntimeError(blocker)
    quality = quality or entry.quality
    if quality == "random":
        return RandomPolicy(info, seed)
    return checkpoint_policy(_shipped_checkpoint(entry.task_id, quality, behaviour_root),
                             seed=seed, **BEHAVIOUR_EXPLORATION[entry.task.behaviour])


def _collect_episodes(entry: DatasetEntry, env: VectorTaskEnv, info: TaskInfo,
                      n_episodes: int, seed: int, bar, engine: str | None = None,
                      root=None) -> tuple[EpisodeArrays, dict[str, Any]]:
    """Episodes of a quality and what to add to its recipe."""
    if entry.quality == "medium-replay":
        data, how = rebuild_medium_replay(entry.task_id, n_episodes, engine=engine, progress=bar,
                                          root=root)
        # Not seeded here: the learner's own seeds made these episodes.
        return data, {"medium_replay": how, "seed": None, "num_envs": None}
    if entry.quality != "mixed":
        data = rollout(env, behaviour_policy(entry, info, seed, behaviour_root=root),
                       n_episodes, seed, progress=bar)
        extra: dict[str, Any] = {}
        if entry.quality in ("medium", "expert"):
            path = _shipped_checkpoint(entry.task_id, entry.quality, root)
            extra = {"behaviour_checkpoint": _checkpoint_name(path),
                     "behaviour_sha256": _sha256(path),
                     **BEHAVIOUR_EXPLORATION[entry.task.behaviour],
                     **ACTION_CHOICE.get(entry.task.behaviour, {})}
        return data, extra
    half = n_episodes // 2
    medium = rollout(env, behaviour_policy(entry, info, seed, "medium", root), half, seed,
                     progress=bar)
    expert = rollout(env, behaviour_policy(entry, info, seed + 1, "expert", root),
                     n_episodes - half, seed + 1, progress=bar)
    extra = {"parts": {"medium": {"episodes": half, "seed": seed},
                       "expert": {"episodes": n_episodes - half, "seed": seed + 1}},
             **BEHAVIOUR_EXPLORATION[entry.task.behaviour],
             **ACTION_CHOICE.get(entry.task.behaviour, {}),
             "behaviour_checkpoints": [_checkpoint_name(_shipped_checkpoint(entry.task_id, q, root))
                                       for q in ("medium", "expert")],
             "behaviour_sha256": [_sha256(_shipped_checkpoint(entry.task_id, q, root))
                                  for q in ("medium", "expert")]}
    return EpisodeArrays.concatenate([medium, expert]), extra


def _checkpoint_name(path) -> str:
    """A shipped checkpoint by its place in the package
    (``marl_offline_bench/data/behaviour/<task>/<file>``); others by full path."""
    path = path.resolve()
    if path.is_relative_to(SHIPPED_ROOT.resolve()):
        return "marl_offline_bench/data/behaviour/" + str(path.relative_to(SHIPPED_ROOT.resolve()))
    return str(path)


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_dataset(dataset_id: str, episodes: int | None = None, seed: int = 0,
                    num_envs: int | None = None, overwrite: bool = False,
                    show_progress: bool = True, engine: str | None = None,
                    behaviour_root=None):
    """Build a registered dataset on disk and return its directory.

    Args:
        dataset_id: a registered id, e.g. ``"equal_line-n6-random-v0"``.
        episodes: how many episodes (default: the registry's size for the task).
        seed: the collection seed (the same seed and num_envs repeat the same episodes).
        num_envs: lock-step batch size (default per family).
        overwrite: replace an existing dataset.
        show_progress: show tqdm bars.
        engine: simulator override (e.g. ``"sc2"`` for SMAC on StarCraft II).
        behaviour_root: a folder of behaviour agents to act from instead of the package's
            (the layout of :data:`marl_offline_bench.behaviour.SHIPPED_ROOT`).

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
    if episodes is not None and (isinstance(episodes, bool) or episodes < 1):
        raise ValueError(f"episodes must be a positive number of episodes, got {episodes!r}.")
    if num_envs is not None and (isinstance(num_envs, bool) or num_envs < 1):
        raise ValueError(f"num_envs must be at least 1, got {num_envs!r}.")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    final = storage.dataset_dir(entry.minari_id)
    _check_not_built(entry, final, overwrite)
    blocker = build_blocker(entry, behaviour_root)
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
        return _collect_locked(entry, episodes, seed, num_envs, overwrite, show_progress,
                               behaviour_root)


def collect_datasets(dataset_ids: list[str], workers: int = 1, show_progress: bool = True,
                     **options: Any) -> Iterator[tuple[str, Any, float]]:
    """Build several registered datasets, one at a time or ``workers`` at once in spawned
    processes; yields (id, directory, seconds) as each build ends.

    ``options`` are :func:`collect_dataset`'s for every build. A build made beside others is the
    same as one made alone: its own seeds, its own file. With several at once the progress bar
    counts datasets (each build's own bars would interleave), and a failed build raises its
    error when it ends, the builds still running finishing first.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    if workers == 1 or len(dataset_ids) <= 1:
        for dataset_id in dataset_ids:
            yield dataset_id, *_timed_collect(dataset_id, show_progress=show_progress, **options)
        return
    from concurrent.futures import as_completed

    from tqdm.auto import tqdm

    from .processes import spawned_pool

    with spawned_pool(min(workers, len(dataset_ids))) as pool:
        futures = {pool.submit(_timed_collect, dataset_id, show_progress=False, **options):
                   dataset_id for dataset_id in dataset_ids}
        for future in tqdm(as_completed(futures), total=len(futures), unit="dataset",
                           desc=f"build ({workers} at once)", disable=not show_progress):
            yield futures[future], *future.result()


def _timed_collect(dataset_id: str, **options: Any) -> tuple[Any, float]:
    """:func:`collect_dataset`, and the seconds it took."""
    started = time.time()
    return collect_dataset(dataset_id, **options), time.time() - started


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
                    num_envs: int | None, overwrite: bool, show_progress: bool,
                    behaviour_root=None):
    """The body of :func:`collect_dataset`, run while holding the dataset's build lock."""
    from tqdm.auto import tqdm

    from . import storage

    dataset_id, engine, task = entry.dataset_id, entry.engine, entry.task
    n_episodes = episodes or task.dataset_episodes
    if entry.quality == "medium-replay":
        # As many episodes as the learner's replay held, unless fewer (the last ones) are asked.
        window = medium_replay_episodes(task.task_id, behaviour_root)
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
                                                   engine, behaviour_root)
    finally:
        env.close()
    info = env.info
    refs = reference_scores(task.task_id) if entry.engine in (None, *SCORE_COMPATIBLE_ENGINES) \
        else {}
    stats = episode_statistics(data)
    if (normalize := score_normalizer(refs)) is not None:
        stats["normalized_score"] = normalize(stats["return_mean"])
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
