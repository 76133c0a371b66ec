"""Acting policies on the shared networks: greedy ones for evaluation, exploring ones for the
behaviour agents that make the data.

A policy is called as ``policy(obs [B, n, obs_dim], avail [B, n, A] | None) -> actions`` on numpy
arrays; ``reset(num_envs)`` starts a new batch of episodes. The greedy policies read the
learner's live network, so the same object can be reused across evaluations; the exploring
ones draw from a ``numpy`` generator made anew by ``reset``, so a batch of episodes is
reproducible from (weights, exploration, seed).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .networks import AgentActors, RNNAgent, masked_argmax

__all__ = ["RecurrentGreedyPolicy", "DeterministicActorPolicy", "EpsilonGreedyPolicy",
           "GaussianActorPolicy"]


class RecurrentGreedyPolicy:
    """argmax over available actions of PyMARL's recurrent agent network.

    Keeps, per environment copy, each agent's GRU hidden state and last action (the network's
    inputs); :meth:`reset` clears them. A call with a batch size different from the last reset
    resets implicitly.
    """

    def __init__(self, agent: RNNAgent, n_agents: int, n_actions: int, device: str = "cpu"):
        self.agent, self.n_agents, self.n_actions = agent, n_agents, n_actions
        self.device = torch.device(device)
        self.hidden: torch.Tensor | None = None
        self.last_actions: torch.Tensor | None = None

    def reset(self, num_envs: int) -> None:
        self.hidden = self.agent.initial_hidden(num_envs, self.n_agents).to(self.device)
        self.last_actions = torch.zeros(num_envs, self.n_agents, self.n_actions, device=self.device)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        batch = obs_t.shape[0]
        if self.hidden is None or self.hidden.shape[0] != batch:
            self.reset(batch)
        agent_ids = torch.eye(self.n_agents, device=self.device).expand(batch, -1, -1)
        inputs = torch.cat([obs_t, self.last_actions, agent_ids], dim=-1)
        q, self.hidden = self.agent(inputs, self.hidden)
        avail_t = None if avail is None else torch.as_tensor(avail, device=self.device).bool()
        actions = masked_argmax(q, avail_t)                                     # (B, n)
        self.last_actions = F.one_hot(actions, self.n_actions).float()
        return actions.cpu().numpy().astype(np.int64)


class DeterministicActorPolicy:
    """The per-agent actors' deterministic actions pi_i(o_i), no exploration noise."""

    def __init__(self, actors: AgentActors, device: str = "cpu"):
        self.actors, self.device = actors, torch.device(device)

    def reset(self, num_envs: int) -> None:
        """Stateless; present for the evaluation protocol."""

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray | None = None) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        training = self.actors.training
        self.actors.eval()  # input batch norms act with their running statistics
        try:
            return self.actors(obs_t).cpu().numpy().astype(np.float32)
        finally:
            self.actors.train(training)


class EpsilonGreedyPolicy(RecurrentGreedyPolicy):
    """Epsilon-greedy over available actions on the recurrent agent network (PyMARL's selector).

    Each agent, each step: with probability epsilon a uniformly random available action, else the
    argmax of its Q-values over available actions. The agent network's last-action input is the
    action actually taken. Random draws come from ``numpy.random.default_rng(seed)``, made anew by
    :meth:`reset`, so a batch of episodes is reproducible from (weights, epsilon, seed).

    With ``float64=True`` (dataset collection) the network runs on a float64 copy of the agent
    and the greedy action is the lowest-index maximum: float32 Q-values of two actions can be a
    rounding apart, and torch's vectorised CPU kernels (AVX2/AVX-512) round differently from
    its scalar ones, so a float32 choice made other actions on another CPU. Training keeps
    float32 (and the live agent), as the shipped agents were trained.
    """

    def __init__(self, agent: RNNAgent, n_agents: int, n_actions: int, epsilon: float,
                 seed: int = 0, float64: bool = False):
        if float64:
            agent = copy.deepcopy(agent).double()
        super().__init__(agent, n_agents, n_actions)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon, self.seed = float(epsilon), int(seed)
        self.dtype = torch.float64 if float64 else torch.float32
        self.rng = np.random.default_rng(self.seed)

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self.hidden = self.hidden.to(self.dtype)
        self.last_actions = self.last_actions.to(self.dtype)
        self.rng = np.random.default_rng(self.seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray | None) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32).to(self.dtype)
        batch = obs_t.shape[0]
        if self.hidden is None or self.hidden.shape[0] != batch:
            self.reset(batch)
        agent_ids = torch.eye(self.n_agents, dtype=self.dtype).expand(batch, -1, -1)
        q, self.hidden = self.agent(torch.cat([obs_t, self.last_actions, agent_ids], -1),
                                    self.hidden)                                   # (B, n, A)
        avail_np = np.ones(q.shape, bool) if avail is None else np.asarray(avail, bool)
        if self.dtype == torch.float64:
            # numpy's argmax returns the first maximum: ties go to the lowest index, explicitly.
            greedy = np.where(avail_np, q.numpy(), -np.inf).argmax(-1)             # (B, n)
        else:
            greedy = masked_argmax(q, torch.from_numpy(avail_np)).numpy()           # (B, n)
        # Draw both every step, whatever epsilon is, so the random stream never shifts.
        explore = self.rng.random(greedy.shape) < self.epsilon                     # (B, n)
        noise = self.rng.random(avail_np.shape)                                    # (B, n, A)
        uniform = np.where(avail_np, noise, -1.0).argmax(-1)      # uniform over available ones
        actions = np.where(explore, uniform, greedy).astype(np.int64)
        self.last_actions = F.one_hot(torch.from_numpy(actions), self.n_actions).to(self.dtype)
        return actions


class GaussianActorPolicy(DeterministicActorPolicy):
    """pi_i(o_i) plus clipped Gaussian noise; or uniform actions during TD3's warm-up.

    Actions: clip(pi(o) + noise_std * N(0, 1), -1, 1), zero on padded entries; with
    ``uniform=True`` U(-1, 1) instead. Draws come from ``numpy.random.default_rng(seed)``, made
    anew by :meth:`reset`, so a batch of episodes is reproducible from (weights, noise_std,
    uniform, seed).
    """

    def __init__(self, actors: AgentActors, noise_std: float = 0.0, seed: int = 0,
                 uniform: bool = False):
        super().__init__(actors)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std, self.seed, self.uniform = float(noise_std), int(seed), bool(uniform)
        self.mask = actors.action_mask.numpy().astype(np.float32)             # (n, d)
        self.rng = np.random.default_rng(self.seed)

    def reset(self, num_envs: int) -> None:
        """Restart the noise stream (called by ``rollout`` before every batch)."""
        self.rng = np.random.default_rng(self.seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, avail: np.ndarray | None = None) -> np.ndarray:
        shape = np.shape(obs)[:-1] + self.mask.shape[-1:]                       # (B, n, d)
        if self.uniform:
            return (self.rng.uniform(-1.0, 1.0, shape) * self.mask).astype(np.float32)
        actions = super().__call__(obs)                                         # (B, n, d)
        if self.noise_std > 0:
            actions = actions + self.noise_std * self.rng.standard_normal(shape)
        return (np.clip(actions, -1.0, 1.0) * self.mask).astype(np.float32)
