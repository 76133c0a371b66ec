"""Behaviour cloning (baselines/bc.py): fits what it sees, resumes exactly, masks padding."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
import marl_offline_bench as mob
from baselines.bc import BCContinuous, BCDiscrete, continuous_bc_loss
from marl_offline_bench.dataset import EpisodeArrays, MARLDataset
from marl_offline_bench.envs import TaskInfo, task_info

N2 = "equal_line-n2-random-v0"


@pytest.fixture
def equal_line(minari_root):
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return mob.load(N2, build=False, progress=False)


def continuous_dataset(episodes=16, length=5, seed=0):
    """Two agents, observations of size 3, action sizes 2 and 1; a_i = tanh(o_i[:2] - 0.5)."""
    info = TaskInfo(task_id="mpe-cn", agent_ids=("a", "b"), obs_dims=(3, 3), state_dim=6,
                    discrete=False, n_actions=0, action_dims=(2, 1), episode_limit=length)
    rng = np.random.default_rng(seed)
    n_steps = episodes * length
    obs = rng.uniform(-1, 1, (n_steps + episodes, 2, 3)).astype(np.float32)
    rows = np.arange(n_steps) + np.repeat(np.arange(episodes), length)
    actions = np.tanh(obs[rows, :, :2] - 0.5) * info.action_mask
    data = EpisodeArrays(
        obs=obs, states=obs.reshape(len(obs), 6), avail_actions=None,
        actions=actions.astype(np.float32), rewards=np.zeros(n_steps, np.float32),
        agent_rewards=np.zeros((n_steps, 2), np.float32), terminals=np.zeros(n_steps, bool),
        timeouts=np.zeros(n_steps, bool), won=None,
        episode_starts=np.arange(episodes + 1, dtype=np.int64) * length,
        seeds=np.zeros(episodes, np.int64))
    dataset = MARLDataset(data, dataset_id="mpe-cn-random-v0", task_id="mpe-cn", card={},
                          obs_mask=info.obs_mask, action_mask=info.action_mask)
    return info, dataset


def test_factory_picks_by_action_space_and_applies_tables(equal_line):
    algo = build_algorithm("bc", task_info("equal_line-n2"), equal_line, seed=3, lr=1e-2)
    assert isinstance(algo, BCDiscrete) and algo.config.seed == 3 and algo.config.lr == 1e-2
    info, dataset = continuous_dataset()
    assert isinstance(build_algorithm("bc", info, dataset), BCContinuous)
    assert build_algorithm("bc", info, dataset).config.lr == 1e-3  # the MPE entry of the per-dataset table
    mujoco = BCContinuous.config_for("mamujoco-halfcheetah_2x3-expert-v0")
    assert (mujoco.hidden_dim, mujoco.transition_batch_size) == (256, 256)
    with pytest.raises(ValueError, match="lr must be positive"):
        BCDiscrete.config_for(N2, lr=0.0)


def test_discrete_bc_learns_a_constant_action(equal_line):
    equal_line.episodes_data.actions[:] = 7
    algo = build_algorithm("bc", task_info("equal_line-n2"), equal_line, episode_batch_size=8, lr=1e-2)
    first = algo.update()["bc_loss"]
    for _ in range(40):
        last = algo.update()["bc_loss"]
    assert first > 2.0 and last < 0.1  # from about log(11) to a near-certain action 7
    policy = algo.policy()
    policy.reset(2)
    assert (policy(np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 11), bool)) == 7).all()
    assert len(mob.evaluate_policy(algo.policy(), N2, episodes=2).returns) == 2


def test_continuous_bc_fits_and_keeps_padding_zero():
    info, dataset = continuous_dataset()
    algo = build_algorithm("bc", info, dataset, transition_batch_size=64, lr=1e-2)
    for _ in range(300):
        metrics = algo.update()
    assert metrics["bc_loss"] < 5e-3
    actions = algo.policy()(dataset.episodes_data.obs[:4], None)
    assert actions.shape == (4, 2, 2) and (actions[:, 1, 1] == 0).all()
    assert np.abs(actions).max() <= 1.0


def test_continuous_loss_ignores_padded_dimensions():
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    target = torch.zeros(3, 2, 2)
    pred = target.clone()
    pred[:, 1, 1] = 5.0  # a padded dimension: no loss
    assert continuous_bc_loss(pred, target, mask).item() == 0.0
    pred[:, 0, 0] = 1.0
    assert continuous_bc_loss(pred, target, mask).item() == pytest.approx(1.0 / 3.0)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_state_dict_resumes_exactly_through_weights_only_load(round_trip, kind, equal_line):
    if kind == "discrete":
        info, dataset, extra = task_info("equal_line-n2"), equal_line, {"episode_batch_size": 8}
    else:
        (info, dataset), extra = continuous_dataset(), {"transition_batch_size": 32}
    a = build_algorithm("bc", info, dataset, seed=1, **extra)
    for _ in range(5):
        a.update()
    b = build_algorithm("bc", info, dataset, seed=1, **extra)
    b.load_state_dict(round_trip(a.state_dict()))
    for _ in range(3):
        assert a.update() == b.update()
