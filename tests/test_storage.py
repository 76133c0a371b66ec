"""Round trip through Minari's layout, checksums, corrupt files and interrupted collects."""
import os
import signal
import subprocess
import sys
import time

import minari
import numpy as np
import pytest

import marl_offline_bench as mob
from marl_offline_bench import storage
from marl_offline_bench.registry import get_dataset

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

DATASET = "equal_line-n4-random-v0"


@pytest.fixture
def built(minari_root):
    mob.collect_dataset(DATASET, episodes=40, seed=3, num_envs=16, show_progress=False)
    return get_dataset(DATASET)


def test_round_trip_minari_and_load_agree(built):
    ours = mob.load(DATASET, build=False)
    theirs = minari.load_dataset(built.minari_id)
    assert theirs.total_episodes == ours.n_episodes == 40
    assert theirs.total_steps == ours.n_transitions
    for k, (mine, episode) in enumerate(zip(ours.episodes(), theirs.iterate_episodes())):
        obs = np.stack([episode.observations[a] for a in ("agent_0", "agent_1", "agent_2", "agent_3")], 1)
        np.testing.assert_array_equal(obs, mine["observations"])
        np.testing.assert_array_equal(episode.observations["state"], mine["states"])
        np.testing.assert_array_equal(episode.observations["avail_actions"].astype(bool), mine["avail_actions"])
        acts = np.stack([episode.actions[a] for a in ("agent_0", "agent_1", "agent_2", "agent_3")], 1)
        np.testing.assert_array_equal(acts, mine["actions"])
        np.testing.assert_array_equal(episode.rewards, mine["rewards"])
        np.testing.assert_array_equal(episode.terminations, mine["terminals"])
        np.testing.assert_array_equal(episode.truncations, mine["timeouts"])
        np.testing.assert_array_equal(episode.infos["agent_rewards"], mine["agent_rewards"])


def test_cache_rebuilt_from_minari_file_is_identical(built):
    first = mob.load(DATASET, build=False)
    root = storage.dataset_dir(built.minari_id)
    for f in (root / "cache").glob("*.npy"):
        f.unlink()
    again = mob.load(DATASET, build=False)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)


def test_no_transition_crosses_an_episode_end(built):
    d = mob.load(DATASET, build=False)
    starts = d["episode_starts"]
    ends = starts[1:] - 1
    ended = d["terminals"] | d["timeouts"]
    assert ended[ends].all()
    assert ended.sum() == len(ends), "only the last step of an episode may end it"
    mid = np.setdiff1d(np.arange(d.n_transitions), ends)
    np.testing.assert_array_equal(d["next_observations"][mid], d["observations"][mid + 1])
    # the step after an episode's last is the next episode's reset, never its successor
    assert not np.array_equal(d["next_observations"][ends[:-1]], d["observations"][ends[:-1] + 1])


def test_corrupt_file_is_named(built):
    main = storage.dataset_dir(built.minari_id) / "data" / storage.DATA_FILE
    raw = bytearray(main.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    main.write_bytes(bytes(raw))
    with pytest.raises(mob.CorruptDatasetError) as err:
        mob.load(DATASET, build=False)
    assert str(main) in str(err.value)


def test_truncated_file_is_named(built):
    main = storage.dataset_dir(built.minari_id) / "data" / storage.DATA_FILE
    with open(main, "r+b") as f:
        f.truncate(main.stat().st_size // 3)
    with pytest.raises(mob.CorruptDatasetError, match=str(main)):
        mob.load(DATASET, build=False)


def test_load_without_build_gives_the_command(minari_root):
    with pytest.raises(FileNotFoundError, match="marl-bench collect --env equal_line --task n4 --quality random"):
        mob.load(DATASET, build=False)


def test_load_builds_on_first_use(minari_root):
    d = mob.load("equal_line-n2-random-v0", progress=False)
    assert d.n_episodes == 5000 and d["observations"].shape[1:] == (2, 2)


def test_seeded_collect_repeats(minari_root, tmp_path):
    mob.collect_dataset(DATASET, episodes=30, seed=9, num_envs=8, show_progress=False)
    first = mob.load(DATASET, build=False)["actions"].copy()
    mob.collect_dataset(DATASET, episodes=30, seed=9, num_envs=8, overwrite=True, show_progress=False)
    np.testing.assert_array_equal(first, mob.load(DATASET, build=False)["actions"])


def test_killed_collect_leaves_nothing_that_looks_complete(minari_root):
    cmd = [sys.executable, "-m", "marl_offline_bench.cli", "collect", "--env", "equal_line",
           "--task", "n10", "--quality", "random", "--episodes", "60000", "--quiet"]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    parent = minari_root / "marl-bench" / "equal_line-n10"
    deadline = time.time() + 600   # generous: a machine busy with a sweep starts slowly
    while time.time() < deadline and not list(parent.glob(".tmp-*/data/main_data.hdf5")):
        time.sleep(0.05)
    assert list(parent.glob(".tmp-*")), "the collect never reached its write phase"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entry = get_dataset("equal_line-n10-random-v0")
    assert not storage.is_built(entry.minari_id)
    assert not any("equal_line-n10" in k for k in minari.list_local_datasets())
    with pytest.raises(FileNotFoundError):
        mob.load(entry.dataset_id, build=False)
    mob.collect_dataset(entry.dataset_id, episodes=20, show_progress=False)
    assert not list(parent.glob(".tmp-*")), "a rerun must clear the killed run's leftovers"
    assert mob.load(entry.dataset_id, build=False).n_episodes == 20
