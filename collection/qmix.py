"""QMIX behaviour agents for the discrete tasks (Equal_Line, SMAC on SMAX).

Paper: Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent
Reinforcement Learning". Reference code: oxwhirl/pymarl (``learners/q_learner.py``,
``controllers/basic_controller.py``, ``components/action_selectors.py``) and hijkzzz/pymarl2
(``learners/nq_learner.py``: double-Q TD(lambda) targets, Adam), on which the CFCQL code builds.
The learner is the offline learners' QMIX backbone (:mod:`baselines.qmix_backbone`: networks,
targets, optimiser, double-Q TD(lambda) loss) with a scaled-state mixer; evaluation runs
:class:`marl_offline_bench.policies.RecurrentGreedyPolicy` through
:func:`marl_offline_bench.evaluate_policy`.

Deviations from the reference code, and why:

* Acting runs ``num_envs`` episodes in lock-step through :func:`marl_offline_bench.collect.rollout`
  on the vectorised adapters, and epsilon is held fixed within a batch (its value at the batch's
  first environment step) instead of moving every step. With the batch's reset seed and its
  exploration seed this makes every acting batch a pure function of (agent weights, epsilon,
  seeds), which is what lets the medium-replay data be rebuilt from the acting snapshots.
* Every acting batch is recorded as a snapshot (agent weights, epsilon, episode count, seeds) in
  ``<run>/snapshots/``; :func:`collection.behaviour.replay_snapshots` replays them in order.
* Sizes are PyMARL's (GRU 64, mixer 32, hypernet 64), not JaxMARL's GPU ones, for the CPU, and
  so is the batch (32 episodes, not pymarl2's 128); how many episodes are acted per update is a
  per-task setting (``num_envs`` / ``updates_per_batch``).
* ``bootstrap_timeouts=False`` can make the time limit terminal (PyMARL always bootstraps); the
  default keeps PyMARL's choice.
* The target networks are copied every ``target_update_episodes`` episodes (PyMARL's 200, which
  is the CFCQL code's 25 updates at 8 episodes per update).
* TD(lambda) targets do not leak padding into truncated episodes shorter than the batch (see
  :func:`baselines.networks.td_lambda_targets`).
* The mixer sees the global state divided by a fixed per-dimension scale: the largest |value|
  seen in ``state_scale_episodes`` random-policy episodes, at least 1. SMAX's world state holds
  raw positions and cooldowns up to about 32; fed as is, the hypernetworks' abs() weights grew
  and Q_tot reached about 50 within 100 updates on 2s3z while returns are at most 2. On
  Equal_Line (states in [0, 1]) the scale is all ones.

Run: ``python -m collection.qmix --task equal_line-n6 --out collection/runs/equal_line-n6``.
A run directory holds ``config.json``, ``curve.csv`` (one row per evaluation),
``checkpoints/step_<env steps>.pt`` (agent and mixer weights with the greedy evaluation at that
point), ``resume.pt`` (everything ``--resume`` needs, replay buffer included) and ``snapshots/``.
"""
from __future__ import annotations

import time
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marl_offline_bench.policies import EpsilonGreedyPolicy, RecurrentGreedyPolicy
from marl_offline_bench.networks import (QMixer, RNNAgent, agent_input_dim, build_agent_inputs,
                                masked_mean)
from marl_offline_bench.rollout import RandomPolicy, batch_seed, rollout
from marl_offline_bench.dataset import EpisodeArrays, EpisodeBatch, MARLDataset
from marl_offline_bench.envs import TaskInfo, make_vec_env, split_task_id
from marl_offline_bench.evaluation import evaluate_policy

from baselines.qmix_backbone import QMIXBackbone, qmix_td_loss

from .run import (BehaviourRun, atomic_save, task_dims, train_from_args,
                  training_parser)

__all__ = [
    "QMIXConfig", "TASK_OVERRIDES", "config_for", "EpisodeReplay",
    "QMIXLearner", "ScaledStateMixer", "estimate_state_scale", "QMIXTrainer", "epsilon_at",
    "build_agent", "CURVE_COLUMNS", "main",
]


# =================================================================================================
# Configuration
# =================================================================================================
@dataclass
class QMIXConfig:
    """Everything a QMIX behaviour run depends on; saved with the run and every checkpoint."""

    task: str = "equal_line-n2"
    """Task id, e.g. ``equal_line-n6`` or ``smac-2s3z``."""
    engine: str | None = None
    """Simulator override (None: the family's default, SMAX for SMAC)."""
    seed: int = 0
    """Seed of the networks, the acting batches and the replay sampling."""
    env_steps: int = 200_000
    """Training budget in environment steps (one step = one joint action in one episode)."""
    num_envs: int = 8
    """Episodes acted in lock-step per acting batch (PyMARL2's batch_size_run)."""
    buffer_size: int = 5000
    """Replay capacity in episodes (oldest dropped first)."""
    batch_size: int = 32
    """Episodes per gradient update."""
    updates_per_batch: int = 1
    """Gradient updates after each acting batch, once the buffer holds batch_size episodes."""
    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    td_lambda: float = 0.6
    """Lambda of the TD(lambda) targets (0 gives one-step targets)."""
    grad_clip: float = 10.0
    """Gradient-norm clip on the agent network and mixer together."""
    agent_hidden_dim: int = 64
    """Width of the GRU agent network."""
    mixing_dim: int = 32
    """Width of the QMIX mixing layer."""
    hypernet_dim: int = 64
    """Hidden width of the mixer's hypernetworks."""
    epsilon_start: float = 1.0
    """Exploration rate at the first step."""
    epsilon_finish: float = 0.05
    """Exploration rate after the anneal."""
    epsilon_anneal_steps: int = 50_000
    """Environment steps over which epsilon falls linearly from start to finish."""
    target_update_episodes: int = 200
    """Episodes between hard copies of the online networks into the targets."""
    eval_interval_steps: int = 10_000
    """Environment steps between greedy evaluations; each writes a checkpoint and a curve row."""
    eval_episodes: int = 32
    """Episodes per greedy evaluation (run as one lock-step batch)."""
    resume_interval_evals: int = 1
    """Write resume.pt (replay buffer included) every this many evaluations."""
    snapshot_chunk: int = 100
    """Acting snapshots per file under snapshots/."""
    bootstrap_timeouts: bool = True
    """Bootstrap from the final observation when the time limit ends an episode (PyMARL's
    choice); False makes the limit terminal, for tasks whose return is defined at the limit."""
    state_scale_episodes: int = 64
    """Random-policy episodes that fix the mixer's state scale (0: no scaling)."""
    torch_threads: int = 1
    """torch.set_num_threads for the run (the machine is shared)."""

    def __post_init__(self) -> None:
        split_task_id(self.task)
        positive = ["env_steps", "num_envs", "buffer_size", "batch_size", "updates_per_batch",
                    "agent_hidden_dim", "mixing_dim", "hypernet_dim", "target_update_episodes",
                    "eval_interval_steps", "eval_episodes", "resume_interval_evals",
                    "snapshot_chunk", "torch_threads"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"QMIXConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.epsilon_anneal_steps < 0 or self.state_scale_episodes < 0:
            raise ValueError("epsilon_anneal_steps and state_scale_episodes must be >= 0, got "
                             f"{self.epsilon_anneal_steps}, {self.state_scale_episodes}")
        if not 0.0 <= self.epsilon_finish <= self.epsilon_start <= 1.0:
            raise ValueError("need 0 <= epsilon_finish <= epsilon_start <= 1, got "
                             f"{self.epsilon_finish} and {self.epsilon_start}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.td_lambda <= 1.0):
            raise ValueError(f"gamma and td_lambda must lie in [0, 1], got {self.gamma}, "
                             f"{self.td_lambda}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be positive, got {self.lr}, {self.grad_clip}")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds buffer_size {self.buffer_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Per-task overrides of :class:`QMIXConfig`, the only place where tasks differ. Budgets are sized
#: for this project's 2-core CPU machine.
TASK_OVERRIDES: dict[str, dict[str, Any]] = {
    # Equal_Line: environment steps are nearly free and updates are not (0.03 s for n2 to
    # 0.1 s for n10 per update of 32 episodes, 2-4x that when the machine is busy), so the
    # learner updates after every 4 episodes and epsilon anneals over 1000 updates (PyMARL's
    # 50k steps were 1000 updates at one update per episode). From n4 on the greedy return
    # climbs and collapses repeatedly (two agents settle on the same spot); frequent evaluations
    # let the selection find the peaks. n2 is solved within 25k steps.
    # n2 is solved within 35k steps by every seed tried (0-4). Its greedy policy first collapses
    # to standing still (return 0) for about 20k steps; the epsilon-greedy episodes of that
    # phase return less than uniform play, so seed 2's replay, which reaches the medium band
    # at episode 80 before the collapse, is the one whose medium-replay sits between random
    # and medium. Seeds 0, 1, 3, 4 reached medium after the collapse (replay means 1.3-2.0
    # against random's 2.40).
    "equal_line-n2": dict(env_steps=60_000, eval_interval_steps=1_000, seed=2),
    "equal_line-n4": dict(env_steps=600_000, eval_interval_steps=2_000, num_envs=4,
                          epsilon_anneal_steps=200_000),
    "equal_line-n6": dict(env_steps=600_000, eval_interval_steps=2_000, num_envs=4,
                          epsilon_anneal_steps=200_000),
    # n8, n10: undiscounted, with the time limit terminal. The return telescopes to the final
    # gap, but with gamma = 0.99 a policy that rushes every agent towards a wall is paid early
    # (gaps open) and pays later (agents pile up on the wall, gap 0): discounting makes that
    # worth it, and the greedy policy collapsed to return 0 (n8, 300k steps: best greedy 0.97).
    # With gamma = 1 the learner optimises the task's own return (n8: best 2.32).
    "equal_line-n8": dict(env_steps=300_000, eval_interval_steps=2_000, num_envs=4,
                          epsilon_anneal_steps=200_000, gamma=1.0, bootstrap_timeouts=False),
    "equal_line-n10": dict(env_steps=300_000, eval_interval_steps=2_000, num_envs=4,
                           epsilon_anneal_steps=200_000, gamma=1.0, bootstrap_timeouts=False),
    # SMAX: episodes last at most 100 steps (about 50-60 early on). Two updates of 32 episodes
    # per 8 acted (PyMARL updates once per episode, pymarl2 once per 8 with batch 128); epsilon
    # anneals over pymarl2's 100k steps; resume.pt (which holds the 1.5 GB replay of 2s3z) is
    # rewritten every 5th evaluation.
    "smac-2s3z": dict(env_steps=2_000_000, num_envs=8, updates_per_batch=2,
                      eval_interval_steps=20_000, eval_episodes=64,
                      epsilon_anneal_steps=100_000, resume_interval_evals=5),
    # The shipped 3s_vs_5z and 6h_vs_8z agents stopped at 1M steps (win rates 0.94 and 1.0).
    "smac-3s_vs_5z": dict(env_steps=1_000_000, num_envs=8, updates_per_batch=2,
                          eval_interval_steps=20_000, eval_episodes=64,
                          epsilon_anneal_steps=100_000, resume_interval_evals=5),
    "smac-5m_vs_6m": dict(env_steps=2_000_000, num_envs=8, updates_per_batch=2,
                          eval_interval_steps=20_000, eval_episodes=64,
                          epsilon_anneal_steps=100_000, resume_interval_evals=5),
    "smac-6h_vs_8z": dict(env_steps=1_000_000, num_envs=8, updates_per_batch=2,
                          eval_interval_steps=20_000, eval_episodes=64,
                          epsilon_anneal_steps=500_000, resume_interval_evals=5),
}


def config_for(task: str, **overrides: Any) -> QMIXConfig:
    """The defaults, then the task's row of :data:`TASK_OVERRIDES`, then ``overrides``."""
    return QMIXConfig(task=task, **{**TASK_OVERRIDES.get(task, {}), **overrides})


def epsilon_at(cfg: QMIXConfig, env_steps: int) -> float:
    """Linear anneal from epsilon_start to epsilon_finish over epsilon_anneal_steps."""
    if cfg.epsilon_anneal_steps == 0:
        return cfg.epsilon_finish
    frac = min(1.0, env_steps / cfg.epsilon_anneal_steps)
    return cfg.epsilon_start + frac * (cfg.epsilon_finish - cfg.epsilon_start)


# =================================================================================================
# Networks and acting
# =================================================================================================
def build_agent(info: TaskInfo, hidden_dim: int) -> RNNAgent:
    """The shared GRU agent network for a task (input: obs, last action, agent id)."""
    return RNNAgent(agent_input_dim(info.obs_dim, info.n_actions, info.n_agents),
                    info.n_actions, hidden_dim)


# =================================================================================================
# Replay
# =================================================================================================
def to_episode_batch(data: EpisodeArrays, info: TaskInfo) -> EpisodeBatch:
    """Episodes from :func:`rollout` padded to the task's limit (T = episode_limit)."""
    view = MARLDataset(data, "replay", info.task_id, {}, info.obs_mask, info.action_mask)
    return view.episode_batch(np.arange(data.n_episodes), max_len=info.episode_limit)


class EpisodeReplay:
    """A ring buffer of padded episodes (PyMARL's ``ReplayBuffer``), as numpy arrays.

    Stores the fields of :class:`~marl_offline_bench.dataset.EpisodeBatch` for ``capacity``
    episodes of length ``info.episode_limit``; samples are trimmed to their longest episode.
    """

    def __init__(self, info: TaskInfo, capacity: int):
        limit, n, A = info.episode_limit, info.n_agents, info.n_actions
        self.capacity = capacity
        self.data = EpisodeBatch(
            observations=np.zeros((capacity, limit + 1, n, info.obs_dim), np.float32),
            states=np.zeros((capacity, limit + 1, info.state_dim), np.float32),
            avail_actions=np.ones((capacity, limit + 1, n, A), bool),
            actions=np.zeros((capacity, limit, n), np.int64),
            rewards=np.zeros((capacity, limit), np.float32),
            terminals=np.zeros((capacity, limit), bool),
            mask=np.zeros((capacity, limit), bool),
        )
        self.size = 0
        self.cursor = 0

    def insert(self, batch: EpisodeBatch) -> None:
        count = batch.observations.shape[0]
        rows = (self.cursor + np.arange(count)) % self.capacity
        for name, value in batch.arrays().items():
            getattr(self.data, name)[rows] = value
        self.cursor = int((self.cursor + count) % self.capacity)
        self.size = min(self.capacity, self.size + count)

    def sample(self, batch_size: int, rng: np.random.Generator) -> EpisodeBatch:
        """``batch_size`` distinct episodes, uniformly, trimmed to the longest of them."""
        if self.size < batch_size:
            raise ValueError(f"replay holds {self.size} episodes, fewer than {batch_size}")
        index = np.sort(rng.choice(self.size, batch_size, replace=False))
        steps = int(self.data.mask[index].sum(1).max())
        out = {}
        for name, value in self.data.arrays().items():
            length = steps + 1 if name in ("observations", "states", "avail_actions") else steps
            out[name] = value[index, :length]
        return EpisodeBatch(**out)

    def state_dict(self) -> dict[str, Any]:
        filled = slice(0, self.size)
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v[filled]))
                  for k, v in self.data.arrays().items()}
        return {"arrays": arrays, "size": self.size, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.cursor = int(state["size"]), int(state["cursor"])
        for name, value in state["arrays"].items():
            getattr(self.data, name)[: self.size] = value.numpy()


# =================================================================================================
# Learner
# =================================================================================================
class ScaledStateMixer(nn.Module):
    """A :class:`~baselines.networks.QMixer` fed ``state / scale``; the scale is a saved buffer."""

    def __init__(self, mixer: QMixer, scale: torch.Tensor):
        super().__init__()
        self.mixer = mixer
        self.register_buffer("scale", scale.to(torch.float32))

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """agent_qs (..., n), state (..., state_dim) -> Q_tot (...)."""
        return self.mixer(agent_qs, state / self.scale)


def estimate_state_scale(env, episodes: int, seed: int) -> torch.Tensor:
    """Per-dimension largest |state| over random-policy episodes, at least 1: (state_dim,)."""
    if episodes == 0:
        return torch.ones(env.info.state_dim)
    data = rollout(env, RandomPolicy(env.info, seed), episodes, seed)
    return torch.from_numpy(np.maximum(np.abs(data.states).max(0), 1.0))


class QMIXLearner(QMIXBackbone):
    """The QMIX backbone (:class:`~baselines.qmix_backbone.QMIXBackbone`) with a scaled-state
    mixer; :meth:`update` is one step on a replay batch. The trainer copies the targets."""

    def __init__(self, info: TaskInfo, cfg: QMIXConfig, state_scale: torch.Tensor | None = None):
        scale = torch.ones(info.state_dim) if state_scale is None else state_scale
        super().__init__(
            build_agent(info, cfg.agent_hidden_dim),
            ScaledStateMixer(QMixer(info.n_agents, info.state_dim, cfg.mixing_dim,
                                    cfg.hypernet_dim), scale),
            cfg.lr, cfg.grad_clip, cfg.gamma, cfg.td_lambda)
        self.info, self.cfg = info, cfg

    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        """One gradient step on a padded episode batch; returns scalar metrics."""
        obs = torch.from_numpy(batch.observations)                               # (B, T+1, n, d)
        states = torch.from_numpy(batch.states)                           # (B, T+1, S)
        avail = torch.from_numpy(batch.avail_actions)                     # (B, T+1, n, A)
        actions = torch.from_numpy(batch.actions)                         # (B, T, n)
        rewards = torch.from_numpy(batch.rewards)                         # (B, T)
        terminals = torch.from_numpy(batch.terminals)
        mask = torch.from_numpy(batch.mask)

        inputs = build_agent_inputs(obs, actions, self.info.n_actions)   # (B, T+1, n, in)
        q = self.agent.unroll(inputs)                                     # (B, T+1, n, A)
        chosen_q = q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)   # (B, T, n)
        chosen_q_tot = self.mixer(chosen_q, states[:, :-1])               # (B, T)
        targets = self.td_targets(inputs, q, avail, states, rewards, terminals, mask)  # (B, T)
        loss = qmix_td_loss(chosen_q_tot, targets, mask)
        grad_norm = self.step(loss)
        return {"loss": loss.item(), "grad_norm": float(grad_norm),
                "q_taken_mean": float(masked_mean(chosen_q_tot.detach(), mask)),
                "target_mean": float(masked_mean(targets, mask))}


# =================================================================================================
# Trainer: acting, evaluation, checkpoints, snapshots, resume
# =================================================================================================
CURVE_COLUMNS = ("env_steps", "episodes", "updates", "wall_s", "epsilon", "eval_return",
                 "eval_return_std", "eval_win_rate", "train_return", "loss", "q_mean",
                 "env_steps_per_s", "act_s", "update_s", "checkpoint")

#: Offsets that keep the evaluation and state-scale episodes' seeds apart from the acting ones.
EVAL_SEED_OFFSET = 1_000_003
SCALE_SEED_OFFSET = 2_000_003


class QMIXTrainer(BehaviourRun):
    """Trains QMIX online on one task and keeps a resumable run directory (module docstring)."""

    ALGORITHM = "qmix"
    CURVE_COLUMNS = CURVE_COLUMNS
    COUNTERS = ("env_steps", "episodes", "updates", "acting_batches", "evaluations",
                "last_target_update")

    def __init__(self, cfg: QMIXConfig, out: str | Path):
        self.cfg, self.out = cfg, Path(out)
        torch.manual_seed(cfg.seed)
        self.env = make_vec_env(cfg.task, cfg.num_envs, engine=cfg.engine)
        self.info = self.env.info
        scale = estimate_state_scale(self.env, cfg.state_scale_episodes,
                                     cfg.seed + SCALE_SEED_OFFSET)
        self.learner = QMIXLearner(self.info, cfg, scale)
        self.replay = EpisodeReplay(self.info, cfg.buffer_size)
        self.sample_rng = np.random.default_rng([cfg.seed, 1])
        self.env_steps = self.episodes = self.updates = self.acting_batches = 0
        self.evaluations = 0
        self.last_target_update = 0
        self.wall_s = 0.0
        self.curve: list[dict[str, Any]] = []
        self._pending_snapshots: list[dict[str, Any]] = []
        self._since_eval = self._fresh_tally()

    @staticmethod
    def _fresh_tally() -> dict[str, Any]:
        """What the next curve row summarises: acting returns, losses, Q, timings."""
        return {"returns": [], "losses": [], "q": [], "act_s": 0.0, "update_s": 0.0,
                "steps": 0, "wall": 0.0}

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
            "epsilon": torch.tensor([s["epsilon"] for s in snaps], dtype=torch.float64),
            "rollout_seed": torch.tensor([s["rollout_seed"] for s in snaps], dtype=torch.int64),
            "action_seed": torch.tensor([s["action_seed"] for s in snaps], dtype=torch.int64),
            "num_envs": self.cfg.num_envs,
            "agent": {k: torch.stack([s["agent"][k] for s in snaps]) for k in snaps[0]["agent"]},
            "task": task_dims(self.info),
            "agent_hidden_dim": self.cfg.agent_hidden_dim,
        }
        atomic_save(chunk, self.out / "snapshots" / f"batch_{snaps[0]['acting_batch']:08d}.pt")
        self._pending_snapshots = []

    # -- acting and learning ----------------------------------------------------------------------
    def act(self) -> EpisodeArrays:
        """Run one acting batch with the current epsilon-greedy policy and store it."""
        k = self.acting_batches
        epsilon = epsilon_at(self.cfg, self.env_steps)
        rollout_seed = batch_seed(self.cfg.seed, 2 * k)
        action_seed = batch_seed(self.cfg.seed, 2 * k + 1)
        self._pending_snapshots.append({
            "acting_batch": k, "episode": self.episodes, "env_steps": self.env_steps,
            "epsilon": epsilon, "rollout_seed": rollout_seed, "action_seed": action_seed,
            "agent": {n: p.detach().clone() for n, p in self.learner.agent.state_dict().items()},
        })
        policy = EpsilonGreedyPolicy(self.learner.agent, self.info.n_agents, self.info.n_actions,
                                     epsilon, action_seed)
        data = rollout(self.env, policy, self.cfg.num_envs, rollout_seed)
        batch = to_episode_batch(data, self.info)
        if not self.cfg.bootstrap_timeouts:
            last = np.arange(batch.mask.shape[1])[None, :] == data.lengths[:, None] - 1
            batch = dataclasses.replace(batch, terminals=batch.terminals | last)
        self.replay.insert(batch)
        self.acting_batches += 1
        self.episodes += data.n_episodes
        self.env_steps += data.n_transitions
        if len(self._pending_snapshots) >= self.cfg.snapshot_chunk:
            self._flush_snapshots()
        return data

    def learn(self) -> list[dict[str, float]]:
        metrics = []
        if self.replay.size < self.cfg.batch_size:
            return metrics
        for _ in range(self.cfg.updates_per_batch):
            metrics.append(self.learner.update(self.replay.sample(self.cfg.batch_size,
                                                                  self.sample_rng)))
            self.updates += 1
        if self.episodes - self.last_target_update >= self.cfg.target_update_episodes:
            self.learner.update_targets()
            self.last_target_update = self.episodes
        return metrics

    def learn_from(self, data: EpisodeArrays) -> list[dict[str, float]]:
        return self.learn()

    @staticmethod
    def tally(since: dict[str, Any], metrics: list[dict[str, float]]) -> None:
        since["losses"].extend(m["loss"] for m in metrics)
        since["q"].extend(m["q_taken_mean"] for m in metrics)

    # -- evaluation and checkpoints ---------------------------------------------------------------
    def evaluate_and_checkpoint(self) -> dict[str, Any]:
        started = time.perf_counter()
        policy = RecurrentGreedyPolicy(self.learner.agent, self.info.n_agents, self.info.n_actions)
        result = evaluate_policy(policy, self.cfg.task, self.cfg.eval_episodes,
                                 self.cfg.seed + EVAL_SEED_OFFSET, num_envs=self.cfg.eval_episodes,
                                 engine=self.cfg.engine)
        mean, std = result.mean_return, float(result.returns.std())
        name = f"step_{self.env_steps:09d}.pt"
        atomic_save({
            "agent": self.learner.agent.state_dict(), "mixer": self.learner.mixer.state_dict(),
            "env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
            "epsilon": epsilon_at(self.cfg, self.env_steps),
            "eval_return": mean, "eval_return_std": std,
            "eval_win_rate": result.win_rate, "eval_episodes": len(result.returns),
            "config": self.cfg.to_dict(), "task": task_dims(self.info),
        }, self.out / "checkpoints" / name)
        since = self._since_eval
        self.wall_s += time.perf_counter() - started
        row = {
            "env_steps": self.env_steps, "episodes": self.episodes, "updates": self.updates,
            "wall_s": round(self.wall_s, 2),
            "epsilon": round(epsilon_at(self.cfg, self.env_steps), 5),
            "eval_return": round(mean, 5), "eval_return_std": round(std, 5),
            "eval_win_rate": "" if result.win_rate is None else round(result.win_rate, 4),
            "train_return": round(float(np.mean(since["returns"])), 5) if since["returns"] else "",
            "loss": round(float(np.mean(since["losses"])), 6) if since["losses"] else "",
            "q_mean": round(float(np.mean(since["q"])), 4) if since["q"] else "",
            "env_steps_per_s": round(since["steps"] / since["wall"], 1) if since["wall"] else "",
            "act_s": round(since["act_s"], 2), "update_s": round(since["update_s"], 2),
            "checkpoint": f"checkpoints/{name}",
        }
        return self.finish_evaluation(row)

    @staticmethod
    def format_row(row: dict[str, Any]) -> str:
        return _format_row(row)


def _format_row(row: dict[str, Any]) -> str:
    win = f" win {row['eval_win_rate']}" if row["eval_win_rate"] != "" else ""
    return (f"steps {row['env_steps']:>9} eps {row['episodes']:>7} upd {row['updates']:>6} "
            f"wall {row['wall_s']:>8.1f}s epsilon {row['epsilon']:.3f} "
            f"eval {row['eval_return']:.3f}±{row['eval_return_std']:.3f}{win} "
            f"train {row['train_return']} loss {row['loss']} steps/s {row['env_steps_per_s']}")


# =================================================================================================
# Entry point
# =================================================================================================
def main(argv: list[str] | None = None) -> int:
    """Train a QMIX behaviour agent: ``python -m collection.qmix --task T --out DIR``."""
    parser = training_parser("python -m collection.qmix", main.__doc__,
                             "equal_line-n6, smac-2s3z", "batch_size=64")
    return train_from_args(parser.parse_args(argv), QMIXConfig, config_for, QMIXTrainer)


if __name__ == "__main__":
    raise SystemExit(main())
