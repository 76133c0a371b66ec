"""The conformance check every task adapter passes, after PettingZoo's ``parallel_api_test``.

:func:`check_task_env` runs PettingZoo's own test on the single env and then the benchmark's
extra contract; :func:`check_vector_env` checks the batched form: shapes, dtypes, reproducible
seeding, terminated never together with truncated, and that every episode ends within the time
limit. Both raise ``AssertionError`` naming the broken rule.
"""
from __future__ import annotations

import numpy as np
from pettingzoo.test import parallel_api_test

from .base import TaskEnv, VectorTaskEnv


def random_actions(info, avail: np.ndarray | None, batch: int, rng: np.random.Generator):
    """Uniform actions over the available ones: [B, n] int64, or [B, n, action_dim] float32."""
    if info.discrete:
        scores = rng.random((batch, info.n_agents, info.n_actions))
        scores = np.where(avail, scores, -1.0) if avail is not None else scores
        return scores.argmax(-1).astype(np.int64)
    actions = rng.uniform(-1.0, 1.0, (batch, info.n_agents, info.action_dim)).astype(np.float32)
    return actions * info.action_mask[None]


def check_task_env(env: TaskEnv, num_cycles: int = 200, seed: int = 0) -> None:
    """PettingZoo's ``parallel_api_test`` plus the benchmark's own contract on one env."""
    parallel_api_test(env, num_cycles=num_cycles)
    info = env.info
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    assert list(obs) == list(info.agent_ids), "reset() must return every agent, in order"
    first_obs = {a: o.copy() for a, o in obs.items()}
    for _ in range(info.episode_limit + 1):
        state = env.state()
        assert state.shape == (info.state_dim,), f"state() shape {state.shape}"
        assert state.dtype == np.float32, f"state() dtype {state.dtype}"
        for i, a in enumerate(info.agent_ids):
            assert obs[a].shape == (info.obs_dims[i],), f"{a} observation shape {obs[a].shape}"
        avail = None
        if info.discrete:
            avail = np.stack([infos[a]["avail_actions"] for a in env.agents]).astype(bool)
            assert avail.shape == (info.n_agents, info.n_actions)
            assert avail.any(axis=1).all(), "every agent needs at least one available action"
        act = random_actions(info, None if avail is None else avail[None], 1, rng)[0]
        actions = {
            a: (int(act[i]) if info.discrete else act[i, : info.action_dims[i]])
            for i, a in enumerate(info.agent_ids)
        }
        obs, rewards, terms, truncs, infos = env.step(actions)
        team = {infos[a]["team_reward"] for a in infos}
        assert len(team) == 1, "every agent must report the same team reward"
        for a in rewards:
            assert not (terms[a] and truncs[a]), "terminated and truncated are exclusive"
        if any(terms.values()) or any(truncs.values()):
            break
    else:
        raise AssertionError(f"episode ran past its limit of {info.episode_limit} steps")
    again, _ = env.reset(seed=seed)
    for a in info.agent_ids:
        np.testing.assert_array_equal(again[a], first_obs[a], err_msg="reset(seed) not repeatable")


def check_vector_env(env: VectorTaskEnv, seed: int = 0) -> None:
    """Shapes, dtypes, seeding and episode ends of a :class:`VectorTaskEnv`."""
    info, batch = env.info, env.num_envs
    rng = np.random.default_rng(seed)

    def check_obs(o):
        assert o.obs.shape == (batch, info.n_agents, info.obs_dim), f"obs shape {o.obs.shape}"
        assert o.obs.dtype == np.float32
        assert o.state.shape == (batch, info.state_dim), f"state shape {o.state.shape}"
        if info.discrete:
            assert o.avail_actions.shape == (batch, info.n_agents, info.n_actions)
            assert o.avail_actions.dtype == bool
        else:
            assert o.avail_actions is None

    first = env.reset(seed)
    check_obs(first)
    alive = np.ones(batch, bool)
    o = first
    for t in range(info.episode_limit):
        out = env.step(random_actions(info, o.avail_actions, batch, rng))
        check_obs(out.next)
        assert out.reward.shape == (batch,) and out.agent_rewards.shape == (batch, info.n_agents)
        assert not (out.terminated & out.truncated).any(), "terminated and truncated together"
        alive &= ~(out.terminated | out.truncated)
        o = out.next
        if not alive.any():
            break
    assert not alive.any(), f"some episodes outlived the limit of {info.episode_limit} steps"
    again = env.reset(seed)
    np.testing.assert_array_equal(again.obs, first.obs, err_msg="reset(seed) not repeatable")
    np.testing.assert_array_equal(again.state, first.state)
