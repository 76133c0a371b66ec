"""QMIX behaviour trainer: smoke run with checkpoint and resume, exploration (the TD(lambda)
loss by hand: tests/baselines/test_qmix_backbone.py)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from marl_offline_bench.policies import EpsilonGreedyPolicy
from collection.qmix import QMIXTrainer, build_agent, config_for, epsilon_at
from marl_offline_bench.envs import task_info

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow


def tiny_config(**overrides):
    settings = dict(env_steps=800, num_envs=4, buffer_size=32, batch_size=4,
                    eval_interval_steps=400, eval_episodes=4, target_update_episodes=8,
                    snapshot_chunk=3)
    return config_for("equal_line-n2", **{**settings, **overrides})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def train(cfg, out, resume=False):
    trainer = QMIXTrainer(cfg, out)
    trainer.train(resume=resume, log=lambda line: None)
    return trainer


def test_smoke_run_writes_checkpoints_and_resumes_exactly(tmp_path):
    cfg = tiny_config()
    first = train(cfg, tmp_path / "run")
    assert first.env_steps == 800 and first.episodes == 16 and first.updates > 0
    with open(tmp_path / "run" / "curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["env_steps"]) for r in rows] == [0, 400, 800]
    checkpoint = torch.load(tmp_path / "run" / rows[-1]["checkpoint"], weights_only=True)
    assert checkpoint["env_steps"] == 800
    assert checkpoint["eval_return"] == pytest.approx(float(rows[-1]["eval_return"]), abs=1e-4)
    assert_same_weights(checkpoint["agent"], weights(first.learner.agent))
    assert (tmp_path / "run" / "snapshots").is_dir()

    # Resuming restores the counters and the weights, then continues where the run stopped.
    resumed = QMIXTrainer(tiny_config(env_steps=1200), tmp_path / "run")
    resumed.load_resume()
    assert (resumed.env_steps, resumed.episodes, resumed.updates) == \
        (first.env_steps, first.episodes, first.updates)
    assert_same_weights(weights(resumed.learner.agent), weights(first.learner.agent))
    assert_same_weights(weights(resumed.learner.target_mixer), weights(first.learner.target_mixer))
    resumed = train(tiny_config(env_steps=1200), tmp_path / "run", resume=True)
    assert resumed.env_steps == 1200

    # ... and lands exactly where an uninterrupted run of the same length does.
    straight = train(tiny_config(env_steps=1200), tmp_path / "straight")
    assert straight.updates == resumed.updates
    assert_same_weights(weights(straight.learner.agent), weights(resumed.learner.agent))
    assert_same_weights(weights(straight.learner.mixer), weights(resumed.learner.mixer))

    with pytest.raises(FileExistsError, match="--resume"):
        QMIXTrainer(cfg, tmp_path / "run").train(log=lambda line: None)


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_never_picks_unavailable_actions(epsilon):
    info = task_info("equal_line-n4")
    torch.manual_seed(0)
    agent = build_agent(info, 16)
    with torch.no_grad():   # make the greedy choice an unavailable action where possible
        agent.fc2.bias.copy_(torch.arange(info.n_actions, dtype=torch.float32) * 100.0)
    policy = EpsilonGreedyPolicy(agent, info.n_agents, info.n_actions, epsilon, seed=1)
    rng = np.random.default_rng(2)
    policy.reset(64)
    picked = []
    for _ in range(20):
        avail = rng.random((64, info.n_agents, info.n_actions)) < 0.3
        avail[..., rng.integers(info.n_actions - 1)] = True   # one available at least
        avail[..., -1] = False                            # the greedy favourite never is
        obs = rng.random((64, info.n_agents, info.obs_dim)).astype(np.float32)
        actions = policy(obs, avail)
        assert actions.shape == (64, info.n_agents)
        assert np.take_along_axis(avail, actions[..., None], -1).all()
        picked.append(actions)
    if epsilon == 1.0:   # uniform exploration reaches many actions
        assert len(np.unique(np.concatenate(picked))) >= info.n_actions - 2


def test_epsilon_schedule_is_linear_then_flat():
    cfg = config_for("equal_line-n2", epsilon_start=1.0, epsilon_finish=0.05,
                     epsilon_anneal_steps=1000)
    assert epsilon_at(cfg, 0) == 1.0
    assert epsilon_at(cfg, 500) == pytest.approx(0.525)
    assert epsilon_at(cfg, 1000) == pytest.approx(0.05)
    assert epsilon_at(cfg, 10**6) == pytest.approx(0.05)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epsilon_finish"):
        config_for("equal_line-n2", epsilon_finish=0.5, epsilon_start=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        config_for("equal_line-n2", batch_size=64, buffer_size=32)
    with pytest.raises(KeyError):
        config_for("equal_line-n3")


@pytest.mark.parametrize("bootstrap", [True, False])
def test_time_limit_is_terminal_only_when_asked(tmp_path, bootstrap):
    trainer = QMIXTrainer(tiny_config(bootstrap_timeouts=bootstrap, state_scale_episodes=0),
                          tmp_path / "run")
    trainer.act()
    terminals = trainer.replay.data.terminals[: trainer.replay.size]
    assert terminals[:, -1].all() == (not bootstrap)
    assert not terminals[:, :-1].any()
    assert torch.equal(trainer.learner.mixer.scale, torch.ones(trainer.info.state_dim))
