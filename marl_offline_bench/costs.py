"""What a sweep costs before it runs: ``marl-bench evaluate ... --dry-run``.

Each planned run is priced from measured rates. First choice, a measurement made here and now: the
learner is built with the run's resolved config on synthetic data of the task's shapes, a few whole
rounds of updates are timed, and the task's learning-curve and final evaluations on its engine,
once per task, and the first steps of its one-off fits (a behaviour model, a teacher), scaled to
their full length. The probes fit into a temporary fit store shared by the whole dry run
(:func:`probe_fit_store`), so a fit that two planned runs share (``cfcql_vae`` and
``cfcql_sign_plus``) is priced once, as the store runs it; a fit the real store already holds
is still priced. Otherwise, the wall time per update
of finished run records (their own evaluations included): records of the same algorithm, task and
protocol; else of the same algorithm and task under another protocol, scaled linearly by batch
size; else the same algorithm's records on the family. A run with neither is listed as unpriced.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .protocols import FRACTION_OF_FULL, Budget, protocol_budget, reference_task
from .registry import get_dataset, recorded_statistics

__all__ = ["PlannedRun", "MeasuredRun", "plan_costs", "format_plan", "measure_run",
           "measure_evaluations", "probe_fit_store"]

#: Config fields of one-off fits before the first update, set to 0 when timing updates.
_ONE_OFF_FITS = ("bc_steps", "vae_steps", "teacher_steps")
#: Two lengths of each one-off fit, timed to price its steps apart from its fixed part (CFCQL's
#: table of behaviour log-probabilities over the data, say).
_FIT_PROBES = (10, 110)

_BATCH_KEYS = ("batch_size", "transition_batch_size", "episode_batch_size")


@dataclass(frozen=True)
class PlannedRun:
    """One run a sweep would start, with its budget and estimated cost."""

    algo: str
    dataset_id: str
    seed: int
    updates: int
    batch_size: int | None
    cpu_hours: float | None
    basis: str
    eval_hours: float | None = None  # of cpu_hours, evaluating (where measured)


def _batch(config: dict[str, Any]) -> int | None:
    for key in _BATCH_KEYS:
        if isinstance(config.get(key), int):
            return config[key]
    return None


def _rates(roots: Iterable[Path]) -> list[dict[str, Any]]:
    """(algo, task, family, protocol, seconds per update, batch) of every finished record."""
    rows = []
    for root in roots:
        for path in Path(root).glob("runs/*/*/*/seed*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("status") != "done":
                continue
            updates = (record.get("budget") or {}).get("updates")
            seconds = record.get("wall_time_s")
            if not updates or not seconds:
                continue
            rows.append({"algo": record.get("algo"), "task": record.get("task_id"),
                         "family": record.get("family"), "protocol": record.get("protocol"),
                         "rate": float(seconds) / int(updates),
                         "batch": _batch(record.get("config") or {})})
    return rows


def _target_batch(protocol: str, dataset_id: str, same: list[dict[str, Any]]) -> int | None:
    if protocol in FRACTION_OF_FULL:
        try:
            return reference_task(dataset_id).settings.get("batch_size")
        except KeyError:
            return None
    batches = [r["batch"] for r in same if r["protocol"] == protocol and r["batch"]]
    return batches[0] if batches else None


def _price(algo: str, dataset_id: str, protocol: str,
           rates: list[dict[str, Any]]) -> tuple[float | None, int | None, str]:
    entry = get_dataset(dataset_id)
    task, family = entry.task_id, entry.task.family
    mine = [r for r in rates if r["algo"] == algo]
    target = _target_batch(protocol, dataset_id, [r for r in mine if r["task"] == task])
    tiers = (
        ([r for r in mine if r["task"] == task and r["protocol"] == protocol], False,
         f"{algo} {protocol} records on {task}"),
        ([r for r in mine if r["task"] == task], True, f"{algo} records on {task}"),
        ([r for r in mine if r["family"] == family], True, f"{algo} records on {family}"),
    )
    for rows, scale, basis in tiers:
        if not rows:
            continue
        scaled = []
        for r in rows:
            factor = (target / r["batch"]) if scale and target and r["batch"] else 1.0
            scaled.append(r["rate"] * factor)
        note = f"{len(rows)} {basis}" + (f", scaled to batch {target}" if scale and target else "")
        return statistics.median(scaled), target, note
    return None, target, "no record of this algorithm to measure from"


@dataclass(frozen=True)
class MeasuredRun:
    """What one run of an (algorithm, task) costs here, measured on synthetic data.

    Attributes:
        update_s: seconds per update (whole rounds, after a warm-up round).
        batch: the batch the learner draws.
        curve_eval_s: seconds of one learning-curve evaluation (``budget.eval_episodes``).
        final_eval_s: seconds of the final evaluation (``budget.final_episodes``).
        fit_s: seconds of the one-off fits before the first update, at their full length.
    """

    update_s: float
    batch: int | None
    curve_eval_s: float
    final_eval_s: float
    fit_s: float = 0.0

    def run_seconds(self, budget: Budget) -> tuple[float, float]:
        """(total seconds, of which evaluation) of a run under ``budget``."""
        evaluations = math.ceil(budget.updates / budget.eval_every)
        evaluating = evaluations * self.curve_eval_s + self.final_eval_s
        return self.fit_s + budget.updates * self.update_s + evaluating, evaluating


_probing = False  # inside probe_fit_store()


@contextlib.contextmanager
def probe_fit_store() -> Iterator[None]:
    """Within it, the fit store is a temporary folder shared by every probe fit made inside, and
    removed after: the probes of a run whose fit another run made already load it, as the real
    runs would, and nothing reaches the real store. Nested uses share the outermost folder;
    where the store is off (``MARL_BENCH_FIT_STORE=off``) it stays off."""
    global _probing
    from .fits import FIT_STORE_ENV, fit_store_folder

    if _probing or fit_store_folder() is None:
        yield
        return
    configured = os.environ.get(FIT_STORE_ENV)
    with tempfile.TemporaryDirectory(prefix="marl-bench-probe-fits-") as folder:
        os.environ[FIT_STORE_ENV], _probing = folder, True
        try:
            yield
        finally:
            _probing = False
            if configured is None:
                del os.environ[FIT_STORE_ENV]
            else:
                os.environ[FIT_STORE_ENV] = configured


def measure_run(algo: str, dataset_id: str, protocol: str, rounds: int = 3,
                overrides: dict[str, Any] | None = None) -> MeasuredRun:
    """Time ``algo`` with the run's config here, on synthetic data of the dataset's shapes
    (whole rounds of updates after one warm-up round, and the first steps of its one-off fits,
    in :func:`probe_fit_store`), and its task's evaluations (:func:`measure_evaluations`). ``overrides``: the run's ``--set``
    settings."""
    import time

    from .algorithms import get_algorithm
    from .dataset import synthetic_dataset
    from .envs import task_info

    entry = get_dataset(dataset_id)
    info = task_info(entry.task_id)
    stats = (recorded_statistics(dataset_id) or {}).get("statistics") or {}
    length = max(1, round(stats["transitions"] / stats["episodes"])) if stats.get("episodes") \
        else info.episode_limit
    spec = get_algorithm(algo)
    cls = spec.algorithm_class(info.discrete)
    overrides = overrides or {}
    full = spec.config(info, dataset_id, protocol, **overrides)
    fit_steps = sum(getattr(full, k) for k in _ONE_OFF_FITS if hasattr(full, k))
    data = synthetic_dataset(info, max(8, 4096 // length), length)

    def learner_preparing(steps: int) -> tuple[Any, float]:
        """The run's learner (its dataset's table entry included) on data of its shapes, with
        its one-off fits cut to ``steps``; and the seconds its prepare() took."""
        cut = {k: min(getattr(full, k), steps) for k in _ONE_OFF_FITS if hasattr(full, k)}
        learner = cls(info, data, spec.config(info, dataset_id, protocol, **{**overrides, **cut}))
        started = time.perf_counter()
        learner.prepare()
        return learner, time.perf_counter() - started

    with probe_fit_store():
        (_, short), (learner, long) = (learner_preparing(steps) for steps in _FIT_PROBES)
    per_step = max(0.0, long - short) / (_FIT_PROBES[1] - _FIT_PROBES[0])
    fit_s = max(0.0, short - _FIT_PROBES[0] * per_step) + fit_steps * per_step
    per_round = int(getattr(learner.config, "critic_updates_per_round", 1) or 1)
    for _ in range(per_round):
        learner.update()
    started = time.perf_counter()
    for _ in range(rounds * per_round):
        learner.update()
    update_s = (time.perf_counter() - started) / (rounds * per_round)
    batch = getattr(getattr(learner, "sampler", None), "batch_size", None)  # what it draws
    budget = protocol_budget(protocol, dataset_id)
    curve_s, final_s = measure_evaluations(entry.task_id, budget.eval_episodes,
                                           budget.final_episodes)
    return MeasuredRun(update_s, batch, curve_eval_s=curve_s, final_eval_s=final_s, fit_s=fit_s)


@functools.lru_cache(maxsize=None)
def measure_evaluations(task_id: str, curve_episodes: int,
                        final_episodes: int) -> tuple[float, float]:
    """Seconds of one learning-curve and one final evaluation of a task, timed here once per
    process after a warm-up evaluation (compilation). The engine's cost, so it is timed with
    uniform random actions: the learners' policies are small networks beside a step of a
    batch of environments, though their episodes may last longer or shorter than random ones."""
    import time

    from .envs import task_info
    from .evaluation import evaluate_policy
    from .rollout import RandomPolicy

    policy = RandomPolicy(task_info(task_id), seed=0)
    timed = []
    for episodes in (curve_episodes, curve_episodes, final_episodes):
        started = time.perf_counter()
        evaluate_policy(policy, task_id, episodes=episodes, seed=0)
        timed.append(time.perf_counter() - started)
    return timed[1], timed[2]


def plan_costs(algos: list[str], datasets: list[str], seeds: list[int], protocol: str,
               record_roots: Iterable[Path], measure: bool = False,
               overrides: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Every (algorithm, dataset, seed) run with its budget and estimated CPU-hours (measured
    here with the config ``overrides`` when ``measure``, else from the records)."""
    import torch

    rates = _rates(record_roots)
    measured: dict[tuple[str, str], MeasuredRun] = {}
    plan = []
    for algo in algos:
        for dataset_id in datasets:
            budget = protocol_budget(protocol, dataset_id)
            key = (algo, get_dataset(dataset_id).task_id)
            hours = evaluating = None
            if measure:
                if key not in measured:
                    threads = torch.get_num_threads()
                    torch.set_num_threads(1)  # one run per core, as the sweeps run
                    try:
                        measured[key] = measure_run(algo, dataset_id, protocol,
                                                    overrides=overrides)
                    finally:
                        torch.set_num_threads(threads)
                seconds, evaluating = measured[key].run_seconds(budget)
                hours, evaluating, batch = seconds / 3600, evaluating / 3600, measured[key].batch
                basis = "timed here on synthetic data of its shapes, one thread"
            if hours is None:
                rate, batch, basis = _price(algo, dataset_id, protocol, rates)
                hours = None if rate is None else rate * budget.updates / 3600
            plan += [PlannedRun(algo, dataset_id, seed, budget.updates, batch, hours, basis,
                                evaluating) for seed in seeds]
    return plan


def format_plan(plan: list[PlannedRun], protocol: str) -> list[str]:
    """The dry run's lines: one per run, then totals per algorithm and per family."""
    lines = [f"dry run, protocol {protocol}: {len(plan)} run(s) (estimated CPU-hours: one run "
             "per core, one-off fits, updates and evaluations)"]
    for run in plan:
        cost = "unpriced" if run.cpu_hours is None else f"{run.cpu_hours:.2f} CPU-hours"
        if run.eval_hours is not None and run.cpu_hours:
            cost += f", {run.eval_hours / run.cpu_hours:.1%} of it evaluating"
        batch = "" if run.batch_size is None else f" at batch {run.batch_size:,}"
        lines.append(f"  {run.algo} {run.dataset_id} seed {run.seed}: {run.updates:,} "
                     f"updates{batch}, {cost} ({run.basis})")

    def total(key) -> dict[str, tuple[float, int]]:
        sums: dict[str, tuple[float, int]] = {}
        for run in plan:
            hours, unpriced = sums.get(key(run), (0.0, 0))
            sums[key(run)] = (hours + (run.cpu_hours or 0.0), unpriced + (run.cpu_hours is None))
        return sums

    for title, key in (("algorithm", lambda r: r.algo),
                       ("family", lambda r: get_dataset(r.dataset_id).task.family)):
        for name, (hours, unpriced) in sorted(total(key).items()):
            extra = f" (+{unpriced} unpriced)" if unpriced else ""
            lines.append(f"total for {title} {name}: {hours:.1f} CPU-hours{extra}")
    hours = sum(r.cpu_hours or 0.0 for r in plan)
    timed = [r for r in plan if r.eval_hours is not None]
    share = (f", {sum(r.eval_hours for r in timed) / sum(r.cpu_hours for r in timed):.1%} of the "
             "timed runs' hours evaluating") if timed and sum(r.cpu_hours for r in timed) else ""
    lines.append(f"total: {hours:.1f} CPU-hours over {len(plan)} run(s){share}")
    return lines
