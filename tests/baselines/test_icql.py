"""ICQL (baselines/icql.py): the CQL(H) pieces, independent critics, conservatism, a smoke run."""
import math

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.icql import (ICQL, PER_DATASET, AgentwiseTwinCritic, cql_action_samples,
                            cql_h_penalty, gaussian_action_samples,
                            uniform_action_samples)
from marl_offline_bench.registry import DATASETS

TINY = dict(batch_size=32, hidden_dim=16, num_sampled_actions=4)


MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])       # agents with 3 and 2 action dims


def test_samples_stay_in_the_box_with_their_log_densities():
    samples, log_density = uniform_action_samples(5, 7, MASK)
    assert samples.shape == (5, 7, 2, 3) and log_density.shape == (5, 7, 2)
    assert samples.abs().max() <= 1 and (samples[..., 1, 2] == 0).all()
    torch.testing.assert_close(log_density[0, 0], torch.tensor([-3 * math.log(2),
                                                                -2 * math.log(2)]))
    centre = torch.zeros(5, 2, 3)
    drawn, log_p = gaussian_action_samples(centre, 7, 0.2, MASK)
    expected = torch.distributions.Normal(0.0, 0.2).log_prob(drawn)
    torch.testing.assert_close(log_p, (expected * MASK).sum(-1))    # unclipped draws here
    both, log_both = cql_action_samples(centre, centre, 4, 0.2, MASK, policy_samples=True)
    assert both.shape == (5, 12, 2, 3) and log_both.shape == (5, 12, 2)
    assert cql_action_samples(centre, centre, 4, 0.2, MASK, policy_samples=False)[0].shape[1] == 4


def test_penalty_is_logsumexp_minus_data_value():
    q_sampled, log_density, q_data = torch.zeros(2, 3, 4, 2), torch.zeros(3, 4, 2), \
        torch.zeros(2, 3, 2)
    base = cql_h_penalty(q_sampled, log_density, q_data)
    torch.testing.assert_close(base, torch.tensor(2 * 2 * math.log(4)))   # twins x agents
    assert cql_h_penalty(q_sampled, log_density + 1.0, q_data) < base    # denser source: less
    torch.testing.assert_close(cql_h_penalty(q_sampled, log_density, q_data + 1.0), base - 4)
    # each agent's term depends only on its own Q-values
    q = torch.zeros(2, 3, 4, 2, requires_grad=True)
    cql_h_penalty(q, log_density, q_data).backward()
    torch.testing.assert_close(q.grad, torch.full_like(q, 1 / (3 * 4)))


def test_each_agent_has_its_own_critic():
    critic = AgentwiseTwinCritic(2, 4, 3, 8)
    obs, actions = torch.randn(5, 2, 4), torch.rand(5, 2, 3)
    q = critic(obs, actions)
    assert q.shape == (2, 5, 2)
    torch.testing.assert_close(critic.q1(obs, actions), q[0])
    obs2 = obs.clone()
    obs2[:, 1] += 1.0                                     # agent 1's input changes...
    torch.testing.assert_close(critic(obs2, actions)[:, :, 0], q[:, :, 0])   # ...agent 0's Q not


def _q_gap(algo, data):
    """mean over agents and twins of Q_i(o_i, a_D) - Q_i(o_i, uniform a), on dataset rows."""
    obs = torch.as_tensor(data["observations"][:64])
    actions = torch.as_tensor(data["actions"][:64])
    sampled, _ = uniform_action_samples(64, 16, algo.action_mask)
    with torch.no_grad():
        q_data = algo.critic(obs, actions)                                     # (2, B, n)
        q_unseen = algo.critic(obs.unsqueeze(1).expand(-1, 16, -1, -1), sampled).mean(2)
    return (q_data - q_unseen).mean((0, 1))                                  # (n,)


def test_cql_pushes_sampled_actions_below_dataset_actions(tiny_continuous):
    info, data = tiny_continuous(fixed_action=0.5)
    gaps = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        algo = ICQL(info, data, ICQL.Config(alpha=alpha, **TINY))
        for _ in range(120):
            metrics = algo.update()
        assert np.isfinite(list(metrics.values())).all()
        gaps[alpha] = _q_gap(algo, data)
    assert (gaps[1.0] > 0.25).all(), f"sampled actions not pushed down: {gaps[1.0]}"
    assert (gaps[1.0] > gaps[0.0] + 0.2).all(), f"no effect of the CQL term: {gaps}"


def test_per_dataset_table_holds_the_codes_alpha():
    assert set(PER_DATASET) <= set(DATASETS)
    assert ICQL.config_for("mpe-cn-medium-v0").alpha == 5.0
    assert ICQL.config_for("mpe-world-medium-replay-v0").alpha == 1.0
    cheetah = ICQL.config_for("mamujoco-halfcheetah_2x3-random-v0")
    assert (cheetah.alpha, cheetah.hidden_dim, cheetah.target_rate) == (1.0, 256, 0.005)
    assert ICQL.config_for("mpe-cn-mixed-v0").alpha == 1.0
    with pytest.raises(ValueError, match="num_sampled_actions"):
        ICQL.Config(num_sampled_actions=0)


def test_smoke_on_mpe_cn(mpe_cn_tiny):
    info, data = mpe_cn_tiny
    algo = build_algorithm("icql", info, data, **TINY)
    assert isinstance(algo, ICQL) and algo.config.alpha == 0.5          # mpe-cn random
    for _ in range(20):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all() and "actor_loss" in metrics
    result = mob.evaluate_policy(algo.policy(), "mpe-cn", episodes=4)
    assert len(result.returns) == 4 and np.isfinite(result.mean_return)
