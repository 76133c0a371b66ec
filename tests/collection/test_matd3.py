"""MATD3 behaviour trainer: resume, snapshot replay, the TD3 pieces, joint prey training."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from collection.matd3 import (EVAL_SEED_OFFSET, MATD3Learner,
                              MATD3Trainer, TransitionBatch, config_for, export_prey,
                              first_update_episode, noise_at, policy_from_snapshot)
from marl_offline_bench.behaviour import behaviour_policy, load_checkpoint
from marl_offline_bench.policies import GaussianActorPolicy
from marl_offline_bench.rollout import rollout
from marl_offline_bench.envs import make_vec_env, task_info
from marl_offline_bench.envs.mpe import PretrainedPrey

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

# 4 episodes of 25 steps per acting batch; updates from the 2nd batch on; small networks.
TINY = dict(num_envs=4, buffer_size=2000, batch_size=32, updates_per_step=0.1, start_steps=100,
            hidden_dim=16, eval_interval_steps=200, eval_episodes=4, eval_num_envs=4,
            snapshot_chunk=3, noise_anneal_steps=200)


def tiny_config(task="mpe-cn", **overrides):
    return config_for(task, **{**TINY, "env_steps": 400, **overrides})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_weights(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def train(cfg, out, resume=False):
    trainer = MATD3Trainer(cfg, out)
    try:
        trainer.train(resume=resume, log=lambda line: None)
    finally:
        trainer.close()
    return trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matd3") / "run"
    return out, train(tiny_config(), out)


def test_run_writes_curve_checkpoints_and_resumes_exactly(run, tmp_path):
    out, first = run
    assert first.env_steps == 400 and first.episodes == 16 and first.updates > 0
    with open(out / "curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["env_steps"]) for r in rows] == [0, 200, 400]
    checkpoint = load_checkpoint(out / rows[-1]["checkpoint"])
    assert checkpoint["algorithm"] == "matd3"
    assert_same_weights(checkpoint["actors"], weights(first.learner.actors))
    # The checkpoint's greedy evaluation is the shipped policy's, noise-free.
    env = make_vec_env("mpe-cn", 4)
    data = rollout(env, behaviour_policy(checkpoint), 4, first.cfg.seed + EVAL_SEED_OFFSET)
    assert data.episode_returns().mean() == pytest.approx(checkpoint["eval_return"], abs=1e-4)

    resumed = train(tiny_config(env_steps=600), out, resume=True)
    straight = train(tiny_config(env_steps=600), tmp_path / "straight")
    assert resumed.env_steps == straight.env_steps == 600
    assert resumed.updates == straight.updates
    for part in ("actors", "critic", "target_actors", "target_critic"):
        assert_same_weights(weights(getattr(straight.learner, part)),
                            weights(getattr(resumed.learner, part)))
    with pytest.raises(FileExistsError, match="--resume"):
        MATD3Trainer(tiny_config(), out).train(log=lambda line: None)


def test_snapshots_replay_the_acting_batches(tmp_path):
    cfg = tiny_config(env_steps=500)
    trainer = train(cfg, tmp_path / "run")
    chunks = sorted((tmp_path / "run" / "snapshots").glob("batch_*.pt"))
    assert len(chunks) == 2                          # 5 acting batches in chunks of 3
    env = make_vec_env("mpe-cn", cfg.num_envs)
    stored = trainer.replay.arrays
    replayed = 0
    for path in chunks:
        chunk = torch.load(path, weights_only=True)
        assert chunk["algorithm"] == "matd3"
        for j, episode in enumerate(chunk["episode"].tolist()):
            if episode < 8:                           # the last three batches, learnt-from ones
                continue
            data = rollout(env, policy_from_snapshot(chunk, j), int(chunk["num_envs"]),
                           int(chunk["rollout_seed"][j]))
            rows = slice(episode * 25, (episode + cfg.num_envs) * 25)
            np.testing.assert_array_equal(data.actions, stored["actions"][rows])
            np.testing.assert_array_equal(data.rewards, stored["rewards"][rows])
            replayed += 1
    assert replayed == 3
    assert first_update_episode(cfg.to_dict(), 25) == 4


def _constant_critic_learner(q1: float, q2: float, **overrides) -> MATD3Learner:
    info = task_info("mpe-cn")
    cfg = tiny_config(**overrides)
    learner = MATD3Learner(info.n_agents, info.obs_dim, info.state_dim, info.action_mask, cfg)
    with torch.no_grad():
        for k, value in enumerate((q1, q2)):
            learner.target_critic.out[k].weight.zero_()
            learner.target_critic.out[k].bias.fill_(value)
    return learner


def _batch(info, size=64, seed=0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, info.n_agents, info.obs_dim, generator=g)
    state = obs.flatten(1)
    return TransitionBatch(obs=obs, state=state,
                           actions=torch.rand(size, info.n_agents, info.action_dim,
                                              generator=g) * 2 - 1,
                           rewards=torch.ones(size), terminals=torch.zeros(size, dtype=torch.bool),
                           next_obs=obs, next_state=state)


def test_targets_take_the_smaller_twin():
    learner = _constant_critic_learner(5.0, -3.0)
    info = task_info("mpe-cn")
    targets = learner.td_targets(_batch(info))
    torch.testing.assert_close(targets, torch.full((64,), 1.0 + 0.95 * -3.0))
    swapped = _constant_critic_learner(-3.0, 5.0).td_targets(_batch(info))
    torch.testing.assert_close(swapped, targets)


def test_target_actions_are_smoothed_with_clipped_noise():
    info = task_info("mpe-cn")
    for noise, spread in ((0.0, False), (0.2, True)):
        learner = _constant_critic_learner(0.0, 0.0, target_noise=noise, target_noise_clip=0.05)
        with torch.no_grad():   # Q'_k = the sum of the joint action, target actors output 0
            learner.target_actors.net.out.weight.zero_()
            learner.target_actors.net.out.bias.zero_()
            for k in range(2):
                learner.target_critic.action_in[k].weight.fill_(1.0)
                learner.target_critic.state_in.weight.zero_()
                learner.target_critic.state_in.bias.fill_(1.0)
                learner.target_critic.hidden[k].weight.copy_(torch.eye(16))
                learner.target_critic.hidden[k].bias.fill_(0.0)
                learner.target_critic.out[k].weight.zero_()
                learner.target_critic.out[k].weight[0, 0] = 1.0
        targets = learner.td_targets(_batch(info, 256))
        # Q' = relu(1 + sum a') with |noise| <= 0.05 on 6 entries: within [1 - .3, 1 + .3].
        assert (targets.std() > 1e-3) == spread
        assert ((targets - 1.0) / 0.95 - 1.0).abs().max() <= 6 * 0.05 + 1e-5


def test_actors_and_targets_move_only_every_policy_delay_updates():
    info = task_info("mpe-cn")
    torch.manual_seed(0)
    learner = MATD3Learner(info.n_agents, info.obs_dim, info.state_dim, info.action_mask,
                           tiny_config(policy_delay=2))
    actors, targets, critic = (weights(learner.actors), weights(learner.target_critic),
                               weights(learner.critic))
    metrics = learner.update(_batch(info))
    assert "actor_loss" not in metrics
    assert_same_weights(weights(learner.actors), actors)
    assert_same_weights(weights(learner.target_critic), targets)
    assert not torch.equal(weights(learner.critic)["out.0.bias"], critic["out.0.bias"])
    metrics = learner.update(_batch(info, seed=1))
    assert "actor_loss" in metrics
    assert not torch.equal(weights(learner.actors)["net.out.weight"], actors["net.out.weight"])
    assert not torch.equal(weights(learner.target_critic)["out.0.bias"], targets["out.0.bias"])


def test_exploration_noise_is_seeded_and_annealed():
    info = task_info("mpe-world")
    actors = MATD3Learner(info.n_agents, info.obs_dim, info.state_dim, info.action_mask,
                          tiny_config()).actors
    obs = np.random.default_rng(0).standard_normal((8, info.n_agents, info.obs_dim))
    policy = GaussianActorPolicy(actors, noise_std=0.5, seed=3)
    first = policy(obs)
    policy.reset(8)
    np.testing.assert_array_equal(policy(obs), first)
    assert np.abs(first).max() <= 1.0
    assert (first[:, 1:, 2:] == 0).all()             # padded entries stay zero (World)
    uniform = GaussianActorPolicy(actors, seed=3, uniform=True)(obs)
    assert uniform[:, 0].std() > 0.45 and (uniform[:, 1:, 2:] == 0).all()
    cfg = tiny_config(noise_start=0.3, noise_finish=0.1, start_steps=100, noise_anneal_steps=200)
    assert noise_at(cfg, 0) == noise_at(cfg, 100) == pytest.approx(0.3)
    assert noise_at(cfg, 200) == pytest.approx(0.2)
    assert noise_at(cfg, 10**6) == pytest.approx(0.1)


def test_joint_prey_training_runs_and_exports_the_prey(tmp_path):
    cfg = tiny_config("mpe-pp", train_prey=True, env_steps=200, eval_interval_steps=200)
    trainer = train(cfg, tmp_path / "run")
    assert trainer.prey_replay.size == 200
    assert trainer.prey_learner.updates == trainer.learner.updates > 0
    # pp's prey is punished for every collision: its rewards are never positive.
    assert (trainer.prey_replay.arrays["rewards"][:200] <= 0).all()
    assert trainer.prey_replay.arrays["obs"].shape[1:] == (1, 14)
    doc = export_prey(tmp_path / "run" / "checkpoints" / "step_000000200.pt",
                      tmp_path / "pp.npz", tmp_path / "run")
    prey = PretrainedPrey(tmp_path / "pp.npz")
    assert prey.sha256 == doc["sha256"]
    obs = np.random.default_rng(0).standard_normal((5, 1, 14)).astype(np.float32)
    with torch.no_grad():
        expected = trainer.prey_learner.actors(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(prey(obs), expected, atol=1e-5)
    assert not (tmp_path / "run" / "snapshots").exists()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="train_prey"):
        config_for("mpe-cn", train_prey=True)
    with pytest.raises(ValueError, match="continuous"):
        config_for("equal_line-n2")
    with pytest.raises(ValueError, match="noise_finish"):
        config_for("mpe-cn", noise_start=0.1, noise_finish=0.2)


def test_select_ships_actors_only_and_behaviour_policy_adds_seeded_noise(run, tmp_path):
    import json
    import warnings

    from collection.behaviour import select_checkpoints, ship_checkpoints

    out, _ = run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # a tiny run need not reach the medium band
        selection = select_checkpoints(out, reeval_episodes=4, top_k=2, medium_candidates=2,
                                       random_reference=-80.0)
    assert selection.medium_band[0] > -80.0
    dest = ship_checkpoints(out, selection, tmp_path / "ship")
    expert = load_checkpoint(dest / "expert.pt")
    assert expert["algorithm"] == "matd3" and "critic" not in expert
    doc = json.loads((dest / "config.json").read_text())
    assert doc["medium_replay_until_episode"] == selection.medium["episodes"] >= 4
    obs = np.random.default_rng(1).standard_normal((4, 3, 18)).astype(np.float32)
    noisy = behaviour_policy(expert, noise_std=0.3, seed=5)
    first = noisy(obs)
    noisy.reset(4)
    np.testing.assert_array_equal(noisy(obs), first)
    greedy = behaviour_policy(expert)(obs)
    assert not np.array_equal(first, greedy) and np.abs(first).max() <= 1.0
