"""Continuous MACQL (baselines/macql_continuous.py): joint sampling, schedule, a smoke run."""
import math

import numpy as np
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.cfcql import counterfactual_joint_actions
from baselines.macql_continuous import (PER_DATASET, MACQLContinuous, centralised_actor_loss,
                                        joint_action_samples)
from marl_offline_bench.registry import DATASETS

TINY = dict(batch_size=32, hidden_dim=16, num_sampled_actions=4)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_joint_sampling_changes_every_agents_action_at_once():
    data = (torch.rand(16, 3, 3) * 2 - 1) * MASK             # dataset actions, 3 agents
    policy = (torch.rand(16, 3, 3) * 2 - 1) * MASK
    joint, log_density = joint_action_samples(policy, policy, 5, 0.2, MASK)
    assert joint.shape == (16, 15, 9) and log_density.shape == (16, 15)
    per_agent = joint.reshape(16, 15, 3, 3)
    moved = (per_agent != data.unsqueeze(1)).any(-1)                       # (B, K, n)
    assert moved.all(), "a joint sample kept some agent's dataset action"
    assert (per_agent[..., 1, 2] == 0).all() and (per_agent[..., 2, 1:] == 0).all()
    # the joint density is the product of the agents': uniform ones are 2^-(sum of real dims)
    torch.testing.assert_close(log_density[:, :5], torch.full((16, 5), -6 * math.log(2.0)))
    # CFCQL's counterfactual actions, by contrast, move one agent per joint action
    cf = counterfactual_joint_actions(data, per_agent[:, :5].transpose(1, 2)).reshape(
        16, 3, 5, 3, 3)
    assert ((cf != data[:, None, None]).any(-1).sum(-1) == 1).all()


def test_actor_loss_is_the_centralised_policy_gradient():
    q1 = torch.tensor([1.0, 3.0])
    policy = torch.zeros(2, 3, 3)
    torch.testing.assert_close(centralised_actor_loss(q1, policy, MASK, 1e-3), torch.tensor(-2.0))
    policy[:, :, 0] = 1.0                                     # every agent at 1 in one real dim
    penalty = 1e-3 * (1 / 3 + 1 / 2 + 1)
    torch.testing.assert_close(centralised_actor_loss(q1, policy, MASK, 1e-3),
                               torch.tensor(-2.0 + penalty))


def test_round_schedule(tiny_continuous):
    info, data = tiny_continuous(action_dims=(2, 1))
    algo = MACQLContinuous(info, data, MACQLContinuous.Config(critic_updates_per_round=3, **TINY))
    target = [p.clone() for p in algo.target_critic.parameters()]
    seen = [("actor_loss" in algo.update()) for _ in range(3)]
    assert seen == [True, False, False]
    assert not all(torch.equal(a, b) for a, b in zip(target, algo.target_critic.parameters()))
    assert "actor_loss" in algo.update()


def test_per_dataset_table_follows_the_code():
    assert set(PER_DATASET) <= set(DATASETS)
    assert MACQLContinuous.config_for("mpe-pp-medium-v0").alpha == 0.6
    cheetah = MACQLContinuous.config_for("mamujoco-halfcheetah_2x3-medium-replay-v0")
    assert (cheetah.alpha, cheetah.batch_size, cheetah.gamma) == (0.4, 256, 0.95)


def test_smoke_on_mpe_cn(mpe_cn_tiny):
    info, data = mpe_cn_tiny
    algo = build_algorithm("macql", info, data, **TINY)
    assert isinstance(algo, MACQLContinuous) and algo.config.alpha == 0.5
    for _ in range(20):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "mpe-cn", episodes=4)
    assert len(result.returns) == 4 and np.isfinite(result.mean_return)
