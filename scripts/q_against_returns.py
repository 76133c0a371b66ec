"""Issue 20 item 5: a run's Q of the data's actions at its end, against what the data returns.

For every finished record of a protocol whose dataset matches a pattern, prints the critic's
mean Q of the dataset's actions over the last evaluation window (``q_taken_mean`` for the
discrete learners, ``q_data_mean`` for the continuous ones), and beside it the dataset's
discounted return-to-go (mean over its steps, and its largest) under the run's own gamma.
Q fitted to the data's actions sits near the return-to-go (above it by what the greedy backup
adds, below it by what a conservative term takes); far outside the data's range, the critic has
diverged and the policy it drives says little about the algorithm. ``Q / max`` is shown where
the largest return-to-go is positive.

    python scripts/q_against_returns.py 'equal_line-*' [--protocol full] [--out leaderboards]
"""
from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

import pandas as pd

import marl_offline_bench as mob
from marl_offline_bench.leaderboard import load_records, markdown_table, natural_key

Q_METRICS = ("q_taken_mean", "q_data_mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", help="dataset id pattern, e.g. 'equal_line-*'")
    parser.add_argument("--protocol", default="full")
    parser.add_argument("--out", default="leaderboards")
    args = parser.parse_args()
    records = [r for r in load_records(Path(args.out))
               if r.protocol == args.protocol and r.status == "done"
               and fnmatch.fnmatch(r.dataset_id, args.datasets)]
    if not records:
        raise SystemExit(f"no finished {args.protocol} records match {args.datasets!r} "
                         f"under {args.out}/runs")
    rows, cache = [], {}
    for r in sorted(records, key=lambda r: (natural_key(r.dataset_id), r.algo, r.seed)):
        train = r.curve[-1]["train"]
        q = next((train[k] for k in Q_METRICS if k in train), None)
        if q is None:  # a learner without a critic (BC)
            continue
        gamma = r.config["gamma"]
        if (r.dataset_id, gamma) not in cache:
            data = mob.load(r.dataset_id, progress=False)
            rtg = data.returns_to_go(gamma)
            cache[r.dataset_id, gamma] = rtg.mean(), rtg.max()
        mean_rtg, max_rtg = cache[r.dataset_id, gamma]
        rows.append({"algorithm": r.algo, "dataset": r.dataset_id, "seed": r.seed,
                     "final score": f"{r.final_score:.1f}", "Q of the data's actions": f"{q:.1f}",
                     "return-to-go mean": f"{mean_rtg:.2f}", "return-to-go max": f"{max_rtg:.2f}",
                     "Q / max": f"{q / max_rtg:.1f}" if max_rtg > 0 else ""})
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
