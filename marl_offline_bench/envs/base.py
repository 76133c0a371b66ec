"""The one interface every task adapter offers, in two forms.

* :class:`TaskEnv` is a PettingZoo ``ParallelEnv``: dicts keyed by agent id, ``reset(seed,
  options) -> (observations, infos)``, terminations kept apart from truncations, ``state()``,
  spaces as methods. It is what :func:`marl_offline_bench.make_env` returns and what the
  conformance check (:mod:`marl_offline_bench.envs.conformance`) runs against.
* :class:`VectorTaskEnv` steps ``num_envs`` copies of a task as one batch of numpy arrays with
  the agent axis explicit. Collection, behaviour training and evaluation run on it.

Both report, per step, the per-agent rewards, the team reward, ``terminated`` (a real end of the
episode) apart from ``truncated`` (the time limit), the global state, the available actions
(all ones where every action is always allowed) and, for SMAC, ``won``.

Vector semantics: :meth:`VectorTaskEnv.reset` starts a fresh episode in every copy; copies whose
episode has ended are not reset automatically, and what they return from later steps is
undefined: the caller masks them out (see :func:`marl_offline_bench.collect.rollout`). Episodes
therefore run in lock-step batches, which keeps every episode's seed reproducible.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


@dataclass(frozen=True)
class TaskInfo:
    """Static facts about a task, identical for both adapter forms.

    Attributes:
        task_id: ``{family}-{name}``, e.g. ``"smac-2s3z"``.
        agent_ids: the learning team's agent ids, in the order of the agent axis.
        obs_dims: per-agent observation sizes (padded to ``max(obs_dims)`` in batches).
        state_dim: size of the global state.
        discrete: whether actions are discrete.
        n_actions: number of discrete actions (0 for continuous tasks).
        action_dims: per-agent continuous action sizes (empty for discrete tasks).
        episode_limit: the time limit in steps.
        engine: the simulator that produces the data, with the settings that matter.
    """

    task_id: str
    agent_ids: tuple[str, ...]
    obs_dims: tuple[int, ...]
    state_dim: int
    discrete: bool
    n_actions: int
    action_dims: tuple[int, ...]
    episode_limit: int
    engine: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_agents(self) -> int:
        return len(self.agent_ids)

    @property
    def obs_dim(self) -> int:
        """Padded per-agent observation size."""
        return max(self.obs_dims)

    @property
    def action_dim(self) -> int:
        """Padded per-agent continuous action size (0 for discrete tasks)."""
        return max(self.action_dims) if self.action_dims else 0

    @property
    def obs_mask(self) -> np.ndarray:
        """[n_agents, obs_dim] bool: which padded observation entries are real."""
        return _ragged_mask(self.obs_dims)

    @property
    def action_mask(self) -> np.ndarray | None:
        """[n_agents, action_dim] bool for continuous tasks, ``None`` for discrete ones."""
        return _ragged_mask(self.action_dims) if self.action_dims else None

    def observation_space(self, agent: str) -> spaces.Box:
        dim = self.obs_dims[self.agent_ids.index(agent)]
        return spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def action_space(self, agent: str) -> spaces.Space:
        if self.discrete:
            return spaces.Discrete(self.n_actions)
        dim = self.action_dims[self.agent_ids.index(agent)]
        return spaces.Box(-1.0, 1.0, (dim,), np.float32)

    @property
    def state_space(self) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)


def _ragged_mask(dims: tuple[int, ...]) -> np.ndarray:
    width = max(dims)
    return np.arange(width)[None, :] < np.asarray(dims)[:, None]


@dataclass
class VecObservation:
    """What a vector env shows its agents, batched.

    Attributes:
        obs: [B, n_agents, obs_dim] float32, zero-padded past each agent's size.
        state: [B, state_dim] float32.
        avail_actions: [B, n_agents, n_actions] bool for discrete tasks; ``None`` otherwise.
    """

    obs: np.ndarray
    state: np.ndarray
    avail_actions: np.ndarray | None


@dataclass
class VecStep:
    """The outcome of one batched step.

    Attributes:
        next: observations after the step (the true final ones where the episode ended).
        reward: [B] float32 team reward.
        agent_rewards: [B, n_agents] float32.
        terminated: [B] bool, a real end of the episode.
        truncated: [B] bool, the time limit (never set together with ``terminated``).
        won: [B] bool for SMAC, ``None`` elsewhere.
    """

    next: VecObservation
    reward: np.ndarray
    agent_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    won: np.ndarray | None = None


class VectorTaskEnv(abc.ABC):
    """``num_envs`` copies of one task, stepped as numpy batches (see the module docstring)."""

    info: TaskInfo
    num_envs: int

    @abc.abstractmethod
    def reset(self, seed: int) -> VecObservation:
        """Start a new episode in every copy; the same seed gives the same episodes."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> VecStep:
        """Step every copy: actions [B, n_agents] int (discrete) or [B, n_agents, action_dim]."""

    def close(self) -> None:
        """Release processes or devices the engine holds."""


class TaskEnv(ParallelEnv):
    """A PettingZoo ``ParallelEnv`` over one task (see the module docstring).

    ``infos[agent]`` holds ``avail_actions`` (int8 mask, discrete tasks), ``team_reward`` and,
    for SMAC, ``won``. Subclasses implement :meth:`_reset` and :meth:`_step` on arrays ordered
    as ``info.agent_ids``; this class turns them into PettingZoo's dicts.
    """

    metadata = {"name": "marl_offline_bench", "is_parallelizable": True, "render_modes": []}
    info: TaskInfo

    def __init__(self) -> None:
        self.possible_agents = list(self.info.agent_ids)
        self.agents: list[str] = []
        self.render_mode = None

    def observation_space(self, agent: str) -> spaces.Box:
        # PettingZoo requires the same space object on every call.
        if not hasattr(self, "_obs_spaces"):
            self._obs_spaces = {a: self.info.observation_space(a) for a in self.info.agent_ids}
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        if not hasattr(self, "_act_spaces"):
            self._act_spaces = {a: self.info.action_space(a) for a in self.info.agent_ids}
        return self._act_spaces[agent]

    @property
    def state_space(self) -> spaces.Box:
        return self.info.state_space

    # -- to implement ---------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, seed: int | None) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Return per-agent observations and the [n_agents, n_actions] avail mask (or None)."""

    @abc.abstractmethod
    def _step(self, actions: list[Any]) -> dict[str, Any]:
        """Return dict(obs=list, avail=array|None, agent_rewards=array, reward=float,
        terminated=bool, truncated=bool, won=bool|None)."""

    @abc.abstractmethod
    def state(self) -> np.ndarray:
        """The global state, float32 [state_dim]."""

    # -- PettingZoo's dict API ------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, avail = self._reset(seed)
        self.agents = list(self.possible_agents)
        infos = {a: self._agent_info(i, avail, None, None) for i, a in enumerate(self.agents)}
        return self._as_dict(obs), infos

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise KeyError(f"step() needs an action for every live agent; missing {missing}")
        result = self._step([actions[a] for a in self.possible_agents])
        agents = list(self.agents)
        obs = self._as_dict(result["obs"])
        rewards = {a: float(result["agent_rewards"][i]) for i, a in enumerate(agents)}
        terminations = {a: bool(result["terminated"]) for a in agents}
        truncations = {a: bool(result["truncated"]) and not result["terminated"] for a in agents}
        infos = {
            a: self._agent_info(i, result["avail"], result["reward"], result.get("won"))
            for i, a in enumerate(agents)
        }
        if result["terminated"] or result["truncated"]:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def _as_dict(self, obs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {a: np.asarray(o, dtype=np.float32) for a, o in zip(self.possible_agents, obs)}

    @staticmethod
    def _agent_info(index: int, avail, team_reward, won) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if avail is not None:
            info["avail_actions"] = np.asarray(avail[index], dtype=np.int8)
        if team_reward is not None:
            info["team_reward"] = float(team_reward)
        if won is not None:
            info["won"] = bool(won)
        return info


def _keep_jax_compilations() -> None:
    """Keep XLA's compiled SMAX and MPE steps on disk, so a new process reuses them instead of
    compiling again (about 26 s per SMAC process otherwise). ``JAX_COMPILATION_CACHE_DIR`` picks
    the folder (default ``~/.cache/marl-offline-bench/jax``)."""
    import os

    import jax

    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "marl-offline-bench", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return  # a read-only home: compile as before
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def import_jaxmarl_quietly():
    """``import jaxmarl`` without its start-up prints, and without its stream swap.

    jaxmarl prints "Importing submoduled environments..." on import, and one of its modules
    (``mabrax_env``) resets ``sys.stdout``/``sys.stderr`` to the interpreter's original streams,
    which breaks any redirection in force (pytest's capture, a caller's ``redirect_stderr``).
    Both streams are silenced during the import and put back as they were afterwards.
    """
    import builtins
    import io
    import sys

    if "jaxmarl" in sys.modules:
        return sys.modules["jaxmarl"]
    _keep_jax_compilations()
    saved, original_print = (sys.stdout, sys.stderr), builtins.print
    sys.stdout = sys.stderr = io.StringIO()
    builtins.print = lambda *args, **kwargs: None  # its prints come after the swap
    try:
        import jaxmarl
    finally:
        sys.stdout, sys.stderr = saved
        builtins.print = original_print
    return jaxmarl


def pad_observations(per_agent: list[np.ndarray], obs_dim: int) -> np.ndarray:
    """Stack per-agent observations [B, d_i] into [B, n_agents, obs_dim], zero-padded."""
    batch = per_agent[0].shape[0]
    out = np.zeros((batch, len(per_agent), obs_dim), dtype=np.float32)
    for i, o in enumerate(per_agent):
        out[:, i, : o.shape[-1]] = o
    return out
