"""MATD3-BC: TD3+BC with a centralised twin critic, the "TD3-BC" baseline of CFCQL's tables.

Paper: Fujimoto and Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021
(arXiv:2106.06860); made centralised-training / decentralised-execution as CFCQL's appendix C.3
describes (Shao et al., NeurIPS 2023). Reference code: github.com/sfujim/TD3_BC (``TD3_BC.py``,
``main.py``); the multi-agent backbone is OMAR's (github.com/ling-pan/OMAR) as CFCQL runs it.
Update rules: ``ALGORITHMS.md`` of this project, sections "Shared backbones" and "MATD3-BC".

Networks, targets, optimisers, the TD3 target and the round schedule are the continuous
backbone's (:mod:`baselines.actor_critic_backbone`).
Critic: centralised twin Q_k(s, a_1..a_n), TD3 target
y = r + gamma (1 - done) min_k Q'_k(s', a'), a'_i = clip(pi'_i(o'_i) + clip(N(0, 0.2), -0.5, 0.5)).
Actors, every ``policy_delay`` = 2 critic updates, in TD3+BC's form:
L_pi = -lambda mean_b Q_1(s, pi_1(o_1), ..., pi_n(o_n)) + mean_b sum_i ||pi_i(o_i) - a_i||^2,
lambda = alpha / mean_b |Q_1| with alpha = 2.5 and no gradient through the batch mean, so the
Q-part of the loss does not change when the critic's scale does. Targets move (Polyak) after
each actor update, as in TD3. Observations and states are normalised by the dataset's mean and
standard deviation (+1e-3), as TD3+BC normalises states.

Deviations (each chosen, not forced):
* The behaviour-cloning term sums squared errors over the agents' real action dimensions, as
  ``ALGORITHMS.md`` writes it; TD3_BC's ``F.mse_loss`` averages over them instead, which weighs
  the BC term 1/(number of action dims) as much. ``bc_reduction="mean"`` gives TD3_BC's form.
* Sizes follow the multi-agent backbone (MPE: hidden 64, batch 1024, lr 1e-3, target rate 0.01;
  HalfCheetah: hidden 256, batch 256, lr 3e-4, rate 0.005), not TD3_BC's single-agent 256/256/
  3e-4/0.005. gamma is a per-task setting, 0.95 on every continuous task (the backbone code's
  value; TD3_BC uses 0.99). The actors' output layers start small (+-3e-3, OMAR's init).
* Normalisation statistics come from every stored observation, each episode's final one
  included (TD3_BC: the transitions' states); no gradient clipping, as in TD3_BC
  (``grad_clip`` > 0 adds it).
* The critic trains on the team reward (``dataset["rewards"]``), which on mpe-cn is the sum of
  the agents' rewards (the backbone code read agent 0's).
* Per-dataset table: TD3+BC uses alpha 2.5 on every dataset and CFCQL gives no table for its
  TD3-BC runs, so the table holds only the backbone's per-task sizes and gamma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import AgentActors, TwinCritic
from marl_offline_bench.policies import DeterministicActorPolicy

from .actor_critic_backbone import (RoundSchedule, target_policy_smoothing, twin_td_loss,
                                    twin_td_targets)
from .base import (ACTOR_CRITIC_CHECKPOINT, BaseConfig, ContinuousActorCritic,
                   ContinuousBackboneConfig)
from .sampling_continuous import continuous_per_dataset

__all__ = [
    "MATD3BC", "MATD3BCConfig", "PER_DATASET", "ObservationNormaliser",
    "NormalisedActors",
    # loss functions
    "td3bc_lambda", "td3bc_actor_loss",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MATD3BCConfig(ContinuousBackboneConfig):
    """MATD3-BC hyper-parameters. Defaults: TD3+BC's, on the backbone's MPE sizes."""

    alpha: float = 2.5
    """TD3+BC's alpha: lambda = alpha / mean |Q|."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update."""
    target_noise: float = 0.2
    """Standard deviation of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    bc_reduction: str = "sum"
    """"sum": squared error summed over each agent's action dims and over agents (ALGORITHMS.md);
    "mean": averaged over all joint action dims (TD3_BC's ``F.mse_loss``)."""
    normalize: bool = True
    """Normalise observations and states by the dataset's mean and std (TD3+BC)."""
    normalize_eps: float = 1e-3
    """Added to the standard deviation when normalising."""
    grad_clip: float = 0.0
    """Gradient-norm clip of the critic and of each actor; 0 disables it (TD3_BC has none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "hidden_dim", "policy_delay"):
            if getattr(self, name) < 1:
                raise ValueError(f"MATD3BCConfig.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")
        if self.lr <= 0 or self.alpha < 0 or self.grad_clip < 0 or self.normalize_eps <= 0:
            raise ValueError("lr and normalize_eps must be positive, alpha and grad_clip "
                             "non-negative")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must lie in (0, 1], got {self.target_rate}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.bc_reduction not in ("sum", "mean"):
            raise ValueError(f"bc_reduction must be 'sum' or 'mean', got {self.bc_reduction!r}")


#: dataset id -> overrides: the backbone's per-task sizes and gamma (no per-dataset alpha).
PER_DATASET: dict[str, dict[str, Any]] = continuous_per_dataset()


# =================================================================================================
# Networks
# =================================================================================================
class ObservationNormaliser(nn.Module):
    """x -> (x - mean) / std with fixed statistics (buffers, so they travel in state dicts)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())

    @classmethod
    def fit(cls, values: np.ndarray, eps: float, enabled: bool = True) -> "ObservationNormaliser":
        """Statistics over the first axis of ``values``; identity when ``enabled`` is false."""
        if not enabled:
            return cls(torch.zeros(values.shape[1:]), torch.ones(values.shape[1:]))
        mean, std = values.mean(0, dtype=np.float64), values.std(0, dtype=np.float64)
        return cls(torch.from_numpy(mean), torch.from_numpy(std) + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalisedActors(nn.Module):
    """The actors behind the observation normaliser: what acts in the environment."""

    def __init__(self, normaliser: ObservationNormaliser, actors: AgentActors):
        super().__init__()
        self.normaliser, self.actors = normaliser, actors

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actors(self.normaliser(obs))


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def td3bc_lambda(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """lambda = alpha / mean |Q| over the batch, detached (TD3+BC)."""
    return alpha / q.abs().mean().detach()


def td3bc_actor_loss(q_policy: torch.Tensor, policy_actions: torch.Tensor,
                     dataset_actions: torch.Tensor, action_mask: torch.Tensor, alpha: float,
                     reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TD3+BC's actor loss on the joint action.

    L = -lambda mean_b Q_1(s, pi(o)) + BC, lambda = alpha / mean_b |Q_1(s, pi(o))| (detached);
    BC = mean_b sum_i ||pi_i(o_i) - a_i||^2 over real action dims ("sum"), or the mean over all
    real joint action dims ("mean", TD3_BC's ``F.mse_loss``).

    Args:
        q_policy: (B,) Q_1 of the policy's joint action.
        policy_actions, dataset_actions: (B, n, d); action_mask: (n, d).

    Returns:
        (loss, its Q-part -lambda mean Q, its BC part).
    """
    q_part = -td3bc_lambda(q_policy, alpha) * q_policy.mean()
    squared = (policy_actions - dataset_actions).pow(2) * action_mask            # (B, n, d)
    bc = squared.sum((-2, -1)).mean()
    if reduction == "mean":
        bc = bc / action_mask.sum()
    return q_part + bc, q_part, bc


# =================================================================================================
# Trainer
# =================================================================================================
class MATD3BC(ContinuousActorCritic):
    """TD3+BC with per-agent actors and a centralised twin critic (see the module docstring)."""

    checkpoint_attributes: ClassVar[tuple[str, ...]] = (*ACTOR_CRITIC_CHECKPOINT, "obs_norm",
                                                        "state_norm")
    Config: ClassVar[type[BaseConfig]] = MATD3BCConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: MATD3BCConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MATD3BCConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        episodes = dataset.episodes_data
        self.obs_norm = ObservationNormaliser.fit(episodes.obs, cfg.normalize_eps,
                                                  cfg.normalize).to(device)
        self.state_norm = ObservationNormaliser.fit(episodes.states, cfg.normalize_eps,
                                                    cfg.normalize).to(device)
        self.init_actor_critic(AgentActors(info.obs_dim, info.action_mask,
                                           cfg.hidden_dim).to(device),
                               TwinCritic(info.state_dim, info.n_agents * info.action_dim,
                                          cfg.hidden_dim).to(device), cfg.lr, cfg.lr)
        d = cfg.policy_delay                       # TD3: the actors and targets every d-th update
        self.schedule = RoundSchedule(d, actor_step=d - 1, target_step=d - 1)
        self.sampler = dataset.sampler(cfg.batch_size, kind="transitions", seed=cfg.seed,
                                       device=cfg.device)
        self.updates = 0

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        obs, next_obs = self.obs_norm(batch.observations), self.obs_norm(
            batch.next_observations)                                        # (B, n, o)
        state, next_state = self.state_norm(batch.states), self.state_norm(
            batch.next_states)                                              # (B, S)
        actions = batch.actions                                             # (B, n, d)

        with torch.no_grad():
            next_actions = target_policy_smoothing(self.target_actors(next_obs), cfg.target_noise,
                                                   cfg.target_noise_clip, self.action_mask)
            next_q = self.target_critic(next_state, next_actions.flatten(1))   # (2, B)
            targets = twin_td_targets(batch.rewards, batch.terminals, next_q, cfg.gamma)
        q_data = self.critic(state, actions.flatten(1))                        # (2, B)
        critic_loss = twin_td_loss(q_data, targets)
        self.critic_step(critic_loss, cfg.grad_clip)
        metrics = {"critic_loss": critic_loss.item(), "q_data_mean": q_data.mean().item(),
                   "target_mean": targets.mean().item()}

        if self.schedule.actor_due(self.updates):
            policy_actions = self.actors(obs)                                  # (B, n, d)
            q_policy = self.critic(state, policy_actions.flatten(1))[0]        # (B,)
            actor_loss, q_part, bc = td3bc_actor_loss(q_policy, policy_actions, actions,
                                                      self.action_mask, cfg.alpha,
                                                      cfg.bc_reduction)
            self.actor_step(actor_loss, cfg.grad_clip, agentwise=True)
            metrics.update(actor_loss=actor_loss.item(), actor_q_part=q_part.item(),
                           bc_loss=bc.item(),
                           td3bc_lambda=td3bc_lambda(q_policy, cfg.alpha).item())
        if self.schedule.targets_due(self.updates):
            self.update_targets(cfg.target_rate)
        self.updates += 1
        return metrics

    def policy(self) -> DeterministicActorPolicy:
        return DeterministicActorPolicy(NormalisedActors(self.obs_norm, self.actors),
                                        self.config.device)


if __name__ == "__main__":  # python -m baselines.matd3bc --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("matd3-bc"))
