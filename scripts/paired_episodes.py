"""Issue 20 item 5: where a learner's final score loses to another's, episode by episode.

Every run of one seed faces the same final episodes: the final evaluation resets its
environments from ``FINAL_SEED + seed`` whatever the algorithm. So two records of one dataset
and seed can be compared start by start. For each run this prints its final score's mean, median
and 10th percentile, the share of episodes below 50, and its paired gap to a reference run: the
mean gap, how much of it the worst tenth of starts makes, and the median gap. A gap made in a few
starts is a tail of failed episodes; a gap spread over all of them is a lower level. Then the
correlation of the runs' per-episode scores: runs that fail on the same starts correlate more
with each other than with the rest.

Records come from one or more leaderboard folders; runs from folders after the first are named
by their folder (a diagnosis variant, ``scripts/cfcql_differences.sh``):

    python scripts/paired_episodes.py mpe-cn-expert-v0 --seed 0 --against bc \\
        leaderboards leaderboards/diagnosis/cfcql-mpe-cn-expert/*/
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from marl_offline_bench.leaderboard import load_records, markdown_table

FAILED_BELOW = 50.0


def final_scores(folders: list[Path], dataset_id: str, seed: int,
                 protocol: str) -> dict[str, np.ndarray]:
    """Each finished run's per-episode final scores, by run name."""
    runs = {}
    for i, folder in enumerate(folders):
        for record in load_records(folder):
            if (record.dataset_id, record.seed, record.protocol, record.status) != \
                    (dataset_id, seed, protocol, "done"):
                continue
            scores = record.final.get("normalized_scores") or record.final["returns"]
            runs[record.algo if i == 0 else f"{record.algo} ({folder.name})"] = np.asarray(scores)
    return runs


def paired_summary(scores: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Level and tail of one run's final episodes, and its gap to ``reference`` start by start."""
    gap = np.sort(scores - reference)
    worst_tenth = gap[:max(len(gap) // 10, 1)]
    return {"mean": scores.mean(), "median": np.median(scores),
            "10th percentile": np.percentile(scores, 10),
            f"% below {FAILED_BELOW:g}": 100 * (scores < FAILED_BELOW).mean(),
            "gap": gap.mean(), "gap from the worst tenth": worst_tenth.sum() / len(gap),
            "median gap": np.median(gap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("leaderboards")])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", default="bc", help="the reference run's name")
    parser.add_argument("--protocol", default="full")
    args = parser.parse_intermixed_args()
    runs = final_scores(args.folders, args.dataset, args.seed, args.protocol)
    if args.against not in runs:
        raise SystemExit(f"no finished {args.protocol} run named {args.against!r} on "
                         f"{args.dataset} seed {args.seed}; runs found: {sorted(runs) or 'none'}")
    lengths = {name: len(s) for name, s in runs.items()}
    if len(set(lengths.values())) > 1:
        raise SystemExit(f"the runs' final evaluations differ in episodes, so they cannot be "
                         f"paired: {lengths}")
    reference = runs[args.against]
    summary = pd.DataFrame({name: paired_summary(s, reference) for name, s in runs.items()}).T
    print(f"{args.dataset}, seed {args.seed}: {len(reference)} final episodes each, "
          f"gaps against {args.against}\n")
    print(markdown_table(summary.round(1).reset_index(names="run")))
    print("\nCorrelation of the per-episode final scores\n")
    correlation = pd.DataFrame(runs).corr()
    print(markdown_table(correlation.round(2).reset_index(names="run")))


if __name__ == "__main__":
    main()
