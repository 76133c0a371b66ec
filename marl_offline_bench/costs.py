"""What a sweep costs before it runs: ``marl-bench evaluate ... --dry-run``.

Each planned run is priced from measured rates: the wall time per update of finished run
records (their own evaluations included), preferring records of the same algorithm, task and
protocol; otherwise records of the same algorithm and task under another protocol, scaled
linearly by batch size (an update's matrix work grows with its batch); otherwise the same
algorithm's records on the family. A run with no such record is listed as unpriced.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .protocols import protocol_budget, reference_task
from .registry import get_dataset

__all__ = ["PlannedRun", "plan_costs", "format_plan"]

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


def plan_costs(algos: list[str], datasets: list[str], seeds: list[int], protocol: str,
               record_roots: Iterable[Path]) -> list[PlannedRun]:
    """Every (algorithm, dataset, seed) run with its budget and estimated CPU-hours."""
    rates = _rates(record_roots)
    plan = []
    for algo in algos:
        for dataset_id in datasets:
            budget = protocol_budget(protocol, dataset_id)
            rate, batch, basis = _price(algo, dataset_id, protocol, rates)
            hours = None if rate is None else rate * budget.updates / 3600
            plan += [PlannedRun(algo, dataset_id, seed, budget.updates, batch, hours, basis)
                     for seed in seeds]
    return plan


def format_plan(plan: list[PlannedRun], protocol: str) -> list[str]:
    """The dry run's lines: one per run, then totals per algorithm and per family."""
    lines = [f"dry run, protocol {protocol}: {len(plan)} run(s) (estimated CPU-hours: one run "
             "per core, from the wall time per update of finished records)"]
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
