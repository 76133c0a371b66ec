import json

import pytest

import marl_offline_bench as mob
from marl_offline_bench.registry import DATASETS, QUALITIES, TASKS, get_dataset, record_reference


def test_thirteen_tasks_five_qualities():
    assert len(TASKS) == 13
    assert len(DATASETS) == 65
    for task in TASKS:
        for q in QUALITIES:
            assert f"{task}-{q}-v0" in DATASETS


def test_ids_are_resolved_not_split():
    entry = get_dataset("mamujoco-halfcheetah_2x3-medium-replay-v0")
    assert entry.quality == "medium-replay"
    assert entry.task_id == "mamujoco-halfcheetah_2x3"
    assert entry.minari_id == "marl-bench/mamujoco-halfcheetah_2x3/medium-replay-v0"
    assert get_dataset("smac-3s_vs_5z-expert-v0").task.name == "3s_vs_5z"


def test_unknown_id_lists_nearest():
    with pytest.raises(KeyError) as err:
        get_dataset("equal_line-n6-expertt-v0")
    assert "equal_line-n6-expert-v0" in str(err.value)
    with pytest.raises(KeyError) as err:
        mob.load("smac-2s3z-medum-v0")
    assert "smac-2s3z-medium-v0" in str(err.value)


def test_normalized_score_needs_measured_references(tmp_path, monkeypatch):
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(tmp_path / "refs.json"))
    with pytest.raises(ValueError, match="ref_expert"):
        mob.normalized_score("smac-2s3z-medium-v0", [1.0])
    record_reference("smac-2s3z", "ref_random", {"value": 0.5, "episodes": 1000})
    record_reference("smac-2s3z", "ref_expert", {"value": 1.5, "episodes": 320})
    assert mob.normalized_score("smac-2s3z-medium-v0", 1.0) == pytest.approx(50.0)
    assert mob.normalized_score("smac-2s3z", [0.5, 1.5]).tolist() == [0.0, 100.0]
    assert json.loads((tmp_path / "refs.json").read_text())["smac-2s3z"]["ref_expert"]["episodes"] == 320


def test_shipped_reference_scores_are_measurements():
    """Every shipped reference carries the episode count it was measured on."""
    for task_id in TASKS:
        for kind, ref in mob.reference_scores(task_id).items():
            minimum = 100 if task_id.startswith("mamujoco") else 1000 if kind == "ref_random" else 320
            assert ref["episodes"] >= minimum, (task_id, kind, ref)
            assert "seed" in ref and "value" in ref
