"""OMAR, discrete version: independent CQL critics plus actor rectification toward argmax Q_i.

Paper: Pan, Huang, Ma, Xu, "Plan Better Amid Conservatism: Offline Multi-Agent Reinforcement
Learning with Actor Rectification", ICML 2022 (continuous actions; its rectification target is
found by zeroth-order optimisation, CEM, of Q_i around the actor's action). The discrete version
run as a baseline by Shao et al. (CFCQL, NeurIPS 2023, appendix C.3) replaces the search with
the best available action. Reference code: github.com/thu-rllab/CFCQL,
``discrete/src/learners/omar_learner.py`` with ``config/algs/baseline_omar.yaml``.
Update rules: ``ALGORITHMS.md`` of this project, sections "ICQL" and "OMAR".

Update (one call of :meth:`OMARDiscrete.update`, on a batch of whole episodes):

    critic (ICQL): Q_i(o_i, .) = critic_net(o_i^{<=t})                        # (B, T+1, n, A)
        V'_i(o_t) = sum_a pi_i(a | o_t) Q'_i(o_t, a)                           # target critic
        y_i       = TD_lambda(r, done, mask, V'_i)                              # per agent
        L_Q       = masked_mean( (Q_i(o_i, a_i) - y_i)^2
                                 + alpha * (logsumexp_{a avail} Q_i(o_i, a) - Q_i(o_i, a_i)) )
    actor (per agent, logits of a GRU, softmax over available actions):
        a_hat_i   = argmax_{j avail} Q_i(o_i, j)                               # rectification
        L_pi      = masked_mean( -(1 - c) sum_a pi_i(a | o_i) Q_i(o_i, a)
                                 + c * CE(pi_i(. | o_i), a_hat_i) )

Deviations from the reference code (each one chosen, not forced, unless said):
* The critic is PyMARL's GRU agent network on the agent's own history (observation, last action,
  agent id), as ALGORITHMS.md defines ICQL's Q_i(o_i, a_i); the code's critic is an MLP on
  (global state, o_i, agent id) with a 256-256 trunk.
* The rectification target is the exact argmax over available actions, as ALGORITHMS.md says;
  the code searches for it with a discretised CEM (5 iterations, 10 samples) and keeps the better
  of the CEM's best and the policy's argmax, which approximates the same action.
* The Q term of the actor is the exact expectation sum_a pi(a|o) Q(o, a), the discrete
  counterpart of OMAR's Q_i(o_i, pi_i(o_i)); the code uses -A(a_D) log pi(a_D) on dataset actions
  with A = Q(a_D) - sum_a pi(a) Q(a).
* The critic's target bootstraps from the current policy's expected target value V'_i (OMAR's
  TD3-style target); the code bootstraps from the target Q of the dataset's next actions.
  Both use the team reward for every agent.
* The CQL logsumexp runs over available actions only (the code takes it over all actions).
* One critic step per batch over all time steps (the code steps the critic once per time slice).
  The hard target copy runs every 25 updates (the code: every 200 episodes at 8 per call).
* Optimisers as the code: RMSprop (alpha 0.99, eps 1e-5) for the actor, Adam for the critic,
  both at 1e-4; gradient clip 10 for both.

Per-dataset settings: the code runs one configuration for every map and quality, so the
per-dataset table is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import (RNNAgent, agent_input_dim, build_agent_inputs,
                                         hard_update, make_target, masked_argmax,
                                         masked_fill_unavailable, masked_mean, td_lambda_targets)

from .base import QUICK_EPISODE_BATCH, BaseConfig, DiscreteActorCritic, DiscreteActorCriticConfig
from .behaviour import masked_log_softmax

__all__ = [
    "OMARDiscreteConfig", "OMARDiscrete", "PER_DATASET",
    # loss functions
    "independent_cql_penalty", "rectification_target", "omar_actor_loss",
    "per_agent_td_lambda_targets",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class OMARDiscreteConfig(DiscreteActorCriticConfig):
    """Discrete OMAR. Defaults: the reference code's ``baseline_omar.yaml``; its critic, a GRU
    of the actor's width, trains by Adam."""

    batch_size: int = 128
    """Episodes per update."""
    actor_lr: float = 1e-4
    """RMSprop learning rate of the actor."""
    cql_alpha: float = 5.0
    """Weight of each agent's CQL(H) term."""
    omar_coe: float = 0.5
    """c, the weight of the rectification term in the actor loss (1 - c weighs the Q term)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.omar_coe <= 1.0:
            raise ValueError(f"omar_coe must lie in [0, 1], got {self.omar_coe}")
        if self.cql_alpha < 0:
            raise ValueError(f"cql_alpha must be non-negative, got {self.cql_alpha}")


#: dataset id -> overrides. Empty: the reference code uses one setting for every dataset.
PER_DATASET: dict[str, dict[str, Any]] = {}


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def per_agent_td_lambda_targets(rewards: torch.Tensor, terminals: torch.Tensor, mask: torch.Tensor,
                                values: torch.Tensor, gamma: float,
                                td_lambda: float) -> torch.Tensor:
    """TD(lambda) targets for every agent's own value, all on the team reward.

    Args:
        rewards, terminals, mask: (B, T).
        values: (B, T+1, n) each agent's bootstrap value of every observation.

    Returns:
        (B, T, n).
    """
    batch, steps, n_agents = values.shape
    def per_agent(x):                                                # (B, T) -> (B*n, T)
        return x.unsqueeze(1).expand(batch, n_agents, x.shape[1]).reshape(batch * n_agents, -1)
    flat_values = values.permute(0, 2, 1).reshape(batch * n_agents, steps)
    targets = td_lambda_targets(per_agent(rewards), per_agent(terminals), per_agent(mask),
                                flat_values, gamma, td_lambda)       # (B*n, T)
    return targets.reshape(batch, n_agents, -1).permute(0, 2, 1)


def independent_cql_penalty(qs: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor | None,
                            mask: torch.Tensor) -> torch.Tensor:
    """Each agent's CQL(H) term, before alpha, averaged over agents and real steps.

    masked_mean( logsumexp_{j avail} Q_i(o_i, j) - Q_i(o_i, a_i) ).

    Args:
        qs: (B, T, n, A); actions: (B, T, n) int64; avail: (B, T, n, A) bool or None;
        mask: (B, T).
    """
    taken = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)                # (B, T, n)
    pushed_down = masked_fill_unavailable(qs, avail).logsumexp(dim=-1)      # (B, T, n)
    return masked_mean(pushed_down - taken, mask.unsqueeze(-1))


def rectification_target(qs: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """a_hat_i = argmax over agent i's available actions of Q_i(o_i, .): (..., A) -> (...)."""
    return masked_argmax(qs.detach(), avail)


def omar_actor_loss(logits: torch.Tensor, qs: torch.Tensor, target_actions: torch.Tensor,
                    avail: torch.Tensor | None, mask: torch.Tensor,
                    coe: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OMAR's rectified actor loss, discrete form.

    L = masked_mean( -(1 - c) sum_a pi(a|o) Q(o, a) + c * CE(pi(.|o), a_hat) ).

    Args:
        logits: (B, T, n, A) actor outputs.
        qs: (B, T, n, A) critic values (treated as constants).
        target_actions: (B, T, n) a_hat from :func:`rectification_target`.
        avail: (B, T, n, A) bool or None.
        mask: (B, T).
        coe: c in [0, 1].

    Returns:
        (loss, the Q term's masked mean, the cross-entropy's masked mean).
    """
    log_pi = masked_log_softmax(logits, avail)                               # (B, T, n, A)
    pi = log_pi.exp()
    expected_q = (pi * qs.detach()).sum(-1)              # (B, T, n); pi is 0 where unavailable
    cross_entropy = -log_pi.gather(-1, target_actions.unsqueeze(-1)).squeeze(-1)
    step_mask = mask.unsqueeze(-1)
    q_term = masked_mean(expected_q, step_mask)
    ce_term = masked_mean(cross_entropy, step_mask)
    return -(1.0 - coe) * q_term + coe * ce_term, q_term, ce_term


# =================================================================================================
# Trainer
# =================================================================================================
class OMARDiscrete(DiscreteActorCritic):
    """Discrete OMAR: per-agent CQL critics and rectified softmax actors (module docstring)."""

    checkpoint_attributes: ClassVar[tuple[str, ...]] = (
        "actor",
        "critic",
        "target_critic",
        "actor_optimiser",
        "critic_optimiser",
    )
    Config: ClassVar[type[BaseConfig]] = OMARDiscreteConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    reference_settings: ClassVar[tuple[str, ...]] = ("batch_size",)
    # Under `quick`, batches are sized for a 2-core CPU as CFCQL's are (QUICK_EPISODE_BATCH).
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"batch_size": QUICK_EPISODE_BATCH}}
    config: OMARDiscreteConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: OMARDiscreteConfig):
        super().__init__(info, dataset, config)
        # each agent's critic Q_i(tau_i, .) is a GRU network of the actor's shape
        self.critic = RNNAgent(agent_input_dim(info.obs_dim, info.n_actions, info.n_agents),
                               info.n_actions, config.hidden_dim).to(config.device)
        self.target_critic = make_target(self.critic)
        self.critic_optimiser = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        obs, actions, mask = batch.observations, batch.actions.long(), batch.mask
        avail = batch.avail_actions                                  # (B, T+1, n, A)
        step_avail = None if avail is None else avail[:, :-1]
        inputs = build_agent_inputs(obs, actions, self.info.n_actions)      # (B, T+1, n, in)

        # -- critic: independent TD(lambda) + CQL(H) per agent ---------------------------------
        logits = self.actor.unroll(inputs)                                  # (B, T+1, n, A)
        with torch.no_grad():
            pi = masked_log_softmax(logits, avail).exp()
            target_qs = self.target_critic.unroll(inputs)
            next_values = (pi * target_qs).sum(-1)                          # (B, T+1, n)
            targets = per_agent_td_lambda_targets(batch.rewards, batch.terminals, mask,
                                                  next_values, cfg.gamma, cfg.td_lambda)
        qs = self.critic.unroll(inputs)[:, :-1]                             # (B, T, n, A)
        taken = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)            # (B, T, n)
        td_loss = masked_mean((taken - targets) ** 2, mask.unsqueeze(-1))
        penalty = independent_cql_penalty(qs, actions, step_avail, mask)
        critic_loss = td_loss + cfg.cql_alpha * penalty
        self.critic_optimiser.zero_grad()
        critic_loss.backward()
        critic_grad = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
        self.critic_optimiser.step()

        # -- actor: Q term + rectification toward the best available action --------------------
        qs = qs.detach()
        target_actions = rectification_target(qs, step_avail)               # (B, T, n)
        actor_loss, q_term, ce_term = omar_actor_loss(logits[:, :-1], qs, target_actions,
                                                      step_avail, mask, cfg.omar_coe)
        actor_grad = self.actor_step(actor_loss)

        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            hard_update(self.target_critic, self.critic)
        step_mask = mask.unsqueeze(-1)
        return {
            "td_loss": td_loss.item(),
            "cql_loss": (cfg.cql_alpha * penalty).item(),
            "cql_penalty": penalty.item(),
            "q_taken_mean": masked_mean(taken.detach(), step_mask).item(),
            "target_mean": masked_mean(targets, step_mask).item(),
            "actor_loss": actor_loss.item(),
            "actor_q": q_term.item(),
            "rectification_ce": ce_term.item(),
            "critic_grad_norm": critic_grad.item(),
            "actor_grad_norm": actor_grad.item(),
        }

if __name__ == "__main__":  # python -m baselines.omar_discrete --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("omar"))
