"""MaMuJoCo HalfCheetah 2x3: conformance, agreement with gymnasium_robotics, worker clean-up."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest

from marl_offline_bench.envs import make_env, make_vec_env, task_info as any_task_info
from marl_offline_bench.envs.conformance import check_task_env, check_vector_env, random_actions
from marl_offline_bench.envs.mamujoco import (
    EPISODE_LIMIT,
    MaMuJoCoEnv,
    MaMuJoCoVectorEnv,
    episode_seeds,
    task_info,
)

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

NAME = "halfcheetah_2x3"


def library_env():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from gymnasium_robotics import mamujoco_v1
    return mamujoco_v1.parallel_env("HalfCheetah", "2x3")


def play_library(seed: int, actions: np.ndarray):
    """Frames of the library's own parallel_env under the given [T, n, 3] actions."""
    env = library_env()
    obs, _ = env.reset(seed=seed)
    agents = env.possible_agents
    first = dict(obs=np.stack([obs[a] for a in agents]), state=np.asarray(env.state()))
    frames = []
    for act in actions:
        obs, rew, term, trunc, _ = env.step({a: act[i] for i, a in enumerate(agents)})
        frames.append(
            dict(
                obs=np.stack([obs[a] for a in agents]),
                state=np.asarray(env.state()),
                rewards=np.array([rew[a] for a in agents]),
                terminated=np.array([term[a] for a in agents]),
                truncated=np.array([trunc[a] for a in agents]),
            )
        )
    env.close()
    return first, frames


def test_task_info_matches_library():
    info = task_info(NAME)
    env = library_env()
    env.reset(seed=0)
    assert info.task_id == "mamujoco-halfcheetah_2x3"
    assert info.agent_ids == tuple(env.possible_agents) == ("agent_0", "agent_1")
    assert (
        info.obs_dims
        == tuple(env.observation_space(a).shape[0] for a in env.possible_agents)
        == (12, 12)
    )
    assert info.state_dim == np.asarray(env.state()).shape[0] == 17
    assert (
        info.action_dims
        == tuple(env.action_space(a).shape[0] for a in env.possible_agents)
        == (3, 3)
    )
    for a in env.possible_agents:
        assert (env.action_space(a).low == -1).all() and (env.action_space(a).high == 1).all()
    assert not info.discrete and info.episode_limit == EPISODE_LIMIT == 1000
    assert info.engine["name"] == "gymnasium_robotics.mamujoco_v1"
    assert info.engine["version"] and info.engine["mujoco_version"]
    assert info.engine["agent_obsk"] == 1
    assert any_task_info(f"mamujoco-{NAME}") == info
    assert MaMuJoCoEnv(NAME).info == info


def test_single_conformance():
    check_task_env(make_env(f"mamujoco-{NAME}"))


def test_single_matches_library():
    """Same seed and actions: identical observations, state, rewards and ends, to the bit."""
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (EPISODE_LIMIT, 2, 3)).astype(np.float32)
    first, frames = play_library(7, actions)
    env = MaMuJoCoEnv(NAME)
    obs, infos = env.reset(seed=7)
    np.testing.assert_array_equal(
        np.stack([obs[a] for a in env.possible_agents]), first["obs"].astype(np.float32)
    )
    np.testing.assert_array_equal(env.state(), first["state"].astype(np.float32))
    for t, (act, fr) in enumerate(zip(actions, frames)):
        obs, rew, term, trunc, infos = env.step(
            {a: act[i] for i, a in enumerate(env.possible_agents)}
        )
        np.testing.assert_array_equal(
            np.stack([obs[a] for a in env.possible_agents]), fr["obs"].astype(np.float32)
        )
        np.testing.assert_array_equal(env.state(), fr["state"].astype(np.float32))
        assert np.all(fr["rewards"] == fr["rewards"][0]), "MaMuJoCo agents share one reward"
        np.testing.assert_array_equal([rew[a] for a in env.possible_agents], fr["rewards"])
        assert infos["agent_0"]["team_reward"] == fr["rewards"][0]
        np.testing.assert_array_equal([term[a] for a in env.possible_agents], fr["terminated"])
        np.testing.assert_array_equal([trunc[a] for a in env.possible_agents], fr["truncated"])
        assert fr["truncated"].all() == (t == EPISODE_LIMIT - 1) and not fr["terminated"].any()
    assert env.agents == []


def test_vector_conformance_and_library_agreement():
    """Worker-backed batch: conformance, then every copy against the library with its seed."""
    env = make_vec_env(f"mamujoco-{NAME}", 2)
    try:
        assert env.num_workers >= 1, "the batch should be stepped by a worker process"
        check_vector_env(env)
        seed = 3
        rng = np.random.default_rng(2)
        actions = rng.uniform(-1, 1, (EPISODE_LIMIT, 2, 2, 3)).astype(np.float32)
        out = env.reset(seed)
        replays = [play_library(s, actions[:, i]) for i, s in enumerate(episode_seeds(seed, 2))]
        for i, (first, _) in enumerate(replays):
            np.testing.assert_array_equal(out.obs[i], first["obs"].astype(np.float32))
            np.testing.assert_array_equal(out.state[i], first["state"].astype(np.float32))
        assert not np.array_equal(out.obs[0], out.obs[1])
        for t in range(EPISODE_LIMIT):
            step = env.step(actions[t])
            for i, (_, frames) in enumerate(replays):
                fr = frames[t]
                np.testing.assert_array_equal(step.next.obs[i], fr["obs"].astype(np.float32))
                np.testing.assert_array_equal(step.next.state[i], fr["state"].astype(np.float32))
                assert step.reward[i] == np.float32(fr["rewards"][0])
                np.testing.assert_array_equal(step.agent_rewards[i], np.float32(fr["rewards"]))
                assert step.terminated[i] == fr["terminated"][0]
                assert step.truncated[i] == fr["truncated"][0]
        assert step.truncated.all() and not step.terminated.any()
    finally:
        env.close()


def test_layout_does_not_change_episodes():
    """Copy i's episode depends on the seed only, not on how the batch is shared out."""
    rng = np.random.default_rng(4)
    info = task_info(NAME)
    actions = [random_actions(info, None, 3, rng) for _ in range(20)]
    results = []
    for kwargs in (dict(num_workers=1), dict(num_workers=2, parent_share=False)):
        env = MaMuJoCoVectorEnv(NAME, 3, **kwargs)
        try:
            trace = [env.reset(9).obs]
            trace += [env.step(a).next.obs for a in actions]
            results.append(np.stack(trace))
            assert env.num_workers == (0 if kwargs["num_workers"] == 1 else 2)
        finally:
            env.close()
    np.testing.assert_array_equal(results[0], results[1])
    single = MaMuJoCoEnv(NAME)
    obs, _ = single.reset(seed=episode_seeds(9, 3)[2])
    np.testing.assert_array_equal(
        np.stack([obs[a] for a in single.possible_agents]), results[0][0, 2]
    )


def test_workers_cleaned_up():
    env = MaMuJoCoVectorEnv(NAME, 4, num_workers=2, parent_share=False)
    procs = list(env._procs)
    assert len(procs) == 2 and all(p.poll() is None for p in procs)
    env.reset(0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((4, 2)))
    env.close()
    assert all(p.poll() is not None for p in procs), "close() must end the workers"
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(0)

    env = MaMuJoCoVectorEnv(NAME, 2, num_workers=2, parent_share=False)
    procs = list(env._procs)
    env.reset(0)
    del env
    gc.collect()
    for p in procs:
        p.wait(timeout=10)
    assert all(p.poll() is not None for p in procs), "garbage collection must end the workers"
