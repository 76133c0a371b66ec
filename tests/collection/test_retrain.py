"""`marl-bench collect --train`: retraining with the recorded config gives the shipped agents."""
import json

import numpy as np
import torch

import marl_offline_bench as mob
from collection.behaviour import BEHAVIOUR_DIR_ENV, CHECKPOINT_ROOT
from marl_offline_bench.cli import main


def test_train_flag_reproduces_the_shipped_n2_agents(minari_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(BEHAVIOUR_DIR_ENV, "")  # restored (unset) after the test
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "expert",
                 "--train", "--train-dir", str(tmp_path / "runs"), "--episodes", "8",
                 "--quiet"]) == 0
    ship = tmp_path / "runs" / "ship" / "equal_line-n2"
    for quality in ("expert", "medium"):
        ours = torch.load(ship / f"{quality}.pt", weights_only=True)["agent"]
        shipped = torch.load(CHECKPOINT_ROOT / "equal_line-n2" / f"{quality}.pt",
                             weights_only=True)["agent"]
        assert all(torch.equal(ours[k], shipped[k]) for k in shipped), quality
    log = ship / "medium_replay_actions.npz"
    assert log.read_bytes() == (CHECKPOINT_ROOT / "equal_line-n2" / log.name).read_bytes()
    recipe = mob.load("equal_line-n2-expert-v0", build=False).card["recipe"]
    assert recipe["behaviour_checkpoint"] == str(ship / "expert.pt")


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
    shipped = json.loads((CHECKPOINT_ROOT / "smac-2s3z" / "config.json").read_text())
    assert shipped["engine"]["name"] == "jaxmarl.smax"
