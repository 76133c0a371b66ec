import numpy as np
import pytest

from marl_offline_bench.envs import make_env, make_vec_env
from marl_offline_bench.envs.conformance import check_task_env, check_vector_env
from marl_offline_bench.envs.equal_line import EqualLineVectorEnv, line_length, min_pairwise_distance


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10])
def test_conformance(n):
    check_task_env(make_env(f"equal_line-n{n}"), num_cycles=60)
    check_vector_env(make_vec_env(f"equal_line-n{n}", 3))


@pytest.mark.parametrize("n", [2, 6, 10])
def test_episode_return_telescopes_to_final_min_distance(n):
    env = EqualLineVectorEnv(n, num_envs=16)
    rng = np.random.default_rng(1)
    env.reset(3)
    total = np.zeros(16)
    for _ in range(50):
        out = env.step(rng.integers(0, 11, (16, n)))
        total += out.reward
    assert out.truncated.all() and not out.terminated.any()
    expected = 10 * (n - 1) * min_pairwise_distance(env._positions) / line_length(n)
    np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-5)


def test_moves_and_clipping():
    env = EqualLineVectorEnv(2, num_envs=1)
    env.reset(0)
    env._positions[:] = [[0.0, 9.9]]
    env.step(np.array([[5, 10]]))  # -1 and +1
    np.testing.assert_allclose(env._positions, [[0.0, 10.0]])
    out = env.step(np.array([[8, 3]]))  # +0.1, -0.1
    np.testing.assert_allclose(out.next.state * 10.0, [[0.1, 9.9]], atol=1e-6)
    np.testing.assert_allclose(out.next.obs[0, 0], out.next.state[0])


def test_single_env_replays_vector_env_episode():
    single, vec = make_env("equal_line-n4"), EqualLineVectorEnv(4, 1)
    obs, _ = single.reset(seed=7)
    first = vec.reset(7)
    np.testing.assert_array_equal(obs["agent_0"], first.obs[0, 0])
    for t in range(5):
        acts = np.array([[t % 11, 3, 7, 10]])
        o, r, *_ = single.step({f"agent_{i}": int(a) for i, a in enumerate(acts[0])})
        out = vec.step(acts)
        assert r["agent_0"] == pytest.approx(float(out.reward[0]))
        np.testing.assert_array_equal(o["agent_3"], out.next.obs[0, 3])
