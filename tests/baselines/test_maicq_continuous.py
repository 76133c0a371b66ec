"""Continuous MAICQ (baselines/maicq_continuous.py): batch-softmax weights, decomposed critic,
Gaussian policies, the window sampler (baselines/sampling_continuous.py), a smoke run."""

import numpy as np
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.maicq_continuous import (PER_DATASET, GaussianActors, MAICQContinuous,
                                        MAICQMixer, batch_softmax_weights,
                                        implicit_constraint_values, maicq_actor_loss)
from marl_offline_bench.registry import DATASETS

TINY = dict(batch_size=4, window=10, hidden_dim=16, mixing_dim=8, baseline_samples=3)


def test_batch_softmax_weights_sum_to_one_over_real_steps():
    values = torch.randn(5, 7, 3) * 10                       # (B, T, n)
    mask = torch.rand(5, 7) > 0.3
    mask[0, 0] = True
    weights = batch_softmax_weights(values, mask, beta=0.1)
    torch.testing.assert_close(weights.sum((0, 1)), torch.ones(3))        # per agent
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(batch_softmax_weights(values + 4.0, mask, 0.1), weights)
    uniform = batch_softmax_weights(values, mask, beta=1e9)
    torch.testing.assert_close(uniform[mask], torch.full_like(uniform[mask], 1 / mask.sum()))
    # the critic's values: N softmax(Q / beta_c) Q, about Q itself at a large beta_c
    q = torch.randn(5, 8)
    valid = torch.ones(5, 8, dtype=torch.bool)
    torch.testing.assert_close(implicit_constraint_values(q, valid, 1e9), q)
    lifted = implicit_constraint_values(q, valid, 1.0)
    assert lifted.sum() > q.sum()                           # weight moves to the larger values


def test_actor_loss_weights_dataset_actions_by_advantage():
    log_pi = torch.zeros(4, 5, 2, requires_grad=True)
    advantages = torch.zeros(4, 5, 2)
    advantages[0, 0, 0] = 1.0                                # one clearly better action, agent 0
    k = torch.full((4, 5, 2), 0.5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    losses, weights = maicq_actor_loss(log_pi, advantages, k, mask, beta=0.1)
    losses.sum().backward()
    assert log_pi.grad[0, 0, 0] < log_pi.grad[1, 1, 0] < 0   # the best action is pulled hardest
    torch.testing.assert_close(log_pi.grad[..., 1], torch.full((4, 5), -0.5 / 20))   # A = 0
    torch.testing.assert_close(weights.sum((0, 1)), torch.ones(2))


def test_mixer_weights_are_non_negative_and_sum_to_one():
    mixer = MAICQMixer(3, 6, 8)
    state = torch.randn(10, 6)
    k = mixer.k(state)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum(-1), torch.ones(10))
    qs = torch.randn(10, 3)
    torch.testing.assert_close(mixer(qs, state), (k * qs).sum(-1) + mixer.b(state))


def test_gaussian_policy_log_prob_ignores_padded_dims():
    actors = GaussianActors(4, np.array([[1, 1], [1, 0]], bool), hidden_dim=8)
    obs = torch.randn(6, 2, 4)
    actions = torch.rand(6, 2, 2) * 2 - 1
    mean, std = actors(obs), actors.log_std().exp()
    expected = torch.distributions.Normal(mean, std).log_prob(actions)
    log_pi = actors.log_prob(obs, actions)
    torch.testing.assert_close(log_pi[:, 0], expected[:, 0].sum(-1))
    torch.testing.assert_close(log_pi[:, 1], expected[:, 1, 0])
    samples = actors.sample(obs, 5)
    assert samples.shape == (6, 5, 2, 2) and (samples[..., 1, 1] == 0).all()
    assert samples.abs().max() <= 1 and (mean[:, 1, 1] == 0).all()


def test_window_sampler_stays_inside_episodes(mpe_cn_tiny):
    _, data = mpe_cn_tiny
    e = data.episodes_data
    whole = next(data.sampler(8, kind="windows", window=25, seed=1))       # mpe-cn episodes: 25 steps
    assert whole.mask.all() and not whole.has_action[:, -1].any() and whole.has_action[:, :-1].all()
    first_obs = torch.as_tensor(e.obs[e.episode_starts[:-1] + np.arange(e.n_episodes)])
    assert all((first_obs == o).all(-1).all(-1).any() for o in whole.observations[:, 0])
    piece = next(data.sampler(16, kind="windows", window=10, seed=2))
    obs, next_obs = data["observations"], data["next_observations"]
    for b in range(16):
        row = int(np.flatnonzero((obs == piece.observations[b, 0].numpy()).all((-1, -2)))[0])
        episode_end = e.episode_starts[np.searchsorted(e.episode_starts, row, "right")]
        steps = np.arange(row, row + 10)
        np.testing.assert_array_equal(piece.observations[b, 1:].numpy(), next_obs[steps])
        np.testing.assert_array_equal(piece.actions[b, :10].numpy(), data["actions"][steps])
        assert bool(piece.has_action[b, 10]) == (row + 10 < episode_end)


def test_per_dataset_table():
    assert set(PER_DATASET) <= set(DATASETS)
    cheetah = MAICQContinuous.config_for("mamujoco-halfcheetah_2x3-expert-v0")
    assert (cheetah.batch_size, cheetah.window, cheetah.hidden_dim) == (8, 32, 256)
    mpe = MAICQContinuous.config_for("mpe-world-random-v0")
    assert (mpe.batch_size, mpe.window, mpe.critic_beta, mpe.actor_beta) == (40, 25, 1000.0, 0.1)


def test_smoke_on_mpe_cn(mpe_cn_tiny):
    info, data = mpe_cn_tiny
    algo = build_algorithm("maicq", info, data, **TINY)
    assert isinstance(algo, MAICQContinuous)
    first = algo.update()
    for _ in range(19):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    assert metrics["log_pi_mean"] > first["log_pi_mean"]      # the policies move to the data
    result = mob.evaluate_policy(algo.policy(), "mpe-cn", episodes=4)
    assert len(result.returns) == 4 and np.isfinite(result.mean_return)
