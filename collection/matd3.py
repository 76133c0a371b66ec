"""MATD3 behaviour agents for the continuous tasks (MPE, MaMuJoCo), and the MPE prey.

Paper: Ackermann et al. 2019, "Reducing Overestimation Bias in Multi-Agent Domains Using Double
Centralized Critics" (MATD3), which carries TD3 (Fujimoto et al. 2018: clipped double Q, target
policy smoothing, delayed actor updates) over to MADDPG's centralised training. Reference code:
the MATD3 of OMAR's code base (github.com/ling-pan/OMAR, which the CFCQL authors reuse for MPE and
MaMuJoCo) and sfujim/TD3 (``TD3.py``). The actor and twin-critic networks come from
:mod:`marl_offline_bench.networks`; their targets, optimisers, the TD3 target and the round
schedule are the continuous learners' backbone (:mod:`baselines.actor_critic_backbone`, which
the offline MATD3-BC baseline shares).

What is learnt: per-agent deterministic actors pi_i(o_i) (2 hidden ReLU layers, tanh output in
[-1, 1], padded action entries zero) and **one** centralised twin critic Q_k(s, a_1..a_n) on the
team reward. Ackermann et al. give every agent its own pair of centralised critics; with a
shared team reward those critics all estimate the same function, so one pair is kept, as the
CFCQL / OMAR code does for its continuous tasks. Target y = r + gamma (1 - terminal) min_k
Q'_k(s', clip(pi'(o') + clip(N(0, target_noise), -c, c), -1, 1)); the actors are updated every
``policy_delay`` critic updates on -mean Q_1(s, pi_1(o_1), ..., pi_n(o_n)), and the targets then
move by Polyak averaging (rate ``tau``). Exploration: Gaussian noise N(0, noise_std) added to the
actors' actions and clipped to [-1, 1]; noise_std falls linearly from ``noise_start`` to
``noise_finish``; the first ``start_steps`` environment steps act uniformly at random (TD3's
warm-up). Time limits are not terminal (MPE and HalfCheetah end by truncation only).

Deviations from the reference code, and why:

* Acting runs ``num_envs`` whole episodes in lock-step through
  :func:`marl_offline_bench.collect.rollout`, with the actor weights and the noise level fixed
  for the batch and the noise drawn from a seeded stream; the batch's gradient updates
  (``updates_per_step`` per acted transition) follow it. TD3 alternates one step and one update.
  This makes every acting batch a pure function of (actor weights, noise_std, warm-up flag,
  two seeds), recorded per batch in ``<run>/snapshots/`` so medium-replay can be rebuilt
  (:func:`policy_from_snapshot`).
* One shared centralised twin critic instead of one pair per agent (see above).
* Sizes are chosen for this project's CPU: 64-wide networks and batches of 1024 transitions on
  MPE (OMAR's MPE sizes), 256-wide and batches of 256 on HalfCheetah (TD3's).
* ``train_prey=True`` (mpe-pp, mpe-world only) trains the prey side at the same time with a
  second, independent MATD3 learner on the prey's own observations and rewards (its critic sees
  the concatenated prey observations and the prey's joint action; team reward = mean of the prey
  rewards). That run's prey is what :func:`export_prey` freezes and ships with the package as
  the prey of those tasks; no acting snapshots are written in that mode.

Run: ``python -m collection.matd3 --task mpe-cn --out collection/runs/mpe-cn``.
A run directory holds ``config.json``, ``curve.csv`` (one row per greedy evaluation),
``checkpoints/step_<env steps>.pt`` (actor and critic weights with the noise-free evaluation at
that point), ``resume.pt`` (everything ``--resume`` needs, replay included: it continues bit for
bit) and ``snapshots/batch_<k>.pt``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from marl_offline_bench.behaviour import actors_from_checkpoint, build_actors
from marl_offline_bench.policies import GaussianActorPolicy
from baselines.actor_critic_backbone import (ActorCriticBackbone, RoundSchedule,
                                             target_policy_smoothing, twin_td_loss,
                                             twin_td_targets)
from marl_offline_bench.networks import TwinCritic
from marl_offline_bench.rollout import batch_seed, rollout
from marl_offline_bench.dataset import EpisodeArrays
from marl_offline_bench.envs import TaskInfo, make_vec_env, split_task_id

from .qmix import EVAL_SEED_OFFSET
from .run import (BehaviourRun, atomic_save, task_dims, train_from_args, training_parser,
                  write_json)

__all__ = [
    "MATD3Config", "TASK_OVERRIDES", "config_for", "noise_at",
    "TransitionReplay", "TransitionBatch", "MATD3Learner", "MATD3Trainer", "matd3_actor_loss",
    "policy_from_snapshot", "first_update_episode",
    "export_prey", "CURVE_COLUMNS", "SHIPPED_KEYS", "main",
]


# =================================================================================================
# Configuration
# =================================================================================================
@dataclass
class MATD3Config:
    """Everything a MATD3 behaviour run depends on; saved with the run and every checkpoint."""

    task: str = "mpe-cn"
    """Task id, e.g. ``mpe-cn`` or ``mamujoco-halfcheetah_2x3``."""
    engine: str | None = None
    """Simulator override (None: the family's default, JaxMARL's MPE for MPE)."""
    seed: int = 0
    """Seed of the networks, the acting batches and the replay sampling."""
    env_steps: int = 300_000
    """Training budget in environment steps (one step = one joint action in one episode)."""
    num_envs: int = 32
    """Episodes acted in lock-step per acting batch, with fixed actor weights."""
    env_workers: int = 0
    """MaMuJoCo only: worker shards of the vector env (0: the adapter's default)."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (oldest dropped first)."""
    batch_size: int = 1024
    """Transitions per gradient update."""
    updates_per_step: float = 0.25
    """Critic updates per acted transition, done after each acting batch (rounded per batch)."""
    start_steps: int = 10_000
    """Environment steps acted uniformly at random before the actors act (TD3's warm-up);
    gradient updates start once this many steps (and one batch) are in the replay."""
    hidden_dim: int = 64
    """Width of the actors' and the critic's hidden layers."""
    actor_lr: float = 1e-3
    """Adam learning rate of the actors."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.01
    """Polyak rate of the target networks, applied after each actor update."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update."""
    target_noise: float = 0.2
    """Std of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    noise_start: float = 0.3
    """Std of the Gaussian exploration noise when the actors start acting."""
    noise_finish: float = 0.1
    """Std of the exploration noise after the anneal."""
    noise_anneal_steps: int = 100_000
    """Environment steps (counted from start_steps) over which the noise std falls linearly."""
    grad_clip: float = 0.5
    """Gradient-norm clip of the actors and of the critic (0: none)."""
    train_prey: bool = False
    """mpe-pp / mpe-world only: train the prey too (joint MATD3 on both sides, see header)."""
    eval_interval_steps: int = 10_000
    """Environment steps between greedy evaluations; each writes a checkpoint and a curve row."""
    eval_episodes: int = 32
    """Episodes per greedy (noise-free) evaluation."""
    eval_num_envs: int = 32
    """Lock-step batch of the evaluations (MPE: all episodes at once)."""
    resume_interval_evals: int = 1
    """Write resume.pt (replay included) every this many evaluations."""
    snapshot_chunk: int = 100
    """Acting snapshots per file under snapshots/."""
    torch_threads: int = 1
    """torch.set_num_threads for the run (the machine is shared)."""

    def __post_init__(self) -> None:
        family, name = split_task_id(self.task)
        if family not in ("mpe", "mamujoco"):
            raise ValueError(f"MATD3 trains continuous tasks (mpe, mamujoco), not {self.task}")
        if self.train_prey and not (family == "mpe" and name in ("pp", "world")):
            raise ValueError(f"train_prey needs a task with prey (mpe-pp, mpe-world), not "
                             f"{self.task}")
        positive = ["env_steps", "num_envs", "buffer_size", "batch_size", "hidden_dim",
                    "policy_delay", "eval_interval_steps", "eval_episodes", "eval_num_envs",
                    "resume_interval_evals", "snapshot_chunk", "torch_threads"]
        for field_name in positive:
            if getattr(self, field_name) < 1:
                raise ValueError(f"MATD3Config.{field_name} must be at least 1, got "
                                 f"{getattr(self, field_name)}")
        for field_name in ("start_steps", "noise_anneal_steps", "env_workers"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"MATD3Config.{field_name} must be >= 0, got "
                                 f"{getattr(self, field_name)}")
        if not 0.0 <= self.noise_finish <= self.noise_start:
            raise ValueError("need 0 <= noise_finish <= noise_start, got "
                             f"{self.noise_finish} and {self.noise_start}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1] and tau in (0, 1], got {self.gamma}, "
                             f"{self.tau}")
        if min(self.actor_lr, self.critic_lr) <= 0 or self.updates_per_step < 0 \
                or self.grad_clip < 0 or self.target_noise < 0 or self.target_noise_clip < 0:
            raise ValueError("learning rates must be positive and updates_per_step, grad_clip, "
                             "target_noise, target_noise_clip non-negative")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds buffer_size "
                             f"{self.buffer_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MPE = dict(hidden_dim=64, batch_size=1024, actor_lr=1e-3, critic_lr=1e-3, gamma=0.95,
            tau=0.01, num_envs=32, eval_episodes=64, eval_num_envs=64,
            updates_per_step=0.25, start_steps=8_000, noise_anneal_steps=150_000,
            eval_interval_steps=8_000, resume_interval_evals=5)
#: Per-task overrides of :class:`MATD3Config`, the only place where tasks differ. Budgets are
#: sized for this project's 2-core CPU machine, one core per run beside another training run
#: (measured: on MPE an update of 1024 transitions costs about 6 ms, so 0.25 updates per step
#: run at 550-650 env steps/s on cn and pp and about 390 on World; the shipped runs took 10.4
#: min (cn, 400k steps), 11.2 min (pp, 400k) and about 14 min (World, 320k)). The prey of pp and
#: World were trained with ``train_prey=true`` and 200k steps (8.7 and 13.1 min: both sides
#: learn, so half the speed).
TASK_OVERRIDES: dict[str, dict[str, Any]] = {
    "mpe-cn": dict(_MPE, env_steps=400_000),
    "mpe-pp": dict(_MPE, env_steps=400_000),
    "mpe-world": dict(_MPE, env_steps=320_000),
    # HalfCheetah: TD3's sizes; 4 episodes (4000 steps) per acting batch, then one update per
    # two acted steps; evaluations of 8 episodes every 20k steps; one worker (one core). About
    # 210 env steps/s: the shipped run took 27 min for 360k steps (greedy return 8.8k).
    "mamujoco-halfcheetah_2x3": dict(
        hidden_dim=256, batch_size=256, actor_lr=1e-3, critic_lr=1e-3, gamma=0.99, tau=0.005,
        num_envs=4, env_workers=1, updates_per_step=0.5, start_steps=20_000,
        noise_start=0.2, noise_finish=0.1, noise_anneal_steps=200_000, env_steps=360_000,
        eval_interval_steps=20_000, eval_episodes=8, eval_num_envs=8, grad_clip=0.0),
}


def config_for(task: str, **overrides: Any) -> MATD3Config:
    """The defaults, then the task's row of :data:`TASK_OVERRIDES`, then ``overrides``."""
    return MATD3Config(task=task, **{**TASK_OVERRIDES.get(task, {}), **overrides})


def noise_at(cfg: MATD3Config, env_steps: int) -> float:
    """Exploration std: noise_start at start_steps, linear to noise_finish over the anneal."""
    if cfg.noise_anneal_steps == 0:
        return cfg.noise_finish
    frac = min(1.0, max(0, env_steps - cfg.start_steps) / cfg.noise_anneal_steps)
    return cfg.noise_start + frac * (cfg.noise_finish - cfg.noise_start)


def first_update_episode(config: dict[str, Any], episode_limit: int) -> int:
    """Episodes acted when the first gradient update happens (a run's ``config`` dict):
    the first acting batch that brings the replay to max(batch_size, start_steps) transitions,
    assuming full-length episodes (MPE, HalfCheetah)."""
    need = max(int(config["batch_size"]), int(config["start_steps"]), 1)
    per_batch = int(config["num_envs"]) * episode_limit
    return -(-need // per_batch) * int(config["num_envs"])


# =================================================================================================
# Networks and acting
# =================================================================================================
# =================================================================================================
# Replay
# =================================================================================================
class TransitionBatch(NamedTuple):
    """Transitions as tensors: obs/next_obs (B, n, o), state/next_state (B, S), actions
    (B, n, d), rewards (B,), terminals (B,)."""

    obs: torch.Tensor
    state: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminals: torch.Tensor
    next_obs: torch.Tensor
    next_state: torch.Tensor


class TransitionReplay:
    """A ring buffer of single transitions as numpy arrays, sampled uniformly with replacement."""

    def __init__(self, capacity: int, n_agents: int, obs_dim: int, state_dim: int,
                 action_dim: int):
        self.capacity = capacity
        self.arrays = {
            "obs": np.zeros((capacity, n_agents, obs_dim), np.float32),
            "state": np.zeros((capacity, state_dim), np.float32),
            "actions": np.zeros((capacity, n_agents, action_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "terminals": np.zeros(capacity, bool),
            "next_obs": np.zeros((capacity, n_agents, obs_dim), np.float32),
            "next_state": np.zeros((capacity, state_dim), np.float32),
        }
        self.size = 0
        self.cursor = 0

    def insert(self, **columns: np.ndarray) -> None:
        """Append N transitions (every field of :class:`TransitionBatch`, leading axis N)."""
        count = len(columns["rewards"])
        rows = (self.cursor + np.arange(count)) % self.capacity
        for name, value in columns.items():
            self.arrays[name][rows] = value
        self.cursor = int((self.cursor + count) % self.capacity)
        self.size = min(self.capacity, self.size + count)

    def insert_episodes(self, data: EpisodeArrays) -> None:
        """Every transition of :func:`rollout`'s episodes (its terminals; time-outs bootstrap)."""
        rows, next_rows = data.transition_rows()
        self.insert(obs=data.obs[rows], state=data.states[rows], actions=data.actions,
                    rewards=data.rewards, terminals=data.terminals, next_obs=data.obs[next_rows],
                    next_state=data.states[next_rows])

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        index = rng.integers(0, self.size, batch_size)
        return TransitionBatch(**{k: torch.from_numpy(v[index]) for k, v in self.arrays.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"arrays": {k: torch.from_numpy(np.ascontiguousarray(v[: self.size]))
                           for k, v in self.arrays.items()},
                "size": self.size, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.cursor = int(state["size"]), int(state["cursor"])
        for name, value in state["arrays"].items():
            self.arrays[name][: self.size] = value.numpy()


# =================================================================================================
# Loss and learner
# =================================================================================================
def matd3_actor_loss(q_policy: torch.Tensor) -> torch.Tensor:
    """-mean_b Q_1(s, pi_1(o_1), ..., pi_n(o_n)); q_policy: (B,)."""
    return -q_policy.mean()


class MATD3Learner(ActorCriticBackbone):
    """The actor-critic backbone (:class:`~baselines.actor_critic_backbone.ActorCriticBackbone`:
    actors, centralised twin critic, targets, optimisers) for one side of a game."""

    def __init__(self, n_agents: int, obs_dim: int, state_dim: int, action_mask: np.ndarray,
                 cfg: MATD3Config):
        self.cfg = cfg
        self.action_mask = torch.as_tensor(np.asarray(action_mask, bool), dtype=torch.float32)
        self.init_actor_critic(
            build_actors(obs_dim, action_mask, cfg.hidden_dim),
            TwinCritic(state_dim, n_agents * self.action_mask.shape[1], cfg.hidden_dim),
            cfg.actor_lr, cfg.critic_lr)
        d = cfg.policy_delay                       # TD3: the actors and targets every d-th update
        self.schedule = RoundSchedule(d, actor_step=d - 1, target_step=d - 1)
        self.updates = 0

    @torch.no_grad()
    def td_targets(self, batch: TransitionBatch) -> torch.Tensor:
        """(B,) y = r + gamma (1 - terminal) min_k Q'_k(s', smoothed pi'(o'))."""
        cfg = self.cfg
        next_actions = target_policy_smoothing(self.target_actors(batch.next_obs),
                                               cfg.target_noise, cfg.target_noise_clip,
                                               self.action_mask)                # (B, n, d)
        next_q = self.target_critic(batch.next_state, next_actions.flatten(1))  # (2, B)
        return twin_td_targets(batch.rewards, batch.terminals, next_q, cfg.gamma)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One critic update; every policy_delay-th also an actor update and the target moves."""
        cfg = self.cfg
        targets = self.td_targets(batch)                                        # (B,)
        q_taken = self.critic(batch.state, batch.actions.flatten(1))            # (2, B)
        critic_loss = twin_td_loss(q_taken, targets)
        self.critic_step(critic_loss, cfg.grad_clip)
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q_taken.mean().item()}
        if self.schedule.actor_due(self.updates):
            policy_actions = self.actors(batch.obs)                             # (B, n, d)
            q_policy = self.critic(batch.state, policy_actions.flatten(1))[0]   # (B,)
            actor_loss = matd3_actor_loss(q_policy)
            self.actor_step(actor_loss, cfg.grad_clip, agentwise=False)
            metrics["actor_loss"] = actor_loss.item()
        if self.schedule.targets_due(self.updates):
            self.update_targets(cfg.tau)
        self.updates += 1
        return metrics

    _PARTS = ("actors", "critic", "target_actors", "target_critic", "actor_optimiser",
              "critic_optimiser")

    def state_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k).state_dict() for k in self._PARTS}, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._PARTS:
            getattr(self, key).load_state_dict(state[key])
        self.updates = int(state["updates"])


# =================================================================================================
# Joint predator-prey acting (train_prey)
# =================================================================================================
class _PreySide:
    """The prey of a joint run, as the env's ``prey_policy``: acts with the current prey policy
    and records the prey's observations and actions of the running batch."""

    name = "matd3-joint-training"

    def __init__(self) -> None:
        self.policy: GaussianActorPolicy | None = None
        self.obs: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []

    def start(self, policy: GaussianActorPolicy, num_envs: int) -> None:
        self.policy, self.obs, self.actions = policy, [], []
        policy.reset(num_envs)

    def __call__(self, prey_obs: np.ndarray) -> np.ndarray:
        action = self.policy(prey_obs)
        self.obs.append(prey_obs.copy())
        self.actions.append(action)
        return action


def _joint_rollout(env, predators: GaussianActorPolicy, prey_side: _PreySide,
                   prey_policy: GaussianActorPolicy, seed: int):
    """One lock-step batch of full episodes with both sides acting; MPE episodes never
    terminate, so every copy runs the task's 25 steps. Returns the predators' episodes (as
    :func:`rollout` would) and the prey's transitions (dict of [B * T, ...] arrays)."""
    prey_side.start(prey_policy, env.num_envs)
    data = rollout(env, predators, env.num_envs, seed)
    limit, n_learn = env.info.episode_limit, env.info.n_agents
    obs = np.stack(prey_side.obs + [env.prey_observations], axis=1)           # (B, T+1, m, o)
    actions = np.stack(prey_side.actions, axis=1)                            # (B, T, m, 2)
    rewards = np.stack(prey_side.rewards, axis=1)                            # (B, T)
    batch = obs.shape[0]
    state = obs.reshape(batch, limit + 1, -1)
    prey = {"obs": obs[:, :-1], "state": state[:, :-1], "actions": actions, "rewards": rewards,
            "terminals": np.zeros((batch, limit), bool), "next_obs": obs[:, 1:],
            "next_state": state[:, 1:]}
    del n_learn
    return data, {k: v.reshape((batch * limit,) + v.shape[2:]) for k, v in prey.items()}


class _PreyRewardTap:
    """Wraps the joint run's env so that each step's prey rewards reach the prey side."""

    def __init__(self, env, prey_side: _PreySide):
        self.env, self.prey_side = env, prey_side
        self.info, self.num_envs = env.info, env.num_envs

    def reset(self, seed: int):
        self.prey_side.rewards = []
        return self.env.reset(seed)

    def step(self, actions: np.ndarray):
        out = self.env.step(actions)
        n_learn = self.env.info.n_agents
        self.prey_side.rewards.append(
            self.env.last_all_rewards[:, n_learn:].mean(axis=1).astype(np.float32))
        return out

    @property
    def prey_observations(self) -> np.ndarray:
        return self.env.prey_observations

    def close(self) -> None:
        self.env.close()


# =================================================================================================
# Trainer
# =================================================================================================
CURVE_COLUMNS = ("env_steps", "episodes", "updates", "wall_s", "noise_std", "eval_return",
                 "eval_return_std", "eval_win_rate", "prey_eval_return", "train_return",
                 "critic_loss", "actor_loss", "q_mean", "env_steps_per_s", "act_s", "update_s",
                 "checkpoint")
#: What a shipped behaviour checkpoint keeps of a run's checkpoint (actors only).
SHIPPED_KEYS = ("actors", "env_steps", "episodes", "updates", "noise_std", "eval_return",
                "eval_return_std", "eval_win_rate", "eval_episodes", "config", "task",
                "algorithm", "hidden_dim")


class MATD3Trainer(BehaviourRun):
    """Trains MATD3 online on one task and keeps a resumable run directory (module docstring)."""

    ALGORITHM = "matd3"
    CURVE_COLUMNS = CURVE_COLUMNS
    COUNTERS = ("env_steps", "episodes", "acting_batches", "evaluations")

    def __init__(self, cfg: MATD3Config, out: str | Path):
        self.cfg, self.out = cfg, Path(out)
        torch.manual_seed(cfg.seed)
        env_kwargs: dict[str, Any] = {}
        if cfg.env_workers and cfg.task.startswith("mamujoco"):
            env_kwargs["num_workers"] = cfg.env_workers
        self.prey_side: _PreySide | None = None
        if cfg.train_prey:
            self.prey_side = _PreySide()
            env_kwargs["prey_policy"] = self.prey_side
        self.env_kwargs = {k: v for k, v in env_kwargs.items() if k != "prey_policy"}
        raw_env = make_vec_env(cfg.task, cfg.num_envs, engine=cfg.engine, **env_kwargs)
        self.env = _PreyRewardTap(raw_env, self.prey_side) if cfg.train_prey else raw_env
        self.info: TaskInfo = raw_env.info
        info = self.info
        self.learner = MATD3Learner(info.n_agents, info.obs_dim, info.state_dim,
                                    info.action_mask, cfg)
        self.replay = TransitionReplay(cfg.buffer_size, info.n_agents, info.obs_dim,
                                       info.state_dim, info.action_dim)
        self.prey_learner = self.prey_replay = None
        if cfg.train_prey:
            spec = raw_env.spec
            n_prey, prey_dim = len(spec.prey), spec.prey_obs_dim
            self.prey_dims = {"n_prey": n_prey, "prey_obs_dim": prey_dim}
            self.prey_learner = MATD3Learner(n_prey, prey_dim, n_prey * prey_dim,
                                             np.ones((n_prey, 2), bool), cfg)
            self.prey_replay = TransitionReplay(cfg.buffer_size, n_prey, prey_dim,
                                                n_prey * prey_dim, 2)
        self.sample_rng = np.random.default_rng([cfg.seed, 1])
        self.env_steps = self.episodes = self.acting_batches = self.evaluations = 0
        self.wall_s = 0.0
        self._update_debt = 0.0
        self.curve: list[dict[str, Any]] = []
        self._pending_snapshots: list[dict[str, Any]] = []
        self._since_eval = self._fresh_tally()

    @staticmethod
    def _fresh_tally() -> dict[str, Any]:
        return {"returns": [], "critic_loss": [], "actor_loss": [], "q": [], "act_s": 0.0,
                "update_s": 0.0, "steps": 0, "wall": 0.0}

    @property
    def updates(self) -> int:
        return self.learner.updates

    # -- snapshots --------------------------------------------------------------------------------
    def _flush_snapshots(self) -> None:
        """Write the pending acting snapshots as one file, named by its first acting batch."""
        if not self._pending_snapshots:
            return
        snaps = self._pending_snapshots
        chunk = {
            "acting_batch": torch.tensor([s["acting_batch"] for s in snaps], dtype=torch.int64),
            "episode": torch.tensor([s["episode"] for s in snaps], dtype=torch.int64),
            "env_steps": torch.tensor([s["env_steps"] for s in snaps], dtype=torch.int64),
            "noise_std": torch.tensor([s["noise_std"] for s in snaps], dtype=torch.float64),
            "uniform": torch.tensor([s["uniform"] for s in snaps], dtype=torch.bool),
            "rollout_seed": torch.tensor([s["rollout_seed"] for s in snaps], dtype=torch.int64),
            "action_seed": torch.tensor([s["action_seed"] for s in snaps], dtype=torch.int64),
            "num_envs": self.cfg.num_envs,
            "actors": {k: torch.stack([s["actors"][k] for s in snaps])
                       for k in snaps[0]["actors"]},
            "task": task_dims(self.info),
            "action_mask": torch.as_tensor(np.asarray(self.info.action_mask, bool)),
            "hidden_dim": self.cfg.hidden_dim,
            "algorithm": "matd3",
        }
        atomic_save(chunk, self.out / "snapshots" / f"batch_{snaps[0]['acting_batch']:08d}.pt")
        self._pending_snapshots = []

    # -- acting and learning ----------------------------------------------------------------------
    def _acting_policy(self, learner: MATD3Learner, seed: int) -> GaussianActorPolicy:
        return GaussianActorPolicy(learner.actors, noise_at(self.cfg, self.env_steps), seed,
                                   uniform=self.env_steps < self.cfg.start_steps)

    def act(self) -> EpisodeArrays:
        """Run one acting batch with the current actors plus noise and store it."""
        k = self.acting_batches
        rollout_seed = batch_seed(self.cfg.seed, 2 * k)
        action_seed = batch_seed(self.cfg.seed, 2 * k + 1)
        policy = self._acting_policy(self.learner, action_seed)
        if self.cfg.train_prey:
            prey_policy = self._acting_policy(self.prey_learner,
                                              batch_seed(self.cfg.seed + 1, 2 * k + 1))
            data, prey = _joint_rollout(self.env, policy, self.prey_side, prey_policy,
                                        rollout_seed)
            self.prey_replay.insert(**prey)
        else:
            self._pending_snapshots.append({
                "acting_batch": k, "episode": self.episodes, "env_steps": self.env_steps,
                "noise_std": policy.noise_std, "uniform": policy.uniform,
                "rollout_seed": rollout_seed, "action_seed": action_seed,
                "actors": {n: p.detach().clone()
                           for n, p in self.learner.actors.state_dict().items()},
            })
            data = rollout(self.env, policy, self.cfg.num_envs, rollout_seed)
        self.replay.insert_episodes(data)
        self.acting_batches += 1
        self.episodes += data.n_episodes
        self.env_steps += data.n_transitions
        if len(self._pending_snapshots) >= self.cfg.snapshot_chunk:
            self._flush_snapshots()
        return data

    def learn(self, acted: int) -> list[dict[str, float]]:
        """The gradient updates owed for ``acted`` new transitions (none during the warm-up)."""
        cfg = self.cfg
        if self.replay.size < max(cfg.batch_size, cfg.start_steps):
            return []
        self._update_debt += acted * cfg.updates_per_step
        count = int(self._update_debt)
        self._update_debt -= count
        metrics = []
        for _ in range(count):
            metrics.append(self.learner.update(self.replay.sample(cfg.batch_size,
                                                                  self.sample_rng)))
            if self.prey_learner is not None:
                self.prey_learner.update(self.prey_replay.sample(cfg.batch_size, self.sample_rng))
        return metrics

    # -- evaluation and checkpoints ---------------------------------------------------------------
    @torch.no_grad()
    def greedy_evaluation(self) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """Noise-free returns of the current actors (and of the prey, when trained)."""
        cfg = self.cfg
        seed = cfg.seed + EVAL_SEED_OFFSET
        num_envs = min(cfg.eval_num_envs, cfg.eval_episodes)
        if cfg.train_prey:
            returns, prey_returns = [], []
            prey_side = _PreySide()
            env = _PreyRewardTap(make_vec_env(cfg.task, num_envs, engine=cfg.engine,
                                              prey_policy=prey_side), prey_side)
            try:
                for b in range(-(-cfg.eval_episodes // num_envs)):
                    data, prey = _joint_rollout(env, GaussianActorPolicy(self.learner.actors),
                                                prey_side,
                                                GaussianActorPolicy(self.prey_learner.actors),
                                                batch_seed(seed, b))
                    returns.append(data.episode_returns())
                    prey_returns.append(prey["rewards"].reshape(num_envs, -1).sum(1))
            finally:
                env.close()
            return np.concatenate(returns), np.concatenate(prey_returns), None
        env = make_vec_env(cfg.task, num_envs, engine=cfg.engine, **self.env_kwargs)
        try:
            data = rollout(env, GaussianActorPolicy(self.learner.actors), cfg.eval_episodes,
                           seed)
        finally:
            env.close()
        won = data.episode_won()
        return data.episode_returns(), None, None if won is None else float(won.mean())

    def evaluate_and_checkpoint(self) -> dict[str, Any]:
        started = time.perf_counter()
        returns, prey_returns, win_rate = self.greedy_evaluation()
        mean, std = float(returns.mean()), float(returns.std())
        name = f"step_{self.env_steps:09d}.pt"
        noise = noise_at(self.cfg, self.env_steps)
        checkpoint = {
            "actors": self.learner.actors.state_dict(), "critic": self.learner.critic.state_dict(),
            "env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
            "noise_std": noise, "eval_return": mean, "eval_return_std": std,
            "eval_win_rate": win_rate, "eval_episodes": len(returns),
            "config": self.cfg.to_dict(), "task": task_dims(self.info),
            "algorithm": "matd3", "hidden_dim": self.cfg.hidden_dim,
        }
        if self.prey_learner is not None:
            checkpoint.update(prey_actors=self.prey_learner.actors.state_dict(),
                              prey_eval_return=float(prey_returns.mean()), **self.prey_dims)
        atomic_save(checkpoint, self.out / "checkpoints" / name)
        since = self._since_eval
        self.wall_s += time.perf_counter() - started

        def avg(values: list[float], digits: int) -> Any:
            return round(float(np.mean(values)), digits) if values else ""

        row = {
            "env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
            "wall_s": round(self.wall_s, 2), "noise_std": round(noise, 5),
            "eval_return": round(mean, 5), "eval_return_std": round(std, 5),
            "eval_win_rate": "" if win_rate is None else round(win_rate, 4),
            "prey_eval_return": "" if prey_returns is None else round(
                float(prey_returns.mean()), 5),
            "train_return": avg(since["returns"], 5), "critic_loss": avg(since["critic_loss"], 6),
            "actor_loss": avg(since["actor_loss"], 6), "q_mean": avg(since["q"], 4),
            "env_steps_per_s": round(since["steps"] / since["wall"], 1) if since["wall"] else "",
            "act_s": round(since["act_s"], 2), "update_s": round(since["update_s"], 2),
            "checkpoint": f"checkpoints/{name}",
        }
        return self.finish_evaluation(row)

    def extra_resume_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"update_debt": self._update_debt}
        if self.prey_learner is not None:
            state.update(prey_learner=self.prey_learner.state_dict(),
                         prey_replay=self.prey_replay.state_dict())
        return state

    def load_extra_resume_state(self, state: dict[str, Any]) -> None:
        self._update_debt = float(state["update_debt"])
        if self.prey_learner is not None:
            self.prey_learner.load_state_dict(state["prey_learner"])
            self.prey_replay.load_state_dict(state["prey_replay"])

    def learn_from(self, data: EpisodeArrays) -> list[dict[str, float]]:
        return self.learn(data.n_transitions)

    @staticmethod
    def tally(since: dict[str, Any], metrics: list[dict[str, float]]) -> None:
        since["critic_loss"].extend(m["critic_loss"] for m in metrics)
        since["actor_loss"].extend(m["actor_loss"] for m in metrics if "actor_loss" in m)
        since["q"].extend(m["q_mean"] for m in metrics)

    @staticmethod
    def format_row(row: dict[str, Any]) -> str:
        return _format_row(row)


def _format_row(row: dict[str, Any]) -> str:
    prey = f" prey {row['prey_eval_return']}" if row["prey_eval_return"] != "" else ""
    return (f"steps {row['env_steps']:>9} eps {row['episodes']:>7} upd {row['updates']:>7} "
            f"wall {row['wall_s']:>8.1f}s noise {row['noise_std']:.3f} "
            f"eval {row['eval_return']:.3f}±{row['eval_return_std']:.3f}{prey} "
            f"train {row['train_return']} closs {row['critic_loss']} q {row['q_mean']} "
            f"steps/s {row['env_steps_per_s']}")


# =================================================================================================
# Checkpoints, snapshots and the prey
# =================================================================================================
def policy_from_snapshot(chunk: dict[str, Any], j: int,
                         info: TaskInfo | None = None) -> GaussianActorPolicy:
    """The acting policy of snapshot ``j`` of a snapshot file (loaded with ``torch.load``).

    ``info``, when given, is checked against the chunk's task (a replay on the wrong task would
    fail later, less clearly).

    ``rollout(env, policy, chunk["num_envs"], int(chunk["rollout_seed"][j]))`` on a vector env
    of ``chunk["task"]["task_id"]`` with ``chunk["num_envs"]`` copies reproduces that acting
    batch exactly; its episodes are the learner's [chunk["episode"][j], + num_envs).
    """
    if info is not None and info.task_id != chunk["task"]["task_id"]:
        raise ValueError(f"snapshot of {chunk['task']['task_id']} replayed on {info.task_id}")
    actors = actors_from_checkpoint({"actors": {k: v[j] for k, v in chunk["actors"].items()},
                                     "hidden_dim": chunk["hidden_dim"]})
    return GaussianActorPolicy(actors, float(chunk["noise_std"][j]),
                               int(chunk["action_seed"][j]), bool(chunk["uniform"][j]))


def export_prey(checkpoint_path: str | Path, dest: str | Path,
                run_dir: str | Path | None = None) -> dict[str, Any]:
    """Freeze the prey of a joint run's checkpoint into the package's prey file.

    Writes ``dest`` (``.npz``: the prey actors' layer weights, read by
    :class:`marl_offline_bench.envs.mpe.PretrainedPrey`) and ``dest`` with ``.json`` (how it was
    trained, its sha256); returns that json document.
    """
    checkpoint_path, dest = Path(checkpoint_path), Path(dest)
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    if "prey_actors" not in checkpoint:
        raise KeyError(f"{checkpoint_path} holds no prey; train with --set train_prey=true")
    weights = checkpoint["prey_actors"]
    arrays = {name.replace("net.", "").replace(".", "_"): value.numpy()
              for name, value in weights.items() if name != "action_mask"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, dest)
    sha = hashlib.sha256(dest.read_bytes()).hexdigest()
    doc: dict[str, Any] = {
        "task": checkpoint["config"]["task"], "file": dest.name, "sha256": sha,
        "algorithm": "MATD3, predators and prey trained together (collection.matd3, "
                     "train_prey=true); the prey's deterministic actors, no noise",
        "network": {"hidden_dim": int(checkpoint["hidden_dim"]), "hidden_layers": 2,
                    "activation": "relu", "output": "tanh", "n_prey": checkpoint["n_prey"],
                    "prey_obs_dim": checkpoint["prey_obs_dim"]},
        "checkpoint": str(checkpoint_path), "env_steps": checkpoint["env_steps"],
        "episodes": checkpoint["episodes"], "seed": checkpoint["config"]["seed"],
        "config": checkpoint["config"],
        "eval": {"predator_return": checkpoint["eval_return"],
                 "prey_return": checkpoint["prey_eval_return"],
                 "episodes": checkpoint["eval_episodes"]},
    }
    if run_dir is not None:
        curve = list(csv.DictReader((Path(run_dir) / "curve.csv").open()))
        doc["wall_s"] = float(curve[-1]["wall_s"]) if curve else None
    write_json(dest.with_suffix(".json"), doc)
    return doc


# =================================================================================================
# Entry point
# =================================================================================================
def main(argv: list[str] | None = None) -> int:
    """Train a MATD3 behaviour agent: ``python -m collection.matd3 --task T --out DIR``."""
    parser = training_parser("python -m collection.matd3", main.__doc__,
                             "mpe-cn, mamujoco-halfcheetah_2x3", "train_prey=true")
    parser.add_argument("--export-prey", metavar="CHECKPOINT", default=None,
                        help="instead of training: freeze the prey of a joint run's checkpoint "
                             "(relative to --out) into marl_offline_bench/data/prey/")
    args = parser.parse_args(argv)
    if args.export_prey:
        out = Path(args.out)
        name = split_task_id(args.task)[1]
        dest = Path(__file__).resolve().parent.parent / "marl_offline_bench" / "data" / "prey"
        doc = export_prey(out / args.export_prey, dest / f"{name}.npz", out)
        print(json.dumps({k: doc[k] for k in ("file", "sha256", "env_steps", "eval")}, indent=2))
        return 0
    return train_from_args(args, MATD3Config, config_for, MATD3Trainer)


if __name__ == "__main__":
    raise SystemExit(main())
