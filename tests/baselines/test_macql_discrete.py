"""Tests of baselines/macql_discrete.py: the sampled joint-action logsumexp, training, resuming."""
import itertools

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.macql_discrete import (PER_DATASET, MACQLDiscrete, macql_penalty,
                             sample_joint_actions, sampled_joint_q)
from marl_offline_bench.networks import QMixer, build_agent_inputs
from marl_offline_bench.envs import task_info
from tests.baselines.test_cfcql import discrete_dataset, discrete_task

N2 = "equal_line-n2-random-v0"
TINY = dict(batch_size=8, hidden_dim=16, num_sampled_actions=16)


@pytest.fixture
def equal_line(minari_root):
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return mob.load(N2, build=False, progress=False)


# -- the joint-action logsumexp -------------------------------------------------------------------
def test_logsumexp_over_the_whole_joint_space_matches_brute_force():
    n_agents, n_actions, state_dim = 2, 3, 4
    mixer = QMixer(n_agents, state_dim, mixing_dim=8, hypernet_dim=8)
    agent_qs = torch.randn(2, 3, n_agents, n_actions)                         # (B, T, n, A)
    state = torch.randn(2, 3, state_dim)
    data_actions = torch.randint(0, n_actions, (2, 3, n_agents))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    joint_space = torch.tensor(list(itertools.product(range(n_actions), repeat=n_agents)))
    every_joint = joint_space.expand(2, 3, -1, -1)                            # (B, T, 9, n)

    weights = mixer.hyper(state)
    sampled = sampled_joint_q(agent_qs, every_joint, weights)                 # (B, T, 9)
    q_data = sampled_joint_q(agent_qs, data_actions.unsqueeze(-2), weights).squeeze(-1)
    penalty = macql_penalty(sampled, q_data, mask)

    # brute force: the full mixer (hypernetworks included) on each joint action in turn
    per_joint = [mixer(agent_qs.gather(-1, joint.expand(2, 3, -1).unsqueeze(-1)).squeeze(-1),
                       state) for joint in joint_space]
    lse = torch.logsumexp(torch.stack(per_joint, -1), -1)
    q_data_ref = mixer(agent_qs.gather(-1, data_actions.unsqueeze(-1)).squeeze(-1), state)
    torch.testing.assert_close(sampled, torch.stack(per_joint, -1))
    torch.testing.assert_close(q_data, q_data_ref)
    torch.testing.assert_close(penalty, (lse - q_data_ref)[mask].mean())


def test_sampling_is_uniform_over_available_actions_only():
    g = torch.Generator().manual_seed(1)
    avail = torch.rand(4, 3, 6, generator=g) > 0.5                          # (B, n, A)
    avail[..., 2] = True
    avail[0, 0] = False                                                     # no action: all count
    drawn = sample_joint_actions(avail, 3000, generator=g)                  # (B, N, n)
    assert drawn.shape == (4, 3000, 3) and drawn.dtype == torch.int64
    picked = avail.unsqueeze(1).expand(-1, 3000, -1, -1).gather(-1, drawn.unsqueeze(-1))
    picked[0, :, 0] = True                                                  # the empty row
    assert picked.all(), "an unavailable action was sampled"
    for b in range(4):
        for i in range(3):
            allowed = avail[b, i] if avail[b, i].any() else torch.ones(6, dtype=torch.bool)
            counts = torch.bincount(drawn[b, :, i], minlength=6).float()
            assert (counts[~allowed] == 0).all()
            share = counts[allowed] / 3000
            expected = 1.0 / allowed.sum()
            assert (share - expected).abs().max() < 0.05, f"not uniform: {share}"


def test_conservative_term_pushes_other_joint_actions_below_the_data():
    info = discrete_task(n_agents=2, n_actions=4)
    data = discrete_dataset(info, fixed_actions=(1, 3))
    algo = MACQLDiscrete(info, data, MACQLDiscrete.Config(alpha=2.0, batch_size=4, hidden_dim=16,
                                                          num_sampled_actions=16))
    for _ in range(120):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    batch = next(data.sampler(6, kind="episodes", seed=3))
    joint_space = torch.tensor(list(itertools.product(range(4), repeat=2)))    # (16, 2)
    with torch.no_grad():
        inputs = build_agent_inputs(batch.observations, batch.actions, info.n_actions)
        qs = algo.qmix.agent.unroll(inputs)[:, :-1]
        weights = algo.qmix.mixer.hyper(batch.states[:, :-1])
        q_all = sampled_joint_q(qs, joint_space.expand(*qs.shape[:2], -1, -1), weights)
    data_index = 1 * 4 + 3
    others = torch.cat([q_all[..., :data_index], q_all[..., data_index + 1:]], -1)
    margin = (q_all[..., data_index] - others.max(-1).values)[batch.mask]
    assert (margin > 0).all(), f"a joint action outside the data wins: {margin.min():.3f}"


# -- end to end -----------------------------------------------------------------------------------
def test_smoke_on_equal_line(equal_line):
    info = task_info("equal_line-n2")
    algo = build_algorithm("macql", info, equal_line, **TINY)
    assert isinstance(algo, MACQLDiscrete) and algo.config.alpha == 5.0
    for _ in range(20):
        metrics = algo.update()
    assert {"td_loss", "cql_loss", "q_taken_mean"} <= set(metrics)
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "equal_line-n2", episodes=4)
    assert np.isfinite(result.mean_return)


def test_config_rejects_bad_values_and_has_no_per_dataset_table():
    assert PER_DATASET == {}
    with pytest.raises(ValueError, match="num_sampled_actions"):
        MACQLDiscrete.Config(num_sampled_actions=0)
    with pytest.raises(ValueError, match="alpha"):
        MACQLDiscrete.Config(alpha=-1.0)
