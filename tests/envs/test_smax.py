"""SMAC task adapters: SMAX (jitted / vmapped) and the StarCraft II engine's error paths.

JIT compilation dominates the run time; the jitted functions are shared per map within the
process, so tests reuse batch size 2 and the map 2s3z wherever they can.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from marl_offline_bench.envs import make_env, make_vec_env, task_info as any_task_info
from marl_offline_bench.envs.conformance import check_task_env, check_vector_env, random_actions
from marl_offline_bench.envs.smax import (
    MAPS,
    SMAX_SETTINGS,
    make_smac_env,
    make_smac_vec_env,
    task_info,
)

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

pytest.importorskip("jaxmarl")

# map -> (allies, enemies)
SIZES = {"2s3z": (5, 5), "3s_vs_5z": (3, 5), "5m_vs_6m": (5, 6), "6h_vs_8z": (6, 8)}


@pytest.mark.parametrize("name", MAPS)
def test_task_info(name):
    info = task_info(name)
    allies, enemies = SIZES[name]
    assert info.task_id == f"smac-{name}"
    assert info.agent_ids == tuple(f"ally_{i}" for i in range(allies))
    # SMAX unit_list observation: 13 features per other unit plus 10 own features.
    assert info.obs_dims == (13 * (allies - 1) + 13 * enemies + 10,) * allies
    assert info.state_dim == 12 * (allies + enemies)
    assert info.discrete and info.n_actions == enemies + 5 and info.action_dims == ()
    assert info.episode_limit == 100
    assert info.engine["name"] == "jaxmarl.smax"
    assert info.engine["version"]
    for key, value in SMAX_SETTINGS.items():
        assert info.engine[key] == value
    assert any_task_info(f"smac-{name}") == info


@pytest.mark.parametrize("name", MAPS)
def test_vector_conformance(name):
    env = make_vec_env(f"smac-{name}", 2)
    check_vector_env(env)
    # Copies differ and keep their seed's episode whatever the batch size around them.
    first = env.reset(3)
    assert not np.array_equal(first.obs[0], first.obs[1])
    assert first.obs.flags.writeable and first.state.flags.writeable


def test_single_conformance():
    env = make_env("smac-2s3z")
    check_task_env(env)


def test_single_env_is_copy_zero():
    single = make_smac_env("2s3z")
    vec = make_smac_vec_env("2s3z", 2)
    obs, infos = single.reset(seed=11)
    batch = vec.reset(11)
    np.testing.assert_array_equal(np.stack([obs[a] for a in single.possible_agents]), batch.obs[0])
    np.testing.assert_array_equal(single.state(), batch.state[0])
    rng = np.random.default_rng(0)
    for _ in range(5):
        act = random_actions(vec.info, batch.avail_actions, 2, rng)
        obs, rew, term, trunc, infos = single.step(
            {a: int(act[0, i]) for i, a in enumerate(single.possible_agents)}
        )
        out = vec.step(act)
        batch = out.next
        np.testing.assert_array_equal(
            np.stack([obs[a] for a in single.possible_agents]), batch.obs[0]
        )
        np.testing.assert_array_equal(single.state(), batch.state[0])
        assert infos["ally_0"]["team_reward"] == pytest.approx(float(out.reward[0]))


def _direct_episode(env, seed, index, policy_rng, max_steps=100):
    """Play one episode against jaxmarl itself with the adapter's key scheme."""
    import jax

    def observe(obs, state):
        avail = env.get_avail_actions(state)
        return dict(
            obs=np.stack([np.array(obs[a]) for a in env.agents]),
            state=np.array(obs["world_state"]),
            avail=np.stack([np.array(avail[a]) for a in env.agents]).astype(bool),
        )

    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    key, reset_key = jax.random.split(key)
    obs, state = env.reset(reset_key)
    first = observe(obs, state)
    frames = []
    for _ in range(max_steps):
        current = frames[-1]["next"] if frames else first
        scores = np.where(current["avail"], policy_rng.random(current["avail"].shape), -1.0)
        actions = scores.argmax(-1)
        key, step_key = jax.random.split(key)
        obs, state, rewards, dones, _ = env.step_env(
            step_key, state, {a: actions[i] for i, a in enumerate(env.agents)}
        )
        alive = np.array(state.state.unit_alive)
        frames.append(
            dict(
                actions=actions,
                next=observe(obs, state),
                rewards=np.array([float(rewards[a]) for a in env.agents], np.float32),
                done=bool(dones["__all__"]),
                step=int(state.state.step),
                allies_dead=not alive[: env.num_allies].any(),
                enemies_dead=not alive[env.num_allies :].any(),
            )
        )
        if frames[-1]["allies_dead"] or frames[-1]["enemies_dead"]:
            break
    return first, frames


def test_matches_jaxmarl_directly():
    """Same keys and actions: the adapters and jaxmarl give the same obs, rewards and ends."""
    import jax
    import jaxmarl
    from jaxmarl.environments.smax import map_name_to_scenario

    name, seed = "2s3z", 5
    raw = jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(name), **SMAX_SETTINGS)
    vec = make_smac_vec_env(name, 2)
    single = make_smac_env(name)
    episodes = [_direct_episode(raw, seed, i, np.random.default_rng(100 + i)) for i in range(2)]

    # Vector env: both copies, lock-step, each replaying its own direct episode.
    out = vec.reset(seed)
    for i, (first, _) in enumerate(episodes):
        np.testing.assert_array_equal(out.obs[i], first["obs"])
        np.testing.assert_array_equal(out.state[i], first["state"])
        np.testing.assert_array_equal(out.avail_actions[i], first["avail"])
    longest = max(len(f) for _, f in episodes)
    for t in range(longest):
        act = np.stack([f[min(t, len(f) - 1)]["actions"] for _, f in episodes])
        out = vec.step(act)
        for i, (_, frames) in enumerate(episodes):
            if t >= len(frames):
                continue  # that copy ended: its outputs are undefined
            fr = frames[t]
            np.testing.assert_array_equal(out.next.obs[i], fr["next"]["obs"])
            np.testing.assert_array_equal(out.next.state[i], fr["next"]["state"])
            np.testing.assert_array_equal(out.next.avail_actions[i], fr["next"]["avail"])
            np.testing.assert_array_equal(out.agent_rewards[i], fr["rewards"])
            assert np.all(fr["rewards"] == fr["rewards"][0]), "SMAX allies share one reward"
            assert out.reward[i] == fr["rewards"][0]
            battle_over = fr["allies_dead"] or fr["enemies_dead"]
            assert out.terminated[i] == battle_over
            assert out.truncated[i] == (fr["step"] >= 100 and not battle_over)
            assert out.won[i] == (fr["enemies_dead"] and not fr["allies_dead"])
            if fr["step"] < 100:
                # Before the limit, the adapter ends exactly where SMAX's own done flag does.
                assert (out.terminated[i] or out.truncated[i]) == fr["done"]
            if t == len(frames) - 1:
                assert out.terminated[i] or out.truncated[i], "episode must end where it ended"

    # Single env replays copy 0.
    first, frames = episodes[0]
    obs, infos = single.reset(seed=seed)
    np.testing.assert_array_equal(np.stack([obs[a] for a in single.possible_agents]), first["obs"])
    for fr in frames:
        obs, rew, term, trunc, infos = single.step(
            {a: int(fr["actions"][i]) for i, a in enumerate(single.possible_agents)}
        )
        np.testing.assert_array_equal(
            np.stack([obs[a] for a in single.possible_agents]), fr["next"]["obs"]
        )
        np.testing.assert_array_equal(single.state(), fr["next"]["state"])
        np.testing.assert_array_equal(
            np.stack([infos[a]["avail_actions"] for a in single.possible_agents]).astype(bool),
            fr["next"]["avail"],
        )
        np.testing.assert_array_equal(
            np.array([rew[a] for a in single.possible_agents], np.float32), fr["rewards"]
        )
    assert single.agents == [], "the episode ended in the single env too"
    del jax


def test_time_limit_is_100_steps():
    """Battles still going on are truncated after exactly 100 steps (SMAX alone allows 101)."""
    env = make_smac_vec_env("2s3z", 2)
    rng = np.random.default_rng(0)
    truncations = 0
    for seed in range(200):
        o = env.reset(seed)
        alive = np.ones(2, bool)
        for t in range(1, 101):
            out = env.step(random_actions(env.info, o.avail_actions, 2, rng))
            ended = (out.terminated | out.truncated) & alive
            assert not (out.truncated & alive).any() or t == 100, f"truncated at step {t}"
            truncations += int((out.truncated & alive).sum())
            alive &= ~ended
            o = out.next
            if not alive.any():
                break
        assert not alive.any(), "an episode outlived 100 steps"
        if truncations:
            break
    assert truncations, "random play should reach the time limit now and then (about 2%)"


def test_won_consistent_with_reward():
    """``won`` episodes end terminated and pay SMAX's win bonus of 1 on their last step."""
    env = make_smac_vec_env("2s3z", 2)
    wins = 0
    for seed in range(40):
        o = env.reset(seed)
        alive = np.ones(2, bool)
        while alive.any():
            attack = o.avail_actions[:, :, 5:]
            # Focus on the first enemy in range, otherwise walk east towards the enemy.
            act = np.where(attack.any(-1), 5 + attack.argmax(-1), 1)
            out = env.step(act)
            live = alive.copy()
            alive &= ~(out.terminated | out.truncated)
            for i in np.flatnonzero(live):
                if out.won[i]:
                    wins += 1
                    assert out.terminated[i] and not out.truncated[i]
                    assert out.reward[i] >= 1.0
                elif out.terminated[i] or out.truncated[i]:
                    assert out.reward[i] < 1.0 + 1e-6
            o = out.next
        if wins >= 2:
            break
    assert wins >= 1, "a focus-fire policy should win some 2s3z battles"


# ---------------------------------------------------------------- the StarCraft II engine
def _hide_smac(monkeypatch):
    for mod in [m for m in sys.modules if m == "smac" or m.startswith("smac.")]:
        monkeypatch.delitem(sys.modules, mod)


def test_sc2_missing_package(monkeypatch):
    import importlib.util

    _hide_smac(monkeypatch)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n.split(".")[0] == "smac" else real_find_spec(n, *a),
    )
    for call in (
        lambda: make_env("smac-2s3z", engine="sc2"),
        lambda: make_vec_env("smac-2s3z", 2, engine="sc2"),
        lambda: task_info("2s3z", engine="sc2"),
    ):
        with pytest.raises(RuntimeError) as err:
            call()
        message = str(err.value)
        assert "oxwhirl" in message and "SC2PATH" in message and "StarCraft II" in message
        assert "git+https://github.com/oxwhirl/smac.git" in message


def test_sc2_smac3_installed(monkeypatch):
    """The PyPI 'smac' (SMAC3, an optimiser) is recognised and named as the wrong package."""
    _hide_smac(monkeypatch)
    fake = types.ModuleType("smac")
    fake.__path__ = []  # a package without a smac.env submodule
    fake.HyperparameterOptimizationFacade = object
    fake.__spec__ = __import__("importlib.machinery").machinery.ModuleSpec(
        "smac", None, is_package=True
    )
    monkeypatch.setitem(sys.modules, "smac", fake)
    with pytest.raises(RuntimeError, match="SMAC3"):
        make_env("smac-2s3z", engine="sc2")


class FakeStarCraft2Env:
    """Enough of oxwhirl's StarCraft2Env to drive the adapter without StarCraft II."""

    n_agents, n_enemies, episode_limit = 5, 5, 120
    launched = 0

    def __init__(self, map_name="8m", seed=None, continuing_episode=False, **kw):
        self.map_name, self.seed, self.continuing_episode = map_name, seed, continuing_episode
        self.n_actions = 6 + self.n_enemies
        self.t = 0
        self.rng = None

    def get_env_info(self):
        return dict(
            state_shape=7,
            obs_shape=4,
            n_actions=self.n_actions,
            n_agents=self.n_agents,
            episode_limit=self.episode_limit,
        )

    def reset(self):
        if self.rng is None:
            FakeStarCraft2Env.launched += 1
            self.rng = np.random.default_rng(self.seed)
        self.t = 0
        self.alive = np.ones(self.n_agents, bool)
        self.length = int(self.rng.integers(10, 2 * self.episode_limit))
        return [self.get_obs_agent(i) for i in range(self.n_agents)], self.get_state()

    def get_obs_agent(self, i):
        return np.full(4, self.t + i, np.float32)

    def get_state(self):
        return np.full(7, self.t, np.float32)

    def get_avail_agent_actions(self, i):
        avail = np.zeros(self.n_actions, int)
        avail[1:] = 1 if self.alive[i] else 0
        avail[0] = 0 if self.alive[i] else 1
        return avail

    def step(self, actions):
        for i, a in enumerate(actions):
            assert self.get_avail_agent_actions(i)[a] == 1
        self.t += 1
        info = {"battle_won": False}
        if self.t >= self.length:
            info["battle_won"] = bool(self.length % 2)
            return 1.0, True, info
        if self.t >= self.episode_limit:
            if self.continuing_episode:
                info["episode_limit"] = True
            return 0.5, True, info
        return 0.5, False, info

    def close(self):
        pass


def _install_fake_sc2(monkeypatch, tmp_path):
    _hide_smac(monkeypatch)
    smac = types.ModuleType("smac")
    smac.__path__ = []
    env_mod = types.ModuleType("smac.env")
    env_mod.StarCraft2Env = FakeStarCraft2Env
    smac.env = env_mod
    monkeypatch.setitem(sys.modules, "smac", smac)
    monkeypatch.setitem(sys.modules, "smac.env", env_mod)
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: (
            (object() if n == "smac" else None)
            if n.split(".")[0] == "smac"
            else real_find_spec(n, *a)
        ),
    )
    monkeypatch.setenv("SC2PATH", str(tmp_path / "StarCraftII"))


def test_sc2_missing_game(monkeypatch, tmp_path):
    _install_fake_sc2(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="StarCraft II was not found") as err:
        make_env("smac-2s3z", engine="sc2")
    assert "SC2PATH" in str(err.value)
    (tmp_path / "StarCraftII" / "Versions").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="SMAC_Maps"):
        make_vec_env("smac-2s3z", 2, engine="sc2")


def test_sc2_adapter_with_fake_engine(monkeypatch, tmp_path):
    """The sc2 adapter's wiring, on a stand-in StarCraft2Env (the real one needs the game)."""
    _install_fake_sc2(monkeypatch, tmp_path)
    maps = tmp_path / "StarCraftII" / "Maps" / "SMAC_Maps"
    maps.mkdir(parents=True)
    (tmp_path / "StarCraftII" / "Versions").mkdir()
    (maps / "2s3z.SC2Map").write_bytes(b"")
    info = task_info("2s3z", engine="sc2")
    assert info.engine["name"] != task_info("2s3z").engine["name"]
    assert info.task_id == "smac-2s3z" and info.n_actions == 11 and info.episode_limit == 120
    assert info.engine["continuing_episode"] is True

    env = make_env("smac-2s3z", engine="sc2")
    check_task_env(env, num_cycles=250)
    vec = make_vec_env("smac-2s3z", 3, engine="sc2")
    check_vector_env(vec)
    vec.reset(0)
    ends = np.zeros(3, bool)
    for _ in range(info.episode_limit):
        step = vec.step(np.ones((3, info.n_agents), int))
        new = (step.terminated | step.truncated) & ~ends
        for i in np.flatnonzero(new):
            length = vec._games[i].env.length
            assert step.truncated[i] == (length > info.episode_limit)
            assert step.won[i] == (length <= info.episode_limit and bool(length % 2))
        ends |= new
    assert ends.all()
    vec.close()
