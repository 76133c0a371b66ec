"""The actor-critic backbone's round schedule: TD3's and OMAR's code's, as the learners set them."""
from __future__ import annotations

import pytest

from baselines.actor_critic_backbone import RoundSchedule


def _positions(schedule: RoundSchedule, updates: int = 6) -> tuple[list[int], list[int]]:
    """The update counts (before the update) at which the actors step and the targets move."""
    return ([u for u in range(updates) if schedule.actor_due(u)],
            [u for u in range(updates) if schedule.targets_due(u)])


def test_td3_steps_actors_and_targets_at_every_policy_delay_th_update():
    # MATD3-BC and the MATD3 trainer: after updates 2, 4, 6 (counted from 1)
    assert _positions(RoundSchedule(2, actor_step=1, target_step=1)) == ([1, 3, 5], [1, 3, 5])


def test_omar_round_steps_actors_first_and_targets_last():
    # CFCQL and MACQL, continuous: the first update of a round of 3 steps the actors, the last
    # moves the targets
    assert _positions(RoundSchedule(3, actor_step=0, target_step=2)) == ([0, 3], [2, 5])


def test_targets_every_update():
    # ICQL and OMAR: the targets move after every update
    assert _positions(RoundSchedule(2, actor_step=0, target_step=None)) == ([0, 2, 4],
                                                                           list(range(6)))


@pytest.mark.parametrize("length, actor_step, target_step", [(0, 0, 0), (2, 2, 0), (2, 0, -1)])
def test_schedule_rejects_positions_outside_the_round(length, actor_step, target_step):
    with pytest.raises(ValueError):
        RoundSchedule(length, actor_step, target_step)
