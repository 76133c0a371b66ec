"""ICQL: independent conservative Q-learning, each agent a TD3 learner with its own CQL(H) critic.

Papers: Kumar, Zhou, Tucker, Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020 (arXiv:2006.04779), CQL(H); applied per agent as the "ICQL" / "CQL"
baseline of Pan et al., "Plan Better Amid Conservatism: Offline Multi-Agent Reinforcement
Learning with Actor Rectification", ICML 2022 (arXiv:2111.11188). Reference code:
github.com/aviralkumar2907/CQL (``SimpleSAC/conservative_sac.py``: sampled actions, log-density
corrected logsumexp) and github.com/ling-pan/OMAR (``algorithms/maddpg.py`` with ``cql=1``,
``omar=0``). Update rules: ``ALGORITHMS.md`` of this project, "Shared backbones" and "ICQL".

Each agent i has its own twin critic Q_i^k(o_i, a_i), k = 1, 2, and its own actor pi_i(o_i):
  y_i    = r + gamma (1 - done) min_k Q_i'^k(o'_i, a'_i),  a'_i = TD3-smoothed pi_i'(o'_i)
  L_Q_i  = sum_k mean_b (Q_i^k(o_i, a_i) - y_i)^2
           + alpha sum_k mean_b [ logsumexp_m (Q_i^k(o_i, a_i^m) - log p(a_i^m)) - Q_i^k(o_i, a_i) ]
  L_pi_i = -mean_b Q_i^1(o_i, pi_i(o_i)) + 1e-3 mean_b mean_dims pi_i(o_i)^2
with a_i^m drawn M = 10 times from each source: uniform on [-1, 1]^{d_i}, and clip(pi_i(o_i) +
N(0, 0.2)) and clip(pi_i(o'_i) + N(0, 0.2)), p their densities. Gradient norms are clipped at 0.5
per agent, targets move by Polyak averaging after every update.

The CQL(H) pieces are pure functions here (:func:`uniform_action_samples`,
:func:`gaussian_action_samples`, :func:`cql_action_samples`, :func:`cql_h_penalty`) that OMAR and
MACQL import.

Deviations from the reference code (each chosen, not forced):
* All agents update on one shared batch per :meth:`ICQL.update`, batched across agents (the OMAR
  code draws a fresh batch for each agent in turn); each agent still has its own parameters and
  its own gradient clip.
* Sampled actions come from all three sources on every task (the OMAR code draws uniform
  actions only on MPE, all three on HalfCheetah). The Gaussian samples' correction is their log
  density (the OMAR code subtracts the density itself, not its log); clipping to the action box
  is ignored in that density, as in the code.
* TD3 target smoothing, clip(N(0, 0.2), -0.5, 0.5), as ``ALGORITHMS.md``'s backbone (the OMAR code
  uses the target policy's action unsmoothed). The actor updates every ``policy_delay`` = 1
  critic updates, as in the OMAR code.
* The critic trains on the team reward (``dataset["rewards"]``, the sum of the agents' rewards on
  mpe-cn; the code read each agent's own reward). MPE's lr is 1e-3 (the code's default 0.01).
  No input BatchNorm. gamma is a per-task setting, 0.95 everywhere as the code ran it.
* Per-dataset alpha: the OMAR code's ``env_config_map`` (cql_alpha); "mixed" datasets, which the
  code does not have, keep the default alpha 1.0 (the code's command-line default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import AgentActors, AgentwiseMLP

from .actor_critic_backbone import (RoundSchedule, target_policy_smoothing, twin_td_loss,
                                    twin_td_targets)
from .base import BaseConfig, ContinuousActorCritic, ContinuousCQLConfig
from .sampling_continuous import continuous_per_dataset

__all__ = [
    "ICQL", "ICQLConfig", "PER_DATASET", "CQL_ALPHA", "AgentwiseTwinCritic",
    # loss functions
    "uniform_action_samples", "gaussian_action_samples", "cql_action_samples", "cql_h_penalty",
    "independent_actor_loss",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class ICQLConfig(ContinuousCQLConfig):
    """Independent CQL(H) with TD3 actors, each agent's CQL samples its own actions. Defaults:
    the OMAR code's, backbone MPE sizes."""

    policy_delay: int = 1
    """Critic updates per actor update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy_delay < 1:
            raise ValueError(f"{type(self).__name__}.policy_delay must be at least 1, got "
                             f"{self.policy_delay}")


#: The OMAR code's CQL alpha per task and quality (its ``env_config_map``, shared by ICQL/OMAR).
CQL_ALPHA: dict[str, dict[str, dict[str, float]]] = {
    "mpe-cn": {"random": {"alpha": 0.5}, "medium-replay": {"alpha": 1.0},
               "medium": {"alpha": 5.0}, "expert": {"alpha": 5.0}},
    "mpe-pp": {"random": {"alpha": 0.5}, "medium-replay": {"alpha": 0.5},
               "medium": {"alpha": 5.0}, "expert": {"alpha": 5.0}},
    "mpe-world": {"random": {"alpha": 0.5}, "medium-replay": {"alpha": 1.0},
                  "medium": {"alpha": 0.5}, "expert": {"alpha": 5.0}},
    "mamujoco-halfcheetah_2x3": {"random": {"alpha": 1.0}, "medium-replay": {"alpha": 5.0},
                                 "medium": {"alpha": 1.0}, "expert": {"alpha": 5.0}},
}

#: dataset id -> overrides: backbone sizes and gamma of its task, then the code's alpha.
PER_DATASET: dict[str, dict[str, Any]] = continuous_per_dataset(per_quality=CQL_ALPHA)


# =================================================================================================
# Networks
# =================================================================================================
class AgentwiseTwinCritic(nn.Module):
    """Each agent's own twin critic Q_i^k(o_i, a_i), k = 1, 2 (MLPs, 2 hidden ReLU layers).

    All agents run in one batched product (:class:`~baselines.networks.AgentwiseMLP`); every
    parameter has the agent axis first, so :func:`clip_grad_norm_agentwise_` clips each agent's
    two twins together, as one optimiser per agent would.
    """

    def __init__(self, n_agents: int, obs_dim: int, action_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.twins = nn.ModuleList(AgentwiseMLP(n_agents, obs_dim + action_dim, 1, hidden_dim)
                                   for _ in range(2))

    def q1(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (..., n, o), actions (..., n, d) -> Q_i^1 (..., n)."""
        return self.twins[0](torch.cat([obs, actions], -1)).squeeze(-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (..., n, o), actions (..., n, d) -> (2, ..., n): both twins stacked."""
        inputs = torch.cat([obs, actions], -1)
        return torch.stack([twin(inputs).squeeze(-1) for twin in self.twins])


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def uniform_action_samples(batch_size: int, num: int,
                           action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` uniform draws on each agent's action box [-1, 1]^{d_i}.

    Args:
        action_mask: (n, d), 1 on each agent's real action dimensions.

    Returns:
        samples (B, K, n, d), zero on padded dims; their log densities (B, K, n), -d_i log 2.
    """
    n_agents, action_dim = action_mask.shape
    samples = (torch.rand(batch_size, num, n_agents, action_dim, device=action_mask.device)
               * 2 - 1) * action_mask
    log_density = (-action_mask.sum(-1) * math.log(2.0)).expand(batch_size, num, n_agents)
    return samples, log_density


def gaussian_action_samples(centre: torch.Tensor, num: int, std: float,
                            action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` draws of clip(centre + N(0, std^2 I), -1, 1) per agent.

    Args:
        centre: (B, n, d) e.g. the policy's actions; action_mask: (n, d).

    Returns:
        samples (B, K, n, d), zero on padded dims; the log density of each draw's noise
        (B, K, n), summed over real dims (the clip is not accounted for, as in the CQL code).
    """
    noise = torch.randn(centre.shape[0], num, *centre.shape[1:], device=centre.device) * std
    samples = (centre.unsqueeze(1) + noise).clamp(-1.0, 1.0) * action_mask
    log_density = ((-noise.pow(2) / (2 * std ** 2) - math.log(std * math.sqrt(2 * math.pi)))
                   * action_mask).sum(-1)
    return samples, log_density


def cql_action_samples(policy_actions: torch.Tensor, next_policy_actions: torch.Tensor, num: int,
                       std: float, action_mask: torch.Tensor, policy_samples: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The CQL(H) samples of every agent: uniform, around pi(o), around pi(o'), M of each.

    Args:
        policy_actions, next_policy_actions: (B, n, d) pi_i(o_i) and pi_i(o'_i), detached.
        policy_samples: False keeps the uniform ones only.

    Returns:
        samples (B, K, n, d), K = M or 3M; per-agent log densities (B, K, n). Sample k of
        every agent together is a joint action whose log density is the sum over agents.
    """
    samples, log_density = uniform_action_samples(policy_actions.shape[0], num, action_mask)
    if not policy_samples:
        return samples, log_density
    drawn = [gaussian_action_samples(a, num, std, action_mask)
             for a in (policy_actions, next_policy_actions)]
    return (torch.cat([samples] + [s for s, _ in drawn], dim=1),
            torch.cat([log_density] + [p for _, p in drawn], dim=1))


def cql_h_penalty(q_sampled: torch.Tensor, log_density: torch.Tensor,
                  q_data: torch.Tensor) -> torch.Tensor:
    """The CQL(H) term before alpha, with the importance correction of sampled actions.

    sum_k sum_rest mean_b [ logsumexp_m (Q_k(x_b, a^m) - log p(a^m)) - Q_k(x_b, a_D) ].

    Args:
        q_sampled: (2, B, K, *rest) twin Q of the K sampled actions per batch entry.
        log_density: (B, K, *rest) log density of each sample under its source.
        q_data: (2, B, *rest) twin Q of the dataset actions.
        (``rest`` is () for a joint critic, (n,) for per-agent critics: each agent's term.)
    """
    soft_max_q = (q_sampled - log_density).logsumexp(dim=2)                # (2, B, *rest)
    return (soft_max_q - q_data).mean(1).sum()


def independent_actor_loss(q1_policy: torch.Tensor, policy_actions: torch.Tensor,
                           action_mask: torch.Tensor, action_reg: float) -> torch.Tensor:
    """Each agent's TD3 actor loss on its own critic.

    L_i = -mean_b Q_i^1(o_i, pi_i(o_i)) + action_reg mean_b mean_dims pi_i(o_i)^2.

    Args:
        q1_policy: (B, n); policy_actions: (B, n, d); action_mask: (n, d).

    Returns:
        (n,) the per-agent losses.
    """
    squared = (policy_actions.pow(2) * action_mask).sum(-1) / action_mask.sum(-1)   # (B, n)
    return -q1_policy.mean(0) + action_reg * squared.mean(0)


# =================================================================================================
# Trainer
# =================================================================================================
class ICQL(ContinuousActorCritic):
    """Independent CQL(H): per-agent twin critics on (o_i, a_i), per-agent TD3 actors.

    Subclasses change the actor's objective by overriding :meth:`actor_losses` (OMAR).
    """

    Config: ClassVar[type[BaseConfig]] = ICQLConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: ICQLConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: ICQLConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        self.init_actor_critic(AgentActors(info.obs_dim, info.action_mask,
                                           cfg.hidden_dim).to(device),
                               AgentwiseTwinCritic(info.n_agents, info.obs_dim, info.action_dim,
                                                   cfg.hidden_dim).to(device), cfg.lr, cfg.lr)
        # the actors at the first update of every policy_delay, the targets after every update
        self.schedule = RoundSchedule(cfg.policy_delay, actor_step=0, target_step=None)
        self.sampler = dataset.sampler(cfg.batch_size, kind="transitions", seed=cfg.seed,
                                       device=cfg.device)
        self.updates = 0

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        obs, next_obs = batch.observations, batch.next_observations      # (B, n, o)
        actions = batch.actions                                             # (B, n, d)

        with torch.no_grad():
            next_actions = target_policy_smoothing(self.target_actors(next_obs), cfg.target_noise,
                                                   cfg.target_noise_clip, self.action_mask)
            next_q = self.target_critic(next_obs, next_actions)               # (2, B, n)
            targets = twin_td_targets(batch.rewards, batch.terminals, next_q,
                                      cfg.gamma)                               # (B, n)
            samples, log_density = cql_action_samples(
                self.actors(obs), self.actors(next_obs), cfg.num_sampled_actions,
                cfg.sample_noise, self.action_mask, cfg.policy_samples)       # (B,K,n,d), (B,K,n)

        q_data = self.critic(obs, actions)                                     # (2, B, n)
        td_loss = twin_td_loss(q_data, targets)
        obs_per_sample = obs.unsqueeze(1).expand(-1, samples.shape[1], -1, -1)
        q_sampled = self.critic(obs_per_sample, samples)                       # (2, B, K, n)
        penalty = cql_h_penalty(q_sampled, log_density, q_data)
        critic_loss = td_loss + cfg.alpha * penalty
        critic_grad = self.critic_step(critic_loss, cfg.grad_clip, agentwise=True)
        metrics = {
            "td_loss": td_loss.item(), "cql_loss": (cfg.alpha * penalty).item(),
            "cql_penalty": penalty.item(), "q_data_mean": q_data.mean().item(),
            "q_sampled_mean": q_sampled.mean().item(), "target_mean": targets.mean().item(),
            "critic_grad_norm": critic_grad.max().item(),
        }

        if self.schedule.actor_due(self.updates):
            policy_actions = self.actors(obs)                                  # (B, n, d)
            per_agent, actor_metrics = self.actor_losses(obs, policy_actions, actions)
            actor_loss = per_agent.sum()          # each actor's loss holds only its own terms
            self.actor_step(actor_loss, cfg.grad_clip, agentwise=True)
            metrics.update(actor_loss=actor_loss.item(), **actor_metrics)
        if self.schedule.targets_due(self.updates):
            self.update_targets(cfg.target_rate)
        self.updates += 1
        return metrics

    def actor_losses(self, obs: torch.Tensor, policy_actions: torch.Tensor,
                     dataset_actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """(n,) per-agent actor losses and metrics; ICQL: TD3's -Q_i^1 plus the action penalty.

        Args:
            obs: (B, n, o); policy_actions: (B, n, d) pi_i(o_i) with gradient; dataset_actions:
                (B, n, d), unused here (subclasses may use them).
        """
        q1_policy = self.critic.q1(obs, policy_actions)                        # (B, n)
        losses = independent_actor_loss(q1_policy, policy_actions, self.action_mask,
                                        self.config.action_reg)
        return losses, {"q_policy_mean": q1_policy.mean().item()}


if __name__ == "__main__":  # python -m baselines.icql --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("icql"))
