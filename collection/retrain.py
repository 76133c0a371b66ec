"""Retraining a task's behaviour agents from scratch with their recorded config.

``marl-bench collect ... --train`` lands here: it trains the task's behaviour learner with the
config recorded beside the shipped checkpoints (``marl_offline_bench/data/behaviour/<task>/config.json``),
resuming a run it finds half done, then chooses expert and medium exactly as the shipped ones
were chosen and ships them, with what rebuilds medium-replay, into a folder of the same layout.
Collection then acts from that folder (``collect_dataset(..., behaviour_root=...)``) instead of the
package's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .behaviour import (CHECKPOINT_ROOT, measure_expert_reference, select_checkpoints,
                        ship_checkpoints, ship_medium_replay)
from .run import write_json

__all__ = ["recorded_config", "retrain"]


def recorded_config(task_id: str) -> tuple[str, dict[str, Any]]:
    """(learner name, run config) recorded with the shipped behaviour agents of a task."""
    path = CHECKPOINT_ROOT / task_id / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{task_id} ships no behaviour agents, so there is no recorded "
                                f"config to retrain with ({path} is missing)")
    doc = json.loads(path.read_text())
    return doc.get("algorithm", "qmix"), doc["config"]


def _train(algorithm: str, config: dict[str, Any], run_dir: Path, log: Callable) -> None:
    resume = (run_dir / "resume.pt").is_file()
    if algorithm == "qmix":
        from .qmix import QMIXConfig, QMIXTrainer

        trainer = QMIXTrainer(QMIXConfig(**config), run_dir)
    elif algorithm == "matd3":
        from .matd3 import MATD3Config, MATD3Trainer

        trainer = MATD3Trainer(MATD3Config(**config), run_dir)
    else:
        raise ValueError(f"no trainer for behaviour learner {algorithm!r}")
    try:
        trainer.train(resume=resume, log=log)
    finally:
        trainer.close()


def retrain(task_id: str, root: str | Path, log: Callable[[str], None] = print,
            reeval_episodes: int = 320) -> Path:
    """Train, choose and ship a task's behaviour agents under ``root``; returns the folder to
    act from (``root/ship``, holding ``<task_id>/``).

    The run lives in ``root/runs/<task_id>`` and resumes if interrupted. Training takes what the
    recorded budget takes (``config.json`` beside the shipped checkpoints says how long the
    shipped run took).
    """
    root = Path(root)
    algorithm, config = recorded_config(task_id)
    run_dir = root / "runs" / task_id
    ship_root = root / "ship"
    dest = ship_root / task_id
    # XLA on one thread, like the shipped runs; the caller may have chosen otherwise.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
    log(f"{task_id}: training {algorithm.upper()} with the recorded config in {run_dir} "
        f"({config['env_steps']:,} environment steps)")
    _train(algorithm, config, run_dir, log)
    selection = select_checkpoints(run_dir, reeval_episodes=reeval_episodes)
    ship_checkpoints(run_dir, selection, dest)
    entry = measure_expert_reference(task_id, dest / "expert.pt", episodes=reeval_episodes,
                                     record=False)
    doc = json.loads((dest / "config.json").read_text())
    doc["ref_expert_retrained"] = entry
    write_json(dest / "config.json", doc)
    ship_medium_replay(run_dir, task_id, dest=dest)
    shipped = json.loads((CHECKPOINT_ROOT / task_id / "config.json").read_text())["ref_expert"]
    log(f"{task_id}: retrained expert {entry['value']:.3f} ± {entry['std']:.3f} "
        f"(shipped: {shipped['value']:.3f})")
    return ship_root
