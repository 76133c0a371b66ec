"""MAICQ: multi-agent implicit constraint Q-learning (discrete).

Paper: Yang, Ma, Li, Zheng, Zhang, Huang, Yang, Zhao, "Believe What You See: Implicit Constraint
Approach for Offline Multi-Agent Reinforcement Learning", NeurIPS 2021 (arXiv:2106.03400).
Reference code: github.com/YiqinYang/ICQ, ``ICQ-MA/src/learners/offpg_learner.py``,
``modules/mixers/qmix.py``, ``modules/critics/offpg.py``, ``config/algs/offpg_smac.yaml`` and
``config/default.yaml`` (the constants below come from there); the CFCQL authors ran the same
learner as their MAICQ baseline (thu-rllab/CFCQL ``discrete/src/config/algs/baseline_icq.yaml``).
Update rules: ``ALGORITHMS.md`` of this project, section "MAICQ".

Update (one call of :meth:`MAICQDiscrete.update`, on a batch of whole episodes):

    critic:  Q_i(s, o_i, .) = MLP(s, o_i, agent id)                               # (B, T+1, n, A)
             Q_tot(s, a)    = sum_i k_i(s) Q_i(s, o_i, a_i) + b(s),  k_i >= 0, sum_i k_i = 1
             V_t  = Q'_tot(s_t, a_t) at dataset actions (target networks)
             w_t  = softmax over the batch of V_t / beta_c       (one softmax per time step t)
             y    = TD_lambda(r, done, mask, n_valid_t * w_t * V_t)
             L_Q  = masked_mean( (Q_tot(s, a_D) - y)^2 )
    actor:   pi_i(. | o_i) = softmax over available actions of a GRU's logits
             A_i  = Q_i(a_i) - sum_a pi_i(a) Q_i(a)                                 (constants)
             w_i  = softmax over the batch of k_i A_i / beta_a   (per time step and agent)
             L_pi = -masked_mean( n_valid * w_i * log pi_i(a_i | o_i) )

Only dataset actions are ever evaluated by the critic's target, which is the implicit constraint.

Deviations from the reference code (each one chosen, not forced, unless said):
* The actor's weights are softmax_batch(k_i A_i / beta_a), as the paper and ALGORITHMS.md write
  them; the code computes k_i * softmax_batch(A_i / beta_a) (``k_inside_softmax=False``).
* Q_tot adds the state bias b(s) of the paper's decomposition (an MLP on s); the code's mixer
  defines one but leaves it out of its forward pass. k_i(s) is the code's: the product of the
  absolute hypernetwork weights |W_1(s)| |w_2(s)|, normalised to sum to one over agents.
* The batch softmaxes run over real steps only, and the result is scaled by the number of real
  entries in its column (the code scales by the batch size and lets padded steps into the
  softmax). The weights therefore average to one over the real entries.
* Episodes that end by the time limit bootstrap from the last observation, which has no dataset
  action: its V is the target critic's value under the current policy,
  sum_i k_i sum_a pi_i(a) Q'_i(a) + b. (The code's batches carry a padded action there.)
* The critic takes one step per batch over all time steps (the code steps once per time slice),
  so the hard target copy counts batches: every 25 (the code: 600 single-step critic updates,
  about 10 to 30 batches on SMAC's episode lengths).
* The critic's output layer is a single linear head; the code sums a value head and an action
  head (fc_v(x) + fc3(x)), the same family of functions.

Per-dataset settings: the authors give none (one configuration for every map), so the table is
empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import (build_agent_inputs, hard_update, make_target,
                                         masked_mean, td_lambda_targets)

from .base import BaseConfig, DiscreteActorCritic, DiscreteActorCriticConfig
from .behaviour import masked_log_softmax

__all__ = [
    "MAICQConfig", "MAICQDiscrete", "PER_DATASET",
    "ICQCritic", "DecomposedMixer",
    # loss functions
    "batch_softmax_weights", "implicit_constraint_values", "maicq_actor_loss",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MAICQConfig(DiscreteActorCriticConfig):
    """Discrete MAICQ. Defaults: the authors' code (ICQ-MA ``offpg_smac.yaml``, ``default.yaml``);
    its critic and mixer train by RMSprop too."""

    grad_clip: float = 20.0
    """Gradient-norm clip of the actor and of critic + mixer."""
    td_lambda: float = 0.8
    """lambda of the critic's TD(lambda) targets."""
    critic_hidden_dim: int = 256
    """Width of the critic's two hidden layers."""
    mixing_dim: int = 32
    """Width of the mixer's hypernetwork output (the k_i(s) factorisation)."""
    beta_critic: float = 1000.0
    """Temperature of the critic's batch softmax over target values."""
    beta_actor: float = 0.1
    """Temperature of the actor's batch softmax over (k_i times) advantages."""
    k_inside_softmax: bool = True
    """True: softmax_batch(k_i A_i / beta_a) (the paper); False: k_i softmax_batch(A_i / beta_a)
    (the authors' code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_critic <= 0 or self.beta_actor <= 0:
            raise ValueError(f"beta_critic and beta_actor must be positive, got "
                             f"{self.beta_critic}, {self.beta_actor}")
        for name in ("critic_hidden_dim", "mixing_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


#: dataset id -> overrides. Empty: the authors use one setting for every dataset.
PER_DATASET: dict[str, dict[str, Any]] = {}


# =================================================================================================
# Networks
# =================================================================================================
class ICQCritic(nn.Module):
    """Per-agent Q_i(s, o_i, .) for every action: MLP on (state, observation, agent id)."""

    def __init__(self, state_dim: int, obs_dim: int, n_agents: int, n_actions: int,
                 hidden_dim: int = 256):
        super().__init__()
        self.n_agents = n_agents
        self.net = nn.Sequential(nn.Linear(state_dim + obs_dim + n_agents, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, n_actions))

    def forward(self, state: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """state (..., S), obs (..., n, o) -> (..., n, A)."""
        lead = obs.shape[:-2]
        ids = torch.eye(self.n_agents, dtype=obs.dtype, device=obs.device).expand(*lead, -1, -1)
        states = state.unsqueeze(-2).expand(*lead, self.n_agents, state.shape[-1])
        return self.net(torch.cat([states, obs, ids], dim=-1))


class DecomposedMixer(nn.Module):
    """Q_tot(s, q) = sum_i k_i(s) q_i + b(s), k_i(s) >= 0 summing to one over agents.

    k(s) = normalise(|W_1(s)| |w_2(s)|) with W_1(s) (n x m) and w_2(s) (m) linear hypernetworks
    of the state (the ICQ code's factorisation); b(s) = MLP(s).
    """

    def __init__(self, n_agents: int, state_dim: int, mixing_dim: int = 32):
        super().__init__()
        self.n_agents, self.mixing_dim = n_agents, mixing_dim
        self.hyper_w1 = nn.Linear(state_dim, n_agents * mixing_dim)
        self.hyper_w2 = nn.Linear(state_dim, mixing_dim)
        self.hyper_b = nn.Sequential(nn.Linear(state_dim, mixing_dim), nn.ReLU(),
                                     nn.Linear(mixing_dim, 1))

    def k(self, state: torch.Tensor) -> torch.Tensor:
        """Agent weights k_i(s): state (..., S) -> (..., n), non-negative, summing to one."""
        w1 = self.hyper_w1(state).abs().unflatten(-1, (self.n_agents, self.mixing_dim))
        w2 = self.hyper_w2(state).abs().unsqueeze(-1)                       # (..., m, 1)
        k = torch.matmul(w1, w2).squeeze(-1)                                # (..., n)
        return k / k.sum(-1, keepdim=True).clamp_min(1e-8)

    def b(self, state: torch.Tensor) -> torch.Tensor:
        """State bias b(s): (..., S) -> (...)."""
        return self.hyper_b(state).squeeze(-1)

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """agent_qs (..., n), state (..., S) -> Q_tot (...)."""
        return (self.k(state) * agent_qs).sum(-1) + self.b(state)


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
@torch.no_grad()
def batch_softmax_weights(values: torch.Tensor, valid: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """softmax over the batch axis (dim 0) of values / temperature, on valid entries only.

    Each column (every index but the first) is its own softmax; invalid entries get weight 0 and
    a column with no valid entry is all zeros. The result is a constant (no gradient).

    Args:
        values: (B, ...).
        valid: bool, broadcastable to ``values``.
        temperature: positive.

    Returns:
        (B, ...) weights summing to one over the valid entries of each column.
    """
    valid = valid.expand_as(values)
    logits = (values / temperature).masked_fill(~valid, float("-inf"))
    weights = torch.softmax(logits, dim=0)
    return torch.where(valid, weights, torch.zeros_like(weights))


@torch.no_grad()
def implicit_constraint_values(target_q_tot: torch.Tensor, valid: torch.Tensor,
                               beta_critic: float) -> torch.Tensor:
    """The critic's bootstrap values under the implicit constraint: n_valid_t * w_t * V_t.

    Args:
        target_q_tot: (B, T+1) target Q_tot at the dataset's actions.
        valid: (B, T+1) bool, real observations.
        beta_critic: the batch softmax's temperature.

    Returns:
        (B, T+1), zero on invalid entries.
    """
    weights = batch_softmax_weights(target_q_tot, valid, beta_critic)
    n_valid = valid.sum(0, keepdim=True).to(target_q_tot.dtype)
    return n_valid * weights * target_q_tot


def maicq_actor_loss(log_pi_taken: torch.Tensor, advantages: torch.Tensor, k: torch.Tensor,
                     mask: torch.Tensor, beta_actor: float,
                     k_inside_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed implicit-constraint policy loss.

    L = -masked_mean( n_valid * w * log pi_i(a_i | o_i) ), w = softmax_batch(k_i A_i / beta)
    (or k_i * softmax_batch(A_i / beta) with ``k_inside_softmax=False``).

    Args:
        log_pi_taken: (B, T, n) log-probability of the dataset actions.
        advantages: (B, T, n) A_i (constants).
        k: (B, T, n) the mixer's agent weights (constants).
        mask: (B, T) true on real steps.

    Returns:
        (loss, the weights (B, T, n)).
    """
    valid = mask.unsqueeze(-1).expand_as(advantages).bool()
    if k_inside_softmax:
        weights = batch_softmax_weights(k.detach() * advantages.detach(), valid, beta_actor)
    else:
        weights = k.detach() * batch_softmax_weights(advantages.detach(), valid, beta_actor)
    n_valid = valid.sum(0, keepdim=True).to(weights.dtype)                    # (1, T, n)
    return -masked_mean(n_valid * weights * log_pi_taken, valid), weights


# =================================================================================================
# Trainer
# =================================================================================================
class MAICQDiscrete(DiscreteActorCritic):
    """Discrete MAICQ: decomposed critic with implicit-constraint targets, weighted BC actor."""

    checkpoint_attributes: ClassVar[tuple[str, ...]] = (
        "actor",
        "critic",
        "mixer",
        "target_critic",
        "target_mixer",
        "actor_optimiser",
        "critic_optimiser",
    )
    Config: ClassVar[type[BaseConfig]] = MAICQConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: MAICQConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MAICQConfig):
        super().__init__(info, dataset, config)
        cfg, device, n = config, torch.device(config.device), info.n_agents
        self.critic = ICQCritic(info.state_dim, info.obs_dim, n, info.n_actions,
                                cfg.critic_hidden_dim).to(device)
        self.mixer = DecomposedMixer(n, info.state_dim, cfg.mixing_dim).to(device)
        self.target_critic, self.target_mixer = make_target(self.critic), make_target(self.mixer)
        self.critic_params = [*self.critic.parameters(), *self.mixer.parameters()]
        self.critic_optimiser = torch.optim.RMSprop(self.critic_params, lr=cfg.critic_lr,
                                                    alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        obs, state = batch.observations, batch.states                  # (B,T+1,n,o), (B,T+1,S)
        actions, mask = batch.actions.long(), batch.mask      # (B, T, n), (B, T)
        avail = batch.avail_actions                          # (B, T+1, n, A)
        step_avail = None if avail is None else avail[:, :-1]
        inputs = build_agent_inputs(obs, actions, self.info.n_actions)

        # One actor unroll serves both halves: the critic step does not touch the actor, so the
        # policy in the critic's targets is the one the actor loss differentiates.
        logits = self.actor.unroll(inputs)                                    # (B, T+1, n, A)

        # -- critic: TD(lambda) on implicit-constraint (dataset-action) values -----------------
        with torch.no_grad():
            pi = masked_log_softmax(logits.detach(), avail).exp()             # (B, T+1, n, A)
            target_qs = self.target_critic(state, obs)                        # (B, T+1, n, A)
            no_step = torch.zeros_like(mask[:, :1])
            has_action = torch.cat([mask, no_step], dim=1)                    # (B, T+1)
            next_actions = F.pad(actions, (0, 0, 0, 1))                       # (B, T+1, n)
            taken = target_qs.gather(-1, next_actions.unsqueeze(-1)).squeeze(-1)
            per_agent = torch.where(has_action.unsqueeze(-1), taken, (pi * target_qs).sum(-1))
            target_q_tot = self.target_mixer(per_agent, state)                # (B, T+1)
            real_obs = torch.cat([~no_step, mask], dim=1)                     # t <= length
            values = implicit_constraint_values(target_q_tot, real_obs, cfg.beta_critic)
            targets = td_lambda_targets(batch.rewards, batch.terminals, mask, values,
                                        cfg.gamma, cfg.td_lambda)             # (B, T)
        q_vals = self.critic(state[:, :-1], obs[:, :-1])                      # (B, T, n, A)
        q_taken = q_vals.gather(-1, actions.unsqueeze(-1)).squeeze(-1)        # (B, T, n)
        q_tot = self.mixer(q_taken, state[:, :-1])                            # (B, T)
        critic_loss = masked_mean((q_tot - targets) ** 2, mask)
        self.critic_optimiser.zero_grad()
        critic_loss.backward()
        critic_grad = nn.utils.clip_grad_norm_(self.critic_params, cfg.grad_clip)
        self.critic_optimiser.step()

        # -- actor: advantage-weighted log-likelihood of the dataset actions -------------------
        with torch.no_grad():
            q_vals = self.critic(state[:, :-1], obs[:, :-1])                  # updated critic
            q_taken = q_vals.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            k = self.mixer.k(state[:, :-1])                                   # (B, T, n)
        log_pi = masked_log_softmax(logits[:, :-1], step_avail)
        baseline = (log_pi.detach().exp() * q_vals).sum(-1)                   # (B, T, n)
        advantages = q_taken - baseline
        log_pi_taken = log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)   # (B, T, n)
        actor_loss, weights = maicq_actor_loss(log_pi_taken, advantages, k, mask,
                                               cfg.beta_actor, cfg.k_inside_softmax)
        actor_grad = self.actor_step(actor_loss)

        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            hard_update(self.target_critic, self.critic)
            hard_update(self.target_mixer, self.mixer)
        step_mask = mask.unsqueeze(-1)
        return {
            "critic_loss": critic_loss.item(),
            "q_taken_mean": masked_mean(q_tot.detach(), mask).item(),
            "target_mean": masked_mean(targets, mask).item(),
            "actor_loss": actor_loss.item(),
            "advantage_mean": masked_mean(advantages, step_mask).item(),
            "actor_weight_max": weights.max().item(),
            "log_pi_taken_mean": masked_mean(log_pi_taken.detach(), step_mask).item(),
            "critic_grad_norm": critic_grad.item(),
            "actor_grad_norm": actor_grad.item(),
        }

if __name__ == "__main__":  # python -m baselines.maicq_discrete --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("maicq"))
