"""Running policies on the vectorised adapters: what dataset building, evaluation and the
behaviour trainers share.

A policy is any callable ``policy(obs, avail_actions) -> actions`` on batches
(obs [B, n_agents, obs_dim], avail [B, n_agents, n_actions] or None; actions [B, n_agents] int
or [B, n_agents, action_dim] float in [-1, 1]). If it has a ``reset(num_envs)`` method (a
recurrent policy's hidden state, say), it is called before every batch of episodes.

Episodes run in lock-step batches of ``num_envs``: batch b is reset with a seed derived from
``(seed, b)`` (:func:`batch_seed`), so the same seed and ``num_envs`` give the same episodes.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .dataset import EpisodeArrays
from .envs import TaskInfo, VectorTaskEnv
from .envs.conformance import random_actions

__all__ = ["Policy", "RandomPolicy", "batch_seed", "rollout", "DEFAULT_NUM_ENVS"]

#: batch sizes per family: big batches for the jitted engines, one per core for MuJoCo.
DEFAULT_NUM_ENVS = {"equal_line": 500, "mpe": 1000, "smac": 250, "mamujoco": 16}

Policy = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]

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
