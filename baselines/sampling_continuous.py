"""Batches and per-task settings shared by the continuous-action baselines.

* :data:`BACKBONE_PER_TASK` and :func:`continuous_per_dataset`: the continuous backbone of
  ``ALGORITHMS.md`` (OMAR's code: MPE hidden 64, batch 1024, lr 1e-3, target rate 0.01;
  HalfCheetah hidden 256, batch 256, lr 3e-4, rate 0.005) with gamma as a per-task setting
  (0.95 everywhere, as the code ran it; its HalfCheetah script meant 0.99 but never passed it
  on). Each algorithm builds its per-dataset table from it, so the numbers live in one place.
* :class:`WindowSampler`: random fixed-length windows of episodes, for learners whose targets
  are TD(lambda) returns (MAICQ). Transition batches need no sampler here:
  ``MARLDataset.sampler(batch, kind="transitions")`` yields them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.registry import DATASETS

__all__ = ["BACKBONE_PER_TASK", "continuous_per_dataset", "WindowBatch", "WindowSampler"]

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


class WindowBatch(NamedTuple):
    """``B`` windows of up to ``L`` consecutive steps, each inside one episode.

    Step ``t`` of a window has observation ``obs[:, t]`` and acts ``actions[:, t]``;
    ``obs[:, t + 1]`` follows it. Index ``L`` holds what follows the window's last step.
    """

    obs: torch.Tensor          # (B, L+1, n, obs_dim)
    states: torch.Tensor       # (B, L+1, state_dim)
    actions: torch.Tensor      # (B, L+1, n, action_dim); zero where has_action is false
    has_action: torch.Tensor   # (B, L+1) bool: the dataset holds an action at this step
    rewards: torch.Tensor      # (B, L) team reward
    terminals: torch.Tensor    # (B, L) float, a real end of the episode
    mask: torch.Tensor         # (B, L) bool, real steps (a short episode's window is padded)


class WindowSampler:
    """Random windows of ``window`` steps, drawn so that every transition is about equally
    likely to be in a batch.

    A window is placed by drawing a transition uniformly, then sliding the window back so it
    stays inside that transition's episode (episodes shorter than ``window`` come whole, padded).
    The observation after the window's last step is included, and so is the dataset's action
    there when the episode goes on (``has_action``), so a learner can bootstrap from Q(s', a').

    Attributes:
        rng: the numpy generator that draws the windows (its state belongs in checkpoints).
    """

    def __init__(self, dataset: MARLDataset, batch_size: int, window: int, seed: int = 0,
                 device: str = "cpu"):
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be positive, got {batch_size}, "
                             f"{window}")
        episodes = dataset.episodes_data
        self.episodes, self.batch_size, self.window = episodes, batch_size, window
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.episode_of_step = np.repeat(np.arange(episodes.n_episodes), episodes.lengths)

    def sample(self) -> WindowBatch:
        e, horizon = self.episodes, self.window
        pick = self.rng.integers(0, e.n_transitions, self.batch_size)
        episode = self.episode_of_step[pick]
        first, end = e.episode_starts[episode], e.episode_starts[episode + 1]     # (B,)
        start = np.maximum(np.minimum(pick, end - horizon), first)
        length = np.minimum(end - start, horizon)                                  # (B,)
        t = np.arange(horizon + 1)
        step = start[:, None] + t[None, :]                                         # (B, L+1)
        real = t[None, :] < length[:, None]                                        # (B, L+1)
        has_action = step < end[:, None]                                           # (B, L+1)
        obs_valid = t[None, :] <= length[:, None]
        step_rows = np.where(has_action, step, 0)
        obs_rows = np.where(obs_valid, step + episode[:, None], 0)

        def gather(values: np.ndarray, rows: np.ndarray, valid: np.ndarray) -> torch.Tensor:
            out = values[rows]
            out[~valid] = 0
            return torch.from_numpy(np.ascontiguousarray(out)).to(self.device)

        return WindowBatch(
            obs=gather(e.obs, obs_rows, obs_valid),
            states=gather(e.states, obs_rows, obs_valid),
            actions=gather(e.actions, step_rows, has_action),
            has_action=torch.from_numpy(has_action & obs_valid).to(self.device),
            rewards=gather(e.rewards.astype(np.float32), step_rows[:, :-1], real[:, :-1]),
            terminals=gather(e.terminals.astype(np.float32), step_rows[:, :-1], real[:, :-1]),
            mask=torch.from_numpy(real[:, :-1].copy()).to(self.device),
        )
