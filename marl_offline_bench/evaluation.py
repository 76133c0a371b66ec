"""Scoring a policy on a task's vectorised engine, for users' algorithms and the baselines."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .envs import make_vec_env
from .registry import get_task, reference_scores
from .rollout import DEFAULT_NUM_ENVS, Policy, rollout
from .scores import score_normalizer


@dataclass
class EvaluationResult:
    """Per-episode outcomes of :func:`evaluate_policy`.

    Attributes:
        returns: [episodes] team returns.
        normalized_scores: [episodes] on the 0-100 scale, or None while the task has no
            measured expert reference.
        win_rate: fraction of won episodes (SMAC), else None.
        lengths: [episodes] episode lengths.
    """

    returns: np.ndarray
    normalized_scores: np.ndarray | None
    win_rate: float | None
    lengths: np.ndarray

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def mean_normalized_score(self) -> float | None:
        return None if self.normalized_scores is None else float(self.normalized_scores.mean())


def evaluate_policy(policy: Policy, task: str, episodes: int = 32, seed: int = 10_000,
                    num_envs: int | None = None, engine: str | None = None,
                    progress=None) -> EvaluationResult:
    """Run ``policy`` for ``episodes`` episodes of ``task`` and score them.

    Args:
        policy: ``policy(obs [B, n, obs_dim], avail [B, n, A] | None) -> actions``; an optional
            ``reset(num_envs)`` is called before each batch of episodes (recurrent state).
        task: a task id (``"smac-2s3z"``) or a dataset id (its task is used).
        episodes: how many episodes.
        seed: evaluation seed; the default keeps away from the collection seeds.
        num_envs: lock-step batch size (default: all episodes at once, capped per family).
        engine: simulator override.
    """
    task_entry = get_task(task)
    data = play_episodes(policy, task, episodes, seed, num_envs, engine, progress)
    returns = data.episode_returns().astype(np.float64)
    normalize = score_normalizer(reference_scores(task_entry.task_id))
    scores = None if normalize is None else normalize(returns)
    won = data.episode_won()
    return EvaluationResult(returns=returns, normalized_scores=scores,
                            win_rate=None if won is None else float(won.mean()),
                            lengths=data.lengths.copy())


def play_episodes(policy: Policy, task: str, episodes: int = 32, seed: int = 10_000,
                  num_envs: int | None = None, engine: str | None = None, progress=None):
    """The episodes :func:`evaluate_policy` scores, whole (observations, states, actions,
    rewards: an :class:`~marl_offline_bench.dataset.EpisodeArrays`); the same arguments play
    the same starts, so a kept learner's final evaluation can be watched again."""
    task_entry = get_task(task)
    num_envs = min(num_envs or max(DEFAULT_NUM_ENVS[task_entry.family], 1), episodes)
    env = make_vec_env(task_entry.task_id, num_envs, engine=engine)
    try:
        return rollout(env, policy, episodes, seed, progress=progress)
    finally:
        env.close()
