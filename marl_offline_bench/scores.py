"""Normalised scores on the scale the papers print: 0 = uniform random, 100 = expert."""
from __future__ import annotations

import numpy as np

from collections.abc import Callable, Mapping
from typing import Any

from .envs import FAMILIES
from .registry import (ENGINE_DATASETS, SCORE_COMPATIBLE_ENGINES, get_task,
                       reference_scores)


def score_normalizer(refs: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    """The normalisation of a task's returns, from its reference scores (``reference_scores``):
    ``R -> 100 * (R - ref_random) / (ref_expert - ref_random)``; None when either reference is
    not measured. The one place the formula lives."""
    if not {"ref_random", "ref_expert"} <= set(refs):
        return None
    lo, hi = refs["ref_random"]["value"], refs["ref_expert"]["value"]
    return lambda returns: 100.0 * (returns - lo) / (hi - lo)


def normalized_score(dataset_or_task_id: str, returns) -> np.ndarray | float:
    """``100 * (R - ref_random) / (ref_expert - ref_random)`` for a dataset's task.

    Args:
        dataset_or_task_id: a dataset id (``"mpe-cn-medium-v0"``) or task id (``"mpe-cn"``).
        returns: one episode return or an array of them.

    Raises:
        KeyError: unknown id (the message lists the nearest ones).
        ValueError: the task's reference scores have not been measured yet.
    """
    task = get_task(dataset_or_task_id)
    entry = ENGINE_DATASETS.get(dataset_or_task_id)
    if entry is not None and entry.engine not in SCORE_COMPATIBLE_ENGINES:
        raise ValueError(
            f"{dataset_or_task_id} comes from the {entry.engine} engine; the reference scores of "
            f"{task.task_id} were measured on {FAMILIES[task.family][1]} and do not apply. "
            "Compare raw returns (and win rates) instead.")
    refs = reference_scores(task.task_id)
    missing = [k for k in ("ref_random", "ref_expert") if k not in refs]
    if missing:
        raise ValueError(
            f"{task.task_id} has no measured {' or '.join(missing)} yet, so its normalised score "
            f"is undefined. ref_expert arrives with the task's trained {task.behaviour.upper()} "
            "expert; until then compare raw returns."
        )
    scores = score_normalizer(refs)(np.asarray(returns, dtype=np.float64))
    return float(scores) if scores.ndim == 0 else scores
