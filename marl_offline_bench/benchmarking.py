"""A benchmark sweep: which (algorithm, dataset, seed) runs to make, checked before any runs.

:func:`run_benchmark` pairs algorithms with datasets (capability and ``--set`` keys checked once
per pairing, before any data are loaded), forms one :class:`~marl_offline_bench.training.RunJob`
per seed with its protocol's budget, and hands the jobs to an executor
(:class:`~marl_offline_bench.executors.LocalExecutor` or the Ray one). What one run does is
:mod:`marl_offline_bench.training`; where its files live is :mod:`marl_offline_bench.runstore`.
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .algorithms import Unsupported, get_algorithm
from .executors import LocalExecutor
from .protocols import protocol_budget
from .registry import DATASETS, get_dataset, nearest_ids
from .training import RunJob, RunOutcome

logger = logging.getLogger(__name__)

#: The suite's own records in a checkout; a user's runs go elsewhere (``marl-bench evaluate``).
DEFAULT_OUT = Path("leaderboards")


# -- algorithms: see marl_offline_bench.algorithms ---------------------------------------------
def check_pairing(algo: str, dataset_id: str) -> None:
    """Raise :class:`Unsupported` naming both when ``algo`` declares no learner for the
    dataset's action kind (known from its spec, before any data is loaded)."""
    from .envs import task_info

    get_algorithm(algo).check_supports(task_info(get_dataset(dataset_id).task_id), dataset_id)


def check_overrides(algo: str, dataset_id: str, overrides: dict[str, Any]) -> None:
    """Raise ValueError naming the algorithm and the key when ``--set`` gives a setting the
    algorithm's config does not have on this dataset's action kind."""
    from .envs import task_info

    info = task_info(get_dataset(dataset_id).task_id)
    fields = get_algorithm(algo).algorithm_class(info.discrete).config_fields()
    unknown = sorted(set(overrides) - fields)
    if unknown:
        near = {k: difflib.get_close_matches(k, fields, n=1) for k in unknown}
        hints = "; ".join(f"{k!r}" + (f" (did you mean {m[0]!r}?)" if m else "")
                          for k, m in near.items())
        raise ValueError(f"--set: {algo} has no setting {hints} on {dataset_id}; its "
                         f"settings are {', '.join(sorted(fields))}.")


def overrides_for(algo: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` settings that apply to ``algo``: the unscoped ones and its own
    (``algo.key``, which win), by their plain names."""
    mine = {k: v for k, v in overrides.items() if "." not in k}
    mine.update({k.partition(".")[2]: v for k, v in overrides.items()
                 if k.startswith(f"{algo}.")})
    return mine


# -- datasets ----------------------------------------------------------------------------------
def select_datasets(pattern: str | None, build: bool = True,
                    report: Callable[[str], None] | None = None,
                    keep_unbuilt: bool = False) -> list[str]:
    """The dataset ids to evaluate on.

    Args:
        pattern: None for every built dataset; else comma-separated ids or globs
            (``"equal_line-*-random-v0,smac-2s3z-*"``).
        build: build registered, buildable datasets that match but are not on disk yet
            (through :func:`marl_offline_bench.load`).
        report: where progress and skip messages go.
        keep_unbuilt: keep registered, buildable datasets that match but are not on disk here,
            without building them: the runs build them where they run (the Ray executor's
            ``build_on_nodes``). Takes precedence over ``build``.

    Raises:
        KeyError: an exact id that is not registered (the message lists the nearest ids).
        ValueError: nothing to evaluate on (the message says why and what to do).
    """
    from . import storage
    from .api import load
    from .collect import build_blocker

    say = report or logger.info
    if pattern is None:
        built = [d for d, e in DATASETS.items() if storage.is_built(e.minari_id)]
        if not built:
            raise ValueError(
                f"no dataset is built under {storage.minari_root()}; build one with "
                "`marl-bench collect ...` or name datasets with --datasets (buildable ones are "
                "built on the way; `marl-bench list --buildable` shows them).")
        return built
    chosen: list[str] = []
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = fnmatch.filter(DATASETS, part)
            if not matches:
                near = ", ".join(nearest_ids(part.replace("*", "")))
                raise ValueError(f"--datasets pattern {part!r} matches no registered id; "
                                 f"nearest ids: {near}.")
        else:
            matches = [get_dataset(part).dataset_id]
        chosen += [m for m in matches if m not in chosen]
    usable = []
    for dataset_id in chosen:
        entry = DATASETS[dataset_id]
        if storage.is_built(entry.minari_id):
            usable.append(dataset_id)
            continue
        blocker = build_blocker(entry)
        if blocker is not None:
            say(f"skipping, not built: {blocker}")
            continue
        if keep_unbuilt:
            usable.append(dataset_id)
            continue
        if not build:
            say(f"skipping {dataset_id}: not built (build it with marl-bench collect)")
            continue
        say(f"building {dataset_id} (registered, buildable, not on disk yet) ...")
        load(dataset_id, build=True, progress=False)
        usable.append(dataset_id)
    if not usable:
        raise ValueError(f"--datasets {pattern!r}: none of the matching datasets can be used "
                         "(see the messages above; `marl-bench list --buildable`).")
    return usable


# -- many runs ------------------------------------------------------------------------------------
@dataclass
class BenchmarkSummary:
    """Outcomes of :func:`run_benchmark`, in job order."""

    outcomes: list[RunOutcome]
    unsupported: list[str]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; others are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device here; use "
                           "--device cpu or auto.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def run_benchmark(algos: list[str], datasets: list[str], seeds: list[int], protocol: str,
                  out: Path = DEFAULT_OUT, workers: int = 1, device: str = "cpu",
                  overrides: dict[str, Any] | None = None, retry_failed: bool = False,
                  report: Callable[[str], None] | None = None,
                  executor: Any = None, show_progress: bool = False,
                  keep_learners: bool = False) -> BenchmarkSummary:
    """Run every (algorithm, dataset, seed) job not yet recorded.

    Capability is checked once per (algorithm, dataset) pairing; unsupported pairings are
    skipped with a message naming both. With ``workers > 1`` the jobs run in a pool of spawned
    processes; each job writes its own record, so no result is lost or written twice. With
    an ``executor`` (a :class:`~marl_offline_bench.ray_executor.RayExecutor`) the jobs run
    wherever it sends them, under the same records, locks and checkpoints.

    Args:
        algos: registered algorithm names.
        datasets: built dataset ids.
        seeds: run seeds.
        protocol: a key of :data:`PROTOCOLS`.
        out: the output folder (records under ``out/runs``).
        workers: local processes.
        device: torch device for training and acting.
        overrides: algorithm config overrides: ``key`` applies to every algorithm,
            ``algo.key`` to that algorithm only.
        retry_failed: redo runs recorded as failed (a non-finite loss) instead of skipping them.
        report: where progress lines go (default: this module's logger).
        executor: None for local processes (``workers``), else an object with
            ``run(jobs, note)`` that calls ``note(outcome)`` once per job, e.g.
            :class:`~marl_offline_bench.ray_executor.RayExecutor`.
        show_progress: a progress bar per run (updates, last evaluation, time left).
        keep_learners: keep each finished run's final learner under ``out/learners/``
            (:func:`~marl_offline_bench.training.load_learner`), e.g. to watch its episodes.
    """
    say = report or logger.info
    executor = executor or LocalExecutor(workers)
    overrides = overrides or {}
    for key in overrides:
        scope = key.partition(".")[0] if "." in key else None
        if scope is not None and scope not in algos:
            raise ValueError(f"override {key!r} is scoped to {scope!r}, which is not among the "
                             f"algorithms being run ({', '.join(algos)}).")
    unsupported, jobs = [], []
    for algo in algos:
        mine = overrides_for(algo, overrides)
        for dataset_id in datasets:
            try:
                check_pairing(algo, dataset_id)
            except Unsupported as err:
                unsupported.append(f"{algo} on {dataset_id}: {err}")
                say(f"skipping {algo} on {dataset_id}: {err}")
                continue
            check_overrides(algo, dataset_id, mine)
            budget = protocol_budget(protocol, dataset_id)
            jobs += [RunJob(algo, dataset_id, seed, protocol, budget, str(out), device,
                            dict(mine), retry_failed, show_progress=show_progress,
                            keep_learner=keep_learners)
                     for seed in seeds]
    outcomes: list[RunOutcome] = []
    seen_unsupported: set[tuple[str, str]] = set()

    def note(outcome: RunOutcome) -> None:
        outcomes.append(outcome)
        job = outcome.job
        if outcome.status == "unsupported":
            if (job.algo, job.dataset_id) not in seen_unsupported:
                seen_unsupported.add((job.algo, job.dataset_id))
                unsupported.append(f"{job.algo} on {job.dataset_id}: {outcome.message}")
                say(f"skipping {job.algo} on {job.dataset_id}: {outcome.message}")
            return
        score = "" if outcome.final_score is None else f", final score {outcome.final_score:.4g}"
        detail = f" ({outcome.message})" if outcome.message else ""
        say(f"[{len(outcomes)}/{len(jobs)}] {job.key}: {outcome.status}{score}{detail}"
            + (f" in {outcome.seconds:.1f}s" if outcome.seconds else ""))

    executor.run(jobs, note)  # it may adapt the jobs (device, threads): order by their key
    order = {job.key: i for i, job in enumerate(jobs)}
    outcomes.sort(key=lambda o: order[o.job.key])
    return BenchmarkSummary(outcomes, unsupported)


__all__ = ["DEFAULT_OUT", "BenchmarkSummary", "run_benchmark", "select_datasets",
           "check_pairing", "check_overrides", "overrides_for", "resolve_device"]
