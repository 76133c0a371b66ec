"""The twin-critic actor-critic backbone of the continuous learners (TD3 on OMAR's code).

Papers: Fujimoto, van Hoof, Meger 2018, "Addressing Function Approximation Error in
Actor-Critic Methods" (TD3: twin critics, target policy smoothing, delayed actor updates);
Lowe et al. 2017 (MADDPG: per-agent actors, centralised critic). Reference code: OMAR's
(github.com/ling-pan/OMAR) as the CFCQL code runs it. Settings: ``ALGORITHMS.md``, section
"Shared backbones".

What the learners share, written once here:

    a'_i = clip(pi'_i(o'_i) + clip(N(0, sigma), -c, c), -1, 1)      # target policy smoothing
    y    = r + gamma (1 - done) min_k Q'_k(s', a')                    # twin TD target
    L_Q  = sum_k mean_b (Q_k(s, a_D) - y)^2
    a round of ``length`` updates: every update steps the critic; one of them (``actor_step``)
    also steps the actors; the targets move (Polyak) at ``target_step`` or after every update.

The critic's inputs (joint state and action, or each agent's own), the actor's objective, the
conservative terms and which update of a round does what are each learner's own; the pure
functions and :class:`RoundSchedule` make them explicit, :class:`ActorCriticBackbone` holds the
networks, their targets and the two optimisers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from marl_offline_bench.networks import clip_grad_norm_agentwise_, make_target, soft_update

__all__ = ["ActorCriticBackbone", "RoundSchedule", "target_policy_smoothing", "twin_td_targets",
           "twin_td_loss"]


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def target_policy_smoothing(actions: torch.Tensor, noise_std: float, noise_clip: float,
                            action_mask: torch.Tensor) -> torch.Tensor:
    """TD3's smoothed target action clip(a + clip(N(0, std), -c, c), -1, 1), zero where padded.

    Args:
        actions: (..., n, d) target-policy actions; action_mask: (n, d).
    """
    noise = (torch.randn_like(actions) * noise_std).clamp(-noise_clip, noise_clip)
    return (actions + noise).clamp(-1.0, 1.0) * action_mask


def twin_td_targets(rewards: torch.Tensor, terminals: torch.Tensor, next_q: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - done) min_k Q'_k.

    Args:
        rewards, terminals: (B,); next_q: (2, B, ...) the target twins at (s', a').

    Returns:
        (B, ...), broadcasting r and done over any trailing axes of next_q (e.g. agents).
    """
    extra = (1,) * (next_q.dim() - 2)
    not_done = (1.0 - terminals.float()).reshape(-1, *extra)
    return rewards.reshape(-1, *extra) + gamma * not_done * next_q.min(0).values


def twin_td_loss(q: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum over twins (and any trailing axes) of the batch-mean squared TD error.

    Args:
        q: (2, B, ...); targets: (B, ...), detached here.
    """
    return (q - targets.detach()).pow(2).mean(1).sum()


# =================================================================================================
# The round schedule
# =================================================================================================
@dataclass(frozen=True)
class RoundSchedule:
    """Which update of a round of ``length`` critic updates also steps the actors, and which
    moves the targets. ``updates`` below counts the updates done before the current one.

    TD3 (``policy_delay`` d): ``RoundSchedule(d, actor_step=d - 1, target_step=d - 1)``.
    OMAR's code (``critic_updates_per_round`` k): ``RoundSchedule(k, 0, k - 1)``.

    Attributes:
        length: critic updates per round.
        actor_step: the position in the round (0-based) whose update also steps the actors.
        target_step: the position whose update moves the targets; None: every update.
    """

    length: int
    actor_step: int
    target_step: int | None

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"a round holds at least one update, got length {self.length}")
        for name in ("actor_step", "target_step"):
            step = getattr(self, name)
            if step is not None and not 0 <= step < self.length:
                raise ValueError(f"{name} must lie in [0, {self.length}), got {step}")

    def actor_due(self, updates: int) -> bool:
        """Whether the update after ``updates`` earlier ones steps the actors."""
        return updates % self.length == self.actor_step

    def targets_due(self, updates: int) -> bool:
        """Whether the update after ``updates`` earlier ones moves the targets."""
        return self.target_step is None or updates % self.length == self.target_step


# =================================================================================================
# Networks, targets, optimisers
# =================================================================================================
class ActorCriticBackbone:
    """Actors, a twin critic, their frozen targets and one Adam each, as attributes of the
    learner (``actors``, ``critic``, ``target_actors``, ``target_critic``, ``actor_optimiser``,
    ``critic_optimiser``: the checkpoint keys). A learner inherits this and calls
    :meth:`init_actor_critic` in its constructor."""

    actors: nn.Module
    critic: nn.Module
    target_actors: nn.Module
    target_critic: nn.Module
    actor_optimiser: torch.optim.Optimizer
    critic_optimiser: torch.optim.Optimizer

    def init_actor_critic(self, actors: nn.Module, critic: nn.Module, actor_lr: float,
                          critic_lr: float) -> None:
        """Hold ``actors`` and ``critic``, make their targets and optimisers."""
        self.actors, self.critic = actors, critic
        self.target_actors, self.target_critic = make_target(actors), make_target(critic)
        self.actor_optimiser = torch.optim.Adam(actors.parameters(), lr=actor_lr)
        self.critic_optimiser = torch.optim.Adam(critic.parameters(), lr=critic_lr)

    def critic_step(self, loss: torch.Tensor, max_norm: float = 0.0,
                    agentwise: bool = False) -> torch.Tensor | None:
        """One Adam step of the critic; see :func:`clipped_step`."""
        return clipped_step(self.critic_optimiser, self.critic, loss, max_norm, agentwise)

    def actor_step(self, loss: torch.Tensor, max_norm: float = 0.0,
                   agentwise: bool = True) -> torch.Tensor | None:
        """One Adam step of the actors; see :func:`clipped_step`."""
        return clipped_step(self.actor_optimiser, self.actors, loss, max_norm, agentwise)

    def update_targets(self, rate: float) -> None:
        """Polyak step of the target critic, then of the target actors."""
        soft_update(self.target_critic, self.critic, rate)
        soft_update(self.target_actors, self.actors, rate)


def clipped_step(optimiser: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor,
                 max_norm: float, agentwise: bool) -> torch.Tensor | None:
    """Backpropagate ``loss``, clip ``module``'s gradient norm, step ``optimiser``.

    Args:
        max_norm: the clip; 0 does not clip.
        agentwise: clip each agent's parameters separately
            (:func:`~marl_offline_bench.networks.clip_grad_norm_agentwise_`, norms (n,)),
            else all together (one norm).

    Returns:
        The gradient norm(s) before clipping, or None when not clipped.
    """
    optimiser.zero_grad()
    loss.backward()
    norm = None
    if max_norm > 0:
        norm = (clip_grad_norm_agentwise_(module, max_norm) if agentwise
                else nn.utils.clip_grad_norm_(module.parameters(), max_norm))
    optimiser.step()
    return norm
