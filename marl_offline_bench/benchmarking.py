"""Running (algorithm, dataset, seed) jobs under an evaluation protocol, with records and resume.

Protocol, after OG-MARL and CORL: ``update()`` is called ``budget.updates`` times; every
``budget.eval_every`` updates the greedy policy plays ``budget.eval_episodes`` episodes; at the
end a final evaluation plays ``budget.final_episodes`` (10x) episodes and its score is the one
reported: the last, never the best.

Each run owns exactly one record file, written atomically (temporary file + ``os.replace``) by
one owner: the process that ran it (the local executor), or the driver, to which a Ray task
returns its record (:mod:`marl_offline_bench.ray_executor`)::

    <out>/runs/<protocol>/<algo>/<dataset_id>/seed<k>.json         the record (status "done" or "failed")
    <out>/checkpoints/<algo>/<dataset_id>/seed<k>.pt    resume state, deleted once recorded
    <out>/runs/<protocol>/<algo>/<dataset_id>/seed<k>.lock         held while the run is in progress

A run with a record of the same protocol and budget is skipped; a run killed part-way resumes
from its last checkpoint (taken at every evaluation); a run whose update metrics stop being
finite is recorded as ``"failed"`` with the update and the reason, and is not scored. Other
exceptions (a bug, a kill) leave no record, only the checkpoint, so a re-run resumes them.

Algorithms are found through :mod:`marl_offline_bench.algorithms` (a package entry point), so
the library never imports the packages that provide them.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import math
import os
import socket
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .algorithms import (Unsupported, algorithm_names, build_algorithm, get_algorithm,
                         resolve_algorithms)
from .protocols import PROTOCOLS, Budget, budget_source, protocol_budget
from .registry import DATASETS, get_dataset, nearest_ids

logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
DEFAULT_OUT = Path("leaderboards")


# -- protocols: see marl_offline_bench.protocols ----------------------------------------------
# -- paths and atomic files ------------------------------------------------------------------
def record_path(out: Path, algo: str, dataset_id: str, seed: int, protocol: str) -> Path:
    # The protocol is part of the path: a smoke run must never replace a quick run's record.
    return Path(out) / "runs" / protocol / algo / dataset_id / f"seed{seed}.json"


def checkpoint_path(out: Path, algo: str, dataset_id: str, seed: int) -> Path:
    return Path(out) / "checkpoints" / algo / dataset_id / f"seed{seed}.pt"


def _remove_checkpoint(path: Path) -> None:
    """Delete a run's checkpoint and the folders it leaves empty under ``checkpoints/``."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            break


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_record(path: Path) -> dict[str, Any] | None:
    """A run record, or None when there is none (or it cannot be parsed)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("ignoring unreadable record %s (%s); the run will be redone", path, err)
        return None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return checkpoint_from_bytes(path.read_bytes(), str(path))


def checkpoint_to_bytes(state: dict[str, Any]) -> bytes:
    """A checkpoint serialised as :func:`torch.save` writes it to a file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(blob: bytes, where: str) -> dict[str, Any] | None:
    """A checkpoint from its bytes, or None (with a warning naming ``where``) if unreadable."""
    import io

    import torch

    try:
        return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as err:  # any unreadable checkpoint means: start the run again
        logger.warning("ignoring unreadable checkpoint %s (%s); starting the run afresh",
                       where, err)
        return None


class FileCheckpoints:
    """A run's checkpoint in a file beside its record (the local executor's store).

    A checkpoint store has ``load() -> dict | None`` and ``save(state)``; the Ray executor's
    store keeps the same files on the driver's disk, reached through an actor.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        return _load_checkpoint(self.path)

    def save(self, state: dict[str, Any]) -> None:
        _save_checkpoint(self.path, state)

    def __str__(self) -> str:
        return str(self.path)


class RunLock:
    """An exclusive claim on one run across processes (and invocations) sharing ``out``.

    The lock file holds the owner's host and pid; a lock whose owner process is gone on this
    host is stale and is taken over.
    """

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                stale = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
                try:
                    os.rename(self.path, stale)  # only one taker wins the rename
                except FileNotFoundError:
                    continue
                stale.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump({"host": socket.gethostname(), "pid": os.getpid()}, handle)
            self.held = True
            return True
        return False

    def _stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return True
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Being written right now, or left half-written by a killed process: age decides.
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        if owner.get("host") != socket.gethostname():
            return False  # another machine's process: it cannot be checked from here
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


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


# -- one run -------------------------------------------------------------------------------------
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


def _same_protocol(record: dict[str, Any], job: RunJob) -> bool:
    return (record.get("protocol") == job.protocol
            and record.get("budget") == asdict(job.budget))


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


def _non_finite(metrics: dict[str, float]) -> list[str]:
    return [f"{k}={v}" for k, v in metrics.items() if not math.isfinite(float(v))]


def _mean_metrics(window: list[dict[str, float]]) -> dict[str, float]:
    if not window:
        return {}
    return {k: float(np.mean([m[k] for m in window if k in m])) for k in window[-1]}


_DATASET_CACHE: dict[str, Any] = {}


def _load_dataset(dataset_id: str):
    """Load a built dataset, keeping the last one: consecutive jobs usually share it."""
    from .api import load

    if dataset_id not in _DATASET_CACHE:
        _DATASET_CACHE.clear()
        _DATASET_CACHE[dataset_id] = load(dataset_id, build=False, progress=False)
    return _DATASET_CACHE[dataset_id]


def _recorded(job: RunJob) -> RunOutcome | None:
    """``skipped`` when the job already has a record that counts, else None."""
    record = read_record(record_path(Path(job.out), job.algo, job.dataset_id, job.seed, job.protocol))
    if record and _same_protocol(record, job) and (record.get("status") == "done" or (
            record.get("status") == "failed" and not job.retry_failed)):
        return RunOutcome(job, "skipped", f"already recorded ({record['status']})",
                          final_score=_final_score(record))
    return None


def claim_run(job: RunJob) -> tuple[RunOutcome | None, RunLock | None]:
    """Decide whether ``job`` must run, and if so take its lock.

    Returns:
        ``(outcome, None)`` when it must not run (``skipped``: recorded; ``busy``: another
        process holds it), else ``(None, lock)``: the caller runs it, writes its record and
        then releases the lock.
    """
    out = Path(job.out)
    rec_path = record_path(out, job.algo, job.dataset_id, job.seed, job.protocol)
    ckpt_path = checkpoint_path(out, job.algo, job.dataset_id, job.seed)
    if (outcome := _recorded(job)) is not None and not ckpt_path.exists():
        return outcome, None
    lock = RunLock(rec_path.with_suffix(".lock"))
    if not lock.acquire():
        return RunOutcome(job, "busy", f"another process holds {lock.path}"), None
    try:
        if (outcome := _recorded(job)) is not None:  # recorded, maybe while we took the lock
            _remove_checkpoint(ckpt_path)  # left by a kill between record and clean-up
            lock.release()
            return outcome, None
        old = read_record(rec_path)
    except BaseException:
        lock.release()
        raise
    if old and not _same_protocol(old, job):
        logger.warning("%s: replacing its record made under protocol %r %s", job.key,
                       old.get("protocol"), old.get("budget"))
    return None, lock


def attempt_run(job: RunJob, checkpoints: Any) -> tuple[RunOutcome, dict[str, Any] | None]:
    """Train ``job`` from its checkpoint store to a record, without writing the record.

    Never raises for a run's own failure: the outcome says what happened (``error`` carries
    the exception's message, and the checkpoint stays for a re-run).

    Args:
        job: the run.
        checkpoints: its checkpoint store (``load()``, ``save(state)``), e.g.
            :class:`FileCheckpoints`.

    Returns:
        The outcome, and the record to write when the outcome is ``done`` or ``failed``
        (else None).
    """
    started = time.time()
    try:
        if job.torch_threads:
            import torch

            torch.set_num_threads(job.torch_threads)
        record = _train(job, checkpoints)
    except Unsupported as err:
        return RunOutcome(job, "unsupported", str(err)), None
    except Exception as err:
        logger.exception("run %s raised", job.key)
        return RunOutcome(job, "error", f"{type(err).__name__}: {err}",
                          seconds=time.time() - started), None
    message = record["failure"]["reason"] if record["status"] == "failed" else ""
    return RunOutcome(job, record["status"], message, final_score=_final_score(record),
                      seconds=time.time() - started), record


def finish_run(job: RunJob, record: dict[str, Any]) -> None:
    """Write a run's record (atomically) and then delete its checkpoint."""
    out = Path(job.out)
    write_json_atomic(record_path(out, job.algo, job.dataset_id, job.seed, job.protocol), record)
    _remove_checkpoint(checkpoint_path(out, job.algo, job.dataset_id, job.seed))


def run_job(job: RunJob) -> RunOutcome:
    """Run one job to its record, resuming from its checkpoint, or skip it if recorded.

    The process that runs it writes its record. Never raises for a run's own failure: the
    outcome says what happened (``error`` carries the exception's message, and the checkpoint
    stays for a re-run).
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
                logger.exception("run %s: its record could not be written", job.key)
                return RunOutcome(job, "error", f"{type(err).__name__}: {err}",
                                  seconds=outcome.seconds)
        return outcome
    finally:
        lock.release()


def _final_score(record: dict[str, Any]) -> float | None:
    final = record.get("final") or {}
    score = final.get("normalized_score")
    return final.get("mean_return") if score is None else score


def _train(job: RunJob, checkpoints: Any) -> dict[str, Any]:
    """Train ``job`` to its record (status ``done``, or ``failed`` on a non-finite loss),
    resuming from and saving to ``checkpoints``. Other exceptions propagate."""
    from .collect import git_commit, package_versions
    from .envs import task_info

    entry = get_dataset(job.dataset_id)
    info = task_info(entry.task_id)
    get_algorithm(job.algo).check_supports(info, job.dataset_id)
    dataset = _load_dataset(job.dataset_id)
    algo = build_algorithm(job.algo, info, dataset, protocol=job.protocol, seed=job.seed,
                           device=job.device, **job.overrides)
    config = algo.config.to_dict()
    budget = job.budget

    step, curve, elapsed, resumed_from = 0, [], 0.0, None
    state = checkpoints.load()
    if state is not None:
        def portable(c: dict[str, Any]) -> dict[str, Any]:  # a run may resume on another device
            return {k: v for k, v in (c or {}).items() if k != "device"}

        same = (state.get("protocol") == job.protocol and state.get("budget") == asdict(budget)
                and portable(state.get("config")) == portable(config))
        if same:
            algo.load_state_dict(state["algorithm"])
            _set_rng_state(state["rng"])
            step, curve = int(state["step"]), list(state["curve"])
            elapsed, resumed_from = float(state["elapsed"]), int(state["step"])
        else:
            logger.warning("%s: checkpoint %s was made under another protocol or config; "
                           "starting afresh", job.key, checkpoints)

    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "status": "running",  # set to "done" or "failed" before the record is written
        "algo": job.algo,
        "dataset_id": job.dataset_id,
        "task_id": entry.task_id,
        "family": entry.task.family,
        "seed": job.seed,
        "protocol": job.protocol,
        "budget": asdict(budget),
        "budget_source": budget_source(job.protocol, job.dataset_id),
        "config": config,
        "device": job.device,
        "commit": git_commit(),
        "versions": package_versions(),
        "resumed_from": resumed_from,
    }
    eval_seed, final_seed = 10_000 + job.seed, 20_000 + job.seed
    segment_start = time.time()
    window: list[dict[str, float]] = []
    try:
        while step < budget.updates:
            metrics = algo.update()
            step += 1
            bad = _non_finite(metrics)
            if bad:
                raise NonFiniteLoss(f"non-finite update metrics at update {step}: "
                                    + ", ".join(bad))
            window.append(metrics)
            if step % budget.eval_every == 0 or step == budget.updates:
                point = {"step": step, **_evaluate(algo.policy(), entry.task_id,
                                                   budget.eval_episodes, eval_seed),
                         "train": _mean_metrics(window)}
                curve.append(point)
                window = []
                if step < budget.updates:
                    checkpoints.save({
                        "algorithm": algo.state_dict(), "rng": _rng_state(), "step": step,
                        "curve": curve, "protocol": job.protocol, "budget": asdict(budget),
                        "config": config,
                        "elapsed": elapsed + time.time() - segment_start})
    except NonFiniteLoss as err:
        record.update(status="failed", failure={"step": step, "reason": str(err)}, curve=curve,
                      final=None, wall_time_s=round(elapsed + time.time() - segment_start, 3),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        return record

    final = {"step": step, **_evaluate(algo.policy(), entry.task_id, budget.final_episodes,
                                       final_seed)}
    record.update(status="done", curve=curve, final=final,
                  wall_time_s=round(elapsed + time.time() - segment_start, 3),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return record


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
                  executor: Any = None) -> BenchmarkSummary:
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
    """
    say = report or logger.info
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    overrides = overrides or {}
    for key in overrides:
        scope = key.partition(".")[0] if "." in key else None
        if scope is not None and scope not in algos:
            raise ValueError(f"override {key!r} is scoped to {scope!r}, which is not among the "
                             f"algorithms being run ({', '.join(algos)}).")
    unsupported, jobs = [], []
    for algo in algos:
        mine = {k: v for k, v in overrides.items() if "." not in k}
        mine.update({k.partition(".")[2]: v for k, v in overrides.items()
                     if k.startswith(f"{algo}.")})
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
                            dict(mine), retry_failed) for seed in seeds]
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

    if executor is not None:
        executor.run(jobs, note)  # it may adapt the jobs (device, threads): order by their key
        order = {job.key: i for i, job in enumerate(jobs)}
        outcomes.sort(key=lambda o: order[o.job.key])
    elif workers == 1 or len(jobs) <= 1:
        for job in jobs:
            note(run_job(job))
    else:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [replace(j, torch_threads=threads) for j in jobs]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(run_job, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    try:
                        note(future.result())
                    except Exception as err:  # the worker process itself died
                        note(RunOutcome(futures[future], "error",
                                        f"worker died: {type(err).__name__}: {err}"))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        order = {job: i for i, job in enumerate(jobs)}
        outcomes.sort(key=lambda o: order[o.job])
    _DATASET_CACHE.clear()
    return BenchmarkSummary(outcomes, unsupported)


__all__ = ["Budget", "PROTOCOLS", "RunJob", "RunOutcome", "BenchmarkSummary", "run_job",
           "run_benchmark", "select_datasets", "resolve_algorithms", "resolve_device",
           "record_path", "checkpoint_path", "read_record", "protocol_budget", "DEFAULT_OUT",
           "claim_run", "attempt_run", "finish_run", "FileCheckpoints"]
