"""Print the README's table of the `full` sweep so far: each dataset with a `full` record, the
`full` score of each algorithm (seed mean ± std, with ↑ where the cell was still rising at its
end and ‡ where a seed trained on non-canonical bytes), the `quick` mean ± std beside it, the
budget and CFCQL's wall time.

    python scripts/full_table.py [LEADERBOARDS] [--algos cfcql,bc,matd3-bc,macql,omar]

Each run's wall time instead of its score (minutes, seed mean, its evaluations included):

    python scripts/full_table.py --wall-time

The lambda and alpha questions on World, without the `quick` columns:

    python scripts/full_table.py --datasets 'mpe-world-medium-replay-v0,mpe-world-expert-v0' \
        --algos cfcql,cfcql_vae,cfcql_sign_plus,cfcql_alpha_half,cfcql_alpha_double --quick ''
"""
from __future__ import annotations

import argparse
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd

from marl_offline_bench import display_name
from marl_offline_bench.leaderboard import (cell_still_rising, dataset_order, load_records,
                                            markdown_table, runs_frame)
from marl_offline_bench.registry import get_dataset


def full_cell(group: pd.DataFrame) -> str:
    mean = group.score.mean()
    marks = (" ↑" if cell_still_rising(list(group.still_rising)) else "") + \
        (" ‡" if (group.canonical_data == False).any() else "")  # noqa: E712 (None: unknown)
    spread = f" ± {group.score.std(ddof=0):.1f} ({len(group)} seeds)" if len(group) > 1 else ""
    return f"{mean:.1f}{spread}{marks}"


def wall_time_cell(group: pd.DataFrame) -> str:
    minutes = group.wall_time_s / 60
    spread = f" ({minutes.min():.0f}-{minutes.max():.0f})" if len(group) > 1 else ""
    return f"{minutes.mean():.0f} min{spread}"


def quick_cell(group: pd.DataFrame) -> str:
    return f"{group.score.mean():.1f} ± {group.score.std(ddof=0):.1f}"


def table(runs: pd.DataFrame, algos: list[str], quick_beside: list[str],
          cell=full_cell) -> pd.DataFrame:
    done = runs[runs.status == "done"]
    full, quick = done[done.protocol == "full"], done[done.protocol == "quick"]
    rows = []
    for dataset_id in sorted(full.dataset_id.unique(), key=_dataset_order):
        mine, theirs = full[full.dataset_id == dataset_id], quick[quick.dataset_id == dataset_id]
        row = {"dataset": dataset_id.removesuffix("-v0")}
        for algo in algos:
            group = mine[mine.algo == algo]
            row[f"{display_name(algo)} `full`"] = cell(group) if len(group) else ""
        for algo in quick_beside:
            group = theirs[theirs.algo == algo]
            row[f"{display_name(algo)} `quick`"] = quick_cell(group) if len(group) else ""
        row["updates"] = f"{mine.budget.iloc[0][0]:,}"
        if cell is full_cell:
            cfcql = mine[mine.algo == "cfcql"].wall_time_s
            row["CFCQL wall time"] = f"{cfcql.mean() / 60:.0f} min" if len(cfcql) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _dataset_order(dataset_id: str) -> tuple:
    family_first = ("mpe", "equal_line", "mamujoco", "smac")  # the paper's table, then ours
    return family_first.index(get_dataset(dataset_id).task.family), dataset_order(dataset_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="leaderboards")
    parser.add_argument("--algos", default="cfcql,bc,matd3-bc,macql,omar")
    parser.add_argument("--datasets", default="*", help="comma-separated ids or glob patterns")
    parser.add_argument("--quick", default="cfcql,bc",
                        help="algorithms whose `quick` mean ± std stand beside ('' for none)")
    parser.add_argument("--wall-time", action="store_true",
                        help="each run's wall time (mean, and range over seeds), not its score")
    args = parser.parse_args()
    runs = runs_frame(load_records(Path(args.out)))
    patterns = args.datasets.split(",")
    runs = runs[[any(fnmatch(d, p) for p in patterns) for d in runs.dataset_id]]
    quick_beside = [a for a in args.quick.split(",") if a and not args.wall_time]
    cell = wall_time_cell if args.wall_time else full_cell
    print(markdown_table(table(runs, args.algos.split(","), quick_beside, cell)))


if __name__ == "__main__":
    main()
