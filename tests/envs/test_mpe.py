"""MPE adapters: conformance, exactness against mpe2, and JaxMARL's engine against mpe2."""
from __future__ import annotations

import numpy as np
import pytest

from marl_offline_bench.envs.conformance import check_task_env, check_vector_env
from marl_offline_bench.envs.mpe import (
    MPEEnv,
    MPEVectorEnv,
    WorldState,
    _spec,
    from_mpe2_action,
    from_mpe2_comm,
    get_mpe2_world_state,
    make_mpe2_env,
    random_prey_policy,
    set_mpe2_world_state,
    still_prey_policy,
    task_info,
    to_mpe2_action,
    to_mpe2_comm,
)

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

TASKS = ("cn", "pp", "world")
BATCH = 4  # one batch size throughout, so that jax compiles each task's step once


def prey_for(name, seed=0):
    return None if name == "cn" else random_prey_policy(seed)


class Recording:
    """A prey policy that remembers what it saw and what it did."""

    def __init__(self, inner):
        self.inner = inner
        self.seen, self.done = [], []

    def reset(self, seed):
        if hasattr(self.inner, "reset"):
            self.inner.reset(seed)

    def __call__(self, obs):
        act = self.inner(obs)
        self.seen.append(obs.copy())
        self.done.append(np.array(act))
        return act


def mpe2_actions(spec, learn_act, prey_act):
    """The mpe2 action dict for one env from benchmark actions, via the public mappings."""
    actions = {}
    for i, a in enumerate(spec.learners):
        parts = [to_mpe2_action(learn_act[i, :2])]
        if i == 0 and spec.leader_comm:
            parts.append(to_mpe2_comm(learn_act[i, 2: 2 + spec.leader_comm]))
        actions[a] = np.concatenate(parts)
    for j, a in enumerate(spec.prey):
        actions[a] = to_mpe2_action(prey_act[j])
    return actions


# -- static facts ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_task_info_matches_mpe2(name):
    info = task_info(name)
    spec = _spec(name)
    env = make_mpe2_env(name)
    env.reset(seed=0)
    assert list(env.possible_agents) == list(spec.agents)
    assert info.agent_ids == spec.learners
    for a, d in zip(spec.agents, spec.obs_dims):
        assert env.observation_space(a).shape == (d,)
    assert info.state_dim == sum(info.obs_dims)
    assert info.episode_limit == 25 and not info.discrete
    expected_actions = {"cn": (2, 2, 2), "pp": (2, 2, 2), "world": (6, 2, 2, 2)}[name]
    assert info.action_dims == expected_actions
    for i, a in enumerate(spec.learners):  # mpe2's action: 5 movement entries (+ comm)
        assert env.action_space(a).shape == (5 + info.action_dims[i] - 2,)
    assert info.engine["name"] == "jaxmarl" and info.engine["reference"]["name"] == "mpe2"
    assert info.engine["version"] and info.engine["reference"]["version"]
    assert task_info(name, "mpe2").engine["name"] == "mpe2"


def test_shipped_prey_drives_pp_and_world_by_default():
    import hashlib
    import json

    from marl_offline_bench.envs.mpe import PREY_DIR, PretrainedPrey

    for name in ("pp", "world"):
        path = PREY_DIR / f"{name}.npz"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert json.loads(path.with_suffix(".json").read_text())["sha256"] == sha
        env = MPEVectorEnv(name, BATCH)
        assert isinstance(env.prey_policy, PretrainedPrey)
        assert env.info.engine["pretrained_prey"]["sha256"] == sha
        assert env.info.engine["prey_policy"] == f"pretrained-{sha[:12]}"
        assert MPEEnv(name).info.engine["pretrained_prey"]["sha256"] == sha
        # The prey is deterministic and acts on its own observations.
        env.reset(0)
        prey_obs = env.prey_observations
        act = env.prey_policy(prey_obs)
        assert act.shape == (BATCH, len(_spec(name).prey), 2) and np.abs(act).max() <= 1.0
        np.testing.assert_array_equal(act, env.prey_policy(prey_obs))
        # A prey_policy argument still replaces it.
        other = MPEVectorEnv(name, BATCH, prey_policy=still_prey_policy())
        assert "pretrained_prey" not in other.info.engine
        assert other.info.engine["prey_policy"] == "still"
    with pytest.raises(ValueError):
        MPEEnv("cn", prey_policy=still_prey_policy())


# -- conformance ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_conformance(name):
    check_task_env(MPEEnv(name, prey_policy=prey_for(name)))
    check_vector_env(MPEVectorEnv(name, num_envs=BATCH, prey_policy=prey_for(name)))


def test_conformance_other_engines():
    check_vector_env(MPEVectorEnv("world", BATCH, engine="mpe2", prey_policy=prey_for("world")))
    check_task_env(MPEEnv("pp", engine="jaxmarl", prey_policy=prey_for("pp")), num_cycles=30)


# -- the action mapping ---------------------------------------------------------------------
def test_action_mapping_round_trips():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-1, 1, (1000, 2)).astype(np.float32)
    five = to_mpe2_action(xy)
    assert five.shape == (1000, 5) and five.dtype == np.float32
    assert (five >= 0).all() and (five <= 1).all() and (five[:, 0] == 0).all()
    np.testing.assert_array_equal(from_mpe2_action(five), xy)
    np.testing.assert_array_equal(to_mpe2_action(from_mpe2_action(five)), five)
    np.testing.assert_array_equal(five[:, 2] - five[:, 1], xy[:, 0])  # mpe2's force, exactly
    np.testing.assert_array_equal(five[:, 4] - five[:, 3], xy[:, 1])
    np.testing.assert_array_equal(to_mpe2_action([[2.0, -3.0]]), [[0, 0, 1, 1, 0]])  # clipped
    c = rng.uniform(-1, 1, (100, 4)).astype(np.float32)
    assert ((to_mpe2_comm(c) >= 0) & (to_mpe2_comm(c) <= 1)).all()
    np.testing.assert_allclose(from_mpe2_comm(to_mpe2_comm(c)), c, atol=1e-7)


@pytest.mark.parametrize("name", ["pp", "world"])
def test_2d_action_equals_5d_action_in_mpe2(name):
    """(x, y) through to_mpe2_action moves mpe2 exactly as a 5-dim action with the same force."""
    spec = _spec(name)
    canonical, other = make_mpe2_env(name), make_mpe2_env(name)
    canonical.reset(seed=3)
    other.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(25):
        # dyadic values keep (offset + x) - offset exact in float32
        xy = rng.integers(-8, 9, (spec.n_agents, 2)).astype(np.float32) / 8
        offset = rng.integers(0, 5, (spec.n_agents, 2)).astype(np.float32) / 32
        a_canonical, a_other = {}, {}
        for i, a in enumerate(spec.agents):
            x, y = xy[i]
            five = np.array([rng.random(), offset[i, 0] + max(-x, 0), offset[i, 0] + max(x, 0),
                             offset[i, 1] + max(-y, 0), offset[i, 1] + max(y, 0)], np.float32)
            five = np.clip(five, 0, 1)
            xy[i] = from_mpe2_action(five)  # what the 5-dim action means after mpe2's clip
            comm = np.full(canonical.action_space(a).shape[0] - 5, 0.25, np.float32)
            a_canonical[a] = np.concatenate([to_mpe2_action(xy[i]), comm])
            a_other[a] = np.concatenate([five, comm])
        o1, r1, _, _, _ = canonical.step(a_canonical)
        o2, r2, _, _, _ = other.step(a_other)
        for i, agent in enumerate(canonical.unwrapped.world.agents):
            np.testing.assert_array_equal(agent.action.u, agent.accel * xy[i].astype(np.float64))
        for a in spec.agents:
            np.testing.assert_array_equal(o1[a], o2[a])
            assert r1[a] == r2[a]


# -- each adapter against mpe2 itself -------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_single_env_matches_mpe2(name):
    spec = _spec(name)
    prey = None if name == "cn" else Recording(random_prey_policy(7))
    env = MPEEnv(name, prey_policy=prey)
    info = env.info
    ref = make_mpe2_env(name)
    rng = np.random.default_rng(0)
    for seed in (0, 11):
        obs, _ = env.reset(seed=seed)
        ref_obs, _ = ref.reset(seed=seed)
        for t in range(info.episode_limit):
            for a in info.agent_ids:
                np.testing.assert_array_equal(obs[a], ref_obs[a])
            np.testing.assert_array_equal(
                env.state(), np.concatenate([ref_obs[a] for a in spec.learners]))
            act = {a: rng.uniform(-1, 1, d).astype(np.float32)
                   for a, d in zip(info.agent_ids, info.action_dims)}
            obs, rew, terms, truncs, infos = env.step(act)
            prey_act = np.zeros((0, 2))
            if prey is not None:
                np.testing.assert_array_equal(
                    prey.seen[-1][0], np.stack([ref_obs[a] for a in spec.prey]))
                prey_act = prey.done[-1][0]
            learn_act = np.stack([np.pad(act[a], (0, info.action_dim - len(act[a])))
                                  for a in info.agent_ids])
            ref_obs, ref_rew, ref_terms, ref_truncs, _ = ref.step(
                mpe2_actions(spec, learn_act, prey_act))
            for a in info.agent_ids:
                assert rew[a] == np.float32(ref_rew[a])
                assert terms[a] == ref_terms[a] and truncs[a] == ref_truncs[a]
            learner_rewards = [ref_rew[a] for a in spec.learners]
            team = sum(learner_rewards) if name == "cn" else np.mean(learner_rewards)
            assert infos[info.agent_ids[0]]["team_reward"] == pytest.approx(team, abs=1e-5)
            if name == "pp":  # mpe2 pays every predator the same
                assert len(set(learner_rewards)) == 1
            if any(truncs.values()):
                break
        assert t == info.episode_limit - 1 and all(truncs.values())
        assert not any(terms.values())


@pytest.mark.parametrize("name", TASKS)
def test_vector_reset_starts_where_mpe2_starts(name):
    """Copy 0 of a batch reset(seed) is mpe2's reset(seed=seed); the engines agree per seed."""
    jax_env = MPEVectorEnv(name, BATCH, prey_policy=prey_for(name))
    mpe2_env = MPEVectorEnv(name, BATCH, engine="mpe2", prey_policy=prey_for(name))
    ref = make_mpe2_env(name)
    for seed in (0, 5):
        o_jax, o_mpe2 = jax_env.reset(seed), mpe2_env.reset(seed)
        ref.reset(seed=seed)
        np.testing.assert_array_equal(mpe2_env.get_world_state().p_pos[0],
                                      get_mpe2_world_state(ref).p_pos)
        np.testing.assert_allclose(jax_env.get_world_state().p_pos,
                                   mpe2_env.get_world_state().p_pos, atol=1e-6)
        np.testing.assert_allclose(o_jax.obs, o_mpe2.obs, atol=1e-6)
        assert not np.allclose(o_jax.obs[0], o_jax.obs[1])  # copies differ


def test_random_prey_replays_with_the_seed():
    envs = [MPEVectorEnv("pp", BATCH, prey_policy=random_prey_policy(3)) for _ in range(2)]
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (25, BATCH, 3, 2)).astype(np.float32)
    runs = []
    for env in envs:
        env.reset(0)
        env.step(acts[0])  # advance the prey's generator, then reset: it must rewind
        env.reset(42)
        runs.append(np.stack([env.step(a).next.obs for a in acts]))
    np.testing.assert_array_equal(runs[0], runs[1])


# -- world-state copies and JaxMARL against mpe2 --------------------------------------------
def test_world_state_copy_between_mpe2_envs():
    src, dst = make_mpe2_env("world"), make_mpe2_env("world")
    src.reset(seed=1)
    dst.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(4):
        src.step({a: rng.uniform(0, 1, src.action_space(a).shape).astype(np.float32)
                  for a in src.agents})
    state = get_mpe2_world_state(src)
    assert state.step == 4 and np.abs(state.p_vel).sum() > 0 and np.abs(state.c).sum() > 0
    set_mpe2_world_state(dst, state)
    got = get_mpe2_world_state(dst)
    for f in ("p_pos", "p_vel", "c", "step"):
        np.testing.assert_array_equal(getattr(got, f), getattr(state, f))
    for a in src.agents:
        np.testing.assert_array_equal(src.unwrapped.observe(a), dst.unwrapped.observe(a))


@pytest.mark.parametrize("name", TASKS)
def test_jaxmarl_engine_matches_mpe2(name):
    """From copied mpe2 states, under the same actions: max |obs diff| < 1e-4 for 25 steps."""
    spec = _spec(name)
    rng = np.random.default_rng(2)
    max_obs, max_rew = 0.0, 0.0
    # Round 1 copies fresh episodes (seeds 0..3); round 2 copies episodes 5 random steps in
    # (seeds 4..7), so velocities, communication and the step count travel too.
    for seeds, warmup in ((range(0, BATCH), 0), (range(BATCH, 2 * BATCH), 5)):
        refs = [make_mpe2_env(name) for _ in seeds]
        for seed, ref in zip(seeds, refs):
            ref.reset(seed=seed)
            for _ in range(warmup):
                ref.step({a: rng.uniform(0, 1, ref.action_space(a).shape).astype(np.float32)
                          for a in ref.agents})
        prey_act = np.zeros((BATCH, len(spec.prey), 2), np.float32)
        env = MPEVectorEnv(name, BATCH, prey_policy=None if name == "cn" else (lambda o: prey_act))
        info = env.info
        state = WorldState.stack([get_mpe2_world_state(r) for r in refs])
        first = env.set_world_state(state)
        copied = env.get_world_state()
        np.testing.assert_allclose(copied.p_pos, state.p_pos, atol=1e-6)
        np.testing.assert_allclose(copied.p_vel, state.p_vel, atol=1e-6)
        np.testing.assert_allclose(copied.c, state.c, atol=1e-6)
        np.testing.assert_array_equal(copied.step, state.step)
        for k, ref in enumerate(refs):
            ref_obs = np.stack([ref.unwrapped.observe(a) for a in spec.learners])
            max_obs = max(max_obs, np.abs(first.obs[k] - ref_obs).max())
        for t in range(warmup, info.episode_limit):
            learn_act = rng.uniform(-1, 1, (BATCH, info.n_agents, info.action_dim))
            learn_act = (learn_act * info.action_mask).astype(np.float32)
            prey_act[:] = rng.uniform(-1, 1, prey_act.shape)
            out = env.step(learn_act)
            for k, ref in enumerate(refs):
                obs, rew, terms, truncs, _ = ref.step(mpe2_actions(spec, learn_act[k], prey_act[k]))
                ref_learn = np.stack([obs[a] for a in spec.learners])
                max_obs = max(max_obs, np.abs(out.next.obs[k] - ref_learn).max())
                if spec.prey:
                    ref_prey = np.stack([obs[a] for a in spec.prey])
                    max_obs = max(max_obs, np.abs(env.prey_observations[k] - ref_prey).max())
                ref_rew = np.array([rew[a] for a in spec.learners])
                max_rew = max(max_rew, np.abs(out.agent_rewards[k] - ref_rew).max())
                assert out.truncated[k] == truncs[spec.agents[0]] == (t == info.episode_limit - 1)
                assert not out.terminated[k] and not terms[spec.agents[0]]
    print(f"{name}: max |obs diff| {max_obs:.2e}, max |reward diff| {max_rew:.2e}")
    assert max_obs < 1e-4
    assert max_rew < 1e-4
