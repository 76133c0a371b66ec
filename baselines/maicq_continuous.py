"""MAICQ (continuous): multi-agent implicit constraint Q-learning with Gaussian per-agent policies.

Paper: Yang, Ma, Li, Zheng, Zhang, Huang, Yang, Zhao, "Believe What You See: Implicit Constraint
Approach for Offline Multi-Agent Reinforcement Learning", NeurIPS 2021 (arXiv:2106.03400).
Reference code: github.com/YiqinYang/ICQ: ``ICQ-MA/src/learners/offpg_learner.py`` and
``ICQ-MA/src/modules/mixers/qmix.py`` (the multi-agent, discrete learner: constants beta,
TD(lambda), decomposed critic) and ``ICQ/icq.py`` with ``core.py`` (the single-agent continuous learner: the
Gaussian policy and the sampled value baseline). CFCQL cites continuous MAICQ results from OMAR's
paper, whose implementation is not public. Update rules: ``ALGORITHMS.md``, "MAICQ".

Critic (dataset actions only, no action ever drawn from the policy inside the Bellman target):
  Q_tot(s, a) = sum_i k_i(s) Q_i(o_i, a_i) + b(s),  k_i >= 0, sum_i k_i = 1  (:class:`MAICQMixer`)
  V'_t = N softmax_batch(Q'_tot(s_t, a_t) / beta_c) Q'_tot(s_t, a_t)          (implicit constraint)
  y_t  = TD(lambda) return of the rewards bootstrapped on V' (lambda 0.8)
  L_Q  = masked_mean (Q_tot(s_t, a_t) - y_t)^2
Actors pi_i(a_i | o_i) = N(tanh(mu_i(o_i)), sigma_i^2), sigma_i a learnt per-dimension constant:
  A_i  = Q_i(o_i, a_i) - E_{a ~ pi_i} Q_i(o_i, a)   (the expectation by M samples)
  L_i  = -mean_batch[ k_i(s) N softmax_batch(A_i / beta_a) log pi_i(a_i | o_i) ]
with beta_c = 1000 and beta_a = 0.1 (the ICQ-MA code), N the number of real steps in the batch
(so the weights average one). Acting takes the Gaussian's mean.

Deviations from the reference code (each chosen; ICQ has no multi-agent continuous code):
* Batches are random windows of ``window`` consecutive steps (MPE: 25, whole episodes; HalfCheetah:
  32-step pieces of its 1000-step episodes) from :class:`~baselines.sampling_continuous.
  WindowSampler`; the softmaxes run over all real steps of the batch (the ICQ-MA code: over the
  episodes of the batch, separately at every time step). Where no dataset action follows the
  window's last observation (the episode's end), the bootstrap uses the policy's mean action.
* Q_tot keeps the state bias b(s) of ALGORITHMS.md (the ICQ-MA code's forward drops it); k_i(s) is
  the code's |W_1(s)| |w_final(s)|, normalised over agents.
* Per-agent critics Q_i(o_i, a_i) (the ICQ-MA code: a COMA critic on state, observation and agent
  id over discrete actions); the baseline E_pi Q_i is a mean over ``baseline_samples`` = 10 policy
  samples (the single-agent code: one sample, the ICQ-MA code: the exact sum over actions).
* Adam at the backbone's learning rate for both (the code: RMSprop, actor 5e-4, critic 1e-4),
  Polyak targets at the backbone's rate (the code: a hard copy every 600 critic steps), backbone
  sizes and gamma (0.95); gradient-norm clip 10 (PyMARL's default) on the critic and each actor.
* The actor losses are summed over agents (the code averages them); the critic trains on the team
  reward (``dataset["rewards"]``).
* Per-dataset table: the authors give none for continuous tasks, so it holds the backbone's
  per-task sizes and gamma and the window layout only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import (AgentwiseMLP, clip_grad_norm_agentwise_, make_target, masked_mean,
                       soft_update, td_lambda_targets)
from marl_offline_bench.policies import DeterministicActorPolicy

from .base import BaseConfig, OfflineAlgorithm
from .sampling_continuous import continuous_per_dataset

__all__ = [
    "MAICQContinuous", "MAICQContinuousConfig", "PER_DATASET",
    "GaussianActors", "AgentQNetworks", "MAICQMixer",
    # loss functions
    "batch_softmax_weights", "implicit_constraint_values", "maicq_critic_loss",
    "maicq_actor_loss",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MAICQContinuousConfig(BaseConfig):
    """MAICQ for continuous actions. Defaults: the ICQ-MA code's constants on the MPE backbone."""

    batch_size: int = 40
    """Windows per update (MPE 40 x 25 steps; HalfCheetah 8 x 32)."""
    window: int = 25
    """Steps per window (MPE 25: whole episodes)."""
    hidden_dim: int = 64
    """Hidden width of the actors and per-agent critics (MPE 64, HalfCheetah 256)."""
    mixing_dim: int = 32
    """Width of the mixer's hypernetworks (the code's mixing_embed_dim)."""
    lr: float = 1e-3
    """Adam learning rate of actors, critics and mixer."""
    target_rate: float = 0.01
    """Polyak rate of the target critics and mixer, applied after every update."""
    gamma: float = 0.95
    """Discount (per task; 0.95 on every continuous task)."""
    td_lambda: float = 0.8
    """lambda of the TD(lambda) targets."""
    critic_beta: float = 1000.0
    """beta_c, temperature of the implicit-constraint weights in the critic's target."""
    actor_beta: float = 0.1
    """beta_a, temperature of the advantage weights in the actors' loss."""
    baseline_samples: int = 10
    """Policy samples per step estimating E_{a ~ pi_i} Q_i(o_i, a)."""
    log_std_min: float = -6.0
    """Lower end of the policies' log standard deviation (the ICQ code's range)."""
    log_std_max: float = 0.0
    """Upper end of the policies' log standard deviation."""
    grad_clip: float = 10.0
    """Gradient-norm clip of the critic (agent Qs and mixer together) and of each actor."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "window", "hidden_dim", "mixing_dim", "baseline_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"MAICQContinuousConfig.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")
        for name in ("lr", "critic_beta", "actor_beta", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MAICQContinuousConfig.{name} must be positive, got "
                                 f"{getattr(self, name)}")
        if not 0.0 <= self.td_lambda <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"td_lambda and gamma must lie in [0, 1], got {self.td_lambda}, "
                             f"{self.gamma}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must lie in (0, 1], got {self.target_rate}")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max "
                             f"({self.log_std_max})")


_WINDOWS: dict[str, dict[str, Any]] = {
    **{task: dict(batch_size=40, window=25) for task in ("mpe-cn", "mpe-pp", "mpe-world")},
    "mamujoco-halfcheetah_2x3": dict(batch_size=8, window=32),
}
#: dataset id -> overrides: backbone sizes and gamma of its task, its window layout (about the
#: backbone's transitions per batch). No per-dataset values: the authors give none.
PER_DATASET: dict[str, dict[str, Any]] = continuous_per_dataset(per_task=_WINDOWS)


# =================================================================================================
# Networks
# =================================================================================================
class GaussianActors(nn.Module):
    """Per-agent Gaussian policies N(tanh(mu_i(o_i)), sigma_i^2) (the ICQ code's actor).

    mu_i is an MLP with 2 hidden ReLU layers; log sigma_i is a learnt per-dimension constant
    squashed into [log_std_min, log_std_max]. Calling the module gives the mean (greedy) action,
    so :class:`~baselines.greedy.DeterministicActorPolicy` can act with it. Padded action dims
    are zero and carry no log-probability.
    """

    def __init__(self, obs_dim: int, action_mask: np.ndarray, hidden_dim: int = 64,
                 log_std_min: float = -6.0, log_std_max: float = 0.0):
        super().__init__()
        action_mask = np.asarray(action_mask, bool)
        n_agents, action_dim = action_mask.shape
        self.net = AgentwiseMLP(n_agents, obs_dim, action_dim, hidden_dim)
        self.log_std_logits = nn.Parameter(torch.zeros(n_agents, action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.register_buffer("action_mask", torch.as_tensor(action_mask, dtype=torch.float32))

    def log_std(self) -> torch.Tensor:
        """(n, d) log standard deviations."""
        return self.log_std_min + torch.sigmoid(self.log_std_logits) * (
            self.log_std_max - self.log_std_min)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., n, o) -> mean actions (..., n, d) in [-1, 1], zero where padded."""
        return torch.tanh(self.net(obs)) * self.action_mask

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi_i(a_i | o_i) summed over real dims: (..., n, o), (..., n, d) -> (..., n)."""
        per_dim = torch.distributions.Normal(self(obs), self.log_std().exp()).log_prob(actions)
        return (per_dim * self.action_mask).sum(-1)

    def sample(self, obs: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` actions per agent, clipped to the action box: (B..., n, o) -> (B..., K, n, d)."""
        mean = self(obs).unsqueeze(-3)                                      # (..., 1, n, d)
        noise = torch.randn(*mean.shape[:-3], num, *mean.shape[-2:], device=mean.device)
        return (mean + noise * self.log_std().exp()).clamp(-1.0, 1.0) * self.action_mask


class AgentQNetworks(nn.Module):
    """Each agent's own Q_i(o_i, a_i): (..., n, o), (..., n, d) -> (..., n)."""

    def __init__(self, n_agents: int, obs_dim: int, action_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.net = AgentwiseMLP(n_agents, obs_dim + action_dim, 1, hidden_dim)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], -1)).squeeze(-1)


class MAICQMixer(nn.Module):
    """Q_tot(s, a) = sum_i k_i(s) Q_i + b(s) with k_i(s) >= 0 summing to one over agents.

    k(s) = normalise(|W_1(s)| |w_final(s)|) and b(s) = b_1(s) . |w_final(s)| + V(s), the ICQ-MA
    code's hypernetworks (linear W_1, w_final, b_1; V an MLP with one hidden ReLU layer).
    """

    def __init__(self, n_agents: int, state_dim: int, mixing_dim: int = 32):
        super().__init__()
        self.n_agents, self.mixing_dim = n_agents, mixing_dim
        self.hyper_w1 = nn.Linear(state_dim, n_agents * mixing_dim)
        self.hyper_w_final = nn.Linear(state_dim, mixing_dim)
        self.hyper_b1 = nn.Linear(state_dim, mixing_dim)
        self.value = nn.Sequential(nn.Linear(state_dim, mixing_dim), nn.ReLU(),
                                   nn.Linear(mixing_dim, 1))

    def k(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., S) -> agent weights (..., n), non-negative, summing to one."""
        w1 = self.hyper_w1(state).abs().unflatten(-1, (self.n_agents, self.mixing_dim))
        w_final = self.hyper_w_final(state).abs().unsqueeze(-1)              # (..., m, 1)
        k = torch.matmul(w1, w_final).squeeze(-1)                            # (..., n)
        return k / k.sum(-1, keepdim=True).clamp_min(1e-8)

    def b(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., S) -> bias (...)."""
        w_final = self.hyper_w_final(state).abs()
        return (self.hyper_b1(state) * w_final).sum(-1) + self.value(state).squeeze(-1)

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """agent_qs (..., n), state (..., S) -> Q_tot (...)."""
        return (self.k(state) * agent_qs).sum(-1) + self.b(state)


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def batch_softmax_weights(values: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """softmax(values / beta) over all real entries of the batch, separately per trailing index.

    Args:
        values: (*batch, *rest), e.g. (B, T) or (B, T, n).
        mask: (*batch) bool, true on real entries.
        beta: temperature.

    Returns:
        (*batch, *rest) weights, zero on padding, summing to one over the real batch entries
        for every trailing index.
    """
    rest = values.shape[mask.dim():]
    flat_values = values.reshape(-1, *rest)
    flat_mask = mask.reshape(-1, *([1] * len(rest))).expand_as(flat_values)
    logits = (flat_values / beta).masked_fill(~flat_mask, float("-inf"))
    return torch.softmax(logits, dim=0).reshape(values.shape)


def implicit_constraint_values(target_q_tot: torch.Tensor, valid: torch.Tensor,
                               beta: float) -> torch.Tensor:
    """The critic's bootstrap values N softmax_batch(Q'_tot / beta_c) Q'_tot (zero on padding).

    Args:
        target_q_tot: (B, T+1) target Q_tot of the dataset's (s_t, a_t).
        valid: (B, T+1) bool, true where the value can be used.
        beta: beta_c.
    """
    weights = batch_softmax_weights(target_q_tot, valid, beta)
    return valid.sum() * weights * target_q_tot


def maicq_critic_loss(q_tot: torch.Tensor, targets: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """masked_mean (Q_tot - y)^2 over real steps; q_tot, targets, mask: (B, T)."""
    return masked_mean((q_tot - targets.detach()).pow(2), mask)


def maicq_actor_loss(log_pi: torch.Tensor, advantages: torch.Tensor, k: torch.Tensor,
                     mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each agent's advantage-weighted log-likelihood of the dataset actions.

    L_i = -mean_{real b,t} [ k_i N softmax_batch(A_i / beta_a) log pi_i(a_i | o_i) ].

    Args:
        log_pi: (B, T, n) log pi_i of the dataset actions (with gradient).
        advantages, k: (B, T, n), detached here.
        mask: (B, T) bool.

    Returns:
        (n,) per-agent losses and the (B, T, n) batch-softmax weights.
    """
    weights = batch_softmax_weights(advantages.detach(), mask, beta)
    real = mask.sum()
    weighted = k.detach() * real * weights * log_pi                           # (B, T, n)
    per_agent = -weighted.masked_fill(~mask.unsqueeze(-1), 0.0).sum((0, 1)) / real
    return per_agent, weights


# =================================================================================================
# Trainer
# =================================================================================================
class MAICQContinuous(OfflineAlgorithm):
    """MAICQ with per-agent Gaussian policies and a decomposed critic (see the module docstring)."""

    checkpoint_attributes: ClassVar[tuple[str, ...]] = (
        "actors",
        "agent_qs",
        "mixer",
        "target_agent_qs",
        "target_mixer",
        "actor_optimiser",
        "critic_optimiser",
    )
    Config: ClassVar[type[BaseConfig]] = MAICQContinuousConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: MAICQContinuousConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MAICQContinuousConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        n, mask = info.n_agents, np.asarray(info.action_mask, bool)
        self.actors = GaussianActors(info.obs_dim, mask, cfg.hidden_dim, cfg.log_std_min,
                                     cfg.log_std_max).to(device)
        self.agent_qs = AgentQNetworks(n, info.obs_dim, info.action_dim, cfg.hidden_dim).to(device)
        self.mixer = MAICQMixer(n, info.state_dim, cfg.mixing_dim).to(device)
        self.target_agent_qs, self.target_mixer = make_target(self.agent_qs), make_target(
            self.mixer)
        self.critic_params = [*self.agent_qs.parameters(), *self.mixer.parameters()]
        self.actor_optimiser = torch.optim.Adam(self.actors.parameters(), lr=cfg.lr)
        self.critic_optimiser = torch.optim.Adam(self.critic_params, lr=cfg.lr)
        self.sampler = dataset.sampler(cfg.batch_size, kind="windows", seed=cfg.seed,
                                       device=cfg.device, window=cfg.window)
        self.updates = 0

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        obs, states, actions = batch.observations, batch.states, batch.actions  # (B,T+1,n,o), (B,T+1,S), ..
        mask = batch.mask                                                    # (B, T)
        step_obs, step_states, step_actions = obs[:, :-1], states[:, :-1], actions[:, :-1]

        # Critic: TD(lambda) on implicit-constraint-weighted values of the dataset's actions.
        with torch.no_grad():
            bootstrap_actions = torch.where(batch.has_action[..., None, None], actions,
                                            self.actors(obs))               # (B, T+1, n, d)
            target_q_tot = self.target_mixer(self.target_agent_qs(obs, bootstrap_actions),
                                             states)                         # (B, T+1)
            valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)   # obs t exists
            values = implicit_constraint_values(target_q_tot, valid, cfg.critic_beta)
            targets = td_lambda_targets(batch.rewards, batch.terminals, mask, values, cfg.gamma,
                                        cfg.td_lambda)                       # (B, T)
        q_tot = self.mixer(self.agent_qs(step_obs, step_actions), step_states)   # (B, T)
        critic_loss = maicq_critic_loss(q_tot, targets, mask)
        self.critic_optimiser.zero_grad()
        critic_loss.backward()
        critic_grad = nn.utils.clip_grad_norm_(self.critic_params, cfg.grad_clip)
        self.critic_optimiser.step()

        # Actors: advantage-weighted regression onto the dataset's actions.
        with torch.no_grad():
            q_taken = self.agent_qs(step_obs, step_actions)                  # (B, T, n)
            sampled = self.actors.sample(step_obs, cfg.baseline_samples)     # (B, T, M, n, d)
            obs_per_sample = step_obs.unsqueeze(2).expand(-1, -1, cfg.baseline_samples, -1, -1)
            baseline = self.agent_qs(obs_per_sample, sampled).mean(2)        # (B, T, n)
            advantages = q_taken - baseline
            k = self.mixer.k(step_states)                                    # (B, T, n)
        log_pi = self.actors.log_prob(step_obs, step_actions)                # (B, T, n)
        per_agent, weights = maicq_actor_loss(log_pi, advantages, k, mask, cfg.actor_beta)
        actor_loss = per_agent.sum()
        self.actor_optimiser.zero_grad()
        actor_loss.backward()
        clip_grad_norm_agentwise_(self.actors, cfg.grad_clip)
        self.actor_optimiser.step()

        soft_update(self.target_agent_qs, self.agent_qs, cfg.target_rate)
        soft_update(self.target_mixer, self.mixer, cfg.target_rate)
        self.updates += 1
        step_mask = mask.unsqueeze(-1)
        return {
            "critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
            "q_tot_mean": masked_mean(q_tot.detach(), mask).item(),
            "target_mean": masked_mean(targets, mask).item(),
            "advantage_mean": masked_mean(advantages, step_mask).item(),
            "log_pi_mean": masked_mean(log_pi.detach(), step_mask).item(),
            "actor_weight_max": weights.max().item() * mask.sum().item(),
            "policy_std_mean": self.actors.log_std().exp().mean().item(),
            "critic_grad_norm": critic_grad.item(),
        }

    def policy(self) -> DeterministicActorPolicy:
        return DeterministicActorPolicy(self.actors, self.config.device)


if __name__ == "__main__":  # python -m baselines.maicq_continuous --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("maicq"))
