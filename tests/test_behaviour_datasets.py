"""Datasets made by the shipped behaviour checkpoints: quality ordering and the mixed recipe."""
import numpy as np
import pytest

import marl_offline_bench as mob
from marl_offline_bench.collect import build_blocker
from marl_offline_bench.registry import get_dataset, recorded_statistics

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

SHIPPED = ["equal_line-n2", "equal_line-n4", "smac-2s3z", "smac-3s_vs_5z", "mpe-world"]


@pytest.mark.parametrize("task", SHIPPED)
def test_shipped_tasks_build_every_quality(task):
    for quality in mob.QUALITIES:
        assert build_blocker(get_dataset(f"{task}-{quality}-v0")) is None


def _returns(dataset_id):
    return mob.load(dataset_id, build=False).episode_returns()


@pytest.mark.parametrize("task,episodes", [("equal_line-n4", 40), ("smac-2s3z", 16), ("mpe-pp", 64)])
def test_quality_ordering_on_small_recollections(minari_root, task, episodes):
    for quality in mob.QUALITIES:
        mob.collect_dataset(f"{task}-{quality}-v0", episodes=episodes, seed=1, num_envs=episodes,
                            show_progress=False)
    r, mr, m, e = (_returns(f"{task}-{q}-v0").mean()
                   for q in ("random", "medium-replay", "medium", "expert"))
    assert r < m < e, (r, m, e)
    # The last episodes of the learner's replay, just before it reached medium.
    assert r < mr < e, (r, mr, e)
    mixed = mob.load(f"{task}-mixed-v0", build=False)
    assert mixed.card["recipe"]["parts"]["medium"]["episodes"] == episodes // 2
    assert not np.array_equal(mixed["actions"], mob.load(f"{task}-expert-v0", build=False)["actions"][: len(mixed["actions"])])
    assert m < mixed.episode_returns().mean() < e


def _shipped_tasks() -> list[str]:
    from marl_offline_bench.behaviour import SHIPPED_ROOT

    return sorted(p.parent.name for p in SHIPPED_ROOT.glob("*/expert.pt"))


@pytest.mark.parametrize("task", _shipped_tasks())
def test_expert_reference_is_reproduced(minari_root, task):
    """A shipped expert, re-measured on 32 episodes (MaMuJoCo: 4), lands within its recorded
    spread: the mean of n episodes stays within 3 standard errors of the reference."""
    from marl_offline_bench.behaviour import behaviour_policy, shipped_checkpoint

    ref = mob.reference_scores(task)["ref_expert"]
    episodes = 4 if task.startswith("mamujoco") else 32
    result = mob.evaluate_policy(behaviour_policy(shipped_checkpoint(task, "expert")), task,
                                 episodes=episodes, seed=77)
    tolerance = max(3 * ref["std"] / np.sqrt(episodes), 0.02 * abs(ref["value"]), 1e-3)
    assert abs(result.mean_return - ref["value"]) <= tolerance, (result.mean_return, ref)
    if "win_rate" in ref:
        assert abs(result.win_rate - ref["win_rate"]) <= max(
            3 * np.sqrt(ref["win_rate"] * (1 - ref["win_rate"]) / episodes), 0.1)


@pytest.mark.parametrize("dataset_id", ["smac-2s3z-expert-v0", "mpe-world-mixed-v0"])
def test_seeded_behaviour_collect_repeats(minari_root, dataset_id):
    """The same seed gives the same episodes (SMAX keys and greedy QMIX; JaxMARL with the
    shipped prey and MATD3's seeded action noise)."""
    first = None
    for _ in range(2):
        mob.collect_dataset(dataset_id, episodes=6, seed=5, num_envs=6,
                            overwrite=True, show_progress=False)
        data = mob.load(dataset_id, build=False)
        arrays = (data["observations"].copy(), data["actions"].copy(), data["rewards"].copy())
        if first is None:
            first = arrays
    for a, b in zip(first, arrays):
        np.testing.assert_array_equal(a, b)


def test_recorded_statistics_keep_the_quality_order():
    """Over the full canonical datasets whose statistics are recorded in the package."""
    checked = 0
    for task in mob.TASKS:
        means = {q: (recorded_statistics(f"{task}-{q}-v0") or {}).get("statistics", {})
                 .get("return_mean") for q in mob.QUALITIES}
        if None in means.values():
            continue
        checked += 1
        assert means["random"] < means["medium"] < means["expert"], (task, means)
        assert means["random"] < means["medium-replay"] < means["medium"], (task, means)
        assert means["mixed"] not in (means["medium"], means["expert"]), (task, means)
    assert checked >= 1


def test_info_shows_the_canonical_build_before_building(minari_root, capsys):
    from marl_offline_bench.cli import main

    card = mob.dataset_card("smac-2s3z-expert-v0")
    assert card["status"] == "buildable"
    assert card["canonical_build"]["statistics"]["episodes"] == 5000
    assert main(["info", "smac-2s3z-expert-v0"]) == 0
    assert "canonical : episodes=5000" in capsys.readouterr().out
