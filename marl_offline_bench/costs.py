"""What a sweep costs before it runs: ``marl-bench evaluate ... --dry-run``.

Each planned run is priced from measured rates. First choice, a measurement made here and now:
the learner is built with the run's resolved config on synthetic data of the task's shapes, and
a few whole rounds of updates are timed (one-off fits of a behaviour model are left out, and so
is evaluation). Otherwise, the wall time per update of finished run records (their own
evaluations included): records of the same algorithm, task and protocol; else of the same
algorithm and task under another protocol, scaled linearly by batch size; else the same
algorithm's records on the family. A run with neither is listed as unpriced.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .protocols import protocol_budget, reference_task
from .registry import get_dataset, recorded_statistics

__all__ = ["PlannedRun", "plan_costs", "format_plan", "measure_update_seconds"]

#: Config fields of one-off fits before the first update, set to 0 when timing updates.
_ONE_OFF_FITS = ("bc_steps", "vae_steps", "teacher_steps")

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
    if protocol == "full":
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


def _synthetic(info, length: int, episodes: int):
    """Episodes of random values with the task's shapes (an update's cost depends on them only)."""
    import numpy as np

    from .dataset import EpisodeArrays, MARLDataset

    rng = np.random.default_rng(0)
    n, steps = info.n_agents, episodes * length
    rows = steps + episodes
    if info.discrete:
        avail = np.ones((rows, n, info.n_actions), bool)
        actions = rng.integers(0, info.n_actions, (steps, n))
    else:
        avail = None
        actions = rng.uniform(-1, 1, (steps, n, info.action_dim)).astype(np.float32)
    arrays = EpisodeArrays(
        obs=rng.normal(size=(rows, n, info.obs_dim)).astype(np.float32),
        states=rng.normal(size=(rows, info.state_dim)).astype(np.float32),
        avail_actions=avail, actions=actions, rewards=rng.normal(size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=np.zeros(steps, bool),
        timeouts=np.tile(np.arange(length) == length - 1, episodes), won=None,
        episode_starts=np.arange(0, steps + 1, length).astype(np.int64),
        seeds=np.zeros(episodes, np.int64))
    return MARLDataset(arrays, f"{info.task_id}-synthetic", info.task_id, {}, info.obs_mask,
                       info.action_mask)


def measure_update_seconds(algo: str, dataset_id: str, protocol: str,
                           rounds: int = 3) -> tuple[float, int | None]:
    """Seconds per update of ``algo`` with the run's config, timed here on synthetic data of
    the dataset's shapes (whole rounds, after one warm-up round); and the batch it used."""
    import time

    from .algorithms import get_algorithm
    from .envs import task_info

    entry = get_dataset(dataset_id)
    info = task_info(entry.task_id)
    stats = (recorded_statistics(dataset_id) or {}).get("statistics") or {}
    length = max(1, round(stats["transitions"] / stats["episodes"])) if stats.get("episodes") \
        else info.episode_limit
    spec = get_algorithm(algo)
    cls = spec.algorithm_class(info.discrete)
    no_fit = {k: 0 for k in _ONE_OFF_FITS if k in cls.config_fields()}
    # the run's config (its dataset's table entry included), on data of its shapes
    config = spec.config(info, dataset_id, protocol, **no_fit)
    learner = cls(info, _synthetic(info, length, episodes=max(8, 4096 // length)), config)
    per_round = int(getattr(learner.config, "critic_updates_per_round", 1) or 1)
    for _ in range(per_round):
        learner.update()
    started = time.perf_counter()
    for _ in range(rounds * per_round):
        learner.update()
    batch = getattr(getattr(learner, "sampler", None), "batch_size", None)  # what it draws
    return (time.perf_counter() - started) / (rounds * per_round), batch


def plan_costs(algos: list[str], datasets: list[str], seeds: list[int], protocol: str,
               record_roots: Iterable[Path], measure: bool = False) -> list[PlannedRun]:
    """Every (algorithm, dataset, seed) run with its budget and estimated CPU-hours (measured
    here when ``measure``, else from the records)."""
    import torch

    rates = _rates(record_roots)
    measured: dict[tuple[str, str], tuple[float, int | None]] = {}
    plan = []
    for algo in algos:
        for dataset_id in datasets:
            budget = protocol_budget(protocol, dataset_id)
            key = (algo, get_dataset(dataset_id).task_id)
            rate = None
            if measure:
                if key not in measured:
                    threads = torch.get_num_threads()
                    torch.set_num_threads(1)  # one run per core, as the sweeps run
                    try:
                        measured[key] = measure_update_seconds(algo, dataset_id, protocol)
                    finally:
                        torch.set_num_threads(threads)
                rate, batch = measured[key]
                basis = "timed here on synthetic data of its shapes, one thread"
            if rate is None:
                rate, batch, basis = _price(algo, dataset_id, protocol, rates)
            hours = None if rate is None else rate * budget.updates / 3600
            plan += [PlannedRun(algo, dataset_id, seed, budget.updates, batch, hours, basis)
                     for seed in seeds]
    return plan


def format_plan(plan: list[PlannedRun], protocol: str) -> list[str]:
    """The dry run's lines: one per run, then totals per algorithm and per family."""
    lines = [f"dry run, protocol {protocol}: {len(plan)} run(s) (estimated CPU-hours: one run "
             "per core, updates only: evaluations and one-off behaviour fits add to it)"]
    for run in plan:
        cost = "unpriced" if run.cpu_hours is None else f"{run.cpu_hours:.2f} CPU-hours"
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
    lines.append(f"total: {hours:.1f} CPU-hours over {len(plan)} run(s)")
    return lines
