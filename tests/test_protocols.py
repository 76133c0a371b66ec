"""The `full` protocol is the reference code's budget, task by task; `tenth` is a tenth of it."""
import pytest

from baselines.bc import BCContinuous
from baselines.cfcql import CFCQLContinuous, CFCQLDiscrete
from baselines.maicq_continuous import MAICQContinuous
from marl_offline_bench.protocols import (DISCRETE_T_MAX, REFERENCE, budget_source,
                                          protocol_budget)
from marl_offline_bench.registry import DATASETS, TASKS


@pytest.mark.parametrize("dataset_id, updates", [
    # continuous/main.py: rounds = num_steps // steps_per_update + 1, five critic updates each
    ("mpe-cn-expert-v0", 10_005), ("mpe-pp-random-v0", 10_005),
    ("mpe-world-medium-v0", 25_005), ("mamujoco-halfcheetah_2x3-expert-v0", 500_005),
    # run.py: floor(t_max / (128 x 50)) + 1 on Equal_Line's fixed 50-step episodes
    ("equal_line-n6-medium-v0", 1_571), ("equal_line-n2-random-v0", 1_571),
])
def test_full_budget_is_the_reference_codes(dataset_id, updates):
    assert protocol_budget("full", dataset_id).updates == updates


def test_full_discrete_budget_follows_the_datasets_episode_length():
    # smac-2s3z-expert-v0's canonical build: 261,851 transitions in 5,000 episodes
    assert protocol_budget("full", "smac-2s3z-expert-v0").updates == \
        int(DISCRETE_T_MAX // (128 * 261_851 / 5_000)) + 1 == 1_500
    assert "52.37" in budget_source("full", "smac-2s3z-expert-v0")


def test_every_task_has_a_reference_budget_with_its_source():
    assert set(REFERENCE) == set(TASKS)
    for ref in REFERENCE.values():
        assert ref.source and ("main.py" in ref.source or "run.py" in ref.source)


def test_quick_and_smoke_budgets_are_unchanged():
    # the published quick records are compared against this budget: changing it re-runs them
    budget = protocol_budget("quick", "mpe-cn-expert-v0")
    assert (budget.updates, budget.eval_every, budget.eval_episodes, budget.final_episodes) == \
        (1000, 250, 32, 320)


def test_full_configs_take_the_reference_settings():
    cn = CFCQLContinuous.config_for("mpe-cn-expert-v0", "full")
    assert (cn.batch_size, cn.lr, cn.policy_samples, cn.critic_updates_per_round) == \
        (1024, 0.01, False, 5)
    assert cn.tau == 0.0  # the reference command: lambda = 1/n, no VAE
    hc = CFCQLContinuous.config_for("mamujoco-halfcheetah_2x3-medium-v0", "full")
    assert (hc.batch_size, hc.lr, hc.policy_samples, hc.hidden_dim) == (256, 3e-4, True, 256)
    assert CFCQLDiscrete.config_for("smac-2s3z-medium-v0", "full").batch_size == 128
    assert BCContinuous.config_for("mpe-pp-expert-v0", "full").transition_batch_size == 1024
    # a learner not built on the reference code keeps its own batch (MAICQ counts windows)
    assert MAICQContinuous.config_for("mpe-cn-expert-v0", "full").batch_size == \
        MAICQContinuous.config_for("mpe-cn-expert-v0").batch_size
    # quick keeps its CPU sizing
    assert CFCQLContinuous.config_for("mpe-cn-expert-v0", "quick").batch_size == 256


def test_tenth_is_full_with_a_tenth_of_the_updates():
    dataset_id = "mamujoco-halfcheetah_2x3-medium-v0"
    full, tenth = protocol_budget("full", dataset_id), protocol_budget("tenth", dataset_id)
    assert (tenth.updates, tenth.eval_every) == (50_001, 2_500)  # ceil(500,005 / 10), 25,000 / 10
    assert tenth.updates // tenth.eval_every == full.updates // full.eval_every  # as many points
    assert tenth.final_episodes == full.final_episodes
    assert budget_source("tenth", dataset_id).startswith("1/10 of the updates of protocol 'full'")
    # the settings are full's, the VAE-free lambda = 1/n included
    assert CFCQLContinuous.config_for(dataset_id, "tenth") == \
        CFCQLContinuous.config_for(dataset_id, "full")


def test_dataset_ids_all_have_a_full_budget():
    for dataset_id in DATASETS:
        assert protocol_budget("full", dataset_id).updates > 0
