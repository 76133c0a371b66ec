"""CFCQL: counterfactual conservative Q-learning for offline multi-agent RL.

Paper: Shao, Qu, Chen, Zhang, Ji, "Counterfactual Conservative Q Learning for Offline
Multi-agent Reinforcement Learning", NeurIPS 2023 (arXiv:2309.12696).
Reference code: github.com/thu-rllab/CFCQL, ``discrete/src/learners/cq_learner.py`` (discrete,
PyMARL) and ``continuous/algorithms/maddpg_cc.py`` (continuous, built on OMAR's code).
Update rules: ``ALGORITHMS.md`` of this project, section "CFCQL".

The conservative term pushes down, for each agent i separately, the value of joint actions in
which only a_i leaves the data (the others keep their dataset actions), weighted across agents
by lambda_i = softmax_i(sign * tau * d_i), d_i a distance of agent i's policy from the data.

Discrete (:class:`CFCQLDiscrete`, CFCQL(H), appendix Eq. B.37-B.39): the QMIX backbone
(:mod:`baselines.qmix_backbone`: TD(lambda) double-Q targets, hard target copies),
counterfactual logsumexp over agent i's available actions of the mixed Q,
d_i = KL(softmax_j Q_tot(s, a_i=j, a_-i) || beta_i).
Continuous (:class:`CFCQLContinuous`, Eq. 10 and B.40): centralised twin critic and per-agent
actors (TD3 style, :mod:`baselines.actor_critic_backbone`), counterfactual CQL(H) with M
sampled actions per source and log-density correction, d_i = -log beta_i(pi_i(o_i) | s) from a
VAE, counterfactual policy improvement.

Deviations from the reference code (each one chosen, not forced, unless said):
* Speed, same values: the mixer's hypernetworks run once per state and all n x |A|
  counterfactual joint actions are mixed in one batched product (the code re-runs the whole
  mixer for every agent and action); the frozen behaviour model's log beta is computed once per
  dataset step (``cache_behaviour``); the critic's state half of its first layer runs once per
  state for all the sampled joint actions; on a CPU the VAE decodes its draws for lambda 32
  states at a time, so that its hidden layers stay in cache (``benchmarks/vae_decode_speed.py``).
* Speed, values within the estimator's noise: where the device multiplies bfloat16 natively,
  the VAE's hidden layers estimate log beta for lambda in bfloat16 (``vae_precision``; the fit
  stays float32), its error 300 to 500 times below the spread of the 20-draw estimate itself,
  and about twice as fast (``benchmarks/vae_precision.py``).
* ``sign`` is a setting, default -1 as in the paper's Eq. B.39; the code has used +1 since April
  2023 (it takes softmax(+tau * KL)).
* Discrete: KL(mu_i || beta_i) is computed exactly in log space over available actions (the code
  adds 1e-5 to both probabilities). The behaviour model trains for a fixed number of steps
  (``bc_steps``), where the code stops once the loss has not improved for 20 updates.
  TD(lambda) targets treat truncated episodes shorter than the batch correctly
  (:func:`~baselines.networks.td_lambda_targets`).
* Continuous: beta_i comes, as in the code, from one VAE on (s, a) read per agent (see
  :mod:`baselines.behaviour`); it trains inside the learner at the start (the code: beforehand),
  once per data, settings and seed: the fit store (:mod:`marl_offline_bench.fits`) keeps it.
  Counterfactual samples come from three sources (uniform, around pi at s, around pi at s'), as
  the code does on HalfCheetah; its MPE branch used uniform samples only (``policy_samples``).
  The other agents keep their exact dataset actions (the code adds 1e-5 uniform noise on
  HalfCheetah). Target smoothing is TD3's clip(N(0, 0.2), -0.5, 0.5) (the code: N(0, 0.05)).
  MPE's default lr is 1e-3; `full` takes the code's (0.01 on simple_spread, 1e-3 on PP and
  World). The actor loss sums the agents' losses (the code averages over agents, a 1/n scale
  before its per-agent gradient clip: ``actor_loss_mean``). No input BatchNorm in actor or
  critic (the code's: ``input_norm``). The critic trains on the team reward
  (``dataset["rewards"]``); the code read agent 0's reward (``reward_agent=0``), which on mpe-cn
  here differs (the team reward is the sum of the agents').
* gamma is a per-task setting recorded in the config: 0.99 for the discrete tasks, 0.95 for
  the continuous ones, HalfCheetah included, as the code ran (its script meant 0.99 there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from marl_offline_bench import Progress, no_progress
from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import (AgentActors, MixerWeights, QMixer, TwinCritic,
                                         build_agent_inputs, masked_fill_unavailable,
                                         masked_mean)
from marl_offline_bench.policies import RecurrentGreedyPolicy
from marl_offline_bench.registry import QUALITIES

from .actor_critic_backbone import RoundSchedule, target_policy_smoothing
from .base import (QUICK_EPISODE_BATCH, QUICK_TRANSITION_BATCH, BaseConfig, ContinuousActorCritic,
                   ContinuousCQLConfig, OfflineAlgorithm, QMIXBackboneConfig)
from .behaviour import DiscreteBehaviour, VAEBehaviour, masked_log_softmax
from .qmix_backbone import QMIXBackbone, qmix_td_loss
from .sampling_continuous import continuous_per_dataset

__all__ = [
    "CFCQLDiscrete", "CFCQLContinuous", "CFCQLDiscreteConfig", "CFCQLContinuousConfig",
    "DISCRETE_PER_DATASET", "CONTINUOUS_PER_DATASET", "native_bfloat16",
    # loss functions
    "counterfactual_lambda", "lambda_entropy", "counterfactual_joint_q",
    "counterfactual_joint_q_reference", "policy_behaviour_kl", "cfcql_discrete_penalty",
    "counterfactual_joint_actions", "cfcql_continuous_penalty",
    "counterfactual_actor_loss",
]


# =================================================================================================
# Per-dataset settings (from the reference code)
# =================================================================================================
#: SMAC: alpha (CQL weight) and tau (lambda temperature) per dataset, from the reference code.
#: Random SMAC datasets use the config's defaults, alpha 50 and tau 5.
#:
#: Equal_Line (our choice; the code ships no table for it): tau 0.5. With the default tau 5 the
#: near-deterministic QMIX data make lambda one-hot within a few hundred updates, and with the
#: paper's sign the agents left without weight are the ones furthest from beta, so nothing
#: holds their unseen actions down: their KL grows, their weight shrinks further, and the
#: greedy target climbs through them. On equal_line-n4-medium (seed 0, quick budget) the mean
#: Q_tot of the data went 36 -> 2233 over 1000 updates (true returns are below 10) and the
#: final return was 0; tau 0.5 kept it at 2-9 and returned 4.58, tau 0 4.32 (the data: 3.80).
_EQUAL_LINE_TAU = 0.5
DISCRETE_PER_DATASET: dict[str, dict[str, Any]] = {
    **{f"equal_line-n{n}-{quality}-v0": {"tau": _EQUAL_LINE_TAU}
       for n in (2, 4, 6, 8, 10) for quality in QUALITIES},
    "smac-2s3z-medium-v0": {"alpha": 0.1, "tau": 0.5},
    "smac-2s3z-medium-replay-v0": {"alpha": 5.0, "tau": 0.1},
    "smac-2s3z-expert-v0": {"alpha": 50.0, "tau": 0.5},
    "smac-2s3z-mixed-v0": {"alpha": 0.5, "tau": 0.0},
    "smac-3s_vs_5z-medium-v0": {"alpha": 50.0, "tau": 0.0},
    "smac-3s_vs_5z-medium-replay-v0": {"alpha": 50.0, "tau": 0.0},
    "smac-3s_vs_5z-expert-v0": {"alpha": 50.0, "tau": 1.0},
    "smac-3s_vs_5z-mixed-v0": {"alpha": 50.0, "tau": 0.0},
    "smac-5m_vs_6m-medium-v0": {"alpha": 50.0, "tau": 0.5},
    "smac-5m_vs_6m-medium-replay-v0": {"alpha": 50.0, "tau": 0.5},
    "smac-5m_vs_6m-expert-v0": {"alpha": 50.0, "tau": 100.0},
    "smac-5m_vs_6m-mixed-v0": {"alpha": 50.0, "tau": 0.5},
    "smac-6h_vs_8z-medium-v0": {"alpha": 50.0, "tau": 1.0},
    "smac-6h_vs_8z-medium-replay-v0": {"alpha": 50.0, "tau": 0.5},
    "smac-6h_vs_8z-expert-v0": {"alpha": 50.0, "tau": 0.0},
    "smac-6h_vs_8z-mixed-v0": {"alpha": 50.0, "tau": 1.0},
}

#: Continuous alpha per task and quality; "mixed" has no entry in the code (config default).
_CONTINUOUS_ALPHA: dict[str, dict[str, float]] = {
    "mpe-cn": {"random": 0.5, "medium-replay": 1.0, "medium": 5.0, "expert": 2.5},
    "mpe-pp": {"random": 0.5, "medium-replay": 0.5, "medium": 0.6, "expert": 2.0},
    "mpe-world": {"random": 0.5, "medium-replay": 0.5, "medium": 0.32, "expert": 0.3},
    "mamujoco-halfcheetah_2x3": {"random": 0.1, "medium-replay": 0.4, "medium": 1.0, "expert": 1.7},
}
#: dataset id -> overrides: the task's backbone settings (:data:`BACKBONE_PER_TASK`) plus its
#: alpha.
CONTINUOUS_PER_DATASET: dict[str, dict[str, Any]] = continuous_per_dataset(
    per_quality={task: {quality: {"alpha": alpha} for quality, alpha in table.items()}
                 for task, table in _CONTINUOUS_ALPHA.items()})


# =================================================================================================
# Configs
# =================================================================================================
@dataclass
class CFCQLDiscreteConfig(QMIXBackboneConfig):
    """Discrete CFCQL on the QMIX backbone. Defaults: the reference code (ALGORITHMS.md).

    ``hidden_dim`` also sizes the behaviour network.
    """

    alpha: float = 50.0
    """Weight of the counterfactual conservative term."""
    tau: float = 5.0
    """Temperature of lambda = softmax_i(sign * tau * KL_i); 0 gives lambda_i = 1/n."""
    sign: int = -1
    """-1: the paper's Eq. B.39 (less weight on the agent furthest from beta); +1: the code's."""
    bc_steps: int = 5000
    """Cross-entropy updates of the behaviour model beta, run before the first CFCQL update."""
    bc_batch_size: int = 32
    """Episodes per behaviour-model update."""
    bc_lr: float = 1e-3
    """Adam learning rate of the behaviour model."""
    cache_behaviour: bool = True
    """Compute log beta for every dataset step once after fitting (N x n x A floats in memory)
    instead of running the behaviour network on every batch; the values are the same."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self)
        if self.bc_batch_size < 1:
            raise ValueError(f"bc_batch_size must be at least 1, got {self.bc_batch_size}")
        if self.bc_steps < 0:
            raise ValueError(f"bc_steps must be non-negative, got {self.bc_steps}")


@dataclass
class CFCQLContinuousConfig(ContinuousCQLConfig):
    """Continuous CFCQL on the central twin critic; its conservative term draws counterfactual
    actions per agent. Defaults: the code's MPE settings."""

    tau: float = 1.0
    """Temperature of lambda = softmax_i(sign * tau * d_i), d_i = -log beta_i(pi_i(o_i) | s)."""
    sign: int = -1
    """-1: the paper (less weight on the agent whose action is least likely under beta); +1."""
    critic_updates_per_round: int = 5
    """Updates per round: the first updates critic and actors, the others the critic only."""
    actor_loss_mean: bool = False
    """Average the agents' actor losses before the per-agent gradient clip, as the code does
    (False: sum them, each actor then gets its own loss's gradient at full scale)."""
    input_norm: bool = False
    """Batch norm on the actors' and the critic's inputs, as the code's networks have."""
    reward_agent: int | None = None
    """Train the critic on this agent's own reward, as the code does with agent 0's (None: the
    team reward). They differ where agents' rewards do: on mpe-cn, the team's is their sum."""
    cf_target: bool = False
    """CF_T: the target averages Q'(s', a'_i = pi'_i(o'_i), a'_-i from the data) over i."""
    actor_partners: str = "data"
    """What the other agents do in each actor's loss: "data", their actions in the data (Eq. 10,
    counterfactual policy improvement, as the code does); "policy", their actors' current
    actions, held fixed (a diagnosis: do actors trained against the data's partners fail to
    agree with each other?)."""
    vae_steps: int = 100_000
    """Updates of the behaviour VAE, run before the first CFCQL update."""
    vae_hidden_dim: int = 750
    """Hidden width of the VAE's encoder and decoder."""
    vae_latent_dim: int = 0
    """VAE latent size; 0 means twice the joint action size, as in the code."""
    vae_kl_weight: float = 0.5
    """KL weight of the VAE loss (also sets the decoder's std, sqrt(weight / 4))."""
    vae_lr: float = 1e-4
    """Adam learning rate of the VAE."""
    vae_batch_size: int = 256
    """Transitions per VAE update."""
    vae_samples: int = 20
    """L, importance samples per estimate of log beta_i."""
    vae_precision: str = "auto"
    """Precision of the VAE decoder's hidden layers when lambda reads log beta (the fit is
    float32): "float32", "bfloat16", or "auto", resolved here to bfloat16 where the device
    multiplies it natively (see :func:`native_bfloat16`) and to float32 elsewhere."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self)
        if self.vae_precision == "auto":
            self.vae_precision = "bfloat16" if native_bfloat16(self.device) else "float32"
        if self.vae_precision not in ("float32", "bfloat16"):
            raise ValueError(f"vae_precision must be 'auto', 'float32' or 'bfloat16', "
                             f"got {self.vae_precision!r}")
        for name in ("critic_updates_per_round", "vae_hidden_dim", "vae_batch_size",
                     "vae_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vae_steps < 0 or self.vae_latent_dim < 0:
            raise ValueError("vae_steps and vae_latent_dim must be non-negative")
        if self.actor_partners not in ("data", "policy"):
            raise ValueError(f"actor_partners must be 'data' (the other agents' actions in the "
                             f"data, Eq. 10) or 'policy' (their actors'), "
                             f"got {self.actor_partners!r}")
        if self.reward_agent is not None and self.reward_agent < 0:
            raise ValueError(f"reward_agent must be an agent's index (0, 1, ...) or None for the "
                             f"team reward, got {self.reward_agent}")


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports it,
    or a CPU with AVX512-BF16 or AMX (elsewhere oneDNN emulates it, slower than float32)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _check_common(config) -> None:
    """What both CFCQL configs add to their backbone's checks: lambda's sign and temperature,
    and the conservative weight."""
    if config.sign not in (-1, 1):
        raise ValueError(f"sign must be -1 (the paper) or +1 (the authors' code), "
                         f"got {config.sign}")
    if config.tau < 0 or config.alpha < 0:
        raise ValueError(f"alpha and tau must be non-negative, got {config.alpha}, {config.tau}")


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def counterfactual_lambda(distance: torch.Tensor, tau: float, sign: int = -1) -> torch.Tensor:
    """Agent weights lambda = softmax_i(sign * tau * distance_i), detached.

    Args:
        distance: (..., n) each agent's distance from the behaviour policy (KL or -log beta).
        tau: temperature; 0 gives 1/n, a large tau a one-hot.
        sign: -1 weights the agents closest to the data most (paper), +1 the furthest.

    Returns:
        (..., n), summing to one over agents.
    """
    return torch.softmax(sign * tau * distance.detach(), dim=-1)


def lambda_entropy(lam: torch.Tensor) -> torch.Tensor:
    """Entropy of lambda over agents, (..., n) -> (...); log n for uniform, 0 for one-hot."""
    return -(lam * lam.clamp_min(1e-12).log()).sum(-1)


def counterfactual_joint_q(agent_qs: torch.Tensor, chosen_qs: torch.Tensor, weights: MixerWeights,
                           avail: torch.Tensor | None = None) -> torch.Tensor:
    """Q_tot(s, a_i := j, a_-i from the data) for every agent i and action j, in one product.

    The joint action (i, j) differs from the data's in agent i's entry only, so its first mixing
    layer is the data's, W1^T q_D + b1, plus (Q_i(j) - Q_i(a_D)) times row i of W1: a rank-one
    change per row. Computing it that way gives the same values as ``QMixer.mix`` on the n x A
    joint actions (up to float rounding) without building the (..., n, A, n) joint tensor.

    Args:
        agent_qs: (..., n, A) every agent's Q for every action.
        chosen_qs: (..., n) every agent's Q of its dataset action.
        weights: the mixer's weights at the states, ``mixer.hyper(state)`` (leading dims ``...``).
        avail: (..., n, A) bool, or None.

    Returns:
        (..., n, A); unavailable actions hold about -1e10.
    """
    data_layer = torch.matmul(chosen_qs.unsqueeze(-2), weights.w1) + weights.b1   # (..., 1, m)
    change = agent_qs - chosen_qs.unsqueeze(-1)                                   # (..., n, A)
    pre_activation = torch.addcmul(data_layer.unsqueeze(-2), change.unsqueeze(-1),
                                   weights.w1.unsqueeze(-2))                      # (..., n, A, m)
    hidden = F.elu(pre_activation).flatten(-3, -2)                                # (..., n*A, m)
    q_tot = torch.matmul(hidden, weights.w2).reshape(agent_qs.shape) + weights.b2
    return masked_fill_unavailable(q_tot, avail)


def counterfactual_joint_q_reference(mixer: QMixer, agent_qs: torch.Tensor, actions: torch.Tensor,
                                     state: torch.Tensor, avail: torch.Tensor | None = None
                                     ) -> torch.Tensor:
    """The same values as :func:`counterfactual_joint_q`, the way the reference code computes
    them: one full mixer call (hypernetworks included) per agent and action. For tests and the
    speed benchmark only.

    Args:
        agent_qs: (..., n, A); actions: (..., n) dataset actions; state: (..., S).
    """
    n_agents, n_actions = agent_qs.shape[-2:]
    rows = []
    for i in range(n_agents):
        per_action = []
        for j in range(n_actions):
            cf_actions = actions.clone()
            cf_actions[..., i] = j
            chosen = agent_qs.gather(-1, cf_actions.unsqueeze(-1)).squeeze(-1)
            per_action.append(mixer(chosen, state))
        rows.append(torch.stack(per_action, dim=-1))
    return masked_fill_unavailable(torch.stack(rows, dim=-2), avail)


def policy_behaviour_kl(cf_q: torch.Tensor, log_beta: torch.Tensor,
                        avail: torch.Tensor | None) -> torch.Tensor:
    """KL(mu_i || beta_i) with mu_i = softmax_j of the counterfactual Q_tot (Eq. B.38-B.39).

    Args:
        cf_q: (..., n, A) from :func:`counterfactual_joint_q`.
        log_beta: (..., n, A) the behaviour model's log-probabilities.
        avail: (..., n, A) bool, or None; unavailable actions contribute nothing.

    Returns:
        (..., n).
    """
    log_mu = masked_log_softmax(cf_q, avail)
    terms = log_mu.exp() * (log_mu - log_beta)
    if avail is not None:
        terms = terms.masked_fill(~avail.bool(), 0.0)
    return terms.sum(-1)


def cfcql_discrete_penalty(cf_q: torch.Tensor, lam: torch.Tensor, q_tot: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """The counterfactual CQL(H) term, before alpha.

    masked_mean( sum_i lambda_i logsumexp_j cf_q[i, j] - Q_tot(s, a_D) ).

    Args:
        cf_q: (B, T, n, A), unavailable actions at about -1e10.
        lam: (B, T, n) agent weights.
        q_tot: (B, T) Q_tot of the dataset's joint actions.
        mask: (B, T) true on real steps.
    """
    pushed_down = (lam * cf_q.logsumexp(dim=-1)).sum(-1)
    return masked_mean(pushed_down - q_tot, mask)


def counterfactual_joint_actions(dataset_actions: torch.Tensor,
                                 sampled: torch.Tensor) -> torch.Tensor:
    """Joint actions where only agent i's action is replaced, for every agent i and sample m.

    Args:
        dataset_actions: (B, n, d).
        sampled: (B, n, M, d), agent i's candidate actions.

    Returns:
        (B, n, M, n * d): row [b, i, m] is the data's joint action with a_i := sampled[b, i, m].
    """
    n_agents = dataset_actions.shape[1]
    own_slot = torch.eye(n_agents, dtype=torch.bool, device=sampled.device).reshape(
        n_agents, 1, n_agents, 1)
    joint = torch.where(own_slot, sampled.unsqueeze(-2), dataset_actions[:, None, None])
    return joint.flatten(-2)


def cfcql_continuous_penalty(cf_q: torch.Tensor, log_density: torch.Tensor, lam: torch.Tensor,
                             q_data: torch.Tensor) -> torch.Tensor:
    """The counterfactual CQL(H) term of the twin critic, before alpha.

    sum_k mean_b( sum_i lambda_i logsumexp_m (Q_k(s, a_i^m, a_-i) - log density(a_i^m))
                  - Q_k(s, a_D) ).

    Args:
        cf_q: (2, B, n, K) twin Q of the counterfactual joint actions (K samples per agent).
        log_density: (B, n, K) log density of the distribution each sample came from.
        lam: (B, n) agent weights.
        q_data: (2, B) twin Q of the dataset's joint actions.
    """
    soft_max_q = (cf_q - log_density).logsumexp(dim=-1)                      # (2, B, n)
    return ((soft_max_q * lam).sum(-1) - q_data).mean(-1).sum()


def counterfactual_actor_loss(critic: TwinCritic, state: torch.Tensor, policy_actions: torch.Tensor,
                              partner_actions: torch.Tensor, action_mask: torch.Tensor,
                              action_reg: float) -> torch.Tensor:
    """Counterfactual policy improvement (Eq. 10, "CF_P"): each agent's actor loss.

    L_i = -mean_b Q_1(s, pi_i(o_i), a_-i) + action_reg * mean_b mean_dims pi_i^2, a_-i the
    partners' actions: the data's in Eq. 10. With partners that carry no gradient, L_i depends
    on no other agent's actor, so summing them gives each actor only its own term.

    Args:
        state: (B, S); policy_actions, partner_actions: (B, n, d); action_mask: (n, d).

    Returns:
        (n,) the per-agent losses L_i.
    """
    joint = counterfactual_joint_actions(partner_actions, policy_actions.unsqueeze(2))  # (B,n,1,nd)
    q1 = critic.from_features(critic.state_features(state), joint.squeeze(2))[0]       # (B, n)
    squared = (policy_actions ** 2 * action_mask).sum(-1) / action_mask.sum(-1)       # (B, n)
    return -q1.mean(0) + action_reg * squared.mean(0)


# =================================================================================================
# Trainers
# =================================================================================================
class CFCQLDiscrete(OfflineAlgorithm):
    """Discrete CFCQL(H) on PyMARL's QMIX (see the module docstring)."""

    Config: ClassVar[type[BaseConfig]] = CFCQLDiscreteConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = DISCRETE_PER_DATASET
    reference_settings: ClassVar[tuple[str, ...]] = ("batch_size",)
    # CPU sizing: the behaviour model gets a tenth of its steps and batches shrink to 32
    # episodes under `quick`; `smoke` only exercises the code.
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"bc_steps": 20, "batch_size": 8},
        "quick": {"bc_steps": 500, "batch_size": QUICK_EPISODE_BATCH},
    }

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: CFCQLDiscreteConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        n, n_actions = info.n_agents, info.n_actions
        self.qmix = QMIXBackbone.from_config(info, cfg)
        self.behaviour = DiscreteBehaviour(info.obs_dim, n, n_actions, cfg.hidden_dim).to(device)
        self.behaviour_loss = float("nan")
        self.behaviour_ready = False
        self.updates = 0
        self.sampler = dataset.sampler(cfg.batch_size, kind="episodes", seed=cfg.seed,
                                       device=cfg.device, n_actions=n_actions)

    def fit_behaviour(self, progress: Progress = no_progress) -> float:
        """Fit beta by cross-entropy (``bc_steps`` updates)."""
        cfg = self.config
        self.behaviour_loss = self.behaviour.fit(self.dataset, cfg.bc_steps, cfg.bc_batch_size,
                                                 cfg.bc_lr, cfg.grad_clip, cfg.seed + 1, cfg.device,
                                                 progress)
        self.behaviour_ready = True
        self.sampler.detach("log_beta")
        return self.behaviour_loss

    @torch.no_grad()
    def behaviour_log_probs(self, chunk: int = 64,
                            progress: Progress = no_progress) -> torch.Tensor:
        """(N, n, A) log beta at every step of the dataset, in the dataset's transition order."""
        e, n_actions = self.dataset.episodes_data, self.info.n_actions
        table = torch.empty(e.n_transitions, self.info.n_agents, n_actions,
                            device=self.config.device)
        for start in progress(range(0, e.n_episodes, chunk), "behaviour log-probabilities"):
            index = np.arange(start, min(start + chunk, e.n_episodes))
            batch = self.dataset.episode_batch(index)
            obs, actions = (torch.from_numpy(batch.observations).to(table.device),
                            torch.from_numpy(batch.actions).to(table.device))
            avail = None if batch.avail_actions is None else \
                torch.from_numpy(batch.avail_actions[:, :-1]).to(table.device)
            inputs = build_agent_inputs(obs, actions, n_actions)[:, :-1]
            log_beta = self.behaviour.log_probs(inputs, avail)                 # (b, T, n, A)
            rows = e.episode_starts[index][:, None] + np.arange(batch.mask.shape[1])
            real = torch.from_numpy(batch.mask).to(table.device)
            table[torch.from_numpy(rows[batch.mask]).to(table.device)] = log_beta[real]
        return table

    def prepare(self, progress: Progress = no_progress) -> None:
        """Fit beta, then (with ``cache_behaviour``) tabulate its log-probabilities once."""
        if not self.behaviour_ready:
            self.fit_behaviour(progress)
        if self.config.cache_behaviour and "log_beta" not in self.sampler.extras:
            self.sampler.attach("log_beta", self.behaviour_log_probs(progress=progress))

    def update(self) -> dict[str, float]:
        self.prepare()
        cfg = self.config
        batch = next(self.sampler)
        state, actions = batch.states, batch.actions.long()        # (B, T+1, S), (B, T, n)
        mask, avail = batch.mask, batch.avail_actions               # (B, T), (B, T+1, n, A)
        # Q of the agent network over the episodes, double-Q TD(lambda) targets
        inputs, agent_qs, targets = self.qmix.unroll_with_targets(batch, self.info.n_actions)

        qs, step_avail = agent_qs[:, :-1], avail[:, :-1]            # the T acting steps
        chosen_qs = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (B, T, n)
        weights = self.qmix.mixer.hyper(state[:, :-1])              # once per state
        q_tot = QMixer.mix(chosen_qs.unsqueeze(-2), weights).squeeze(-1)  # (B, T)
        td_loss = qmix_td_loss(q_tot, targets, mask)

        cf_q = self.counterfactual_q(qs, chosen_qs, actions, state[:, :-1], weights, step_avail)
        with torch.no_grad():
            log_beta = batch.extras["log_beta"] if "log_beta" in batch.extras else \
                self.behaviour.log_probs(inputs[:, :-1], step_avail)          # (B, T, n, A)
            kl = policy_behaviour_kl(cf_q.detach(), log_beta, step_avail)  # (B, T, n)
            lam = counterfactual_lambda(kl, cfg.tau, cfg.sign)
        penalty = cfcql_discrete_penalty(cf_q, lam, q_tot, mask)
        loss = td_loss + cfg.alpha * penalty

        grad_norm = self.qmix.step(loss)
        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            self.qmix.update_targets()

        step_mask = mask.unsqueeze(-1)
        return {
            "td_loss": td_loss.item(),
            "cql_loss": (cfg.alpha * penalty).item(),
            "cql_penalty": penalty.item(),
            "q_taken_mean": masked_mean(q_tot.detach(), mask).item(),
            "target_mean": masked_mean(targets, mask).item(),
            "kl_mean": masked_mean(kl, step_mask).item(),
            "lambda_entropy": masked_mean(lambda_entropy(lam), mask).item(),
            "lambda_max": masked_mean(lam.max(-1).values, mask).item(),
            "grad_norm": grad_norm.item(),
            "behaviour_loss": self.behaviour_loss,
        }

    def counterfactual_q(self, qs: torch.Tensor, chosen_qs: torch.Tensor, actions: torch.Tensor,
                         state: torch.Tensor, weights: MixerWeights,
                         avail: torch.Tensor) -> torch.Tensor:
        """(B, T, n, A) Q_tot with agent i's action set to j, the others' from the data.

        Computed by :func:`counterfactual_joint_q` from the once-computed mixer ``weights``;
        ``actions`` and ``state`` are there for implementations that re-run the mixer (the
        speed benchmark's per-agent loop).
        """
        return counterfactual_joint_q(qs, chosen_qs, weights, avail)

    def policy(self) -> RecurrentGreedyPolicy:
        return RecurrentGreedyPolicy(self.qmix.agent, self.info.n_agents, self.info.n_actions,
                                     self.config.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            **self.qmix.state_dict(),
            "behaviour": self.behaviour.state_dict(),
            "behaviour_ready": self.behaviour_ready, "behaviour_loss": self.behaviour_loss,
            "updates": self.updates,
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.qmix.load_state_dict(state)
        self.behaviour.load_state_dict(state["behaviour"])
        self.behaviour_ready = bool(state["behaviour_ready"])
        self.behaviour_loss = float(state["behaviour_loss"])
        self.sampler.detach("log_beta")                   # rebuilt from the loaded behaviour
        self.updates = int(state["updates"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])


class CFCQLContinuous(ContinuousActorCritic):
    """Continuous CFCQL: central twin critic, per-agent actors (see the module docstring).

    One :meth:`update` is one critic step; the first step of every round of
    ``critic_updates_per_round`` also updates the actors, and the targets move after the last.
    """

    Config: ClassVar[type[BaseConfig]] = CFCQLContinuousConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = CONTINUOUS_PER_DATASET
    # The authors' VAE (hidden 750, 20 importance samples, 1e5 steps) adds about 0.35 s of one
    # core to a World update; `quick` uses a small one so that every dataset fits the budget.
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"vae_steps": 20, "vae_hidden_dim": 32, "vae_samples": 2, "batch_size": 64},
        "quick": {"vae_steps": 2000, "vae_hidden_dim": 128, "vae_samples": 5,
                  "batch_size": QUICK_TRANSITION_BATCH},
        # The reference code's own command (its README) runs without --cf_weight: lambda = 1/n,
        # so no VAE is trained or queried. The VAE form is the `cfcql_vae` variant.
        "full": {"tau": 0.0},
    }

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: CFCQLContinuousConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        n, d = info.n_agents, info.action_dim
        if cfg.reward_agent is not None and cfg.reward_agent >= n:
            raise ValueError(f"reward_agent={cfg.reward_agent}, but {info.task_id} has {n} agents "
                             f"(0 to {n - 1}); set one of those, or None for the team reward")
        self.init_actor_critic(
            AgentActors(info.obs_dim, info.action_mask, cfg.hidden_dim, cfg.input_norm).to(device),
            TwinCritic(info.state_dim, n * d, cfg.hidden_dim, cfg.input_norm).to(device),
            cfg.lr, cfg.lr)
        k = cfg.critic_updates_per_round
        self.schedule = RoundSchedule(k, actor_step=0, target_step=k - 1)
        self.vae = VAEBehaviour(info.state_dim, info.action_mask, cfg.vae_hidden_dim,
                                cfg.vae_latent_dim or None, cfg.vae_kl_weight).to(device)
        self.behaviour_loss = float("nan")
        self.behaviour_ready = False
        self.updates = 0
        self.sampler = dataset.sampler(cfg.batch_size, kind="transitions", seed=cfg.seed,
                                       device=cfg.device)
        # log density of a uniform draw on agent i's real action box [-1, 1]^{d_i}
        self.uniform_log_density = -self.action_mask.sum(-1) * math.log(2.0)          # (n,)

    def fit_behaviour(self, progress: Progress = no_progress) -> float:
        """Fit the VAE (``vae_steps`` updates)."""
        cfg = self.config
        self.behaviour_loss = self.vae.fit(self.dataset, cfg.vae_steps, cfg.vae_batch_size,
                                           cfg.vae_lr, cfg.seed + 1, cfg.device, progress)
        self.behaviour_ready = True
        return self.behaviour_loss

    def _policy_samples(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """M draws of clip(pi(o) + N(0, sigma)) per agent and their Gaussian log densities."""
        cfg = self.config
        noise = torch.randn(*actions.shape[:2], cfg.num_sampled_actions, actions.shape[-1],
                            device=actions.device) * cfg.sample_noise                 # (B,n,M,d)
        samples = (actions.unsqueeze(2) + noise).clamp(-1.0, 1.0) * self.action_mask[:, None]
        log_density = ((-noise ** 2 / (2 * cfg.sample_noise ** 2)
                        - math.log(cfg.sample_noise * math.sqrt(2 * math.pi)))
                       * self.action_mask[:, None]).sum(-1)                           # (B,n,M)
        return samples, log_density

    def _counterfactual_samples(self, policy_actions: torch.Tensor,
                                next_policy_actions: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent i's candidate actions (B, n, K, d) from all sources; log densities (B, n, K)."""
        cfg = self.config
        batch, n, d = policy_actions.shape
        m = cfg.num_sampled_actions
        uniform = (torch.rand(batch, n, m, d, device=policy_actions.device) * 2 - 1) \
            * self.action_mask[:, None]
        samples = [uniform]
        log_density = [self.uniform_log_density[:, None].expand(batch, n, m)]
        if cfg.policy_samples:
            for actions in (policy_actions, next_policy_actions):
                drawn, log_p = self._policy_samples(actions)
                samples.append(drawn)
                log_density.append(log_p)
        return torch.cat(samples, dim=2), torch.cat(log_density, dim=2)

    def _target_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return target_policy_smoothing(self.target_actors(next_obs), cfg.target_noise,
                                       cfg.target_noise_clip, self.action_mask)

    @property
    def needs_behaviour(self) -> bool:
        """Whether lambda depends on beta: with tau = 0 it is 1/n whatever beta says."""
        return self.config.tau != 0.0

    def prepare(self, progress: Progress = no_progress) -> None:
        """Fit the VAE, where lambda needs it."""
        if not self.behaviour_ready and self.needs_behaviour:
            self.fit_behaviour(progress)

    def update(self) -> dict[str, float]:
        self.prepare()
        cfg = self.config
        batch = next(self.sampler)
        state, next_state = batch.states, batch.next_states               # (B, S)
        obs, next_obs = batch.observations, batch.next_observations      # (B, n, o)
        actions = batch.actions                                              # (B, n, d)
        batch_size, n, d = actions.shape

        with torch.no_grad():
            next_actions = self._target_actions(next_obs)                      # (B, n, d)
            if cfg.cf_target:
                # a'_-i from the data where the episode goes on; the target policy at its end.
                data_next = torch.where(batch.has_next_actions[:, None, None],
                                        batch.next_actions, next_actions)
                joint = counterfactual_joint_actions(data_next, next_actions.unsqueeze(2))
                next_q = self.target_critic.from_features(
                    self.target_critic.state_features(next_state), joint.squeeze(2)).mean(-1)
            else:
                next_q = self.target_critic(next_state, next_actions.flatten(1))    # (2, B)
            not_done = 1.0 - batch.terminals.float()
            rewards = (batch.rewards if cfg.reward_agent is None
                       else batch.agent_rewards[:, cfg.reward_agent])                # (B,)
            targets = rewards + cfg.gamma * not_done * next_q.min(0).values           # (B,)
            policy_actions = self.actors(obs)
            next_policy_actions = self.actors(next_obs)
            if self.needs_behaviour:
                log_beta = self.vae.log_prob(state, policy_actions, cfg.vae_samples,
                                             getattr(torch, cfg.vae_precision))      # (B, n)
            else:  # lambda = 1/n: no likelihood to compute
                log_beta = torch.zeros(batch_size, n, device=state.device)
            lam = counterfactual_lambda(-log_beta, cfg.tau, cfg.sign)
            samples, log_density = self._counterfactual_samples(policy_actions, next_policy_actions)

        features = self.critic.state_features(state)                            # (2, B, H)
        q_data = self.critic.from_features(features, actions.reshape(batch_size, 1, n * d))[..., 0]
        td_loss = ((q_data - targets) ** 2).mean(-1).sum()
        cf_q = self.counterfactual_q(features, state, actions, samples)        # (2, B, n, K)
        penalty = cfcql_continuous_penalty(cf_q, log_density, lam, q_data)
        critic_loss = td_loss + cfg.alpha * penalty
        critic_grad = self.critic_step(critic_loss, cfg.grad_clip)

        metrics = {
            "td_loss": td_loss.item(), "cql_loss": (cfg.alpha * penalty).item(),
            "cql_penalty": penalty.item(), "q_data_mean": q_data.mean().item(),
            "target_mean": targets.mean().item(),
            "lambda_entropy": lambda_entropy(lam).mean().item(),
            "lambda_max": lam.max(-1).values.mean().item(),
            "critic_grad_norm": critic_grad.item(),
        }
        if self.needs_behaviour:
            metrics.update(log_beta_mean=log_beta.mean().item(),
                           behaviour_loss=self.behaviour_loss)
        if self.schedule.actor_due(self.updates):
            current = self.actors(obs)
            partners = actions if cfg.actor_partners == "data" else current.detach()
            per_agent = counterfactual_actor_loss(self.critic, state, current, partners,
                                                  self.action_mask, cfg.action_reg)
            actor_loss = per_agent.mean() if cfg.actor_loss_mean else per_agent.sum()
            self.actor_step(actor_loss, cfg.grad_clip, agentwise=True)
            metrics["actor_loss"] = actor_loss.item()
        if self.schedule.targets_due(self.updates):
            self.update_targets(cfg.target_rate)
        self.updates += 1
        return metrics

    def counterfactual_q(self, features: torch.Tensor, state: torch.Tensor, actions: torch.Tensor,
                         samples: torch.Tensor) -> torch.Tensor:
        """(2, B, n, K) twin Q of the data's joint actions with a_i := samples[:, i, k].

        All n x K joint actions per state go through the critic in one call, reusing the state
        part of its first layer (``features``); ``state`` is there for implementations that
        re-run the whole critic (the speed benchmark's per-agent loop).
        """
        batch_size, n, n_samples, d = samples.shape
        joint = counterfactual_joint_actions(actions, samples)                  # (B, n, K, n*d)
        cf_q = self.critic.from_features(features, joint.reshape(batch_size, n * n_samples, n * d))
        return cf_q.reshape(2, batch_size, n, n_samples)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "actors": self.actors.state_dict(), "critic": self.critic.state_dict(),
            "target_actors": self.target_actors.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "actor_optimiser": self.actor_optimiser.state_dict(),
            "critic_optimiser": self.critic_optimiser.state_dict(),
            "vae": self.vae.state_dict(),
            "behaviour_ready": self.behaviour_ready, "behaviour_loss": self.behaviour_loss,
            "updates": self.updates,
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actors.load_state_dict(state["actors"])
        self.critic.load_state_dict(state["critic"])
        self.target_actors.load_state_dict(state["target_actors"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.actor_optimiser.load_state_dict(state["actor_optimiser"])
        self.critic_optimiser.load_state_dict(state["critic_optimiser"])
        self.vae.load_state_dict(state["vae"])
        self.behaviour_ready = bool(state["behaviour_ready"])
        self.behaviour_loss = float(state["behaviour_loss"])
        self.updates = int(state["updates"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])


if __name__ == "__main__":  # python -m baselines.cfcql --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("cfcql"))
