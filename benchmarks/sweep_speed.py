"""Sweep speed: eight smoke runs through the Ray executor against the same runs one after another.

Both sides run BC under the ``smoke`` protocol on the same small Equal_Line dataset, seeds 0-7,
one torch thread per run, in one invocation of this script:

* **sequential**: :func:`run_benchmark` with one local worker, in this process, after one
  throw-away run so that imports and the dataset load are not counted;
* **ray**: a private ``ray.init(num_cpus=C)`` on this machine, then one throw-away sweep of
  C runs so that each worker has imported the stack and loaded the dataset, then the eight runs
  through :class:`~marl_offline_bench.ray_executor.RayExecutor` (which starts its checkpoint
  actor in every sweep).

The speed-up compares the two warm sweeps; Ray's start-up (``ray.init`` and the warm-up sweep)
is printed on its own, with the speed-up left when it is counted in. With C cores the speed-up
cannot exceed C, and other load on the machine lowers it, so each side's CPU time is printed
too: this process's for the sequential sweep; Ray's worker processes' (those alive at the end)
and its daemons' for the Ray sweep. CPU seconds divided by wall seconds is the number of cores a
side actually got; equal CPU seconds on both sides mean Ray added little work of its own.

Ray starts its workers at niceness 15 (its ``worker_niceness`` setting), below everything else
on the machine, while this process runs at its own niceness; on a machine shared with other work
that lowers the Ray side's share of CPU. ``--worker-niceness`` (default 0, like this process)
sets ``RAY_worker_niceness`` so that both sides compete alike; pass 15 to measure Ray's default.

Run: ``python benchmarks/sweep_speed.py [--runs 8] [--cpus 2] [--episodes 200]
[--worker-niceness 0]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import scratch_minari_root  # noqa: E402

DATASET = "equal_line-n2-random-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in the measured sweeps")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="CPUs given to Ray (default: this machine's)")
    parser.add_argument("--episodes", type=int, default=200, help="episodes in the dataset")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="niceness of Ray's workers (Ray's default: 15)")
    args = parser.parse_args()

    root = scratch_minari_root("sweep-speed-")
    import torch

    import marl_offline_bench as mob
    from marl_offline_bench.benchmarking import run_benchmark
    from marl_offline_bench.protocols import protocol_budget
    from marl_offline_bench.ray_executor import RayExecutor, require_ray

    ray = require_ray()
    torch.set_num_threads(1)
    if not mob.dataset_card(DATASET)["status"] == "built":
        mob.collect_dataset(DATASET, episodes=args.episodes, show_progress=False)
    budget = protocol_budget("smoke", DATASET)
    seeds = list(range(args.runs))
    work = Path(tempfile.mkdtemp(prefix="sweep-speed-out-"))
    quiet = lambda line: None  # noqa: E731

    def sweep(out: str, seeds: list[int], executor=None) -> tuple[float, float, float, float]:
        """Wall seconds, mean seconds per run, CPU seconds of (this process, Ray's workers,
        Ray's daemons) during the sweep."""
        cpu_before = _ray_cpu(), time.process_time()
        started = time.perf_counter()
        summary = run_benchmark(["bc"], [DATASET], seeds, "smoke", out=work / out,
                                device="cpu", report=quiet, executor=executor)
        elapsed = time.perf_counter() - started
        cpu_after = _ray_cpu(), time.process_time()
        if summary.count("done") != len(seeds):
            raise RuntimeError(f"{out}: " + "; ".join(f"{o.job.key}: {o.status} {o.message}"
                                                      for o in summary.outcomes))
        per_run = sum(o.seconds for o in summary.outcomes) / len(seeds)
        workers = cpu_after[0][0] - cpu_before[0][0]
        daemons = cpu_after[0][1] - cpu_before[0][1]
        return elapsed, per_run, cpu_after[1] - cpu_before[1], workers, daemons

    print(f"{args.runs} runs of bc on {DATASET} ({args.episodes} episodes), protocol smoke "
          f"({budget.describe()}); Ray on {args.cpus} CPUs, 1 CPU and 1 torch thread per run, "
          f"workers at niceness {args.worker_niceness} (this process: {os.nice(0)}); machine: "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    sweep("seq-warmup", [1000])
    sequential, seq_run, seq_cpu, _, _ = sweep("sequential", seeds)

    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the raylet
    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
             logging_level="warning", runtime_env={"env_vars": {"MINARI_DATASETS_PATH": root}})
    init_s = time.perf_counter() - started
    executor = RayExecutor(cpus_per_run=1)
    try:
        warmup_s = sweep("ray-warmup", list(range(1000, 1000 + args.cpus)), executor)[0]
        parallel, ray_run, driver_cpu, workers_cpu, daemons_cpu = sweep("ray", seeds, executor)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"sequential          : {sequential:6.2f} s, {seq_run:.2f} s per run; CPU "
          f"{seq_cpu:.1f} s ({seq_cpu / sequential:.2f} cores)")
    print(f"ray (warm workers)  : {parallel:6.2f} s, {ray_run:.2f} s per run; CPU "
          f"{workers_cpu:.1f} s in workers ({workers_cpu / parallel:.2f} cores), "
          f"{daemons_cpu:.1f} s in Ray's daemons, {driver_cpu:.1f} s in the driver")
    print(f"speed-up            : {sequential / parallel:6.2f}x   (target >= 1.7x on 2 cores)")
    print(f"ray start-up        : {init_s:6.2f} s ray.init + {warmup_s:.2f} s warm-up sweep of "
          f"{args.cpus} runs (worker start, imports, dataset load)")
    print(f"speed-up with start-up counted: {sequential / (parallel + init_s + warmup_s):.2f}x; "
          f"load average {os.getloadavg()[0]:.1f} at end")


def _ray_cpu() -> tuple[float, float]:
    """CPU seconds (user + system) so far of Ray's worker processes and of its daemons."""
    try:
        import psutil
    except ImportError:  # psutil comes with Ray; without it the CPU columns read zero
        return 0.0, 0.0
    workers = daemons = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd.startswith("ray::"):
            workers += times.user + times.system
        elif any(d in cmd for d in ("raylet", "gcs_server", "dashboard/agent.py",
                                    "runtime_env/agent", "log_monitor.py")):
            daemons += times.user + times.system
    return workers, daemons


if __name__ == "__main__":
    main()
