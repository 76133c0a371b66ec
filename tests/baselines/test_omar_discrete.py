"""Tests of baselines/omar_discrete.py: rectification target, losses, training, resuming."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from marl_offline_bench.networks import UNAVAILABLE_Q, build_agent_inputs, td_lambda_targets
from baselines.omar_discrete import (PER_DATASET, OMARDiscrete, independent_cql_penalty, omar_actor_loss,
                                     per_agent_td_lambda_targets, rectification_target)
from marl_offline_bench.envs import task_info
from tests.baselines.test_cfcql import discrete_dataset, discrete_task

N2 = "equal_line-n2-random-v0"
TINY = dict(batch_size=8, hidden_dim=16)


@pytest.fixture
def equal_line(minari_root):
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return mob.load(N2, build=False, progress=False)


# -- rectification target -------------------------------------------------------------------------
def test_rectification_target_is_the_argmax_over_available_actions():
    g = torch.Generator().manual_seed(0)
    qs = torch.randn(4, 3, 2, 6, generator=g)                               # (B, T, n, A)
    avail = torch.rand(4, 3, 2, 6, generator=g) > 0.4
    avail[..., 5] = True
    qs[..., 0] = 100.0                                   # the overall best, often unavailable
    target = rectification_target(qs, avail)
    for index in np.ndindex(4, 3, 2):
        allowed = avail[index].nonzero().squeeze(-1)
        best = allowed[qs[index][allowed].argmax()]
        assert target[index] == best
    assert avail.gather(-1, target.unsqueeze(-1)).all()
    assert torch.equal(rectification_target(qs, None), qs.argmax(-1))


def test_actor_loss_mixes_expected_q_and_cross_entropy_to_the_target():
    logits = torch.randn(3, 4, 2, 5, requires_grad=True)
    qs = torch.randn(3, 4, 2, 5)
    avail = torch.ones(3, 4, 2, 5, dtype=torch.bool)
    avail[..., 4] = False
    mask = torch.ones(3, 4, dtype=torch.bool)
    target = rectification_target(qs, avail)
    pi = torch.softmax(logits.masked_fill(~avail, UNAVAILABLE_Q), -1)
    expected_q = (pi * qs).sum(-1).mean()
    ce = -torch.log(pi.gather(-1, target.unsqueeze(-1))).mean()
    for coe in (0.0, 0.5, 1.0):
        loss, q_term, ce_term = omar_actor_loss(logits, qs, target, avail, mask, coe)
        torch.testing.assert_close(q_term, expected_q)
        torch.testing.assert_close(ce_term, ce)
        torch.testing.assert_close(loss, -(1 - coe) * expected_q + coe * ce)
    # pure rectification: a gradient step raises the target action's probability
    loss, _, _ = omar_actor_loss(logits, qs, target, avail, mask, 1.0)
    loss.backward()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
        new_pi = torch.softmax(stepped.masked_fill(~avail, UNAVAILABLE_Q), -1)
    assert (new_pi.gather(-1, target.unsqueeze(-1)) > pi.gather(-1, target.unsqueeze(-1))).all()


def test_cql_penalty_ignores_unavailable_actions():
    qs = torch.randn(2, 3, 2, 4)
    actions = torch.randint(0, 3, (2, 3, 2))
    avail = torch.ones(2, 3, 2, 4, dtype=torch.bool)
    avail[..., 3] = False
    mask = torch.tensor([[True, True, True], [True, False, False]])
    penalty = independent_cql_penalty(qs, actions, avail, mask)
    taken = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    expected = (qs[..., :3].logsumexp(-1) - taken)[mask].mean()
    torch.testing.assert_close(penalty, expected)
    qs[..., 3] = 1e4                                          # an unavailable action's value
    torch.testing.assert_close(independent_cql_penalty(qs, actions, avail, mask), expected)


def test_per_agent_targets_are_td_lambda_per_agent_on_the_team_reward():
    rewards, terminals = torch.randn(3, 5), torch.zeros(3, 5, dtype=torch.bool)
    terminals[0, 4] = True
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    values = torch.randn(3, 6, 2)
    targets = per_agent_td_lambda_targets(rewards, terminals, mask, values, 0.9, 0.6)
    for i in range(2):
        torch.testing.assert_close(targets[..., i], td_lambda_targets(
            rewards, terminals, mask, values[..., i], 0.9, 0.6))


# -- training on a small fixed dataset ------------------------------------------------------------
def test_critics_prefer_the_dataset_actions_and_the_actor_follows():
    info = discrete_task(n_agents=2, n_actions=5)
    data = discrete_dataset(info, fixed_actions=(1, 3), unavailable=(1, 4))
    algo = OMARDiscrete(info, data, OMARDiscrete.Config(batch_size=4, hidden_dim=16, critic_lr=3e-3,
                                                        actor_lr=3e-3))
    for _ in range(80):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    batch = next(data.sampler(6, kind="episodes", seed=3))
    with torch.no_grad():
        inputs = build_agent_inputs(batch.observations, batch.actions, 5)
        qs = algo.critic.unroll(inputs)[:, :-1][batch.mask]             # (steps, n, A)
        logits = algo.actor.unroll(inputs)[:, :-1][batch.mask]
    data_actions = torch.tensor([1, 3])
    assert (qs.argmax(-1) == data_actions).all(), "the CQL critic prefers an unseen action"
    assert (logits.argmax(-1) == data_actions).all(), "the actor does not follow the critic"


# -- end to end -----------------------------------------------------------------------------------
def test_smoke_on_equal_line(equal_line):
    info = task_info("equal_line-n2")
    algo = build_algorithm("omar", info, equal_line, **TINY)
    assert isinstance(algo, OMARDiscrete)
    assert (algo.config.cql_alpha, algo.config.omar_coe) == (5.0, 0.5)
    for _ in range(20):
        metrics = algo.update()
    assert {"td_loss", "cql_loss", "actor_loss", "rectification_ce"} <= set(metrics)
    assert np.isfinite(list(metrics.values())).all()
    result = mob.evaluate_policy(algo.policy(), "equal_line-n2", episodes=4)
    assert np.isfinite(result.mean_return)


def test_config_rejects_bad_values_and_has_no_per_dataset_table():
    assert PER_DATASET == {}
    with pytest.raises(ValueError, match="omar_coe"):
        OMARDiscrete.Config(omar_coe=1.5)
