"""`marl-bench collect --train`: retraining with the recorded config gives the shipped agents."""
import json

import numpy as np
import pytest
import torch

import marl_offline_bench as mob
from marl_offline_bench.behaviour import SHIPPED_ROOT
from marl_offline_bench.cli import main

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow


def _retrain(root):
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "expert",
                 "--train", "--train-dir", str(root), "--episodes", "8", "--quiet"]) == 0
    return root / "ship" / "equal_line-n2"


def test_train_flag_reproduces_the_shipped_n2_agents(minari_root, tmp_path, monkeypatch):
    """Retraining behaves like the shipped agents on any machine, and is bit-for-bit
    repeatable on one.

    Trained weights are only bit-equal on the machine (CPU kernels, BLAS) that made them, so
    the shipped checkpoints are compared by behaviour: the same selection rule picks an
    expert that plays as well as the shipped one and a medium agent inside the medium band.
    Bit-equality is checked against a second retraining made here.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ship = _retrain(tmp_path / "first")
    shipped_doc = json.loads((SHIPPED_ROOT / "equal_line-n2" / "config.json").read_text())
    ours_doc = json.loads((ship / "config.json").read_text())
    # behaviour: the expert's return on 320 evaluation episodes, within 2% of the shipped one
    assert ours_doc["ref_expert_retrained"]["value"] == \
        pytest.approx(shipped_doc["ref_expert"]["value"], rel=0.02)
    low, high = ours_doc["selection"]["medium_band"]
    assert low <= ours_doc["selection"]["medium"]["reeval_return"] <= high
    assert ours_doc["medium_replay"]["episodes"] > 0
    recipe = mob.load("equal_line-n2-expert-v0", build=False).card["recipe"]
    assert recipe["behaviour_checkpoint"] == str(ship / "expert.pt")
    # repeatability on this machine: a second retraining gives the same bytes
    again = _retrain(tmp_path / "second")
    for quality in ("expert", "medium"):
        first = torch.load(ship / f"{quality}.pt", weights_only=True)["agent"]
        second = torch.load(again / f"{quality}.pt", weights_only=True)["agent"]
        assert all(torch.equal(first[k], second[k]) for k in first), quality
    log = "medium_replay_actions.npz"
    assert (ship / log).read_bytes() == (again / log).read_bytes()


def test_another_engine_gets_its_own_ids(minari_root):
    from marl_offline_bench.registry import ENGINE_DATASETS, engine_variant, get_dataset

    twin = engine_variant("smac-2s3z-random-v0", "sc2")
    assert twin.dataset_id == "smac-2s3z-random-sc2-v0"
    assert twin.minari_id != get_dataset("smac-2s3z-random-v0").minari_id
    assert engine_variant("smac-2s3z-random-v0", "smax").dataset_id == "smac-2s3z-random-v0"
    assert "mpe-cn-expert-mpe2-v0" in ENGINE_DATASETS
    assert not any(d.startswith("equal_line") for d in ENGINE_DATASETS)
    assert main(["collect", "--env", "mpe", "--task", "cn", "--quality", "random",
                 "--engine", "mpe2", "--episodes", "2", "--quiet"]) == 0
    card = mob.load("mpe-cn-random-mpe2-v0", build=False).card
    assert card["engine"]["name"] == "mpe2"
    assert not mob.dataset_card("mpe-cn-random-v0")["status"] == "built"
    # StarCraft II data never borrow SMAX's references, and no SMAX agent acts on sc2.
    with np.testing.assert_raises_regex(ValueError, "sc2 engine"):
        mob.normalized_score("smac-2s3z-random-sc2-v0", [0.0])
    assert main(["collect", "--env", "smac", "--map", "2s3z", "--quality", "expert",
                 "--engine", "sc2", "--episodes", "2", "--quiet"]) == 2
    shipped = json.loads((SHIPPED_ROOT / "smac-2s3z" / "config.json").read_text())
    assert shipped["engine"]["name"] == "jaxmarl.smax"
