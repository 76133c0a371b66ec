"""One run: train an algorithm on a dataset under a protocol, evaluate it, record it.

Protocol, after OG-MARL and CORL: ``update()`` is called ``budget.updates`` times; every
``budget.eval_every`` updates the greedy policy plays ``budget.eval_episodes`` episodes; at the
end a final evaluation plays ``budget.final_episodes`` (10x) episodes and its score is the one
reported: the last, never the best.

A run with a record of the same protocol and budget is skipped; a run killed part-way resumes
from its last checkpoint (taken at every evaluation, and before the first update, after the
one-off fits of ``prepare()``); a run whose update metrics stop being finite is recorded as
``"failed"`` with the update and the reason, and is not scored. Other exceptions (a bug, a
kill) leave no record, only the checkpoint, so a re-run resumes them.

Every algorithm also runs on its own, on this same loop::

    python -m baselines.cfcql --dataset equal_line-n2-random-v0 --protocol smoke
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .algorithms import build_algorithm, get_algorithm
from .protocols import Budget, budget_source, protocol_budget
from .provenance import git_commit, package_versions
from .records import RunRecord
from .registry import get_dataset
from .runstore import (FileCheckpoints, RunLock, checkpoint_path, keep_checkpoint_as_learner,
                       learner_path, read_record, record_path, remove_checkpoint,
                       write_json_atomic)

__all__ = ["RunJob", "RunOutcome", "NonFiniteLoss", "train_run", "claim_run", "attempt_run",
           "finish_run", "load_learner", "run_job", "main"]

#: Seeds of the learning-curve and final evaluations, away from training and collection seeds.
EVAL_SEED, FINAL_SEED = 10_000, 20_000


@dataclass(frozen=True)
class RunJob:
    """One (algorithm, dataset, seed) run and where it writes."""

    algo: str
    dataset_id: str
    seed: int
    protocol: str
    budget: Budget
    out: str
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    retry_failed: bool = False
    torch_threads: int | None = None
    show_progress: bool = False
    keep_learner: bool = False
    """Keep the final learner under ``out/learners/`` (:func:`load_learner`) instead of
    deleting the run's checkpoint when its record is written."""

    @property
    def key(self) -> str:
        return f"{self.algo} {self.dataset_id} seed {self.seed}"


@dataclass
class RunOutcome:
    """What happened to a job: ``done``, ``failed`` (non-finite loss), ``skipped`` (already
    recorded), ``busy`` (another process holds it), ``unsupported`` or ``error``."""

    job: RunJob
    status: str
    message: str = ""
    final_score: float | None = None
    seconds: float = 0.0


class NonFiniteLoss(RuntimeError):
    """An update returned a NaN or infinite metric."""


class IncompatibleCheckpoint(RuntimeError):
    """A checkpoint's learner state does not load into this code's learner (other networks)."""


# -- the loop ------------------------------------------------------------------------------------
def train_run(job: RunJob, checkpoints: Any) -> RunRecord:
    """Train ``job`` to its record (``done``, or ``failed`` on a non-finite loss), resuming from
    and saving to ``checkpoints`` (``load() -> dict | None``, ``save(state)``)."""
    from .envs import task_info

    entry = get_dataset(job.dataset_id)
    info = task_info(entry.task_id)
    get_algorithm(job.algo).check_supports(info, job.dataset_id)
    dataset = _load_dataset(job.dataset_id)

    def build():
        return build_algorithm(job.algo, info, dataset, protocol=job.protocol, seed=job.seed,
                               device=job.device, **job.overrides)

    algo = build()
    budget, config = job.budget, algo.config.to_dict()
    record = RunRecord(
        algo=job.algo, dataset_id=job.dataset_id, task_id=entry.task_id,
        family=entry.task.family, seed=job.seed, protocol=job.protocol, budget=asdict(budget),
        budget_source=budget_source(job.protocol, job.dataset_id), config=config,
        dataset_sha256=dataset.card.get("sha256"), device=job.device, commit=git_commit(),
        versions=package_versions())

    try:
        step, elapsed = _resume(job, algo, checkpoints, config, record)
    except IncompatibleCheckpoint as err:
        _say(job, str(err))
        algo, step, elapsed = build(), 0, 0.0      # the failed load may have filled part of it
    started, window = time.time(), []
    evaluate = _EvaluationClock(entry.task_id, spent=record.eval_time_s or 0.0)

    def save_checkpoint() -> None:
        checkpoints.save({
            "algo": job.algo, "dataset_id": job.dataset_id, "seed": job.seed,
            "overrides": job.overrides,
            "algorithm": algo.state_dict(), "rng": _rng_state(), "step": step,
            "curve": record.curve, "protocol": job.protocol, "budget": asdict(budget),
            "config": config, "dataset_sha256": record.dataset_sha256,
            "elapsed": elapsed + time.time() - started, "eval_elapsed": evaluate.spent,
            "prepare_elapsed": record.prepare_time_s})

    began = time.time()
    algo.prepare(progress=_fit_progress(job))
    if record.resumed_from is None:  # else the segment that ran the fits timed them
        record.prepare_time_s = round(time.time() - began, 3)
    if step == 0:  # a behaviour model can take hours to fit: an interruption keeps it
        save_checkpoint()
    bar = _progress(job, step)
    try:
        while step < budget.updates:
            metrics = algo.update()
            step += 1
            _check_finite(metrics, step)
            window.append(metrics)
            bar.update(1)
            if step % budget.eval_every == 0 or step == budget.updates:
                point = {"step": step, **evaluate(algo.policy(), budget.eval_episodes,
                                                  EVAL_SEED + job.seed),
                         "train": _mean_metrics(window)}
                record.curve.append(point)
                window = []
                bar.set_postfix(score=_score(point))
                if step < budget.updates:
                    save_checkpoint()
    except NonFiniteLoss as err:
        record.status, record.failure = "failed", {"step": step, "reason": str(err)}
    else:
        record.status = "done"
        record.final = {"step": step, **evaluate(algo.policy(), budget.final_episodes,
                                                 FINAL_SEED + job.seed)}
        if job.keep_learner:  # the learner that played the final episodes; finish_run keeps it
            save_checkpoint()
    finally:
        bar.close()
    record.wall_time_s = round(elapsed + time.time() - started, 3)
    record.eval_time_s = round(evaluate.spent, 3)
    record.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    return record


def _resume(job: RunJob, algo, checkpoints: Any, config: dict[str, Any],
            record: RunRecord) -> tuple[int, float]:
    """Restore the run from its checkpoint when it was made under the same protocol, budget
    and config, on the same dataset bytes; returns (updates done, seconds spent)."""
    state = checkpoints.load()
    if state is None:
        return 0, 0.0
    made_on, here = state.get("dataset_sha256"), record.dataset_sha256
    if made_on and here and made_on != here:
        # A checkpoint copied from a machine whose rebuild of the dataset differs (floats do not
        # travel across CPUs): finishing it here would train one run on two datasets.
        _say(job, f"{job.key}: checkpoint {checkpoints} was trained on other bytes of "
                  f"{job.dataset_id} (sha256 {made_on[:12]}, here {here[:12]}); starting afresh")
        return 0, 0.0

    def portable(c: dict[str, Any]) -> dict[str, Any]:  # a run may resume on another device
        return {k: v for k, v in (c or {}).items() if k != "device"}

    if (state.get("protocol"), state.get("budget"), portable(state.get("config"))) != \
            (job.protocol, asdict(job.budget), portable(config)):
        _say(job, f"{job.key}: checkpoint {checkpoints} was made under another protocol or "
                  "config; starting afresh")
        return 0, 0.0
    try:
        algo.load_state_dict(state["algorithm"])
    except (KeyError, RuntimeError, ValueError) as err:   # its networks are another commit's
        raise IncompatibleCheckpoint(
            f"{job.key}: checkpoint {checkpoints} does not fit this code's learner "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); starting afresh") from err
    _set_rng_state(state["rng"])
    record.curve, record.resumed_from = list(state["curve"]), int(state["step"])
    record.eval_time_s = state.get("eval_elapsed")
    record.prepare_time_s = state.get("prepare_elapsed")
    _say(job, f"{job.key}: resuming from update {state['step']:,} of {job.budget.updates:,}")
    return int(state["step"]), float(state["elapsed"])


# -- pieces of the loop --------------------------------------------------------------------------
class _EvaluationClock:
    """Evaluates policies on a task and sums the seconds it spent doing so (the record's
    ``eval_time_s``: what evaluation costs against the updates)."""

    def __init__(self, task_id: str, spent: float = 0.0):
        self.task_id, self.spent = task_id, spent

    def __call__(self, policy, episodes: int, seed: int) -> dict[str, Any]:
        started = time.time()
        try:
            return _evaluate(policy, self.task_id, episodes, seed)
        finally:
            self.spent += time.time() - started


def _evaluate(policy, task_id: str, episodes: int, seed: int) -> dict[str, Any]:
    import torch

    from .evaluation import evaluate_policy

    with torch.no_grad():
        result = evaluate_policy(policy, task_id, episodes=episodes, seed=seed)
    entry: dict[str, Any] = {
        "episodes": int(len(result.returns)),
        "mean_return": result.mean_return,
        "std_return": float(result.returns.std()),
        "normalized_score": result.mean_normalized_score,
        "win_rate": result.win_rate,
        "returns": [float(r) for r in result.returns],
    }
    if result.normalized_scores is not None:
        entry["normalized_scores"] = [float(s) for s in result.normalized_scores]
    return entry


def _score(point: dict[str, Any]) -> str:
    score = point.get("normalized_score")
    return f"{point['mean_return']:.3g} return" if score is None else f"{score:.1f}"


def _check_finite(metrics: dict[str, float], step: int) -> None:
    bad = [f"{k}={v}" for k, v in metrics.items() if not math.isfinite(float(v))]
    if bad:
        raise NonFiniteLoss(f"non-finite update metrics at update {step}: " + ", ".join(bad))


def _mean_metrics(window: list[dict[str, float]]) -> dict[str, float]:
    if not window:
        return {}
    return {k: float(np.mean([m[k] for m in window if k in m])) for k in window[-1]}


def _rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _progress(job: RunJob, step: int):
    from tqdm.auto import tqdm

    return tqdm(total=job.budget.updates, initial=step, desc=job.key, unit="upd",
                disable=not job.show_progress, leave=False, dynamic_ncols=True)


def _fit_progress(job: RunJob):
    """A bar for each one-off fit of :meth:`OfflineAlgorithm.prepare` (a behaviour model can
    take a minute before the first update)."""
    from tqdm.auto import tqdm

    def progress(steps, what: str):
        return tqdm(steps, desc=f"{job.key}: {what}", unit="step", disable=not job.show_progress,
                    leave=False, dynamic_ncols=True)
    return progress


def _say(job: RunJob, line: str) -> None:
    import logging

    if job.show_progress:
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        logging.getLogger(__name__).info(line)


_DATASET_CACHE: dict[str, Any] = {}


def _load_dataset(dataset_id: str):
    """Load a built dataset, keeping the last one: consecutive jobs usually share it."""
    from .api import load

    if dataset_id not in _DATASET_CACHE:
        _DATASET_CACHE.clear()
        _DATASET_CACHE[dataset_id] = load(dataset_id, build=False, progress=False)
    return _DATASET_CACHE[dataset_id]


# -- claiming, running and recording one job -----------------------------------------------------
def _same_protocol(record: dict[str, Any], job: RunJob) -> bool:
    return (record.get("protocol") == job.protocol
            and record.get("budget") == asdict(job.budget))


def _recorded(job: RunJob) -> RunOutcome | None:
    """``skipped`` when the job already has a record that counts, else None."""
    payload = read_record(record_path(Path(job.out), job.algo, job.dataset_id, job.seed,
                                      job.protocol))
    if payload and _same_protocol(payload, job) and (payload.get("status") == "done" or (
            payload.get("status") == "failed" and not job.retry_failed)):
        score = RunRecord.from_json(payload).final_score
        return RunOutcome(job, "skipped", f"already recorded ({payload['status']})",
                          final_score=score)
    return None


def claim_run(job: RunJob) -> tuple[RunOutcome | None, RunLock | None]:
    """Decide whether ``job`` must run, and if so take its lock.

    Returns:
        ``(outcome, None)`` when it must not run (``skipped``: recorded; ``busy``: another
        live process holds it), else ``(None, lock)``: the caller runs it, writes its record
        and then releases the lock.
    """
    import logging

    out = Path(job.out)
    rec_path = record_path(out, job.algo, job.dataset_id, job.seed, job.protocol)
    ckpt_path = checkpoint_path(out, job.algo, job.dataset_id, job.seed)
    if (outcome := _recorded(job)) is not None and not ckpt_path.exists():
        return outcome, None
    lock = RunLock(rec_path.with_suffix(".lock"))
    if not lock.acquire():
        return RunOutcome(job, "busy", f"{lock.holder()} holds {lock.path}"), None
    try:
        if (outcome := _recorded(job)) is not None:  # recorded, maybe while we took the lock
            remove_checkpoint(ckpt_path)  # left by a kill between record and clean-up
            lock.release()
            return outcome, None
        old = read_record(rec_path)
    except BaseException:
        lock.release()
        raise
    if old and not _same_protocol(old, job):
        logging.getLogger(__name__).warning(
            "%s: replacing its record made under protocol %r %s", job.key, old.get("protocol"),
            old.get("budget"))
    return None, lock


def attempt_run(job: RunJob, checkpoints: Any) -> tuple[RunOutcome, RunRecord | None]:
    """Train ``job`` from its checkpoint store to a record, without writing the record.

    Never raises for a run's own failure: the outcome says what happened (``error`` carries
    the exception's message, and the checkpoint stays for a re-run).
    """
    import logging

    from .algorithms import Unsupported

    started = time.time()
    try:
        if job.torch_threads:
            import torch

            torch.set_num_threads(job.torch_threads)
        record = train_run(job, checkpoints)
    except Unsupported as err:
        return RunOutcome(job, "unsupported", str(err)), None
    except Exception as err:
        logging.getLogger(__name__).exception("run %s raised", job.key)
        return RunOutcome(job, "error", f"{type(err).__name__}: {err}",
                          seconds=time.time() - started), None
    message = record.failure["reason"] if record.status == "failed" else ""
    if record.resumed_from is not None:  # this attempt's seconds are only part of the run's
        resumed = f"resumed from update {record.resumed_from:,}, {record.wall_time_s:.0f}s in all"
        message = f"{message}; {resumed}" if message else resumed
    return RunOutcome(job, record.status, message, final_score=record.final_score,
                      seconds=time.time() - started), record


def finish_run(job: RunJob, record: RunRecord) -> None:
    """Write a run's record (atomically), then delete its checkpoint, or with
    ``job.keep_learner`` keep a finished run's final one under ``learners/``."""
    out = Path(job.out)
    write_json_atomic(record_path(out, job.algo, job.dataset_id, job.seed, job.protocol),
                      record.to_json())
    checkpoint = checkpoint_path(out, job.algo, job.dataset_id, job.seed)
    if job.keep_learner and record.status == "done":
        keep_checkpoint_as_learner(checkpoint,
                                   learner_path(out, job.algo, job.dataset_id, job.seed))
    else:
        remove_checkpoint(checkpoint)


def load_learner(path: str | Path, device: str = "cpu"):
    """The final learner a run kept (``marl-bench evaluate --keep-learners``), rebuilt on its
    dataset: ``load_learner(path).policy()`` plays as the run's final evaluation did.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a checkpoint from before learners named their run.
    """
    from .envs import task_info

    state = FileCheckpoints(Path(path)).load()
    if state is None:
        raise FileNotFoundError(f"no learner at {path}; `marl-bench evaluate --keep-learners` "
                                f"keeps them under OUT/learners/")
    missing = sorted({"algo", "dataset_id", "seed", "overrides"} - set(state))
    if missing:
        raise ValueError(f"{path} does not name its run ({', '.join(missing)} missing): it was "
                         f"written by an older version; re-run it with --keep-learners")
    entry = get_dataset(state["dataset_id"])
    algo = build_algorithm(state["algo"], task_info(entry.task_id),
                           _load_dataset(state["dataset_id"]), protocol=state["protocol"],
                           seed=state["seed"], device=device, **state["overrides"])
    algo.load_state_dict(state["algorithm"])
    return algo


def run_job(job: RunJob) -> RunOutcome:
    """Run one job to its record, resuming from its checkpoint, or skip it if recorded.

    The process that runs it writes its record. Never raises for a run's own failure.
    """
    outcome, lock = claim_run(job)
    if lock is None:
        return outcome
    try:
        ckpt_path = checkpoint_path(Path(job.out), job.algo, job.dataset_id, job.seed)
        outcome, record = attempt_run(job, FileCheckpoints(ckpt_path))
        if record is not None:
            try:
                finish_run(job, record)
            except OSError as err:
                return RunOutcome(job, "error", f"its record could not be written: {err}",
                                  seconds=outcome.seconds)
        return outcome
    finally:
        lock.release()


# -- one algorithm on its own --------------------------------------------------------------------
def main(algo: str, argv: list[str] | None = None, report: Callable[[str], None] = print) -> int:
    """``python -m baselines.<file> --dataset ID [--protocol P] [--seed S] [--out DIR]``: one run
    of ``algo`` on the same loop as ``marl-bench evaluate``; prints its final score."""
    parser = argparse.ArgumentParser(prog=f"python -m <module of {algo}>",
                                     description=f"Train and score {algo} on one dataset.")
    parser.add_argument("--dataset", required=True, help="a built (or buildable) dataset id")
    parser.add_argument("--protocol", default="smoke", help="smoke, quick or full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/standalone", help="records and checkpoints")
    args = parser.parse_args(argv)
    from .api import load

    load(args.dataset, progress=True)  # built on first use, like D4RL's download
    job = RunJob(algo, args.dataset, args.seed, args.protocol,
                 protocol_budget(args.protocol, args.dataset), args.out, args.device,
                 show_progress=True)
    outcome = run_job(job)
    report(f"{job.key}: {outcome.status}"
           + ("" if outcome.final_score is None else f", final score {outcome.final_score:.4g}")
           + (f" ({outcome.message})" if outcome.message else ""))
    return 0 if outcome.status in ("done", "skipped") else 1
