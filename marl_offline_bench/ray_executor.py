"""Sweeps and dataset builds spread over a Ray cluster (``--executor ray``).

Ray is an optional extra (``pip install 'marl-offline-bench[ray]'``): this module imports it only
inside functions, and :func:`require_ray` turns its absence into an error naming the extra.

Who does what, for ``marl-bench evaluate --executor ray``:

* The **driver** (the process running ``marl-bench``) decides which runs to send, exactly as the
  local executor does: a run with a record that counts is skipped; a run whose lock another live
  process holds is ``busy``; otherwise the driver takes the run's lock under ``--out`` and sends
  the run as a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.
* The **task** trains the run on whichever node Ray picks, and returns its record. It writes
  nothing under ``--out``: the driver writes the record (atomically, one owner), deletes the
  checkpoint and releases the lock. So ``--out`` only has to be on the driver's disk.
* **Checkpoints** go through a small actor pinned to the driver's node, which keeps them in the
  same files as the local executor (``<out>/checkpoints/...``). A worker that dies part-way is
  retried by Ray (``max_retries``), on any node, and the retry resumes from the last
  checkpoint; a sweep whose driver was killed resumes the same way when run again, with either
  executor.
* **Datasets** are read on the node that runs the task, under that node's
  ``MINARI_DATASETS_PATH``: either every node mounts the same shared folder there, or each node
  has its own copy. A node that lacks a dataset fails the run with an error naming the dataset,
  the node and the fix; with ``build_on_nodes`` it builds the dataset there first.

``marl-bench collect --executor ray`` sends each dataset build as a task in the same way; the
dataset lands under the ``MINARI_DATASETS_PATH`` of the node that built it, so it serves a
cluster only when that is shared storage (the driver says when it cannot see the result).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from .records import RunRecord
from .runstore import RunLock, checkpoint_from_bytes, checkpoint_path, checkpoint_to_bytes
from .training import RunJob, RunOutcome, attempt_run, claim_run, finish_run

logger = logging.getLogger(__name__)

RAY_EXTRA_HINT = ("pip install 'marl-offline-bench[ray]' (or pip install 'ray>=2.9') on the "
                  "driver and on every node")


def require_ray():
    """The ``ray`` module, or a RuntimeError that names the optional extra to install."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(f"--executor ray needs Ray, which is an optional extra: "
                           f"{RAY_EXTRA_HINT}. (Import error: {err})") from None
    return ray


@contextmanager
def _connected(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` (or to the session already initialised in this process);
    shut down afterwards only if this call started it."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address)
    try:
        ray.init(address=address)
    except ConnectionError as err:
        raise RuntimeError(f"cannot reach the Ray cluster at --address {address!r}: {err}. "
                           "Start one with `ray start --head`, or leave out --address to start "
                           "Ray on this machine only. If the head answers but the log above "
                           "says InvalidAuthToken, the cluster uses token authentication: set "
                           "RAY_AUTH_MODE=token and its token here (see docs/cluster.md)."
                           ) from err
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody answers at (``ray.init`` retries for minutes)."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        raise RuntimeError(f"nothing answers at --address {address} ({err}). Start the head "
                           "with `ray start --head --port=6379` and pass the HEAD_IP:PORT it "
                           "prints, or --address auto on a node of the cluster (see "
                           "docs/cluster.md).") from None


def _node() -> str:
    """This node, for messages: host name and IP address."""
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker, or no network: the host name is enough
        ip = "?"
    return f"{socket.gethostname()} ({ip})"


# -- datasets on nodes -------------------------------------------------------------------------
@contextmanager
def _node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of one node (and NFS clients that honour it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dataset_on_node(dataset_id: str, build: bool = False) -> None:
    """Check that this node has ``dataset_id`` under its Minari root, building it if asked.

    Args:
        dataset_id: a registered id.
        build: build it here when it is missing (one build per node at a time).

    Raises:
        FileNotFoundError: missing and ``build`` is False; the message names the dataset, the
            node, the folder looked in and the two fixes.
    """
    from . import collect, storage
    from .api import collect_command
    from .registry import get_dataset

    entry = get_dataset(dataset_id)
    if storage.is_built(entry.minari_id):
        return
    root = storage.minari_root()
    if not build:
        raise FileNotFoundError(
            f"dataset {dataset_id} is not on node {_node()}: nothing under {root} "
            "(MINARI_DATASETS_PATH there). Either build it on that node "
            f"(`{collect_command(entry)}`, or re-run with --build-on-nodes), or point "
            "MINARI_DATASETS_PATH at shared storage that the driver and every node mount, set "
            "in the environment of `ray start` on each node (see docs/cluster.md).")
    lock_name = f".marl-bench-build-{entry.minari_id.replace('/', '_')}.lock"
    with _node_lock(root / lock_name):
        if not storage.is_built(entry.minari_id):  # another task here may have built it
            logger.info("building %s on node %s under %s", dataset_id, _node(), root)
            collect.collect_dataset(dataset_id, show_progress=False)


# -- checkpoints on the driver's disk ----------------------------------------------------------
class CheckpointStore:
    """Runs' checkpoints in ``<out>/checkpoints`` on the driver's node (run as a Ray actor).

    The same files as the local executor's, so either executor resumes the other's runs.
    """

    def __init__(self, out: str):
        self.out = Path(out)

    def load(self, algo: str, dataset_id: str, seed: int) -> bytes | None:
        path = checkpoint_path(self.out, algo, dataset_id, seed)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, algo: str, dataset_id: str, seed: int, blob: bytes) -> None:
        path = checkpoint_path(self.out, algo, dataset_id, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
        try:
            tmp.write_bytes(blob)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class _ActorCheckpoints:
    """One run's checkpoint store, seen from a task: the driver-side actor's files."""

    def __init__(self, store: Any, job: RunJob):
        self.store, self.job = store, job

    def load(self) -> dict[str, Any] | None:
        import ray

        blob = ray.get(self.store.load.remote(self.job.algo, self.job.dataset_id, self.job.seed))
        return None if blob is None else checkpoint_from_bytes(blob, str(self))

    def save(self, state: dict[str, Any]) -> None:
        import ray

        ray.get(self.store.save.remote(self.job.algo, self.job.dataset_id, self.job.seed,
                                       checkpoint_to_bytes(state)))

    def __str__(self) -> str:
        job = self.job
        return f"the driver's {checkpoint_path(Path(job.out), job.algo, job.dataset_id, job.seed)}"


def _run_on_node(job: RunJob, store: Any, build_on_nodes: bool
                 ) -> tuple[RunOutcome, RunRecord | None]:
    """The Ray task: train one run where Ray placed it and return (outcome, record)."""
    try:
        ensure_dataset_on_node(job.dataset_id, build=build_on_nodes)
    except Exception as err:
        return RunOutcome(job, "error", f"{type(err).__name__}: {err}"), None
    outcome, record = attempt_run(job, _ActorCheckpoints(store, job))
    if outcome.status == "error":
        outcome.message += f" (on node {_node()})"
    return outcome, record


# -- the executor --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RayExecutor:
    """Runs sweep jobs as Ray tasks; the driver keeps records, locks and checkpoints.

    Attributes:
        address: the cluster to join, from a machine that is one of its nodes (``"auto"``,
            ``"HEAD_IP:6379"``); None joins the cluster of ``RAY_ADDRESS`` or one started on
            this machine, else starts Ray on this machine alone. (Ray Client ``ray://``
            addresses are untested: the checkpoint actor is pinned to the driver's node.)
        cpus_per_run: CPUs each run asks for (also its torch threads, at least one).
        gpus_per_run: GPUs each run asks for (fractions share a GPU); runs train on ``cuda``
            when it is positive.
        max_retries: how often Ray re-runs a task whose worker died (resuming its checkpoint).
        build_on_nodes: build a missing dataset on the node that needs it instead of failing.
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3
    build_on_nodes: bool = False

    def __post_init__(self) -> None:
        require_ray()
        if self.cpus_per_run <= 0:
            raise ValueError(f"--cpus-per-run must be positive, got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be 0 or more, got {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {self.max_retries}")

    @property
    def device(self) -> str:
        """The torch device of the runs: Ray shows a task only the GPUs it asked for."""
        return "cuda" if self.gpus_per_run > 0 else "cpu"

    def describe(self) -> str:
        where = f"Ray at {self.address}" if self.address else "Ray"
        gpus = f" + {self.gpus_per_run:g} GPU" if self.gpus_per_run else ""
        return f"{where}, {self.cpus_per_run:g} CPU{gpus} per run"

    def _slots(self, ray: Any, check: bool = False) -> int:
        """How many runs the cluster's live nodes hold at once.

        Args:
            check: raise ValueError when no node can hold one run (Ray would leave the tasks
                pending forever), naming what was asked and what the largest node has.
        """
        slots, most_cpus, most_gpus = 0, 0.0, 0.0
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            cpus = node["Resources"].get("CPU", 0.0)
            gpus = node["Resources"].get("GPU", 0.0)
            most_cpus, most_gpus = max(most_cpus, cpus), max(most_gpus, gpus)
            fits = int(cpus // self.cpus_per_run)
            if self.gpus_per_run > 0:
                fits = min(fits, int(gpus // self.gpus_per_run))
            slots += fits
        if check and slots == 0:
            gpu = (f" and {self.gpus_per_run:g} GPU (--gpus-per-run)"
                   if self.gpus_per_run else "")
            raise ValueError(f"no node of the Ray cluster can hold a run asking for "
                             f"{self.cpus_per_run:g} CPU (--cpus-per-run){gpu}: its largest "
                             f"node has {most_cpus:g} CPUs and {most_gpus:g} GPUs. Ask for less "
                             "or add a bigger node.")
        return max(1, slots)

    def run(self, jobs: list[RunJob], note: Callable[[RunOutcome], None]) -> None:
        """Run ``jobs`` on the cluster, calling ``note(outcome)`` once per job as each ends.

        Jobs are claimed (skipped, busy or locked) on the driver just before they are sent, and
        no more are in flight than the cluster's nodes hold at once (recounted every 30 s), so
        locks are only held by running runs. (A task waiting on ``ray.get``, as when it loads
        or saves its checkpoint, lends its CPU back to Ray; were more runs queued, Ray would
        start one on a fresh worker in that moment and run more than the CPUs hold.)
        """
        if not jobs:
            return
        threads = max(1, int(self.cpus_per_run))
        jobs = [replace(j, device=self.device, torch_threads=threads) for j in jobs]
        with _connected(self.address) as ray:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            window, sized = self._slots(ray, check=True), time.monotonic()
            driver_node = ray.get_runtime_context().get_node_id()
            store = ray.remote(CheckpointStore).options(
                num_cpus=0, max_concurrency=16, max_restarts=-1, max_task_retries=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
            ).remote(str(Path(jobs[0].out).resolve()))
            task = ray.remote(_run_on_node).options(
                num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                max_retries=self.max_retries, retry_exceptions=False)
            pending = deque(jobs)
            in_flight: dict[Any, tuple[RunJob, RunLock]] = {}
            try:
                while pending or in_flight:
                    if time.monotonic() - sized > 30:  # nodes may have joined or left
                        window, sized = self._slots(ray), time.monotonic()
                    while pending and len(in_flight) < window:
                        job = pending.popleft()
                        outcome, lock = claim_run(job)
                        if lock is None:
                            note(outcome)
                            continue
                        in_flight[task.remote(job, store, self.build_on_nodes)] = (job, lock)
                    if not in_flight:
                        continue
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in done:
                        job, lock = in_flight.pop(ref)
                        try:
                            note(self._collect(ray, ref, job))
                        finally:
                            lock.release()
            finally:
                for ref, (_, lock) in in_flight.items():  # interrupted: stop what is running
                    ray.cancel(ref, force=True)
                    lock.release()
                ray.kill(store)

    @staticmethod
    def _collect(ray: Any, ref: Any, job: RunJob) -> RunOutcome:
        """A finished task's outcome, with its record written by the driver."""
        try:
            outcome, record = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # e.g. the node cannot import the package
            cause = err.cause if err.cause is not None else err
            return RunOutcome(job, "error", f"the task failed on its node: "
                              f"{type(cause).__name__}: {_first_line(cause)}")
        except ray.exceptions.RayError as err:  # the worker died more than max_retries times
            return RunOutcome(job, "error", f"worker died: {type(err).__name__}: "
                              f"{_first_line(err)}")
        if record is not None:
            try:
                finish_run(job, record)
            except OSError as err:
                return RunOutcome(job, "error", f"the record could not be written: {err}",
                                  seconds=outcome.seconds)
        return outcome


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


# -- building datasets ----------------------------------------------------------------------------
@dataclass
class CollectOutcome:
    """One dataset build sent to the cluster: ``built``, ``exists`` or ``error``."""

    dataset_id: str
    status: str
    message: str = ""
    node: str = ""
    path: str = ""
    seconds: float = 0.0


def _collect_on_node(dataset_id: str, options: dict[str, Any]) -> CollectOutcome:
    """The Ray task: build one dataset on the node Ray placed it on."""
    from .collect import collect_dataset

    started = time.time()
    try:
        path = collect_dataset(dataset_id, show_progress=False, **options)
    except FileExistsError as err:
        return CollectOutcome(dataset_id, "exists", str(err), _node())
    except Exception as err:
        logger.exception("collect %s raised", dataset_id)
        return CollectOutcome(dataset_id, "error", f"{type(err).__name__}: {err}", _node(),
                              seconds=time.time() - started)
    return CollectOutcome(dataset_id, "built", node=_node(), path=str(path),
                          seconds=time.time() - started)


def collect_on_ray(dataset_ids: list[str], address: str | None = None,
                   max_retries: int = 3, report: Callable[[str], None] | None = None,
                   **options: Any) -> list[CollectOutcome]:
    """Build several datasets at once, one Ray task (one CPU) each.

    Each dataset is written under the ``MINARI_DATASETS_PATH`` of the node that builds it; for a
    cluster that is only useful on shared storage, so a build the driver cannot see afterwards
    is reported as such.

    Args:
        dataset_ids: registered ids (not-buildable ones are reported without being sent).
        address: see :class:`RayExecutor`.
        max_retries: re-runs of a build whose worker died (a build restarts from scratch).
        report: where one line per dataset goes.
        **options: :func:`~marl_offline_bench.collect.collect_dataset` arguments (``episodes``,
            ``seed``, ``num_envs``, ``overwrite``, ``engine``).

    Returns:
        One outcome per dataset, in the order given.
    """
    from . import storage
    from .collect import build_blocker
    from .registry import get_dataset

    require_ray()
    say = report or logger.info
    outcomes: dict[str, CollectOutcome] = {}
    runnable = []
    for dataset_id in dataset_ids:
        blocker = build_blocker(get_dataset(dataset_id))
        if blocker:
            outcomes[dataset_id] = CollectOutcome(dataset_id, "error", blocker)
            say(f"{dataset_id}: not sent: {blocker}")
        else:
            runnable.append(dataset_id)
    if runnable:
        with _connected(address) as ray:
            task = ray.remote(_collect_on_node).options(num_cpus=1, max_retries=max_retries)
            refs = {task.remote(d, options): d for d in runnable}
            remaining = list(refs)
            while remaining:
                done, remaining = ray.wait(remaining, num_returns=1)
                dataset_id = refs[done[0]]
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.RayError as err:
                    outcome = CollectOutcome(dataset_id, "error", f"worker died: "
                                             f"{type(err).__name__}")
                outcomes[dataset_id] = outcome
                if outcome.status == "built":
                    line = (f"{dataset_id}: written to {outcome.path} on node {outcome.node} "
                            f"in {outcome.seconds:.1f}s")
                    if not storage.is_built(get_dataset(dataset_id).minari_id):
                        line += (f" (not visible here under {storage.minari_root()}: that "
                                 "node's storage is not shared with the driver, so other "
                                 "nodes lack it too; see docs/cluster.md)")
                elif outcome.status == "exists":
                    line = f"{dataset_id}: already built on node {outcome.node} (--force rebuilds)"
                else:
                    line = f"{dataset_id}: failed on node {outcome.node}: {outcome.message}"
                say(line)
    return [outcomes[d] for d in dataset_ids]


__all__ = ["RayExecutor", "CheckpointStore", "CollectOutcome", "collect_on_ray",
           "ensure_dataset_on_node", "require_ray"]
