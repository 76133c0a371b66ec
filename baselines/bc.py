"""Behaviour cloning: every agent imitates the dataset's actions.

The floor every offline MARL table starts from: the "BC" column of CFCQL (Shao et al., NeurIPS
2023, Tables 1-4) and of OMAR (Pan et al., ICML 2022). Reference code: CFCQL's
``discrete/src/learners/bc_learner.py`` with ``config/algs/bc.yaml`` (PyMARL's shared GRU agent,
masked softmax over available actions, cross-entropy on whole episodes, batch 128, Adam 5e-4,
gradient clip 10).

* Discrete tasks (Equal_Line, SMAC): the shared GRU agent network of :mod:`baselines.networks`,
  fitted as :class:`baselines.behaviour.DiscreteBehaviour` (the same model CFCQL fits as its
  behaviour policy); acts greedily (argmax of the logits over available actions).
* Continuous tasks (MPE, MaMuJoCo): per-agent deterministic actors pi_i(o_i) (MLP, tanh), fitted
  by mean-squared error on each agent's real action dimensions.

Deviations: the continuous variant has no counterpart in the CFCQL code; its sizes follow the
OMAR code the CFCQL continuous code builds on (hidden 64, Adam 1e-3, batch 1024 on MPE; hidden
256, 3e-4, batch 256 on MaMuJoCo). Gradients are clipped per agent, as separate optimisers would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import AgentActors, clip_grad_norm_agentwise_
from marl_offline_bench.policies import DeterministicActorPolicy, RecurrentGreedyPolicy
from marl_offline_bench.registry import DATASETS

from .base import QUICK_EPISODE_BATCH, QUICK_TRANSITION_BATCH, BaseConfig, OfflineAlgorithm
from .behaviour import DiscreteBehaviour

# -- config -------------------------------------------------------------------------------------
@dataclass
class BCConfig(BaseConfig):
    """Behaviour cloning hyper-parameters."""

    lr: float = 5e-4
    """Adam learning rate."""
    hidden_dim: int = 64
    """Width of the agent network (GRU hidden size; actor hidden layers)."""
    episode_batch_size: int = 128
    """Episodes per update on discrete tasks."""
    transition_batch_size: int = 1024
    """Transitions per update on continuous tasks."""
    grad_clip: float = 10.0
    """Gradient-norm clip (global for the shared network, per agent for the actors)."""

    def __post_init__(self) -> None:
        for name in ("lr", "hidden_dim", "episode_batch_size", "transition_batch_size",
                     "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BCConfig.{name} must be positive, got {getattr(self, name)}")


#: dataset id -> overrides (OMAR's sizes for the continuous families).
PER_DATASET: dict[str, dict[str, Any]] = {
    **{d: {"lr": 1e-3} for d, e in DATASETS.items() if e.task.family == "mpe"},
    **{d: {"lr": 3e-4, "hidden_dim": 256, "transition_batch_size": 256}
       for d, e in DATASETS.items() if e.task.family == "mamujoco"},
}


# -- loss ------------------------------------------------------------------------------------------
def continuous_bc_loss(pred: torch.Tensor, actions: torch.Tensor,
                       action_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over each agent's real action dimensions.

    Args:
        pred, actions: (B, n, action_dim).
        action_mask: (n, action_dim), 1 on real dimensions, 0 on padding.
    """
    squared = (pred - actions).pow(2) * action_mask                       # (B, n, action_dim)
    return squared.sum() / (action_mask.sum() * pred.shape[0])


# -- trainers --------------------------------------------------------------------------------------
class BCDiscrete(OfflineAlgorithm):
    """Behaviour cloning with PyMARL's shared GRU agent, on whole episodes."""

    Config = BCConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    # Under `quick`, batches are sized for a 2-core CPU as CFCQL's are (QUICK_EPISODE_BATCH).
    reference_settings: ClassVar[tuple[str, ...]] = ("episode_batch_size",)
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"episode_batch_size": QUICK_EPISODE_BATCH}}
    config: BCConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: BCConfig):
        super().__init__(info, dataset, config)
        self.model = DiscreteBehaviour(info.obs_dim, info.n_agents, info.n_actions,
                                       config.hidden_dim).to(config.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.sampler = dataset.sampler(config.episode_batch_size, kind="episodes",
                                       seed=config.seed, device=config.device)

    def update(self) -> dict[str, float]:
        loss = self.model.loss(next(self.sampler))
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return {"bc_loss": loss.item(), "grad_norm": grad_norm.item()}

    def policy(self) -> RecurrentGreedyPolicy:
        return RecurrentGreedyPolicy(self.model.net, self.info.n_agents, self.info.n_actions,
                                     self.config.device)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler_rng": self.sampler.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]


class BCContinuous(OfflineAlgorithm):
    """Behaviour cloning with per-agent deterministic actors, on transitions."""

    Config = BCConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    # Under `quick`, batches are sized for a 2-core CPU as CFCQL's are (QUICK_TRANSITION_BATCH).
    reference_settings: ClassVar[tuple[str, ...]] = ("transition_batch_size", "lr")
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"transition_batch_size": QUICK_TRANSITION_BATCH}}
    config: BCConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: BCConfig):
        super().__init__(info, dataset, config)
        self.actors = AgentActors(info.obs_dim, info.action_mask,
                                  config.hidden_dim).to(config.device)
        self.optimizer = torch.optim.Adam(self.actors.parameters(), lr=config.lr)
        self.sampler = dataset.sampler(config.transition_batch_size, kind="transitions",
                                       seed=config.seed, device=config.device)

    def update(self) -> dict[str, float]:
        batch = next(self.sampler)
        pred = self.actors(batch.observations)                            # (B, n, action_dim)
        loss = continuous_bc_loss(pred, batch.actions, self.actors.action_mask)
        self.optimizer.zero_grad()
        loss.backward()
        grad_norms = clip_grad_norm_agentwise_(self.actors, self.config.grad_clip)  # (n,)
        self.optimizer.step()
        return {"bc_loss": loss.item(), "grad_norm": grad_norms.max().item()}

    def policy(self) -> DeterministicActorPolicy:
        return DeterministicActorPolicy(self.actors, self.config.device)

    def state_dict(self) -> dict[str, Any]:
        return {"actors": self.actors.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler_rng": self.sampler.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actors.load_state_dict(state["actors"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]


__all__ = ["BCConfig", "BCDiscrete", "BCContinuous", "continuous_bc_loss",
           "PER_DATASET"]


if __name__ == "__main__":  # python -m baselines.bc --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("bc"))
