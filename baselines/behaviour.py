"""Behaviour models beta_i fitted to a dataset, for learners that measure distance from the data.

* :class:`DiscreteBehaviour`: beta_i(a_i | history_i) as a masked softmax of PyMARL's shared GRU
  agent network, fitted by cross-entropy on the dataset's actions (the BC network of the CFCQL
  code, ``cq_learner.train_behaviour``).
* :class:`VAEBehaviour`: one conditional VAE on (s, joint action), after Wu et al. 2022 (SPOT,
  code: thuml/SPOT ``vae.py``, reused by CFCQL's ``continuous/utils/vae_class.py``), read per
  agent as the CFCQL code reads it: log beta_i(a_i | s) is estimated by importance sampling with
  L latent samples from the joint encoder, on agent i's decoder dimensions. The decoder factorises
  given z, so this estimates agent i's marginal, the density the paper's lambda uses; one VAE for
  all agents costs about a quarter of one VAE per agent on World.

Both fit themselves with :meth:`fit` from a :class:`~marl_offline_bench.MARLDataset` for a given
number of gradient steps (the reference code's early stopping is left to the caller's step count),
through the fit store: a fit already made the same way is loaded, one cut off part-way resumes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marl_offline_bench import Progress, no_progress
from marl_offline_bench.dataset import BatchSampler, MARLDataset
from marl_offline_bench.fits import StoredFit, fit_by_adam
from marl_offline_bench.networks import (RNNAgent, agent_input_dim, build_agent_inputs,
                                         masked_fill_unavailable, masked_mean, mlp)

__all__ = [
    "DiscreteBehaviour", "VAEBehaviour", "masked_log_softmax", "behaviour_cross_entropy",
]


# -- discrete -------------------------------------------------------------------------------------
def masked_log_softmax(logits: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """log softmax over the last axis with unavailable entries pushed to about -1e10."""
    return F.log_softmax(masked_fill_unavailable(logits, avail), dim=-1)


def behaviour_cross_entropy(log_probs: torch.Tensor, actions: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
    """Masked negative log-likelihood of the dataset actions.

    Args:
        log_probs: (B, T, n, A) log beta.
        actions: (B, T, n) int64.
        mask: (B, T) true on real steps.
    """
    taken = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)    # (B, T, n)
    return -masked_mean(taken, mask.unsqueeze(-1))


class DiscreteBehaviour(nn.Module):
    """beta_i(a_i | o_i^{<=t}) from PyMARL's GRU agent network, masked over available actions."""

    def __init__(self, obs_dim: int, n_agents: int, n_actions: int, hidden_dim: int = 64):
        super().__init__()
        self.n_actions = n_actions
        self.net = RNNAgent(agent_input_dim(obs_dim, n_actions, n_agents), n_actions, hidden_dim)

    def log_probs(self, inputs: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
        """log beta for every step of padded episodes.

        Args:
            inputs: (B, T, n, input_dim) from :func:`~baselines.networks.build_agent_inputs`
                (its last step dropped when only the T acting steps matter).
            avail: (B, T, n, A) bool, or None.

        Returns:
            (B, T, n, A) log-probabilities; about -1e10 on unavailable actions.
        """
        return masked_log_softmax(self.net.unroll(inputs), avail)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy on an episode batch from ``dataset.sampler(kind="episodes")``."""
        inputs = build_agent_inputs(batch.observations, batch.actions, self.n_actions)[:, :-1]
        avail = batch.avail_actions
        log_probs = self.log_probs(inputs, None if avail is None else avail[:, :-1])
        return behaviour_cross_entropy(log_probs, batch.actions, batch.mask)

    def fit(self, dataset: MARLDataset, steps: int, batch_size: int = 32, lr: float = 1e-3,
            grad_clip: float = 10.0, seed: int = 0, device: str = "cpu",
            progress: Progress = no_progress) -> float:
        """Train by Adam for ``steps`` updates on episode batches, or load the same fit from the
        fit store (:mod:`marl_offline_bench.fits`); returns the last loss."""
        sampler = dataset.sampler(batch_size, kind="episodes", seed=seed, device=device)
        store = StoredFit.for_model(
            "behaviour-model", self, dataset.card.get("sha256"),
            {"steps": steps, "batch_size": batch_size, "lr": lr, "grad_clip": grad_clip,
             "seed": seed, "device": device}, code=(BatchSampler, RNNAgent))
        return fit_by_adam(self, self.loss, sampler, steps, lr, progress, "behaviour model",
                           grad_clip, store)


# -- continuous -----------------------------------------------------------------------------------
#: States per decoder pass of :meth:`VAEBehaviour.log_prob` on a CPU: 32 states x 20 draws x 750
#: hidden units in float32 is 1.9 MB, within reach of a core's cache, where a batch's 61 MB is not.
STATES_PER_CHUNK = 32


class VAEBehaviour(nn.Module):
    """One conditional VAE on (s, joint action), read per agent, as the CFCQL code does.

    Encoder q(z | s, a) and decoder p(a | s, z) are MLPs with 2 hidden ReLU layers; the decoder's
    mean is squashed by tanh into the action box and its standard deviation is fixed at
    sqrt(kl_weight / 4), which makes the ELBO below proportional to the Gaussian likelihood (SPOT).
    Given z the decoder's dimensions are independent, so agent i's marginal beta_i(a_i | s) is
    the integral of p(a_i | s, z) p(z) over z alone: :meth:`log_prob` estimates it by importance
    sampling with q(z | s, a) as the proposal (any proposal with full support is unbiased for it).
    Padded action dimensions (``TaskInfo.action_mask``) are zero in and ignored everywhere.
    """

    def __init__(self, state_dim: int, action_mask: np.ndarray, hidden_dim: int = 750,
                 latent_dim: int | None = None, kl_weight: float = 0.5):
        super().__init__()
        action_mask = np.asarray(action_mask, bool)
        n_agents, action_dim = action_mask.shape
        joint_dim = n_agents * action_dim
        self.latent_dim = latent_dim or 2 * int(action_mask.sum())   # the code: 2 x joint action
        self.kl_weight = kl_weight
        self.encoder = mlp(state_dim + joint_dim, 2 * self.latent_dim, hidden_dim)
        # The decoder's first layer split into its state and latent parts, so that the state's
        # share is computed once for all L draws; initialised as nn.Linear(state + latent, hidden).
        bound = 1.0 / math.sqrt(state_dim + self.latent_dim)
        self.decoder_state_in = nn.Linear(state_dim, hidden_dim)
        self.decoder_latent_in = nn.Linear(self.latent_dim, hidden_dim, bias=False)
        for param in (self.decoder_state_in.weight, self.decoder_state_in.bias,
                      self.decoder_latent_in.weight):
            nn.init.uniform_(param, -bound, bound)
        self.decoder = mlp(hidden_dim, joint_dim, hidden_dim, n_hidden=1)
        self.register_buffer("action_mask", torch.as_tensor(action_mask, dtype=torch.float32))

    def encode(self, state: torch.Tensor,
               actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state (..., S), actions (..., n, d) -> mean, std of q(z | s, a), each (..., Z)."""
        joint = (actions * self.action_mask).flatten(-2)
        mean, log_std = self.encoder(torch.cat([state, joint], -1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(self, state: torch.Tensor, z: torch.Tensor,
               hidden_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """state (..., S), z (..., L, Z): L draws per state -> decoder means (..., L, n, d),
        zero where padded. ``hidden_dtype`` is the precision of the two hidden layers over the
        draws, the bulk of the work (bfloat16 for inference only: see :meth:`log_prob`); the
        output layer stays float32."""
        dtype = hidden_dtype    # .to(float32) of float32 is the tensor itself: one path for both
        hidden, _, head = self.decoder
        # In place where autograd allows it (no backward reads these outputs): the hidden layers
        # are (..., L, hidden) and a fresh one per step costs as much as the step's arithmetic.
        h = F.linear(z.to(dtype), self.decoder_latent_in.weight.to(dtype))
        h += self.decoder_state_in(state).unsqueeze(-2).to(dtype)
        h = F.linear(h.relu_(), hidden.weight.to(dtype), hidden.bias.to(dtype)).relu_()
        out = head(h.float()).unflatten(-1, self.action_mask.shape)
        return torch.tanh(out) * self.action_mask

    def elbo_loss(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """SPOT's training loss: reconstruction MSE + kl_weight * KL(q(z|s,a) || N(0, I)),
        each averaged over its real dimensions and the batch."""
        mean, std = self.encode(state, actions)
        z = mean + std * torch.randn_like(std)
        recon = self.decode(state, z.unsqueeze(-2)).squeeze(-3)
        recon_loss = ((recon - actions) ** 2 * self.action_mask).sum((-2, -1)) \
            / self.action_mask.sum()
        kl = -0.5 * (1 + 2 * std.log() - mean.pow(2) - std.pow(2)).mean(-1)
        return (recon_loss + self.kl_weight * kl).mean()

    def log_prob(self, state: torch.Tensor, actions: torch.Tensor,
                 num_samples: int = 20,
                 hidden_dtype: torch.dtype = torch.float32,
                 states_per_chunk: int | None = None) -> torch.Tensor:
        """Importance-sampled log beta_i(a_i | s) with L = num_samples draws of z ~ q(z | s, a).

        log (1/L) sum_l p(a_i | s, z_l) p(z_l) / q(z_l | s, a), the same draws for every agent.

        Args:
            state: (B, S).
            actions: (B, n, d).
            num_samples: L.
            hidden_dtype: precision of the decoder's hidden layers over the B x L draws. In
                bfloat16 (float32 accumulation, all else float32) the estimate is faster on a
                CPU with native bfloat16 products and its error is far below the estimator's
                own noise over draws of z: ``benchmarks/vae_precision.py`` measures both.
            states_per_chunk: the draws go through the decoder this many states at a time;
                by default :data:`STATES_PER_CHUNK` on a CPU, where the hidden layers then stay
                in the core's cache (``benchmarks/vae_decode_speed.py`` measures what it buys),
                and the whole batch on a GPU. The values do not depend on it but for rounding.

        Returns:
            (B, n).
        """
        mean, std = self.encode(state, actions)                                  # (B, Z)
        z = mean.unsqueeze(1) + std.unsqueeze(1) * torch.randn(
            mean.shape[0], num_samples, mean.shape[-1], device=mean.device)       # (B, L, Z)
        chunk = states_per_chunk or (STATES_PER_CHUNK if state.device.type == "cpu"
                                     else len(state))
        decoded = torch.cat([self.decode(state[i:i + chunk], z[i:i + chunk], hidden_dtype)
                             for i in range(0, len(state), chunk)])             # (B, L, n, d)
        dec_std = math.sqrt(self.kl_weight / 4.0)
        log_p_action = (_normal_log_prob(actions.unsqueeze(1), decoded, dec_std)
                        * self.action_mask).sum(-1)                              # (B, L, n)
        log_p_z = _normal_log_prob(z, 0.0, 1.0).sum(-1)
        log_q_z = _normal_log_prob(z, mean.unsqueeze(1), std.unsqueeze(1)).sum(-1)
        weights = log_p_action + (log_p_z - log_q_z).unsqueeze(-1)               # (B, L, n)
        return weights.logsumexp(dim=1) - math.log(num_samples)

    def fit(self, dataset: MARLDataset, steps: int, batch_size: int = 256, lr: float = 1e-4,
            seed: int = 0, device: str = "cpu", progress: Progress = no_progress) -> float:
        """Train by Adam for ``steps`` updates on transition batches, or load the same fit from
        the fit store (:mod:`marl_offline_bench.fits`); returns the last loss."""
        sampler = dataset.sampler(batch_size, kind="transitions", seed=seed, device=device)
        store = StoredFit.for_model(
            "behaviour-vae", self, dataset.card.get("sha256"),
            {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device},
            code=(BatchSampler, mlp))
        return fit_by_adam(self, lambda batch: self.elbo_loss(batch.states, batch.actions),
                           sampler, steps, lr, progress, "behaviour VAE", store=store)


def _normal_log_prob(x: torch.Tensor, mean, std) -> torch.Tensor:
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    return -((x - mean) ** 2) / (2 * std ** 2) - std.log() - 0.5 * math.log(2 * math.pi)
