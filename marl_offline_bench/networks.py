"""Networks shared by the offline learners and the behaviour agents that make the data.

Discrete learners use the PyMARL structure (Rashid et al. 2018; code: oxwhirl/pymarl and
hijkzzz/pymarl2 ``modules/mixers/nmix.py``): one GRU agent network shared by all agents and a
QMIX mixer on the global state. Continuous learners use the OMAR/MADDPG structure (Pan et al.
2022): per-agent MLP actors with tanh outputs and a centralised twin critic on (state, joint
action).

These choices differ from the reference code (the first two for speed only; the values match):

* :class:`QMixer` splits the mixer into :meth:`QMixer.hyper` (the hypernetworks, which depend on
  the state alone) and :meth:`QMixer.mix` (the monotonic mixing of one or many joint actions), so
  a learner that scores many joint actions per state (CFCQL, MACQL) runs the hypernetworks once.
* Per-agent networks (:class:`AgentwiseMLP`) hold every agent's weights in one tensor with a
  leading agent axis and run all agents in one batched product instead of a Python loop over
  ``nn.Module`` s. Each agent still has its own parameters; :func:`clip_grad_norm_agentwise_`
  clips each agent's gradient on its own, as separate optimisers would.
* The critics drop OMAR's input ``BatchNorm1d`` by default: with counterfactual batches the
  batch statistics mix the dataset's joint actions with sampled ones. ``input_norm=True`` puts it
  back where a learner wants the reference code's networks (:class:`AgentwiseBatchNorm`,
  :class:`FeatureBatchNorm`).
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    # discrete (PyMARL)
    "RNNAgent", "build_agent_inputs", "agent_input_dim", "QMixer", "MixerWeights",
    "masked_argmax", "masked_fill_unavailable", "td_lambda_targets", "masked_mean",
    "UNAVAILABLE_Q",
    # continuous (OMAR)
    "mlp", "AgentwiseLinear", "AgentwiseMLP", "AgentwiseBatchNorm", "FeatureBatchNorm",
    "AgentActors", "TwinCritic",
    # helpers
    "hard_update", "soft_update", "make_target", "clip_grad_norm_agentwise_",
]

#: The value given to unavailable actions before a max, logsumexp or softmax (PyMARL's -1e10).
UNAVAILABLE_Q = -1e10


# -- discrete: agent network ----------------------------------------------------------------------
def agent_input_dim(obs_dim: int, n_actions: int, n_agents: int) -> int:
    """Size of the agent network's input: observation, last-action one-hot, agent-id one-hot."""
    return obs_dim + n_actions + n_agents


def build_agent_inputs(obs: torch.Tensor, actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """Inputs of the shared agent network for a batch of padded episodes.

    Args:
        obs: (B, T+1, n, obs_dim) observations, the last one after the final action.
        actions: (B, T, n) int64 actions taken.
        n_actions: size of the discrete action space.

    Returns:
        (B, T+1, n, obs_dim + n_actions + n): at step t the observation, the one-hot of the
        agent's action at t - 1 (zeros at t = 0) and the one-hot of the agent's index.
    """
    batch, steps, n_agents, _ = obs.shape
    last_actions = obs.new_zeros(batch, steps, n_agents, n_actions)
    last_actions[:, 1:] = F.one_hot(actions.long(), n_actions).to(obs.dtype)
    agent_ids = torch.eye(n_agents, dtype=obs.dtype, device=obs.device).expand(batch, steps, -1, -1)
    return torch.cat([obs, last_actions, agent_ids], dim=-1)


class RNNAgent(nn.Module):
    """PyMARL's recurrent agent: fc(input, H), ReLU, GRUCell(H), fc(H, n_actions).

    One network serves every agent (the agent id is part of the input).
    """

    def __init__(self, input_dim: int, n_actions: int, hidden_dim: int = 64):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.rnn = nn.GRUCell(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def initial_hidden(self, *leading: int) -> torch.Tensor:
        """Zero hidden state of shape (*leading, H)."""
        return self.fc1.weight.new_zeros(*leading, self.hidden_dim)

    def forward(self, inputs: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step. inputs (..., input_dim), hidden (..., H) -> (q (..., A), new hidden)."""
        lead = inputs.shape[:-1]
        x = F.relu(self.fc1(inputs)).reshape(-1, self.hidden_dim)
        h = self.rnn(x, hidden.reshape(-1, self.hidden_dim))
        return self.fc2(h).reshape(*lead, -1), h.reshape(*lead, self.hidden_dim)

    def unroll(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run over whole episodes from a zero hidden state.

        Args:
            inputs: (B, T, n, input_dim), e.g. from :func:`build_agent_inputs`.

        Returns:
            (B, T, n, n_actions) outputs (Q-values or logits).
        """
        batch, steps, n_agents, _ = inputs.shape
        # The two linear layers run on all steps at once; only the GRU cell needs the time loop.
        x = F.relu(self.fc1(inputs)).transpose(0, 1).reshape(steps, batch * n_agents, -1)
        h = self.initial_hidden(batch * n_agents)
        hiddens = []
        # unbind, not x[t]: the backward of indexing fills a zero tensor of the whole sequence
        # per step (quadratic in T); unbind's backward is a single stack.
        for x_t in x.unbind(0):
            h = self.rnn(x_t, h)
            hiddens.append(h)
        hidden = torch.stack(hiddens).reshape(steps, batch, n_agents, -1).transpose(0, 1)
        return self.fc2(hidden)


def masked_fill_unavailable(values: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """``values`` with unavailable entries set to :data:`UNAVAILABLE_Q` (avail None: unchanged)."""
    if avail is None:
        return values
    return values.masked_fill(~avail.bool(), UNAVAILABLE_Q)


def masked_argmax(values: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """Index of the largest available entry along the last axis."""
    return masked_fill_unavailable(values, avail).argmax(dim=-1)


# -- discrete: QMIX mixer -------------------------------------------------------------------------
class MixerWeights(NamedTuple):
    """The per-state output of :meth:`QMixer.hyper` (leading dims ``...`` are the states')."""

    w1: torch.Tensor  # (..., n_agents, mixing_dim), non-negative
    b1: torch.Tensor  # (..., 1, mixing_dim)
    w2: torch.Tensor  # (..., mixing_dim, 1), non-negative
    b2: torch.Tensor  # (..., 1, 1)


class QMixer(nn.Module):
    """QMIX's monotonic mixer (pymarl2 ``nmix``): abs() hypernetwork weights, ELU hidden layer.

    Q_tot(s, q) = w2(s)^T elu(W1(s)^T q + b1(s)) + b2(s). Use ``mixer(agent_qs, state)`` for one
    joint action per state, or ``mixer.mix(joint_qs, mixer.hyper(state))`` to mix K joint actions
    per state while running the hypernetworks once.
    """

    def __init__(self, n_agents: int, state_dim: int, mixing_dim: int = 32, hypernet_dim: int = 64):
        super().__init__()
        self.n_agents, self.state_dim, self.mixing_dim = n_agents, state_dim, mixing_dim
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hypernet_dim), nn.ReLU(),
                                      nn.Linear(hypernet_dim, n_agents * mixing_dim))
        self.hyper_b1 = nn.Linear(state_dim, mixing_dim)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hypernet_dim), nn.ReLU(),
                                      nn.Linear(hypernet_dim, mixing_dim))
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, mixing_dim), nn.ReLU(),
                                      nn.Linear(mixing_dim, 1))

    def hyper(self, state: torch.Tensor) -> MixerWeights:
        """Mixing weights for states (..., state_dim)."""
        lead = state.shape[:-1]
        return MixerWeights(
            w1=self.hyper_w1(state).abs().reshape(*lead, self.n_agents, self.mixing_dim),
            b1=self.hyper_b1(state).reshape(*lead, 1, self.mixing_dim),
            w2=self.hyper_w2(state).abs().reshape(*lead, self.mixing_dim, 1),
            b2=self.hyper_b2(state).reshape(*lead, 1, 1),
        )

    @staticmethod
    def mix(agent_qs: torch.Tensor, weights: MixerWeights) -> torch.Tensor:
        """Mix K joint actions per state: agent_qs (..., K, n) -> Q_tot (..., K)."""
        hidden = F.elu(torch.matmul(agent_qs, weights.w1) + weights.b1)    # (..., K, mixing_dim)
        return (torch.matmul(hidden, weights.w2) + weights.b2).squeeze(-1)

    def forward(self, agent_qs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One joint action per state: agent_qs (..., n), state (..., state_dim) -> (...)."""
        return self.mix(agent_qs.unsqueeze(-2), self.hyper(state)).squeeze(-1)


# -- discrete: targets and masks ------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` is true (broadcast to values)."""
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def td_lambda_targets(rewards: torch.Tensor, terminals: torch.Tensor, mask: torch.Tensor,
                      values: torch.Tensor, gamma: float, td_lambda: float) -> torch.Tensor:
    """TD(lambda) returns on padded episodes (the forward view, computed backwards).

    G_t = r_t + gamma (1 - term_t) [(1 - lambda) V_{t+1} + lambda G_{t+1}], where G_{t+1} is
    replaced by V_{t+1} at the end of each episode's data (its last real step), so a truncated
    episode bootstraps from the value of its final observation. This matches PyMARL's
    ``build_td_lambda_targets`` on full-length and terminated episodes; PyMARL's version leaks
    padding values into truncated episodes shorter than the batch, this one does not.

    Args:
        rewards, terminals, mask: (B, T); mask is true on real steps.
        values: (B, T+1) bootstrap values V_t of every observation (target network).
        gamma: discount.
        td_lambda: lambda in [0, 1]; 0 gives one-step targets.

    Returns:
        (B, T) targets, zero on padding.
    """
    steps = rewards.shape[1]
    keep = mask.to(values.dtype)
    not_done = 1.0 - terminals.to(values.dtype)
    targets = torch.zeros_like(rewards, dtype=values.dtype)
    running = values[:, steps]
    for t in range(steps - 1, -1, -1):
        next_value = values[:, t + 1]
        if t + 1 < steps:
            next_real = keep[:, t + 1]
            next_value = next_real * (td_lambda * running + (1.0 - td_lambda) * next_value) \
                + (1.0 - next_real) * next_value
        running = rewards[:, t] + gamma * not_done[:, t] * next_value
        targets[:, t] = running
    return targets * keep


# -- continuous: per-agent MLPs -------------------------------------------------------------------
def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int = 2) -> nn.Sequential:
    """Linear layers with ReLU between them: in -> hidden (x n_hidden) -> out."""
    dims = [in_dim] + [hidden_dim] * n_hidden
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class AgentwiseLinear(nn.Module):
    """n independent linear layers run as one batched product: (..., n, in) -> (..., n, out).

    Initialised like ``nn.Linear`` for each agent.
    """

    def __init__(self, n_agents: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n_agents, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_agents, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ni,nio->...no", x, self.weight) + self.bias


class AgentwiseMLP(nn.Module):
    """Per-agent MLP with ReLU hidden layers: (..., n, in) -> (..., n, out)."""

    def __init__(self, n_agents: int, in_dim: int, out_dim: int, hidden_dim: int,
                 n_hidden: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * n_hidden
        self.hidden = nn.ModuleList(AgentwiseLinear(n_agents, a, b) for a, b in zip(dims, dims[1:]))
        self.out = AgentwiseLinear(n_agents, dims[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Agent axis first for the whole stack: one layout change in and out, batched products
        # in between (faster than an einsum per layer on large batches).
        lead, n_agents = x.shape[:-2], x.shape[-2]
        h = x.movedim(-2, 0).reshape(n_agents, -1, x.shape[-1])          # (n, rows, in)
        for layer in self.hidden:
            h = F.relu(torch.baddbmm(layer.bias.unsqueeze(1), h, layer.weight))
        h = torch.baddbmm(self.out.bias.unsqueeze(1), h, self.out.weight)
        return h.reshape(n_agents, *lead, -1).movedim(0, -2)


class AgentwiseBatchNorm(nn.Module):
    """Each agent's own ``BatchNorm1d`` over its input features: (..., n, f) -> (..., n, f).

    Batch statistics while training, running ones in eval mode; affine weight 1 and bias 0 at
    the start, as OMAR's ``in_fn``. Parameters carry the agent axis first, so
    :func:`clip_grad_norm_agentwise_` clips them with the agent's other weights.
    """

    def __init__(self, n_agents: int, features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(n_agents, features))
        self.bias = nn.Parameter(torch.zeros(n_agents, features))
        self.register_buffer("running_mean", torch.zeros(n_agents, features))
        self.register_buffer("running_var", torch.ones(n_agents, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            rows = x.reshape(-1, *x.shape[-2:])
            mean, var = rows.mean(0), rows.var(0, unbiased=False)
            with torch.no_grad():  # running variance unbiased, as BatchNorm1d keeps it
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (len(rows) / max(len(rows) - 1, 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class FeatureBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the last axis of inputs of any leading shape: (..., f) -> (..., f)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class AgentActors(nn.Module):
    """Deterministic per-agent actors pi_i(o_i): MLP, 2 hidden layers, tanh output.

    Padded action entries (agents with fewer action dims, see ``TaskInfo.action_mask``) are
    always zero. The output layer starts small (uniform +-3e-3) as in OMAR's code. With
    ``input_norm`` each agent's observation first passes its own batch norm, as in that code.
    """

    def __init__(self, obs_dim: int, action_mask: np.ndarray, hidden_dim: int = 64,
                 input_norm: bool = False):
        super().__init__()
        action_mask = np.asarray(action_mask, bool)
        n_agents, action_dim = action_mask.shape
        self.norm = AgentwiseBatchNorm(n_agents, obs_dim) if input_norm else nn.Identity()
        self.net = AgentwiseMLP(n_agents, obs_dim, action_dim, hidden_dim)
        nn.init.uniform_(self.net.out.weight, -3e-3, 3e-3)
        self.register_buffer("action_mask", torch.as_tensor(action_mask, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., n, obs_dim) -> actions (..., n, action_dim) in [-1, 1], zero where padded."""
        return torch.tanh(self.net(self.norm(obs))) * self.action_mask


class TwinCritic(nn.Module):
    """Centralised twin critic Q_k(s, a), k = 1, 2: MLP, 2 hidden ReLU layers each.

    The joint action is the concatenation of the agents' (padded) actions. The first layer is
    split into a state part and an action part so that many joint actions per state can be
    scored with the state part computed once (:meth:`state_features` then :meth:`from_features`).
    With ``input_norm`` state and joint action first pass a batch norm, per feature, as the
    concatenated input does in OMAR's code.
    """

    def __init__(self, state_dim: int, joint_action_dim: int, hidden_dim: int = 64,
                 input_norm: bool = False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.state_norm = FeatureBatchNorm(state_dim) if input_norm else nn.Identity()
        self.action_norm = FeatureBatchNorm(joint_action_dim) if input_norm else nn.Identity()
        # Both twins' first layers side by side; initialised as nn.Linear(state + action, hidden).
        bound = 1.0 / math.sqrt(state_dim + joint_action_dim)
        self.state_in = nn.Linear(state_dim, 2 * hidden_dim)
        self.action_in = nn.ModuleList(nn.Linear(joint_action_dim, hidden_dim, bias=False)
                                       for _ in range(2))
        for param in (self.state_in.weight, self.state_in.bias,
                      self.action_in[0].weight, self.action_in[1].weight):
            nn.init.uniform_(param, -bound, bound)
        self.hidden = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(2))
        self.out = nn.ModuleList(nn.Linear(hidden_dim, 1) for _ in range(2))

    def state_features(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., S) -> (2, ..., H): the state's share of each twin's first layer."""
        return self.state_in(self.state_norm(state)).unflatten(-1, (2, self.hidden_dim)).movedim(-2, 0)

    def from_features(self, features: torch.Tensor, joint_action: torch.Tensor) -> torch.Tensor:
        """Q_1, Q_2 of K joint actions per state.

        Args:
            features: (2, ..., H) from :meth:`state_features`.
            joint_action: (..., K, n*d).

        Returns:
            (2, ..., K).
        """
        values, joint_action = [], self.action_norm(joint_action)
        for k in range(2):
            h = F.relu(self.action_in[k](joint_action) + features[k].unsqueeze(-2))  # (..., K, H)
            h = F.relu(self.hidden[k](h))
            values.append(self.out[k](h).squeeze(-1))
        return torch.stack(values)

    def forward(self, state: torch.Tensor, joint_action: torch.Tensor) -> torch.Tensor:
        """state (..., S), joint_action (..., n*d) -> (2, ...): Q_1 and Q_2 stacked."""
        features = self.state_features(state)
        return self.from_features(features, joint_action.unsqueeze(-2)).squeeze(-1)


# -- helpers --------------------------------------------------------------------------------------
def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to serve as its target network."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def hard_update(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target``."""
    target.load_state_dict(source.state_dict())


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """Polyak averaging: target <- (1 - rate) target + rate source."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, rate)


@torch.no_grad()
def clip_grad_norm_agentwise_(module: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip each agent's gradient norm separately in a module of agentwise parameters.

    Every parameter must have the agent axis first (as :class:`AgentwiseLinear` does).

    Returns:
        (n,) the per-agent gradient norms before clipping.
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(-1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(-1, *([1] * (g.dim() - 1))))
    return norms
