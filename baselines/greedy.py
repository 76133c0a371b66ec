"""Acting policies for evaluation (``marl_offline_bench.evaluate_policy``).

A policy is called as ``policy(obs [B, n, obs_dim], avail [B, n, A] | None) -> actions`` on numpy
arrays; ``reset(num_envs)`` starts a new batch of episodes. Both policies here act greedily and
read the learner's live network, so the same object can be reused across evaluations.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .networks import AgentActors, RNNAgent, masked_argmax

__all__ = ["RecurrentGreedyPolicy", "DeterministicActorPolicy"]


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
        return self.actors(obs_t).cpu().numpy().astype(np.float32)
