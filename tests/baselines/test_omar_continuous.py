"""Continuous OMAR (baselines/omar_continuous.py): the CEM target, the rectified actor loss, a smoke run."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.icql import independent_actor_loss
from baselines.omar_continuous import (PER_DATASET, OMARContinuous, cem_rectified_actions, omar_actor_loss)
from marl_offline_bench.registry import DATASETS

TINY = dict(batch_size=32, hidden_dim=16, num_sampled_actions=4)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _quadratic(optimum):
    """Q_i(a) = -||a_i - optimum_i||^2 for candidates (B, K, n, d) -> (B, K, n)."""
    return lambda candidates: -(candidates - optimum.unsqueeze(1)).pow(2).sum(-1)


@pytest.mark.parametrize("update,samples,elites,iters", [("softmax", 10, 10, 3),
                                                         ("elites", 20, 5, 2)])
def test_cem_target_beats_the_policy_action(update, samples, elites, iters):
    optimum = (torch.rand(256, 2, 3) * 1.6 - 0.8) * MASK
    policy = (torch.rand(256, 2, 3) * 2 - 1) * MASK
    q_fn = _quadratic(optimum)
    a_hat, q_hat = cem_rectified_actions(q_fn, policy, MASK, iters, samples, elites, 2.0, update)
    q_policy = q_fn(policy.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(q_hat, q_fn(a_hat.unsqueeze(1)).squeeze(1))
    assert (q_hat >= q_policy).all()
    assert (q_hat > q_policy).float().mean() > 0.9, "the search rarely improves on pi(o)"
    assert (q_hat - q_policy).mean() > 0.5
    assert a_hat.abs().max() <= 1 and (a_hat[..., 1, 2] == 0).all()


def test_cem_keeps_the_policy_action_when_it_is_the_optimum():
    policy = (torch.rand(64, 2, 3) * 2 - 1) * MASK
    a_hat, _ = cem_rectified_actions(_quadratic(policy), policy, MASK, 3, 10, 10, 2.0)
    torch.testing.assert_close(a_hat, policy)
    zero_start, _ = cem_rectified_actions(_quadratic(policy), policy, MASK, 3, 10, 10, 2.0,
                                          init_mean=torch.zeros_like(policy))
    torch.testing.assert_close(zero_start, policy)


def test_actor_loss_interpolates_imitation_and_policy_gradient():
    q1 = torch.randn(8, 2)
    policy, a_hat = torch.rand(8, 2, 3) * MASK, torch.rand(8, 2, 3) * MASK
    pure_pg, _ = omar_actor_loss(q1, policy, a_hat, MASK, coe=0.0, action_reg=1e-3)
    torch.testing.assert_close(pure_pg, independent_actor_loss(q1, policy, MASK, 1e-3))
    imitation, mimic = omar_actor_loss(q1, policy, a_hat, MASK, coe=1.0, action_reg=0.0)
    torch.testing.assert_close(imitation, mimic)
    expected = ((policy - a_hat).pow(2) * MASK).sum(-1).mean(0) / MASK.sum(-1)
    torch.testing.assert_close(mimic, expected)
    assert torch.equal(omar_actor_loss(q1 + 5, policy, a_hat, MASK, 1.0, 0.0)[0], imitation)


def test_learners_rectified_actions_score_at_least_the_policys(tiny_continuous):
    info, data = tiny_continuous()
    algo = OMARContinuous(info, data, OMARContinuous.Config(omar_coe=0.7, **TINY))
    for _ in range(10):
        metrics = algo.update()
    assert {"mimic_loss", "q_rectified_mean", "actor_loss"} <= set(metrics)
    obs = torch.as_tensor(data["observations"][:64])
    with torch.no_grad():
        policy = algo.actors(obs)
        a_hat, q_hat = algo.rectified_actions(obs, policy)
        q_policy = algo.critic.q1(obs, policy)
    torch.testing.assert_close(q_hat, algo.critic.q1(obs, a_hat))
    assert (q_hat >= q_policy).all() and (q_hat > q_policy).any()


def test_per_dataset_table_follows_the_code():
    assert set(PER_DATASET) <= set(DATASETS)
    cheetah = OMARContinuous.config_for("mamujoco-halfcheetah_2x3-expert-v0")
    assert (cheetah.cem_iters, cheetah.cem_samples, cheetah.cem_elites, cheetah.cem_update) == (
        2, 20, 5, "elites")
    assert (cheetah.omar_coe, cheetah.alpha, cheetah.hidden_dim) == (0.5, 5.0, 256)
    world = OMARContinuous.config_for("mpe-world-medium-v0")
    assert (world.omar_coe, world.alpha, world.cem_update, world.cem_sigma) == (0.1, 0.5,
                                                                                "softmax", 2.0)
    with pytest.raises(ValueError, match="cem_elites"):
        OMARContinuous.Config(cem_update="elites", cem_samples=4, cem_elites=5)


def test_smoke_on_mpe_cn(mpe_cn_tiny):
    info, data = mpe_cn_tiny
    algo = build_algorithm("omar", info, data, **TINY)
    assert isinstance(algo, OMARContinuous)
    assert (algo.config.omar_coe, algo.config.alpha) == (1.0, 0.5)      # mpe-cn random
    for _ in range(20):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "mpe-cn", episodes=4)
    assert len(result.returns) == 4 and np.isfinite(result.mean_return)
