"""MACQL: conservative Q-learning applied to the joint action of a QMIX value (discrete).

The "naive multi-agent CQL" baseline of Shao et al., "Counterfactual Conservative Q Learning for
Offline Multi-agent Reinforcement Learning", NeurIPS 2023 (Sec. 3.3 and appendix C.3), which
extends CQL(H) (Kumar et al., NeurIPS 2020) to QMIX (Rashid et al. 2018) by pushing down the
logsumexp of Q_tot over *joint* actions. The joint space has |A|^n members, so the logsumexp runs
over N sampled joint actions.
Reference code: github.com/thu-rllab/CFCQL, ``discrete/src/learners/cq_learner.py`` with
``raw_cql: True`` (``config/algs/cql_qmix.yaml``, ``raw_sample_actions: 100``).
Update rules: ``ALGORITHMS.md`` of this project, sections "Shared backbones" and "MACQL".

Update (one call of :meth:`MACQLDiscrete.update`, on a batch of whole episodes):

    Q       = agent_net(o)                                     # (B, T+1, n, A)
    y       = TD_lambda(r, done, mask, target_mixer(target_Q[argmax_avail Q], s))   # double Q
    L_td    = 0.5 * masked_mean((mixer(Q[a_D], s) - y)^2)
    a^1..N  ~ uniform over each agent's available actions, independently   # (B, T, N, n)
    L_cql   = masked_mean( logsumexp_k mixer(Q[a^k], s) - mixer(Q[a_D], s) )
    loss    = L_td + alpha * L_cql

Networks, targets, optimiser and the TD part are the QMIX backbone's
(:mod:`baselines.qmix_backbone`). The mixer's hypernetworks run once per state
(``QMixer.hyper``) and mix all N sampled joint actions in one batched product (``QMixer.mix``).

Deviations from the reference code:
* Joint actions are drawn uniformly over each agent's *available* actions. The code draws every
  agent's action uniformly over all actions and multiplies Q_tot by 0 when any of them is
  unavailable, so such samples still enter the logsumexp with value 0.
* alpha defaults to 5, the value ALGORITHMS.md records. Note for readers of the code: its
  ``cql_qmix.yaml`` sets both ``cql_alpha: 5.0`` and ``global_cql_alpha: 50.0``, and the
  ``raw_cql`` branch multiplies its term by ``global_cql_alpha``; set ``alpha=50`` to run that.
* Adam (the code's ``optimizer: 'adam'``) at 1e-3, hard target copy every 25 updates (the code
  counts 200 episodes at 8 per training call), as the shared QMIX backbone.
* TD(lambda) targets treat truncated episodes shorter than the batch correctly
  (:func:`~baselines.networks.td_lambda_targets`).

Per-dataset settings: the code runs one configuration for every map and quality, so the
per-dataset table is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import MixerWeights, QMixer, masked_mean
from marl_offline_bench.policies import RecurrentGreedyPolicy

from .base import QUICK_EPISODE_BATCH, BaseConfig, OfflineAlgorithm, QMIXBackboneConfig
from .qmix_backbone import QMIXBackbone, qmix_td_loss

__all__ = [
    "MACQLConfig", "MACQLDiscrete", "PER_DATASET",
    # loss functions
    "sample_joint_actions", "sampled_joint_q", "macql_penalty",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MACQLConfig(QMIXBackboneConfig):
    """Discrete MACQL on the QMIX backbone. Defaults: the reference code (ALGORITHMS.md)."""

    alpha: float = 5.0
    """Weight of the joint-action conservative term."""
    num_sampled_actions: int = 100
    """N, joint actions drawn per state for the logsumexp."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")
        if self.num_sampled_actions < 1:
            raise ValueError(f"num_sampled_actions must be at least 1, got "
                             f"{self.num_sampled_actions}")


#: dataset id -> overrides. Empty: the reference code uses one setting for every dataset.
PER_DATASET: dict[str, dict[str, Any]] = {}


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def sample_joint_actions(avail: torch.Tensor, num_samples: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw joint actions, each agent's action uniform over its available actions.

    Args:
        avail: (..., n, A) bool. A row with no available action is treated as all available
            (it can only be padding).
        num_samples: N, joint actions per leading index.
        generator: optional torch generator.

    Returns:
        (..., N, n) int64.
    """
    lead, n_actions = avail.shape[:-1], avail.shape[-1]
    avail = avail.reshape(-1, n_actions).bool()
    avail = torch.where(avail.any(-1, keepdim=True), avail, torch.ones_like(avail))
    # A uniform rank among each row's available actions, looked up in the row's available
    # actions listed first: several times faster on CPU than torch.multinomial or a CDF search
    # over ~10^4 rows.
    available_first = torch.sort((~avail).to(torch.uint8), dim=-1, stable=True).indices
    uniform = torch.rand(avail.shape[0], num_samples, generator=generator, device=avail.device)
    rank = (uniform * avail.sum(-1, keepdim=True)).long()                 # 0..count-1
    drawn = available_first.gather(-1, rank)
    return drawn.reshape(*lead, num_samples).transpose(-1, -2)           # (..., N, n)


def sampled_joint_q(agent_qs: torch.Tensor, joint_actions: torch.Tensor,
                    weights: MixerWeights) -> torch.Tensor:
    """Q_tot of K joint actions per state, with the mixer's weights computed once per state.

    Args:
        agent_qs: (..., n, A) every agent's Q for every action.
        joint_actions: (..., K, n) int64.
        weights: ``mixer.hyper(state)`` for the states (leading dims ``...``).

    Returns:
        (..., K).
    """
    lead, (n_agents, n_actions) = agent_qs.shape[:-2], agent_qs.shape[-2:]
    k = joint_actions.shape[-2]
    # One gather over the flattened (agent, action) axis. Gathering from agent_qs expanded K
    # times would make the backward allocate and fill a K-times larger gradient.
    offsets = torch.arange(n_agents, device=agent_qs.device) * n_actions
    index = (joint_actions + offsets).reshape(*lead, k * n_agents)
    joint_qs = agent_qs.reshape(*lead, n_agents * n_actions).gather(-1, index)
    return QMixer.mix(joint_qs.reshape(*lead, k, n_agents), weights)


def macql_penalty(sampled_q: torch.Tensor, q_tot: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The joint-action CQL(H) term, before alpha: masked_mean(logsumexp_k Q_tot^k - Q_tot(a_D)).

    Args:
        sampled_q: (B, T, K) Q_tot of the sampled joint actions.
        q_tot: (B, T) Q_tot of the dataset's joint actions.
        mask: (B, T) true on real steps.
    """
    return masked_mean(sampled_q.logsumexp(dim=-1) - q_tot, mask)


# =================================================================================================
# Trainer
# =================================================================================================
class MACQLDiscrete(OfflineAlgorithm):
    """QMIX with a CQL(H) term over sampled joint actions (see the module docstring)."""

    Config: ClassVar[type[BaseConfig]] = MACQLConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    reference_settings: ClassVar[tuple[str, ...]] = ("batch_size",)
    # Under `quick`, batches are sized for a 2-core CPU as CFCQL's are (QUICK_EPISODE_BATCH).
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"batch_size": QUICK_EPISODE_BATCH}}
    config: MACQLConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MACQLConfig):
        super().__init__(info, dataset, config)
        cfg = config
        self.qmix = QMIXBackbone.from_config(info, cfg)
        self.sampler = dataset.sampler(cfg.batch_size, kind="episodes", seed=cfg.seed,
                                       device=cfg.device, n_actions=info.n_actions)
        self.updates = 0

    def checkpoint_parts(self) -> dict[str, Any]:
        return self.qmix.parts()

    def update(self) -> dict[str, float]:
        cfg = self.config
        batch = next(self.sampler)
        state, actions = batch.states, batch.actions.long()        # (B, T+1, S), (B, T, n)
        mask, avail = batch.mask, batch.avail_actions               # (B, T), (B, T+1, n, A)
        # Q of the agent network over the episodes, double-Q TD(lambda) targets
        inputs, agent_qs, targets = self.qmix.unroll_with_targets(batch, self.info.n_actions)

        qs, step_avail = agent_qs[:, :-1], avail[:, :-1]            # the T acting steps
        weights = self.qmix.mixer.hyper(state[:, :-1])              # once per state
        q_tot = sampled_joint_q(qs, actions.unsqueeze(-2), weights).squeeze(-1)   # (B, T)
        td_loss = qmix_td_loss(q_tot, targets, mask)

        joint = sample_joint_actions(step_avail, cfg.num_sampled_actions)          # (B,T,N,n)
        sampled_q = sampled_joint_q(qs, joint, weights)                            # (B, T, N)
        penalty = macql_penalty(sampled_q, q_tot, mask)
        loss = td_loss + cfg.alpha * penalty

        grad_norm = self.qmix.step(loss)
        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            self.qmix.update_targets()

        return {
            "td_loss": td_loss.item(),
            "cql_loss": (cfg.alpha * penalty).item(),
            "cql_penalty": penalty.item(),
            "q_taken_mean": masked_mean(q_tot.detach(), mask).item(),
            "q_sampled_mean": masked_mean(sampled_q.detach().mean(-1), mask).item(),
            "target_mean": masked_mean(targets, mask).item(),
            "grad_norm": grad_norm.item(),
        }

    def policy(self) -> RecurrentGreedyPolicy:
        return RecurrentGreedyPolicy(self.qmix.agent, self.info.n_agents, self.info.n_actions,
                                     self.config.device)


if __name__ == "__main__":  # python -m baselines.macql_discrete --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("macql"))
