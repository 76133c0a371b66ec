"""MADTKD: per-agent decision transformers distilled from a centralised teacher (discrete).

Paper: Tseng, Wang, Lin, Isola, "Offline Multi-Agent Reinforcement Learning with Knowledge
Distillation", NeurIPS 2022. The authors released no code; the CFCQL authors (Shao et al.,
NeurIPS 2023, appendix C.3) built their MADTKD baseline on MADT (Meng et al. 2021,
arXiv:2112.02845, itself on minGPT / Decision Transformer, Chen et al. 2021):
github.com/thu-rllab/CFCQL ``discrete/src/learners/baseline_madtkd_learner.py``,
``modules/agents/gpt_model.py``, ``controllers/dt_controller.py``,
``config/algs/baseline_madtkd.yaml``.
Update rules: ``ALGORITHMS.md`` of this project, section "MADTKD".

Model. Every step t of a window of K steps gives three tokens: return-to-go R_t, observation,
action; a causal transformer reads them and predicts a_t from the hidden state of the observation
token (which sees R_t, o_t and everything before). Tokens of one step share a timestep embedding.

* Student: one network for all agents (MADT's parameter sharing), observation token o_i plus the
  agent's one-hot id, action token a_i. Acts alone at evaluation.
* Teacher: the same architecture with centralised inputs: agent i's observation token also holds
  every agent's observation and the global state, its action token the joint action. It is
  trained first by cross-entropy on the dataset actions (``teacher_steps`` updates, at the first
  :meth:`MADTKDDiscrete.update`) and frozen afterwards.

Student loss, per update, on B episodes with one random window of K steps each:

    L = CE(pi_s, a_D) + kl_weight * KL(pi_s || pi_t) + feature_weight * MSE(h_s, h_t)

with pi over available actions and h the final hidden state of the observation tokens.

Acting. :meth:`MADTKDDiscrete.policy` keeps, per environment copy, the last K observations and
the actions it chose (``reset(num_envs)`` clears them). The policy is given no rewards, so its
return-to-go follows a fixed schedule: the return-to-go of the dataset's highest-return episode at
the same timestep (it starts at the dataset's max episode return and drops by that episode's
rewards; zero after that episode's end). Actions are the argmax over available actions.

Deviations from the reference code (each one chosen, not forced, unless said):
* Tokens: (return-to-go, observation, action) with a context of K = 10 steps, as the paper and
  ALGORITHMS.md describe; the CFCQL code ran ``model_type: state_only`` with a context of 1 (one
  observation token per prediction). Its return-to-go was discounted; here it is the undiscounted
  sum, as in Decision Transformer, scaled by the dataset's largest absolute episode return.
* Distillation losses: KL(student || teacher), as ALGORITHMS.md writes it (the code's
  ``kl_div(log pi_s, pi_t)`` is KL(teacher || student)), and a mean squared error between the
  student's and the teacher's features (the code instead matches, with a Huber loss, the cosine
  similarities between every pair of agents' features, and updates the teacher on that relation
  loss every few steps). Weights 0.5 and 0.5 are the code's alpha and beta.
* The teacher's centralised view is built into its observation and action tokens (one sequence
  per agent) rather than one sequence holding all agents' tokens.
* Sizes for CPU: embedding 64, 2 layers, 2 heads (code: 32, 1, 1); PyTorch's pre-norm
  ``TransformerEncoderLayer`` (GELU, feed-forward 4 x 64, no dropout, as the code's 0 dropout).
  AdamW at 5e-4 with weight decay 0.1 on matrices only and betas (0.9, 0.95), as the code's
  minGPT optimiser; gradient-norm clip 1.0 (minGPT's trainer; the code does not clip).

Per-dataset settings: the code runs one configuration for every map and quality, so the
per-dataset table is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marl_offline_bench import Progress, no_progress
from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import masked_argmax, masked_mean

from .base import QUICK_EPISODE_BATCH, BaseConfig, OfflineAlgorithm
from .behaviour import masked_log_softmax

__all__ = [
    "MADTKDConfig", "MADTKDDiscrete", "PER_DATASET",
    "DecisionTransformer", "DecisionTransformerPolicy",
    # windows of episodes and the two models' inputs
    "Windows", "cut_windows", "student_inputs", "teacher_inputs",
    # loss functions
    "returns_to_go", "action_cross_entropy", "policy_kl", "feature_mse", "distillation_loss",
]


# =================================================================================================
# Config and per-dataset table
# =================================================================================================
@dataclass
class MADTKDConfig(BaseConfig):
    """Discrete MADTKD. Defaults: the CFCQL code's ``baseline_madtkd.yaml`` unless the module
    docstring says otherwise."""

    batch_size: int = 128
    """Episodes per update (one window each; every agent of it is a sequence)."""
    context_length: int = 10
    """K, steps per window (three tokens each)."""
    embed_dim: int = 64
    """Transformer width."""
    n_layer: int = 2
    """Transformer layers."""
    n_head: int = 2
    """Attention heads (must divide embed_dim)."""
    lr: float = 5e-4
    """AdamW learning rate of the student and of the teacher."""
    weight_decay: float = 0.1
    """AdamW weight decay on weight matrices (none on biases, norms, embeddings)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    kl_weight: float = 0.5
    """Weight of KL(student || teacher) on the action distributions."""
    feature_weight: float = 0.5
    """Weight of the student-teacher feature mean squared error."""
    teacher_steps: int = 5000
    """Cross-entropy updates of the teacher, run before the first student update."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "context_length", "embed_dim", "n_layer", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.embed_dim % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide embed_dim ({self.embed_dim})")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be positive, got {self.lr}, {self.grad_clip}")
        if min(self.weight_decay, self.kl_weight, self.feature_weight, self.teacher_steps) < 0:
            raise ValueError("weight_decay, kl_weight, feature_weight and teacher_steps must be "
                             "non-negative")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(f"adam betas must lie in [0, 1), got {self.adam_beta1}, "
                             f"{self.adam_beta2}")


#: dataset id -> overrides. Empty: the reference code uses one setting for every dataset.
PER_DATASET: dict[str, dict[str, Any]] = {}


# =================================================================================================
# Network
# =================================================================================================
class DecisionTransformer(nn.Module):
    """Causal transformer over (return-to-go, observation, action) tokens, one triple per step.

    Args:
        obs_in: size of an observation token's input vector.
        action_in: size of an action token's input vector (one-hot or concatenated one-hots).
        n_actions: size of the predicted action distribution.
        max_timestep: largest timestep embedded (later ones share its embedding).
    """

    def __init__(self, obs_in: int, action_in: int, n_actions: int, embed_dim: int, n_layer: int,
                 n_head: int, max_timestep: int):
        super().__init__()
        self.max_timestep = max_timestep
        self.embed_rtg = nn.Linear(1, embed_dim)
        self.embed_obs = nn.Linear(obs_in, embed_dim)
        self.embed_action = nn.Linear(action_in, embed_dim)
        self.embed_timestep = nn.Embedding(max_timestep + 1, embed_dim)
        self.embed_norm = nn.LayerNorm(embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, n_head, 4 * embed_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, n_actions)

    def forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict every step's action from its observation token.

        Args:
            rtg: (N, L) returns-to-go.
            obs: (N, L, obs_in).
            actions: (N, L, action_in) the action taken at each step (its value at the last
                step never reaches a prediction of that step or an earlier one).
            timesteps: (N, L) int64.

        Returns:
            logits (N, L, n_actions) and features (N, L, embed_dim), the final hidden state of
            the observation tokens.
        """
        batch, steps = rtg.shape
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep))      # (N, L, d)
        tokens = torch.stack([self.embed_rtg(rtg.unsqueeze(-1)) + time,
                              self.embed_obs(obs) + time,
                              self.embed_action(actions) + time], dim=2)       # (N, L, 3, d)
        x = self.embed_norm(tokens.reshape(batch, 3 * steps, -1))
        causal = nn.Transformer.generate_square_subsequent_mask(3 * steps, device=x.device,
                                                                dtype=x.dtype)
        x = self.final_norm(self.blocks(x, mask=causal, is_causal=True))
        features = x[:, 1::3]                                                  # obs tokens
        return self.head(features), features

    def optimiser(self, lr: float, weight_decay: float,
                  betas: tuple[float, float]) -> torch.optim.AdamW:
        """AdamW with weight decay on weight matrices only (minGPT's grouping)."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            is_matrix = param.dim() >= 2 and not name.startswith("embed_timestep")
            (decay if is_matrix else no_decay).append(param)
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted return-to-go of every step of padded episodes: (B, T) -> (B, T)."""
    rewards = rewards * mask.to(rewards.dtype)
    return rewards.flip(1).cumsum(1).flip(1)


def action_cross_entropy(logits: torch.Tensor, actions: torch.Tensor,
                         avail: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
    """Masked mean of -log pi(a_D) with pi a softmax over available actions.

    Args:
        logits: (..., A); actions: (...) int64; avail: (..., A) bool or None; valid: (...).
    """
    log_pi = masked_log_softmax(logits, avail)
    return -masked_mean(log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1), valid)


def policy_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              avail: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
    """Masked mean of KL(pi_s || pi_t) = sum_a pi_s(a) (log pi_s(a) - log pi_t(a)), available a."""
    log_s = masked_log_softmax(student_logits, avail)
    log_t = masked_log_softmax(teacher_logits, avail)
    terms = log_s.exp() * (log_s - log_t)
    if avail is not None:
        terms = terms.masked_fill(~avail.bool(), 0.0)
    return masked_mean(terms.sum(-1), valid)


def feature_mse(student_features: torch.Tensor, teacher_features: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
    """Masked mean over steps of the mean squared feature difference: (..., d) -> scalar."""
    return masked_mean((student_features - teacher_features).pow(2).mean(-1), valid)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      student_features: torch.Tensor, teacher_features: torch.Tensor,
                      avail: torch.Tensor | None, valid: torch.Tensor, kl_weight: float,
                      feature_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kl_weight * KL(pi_s || pi_t) + feature_weight * MSE(h_s, h_t); the teacher is constant.

    Returns:
        (the weighted sum, the KL, the MSE).
    """
    kl = policy_kl(student_logits, teacher_logits.detach(), avail, valid)
    mse = feature_mse(student_features, teacher_features.detach(), valid)
    return kl_weight * kl + feature_weight * mse, kl, mse


# =================================================================================================
# Windows of episodes
# =================================================================================================
class Windows(NamedTuple):
    """K-step windows, one per episode, left-aligned (padding after an episode's end)."""

    obs: torch.Tensor        # (B, K, n, obs_dim)
    states: torch.Tensor     # (B, K, state_dim)
    actions: torch.Tensor    # (B, K, n) int64
    avail: torch.Tensor | None  # (B, K, n, A) bool
    rtg: torch.Tensor        # (B, K), scaled
    timesteps: torch.Tensor  # (B, K) int64
    valid: torch.Tensor      # (B, K) bool


def cut_windows(batch: dict[str, torch.Tensor], starts: torch.Tensor, context_length: int,
                return_scale: float) -> Windows:
    """Windows [start, start + K) of an episode batch from ``dataset.sampler(kind="episodes")``."""
    mask = batch.mask
    steps = mask.shape[1]
    index = starts.unsqueeze(1) + torch.arange(context_length, device=mask.device)   # (B, K)
    valid = index < mask.sum(1, keepdim=True)
    index = index.clamp(max=steps - 1)
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1)
    avail = batch.avail_actions
    return Windows(obs=batch.observations[rows, index], states=batch.states[rows, index],
                   actions=batch.actions.long()[rows, index],
                   avail=None if avail is None else avail[rows, index].bool(),
                   rtg=returns_to_go(batch.rewards, mask)[rows, index] / return_scale,
                   timesteps=index, valid=valid)


def _per_agent(x: torch.Tensor) -> torch.Tensor:
    """(B, K, n, ...) -> (B*n, K, ...), each agent its own sequence."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


def _shared(x: torch.Tensor, n_agents: int) -> torch.Tensor:
    """(B, K, ...) -> (B*n, K, ...), the same sequence for every agent."""
    return x.unsqueeze(1).expand(x.shape[0], n_agents, *x.shape[1:]).reshape(-1, *x.shape[1:])


def student_inputs(w: Windows, n_actions: int) -> tuple[torch.Tensor, ...]:
    """(rtg, obs token, action token, timesteps) per agent: (B*n, K, ...)."""
    n_agents = w.obs.shape[2]
    ids = torch.eye(n_agents, device=w.obs.device).expand(*w.obs.shape[:2], -1, -1)
    obs = torch.cat([w.obs, ids], dim=-1)                                        # (B,K,n,o+n)
    actions = F.one_hot(w.actions, n_actions).float()                          # (B,K,n,A)
    return (_shared(w.rtg, n_agents), _per_agent(obs),
            _per_agent(actions), _shared(w.timesteps, n_agents))


def teacher_inputs(w: Windows, n_actions: int) -> tuple[torch.Tensor, ...]:
    """Like :func:`student_inputs` plus every agent's observation, the state, the joint action."""
    batch, steps, n_agents, _ = w.obs.shape
    ids = torch.eye(n_agents, device=w.obs.device).expand(batch, steps, -1, -1)
    central = torch.cat([w.obs.reshape(batch, steps, -1), w.states], dim=-1)   # (B, K, n*o+S)
    obs = torch.cat([w.obs, ids, central.unsqueeze(2).expand(-1, -1, n_agents, -1)], dim=-1)
    joint = F.one_hot(w.actions, n_actions).float().reshape(batch, steps, -1)  # (B, K, n*A)
    return (_shared(w.rtg, n_agents), _per_agent(obs), _shared(joint, n_agents),
            _shared(w.timesteps, n_agents))


# =================================================================================================
# Acting policy
# =================================================================================================
class DecisionTransformerPolicy:
    """Greedy acting with the student over the last K steps, on a fixed return-to-go schedule.

    ``policy(obs [B, n, o], avail [B, n, A] | None) -> actions [B, n]``; ``reset(num_envs)`` clears
    the context (a call with another batch size resets implicitly). Every environment copy is at
    the same timestep (the evaluation runs them in lock step).
    """

    def __init__(self, model: DecisionTransformer, n_agents: int, n_actions: int,
                 context_length: int, rtg_schedule: torch.Tensor, device: str = "cpu"):
        self.model, self.n_agents, self.n_actions = model, n_agents, n_actions
        self.context_length = context_length
        self.device = torch.device(device)
        self.rtg_schedule = rtg_schedule.to(self.device)                 # (limit + 1,), scaled
        self.num_envs = -1
        self.obs: list[torch.Tensor] = []                                 # each (B*n, o+n)
        self.actions: list[torch.Tensor] = []                             # each (B*n, A)
        self.t = 0

    def reset(self, num_envs: int) -> None:
        self.num_envs, self.obs, self.actions, self.t = num_envs, [], [], 0

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        batch = obs_t.shape[0]
        if batch != self.num_envs:
            self.reset(batch)
        ids = torch.eye(self.n_agents, device=self.device).expand(batch, -1, -1)
        self.obs.append(torch.cat([obs_t, ids], dim=-1).reshape(batch * self.n_agents, -1))
        self.actions.append(torch.zeros(batch * self.n_agents, self.n_actions,
                                        device=self.device))             # placeholder for a_t
        self.obs, self.actions = self.obs[-self.context_length:], \
            self.actions[-self.context_length:]
        steps = len(self.obs)
        timesteps = torch.arange(self.t - steps + 1, self.t + 1, device=self.device)
        rtg = self.rtg_schedule[timesteps.clamp(max=len(self.rtg_schedule) - 1)]
        logits, _ = self.model(rtg.expand(batch * self.n_agents, -1), torch.stack(self.obs, 1),
                               torch.stack(self.actions, 1),
                               timesteps.expand(batch * self.n_agents, -1))
        logits = logits[:, -1].reshape(batch, self.n_agents, -1)
        avail_t = None if avail is None else torch.as_tensor(avail, device=self.device).bool()
        actions = masked_argmax(logits, avail_t)                                 # (B, n)
        self.actions[-1] = F.one_hot(actions, self.n_actions).float().reshape(
            batch * self.n_agents, -1)
        self.t += 1
        return actions.cpu().numpy().astype(np.int64)


# =================================================================================================
# Trainer
# =================================================================================================
class MADTKDDiscrete(OfflineAlgorithm):
    """Decision-transformer students distilled from a centralised teacher (module docstring)."""

    Config: ClassVar[type[BaseConfig]] = MADTKDConfig
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = PER_DATASET
    # The teacher's cross-entropy pre-training scales with the protocol's update budget; under
    # `quick`, batches are sized for a 2-core CPU as CFCQL's are (QUICK_EPISODE_BATCH).
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"teacher_steps": 20},
        "quick": {"teacher_steps": 500, "batch_size": QUICK_EPISODE_BATCH},
    }
    config: MADTKDConfig

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: MADTKDConfig):
        super().__init__(info, dataset, config)
        cfg, device = config, torch.device(config.device)
        n, n_actions, obs_dim = info.n_agents, info.n_actions, info.obs_dim
        sizes = dict(n_actions=n_actions, embed_dim=cfg.embed_dim, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, max_timestep=info.episode_limit)
        self.student = DecisionTransformer(obs_dim + n, n_actions, **sizes).to(device)
        self.teacher = DecisionTransformer(obs_dim + n + n * obs_dim + info.state_dim,
                                           n * n_actions, **sizes).to(device)
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.optimiser = self.student.optimiser(cfg.lr, cfg.weight_decay, betas)
        self.teacher_optimiser = self.teacher.optimiser(cfg.lr, cfg.weight_decay, betas)
        self.sampler = dataset.sampler(cfg.batch_size, kind="episodes", seed=cfg.seed,
                                       device=cfg.device)
        self.window_rng = np.random.default_rng(cfg.seed + 2)
        returns = dataset.episode_returns()
        self.return_scale = float(max(1.0, np.abs(returns).max()))
        self.rtg_schedule = self._best_episode_schedule(returns).to(device)
        self.teacher_loss = float("nan")
        self.teacher_ready = False
        self.updates = 0

    def _best_episode_schedule(self, returns: np.ndarray) -> torch.Tensor:
        """(episode_limit + 1,) scaled return-to-go of the highest-return episode at each step."""
        e = self.dataset.episodes_data
        best = int(np.argmax(returns))
        rewards = e.rewards[e.episode_starts[best]:e.episode_starts[best + 1]].astype(np.float64)
        schedule = np.zeros(self.info.episode_limit + 1)
        rtg = np.cumsum(rewards[::-1])[::-1][:len(schedule)]
        schedule[:len(rtg)] = rtg
        return torch.as_tensor(schedule / self.return_scale, dtype=torch.float32)

    def _windows(self) -> Windows:
        batch = next(self.sampler)
        lengths = batch.mask.sum(1).cpu().numpy()
        last_start = np.maximum(lengths - self.config.context_length, 0)
        starts = self.window_rng.integers(0, last_start + 1)                  # one per episode
        return cut_windows(batch, torch.as_tensor(starts, device=batch.mask.device),
                           self.config.context_length, self.return_scale)

    def _step(self, optimiser: torch.optim.Optimizer, model: nn.Module,
              loss: torch.Tensor) -> torch.Tensor:
        optimiser.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        optimiser.step()
        return grad_norm

    def teacher_loss_on(self, w: Windows) -> torch.Tensor:
        """The teacher's cross-entropy on the dataset actions of windows ``w``."""
        n, n_actions = self.info.n_agents, self.info.n_actions
        logits, _ = self.teacher(*teacher_inputs(w, n_actions))                 # (B*n, K, A)
        avail = None if w.avail is None else _per_agent(w.avail)
        return action_cross_entropy(logits, _per_agent(w.actions),
                                    avail, _shared(w.valid, n))

    def prepare(self, progress: Progress = no_progress) -> None:
        """Train the teacher, before the student's first update."""
        if not self.teacher_ready:
            self.fit_teacher(progress)

    def fit_teacher(self, progress: Progress = no_progress) -> float:
        """Train the teacher by cross-entropy (``teacher_steps`` updates)."""
        for _ in progress(range(self.config.teacher_steps), "teacher"):
            loss = self.teacher_loss_on(self._windows())
            self._step(self.teacher_optimiser, self.teacher, loss)
            self.teacher_loss = loss.item()
        self.teacher_ready = True
        self.teacher.requires_grad_(False)
        return self.teacher_loss

    def update(self) -> dict[str, float]:
        self.prepare()
        cfg, n, n_actions = self.config, self.info.n_agents, self.info.n_actions
        w = self._windows()
        valid = _shared(w.valid, n)                                            # (B*n, K)
        actions = _per_agent(w.actions)           # (B*n, K)
        avail = None if w.avail is None else _per_agent(w.avail)            # (B*n, K, A)
        student_logits, student_features = self.student(*student_inputs(w, n_actions))
        with torch.no_grad():
            teacher_logits, teacher_features = self.teacher(*teacher_inputs(w, n_actions))
        ce = action_cross_entropy(student_logits, actions, avail, valid)
        distill, kl, mse = distillation_loss(student_logits, teacher_logits, student_features,
                                             teacher_features, avail, valid, cfg.kl_weight,
                                             cfg.feature_weight)
        loss = ce + distill
        grad_norm = self._step(self.optimiser, self.student, loss)
        self.updates += 1
        with torch.no_grad():
            greedy = masked_argmax(student_logits, avail)
            accuracy = masked_mean((greedy == actions).float(), valid)
        return {"loss": loss.item(), "action_ce": ce.item(), "kl": kl.item(),
                "feature_mse": mse.item(), "action_accuracy": accuracy.item(),
                "grad_norm": grad_norm.item(), "teacher_loss": self.teacher_loss}

    def policy(self) -> DecisionTransformerPolicy:
        return DecisionTransformerPolicy(self.student, self.info.n_agents, self.info.n_actions,
                                         self.config.context_length, self.rtg_schedule,
                                         self.config.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "teacher_optimiser": self.teacher_optimiser.state_dict(),
            "teacher_ready": self.teacher_ready, "teacher_loss": self.teacher_loss,
            "rtg_schedule": self.rtg_schedule, "return_scale": self.return_scale,
            "updates": self.updates,
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "window_rng": self.window_rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.teacher_optimiser.load_state_dict(state["teacher_optimiser"])
        self.teacher_ready = bool(state["teacher_ready"])
        self.teacher.requires_grad_(not self.teacher_ready)
        self.teacher_loss = float(state["teacher_loss"])
        self.rtg_schedule = state["rtg_schedule"].to(self.config.device)
        self.return_scale = float(state["return_scale"])
        self.updates = int(state["updates"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        self.window_rng.bit_generator.state = state["window_rng"]
        torch.set_rng_state(state["torch_rng"])


if __name__ == "__main__":  # python -m baselines.madtkd --dataset ID --protocol smoke
    from marl_offline_bench.training import main

    raise SystemExit(main("madtkd"))
