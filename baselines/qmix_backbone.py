"""The QMIX backbone of the discrete value learners (CFCQL, MACQL, the QMIX behaviour agents).

Paper: Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent
Reinforcement Learning". Reference code: hijkzzz/pymarl2 ``learners/nq_learner.py`` (double-Q
TD(lambda) targets, Adam), on which the CFCQL code builds. Settings: ``ALGORITHMS.md``, section
"Shared backbones".

What the learners share, written once here:

    Q       = agent_net(o)                                          # (B, T+1, n, A)
    y       = TD_lambda(r, done, mask, target_mixer(target_Q[argmax_avail Q], s))  # double Q
    L_td    = 0.5 * masked_mean((Q_tot(s, a_D) - y)^2)
    step:     Adam on agent network and mixer together, grad-norm clip
    targets:  hard copy of both networks (when: the learner's schedule)

How Q_tot(s, a_D) is mixed and what is added to L_td is each learner's own. The pure functions
(:func:`double_q_values`, :func:`qmix_td_loss`) serve tests and benchmarks as well;
:class:`QMIXBackbone` holds the networks, their targets and the optimiser.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from marl_offline_bench.dataset import EpisodeBatch
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.networks import (QMixer, RNNAgent, agent_input_dim, build_agent_inputs,
                                         hard_update, make_target, masked_argmax, masked_mean,
                                         td_lambda_targets)

from .base import QMIXBackboneConfig

__all__ = ["QMIXBackbone", "QMIX_CHECKPOINT", "double_q_values", "qmix_td_loss"]

#: What a QMIX learner keeps in its checkpoints (the keys of :meth:`QMIXBackbone.state_dict`).
QMIX_CHECKPOINT: tuple[str, ...] = ("agent", "mixer", "target_agent", "target_mixer", "optimiser")


# =================================================================================================
# Loss functions (pure)
# =================================================================================================
def double_q_values(q: torch.Tensor, target_q: torch.Tensor,
                    avail: torch.Tensor | None) -> torch.Tensor:
    """Double-Q bootstrap: the target network's Q at the online network's greedy action.

    Args:
        q: (B, T+1, n, A) online agent Q-values.
        target_q: (B, T+1, n, A) target agent Q-values.
        avail: (B, T+1, n, A) bool, or None.

    Returns:
        (B, T+1, n) per-agent bootstrap values.
    """
    greedy = masked_argmax(q.detach(), avail)                                      # (B, T+1, n)
    return target_q.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)


def qmix_td_loss(q_tot: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0.5 * masked mean squared TD error (PyMARL's scale).

    Args:
        q_tot: (B, T) mixed Q of the actions taken.
        targets: (B, T) TD(lambda) targets (not differentiated).
        mask: (B, T) true on real steps.
    """
    return 0.5 * masked_mean((q_tot - targets.detach()) ** 2, mask)


# =================================================================================================
# Networks, targets, optimiser
# =================================================================================================
class QMIXBackbone:
    """The agent network, the mixer, their frozen targets and one Adam over both.

    Args:
        agent: the recurrent agent network (``unroll(inputs) -> (B, T+1, n, A)``).
        mixer: ``mixer(agent_qs (..., n), state (..., S)) -> Q_tot (...)``.
        lr: Adam learning rate.
        grad_clip: gradient-norm clip over agent network and mixer together.
        gamma: discount.
        td_lambda: lambda of the TD(lambda) targets.
    """

    def __init__(self, agent: nn.Module, mixer: nn.Module, lr: float, grad_clip: float,
                 gamma: float, td_lambda: float):
        self.agent, self.mixer = agent, mixer
        self.target_agent, self.target_mixer = make_target(agent), make_target(mixer)
        self.params = [*agent.parameters(), *mixer.parameters()]
        self.optimiser = torch.optim.Adam(self.params, lr=lr)
        self.grad_clip, self.gamma, self.td_lambda = grad_clip, gamma, td_lambda

    @classmethod
    def from_config(cls, info: TaskInfo, cfg: QMIXBackboneConfig) -> "QMIXBackbone":
        """PyMARL's GRU agent network and QMIX mixer sized by ``cfg``, on ``cfg.device``."""
        device = torch.device(cfg.device)
        n, n_actions = info.n_agents, info.n_actions
        agent = RNNAgent(agent_input_dim(info.obs_dim, n_actions, n), n_actions,
                         cfg.hidden_dim).to(device)
        mixer = QMixer(n, info.state_dim, cfg.mixing_dim, cfg.hypernet_dim).to(device)
        return cls(agent, mixer, cfg.lr, cfg.grad_clip, cfg.gamma, cfg.td_lambda)

    @torch.no_grad()
    def td_targets(self, inputs: torch.Tensor, agent_qs: torch.Tensor,
                   avail: torch.Tensor | None, state: torch.Tensor, rewards: torch.Tensor,
                   terminals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Double-Q TD(lambda) targets: online argmax, target networks' value.

        Args:
            inputs: (B, T+1, n, in) the agent network's inputs.
            agent_qs: (B, T+1, n, A) the online network's Q on ``inputs``.
            avail: (B, T+1, n, A) bool, or None.
            state: (B, T+1, S) global states.
            rewards, terminals, mask: (B, T).

        Returns:
            (B, T) targets.
        """
        target_qs = self.target_agent.unroll(inputs)                              # (B,T+1,n,A)
        next_values = self.target_mixer(double_q_values(agent_qs, target_qs, avail),
                                        state)                                    # (B, T+1)
        return td_lambda_targets(rewards, terminals, mask, next_values, self.gamma,
                                 self.td_lambda)

    def unroll_with_targets(self, batch: EpisodeBatch, n_actions: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The agent network on an episode batch of the dataset's sampler, and its targets.

        Returns:
            inputs (B, T+1, n, in), the online Q (B, T+1, n, A) and the double-Q TD(lambda)
            targets (B, T).
        """
        actions = batch.actions.long()                                            # (B, T, n)
        inputs = build_agent_inputs(batch.observations, actions, n_actions)
        agent_qs = self.agent.unroll(inputs)                                      # (B,T+1,n,A)
        targets = self.td_targets(inputs, agent_qs, batch.avail_actions, batch.states,
                                  batch.rewards, batch.terminals, batch.mask)      # (B, T)
        return inputs, agent_qs, targets

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """One Adam step on ``loss`` after clipping the gradient norm; returns the norm."""
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimiser.step()
        return grad_norm

    def update_targets(self) -> None:
        """Hard copy of the agent network and mixer into their targets."""
        hard_update(self.target_agent, self.agent)
        hard_update(self.target_mixer, self.mixer)

    def parts(self) -> dict[str, Any]:
        """:data:`QMIX_CHECKPOINT` name -> module or optimiser."""
        return {"agent": self.agent, "mixer": self.mixer, "target_agent": self.target_agent,
                "target_mixer": self.target_mixer, "optimiser": self.optimiser}

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts().items():
            part.load_state_dict(state[name])
