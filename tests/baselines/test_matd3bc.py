"""MATD3-BC (baselines/matd3bc.py): TD3+BC's normalised actor loss, TD3's schedule, a smoke run."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.actor_critic_backbone import target_policy_smoothing, twin_td_targets
from baselines.matd3bc import MATD3BC, PER_DATASET, td3bc_actor_loss
from marl_offline_bench.registry import DATASETS

TINY = dict(batch_size=32, hidden_dim=16)


def test_q_part_of_the_actor_loss_ignores_the_scale_of_q():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    policy, data = torch.rand(64, 2, 2) * mask, torch.rand(64, 2, 2) * mask
    q = torch.randn(64) - 3.0
    loss, q_part, bc = td3bc_actor_loss(q, policy, data, mask, alpha=2.5)
    loss10, q_part10, bc10 = td3bc_actor_loss(10 * q, policy, data, mask, alpha=2.5)
    torch.testing.assert_close(q_part10, q_part)
    torch.testing.assert_close(bc10, bc)
    torch.testing.assert_close(q_part, -2.5 * q.mean() / q.abs().mean())
    # lambda is a constant for the gradient: dL/dQ_b = -lambda / B for every b
    q_leaf = q.clone().requires_grad_(True)
    td3bc_actor_loss(q_leaf, policy, data, mask, alpha=2.5)[1].backward()
    torch.testing.assert_close(q_leaf.grad, torch.full_like(q, -2.5 / q.abs().mean().item() / 64))


def test_bc_term_sums_or_averages_over_real_action_dims():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    data = torch.zeros(4, 2, 2)
    policy = torch.zeros(4, 2, 2)
    policy[:, 0, :] = 1.0
    policy[:, 1, 1] = 7.0                                  # a padded dim: never counted
    q = -torch.ones(4)
    _, _, bc_sum = td3bc_actor_loss(q, policy, data, mask, 2.5, reduction="sum")
    _, _, bc_mean = td3bc_actor_loss(q, policy, data, mask, 2.5, reduction="mean")
    assert bc_sum.item() == pytest.approx(2.0) and bc_mean.item() == pytest.approx(2.0 / 3.0)


def test_td3_targets_and_smoothing():
    next_q = torch.tensor([[1.0, 5.0], [2.0, 3.0]])          # (2 twins, B = 2)
    y = twin_td_targets(torch.tensor([1.0, 1.0]), torch.tensor([False, True]), next_q, 0.5)
    torch.testing.assert_close(y, torch.tensor([1.5, 1.0]))
    mask = torch.tensor([[1.0, 0.0]])
    smoothed = target_policy_smoothing(torch.full((1000, 1, 2), 0.9), 0.2, 0.5, mask)
    assert smoothed[..., 0].max() <= 1.0 and smoothed[..., 0].min() >= 0.4 - 1e-6
    assert (smoothed[..., 1] == 0).all()


def test_actors_and_targets_move_every_second_update(tiny_continuous):
    info, data = tiny_continuous()
    algo = MATD3BC(info, data, MATD3BC.Config(**TINY))
    target = [p.clone() for p in algo.target_critic.parameters()]
    first = algo.update()
    assert "actor_loss" not in first
    assert all(torch.equal(a, b) for a, b in zip(target, algo.target_critic.parameters()))
    second = algo.update()
    assert "actor_loss" in second and abs(second["actor_q_part"]) <= 2.5 + 1e-5
    assert not all(torch.equal(a, b) for a, b in zip(target, algo.target_critic.parameters()))


def test_policy_acts_on_normalised_observations(tiny_continuous):
    info, data = tiny_continuous()
    algo = MATD3BC(info, data, MATD3BC.Config(**TINY))
    obs = data.episodes_data.obs
    torch.testing.assert_close(algo.obs_norm.mean, torch.as_tensor(obs.mean(0)), atol=1e-5,
                               rtol=0)
    raw = obs[:5]
    expected = algo.actors((torch.as_tensor(raw) - algo.obs_norm.mean) / algo.obs_norm.std)
    torch.testing.assert_close(torch.as_tensor(algo.policy()(raw)), expected.detach())
    actions = algo.policy()(raw)
    assert (actions[:, 1, 2] == 0).all() and np.abs(actions).max() <= 1.0


def test_per_dataset_table_and_config():
    assert set(PER_DATASET) <= set(DATASETS)
    cheetah = MATD3BC.config_for("mamujoco-halfcheetah_2x3-medium-v0")
    assert (cheetah.hidden_dim, cheetah.batch_size, cheetah.lr, cheetah.gamma) == (256, 256, 3e-4,
                                                                                   0.95)
    assert MATD3BC.config_for("mpe-cn-expert-v0").alpha == 2.5
    with pytest.raises(ValueError, match="bc_reduction"):
        MATD3BC.Config(bc_reduction="max")


def test_smoke_on_mpe_cn(mpe_cn_tiny):
    info, data = mpe_cn_tiny
    algo = build_algorithm("matd3-bc", info, data, **TINY)
    assert isinstance(algo, MATD3BC) and algo.config.gamma == 0.95
    for _ in range(20):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "mpe-cn", episodes=4)
    assert len(result.returns) == 4 and np.isfinite(result.mean_return)
