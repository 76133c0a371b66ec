"""Behaviour checkpoints: acting from a checkpoint, choosing and shipping, ref_expert, replay."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from collection import behaviour
from collection.behaviour import (measure_expert_reference, read_curve, record_shipped_reference,
                                  replay_snapshots, select_checkpoints, ship_checkpoints)
from collection.qmix import EVAL_SEED_OFFSET, QMIXTrainer, config_for, to_episode_batch
from marl_offline_bench.behaviour import (MEDIUM_REPLAY_LOG, behaviour_policy, load_checkpoint,
                                          rebuild_medium_replay)
from marl_offline_bench.rollout import rollout
from marl_offline_bench.envs import make_vec_env

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny Equal_Line n2 run: 16 episodes in 4 acting batches, 3 evaluations."""
    out = tmp_path_factory.mktemp("qmix") / "run"
    cfg = config_for("equal_line-n2", env_steps=800, num_envs=4, buffer_size=32, batch_size=4,
                     eval_interval_steps=400, eval_episodes=4, target_update_episodes=8,
                     snapshot_chunk=3, epsilon_anneal_steps=400)
    trainer = QMIXTrainer(cfg, out)
    trainer.train(log=lambda line: None)
    return out, trainer


def test_checkpoint_policy_repeats_the_recorded_evaluation(run):
    out, trainer = run
    row = read_curve(out)[-1]
    policy = behaviour_policy(out / row["checkpoint"])
    env = make_vec_env("equal_line-n2", trainer.cfg.eval_episodes)
    data = rollout(env, policy, trainer.cfg.eval_episodes, trainer.cfg.seed + EVAL_SEED_OFFSET)
    assert data.episode_returns().mean() == pytest.approx(row["eval_return"], abs=1e-4)


def test_snapshots_replay_the_learners_episodes(run):
    out, trainer = run
    replayed = to_episode_batch(replay_snapshots(out, until_episode=16), trainer.info)
    stored = trainer.replay.data
    for name in ("observations", "actions", "rewards", "mask"):
        np.testing.assert_array_equal(getattr(replayed, name), getattr(stored, name)[:16], name)
    tail = to_episode_batch(replay_snapshots(out, until_episode=10, last_episodes=4),
                            trainer.info)
    np.testing.assert_array_equal(tail.actions, stored.actions[6:10])


def test_select_finds_a_medium_between_evaluations_and_ships_it(run, tmp_path, monkeypatch):
    out, _ = run
    # A curve that jumps over the medium band, and made-up re-evaluations keyed by env steps,
    # so that only the snapshot between two evaluations lands in the band.
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    curve = (copy / "curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in curve[1:]]
    for row, value in zip(rows, ["6.0", "0.0", "10.0"]):
        row["eval_return"] = value
    (copy / "curve.csv").write_text("\n".join([curve[0]] + [",".join(r[h] for h in header)
                                                            for r in rows]) + "\n")
    made_up = {0: 6.0, 200: 7.0, 400: 0.0, 600: 4.0, 800: 10.0}

    def fake_reevaluate(run_dir, row, task_id, episodes, seed, cache):
        cache[row["env_steps"]] = {**row, "reeval_return": made_up[row["env_steps"]],
                                   "reeval_std": 0.0}
        return cache[row["env_steps"]]

    monkeypatch.setattr(behaviour, "_reevaluate", fake_reevaluate)
    selection = select_checkpoints(copy, reeval_episodes=8, top_k=2)
    assert selection.expert["env_steps"] == 800
    assert selection.medium["env_steps"] == 600
    assert selection.medium["checkpoint"].startswith("snapshots/")

    dest = ship_checkpoints(copy, selection, tmp_path / "ship")
    medium = load_checkpoint(dest / "medium.pt")
    assert medium["env_steps"] == 600 and medium["episodes"] == 12
    assert "mixer" not in medium and "optimiser" not in medium
    doc = json.loads((dest / "config.json").read_text())
    assert doc["medium_replay_until_episode"] == 12
    assert (dest / "curve.csv").read_text() == (copy / "curve.csv").read_text()


def test_measure_expert_reference_records_it(run, tmp_path, monkeypatch):
    out, _ = run
    checkpoint = out / read_curve(out)[-1]["checkpoint"]
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(tmp_path / "refs.json"))
    entry = measure_expert_reference("equal_line-n2", checkpoint, episodes=8)
    recorded = json.loads((tmp_path / "refs.json").read_text())["equal_line-n2"]["ref_expert"]
    assert recorded["value"] == pytest.approx(entry["value"])
    assert recorded["episodes"] == 8 and recorded["checkpoint"].endswith(checkpoint.name)
    with pytest.raises(ValueError, match="trained on equal_line-n2"):
        measure_expert_reference("equal_line-n4", checkpoint, episodes=8, record=False)

    # A reference kept in a shipped config.json goes to the registry without measuring again.
    (tmp_path / "ship" / "equal_line-n4").mkdir(parents=True)
    (tmp_path / "ship" / "equal_line-n4" / "config.json").write_text(
        json.dumps({"ref_expert": {**entry, "value": 7.5}}))
    record_shipped_reference("equal_line-n4", root=tmp_path / "ship")
    recorded = json.loads((tmp_path / "refs.json").read_text())["equal_line-n4"]["ref_expert"]
    assert recorded["value"] == 7.5
    with pytest.raises(FileNotFoundError, match="no shipped"):
        record_shipped_reference("equal_line-n6", root=tmp_path / "ship")


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="collection.qmix"):
        load_checkpoint(tmp_path / "nope.pt")


def test_shipped_medium_replay_rebuilds_the_learners_replay(run, tmp_path):
    """The action log of the medium-replay window re-simulates exactly what the learner held."""
    from marl_offline_bench.action_log import read_action_log

    out, trainer = run
    dest = tmp_path / "ship"
    dest.mkdir()
    (dest / "config.json").write_text(json.dumps({"medium_replay_until_episode": 14}))
    entry = behaviour.ship_medium_replay(out, "equal_line-n2", dest=dest)
    # buffer_size 32 holds every episode before 14.
    assert (entry["first_episode"], entry["until_episode"], entry["acting_batches"]) == (0, 14, 4)
    assert entry["file"] == MEDIUM_REPLAY_LOG
    (tmp_path / "equal_line-n2").symlink_to(dest)
    data, how = rebuild_medium_replay("equal_line-n2", root=tmp_path)
    assert how["matches_shipped_digest"] is True
    replayed = to_episode_batch(data, trainer.info)
    stored = trainer.replay.data
    for name in ("observations", "actions", "rewards", "mask"):
        np.testing.assert_array_equal(getattr(replayed, name), getattr(stored, name)[:14], name)
    tail, how = rebuild_medium_replay("equal_line-n2", episodes=3, root=tmp_path)
    assert tail.n_episodes == 3 and how["first_episode"] == 11
    np.testing.assert_array_equal(tail.actions, data.select_episodes(np.arange(11, 14)).actions)

    # A log whose actions were tampered with no longer gives back the recorded episodes.
    log = read_action_log(dest / entry["file"])
    log["actions"][5] = (log["actions"][5] + 1) % 11
    meta = log.pop("meta")
    np.savez_compressed(dest / entry["file"], meta=np.frombuffer(json.dumps(meta).encode(),
                                                                 np.uint8), **log)
    with pytest.warns(RuntimeWarning, match="differs"):
        _, how = rebuild_medium_replay("equal_line-n2", root=tmp_path)
    assert how["matches_shipped_digest"] is False
