"""Equal_Line, the CFCQL paper's one-dimensional spreading task (appendix C.1).

n agents start uniformly in [0, 2) on a line of length L = max(10, 2n). Each step every agent
picks one of 11 moves; positions are clipped to [0, L]. All agents see every position divided
by L, which is also the global state. The team is paid 10 (n - 1) (d_t - d_{t-1}) / L per step,
d_t the smallest pairwise distance after step t and d_0 = 0, so an episode's return telescopes
to 10 (n - 1) d_T / L: the best return is reached by spreading out evenly. Episodes last 50
steps and end by truncation only.
"""
from __future__ import annotations

import numpy as np

from .base import TaskEnv, TaskInfo, VecObservation, VecStep, VectorTaskEnv

MOVES = np.array([0.0, -0.01, -0.05, -0.1, -0.5, -1.0, 0.01, 0.05, 0.1, 0.5, 1.0], np.float32)
EPISODE_LIMIT = 50
AGENT_COUNTS = (2, 4, 6, 8, 10)


def line_length(n_agents: int) -> float:
    return float(max(10, 2 * n_agents))


def task_info(n_agents: int) -> TaskInfo:
    if n_agents < 2:
        raise ValueError(f"Equal_Line needs at least 2 agents, got {n_agents}")
    return TaskInfo(
        task_id=f"equal_line-n{n_agents}",
        agent_ids=tuple(f"agent_{i}" for i in range(n_agents)),
        obs_dims=(n_agents,) * n_agents,
        state_dim=n_agents,
        discrete=True,
        n_actions=len(MOVES),
        action_dims=(),
        episode_limit=EPISODE_LIMIT,
        engine={"name": "marl_offline_bench.equal_line", "line_length": line_length(n_agents)},
    )


def min_pairwise_distance(positions: np.ndarray) -> np.ndarray:
    """Smallest gap between any two agents: positions [B, n] -> [B]."""
    ordered = np.sort(positions, axis=1)
    return np.diff(ordered, axis=1).min(axis=1)


class EqualLineVectorEnv(VectorTaskEnv):
    """``num_envs`` Equal_Line episodes stepped together with numpy."""

    def __init__(self, n_agents: int, num_envs: int = 1):
        self.info = task_info(n_agents)
        self.num_envs = num_envs
        self.n_agents = n_agents
        self.length = line_length(n_agents)
        self.reward_scale = 10.0 * (n_agents - 1) / self.length
        self._positions = np.zeros((num_envs, n_agents), np.float32)
        self._last_distance = np.zeros(num_envs, np.float32)
        self._t = 0

    def _observe(self) -> VecObservation:
        scaled = self._positions / self.length
        obs = np.repeat(scaled[:, None, :], self.n_agents, axis=1).astype(np.float32)
        avail = np.ones((self.num_envs, self.n_agents, len(MOVES)), bool)
        return VecObservation(obs=obs, state=scaled.astype(np.float32), avail_actions=avail)

    def reset(self, seed: int) -> VecObservation:
        rng = np.random.default_rng(seed)
        self._positions = rng.uniform(0.0, 2.0, (self.num_envs, self.n_agents)).astype(np.float32)
        self._last_distance = np.zeros(self.num_envs, np.float32)
        self._t = 0
        return self._observe()

    def step(self, actions: np.ndarray) -> VecStep:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.n_agents):
            raise ValueError(
                f"Equal_Line actions must have shape {(self.num_envs, self.n_agents)}, "
                f"got {actions.shape}"
            )
        self._positions = np.clip(self._positions + MOVES[actions], 0.0, self.length)
        distance = min_pairwise_distance(self._positions).astype(np.float32)
        reward = (self.reward_scale * (distance - self._last_distance)).astype(np.float32)
        self._last_distance = distance
        self._t += 1
        truncated = np.full(self.num_envs, self._t >= EPISODE_LIMIT)
        return VecStep(
            next=self._observe(),
            reward=reward,
            agent_rewards=np.repeat(reward[:, None], self.n_agents, axis=1),
            terminated=np.zeros(self.num_envs, bool),
            truncated=truncated,
        )


class EqualLineEnv(TaskEnv):
    """One Equal_Line episode at a time, as a PettingZoo ``ParallelEnv``."""

    def __init__(self, n_agents: int):
        self.info = task_info(n_agents)
        self._core = EqualLineVectorEnv(n_agents, num_envs=1)
        self._unseeded = np.random.default_rng()
        super().__init__()

    def _reset(self, seed):
        # reset(seed=s) replays the same episode as EqualLineVectorEnv(n, 1).reset(s).
        first = self._core.reset(int(self._unseeded.integers(2**31)) if seed is None else seed)
        self._last = first
        return list(first.obs[0]), first.avail_actions[0]

    def _step(self, actions):
        out = self._core.step(np.asarray(actions, dtype=np.int64)[None, :])
        self._last = out.next
        return dict(
            obs=list(out.next.obs[0]),
            avail=out.next.avail_actions[0],
            agent_rewards=out.agent_rewards[0],
            reward=float(out.reward[0]),
            terminated=bool(out.terminated[0]),
            truncated=bool(out.truncated[0]),
        )

    def state(self) -> np.ndarray:
        return self._last.state[0].copy()
