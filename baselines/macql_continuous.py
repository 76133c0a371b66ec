"""MACQL (continuous): the naive multi-agent CQL, CQL(H) on a centralised critic's joint action.

Papers: Kumar, Zhou, Tucker, Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020 (arXiv:2006.04779); its multi-agent extension is the MACQL baseline of
Shao et al., "Counterfactual Conservative Q Learning for Offline Multi-agent Reinforcement
Learning", NeurIPS 2023 (Sec. 3.3, appendix C.3). Reference code: github.com/aviralkumar2907/CQL
(``SimpleSAC/conservative_sac.py``) and github.com/thu-rllab/CFCQL
(``continuous/algorithms/maddpg_cc.py`` with ``--central_critic --cql``, no ``--cf_cql``).
Update rules: ``ALGORITHMS.md`` of this project, "Shared backbones" and "MACQL".

Critic: centralised twin Q_k(s, a_1..a_n) on the team reward, TD3 targets. The conservative
term samples whole joint actions: M = 10 from each of uniform on [-1, 1]^{sum_i d_i},
clip(pi(o) + N(0, 0.2)) and clip(pi(o') + N(0, 0.2)), every agent's action drawn afresh in
every sample (:func:`joint_action_samples`), and pushes down
  sum_k mean_b [ logsumexp_m (Q_k(s, a^m) - log p(a^m)) - Q_k(s, a_D) ],
p the joint density (the product of the agents'). With n agents the joint space grows
exponentially, which is the weakness CFCQL's counterfactual term addresses.
Actors: MADDPG's centralised policy gradient, L = -mean_b Q_1(s, pi_1(o_1), ..., pi_n(o_n)) +
1e-3 sum_i mean_b mean_dims pi_i^2. As in the CFCQL code, one round is one critic+actor update
then 4 critic-only updates, with the targets moved (Polyak) after the round; gradient norms are
clipped at 0.5 (critic; each actor).

Deviations from the reference code (each chosen, not forced):
* Sampled joint actions come from all three sources on every task (the CFCQL code's MPE branch
  draws uniform ones only); target smoothing is TD3's clip(N(0, 0.2), -0.5, 0.5) (the code:
  N(0, 0.05)); MPE's default lr is 1e-3; `full` takes the code's (0.01 on simple_spread).
* The actor loss sums the agents' action penalties (the code too); the critic trains on the team
  reward (``dataset["rewards"]``; the code read agent 0's reward). No input BatchNorm. gamma is a
  per-task setting, 0.95 everywhere as the code ran it.
* Per-dataset alpha: the CFCQL code's ``env_config_map``, which serves its CQL runs with and
  without the counterfactual term; "mixed" datasets keep the default alpha 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import AgentActors, TwinCritic

from .actor_critic_backbone import (RoundSchedule, target_policy_smoothing, twin_td_loss,
                                    twin_td_targets)
from .base import BaseConfig, ContinuousActorCritic, ContinuousCQLConfig
from .cfcql import CONTINUOUS_PER_DATASET
from .icql import cql_action_samples, cql_h_penalty

__all__ = ["MACQLContinuous", "MACQLContinuousConfig", "PER_DATASET",
           "joint_action_samples", "centralised_actor_loss"]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MACQLContinuousConfig(ContinuousCQLConfig):
    """MACQL on the central twin critic, its CQL samples joint actions. Defaults: the CFCQL
    code's MPE settings."""

    critic_updates_per_round: int = 5
    """Updates per round: the first updates critic and actors, the others the critic only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic_updates_per_round < 1:
            raise ValueError(f"critic_updates_per_round must be at least 1, got "
                             f"{self.critic_updates_per_round}")


#: dataset id -> overrides: CFCQL's table (its backbone sizes, gamma and the code's alpha), as the
#: CFCQL code's ``env_config_map`` serves its CQL runs with and without the counterfactual term.
PER_DATASET: dict[str, dict[str, Any]] = CONTINUOUS_PER_DATASET


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def joint_action_samples(policy_actions: torch.Tensor, next_policy_actions: torch.Tensor,
                         num: int, std: float, action_mask: torch.Tensor,
                         policy_samples: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint actions for MACQL's logsumexp: every agent's action is drawn in every sample.

    Args:
        policy_actions, next_policy_actions: (B, n, d) pi(o) and pi(o'), detached.
        num: M per source; std: the Gaussian sources' standard deviation.
        action_mask: (n, d).
        policy_samples: False keeps the uniform source only.

    Returns:
        joint actions (B, K, n*d) and their joint log densities (B, K), the sum of the agents'.
    """
    samples, log_density = cql_action_samples(policy_actions, next_policy_actions, num, std,
                                              action_mask, policy_samples)  # (B,K,n,d), (B,K,n)
    return samples.flatten(-2), log_density.sum(-1)


def centralised_actor_loss(q1_policy: torch.Tensor, policy_actions: torch.Tensor,
                           action_mask: torch.Tensor, action_reg: float) -> torch.Tensor:
    """MADDPG's actor loss on the joint policy action.

    L = -mean_b Q_1(s, pi_1(o_1), ..., pi_n(o_n)) + action_reg sum_i mean_b mean_dims pi_i^2.

    Args:
        q1_policy: (B,); policy_actions: (B, n, d); action_mask: (n, d).
    """
    squared = (policy_actions.pow(2) * action_mask).sum(-1) / action_mask.sum(-1)   # (B, n)
    return -q1_policy.mean() + action_reg * squared.mean(0).sum()


# =================================================================================================
# Trainer
# =================================================================================================
class MACQLContinuous(ContinuousActorCritic):
    """Naive multi-agent CQL(H) on the central twin critic (see the module docstring).

    One :meth:`update` is one critic step; the first of every round of
    ``critic_updates_per_round`` also updates the actors, and the targets move after the last.
    """

    Config: ClassVar[type[BaseConfig]] = MACQLContinuousConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: MACQLContinuousConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MACQLContinuousConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        self.init_actor_critic(AgentActors(info.obs_dim, info.action_mask,
                                           cfg.hidden_dim).to(device),
                               TwinCritic(info.state_dim, info.n_agents * info.action_dim,
                                          cfg.hidden_dim).to(device), cfg.lr, cfg.lr)
        k = cfg.critic_updates_per_round
        self.schedule = RoundSchedule(k, actor_step=0, target_step=k - 1)
        self.sampler = dataset.sampler(cfg.batch_size, kind="transitions", seed=cfg.seed,
                                       device=cfg.device)
        self.updates = 0

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        state, next_state = batch.states, batch.next_states               # (B, S)
        obs, next_obs = batch.observations, batch.next_observations      # (B, n, o)
        actions = batch.actions                                             # (B, n, d)
        batch_size = actions.shape[0]

        with torch.no_grad():
            next_actions = target_policy_smoothing(self.target_actors(next_obs), cfg.target_noise,
                                                   cfg.target_noise_clip, self.action_mask)
            next_q = self.target_critic(next_state, next_actions.flatten(1))   # (2, B)
            targets = twin_td_targets(batch.rewards, batch.terminals, next_q, cfg.gamma)
            joint, log_density = joint_action_samples(
                self.actors(obs), self.actors(next_obs), cfg.num_sampled_actions,
                cfg.sample_noise, self.action_mask, cfg.policy_samples)       # (B,K,nd), (B,K)

        features = self.critic.state_features(state)                            # (2, B, H)
        q_data = self.critic.from_features(features, actions.reshape(batch_size, 1, -1))[..., 0]
        td_loss = twin_td_loss(q_data, targets)
        q_sampled = self.critic.from_features(features, joint)                 # (2, B, K)
        penalty = cql_h_penalty(q_sampled, log_density, q_data)
        critic_loss = td_loss + cfg.alpha * penalty
        critic_grad = self.critic_step(critic_loss, cfg.grad_clip)
        metrics = {
            "td_loss": td_loss.item(), "cql_loss": (cfg.alpha * penalty).item(),
            "cql_penalty": penalty.item(), "q_data_mean": q_data.mean().item(),
            "q_sampled_mean": q_sampled.mean().item(), "target_mean": targets.mean().item(),
            "critic_grad_norm": critic_grad.item(),
        }

        if self.schedule.actor_due(self.updates):
            policy_actions = self.actors(obs)                                  # (B, n, d)
            q1_policy = self.critic(state, policy_actions.flatten(1))[0]       # (B,)
            actor_loss = centralised_actor_loss(q1_policy, policy_actions, self.action_mask,
                                                cfg.action_reg)
            self.actor_step(actor_loss, cfg.grad_clip, agentwise=True)
            metrics.update(actor_loss=actor_loss.item(), q_policy_mean=q1_policy.mean().item())
        if self.schedule.targets_due(self.updates):
            self.update_targets(cfg.target_rate)
        self.updates += 1
        return metrics


if __name__ == "__main__":  # python -m baselines.macql_continuous --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("macql"))
