"""Tests of baselines/madtkd.py: distillation, causality, acting context, training, resuming."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.madtkd import (PER_DATASET, DecisionTransformer, DecisionTransformerPolicy,
                              MADTKDDiscrete, distillation_loss, policy_kl,
                              returns_to_go)
from marl_offline_bench.networks import UNAVAILABLE_Q
from marl_offline_bench.envs import task_info
from tests.baselines.test_cfcql import (continuous_dataset, continuous_task, discrete_dataset,
                                        discrete_task)

N2 = "equal_line-n2-random-v0"
TINY = dict(batch_size=8, embed_dim=16, n_layer=1, n_head=2, context_length=4, teacher_steps=5)


@pytest.fixture
def equal_line(minari_root):
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return mob.load(N2, build=False, progress=False)


def _model(obs_in=3, action_in=4, n_actions=4, seed=0):
    torch.manual_seed(seed)
    return DecisionTransformer(obs_in, action_in, n_actions, embed_dim=16, n_layer=2, n_head=2,
                               max_timestep=20)


def _sequence(n=5, steps=6, obs_in=3, n_actions=4):
    g = torch.Generator().manual_seed(1)
    rtg = torch.rand(n, steps, generator=g)
    obs = torch.randn(n, steps, obs_in, generator=g)
    actions = torch.nn.functional.one_hot(torch.randint(0, n_actions, (n, steps), generator=g),
                                          n_actions).float()
    timesteps = torch.arange(3, 3 + steps).expand(n, -1)
    return rtg, obs, actions, timesteps


# -- distillation ---------------------------------------------------------------------------------
def test_distillation_loss_is_zero_when_the_student_copies_the_teacher():
    teacher, student = _model(seed=0), _model(seed=1)
    inputs = _sequence()
    avail = torch.ones(5, 6, 4, dtype=torch.bool)
    avail[..., 2] = False
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[3:, 4:] = False
    with torch.no_grad():
        t_logits, t_features = teacher(*inputs)
    s_logits, s_features = student(*inputs)
    before, kl, mse = distillation_loss(s_logits, t_logits, s_features, t_features, avail, valid,
                                        0.5, 0.5)
    assert kl > 0 and mse > 0 and before > 0
    before.backward()
    assert all(p.grad is None for p in teacher.parameters()), "the teacher received a gradient"

    student.load_state_dict(teacher.state_dict())                    # the student copies
    s_logits, s_features = student(*inputs)
    after, kl, mse = distillation_loss(s_logits, t_logits, s_features, t_features, avail, valid,
                                       0.5, 0.5)
    torch.testing.assert_close(after, torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl, torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(mse, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_kl_is_student_to_teacher_over_available_actions():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    avail = torch.ones(4, 5, dtype=torch.bool)
    avail[:, 0] = False
    valid = torch.ones(4, dtype=torch.bool)
    log_s = torch.log_softmax(s.masked_fill(~avail, UNAVAILABLE_Q), -1)[:, 1:]
    log_t = torch.log_softmax(t.masked_fill(~avail, UNAVAILABLE_Q), -1)[:, 1:]
    expected = (log_s.exp() * (log_s - log_t)).sum(-1).mean()
    torch.testing.assert_close(policy_kl(s, t, avail, valid), expected)
    assert not torch.allclose(policy_kl(s, t, avail, valid), policy_kl(t, s, avail, valid))


# -- the transformer ------------------------------------------------------------------------------
def test_prediction_at_t_sees_only_the_past_and_its_own_rtg_and_observation():
    model = _model()
    rtg, obs, actions, timesteps = _sequence()
    logits, _ = model(rtg, obs, actions, timesteps)
    t = 2
    rtg2, obs2, actions2 = rtg.clone(), obs.clone(), actions.clone()
    actions2[:, t:] = actions2[:, t:].flip(-1)                # a_t and later
    obs2[:, t + 1:] += 1.0
    rtg2[:, t + 1:] += 1.0
    changed, _ = model(rtg2, obs2, actions2, timesteps)
    torch.testing.assert_close(changed[:, :t + 1], logits[:, :t + 1])
    obs2[:, t] += 1.0
    assert not torch.allclose(model(rtg2, obs2, actions2, timesteps)[0][:, t], logits[:, t])


def test_returns_to_go_sum_the_remaining_real_rewards():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    torch.testing.assert_close(returns_to_go(rewards, mask),
                               torch.tensor([[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]))


def test_policy_keeps_a_bounded_context_and_respects_available_actions():
    n_agents, n_actions, obs_dim, k = 2, 4, 3, 3
    model = _model(obs_in=obs_dim + n_agents, action_in=n_actions, n_actions=n_actions)
    schedule = torch.linspace(1.0, 0.0, 21)
    policy = DecisionTransformerPolicy(model, n_agents, n_actions, k, schedule)
    policy.reset(3)
    rng = np.random.default_rng(0)
    for step in range(6):
        avail = rng.random((3, n_agents, n_actions)) > 0.5
        avail[..., 1] = True
        actions = policy(rng.normal(size=(3, n_agents, obs_dim)).astype(np.float32), avail)
        assert actions.shape == (3, n_agents)
        assert np.take_along_axis(avail, actions[..., None], -1).all()
        assert len(policy.obs) == min(step + 1, k) and policy.t == step + 1
    policy.reset(2)
    assert policy.obs == [] and policy.t == 0


# -- end to end -----------------------------------------------------------------------------------
def test_student_learns_the_dataset_actions():
    info = discrete_task(n_agents=2, n_actions=5)
    data = discrete_dataset(info, fixed_actions=(1, 3), unavailable=(1, 4))
    algo = MADTKDDiscrete(info, data, MADTKDDiscrete.Config(
        **{**TINY, "batch_size": 4, "teacher_steps": 50, "lr": 5e-3}))
    for _ in range(40):
        metrics = algo.update()
    assert metrics["teacher_loss"] < 0.1
    assert metrics["action_accuracy"] == 1.0


def test_smoke_on_equal_line(round_trip, equal_line):
    info = task_info("equal_line-n2")
    algo = build_algorithm("madtkd", info, equal_line, **TINY)
    assert isinstance(algo, MADTKDDiscrete) and algo.config.kl_weight == 0.5
    best = equal_line.episode_returns().max()
    torch.testing.assert_close(algo.rtg_schedule[0] * algo.return_scale,
                               torch.tensor(best, dtype=torch.float32))
    for _ in range(20):
        metrics = algo.update()
    assert {"action_ce", "kl", "feature_mse", "teacher_loss"} <= set(metrics)
    assert np.isfinite(list(metrics.values())).all()
    state = round_trip(algo.state_dict())
    twin = build_algorithm("madtkd", info, equal_line, **TINY)
    twin.load_state_dict(state)
    assert twin.teacher_ready and twin.updates == 20
    resumed = twin.update()
    torch.set_rng_state(state["torch_rng"])
    assert resumed == algo.update()
    result = mob.evaluate_policy(algo.policy(), "equal_line-n2", episodes=4)
    assert np.isfinite(result.mean_return)


def test_config_table_and_action_space_checks():
    assert PER_DATASET == {}
    with pytest.raises(ValueError, match="n_head"):
        MADTKDDiscrete.Config(embed_dim=10, n_head=3)
    info = continuous_task()
    with pytest.raises(ValueError, match="does not support continuous actions"):
        build_algorithm("madtkd", info, continuous_dataset(info))
