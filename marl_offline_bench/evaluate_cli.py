"""The ``marl-bench evaluate`` and ``marl-bench leaderboard`` sub-commands.

A thin layer over :mod:`marl_offline_bench.benchmarking` (the runs) and
:mod:`marl_offline_bench.leaderboard` (the tables); :func:`add_evaluate_parser` is called by
:func:`marl_offline_bench.cli.build_parser`.
"""
from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path
from typing import Any

from .protocols import PROTOCOLS

#: The suite's own run records (in a checkout): a source of measured rates for --dry-run, and
#: the published scores shown beside a user's own. Never the default output: a user's runs
#: resumed against the suite's records would be skipped as already done.
PUBLISHED_RECORDS = Path(__file__).resolve().parents[1] / "leaderboards"
#: Where a user's runs, tables and plots go unless --out says otherwise (relative to the
#: working directory, like ``collect --train-dir``).
USER_OUT = Path("marl-bench-results")
#: The most seeds a count may ask for (a comma list names any seeds).
MAX_SEED_COUNT = 1000


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set lr=3e-4), got {pair!r}")
        try:
            overrides[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            overrides[key] = raw  # a bare word: keep it as a string
    return overrides


def _seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if not 1 <= count <= MAX_SEED_COUNT:
                raise ValueError(
                    f"--seeds {text} asks for {count} seeds; a count runs seeds 0 .. count-1 "
                    f"and must lie between 1 and {MAX_SEED_COUNT} (--seeds 1 is seed 0 "
                    "alone, --seeds 3 seeds 0, 1, 2), or name the seeds in a comma list "
                    "(--seeds 0,4,7).")
            seeds = list(range(count))
    except ValueError as err:
        if str(err).startswith("--seeds"):
            raise
        raise ValueError(f"--seeds takes a count (3) or a comma list (0,4,7), got {text!r}") \
            from None
    if not seeds:
        raise ValueError(f"--seeds {text!r} names no seed; give a count (3) or a comma list "
                         "(0,4,7).")
    if min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: seeds are non-negative, got {min(seeds)}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} names a seed twice; list each seed once.")
    return seeds


def _check_out(out: Path) -> None:
    """Fail before any run when the output folder cannot be written (a file, read-only)."""
    from .storage import check_writable

    check_writable(out, "The output folder (--out)",
                   "Pass --out with a folder you can write to.")


def _check_reps(reps: int) -> None:
    if reps < 1:
        raise ValueError(f"--bootstrap-reps must be at least 1 (2000 is usual), got {reps}.")


def _build_with_progress(pattern: str | None, say, workers: int = 1) -> None:
    """Build the matched, buildable datasets that are not on disk yet, ``workers`` at once,
    with a progress bar (``select_datasets`` would build them one by one, silently)."""
    from . import storage
    from .benchmarking import select_datasets
    from .collect import collect_datasets
    from .registry import get_dataset

    if pattern is None:
        return
    missing = [dataset_id for dataset_id in select_datasets(
                   pattern, build=False, report=lambda line: None, keep_unbuilt=True)
               if not storage.is_built(get_dataset(dataset_id).minari_id)]
    for dataset_id in missing:
        say(f"building {dataset_id} (registered, buildable, not on disk yet) ...")
    for dataset_id, _, seconds in collect_datasets(missing, workers):
        say(f"built {dataset_id} ({seconds:.0f}s)")


def _published_beside(summary, protocol: str, say) -> None:
    """The suite's published scores of the same (algorithm, dataset) cells, labelled as such."""
    import json
    import statistics

    cells = sorted({(o.job.algo, o.job.dataset_id) for o in summary.outcomes
                    if o.status in ("done", "skipped")})
    lines = []
    for algo, dataset_id in cells:
        scores = []
        for path in sorted((PUBLISHED_RECORDS / "runs" / protocol / algo / dataset_id)
                           .glob("seed*.json")):
            try:
                record = json.loads(path.read_text())
                score = record["final"].get("normalized_score")
                if score is None:
                    score = record["final"]["mean_return"]
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                continue
            if record.get("status") == "done" and score is not None:
                scores.append(float(score))
        mine = [o.final_score for o in summary.outcomes if o.job.algo == algo
                and o.job.dataset_id == dataset_id and o.final_score is not None]
        if scores:
            lines.append(f"  {algo} on {dataset_id}: yours {_mean(mine)} over {len(mine)} "
                         f"seed(s); the suite's published {protocol} records "
                         f"{statistics.fmean(scores):.2f} over {len(scores)} seed(s)")
    if lines:
        say(f"for comparison, the suite's published records ({PUBLISHED_RECORDS}), not your "
            "runs:")
        for line in lines:
            say(line)


def _mean(values) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "n/a"


_RAY_ONLY = {"address": "--address", "cpus_per_run": "--cpus-per-run",
             "gpus_per_run": "--gpus-per-run", "max_retries": "--max-retries",
             "build_on_nodes": "--build-on-nodes"}


def _ray_executor(args: argparse.Namespace):
    """The executor the options ask for: None (local processes) or a RayExecutor.

    Raises:
        ValueError: Ray-only options without ``--executor ray``, ``--workers`` with it, or a
            ``--device`` the Ray tasks cannot have.
        RuntimeError: ``--executor ray`` without Ray installed (naming the extra).
    """
    given = [flag for name, flag in _RAY_ONLY.items() if getattr(args, name) not in (None, False)]
    if args.executor == "local":
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --executor ray.")
        return None
    from .ray_executor import RayExecutor

    if args.workers != 1:
        raise ValueError("--workers is for --executor local; with --executor ray the cluster's "
                         "CPUs and GPUs set the parallelism (see --cpus-per-run, "
                         "--gpus-per-run).")
    executor = RayExecutor(
        address=args.address,
        cpus_per_run=1.0 if args.cpus_per_run is None else args.cpus_per_run,
        gpus_per_run=0.0 if args.gpus_per_run is None else args.gpus_per_run,
        max_retries=3 if args.max_retries is None else args.max_retries,
        build_on_nodes=args.build_on_nodes)
    if args.device not in ("auto", executor.device):
        raise ValueError(f"--device {args.device} with --executor ray: runs use cuda exactly "
                         "when --gpus-per-run is positive (Ray shows a task only the GPUs it "
                         "asks for), so leave --device at auto or set --gpus-per-run.")
    return executor


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .algorithms import resolve_algorithms
    from .benchmarking import resolve_device, run_benchmark, select_datasets
    from .leaderboard import write_leaderboards

    def say(line: str) -> None:
        print(line, flush=True)

    algos = resolve_algorithms(args.algo)
    seeds = _seeds(args.seeds)
    _check_reps(args.bootstrap_reps)
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.dry_run:
        return _dry_run(args, algos, seeds, say)
    out = Path(args.out)
    _check_out(out)
    executor = _ray_executor(args)
    device = resolve_device(args.device) if executor is None else executor.device
    overrides = _parse_overrides(args.set or [])
    build_on_nodes = executor is not None and executor.build_on_nodes
    if not args.no_build and not build_on_nodes:
        _build_with_progress(args.datasets, say, args.workers)
    datasets = select_datasets(args.datasets, build=not args.no_build, report=say,
                               keep_unbuilt=build_on_nodes)
    where = (f"{args.workers} worker(s)" if executor is None else executor.describe())
    say(f"evaluating {', '.join(algos)} on {len(datasets)} dataset(s) x {len(seeds)} seed(s), "
        f"protocol {args.protocol}, {where}, device {device} -> {out}")
    started = time.time()
    summary = run_benchmark(algos, datasets, seeds, args.protocol, out=out,
                            workers=args.workers, device=device, overrides=overrides,
                            retry_failed=args.retry_failed, report=say, executor=executor,
                            show_progress=executor is None and args.workers == 1
                            and not args.quiet, keep_learners=args.keep_learners)
    counts = ", ".join(f"{summary.count(s)} {s}" for s in
                       ("done", "skipped", "failed", "busy", "error") if summary.count(s))
    say(f"{counts or 'nothing to run'} in {time.time() - started:.1f}s"
        + (f"; {len(summary.unsupported)} unsupported pairing(s) skipped"
           if summary.unsupported else ""))
    if not args.no_tables and any(o.status in ("done", "skipped", "failed")
                                  for o in summary.outcomes):
        paths = write_leaderboards(out, reps=args.bootstrap_reps)
        say(f"leaderboards: {len(paths)} files under {out}")
    if out.resolve() != PUBLISHED_RECORDS.resolve():
        _published_beside(summary, args.protocol, say)
    unfinished = {
        "error": "raised ({listing}); no record was written for them and any checkpoint is kept, "
                 "so the same command resumes them once the cause is fixed.",
        "busy": "are held by another live process ({listing}); they were not run here. Wait for "
                "that process, or stop it and run the same command again: a lock whose process "
                "is gone is taken over.",
    }
    for status, why in unfinished.items():
        runs = [o for o in summary.outcomes if o.status == status]
        if runs:
            listing = "; ".join(f"{o.job.key}: {o.message}" for o in runs[:5])
            raise RuntimeError(f"{len(runs)} run(s) " + why.format(listing=listing))
    return 0


def _dry_run(args: argparse.Namespace, algos: list[str], seeds: list[int], say) -> int:
    """List the runs ``evaluate`` would start, their budgets and estimated CPU-hours."""
    from .benchmarking import check_overrides, check_pairing, overrides_for, select_datasets
    from .costs import format_plan, plan_costs, probe_fit_store

    datasets = select_datasets(args.datasets, build=False, report=say, keep_unbuilt=True)
    overrides = _parse_overrides(args.set or [])
    pairs = {}
    for algo in algos:
        usable = []
        for dataset_id in datasets:
            try:
                check_pairing(algo, dataset_id)
                usable.append(dataset_id)
            except ValueError as err:
                say(f"skipping {algo} on {dataset_id}: {err}")
                continue
            check_overrides(algo, dataset_id, overrides_for(algo, overrides))
        pairs[algo] = usable
    with probe_fit_store():  # a fit two runs share is priced once
        plan = [run for algo in algos
                for run in plan_costs([algo], pairs[algo], seeds, args.protocol,
                                      [Path(args.out), PUBLISHED_RECORDS],
                                      measure=not args.from_records,
                                      overrides=overrides_for(algo, overrides))]
    for line in format_plan(plan, args.protocol):
        say(line)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import write_leaderboards

    _check_reps(args.bootstrap_reps)
    out = Path(args.out)
    if not (out / "runs").is_dir():
        raise FileNotFoundError(f"{out / 'runs'} does not exist: no run records to tabulate "
                                "there. Pass --out with the folder `marl-bench evaluate` wrote "
                                f"to (the suite's own records: --out {PUBLISHED_RECORDS}).")
    _check_out(out)

    paths = write_leaderboards(Path(args.out), reps=args.bootstrap_reps)
    for path in paths:
        print(path)
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and ``leaderboard`` on the ``marl-bench`` parser."""
    p = subparsers.add_parser(
        "evaluate", help="train and score algorithms on datasets, then rebuild the leaderboards",
        description="Runs every (algorithm, dataset, seed) job not recorded yet, under a "
                    "protocol after OG-MARL/CORL (evaluation every E updates, final evaluation "
                    "on 10x the episodes, last score reported), resuming killed runs from "
                    "their checkpoints, then regenerates the leaderboards.")
    p.add_argument("--algo", required=True,
                   help="a registered algorithm, a comma list, or 'all'")
    p.add_argument("--datasets", default=None,
                   help="comma-separated dataset ids or globs (default: every built dataset; "
                        "registered buildable ones that match are built on the way)")
    p.add_argument("--seeds", default="3", help="a count (3 = seeds 0,1,2) or a comma list")
    p.add_argument("--protocol", default="quick", choices=list(PROTOCOLS),
                   help="smoke: seconds (tests); quick: what a small CPU machine affords; "
                        "full: the reference code's budget, task by task")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes (--executor local)")
    p.add_argument("--device", default="auto",
                   help="auto (GPU if visible), cpu or cuda[:N]; with --executor ray, cuda "
                        "exactly when --gpus-per-run is positive")
    g = p.add_argument_group(
        "cluster", "Run each (algorithm, dataset, seed) as a Ray task (pip install "
        "'marl-offline-bench[ray]'; see docs/cluster.md). Records, checkpoints and locks stay "
        "under --out on this machine; datasets are read on the nodes.")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: processes on this machine (default); ray: tasks on a Ray cluster")
    g.add_argument("--address", default=None,
                   help="the Ray cluster to join from a machine in it: auto or HEAD_IP:6379 "
                        "(default: RAY_ADDRESS or a cluster started on this machine, else Ray "
                        "on this machine alone)")
    g.add_argument("--cpus-per-run", type=float, default=None,
                   help="CPUs each run asks Ray for, also its torch threads (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=None,
                   help="GPUs each run asks Ray for; fractions share a GPU (default 0: CPU)")
    g.add_argument("--max-retries", type=int, default=None,
                   help="re-runs of a run whose worker died, resuming its checkpoint (default 3)")
    g.add_argument("--build-on-nodes", action="store_true",
                   help="build a missing dataset on the node that needs it, instead of failing "
                        "the run (the driver then builds nothing)")
    p.add_argument("--out", default=str(USER_OUT),
                   help="your output folder for runs/, tables and plots (default: "
                        "./%(default)s); the suite's published scores for the same cells are "
                        "printed beside yours at the end, labelled as such")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="algorithm config override (repeatable): KEY=VALUE for every "
                        "algorithm, ALGO.KEY=VALUE for one (e.g. cfcql.alpha=10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar per run")
    p.add_argument("--keep-learners", action="store_true",
                   help="keep each finished run's final learner under OUT/learners/ "
                        "(marl_offline_bench.load_learner(path).policy() plays as it did)")
    p.add_argument("--from-records", action="store_true",
                   help="with --dry-run: price runs from the wall times of finished records "
                        "instead of timing a few updates of each learner here")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs it would start with their budgets (updates, batch) and "
                        "estimated CPU-hours, with totals per algorithm and family; run nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo runs recorded as failed (non-finite loss) instead of skipping them")
    p.add_argument("--no-build", action="store_true",
                   help="skip matching datasets that are not built instead of building them")
    p.add_argument("--no-tables", action="store_true",
                   help="write the run records only; leave the tables to a later "
                        "`marl-bench leaderboard` (a sweep driver running many evaluates)")
    p.add_argument("--bootstrap-reps", type=int, default=2000,
                   help="bootstrap replications for the aggregate intervals")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("leaderboard", help="rebuild the leaderboards from run records")
    p.add_argument("--out", default=str(USER_OUT),
                   help="the evaluation output folder (default: ./%(default)s; the suite's "
                        "own: leaderboards in a checkout)")
    p.add_argument("--bootstrap-reps", type=int, default=2000,
                   help="bootstrap replications for the aggregate intervals")
    p.set_defaults(func=cmd_leaderboard)
