"""Tests of baselines/maicq_discrete.py: batch-softmax weights, decomposed mixer, actor loss, training."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.maicq_discrete import (PER_DATASET, DecomposedMixer, MAICQDiscrete, batch_softmax_weights,
                             implicit_constraint_values, maicq_actor_loss)
from marl_offline_bench.networks import build_agent_inputs
from marl_offline_bench.envs import task_info
from tests.baselines.test_cfcql import discrete_dataset, discrete_task

N2 = "equal_line-n2-random-v0"
TINY = dict(batch_size=8, hidden_dim=16, critic_hidden_dim=32, mixing_dim=8)


@pytest.fixture
def equal_line(minari_root):
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return mob.load(N2, build=False, progress=False)


# -- the implicit constraint's batch softmax ------------------------------------------------------
def test_batch_softmax_weights_sum_to_one_over_valid_entries_of_each_column():
    values = torch.randn(6, 5, 3) * 4
    valid = torch.rand(6, 5, 3) > 0.3
    valid[:, 0, 0] = False                                          # a column with no real entry
    weights = batch_softmax_weights(values, valid, temperature=0.7)
    assert (weights[~valid] == 0).all() and (weights >= 0).all()
    sums = weights.sum(0)
    has_valid = valid.any(0)
    torch.testing.assert_close(sums[has_valid], torch.ones(int(has_valid.sum())))
    assert sums[0, 0] == 0
    # the softmax runs over the batch axis: each column matches its own softmax
    column = values[:, 2, 1][valid[:, 2, 1]]
    torch.testing.assert_close(weights[:, 2, 1][valid[:, 2, 1]], torch.softmax(column / 0.7, 0))
    assert not batch_softmax_weights(values.requires_grad_(), valid, 1.0).requires_grad


def test_temperature_moves_weights_from_uniform_to_the_batch_best():
    values = torch.tensor([[1.0], [3.0], [2.0]])
    valid = torch.ones(3, 1, dtype=torch.bool)
    torch.testing.assert_close(batch_softmax_weights(values, valid, 1e6), torch.full((3, 1), 1 / 3))
    torch.testing.assert_close(batch_softmax_weights(values, valid, 1e-3),
                               torch.tensor([[0.0], [1.0], [0.0]]))
    # with the code's beta_c = 1000 the critic's values are nearly unweighted
    v = torch.randn(8, 4)
    close = implicit_constraint_values(v, torch.ones(8, 4, dtype=torch.bool), 1000.0)
    torch.testing.assert_close(close, v, atol=2e-2, rtol=2e-2)


def test_actor_loss_weights_and_gradient():
    log_pi = torch.log(torch.rand(5, 4, 2) * 0.9 + 0.05).requires_grad_()
    advantages, k = torch.randn(5, 4, 2), torch.rand(5, 4, 2)
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[3:, 2:] = False
    loss, weights = maicq_actor_loss(log_pi, advantages, k, mask, beta_actor=0.5)
    valid = mask.unsqueeze(-1).expand(-1, -1, 2)
    expected = batch_softmax_weights(k * advantages, valid, 0.5)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights.sum(0), torch.ones(4, 2))
    n_valid = valid.sum(0, keepdim=True)
    torch.testing.assert_close(loss, -(n_valid * expected * log_pi)[valid].mean())
    loss.backward()
    assert (log_pi.grad[~valid] == 0).all()
    # the authors' code form: k outside the softmax
    _, code_weights = maicq_actor_loss(log_pi, advantages, k, mask, 0.5, k_inside_softmax=False)
    torch.testing.assert_close(code_weights, k * batch_softmax_weights(advantages, valid, 0.5))
    # equal advantages everywhere: plain behaviour cloning
    flat, _ = maicq_actor_loss(log_pi, torch.zeros(5, 4, 2), torch.ones(5, 4, 2), mask, 0.5)
    torch.testing.assert_close(flat, -log_pi[valid].mean())


def test_decomposed_mixer_is_a_convex_combination_plus_state_bias():
    mixer = DecomposedMixer(n_agents=3, state_dim=4, mixing_dim=8)
    state, qs = torch.randn(7, 4), torch.randn(7, 3)
    k = mixer.k(state)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum(-1), torch.ones(7))
    torch.testing.assert_close(mixer(qs, state), (k * qs).sum(-1) + mixer.b(state))


# -- training on a small fixed dataset ------------------------------------------------------------
def test_actor_learns_the_dataset_actions():
    info = discrete_task(n_agents=2, n_actions=5)
    data = discrete_dataset(info, fixed_actions=(1, 3), unavailable=(1, 4))
    algo = MAICQDiscrete(info, data, MAICQDiscrete.Config(batch_size=4, actor_lr=1e-2, **{
        k: v for k, v in TINY.items() if k != "batch_size"}))
    for _ in range(40):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    batch = next(data.sampler(6, kind="episodes", seed=3))
    with torch.no_grad():
        logits = algo.actor.unroll(build_agent_inputs(batch.observations, batch.actions, 5))[:, :-1]
    greedy = logits.argmax(-1)[batch.mask]
    assert (greedy == torch.tensor([1, 3])).all()


# -- end to end -----------------------------------------------------------------------------------
def test_smoke_on_equal_line(equal_line):
    info = task_info("equal_line-n2")
    algo = build_algorithm("maicq", info, equal_line, **TINY)
    assert isinstance(algo, MAICQDiscrete)
    assert (algo.config.beta_critic, algo.config.beta_actor) == (1000.0, 0.1)
    for _ in range(20):
        metrics = algo.update()
    assert {"critic_loss", "actor_loss", "advantage_mean"} <= set(metrics)
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "equal_line-n2", episodes=4)
    assert np.isfinite(result.mean_return)


def test_config_rejects_bad_values_and_has_no_per_dataset_table():
    assert PER_DATASET == {}
    with pytest.raises(ValueError, match="beta"):
        MAICQDiscrete.Config(beta_actor=0.0)
    with pytest.raises(ValueError, match="td_lambda"):
        MAICQDiscrete.Config(td_lambda=2.0)
