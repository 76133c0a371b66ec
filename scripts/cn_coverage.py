"""Issue 20 item 5: how cooperative-navigation learners lose their final episodes.

Replays kept learners (``marl-bench evaluate --keep-learners``) on the starts of their seed's
final evaluation and reads every episode from the agents' observations (mpe2's simple_spread:
own velocity, own position, then the three landmarks relative to the agent):

- collisions: agent pairs closer than 0.3 (twice the agent size), counted per step;
- distance: the sum over landmarks of the nearest agent's distance, summed over the steps;
- doubled up: the episode ends with two agents nearest the same landmark;
- stray agent: the episode ends with an agent more than 0.5 from every landmark.

Each is given over all starts and over the worst tenth of starts for each learner against the
first one (its reference), so a tail of failed episodes can be told apart by what fails:

    python scripts/cn_coverage.py LEARNERS/bc/mpe-cn-expert-v0/seed0.pt \\
        LEARNERS/cfcql/mpe-cn-expert-v0/seed0.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import marl_offline_bench as mob
from marl_offline_bench.leaderboard import markdown_table
from marl_offline_bench.runstore import FileCheckpoints
from marl_offline_bench.training import FINAL_SEED

COLLISION_DISTANCE = 0.3     # two agents of size 0.15 touch
STRAY_DISTANCE = 0.5         # an agent this far from every landmark covers none


def replay(path: Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """A kept learner's final episodes again: its name, seed and per-episode measures."""
    state = FileCheckpoints(path).load() or {}
    dataset_id, seed = state.get("dataset_id"), state.get("seed")
    if dataset_id is None or mob.get_dataset(dataset_id).task_id != "mpe-cn":
        raise SystemExit(f"{path} is not a kept learner of a cooperative navigation (mpe-cn) "
                         f"dataset; `marl-bench evaluate --keep-learners` keeps them")
    learner = mob.load_learner(path)
    episodes = mob.protocol_budget(state["protocol"], dataset_id).final_episodes
    with torch.no_grad():
        arrays = mob.play_episodes(learner.policy(), dataset_id, episodes, FINAL_SEED + seed)
    settings = "".join(f", {key}={value}" for key, value in state["overrides"].items())
    return f"{state['algo']}{settings}", seed, {
        "score": mob.normalized_score(dataset_id, arrays.episode_returns()),
        **episode_measures(arrays)}


def episode_measures(arrays) -> dict[str, np.ndarray]:
    """Collisions, distance, doubled-up and stray endings of each episode of a cn rollout."""
    starts = arrays.episode_starts
    obs = np.stack([arrays.obs[s + i: e + i + 1] for i, (s, e) in
                    enumerate(zip(starts[:-1], starts[1:]))])       # (E, T + 1, 3, 18)
    agents = obs[..., 2:4]                                           # (E, T + 1, 3, 2)
    landmarks = obs[..., 0, 4:10].reshape(*obs.shape[:2], 3, 2) + agents[..., :1, :]
    to_landmark = np.linalg.norm(agents[..., :, None, :] - landmarks[..., None, :, :], axis=-1)
    pairs = np.linalg.norm(agents[..., :, None, :] - agents[..., None, :, :], axis=-1)
    upper = np.triu(np.ones((3, 3), bool), k=1)
    nearest = to_landmark[:, -1].argmin(-1)                          # (E, 3)
    return {
        "collisions": (pairs[:, 1:, upper] < COLLISION_DISTANCE).sum((1, 2)),
        "distance": to_landmark[:, 1:].min(-2).sum((1, 2)),
        "doubled up": np.array([len(set(row)) < 3 for row in nearest]),
        "stray agent": to_landmark[:, -1].min(-1).max(-1) > STRAY_DISTANCE,
    }


def summary(measures: dict[str, np.ndarray], starts: np.ndarray) -> dict[str, float]:
    """The measures' means over some starts, in float64 (percentages for the endings)."""
    mean = {key: float(np.mean(values[starts], dtype=np.float64))
            for key, values in measures.items()}
    return {"score": mean["score"], "collisions per episode": mean["collisions"],
            "distance per episode": mean["distance"], "% doubled up": 100 * mean["doubled up"],
            "% stray agent": 100 * mean["stray agent"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learners", nargs="+", type=Path,
                        help="kept learners of one seed; the first is the reference")
    args = parser.parse_args()
    runs = [replay(path) for path in args.learners]
    if len({seed for _, seed, _ in runs}) > 1:
        raise SystemExit("the learners come from different seeds, so their starts differ")
    (reference_name, _, reference), rows = runs[0], []
    everything = np.arange(len(reference["score"]))
    for name, _, measures in runs:
        worst_tenth = np.argsort(measures["score"] - reference["score"])[:len(everything) // 10]
        rows.append({"run": name, "starts": "all", **summary(measures, everything)})
        if measures is not reference:
            rows.append({"run": name, "starts": f"worst tenth against {reference_name}",
                         **summary(measures, worst_tenth)})
            rows.append({"run": reference_name, "starts": "the same tenth",
                         **summary(reference, worst_tenth)})
    print(markdown_table(pd.DataFrame(rows).round(2)))


if __name__ == "__main__":
    main()
