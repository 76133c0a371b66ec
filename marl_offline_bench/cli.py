"""The marl-bench command line.

Commands: list, info, verify, collect, reference, record, docs, evaluate, leaderboard. Each is a
thin layer over the library; bad input ends with a one-line message that names the problem and
the fix (exit status 2), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Sequence

from .envs import FAMILIES
from .registry import QUALITIES, dataset_id_for, get_task


def _task_name(args: argparse.Namespace) -> str:
    name = args.map or args.task
    if not name:
        flag = "--map" if args.env == "smac" else "--task"
        raise ValueError(f"{args.env} needs {flag}; valid: {', '.join(FAMILIES[args.env][0])}.")
    return name


def cmd_list(args: argparse.Namespace) -> int:
    from .api import list_datasets

    rows = list_datasets(family=args.env, quality=args.quality, task=args.task)
    if args.built:
        rows = [r for r in rows if r["status"] == "built"]
    if args.buildable:
        rows = [r for r in rows if r["status"] in ("built", "buildable")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["dataset_id"]) for r in rows), default=10)
    print(f"{'dataset id':<{width}}  {'status':<14} task")
    for r in rows:
        print(f"{r['dataset_id']:<{width}}  {r['status']:<14} {r['task_id']}")
    tasks = {r["task_id"] for r in rows}
    print(f"\n{len(rows)} datasets over {len(tasks)} tasks; "
          f"{sum(r['status'] == 'built' for r in rows)} built.")
    _report_leftovers(args.remove_leftovers)
    return 0


def _report_leftovers(remove: bool) -> None:
    """Name the temporary folders of builds whose process is gone, and their size."""
    import shutil

    from . import storage

    leftovers = storage.leftover_temp_dirs() if (storage.minari_root() / "marl-bench").is_dir() \
        else []
    if not leftovers:
        return
    sizes = {p: storage.folder_bytes(p) for p in leftovers}
    verb = "removed" if remove else "found"
    print(f"\n{verb} {len(leftovers)} leftover(s) of interrupted builds "
          f"({sum(sizes.values()) / 1e6:.1f} MB):")
    for path in leftovers:
        if remove:
            shutil.rmtree(path, ignore_errors=True)
        print(f"  {path}  ({sizes[path] / 1e6:.1f} MB)")
    if not remove:
        print("Their processes have ended; `marl-bench list --remove-leftovers` deletes them "
              "(the next build of the same dataset does too).")


def cmd_info(args: argparse.Namespace) -> int:
    from .api import dataset_card

    card = dataset_card(args.dataset_id)
    if args.json:
        print(json.dumps(card, indent=2, default=str))
        return 0
    print(f"{card['dataset_id']}  ({card['status']})")
    print(f"  minari id : {card['minari_id']}")
    print(f"  task      : {card['task_id']}   quality: {card['quality']}")
    if "path" in card:
        print(f"  path      : {card['path']}")
        print(f"  size      : {card['size_bytes'] / 1e6:.1f} MB data file, "
              f"{card['disk_bytes'] / 1e6:.1f} MB on disk with load()'s cache")
        print(f"  sha256    : {card['sha256']}")
        print(f"  engine    : {json.dumps(card['engine'])}")
        print(f"  commit    : {card.get('commit')}")
        stats = card["statistics"]
        print("  statistics: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in stats.items()))
    else:
        print(f"  build with: {card['collect_command']}")
        if "why_not_buildable" in card:
            print(f"  note      : {card['why_not_buildable']}")
        if "damaged" in card:
            print(f"  damaged   : {card['damaged']}")
    print(f"  recipe    : {json.dumps(card['recipe'])}")
    canonical = card.get("canonical_build")
    if canonical:
        stats = canonical["statistics"]
        print("  canonical : " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
            if k in ("episodes", "transitions", "return_mean", "return_std", "normalized_score",
                     "win_rate")) + f"; sha256 {canonical.get('sha256', '?')[:16]}…")
        if "sha256" in card and canonical.get("sha256"):
            same = card["sha256"] == canonical["sha256"]
            print("  identity  : " + ("these are the canonical build's bytes" if same else
                                      "NOT the canonical build's bytes; `marl-bench verify "
                                      f"{card['dataset_id']}` says where they differ"))
    refs = card["reference_scores"]
    for kind in ("ref_random", "ref_expert"):
        ref = refs.get(kind)
        print(f"  {kind:<10}: " + (f"{ref['value']:.4f} (std {ref.get('std', float('nan')):.4f}, "
                                    f"{ref['episodes']} episodes)" if ref else "not measured yet"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .api import verify_dataset

    def fmt(value):
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    report = verify_dataset(args.dataset_id)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["matches"] else 1
    print(f"{report['dataset_id']}: {report['path']}")
    print(f"  local sha256     : {report['local_sha256']}")
    print(f"  canonical sha256 : {report['canonical_sha256']}")
    if report["matches"]:
        print("  OK: the local data file holds the canonical build's bytes.")
        return 0
    print("  DIFFERENT: these are not the canonical build's bytes.")
    for key, diff in report["recipe_differences"].items():
        print(f"  recipe {key}: local {diff['local']}, canonical {diff['canonical']}")
    if "note" in report:
        print("  note: " + textwrap.fill(report["note"], 88, subsequent_indent="        "))
    if "first_differing_episode" in report:
        first = report["first_differing_episode"]
        print(f"  first differing episode: {first} ({report['differing_episodes']} of "
              f"{report['episodes_compared']} differ)" if first is not None
              else "  every episode's digest agrees; the files differ in layout only")
    else:
        print("  first differing episode: unknown (the canonical build's per-episode digests "
              "do not ship for this id)")
    if report["statistics"]:
        for key, diff in report["statistics"].items():
            print(f"  {key:<20}: local {fmt(diff['local'])}, canonical {fmt(diff['canonical'])} "
                  f"(difference {fmt(diff['difference'])})")
    else:
        print("  statistics: identical to the canonical build's")
    return 1


def _collect_ids(args: argparse.Namespace) -> list[str]:
    """The dataset ids a collect names: comma lists (or ``all``) of tasks, times qualities."""
    spec = _task_name(args)
    names = (list(FAMILIES[args.env][0]) if spec == "all"
             else [t.strip() for t in spec.split(",") if t.strip()])
    qualities = QUALITIES if args.quality == "all" else [args.quality]
    return [dataset_id_for(args.env, name, quality) for name in names for quality in qualities]


def _already_built_as_asked(dataset_id: str, args: argparse.Namespace) -> bool:
    """Whether the dataset is on disk with the episodes and seed this command asks for, so that
    re-running a finished collect is a no-op rather than an error."""
    from . import storage
    from .registry import get_dataset

    entry = get_dataset(dataset_id)
    if not storage.is_built(entry.minari_id):
        return False
    recipe = storage.read_metadata(entry.minari_id).get("marl_bench", {}).get("recipe", {})
    if entry.quality == "medium-replay":
        # Not seeded: the learner's own episodes, all of the window or its last --episodes.
        from .collect import medium_replay_episodes

        window = medium_replay_episodes(entry.task_id)
        return recipe.get("episodes") == min(args.episodes or window, window)
    wanted = args.episodes or entry.task.dataset_episodes
    same_envs = args.num_envs is None or recipe.get("num_envs") == args.num_envs
    return recipe.get("episodes") == wanted and recipe.get("seed") == args.seed and same_envs


def _retrain_behaviour(dataset_ids: list[str], args: argparse.Namespace) -> Path:
    """--train: retrain the behaviour agents these datasets need; returns the folder of
    agents to act from.

    The trainers are not the library's: a package declares them under the
    ``marl_offline_bench.behaviour_trainers`` entry point (the suite's ``collection``).
    """
    from importlib.metadata import entry_points

    from .registry import get_dataset

    trainers = {e.name: e for e in entry_points(group="marl_offline_bench.behaviour_trainers")}
    if "retrain" not in trainers:
        raise RuntimeError("--train needs the behaviour trainers of the `collection` package, "
                           "which no installed package declares; install the project from a "
                           "checkout (pip install -e .).")
    retrain = trainers["retrain"].load()
    tasks = sorted({get_dataset(d).task_id for d in dataset_ids
                    if get_dataset(d).quality != "random"})
    if not tasks:
        raise ValueError("--train retrains behaviour agents; random datasets need none.")
    ship_root = None
    for task_id in tasks:
        ship_root = retrain(task_id, args.train_dir, log=lambda line: print(line, flush=True))
    print(f"collecting with the retrained agents in {ship_root}")
    return Path(ship_root).resolve()


def cmd_collect(args: argparse.Namespace) -> int:
    from .collect import collect_datasets

    from .registry import engine_variant

    # Data from another engine get that engine's own ids (smac-2s3z-random-sc2-v0).
    dataset_ids = [engine_variant(d, args.engine).dataset_id for d in _collect_ids(args)]
    behaviour_root = _retrain_behaviour(dataset_ids, args) if args.train else None
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}.")
    if args.executor == "ray" and args.workers != 1:
        raise ValueError("--workers is for --executor local; with --executor ray every build "
                         "is a task of its own and the cluster runs them at once.")
    if args.executor == "ray":
        from .ray_executor import collect_on_ray

        outcomes = collect_on_ray(dataset_ids, address=args.address,
                                  report=lambda line: print(line, flush=True),
                                  episodes=args.episodes, seed=args.seed,
                                  num_envs=args.num_envs, overwrite=args.force,
                                  engine=args.engine, behaviour_root=behaviour_root)
        failed = [o for o in outcomes if o.status == "error"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(outcomes)} dataset(s) were not built: "
                               + "; ".join(f"{o.dataset_id}: {o.message}" for o in failed[:5]))
        return 0
    if args.address:
        raise ValueError("--address only applies with --executor ray.")
    todo = []
    for dataset_id in dataset_ids:
        if not args.force and _already_built_as_asked(dataset_id, args):
            print(f"{dataset_id}: already built with this recipe; nothing to do "
                  "(--force rebuilds it).")
        else:
            todo.append(dataset_id)
    for dataset_id, path, seconds in collect_datasets(
            todo, args.workers, show_progress=not args.quiet, episodes=args.episodes,
            seed=args.seed, num_envs=args.num_envs, overwrite=args.force, engine=args.engine,
            behaviour_root=behaviour_root):
        print(f"{dataset_id}: written to {path} in {seconds:.1f}s")
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from .collect import RandomPolicy
    from .provenance import git_commit
    from .envs import task_info
    from .evaluation import evaluate_policy
    from .registry import record_reference

    task_id = f"{args.env}-{_task_name(args)}"
    get_task(task_id)
    if args.policy != "random":
        raise ValueError("only --policy random is measurable by this command; ref_expert is "
                         "recorded by the behaviour-agent trainers")
    started = time.time()
    result = evaluate_policy(RandomPolicy(task_info(task_id), args.seed), task_id,
                             episodes=args.episodes, seed=args.seed, num_envs=args.num_envs)
    entry = {"value": result.mean_return, "std": float(result.returns.std()),
             "episodes": int(len(result.returns)), "seed": args.seed, "policy": "uniform random",
             "commit": git_commit(), "seconds": round(time.time() - started, 1),
             "measured": time.strftime("%Y-%m-%d")}
    if result.win_rate is not None:
        entry["win_rate"] = result.win_rate
    path = record_reference(task_id, "ref_random", entry)
    print(f"{task_id} ref_random = {entry['value']:.4f} ± {entry['std']:.4f} over "
          f"{entry['episodes']} episodes -> {path}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from .cards import record_build

    for dataset_id in args.dataset_ids:
        stats = record_build(dataset_id, allow_noncanonical=args.allow_noncanonical)
        print(f"{dataset_id}: recorded {stats['statistics']['episodes']} episodes, "
              f"return {stats['statistics']['return_mean']:.4g}")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cards import write_docs

    for path in write_docs(Path(args.out)):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marl-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Offline multi-agent RL datasets (Minari/HDF5) and the baselines scored on "
                    "them.",
        epilog="examples:\n"
               "  marl-bench list --env equal_line\n"
               "  marl-bench collect --env equal_line --task n4 --quality expert\n"
               "  marl-bench info equal_line-n4-expert-v0\n"
               "  marl-bench verify equal_line-n4-expert-v0\n"
               "  marl-bench evaluate --algo cfcql --datasets equal_line-n4-expert-v0 --seeds 1\n"
               "\n`marl-bench COMMAND --help` describes each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    p = sub.add_parser("list", help="registered datasets and whether they are built")
    p.add_argument("--env", choices=sorted(FAMILIES), help="only this family")
    p.add_argument("--task", help="only this task (name or task id)")
    p.add_argument("--quality", choices=QUALITIES)
    p.add_argument("--built", action="store_true", help="only datasets on disk")
    p.add_argument("--buildable", action="store_true", help="only datasets this install can build")
    p.add_argument("--json", action="store_true")
    p.add_argument("--remove-leftovers", action="store_true",
                   help="delete the temporary folders of interrupted builds it reports")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="a dataset's card")
    p.add_argument("dataset_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "verify", help="check that a built dataset holds the canonical build's bytes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Hash the local data file and compare it with the SHA-256 recorded for the "
            "dataset's canonical build. Exit status 0 when they are equal, 1 when they differ "
            "(printing the first differing episode, where the canonical per-episode digests "
            "ship, and how the statistics differ), 2 on an error.", 88),
        epilog="example:\n  marl-bench verify smac-2s3z-expert-v0")
    p.add_argument("dataset_id")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_verify)

    def task_args(p):
        p.add_argument("--env", required=True, choices=sorted(FAMILIES))
        p.add_argument("--task", help="task within the family (e.g. n6, cn, halfcheetah_2x3)")
        p.add_argument("--map", help="SMAC map (same as --task for --env smac)")
        p.add_argument("--seed", type=_non_negative, default=0,
                       help="seed of the episodes (default 0, the canonical builds' seed; the "
                            "same seed and --num-envs repeat the same episodes)")
        p.add_argument("--num-envs", type=_positive, default=None,
                       help="lock-step batch size (default per family)")

    p = sub.add_parser(
        "collect", help="build datasets on disk (--task and --map take comma lists or 'all')",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Build registered datasets under MINARI_DATASETS_PATH (default ~/.minari/datasets) "
            "from the behaviour agents shipped with the package, with progress bars. A dataset "
            "already built with the same recipe is left alone; two collects of one dataset at "
            "once share one build.", 88),
        epilog="examples:\n"
               "  marl-bench collect --env equal_line --task n6 --quality random\n"
               "  marl-bench collect --env smac --map 2s3z --quality expert\n"
               "  marl-bench collect --env mpe --task cn,pp --quality all\n"
               "then: marl-bench verify smac-2s3z-expert-v0")
    task_args(p)
    p.add_argument("--quality", required=True, choices=list(QUALITIES) + ["all"],
                   help="random, medium-replay, medium, expert, mixed, or all five")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: here, --workers at once (default one); ray: all at once as Ray "
                        "tasks, each written under the building node's MINARI_DATASETS_PATH "
                        "(shared storage; see docs/cluster.md)")
    p.add_argument("--address", default=None,
                   help="the Ray cluster (--executor ray): auto or HEAD_IP:6379")
    p.add_argument("--workers", type=int, default=1,
                   help="--executor local: datasets built at once, each in a process of its "
                        "own and the same as built alone (default: 1)")
    p.add_argument("--episodes", type=_positive, default=None,
                   help="how many episodes (default: the registry's size, as the canonical "
                        "builds)")
    p.add_argument("--engine", default=None,
                   help="simulator override, e.g. sc2 for SMAC on StarCraft II or mpe2 for MPE's "
                        "reference engine; such data get their own ids (…-sc2-v0)")
    p.add_argument("--force", action="store_true", help="rebuild an existing dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--train", action="store_true",
                   help="retrain the behaviour agents from scratch with their recorded config "
                        "(hours on a laptop; resumable) and collect with them instead of the "
                        "shipped ones")
    p.add_argument("--train-dir", default="marl-bench-runs",
                   help="where --train keeps its runs and chosen agents (default: %(default)s)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("reference", help="measure a task's ref_random and record it")
    task_args(p)
    p.add_argument("--policy", default="random", choices=["random"])
    p.add_argument("--episodes", type=_positive, default=1000)
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("record", help="record a canonical build's statistics in the registry")
    p.add_argument("dataset_ids", nargs="+")
    p.add_argument("--allow-noncanonical", action="store_true")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("docs", help="regenerate docs/datasets.md and the return plots")
    p.add_argument("--out", default="docs")
    p.set_defaults(func=cmd_docs)

    try:
        from .evaluate_cli import add_evaluate_parser
    except ImportError:
        pass
    else:
        add_evaluate_parser(sub)
    return parser


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    """argparse type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LookupError, ValueError, TypeError, OSError, RuntimeError) as err:
        # OSError covers a corrupt dataset (CorruptDatasetError), a missing or read-only
        # folder and a file where a folder should be; each message names the path and the fix.
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"marl-bench {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
