"""The baselines' shared configs and sizing rules.

What an algorithm is to the pipeline (:class:`~marl_offline_bench.OfflineAlgorithm`, its
:class:`~marl_offline_bench.BaseConfig`) lives in the library, so that an algorithm in any
package plugs in the same way; this module adds what the suite's own learners share: the
backbones' configs, the parts the continuous and the discrete actor-critic learners build
alike (:class:`ContinuousActorCritic`, :class:`DiscreteActorCritic`), the CPU sizing of
``quick`` and what they take from the reference code's table under ``full``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from marl_offline_bench import BaseConfig, OfflineAlgorithm
from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import RNNAgent, agent_input_dim
from marl_offline_bench.policies import DeterministicActorPolicy, RecurrentGreedyPolicy

from .actor_critic_backbone import ActorCriticBackbone, clipped_step


#: CPU sizing under the ``quick`` protocol, one rule for every learner so that their runs are
#: comparable: a discrete learner draws this many episodes per update (128 in the authors' code)...
QUICK_EPISODE_BATCH = 32
#: ...and a continuous learner this many transitions (1024 on MPE, 256 on HalfCheetah in the code).
QUICK_TRANSITION_BATCH = 256

#: What the learners built on the reference code's continuous backbone take from its per-task
#: table under ``full`` (:data:`marl_offline_bench.protocols.REFERENCE`).
CONTINUOUS_REFERENCE_SETTINGS: tuple[str, ...] = ("batch_size", "lr", "policy_samples",
                                                  "critic_updates_per_round")


@dataclass
class QMIXBackboneConfig(BaseConfig):
    """The PyMARL/QMIX backbone shared by the discrete value-based learners (ALGORITHMS.md)."""

    batch_size: int = 128
    """Episodes per update."""
    lr: float = 1e-3
    """Adam learning rate of the agent network and mixer."""
    grad_clip: float = 10.0
    """Gradient-norm clip over the agent network and mixer together."""
    gamma: float = 0.99
    """Discount (per task; 0.99 on every discrete task)."""
    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets."""
    target_update_interval: int = 25
    """Updates between hard copies of the agent network and mixer into their targets."""
    hidden_dim: int = 64
    """Width of the agent network's layers and GRU."""
    mixing_dim: int = 32
    """Width of the QMIX mixing layer."""
    hypernet_dim: int = 64
    """Width of the mixer's hypernetworks."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must lie in [0, 1], got {self.td_lambda}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be positive, got {self.lr}, {self.grad_clip}")
        for name in ("batch_size", "target_update_interval", "hidden_dim", "mixing_dim",
                     "hypernet_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class DiscreteActorCriticConfig(BaseConfig):
    """What the discrete actor-critic learners share (MAICQ, OMAR): a GRU actor trained by
    RMSprop, a critic with TD(lambda) targets and hard target copies. Each sets its own
    defaults."""

    batch_size: int = 32
    """Episodes per update."""
    actor_lr: float = 5e-4
    """RMSprop learning rate of the actor."""
    critic_lr: float = 1e-4
    """Learning rate of the critic (and mixer, where there is one)."""
    rmsprop_alpha: float = 0.99
    """Smoothing constant of RMSprop."""
    rmsprop_eps: float = 1e-5
    """Epsilon of RMSprop."""
    grad_clip: float = 10.0
    """Gradient-norm clip of the actor and of the critic."""
    gamma: float = 0.99
    """Discount (per task; 0.99 on every discrete task)."""
    td_lambda: float = 0.6
    """lambda of the critic's TD(lambda) targets."""
    target_update_interval: int = 25
    """Updates between hard copies of the critic into its target."""
    hidden_dim: int = 64
    """Width of the actor's GRU network."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must lie in [0, 1], got {self.td_lambda}")
        for name in ("actor_lr", "critic_lr", "grad_clip", "rmsprop_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("batch_size", "target_update_interval", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class ContinuousBackboneConfig(BaseConfig):
    """The actor/central-critic backbone of the continuous learners (ALGORITHMS.md; MPE sizes
    by default, each algorithm's per-dataset table sets HalfCheetah's)."""

    batch_size: int = 1024
    """Transitions per update."""
    hidden_dim: int = 64
    """Hidden width of the actors and critics (MPE 64, HalfCheetah 256)."""
    lr: float = 1e-3
    """Adam learning rate of actors and critics."""
    target_rate: float = 0.01
    """Polyak rate of the target networks."""
    gamma: float = 0.95
    """Discount (per task; 0.95 on every continuous task, as the authors' code ran)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must lie in (0, 1], got {self.target_rate}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")


@dataclass
class ContinuousCQLConfig(ContinuousBackboneConfig):
    """What the conservative learners on the continuous backbone share (ICQL, OMAR, MACQL,
    CFCQL): the conservative term's weight and samples, TD3's target smoothing, the gradient
    clip and the actors' action penalty. Defaults: the authors' MPE settings."""

    alpha: float = 1.0
    """Weight of the conservative term (per dataset)."""
    num_sampled_actions: int = 10
    """M, actions drawn per source for the conservative term's logsumexp (per agent, or joint
    actions where the critic scores joint actions only)."""
    policy_samples: bool = True
    """Besides uniform samples, draw around the policy's actions at o and o' (False: uniform
    only, as the code does on MPE)."""
    sample_noise: float = 0.2
    """Standard deviation of the Gaussian around the policy's actions in those samples."""
    target_noise: float = 0.2
    """Standard deviation of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    grad_clip: float = 0.5
    """Gradient-norm clip of the critics and of each actor."""
    action_reg: float = 1e-3
    """Weight of the actors' mean squared action penalty."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_sampled_actions < 1:
            raise ValueError(f"{type(self).__name__}.num_sampled_actions must be at least 1, "
                             f"got {self.num_sampled_actions}")
        for name in ("grad_clip", "sample_noise"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be positive, got "
                                 f"{getattr(self, name)}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")


#: What an actor-critic learner (per-agent actors, a central critic, their targets and
#: optimisers) keeps in its checkpoints.
ACTOR_CRITIC_CHECKPOINT: tuple[str, ...] = ("actors", "critic", "target_actors", "target_critic",
                                            "actor_optimiser", "critic_optimiser")


class ContinuousActorCritic(OfflineAlgorithm, ActorCriticBackbone):
    """A continuous learner on the actor-critic backbone (ICQL, OMAR, MACQL, MATD3-BC, CFCQL):
    what they declare alike. It checkpoints the backbone's networks and optimisers, takes the
    reference code's per-task settings under ``full``, draws :data:`QUICK_TRANSITION_BATCH`
    transitions under ``quick``, acts with its actors, and holds ``action_mask`` (n, d), 1 on each
    agent's real action dimensions. A learner adds its networks with ``init_actor_critic``."""

    checkpoint_attributes: ClassVar[tuple[str, ...]] = ACTOR_CRITIC_CHECKPOINT
    reference_settings: ClassVar[tuple[str, ...]] = CONTINUOUS_REFERENCE_SETTINGS
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"batch_size": QUICK_TRANSITION_BATCH}}

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: BaseConfig):
        super().__init__(info, dataset, config)
        self.action_mask = torch.as_tensor(np.asarray(info.action_mask, bool),
                                           dtype=torch.float32, device=config.device)

    def policy(self) -> DeterministicActorPolicy:
        return DeterministicActorPolicy(self.actors, self.config.device)


class DiscreteActorCritic(OfflineAlgorithm):
    """A discrete actor-critic learner (MAICQ, OMAR): what they build alike from
    :class:`DiscreteActorCriticConfig`. The GRU actor (built first, so that it draws its initial
    weights before the learner's critic does) and its RMSprop, the episode sampler, the update
    count, the actor's step, and the greedy policy over its logits. A learner adds its critic."""

    config: DiscreteActorCriticConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: DiscreteActorCriticConfig):
        super().__init__(info, dataset, config)
        cfg = config
        self.actor = RNNAgent(agent_input_dim(info.obs_dim, info.n_actions, info.n_agents),
                              info.n_actions, cfg.hidden_dim).to(cfg.device)
        self.actor_optimiser = torch.optim.RMSprop(self.actor.parameters(), lr=cfg.actor_lr,
                                                   alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
        self.sampler = dataset.sampler(cfg.batch_size, kind="episodes", seed=cfg.seed,
                                       device=cfg.device)
        self.updates = 0

    def actor_step(self, loss: torch.Tensor) -> torch.Tensor:
        """One RMSprop step of the actor, its gradient norm clipped at ``grad_clip``; returns
        the norm before clipping."""
        return clipped_step(self.actor_optimiser, self.actor, loss, self.config.grad_clip,
                            agentwise=False)

    def policy(self) -> RecurrentGreedyPolicy:
        """Greedy: the argmax of the actor's logits over available actions."""
        return RecurrentGreedyPolicy(self.actor, self.info.n_agents, self.info.n_actions,
                                     self.config.device)


__all__ = ["BaseConfig", "OfflineAlgorithm", "QMIXBackboneConfig", "ContinuousBackboneConfig",
           "ContinuousCQLConfig", "DiscreteActorCriticConfig", "ContinuousActorCritic",
           "DiscreteActorCritic",
           "QUICK_EPISODE_BATCH", "QUICK_TRANSITION_BATCH", "CONTINUOUS_REFERENCE_SETTINGS",
           "ACTOR_CRITIC_CHECKPOINT"]
