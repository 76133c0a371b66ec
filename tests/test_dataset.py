"""MARLDataset views: padded episode batches, the torch sampler, heterogeneous agents."""
import numpy as np
import pytest

import marl_offline_bench as mob
from marl_offline_bench.rollout import batch_seed
from marl_offline_bench.dataset import EpisodeArrays, MARLDataset


def tiny(lengths=(3, 1, 2), n=2, obs_dim=3):
    rng = np.random.default_rng(0)
    N, E = sum(lengths), len(lengths)
    return EpisodeArrays(
        obs=rng.normal(size=(N + E, n, obs_dim)).astype(np.float32),
        states=rng.normal(size=(N + E, 4)).astype(np.float32),
        avail_actions=rng.random((N + E, n, 5)) > 0.3,
        actions=rng.integers(0, 5, (N, n)),
        rewards=np.arange(N, dtype=np.float32),
        agent_rewards=np.zeros((N, n), np.float32),
        terminals=np.zeros(N, bool), timeouts=np.zeros(N, bool), won=None,
        episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        seeds=np.arange(E),
    )


def as_dataset(e):
    return MARLDataset(e, "equal_line-n2-random-v0", "equal_line-n2", {},
                       obs_mask=np.ones((2, 3), bool), action_mask=None)


def test_len_counts_arrays_and_the_repr_says_both_sizes():
    d = as_dataset(tiny())
    assert len(d) == len(list(d)) == 13 and d.n_transitions == 6
    assert "6 transitions (n_transitions)" in repr(d) and "13 arrays: observations" in repr(d)


def test_transition_view_skips_final_observations():
    d = as_dataset(tiny())
    e = d.episodes_data
    # episode 0 has obs rows 0..3, episode 1 rows 4..5, episode 2 rows 6..8
    np.testing.assert_array_equal(d["observations"], e.obs[[0, 1, 2, 4, 6, 7]])
    np.testing.assert_array_equal(d["next_observations"], e.obs[[1, 2, 3, 5, 7, 8]])


def test_returns_to_go_discount_within_each_episode():
    d = as_dataset(tiny())                      # rewards 0..5 in episodes of 3, 1 and 2 steps
    g = 0.5
    np.testing.assert_allclose(d.returns_to_go(g), [0 + g * (1 + g * 2), 1 + g * 2, 2,
                                                    3, 4 + g * 5, 5])
    agent_one = np.array([1.0, 0, 0, 2, 0, 4])
    np.testing.assert_allclose(d.returns_to_go(1.0, agent_one), [1, 0, 0, 2, 4, 4])
    np.testing.assert_allclose(d.returns_to_go(1.0)[d.episodes_data.episode_starts[:-1]],
                               d.episode_returns())


def test_episode_batch_pads_and_masks():
    d = as_dataset(tiny())
    b = d.episode_batch([1, 0])
    assert b.observations.shape == (2, 4, 2, 3) and b.actions.shape == (2, 3, 2)
    np.testing.assert_array_equal(b.mask, [[True, False, False], [True, True, True]])
    np.testing.assert_array_equal(b.rewards, [[3, 0, 0], [0, 1, 2]])
    np.testing.assert_array_equal(b.observations[0, :2], d.episodes_data.obs[4:6])
    assert (b.observations[0, 2:] == 0).all()
    assert b.avail_actions[0, 2:].all(), "padding steps keep every action available"


def test_select_and_concatenate_round_trip():
    e = tiny()
    parts = [e.select_episodes([2]), e.select_episodes([0, 1])]
    joined = EpisodeArrays.concatenate(parts)
    back = joined.select_episodes([1, 2, 0])
    for key, value in e.arrays().items():
        if key != "seeds":
            np.testing.assert_array_equal(value, back.arrays()[key], err_msg=key)


def test_sampler_batches_are_consistent():
    d = as_dataset(tiny())
    batch = next(d.sampler(64, seed=1))
    assert batch.observations.shape == (64, 2, 3)
    # rewards encode the transition index, so the pairing can be checked row by row
    idx = batch.rewards.numpy().astype(int)
    np.testing.assert_array_equal(batch.next_observations.numpy(), d["next_observations"][idx])
    ep = next(d.sampler(5, kind="episodes", seed=2))
    assert ep.mask.shape[0] == 5 and ep.observations.shape[1] == ep.mask.shape[1] + 1
    with pytest.raises(ValueError, match="kind"):
        d.sampler(4, kind="steps")


def test_sampler_batches_carry_their_rows_next_actions_and_extras():
    import torch

    d = as_dataset(tiny())
    e = d.episodes_data
    sampler = d.sampler(64, seed=1)
    sampler.attach("row_id", torch.arange(d.n_transitions) * 10)
    batch = next(sampler)
    rows = batch.index.numpy()
    np.testing.assert_array_equal(batch.actions.numpy(), d["actions"][rows])
    torch.testing.assert_close(batch.extras["row_id"], batch.index * 10)
    last = np.isin(rows, e.episode_starts[1:] - 1)
    np.testing.assert_array_equal(batch.has_next_actions.numpy(), ~last)
    np.testing.assert_array_equal(batch.next_actions.numpy()[~last], d["actions"][rows[~last] + 1])
    assert (batch.next_actions.numpy()[last] == 0).all()
    # a discrete task without masks: every action available, when the sampler knows how many
    assert next(d.sampler(4, seed=0, n_actions=5)).avail_actions.shape[-1] == 5
    # episodes: extras follow the steps, padding reads row 0
    episodes = d.sampler(3, kind="episodes", seed=2)
    episodes.attach("row_id", torch.arange(d.n_transitions))
    ep = next(episodes)
    starts = torch.as_tensor(e.episode_starts[ep.index.numpy()])
    expected = (starts[:, None] + torch.arange(ep.mask.shape[1])) * ep.mask
    torch.testing.assert_close(ep.extras["row_id"], expected)
    # windows stay inside one episode
    w = next(d.sampler(4, kind="windows", window=2, seed=3))
    assert w.observations.shape[1] == 3 and w.mask.shape[1] == 2
    with pytest.raises(ValueError, match="window"):
        d.sampler(4, kind="windows")
    # the same seed draws the same rows: the generator is the sampler's whole state
    a, b = d.sampler(8, seed=5), d.sampler(8, seed=5)
    next(a)
    b.rng.bit_generator.state = a.rng.bit_generator.state
    torch.testing.assert_close(next(a).index, next(b).index)


def test_heterogeneous_agents_are_padded_with_masks(minari_root):
    from marl_offline_bench.envs import task_info

    info = task_info("mpe-world")
    assert info.obs_mask.shape == (4, 34)
    mask = info.action_mask
    assert mask[0].sum() == 6 and mask[1:].sum(axis=1).tolist() == [2, 2, 2]


def test_evaluate_policy_reports_returns_and_win_rates():
    from marl_offline_bench.envs import task_info

    info = task_info("equal_line-n4")
    result = mob.evaluate_policy(mob.RandomPolicy(info, 0), "equal_line-n4-random-v0", episodes=20)
    assert result.returns.shape == (20,) and result.win_rate is None
    assert (result.lengths == 50).all()
    # Agents that never move keep their starting gaps: the return is 10 (n-1) d_0' / L.
    stay = lambda obs, avail: np.zeros(obs.shape[:2], np.int64)
    still = mob.evaluate_policy(stay, "equal_line-n4", episodes=8, seed=3)
    first = mob.make_vec_env("equal_line-n4", 8).reset(batch_seed(3, 0))
    gaps = np.diff(np.sort(first.state * 10.0, axis=1), axis=1).min(axis=1)
    np.testing.assert_allclose(still.returns, 10 * 3 * gaps / 10.0, rtol=1e-4, atol=1e-5)
