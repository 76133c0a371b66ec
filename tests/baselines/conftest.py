"""Datasets shared by the baseline tests.

* ``mpe_cn_tiny``: a real continuous dataset, 40 random mpe-cn episodes (1000 transitions),
  collected once per test session into a private Minari root.
* ``tiny_continuous``: a factory of hand-made continuous datasets (agents of different action
  sizes, optionally one fixed action), built in memory without any simulator.

And for every baseline test: one torch thread and seed 0 (``one_thread``), and ``round_trip``,
a state dict through the bytes a run's checkpoint holds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from marl_offline_bench.dataset import EpisodeArrays, MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.runstore import checkpoint_from_bytes, checkpoint_to_bytes


@pytest.fixture(autouse=True)
def one_thread():
    """Keep each test on one core (the machine is shared) and its randomness fixed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def round_trip():
    """``round_trip(state) -> state`` through the bytes of a run's checkpoint (``torch.save``,
    then ``torch.load(weights_only=True)``), as a resumed run reads it."""
    return lambda state: checkpoint_from_bytes(checkpoint_to_bytes(state), "a test's state")


@pytest.fixture(scope="session")
def mpe_cn_tiny(tmp_path_factory):
    """(TaskInfo, MARLDataset) of 40 random mpe-cn episodes, built once per session."""
    import marl_offline_bench as mob
    from marl_offline_bench.envs import task_info

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        mob.collect_dataset("mpe-cn-random-v0", episodes=40, num_envs=40, show_progress=False)
        data = mob.load("mpe-cn-random-v0", build=False)
    return task_info("mpe-cn"), data


def _tiny_continuous(action_dims=(3, 2), obs_dim=4, state_dim=6, episodes=20, length=10,
                     fixed_action=None, seed=0) -> tuple[TaskInfo, MARLDataset]:
    n = len(action_dims)
    info = TaskInfo(task_id="test-continuous", agent_ids=tuple(f"a{i}" for i in range(n)),
                    obs_dims=(obs_dim,) * n, state_dim=state_dim, discrete=False, n_actions=0,
                    action_dims=tuple(action_dims), episode_limit=length)
    rng = np.random.default_rng(seed)
    steps, d = episodes * length, info.action_dim
    actions = rng.uniform(-1, 1, (steps, n, d)) if fixed_action is None else \
        np.full((steps, n, d), fixed_action)
    arrays = EpisodeArrays(
        obs=rng.normal(size=(steps + episodes, n, obs_dim)).astype(np.float32),
        states=rng.normal(size=(steps + episodes, state_dim)).astype(np.float32),
        avail_actions=None, actions=(actions * info.action_mask).astype(np.float32),
        rewards=rng.normal(scale=0.1, size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=np.zeros(steps, bool),
        timeouts=np.tile(np.arange(length) == length - 1, episodes), won=None,
        episode_starts=np.arange(0, steps + 1, length).astype(np.int64),
        seeds=np.zeros(episodes, np.int64))
    return info, MARLDataset(arrays, "test-continuous-v0", info.task_id, {}, info.obs_mask,
                             info.action_mask)


@pytest.fixture
def tiny_continuous():
    """Factory: ``tiny_continuous(action_dims=(3, 2), fixed_action=None, ...) -> (info, data)``.

    Episodes of ``length`` steps that all time out, Gaussian observations and states, small
    random team rewards; actions uniform on each agent's box, or all ``fixed_action``.
    """
    return _tiny_continuous
