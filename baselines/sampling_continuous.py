"""Batches and per-task settings shared by the continuous-action baselines.

* :data:`BACKBONE_PER_TASK` and :func:`continuous_per_dataset`: the continuous backbone of
  ``ALGORITHMS.md`` (OMAR's code: MPE hidden 64, batch 1024, lr 1e-3, target rate 0.01;
  HalfCheetah hidden 256, batch 256, lr 3e-4, rate 0.005) with gamma as a per-task setting
  (0.95 everywhere, as the code ran it; its HalfCheetah script meant 0.99 but never passed it
  on). Each algorithm builds its per-dataset table from it, so the numbers live in one place.
Batches come from the dataset's own sampler (``MARLDataset.sampler(kind=...)``: transitions,
episodes or windows).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marl_offline_bench.registry import DATASETS

__all__ = ["BACKBONE_PER_TASK", "continuous_per_dataset"]

#: Continuous task id -> the backbone's settings for it.
BACKBONE_PER_TASK: dict[str, dict[str, Any]] = {
    "mpe-cn": dict(hidden_dim=64, batch_size=1024, lr=1e-3, target_rate=0.01, gamma=0.95),
    "mpe-pp": dict(hidden_dim=64, batch_size=1024, lr=1e-3, target_rate=0.01, gamma=0.95),
    "mpe-world": dict(hidden_dim=64, batch_size=1024, lr=1e-3, target_rate=0.01, gamma=0.95),
    "mamujoco-halfcheetah_2x3": dict(hidden_dim=256, batch_size=256, lr=3e-4, target_rate=0.005,
                                     gamma=0.95),
}


def continuous_per_dataset(
        per_task: Mapping[str, Mapping[str, Any]] | None = None,
        per_quality: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """A per-dataset table for every registered dataset of a continuous task.

    Each entry is the task's :data:`BACKBONE_PER_TASK` settings, then ``per_task[task]``, then
    ``per_quality[task][quality]`` (e.g. an algorithm's alpha from its authors' table).

    Args:
        per_task: task id -> overrides for all of its datasets.
        per_quality: task id -> quality ("random", "medium", ...) -> overrides.

    Returns:
        dataset id -> config overrides.
    """
    per_task, per_quality = per_task or {}, per_quality or {}
    return {
        dataset_id: {**BACKBONE_PER_TASK[entry.task_id], **per_task.get(entry.task_id, {}),
                     **per_quality.get(entry.task_id, {}).get(entry.quality, {})}
        for dataset_id, entry in DATASETS.items() if entry.task_id in BACKBONE_PER_TASK
    }
