"""OMAR (continuous): independent CQL plus actor rectification by zeroth-order optimisation.

Paper: Pan, Huang, Ma, Xu, "Plan Better Amid Conservatism: Offline Multi-Agent Reinforcement
Learning with Actor Rectification", ICML 2022 (arXiv:2111.11188). Reference code:
github.com/ling-pan/OMAR (``algorithms/maddpg.py`` with ``omar=1``; ``main.py`` for the
settings). Update rules: ``ALGORITHMS.md`` of this project, "ICQL" and "OMAR". The discrete
OMAR lives in ``omar_discrete.py``.

The critics are ICQL's (:mod:`baselines.icql`: per-agent twin Q_i(o_i, a_i) with CQL(H)). Each
actor is pulled towards a better action found by searching its own critic:
  a_hat_i = the better under Q_i^1(o_i, .) of pi_i(o_i) and the best action found by a
            cross-entropy-method search around pi_i(o_i) (:func:`cem_rectified_actions`)
  L_pi_i  = c mean_b mean_dims (pi_i(o_i) - a_hat_i)^2 - (1 - c) mean_b Q_i^1(o_i, pi_i(o_i))
            + 1e-3 mean_b mean_dims pi_i(o_i)^2
The search follows the code on each task. MPE ("softmax" update): 3 iterations of 10 samples
from N(mu, sigma) (sigma starts at 2), clipped to [-1, 1]; mu becomes the softmax(Q)-weighted
mean of the samples and sigma their root-mean-square distance from it (the code's elite count
equals its sample count and goes unused). HalfCheetah ("elites" update): 2 iterations of 20
samples; the top 5 of the samples and the previous elites give mu (mean) and sigma (std). The
candidate is the best of the last iteration's samples (and elites).

Deviations from the reference code (each chosen, not forced), besides ICQL's (see
:mod:`baselines.icql`):
* The search starts at mu = pi_i(o_i) (``cem_init="policy"``), as ``ALGORITHMS.md`` states it;
  the code starts at mu = 0 for every state (``cem_init="zero"`` reproduces it). With sigma = 2
  and samples clipped to the box, the two differ little.
* All agents' searches run at once on one batch (the code: one agent, one batch at a time).
* Per-dataset c (``omar_coe``) and alpha: the OMAR code's ``env_config_map``; "mixed" datasets,
  which the code does not have, keep the defaults c = 1.0 and alpha = 1.0.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import BaseConfig
from .icql import CQL_ALPHA, ICQL, ICQLConfig
from .sampling_continuous import continuous_per_dataset

__all__ = ["OMARContinuous", "OMARConfig", "PER_DATASET",
           "cem_rectified_actions", "omar_actor_loss"]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class OMARConfig(ICQLConfig):
    """ICQL's fields (critic, CQL, TD3) plus the actor rectification's. Defaults: the code's MPE."""

    omar_coe: float = 1.0
    """c: weight of the imitation of a_hat against (1 - c) for the policy gradient (per dataset)."""
    cem_iters: int = 3
    """Iterations of the search (MPE 3, HalfCheetah 2)."""
    cem_samples: int = 10
    """Actions sampled per iteration, per agent and state (MPE 10, HalfCheetah 20)."""
    cem_elites: int = 10
    """Elites kept per iteration by the "elites" update (HalfCheetah 5)."""
    cem_sigma: float = 2.0
    """Initial standard deviation of the search distribution."""
    cem_update: str = "softmax"
    """How mu and sigma move: "softmax" (Q-softmax-weighted mean, the code on MPE) or "elites"
    (mean and std of the top ``cem_elites``, the code on HalfCheetah)."""
    cem_init: str = "policy"
    """Initial mean: "policy" (pi_i(o_i), ALGORITHMS.md) or "zero" (the code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.omar_coe <= 1.0:
            raise ValueError(f"omar_coe must lie in [0, 1], got {self.omar_coe}")
        if min(self.cem_iters, self.cem_samples, self.cem_elites) < 1 or self.cem_sigma <= 0:
            raise ValueError("cem_iters, cem_samples, cem_elites and cem_sigma must be positive")
        if self.cem_update not in ("softmax", "elites"):
            raise ValueError(f"cem_update must be 'softmax' or 'elites', got {self.cem_update!r}")
        if self.cem_update == "elites" and self.cem_elites > self.cem_samples:
            raise ValueError(f"cem_elites ({self.cem_elites}) cannot exceed cem_samples "
                             f"({self.cem_samples})")
        if self.cem_init not in ("policy", "zero"):
            raise ValueError(f"cem_init must be 'policy' or 'zero', got {self.cem_init!r}")


#: The OMAR code's c (omar_coe) per task and quality.
_OMAR_COE: dict[str, dict[str, float]] = {
    "mpe-cn": {"random": 1.0, "medium-replay": 1.0, "medium": 1.0, "expert": 1.0},
    "mpe-pp": {"random": 0.9, "medium-replay": 0.9, "medium": 0.7, "expert": 0.9},
    "mpe-world": {"random": 1.0, "medium-replay": 0.7, "medium": 0.1, "expert": 0.9},
    "mamujoco-halfcheetah_2x3": {"random": 1.0, "medium-replay": 0.9, "medium": 0.7,
                                 "expert": 0.5},
}
#: The code's HalfCheetah search (its main.py overrides the MPE defaults).
_CEM_PER_TASK: dict[str, dict[str, Any]] = {
    "mamujoco-halfcheetah_2x3": dict(cem_iters=2, cem_samples=20, cem_elites=5,
                                     cem_update="elites"),
}
#: dataset id -> overrides: backbone sizes and gamma, the task's search, the code's alpha and c.
PER_DATASET: dict[str, dict[str, Any]] = continuous_per_dataset(
    per_task=_CEM_PER_TASK,
    per_quality={task: {quality: {**CQL_ALPHA[task][quality], "omar_coe": coe}
                        for quality, coe in coes.items()}
                 for task, coes in _OMAR_COE.items()})


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
@torch.no_grad()
def cem_rectified_actions(q_fn: Callable[[torch.Tensor], torch.Tensor],
                          policy_actions: torch.Tensor, action_mask: torch.Tensor, iters: int,
                          num_samples: int, num_elites: int, init_sigma: float,
                          update: str = "softmax", init_mean: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """OMAR's rectification target: a cross-entropy-method search of each agent's own critic.

    Every agent searches its own action independently (all agents at once: Q_i depends on a_i
    alone). After the last iteration the best candidate is compared with the policy's action
    and the better of the two under ``q_fn`` is returned, so a_hat never scores below pi(o).

    Args:
        q_fn: scores K actions per agent: (B, K, n, d) -> (B, K, n), e.g. Q_i^1(o_i, .).
        policy_actions: (B, n, d) pi_i(o_i).
        action_mask: (n, d), 1 on real action dims.
        iters, num_samples, num_elites, init_sigma: the search's size.
        update: "softmax" (mu = softmax(Q)-weighted mean, sigma = RMS distance from it) or
            "elites" (mu, sigma = mean, std of the top ``num_elites`` of the samples and the
            previous elites).
        init_mean: (B, n, d) initial mu; None starts at ``policy_actions``.

    Returns:
        a_hat (B, n, d) and its score (B, n).
    """
    batch, n_agents, action_dim = policy_actions.shape
    mean = (policy_actions if init_mean is None else init_mean).detach()
    std = torch.full_like(mean, init_sigma)
    elites = elite_q = None
    for _ in range(iters):
        noise = torch.randn(batch, num_samples, n_agents, action_dim, device=mean.device)
        candidates = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1) * action_mask
        scores = q_fn(candidates)                                              # (B, K, n)
        if update == "elites":
            if elites is not None:
                candidates = torch.cat([candidates, elites], dim=1)
                scores = torch.cat([scores, elite_q], dim=1)
            elite_q, top = scores.topk(num_elites, dim=1)                      # (B, E, n)
            elites = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, -1, action_dim))
            mean, std = elites.mean(1), elites.std(1)
        else:
            weights = torch.softmax(scores, dim=1).unsqueeze(-1)               # (B, K, n, 1)
            mean = (weights * candidates).sum(1)
            std = (candidates - mean.unsqueeze(1)).pow(2).mean(1).sqrt()
    best_q, best = scores.max(dim=1)                                           # (B, n)
    best_action = candidates.gather(1, best[:, None, :, None].expand(-1, 1, -1, action_dim))
    policy_q = q_fn(policy_actions.detach().unsqueeze(1)).squeeze(1)           # (B, n)
    use_search = (best_q > policy_q).unsqueeze(-1)
    a_hat = torch.where(use_search, best_action.squeeze(1), policy_actions.detach())
    return a_hat, torch.maximum(best_q, policy_q)


def omar_actor_loss(q1_policy: torch.Tensor, policy_actions: torch.Tensor, a_hat: torch.Tensor,
                    action_mask: torch.Tensor, coe: float,
                    action_reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OMAR's per-agent actor loss.

    L_i = c mean_b mean_dims (pi_i - a_hat_i)^2 - (1 - c) mean_b Q_i^1(o_i, pi_i)
          + action_reg mean_b mean_dims pi_i^2 (mean over each agent's real dims, the code's
          ``F.mse_loss``).

    Args:
        q1_policy: (B, n); policy_actions, a_hat: (B, n, d); action_mask: (n, d).

    Returns:
        (n,) the losses and (n,) their imitation terms (before c).
    """
    real_dims = action_mask.sum(-1)                                            # (n,)
    mimic = ((policy_actions - a_hat.detach()).pow(2) * action_mask).sum(-1) / real_dims
    squared = (policy_actions.pow(2) * action_mask).sum(-1) / real_dims        # (B, n)
    mimic = mimic.mean(0)
    return (coe * mimic - (1 - coe) * q1_policy.mean(0) + action_reg * squared.mean(0),
            mimic.detach())


# =================================================================================================
# Trainer
# =================================================================================================
class OMARContinuous(ICQL):
    """ICQL's critics and schedule; actors trained by :func:`omar_actor_loss`."""

    Config: ClassVar[type[BaseConfig]] = OMARConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    config: OMARConfig

    def rectified_actions(self, obs: torch.Tensor,
                          policy_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a_hat (B, n, d) and Q_i^1(o_i, a_hat_i) (B, n) from the search of the live critic."""
        cfg = self.config

        def q_fn(candidates: torch.Tensor) -> torch.Tensor:
            obs_per_sample = obs.unsqueeze(1).expand(-1, candidates.shape[1], -1, -1)
            return self.critic.q1(obs_per_sample, candidates)

        init_mean = torch.zeros_like(policy_actions) if cfg.cem_init == "zero" else None
        return cem_rectified_actions(q_fn, policy_actions.detach(), self.action_mask,
                                     cfg.cem_iters, cfg.cem_samples, cfg.cem_elites,
                                     cfg.cem_sigma, cfg.cem_update, init_mean)

    def actor_losses(self, obs: torch.Tensor, policy_actions: torch.Tensor,
                     dataset_actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        a_hat, q_hat = self.rectified_actions(obs, policy_actions)
        q1_policy = self.critic.q1(obs, policy_actions)                        # (B, n)
        losses, mimic = omar_actor_loss(q1_policy, policy_actions, a_hat, self.action_mask,
                                        cfg.omar_coe, cfg.action_reg)
        return losses, {"q_policy_mean": q1_policy.mean().item(),
                        "q_rectified_mean": q_hat.mean().item(),
                        "mimic_loss": mimic.sum().item(),
                        "rectified_distance": F.pairwise_distance(
                            a_hat.flatten(0, 1), policy_actions.detach().flatten(0, 1)
                        ).mean().item()}


if __name__ == "__main__":  # python -m baselines.omar_continuous --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("omar"))
