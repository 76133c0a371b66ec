"""What every behaviour trainer shares: the run directory, the loop, resume.

:class:`BehaviourRun` keeps ``config.json``, ``curve.csv``, ``checkpoints/``, ``snapshots/`` and
``resume.pt`` of a run and drives the act / learn / evaluate loop; a learner's trainer
(:class:`collection.qmix.QMIXTrainer`, :class:`collection.matd3.MATD3Trainer`) supplies how it
acts, learns, evaluates and what else its resume state holds.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

import torch

from marl_offline_bench.envs import TaskInfo

__all__ = ["BehaviourRun", "atomic_save", "write_json", "task_dims", "training_parser",
           "train_from_args"]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def task_dims(info: TaskInfo) -> dict[str, Any]:
    """What a checkpoint needs to rebuild its networks without starting a simulator."""
    return {"task_id": info.task_id, "n_agents": info.n_agents, "obs_dim": info.obs_dim,
            "state_dim": info.state_dim, "n_actions": info.n_actions,
            "episode_limit": info.episode_limit}


class BehaviourRun:
    """A resumable behaviour-training run; subclasses set the class attributes and hooks.

    Subclasses provide ``cfg`` (with ``env_steps``, ``eval_interval_steps``,
    ``resume_interval_evals``, ``torch_threads``, ``to_dict()``), ``out``, ``env``, ``info``,
    ``learner``, ``replay``, ``sample_rng``, the counters named in :attr:`COUNTERS`, ``wall_s``,
    ``curve`` and ``_since_eval``, and these methods: ``act() -> EpisodeArrays`` (one acting
    batch, stored), ``learn_from(data) -> list of metric dicts`` (the updates that batch pays
    for), ``tally(since, metrics)`` (add them to the next curve row), ``_fresh_tally()``,
    ``evaluate_and_checkpoint() -> row`` (ending in :meth:`finish_evaluation`),
    ``format_row(row) -> str`` and ``_flush_snapshots()``.
    """

    ALGORITHM: str = ""
    CURVE_COLUMNS: list[str] = []
    COUNTERS: tuple[str, ...] = ()

    # -- run directory ---------------------------------------------------------------------------
    @property
    def resume_path(self) -> Path:
        return self.out / "resume.pt"

    def _write_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        doc = {"config": self.cfg.to_dict(), "task": task_dims(self.info),
               "engine": self.info.engine, "algorithm": self.ALGORITHM}
        write_json(self.out / "config.json", doc)

    def _write_curve(self) -> None:
        tmp = self.out / ".curve.csv.tmp"
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, self.CURVE_COLUMNS)
            writer.writeheader()
            writer.writerows(self.curve)
        os.replace(tmp, self.out / "curve.csv")

    # -- resume ----------------------------------------------------------------------------------
    def extra_resume_state(self) -> dict[str, Any]:
        """What else a learner's resume state holds (none by default)."""
        return {}

    def load_extra_resume_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_resume_state` saved."""

    def save_resume(self) -> None:
        self._flush_snapshots()
        atomic_save({
            "learner": self.learner.state_dict(), "replay": self.replay.state_dict(),
            "sample_rng": json.dumps(self.sample_rng.bit_generator.state),
            "counters": {name: getattr(self, name) for name in self.COUNTERS},
            "wall_s": self.wall_s, "curve": json.dumps(self.curve),
            "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict(),
            **self.extra_resume_state(),
        }, self.resume_path)

    def load_resume(self) -> None:
        """Restore from ``resume.pt`` and drop whatever the run wrote after it was saved."""
        if not self.resume_path.exists():
            raise FileNotFoundError(f"no {self.resume_path} to resume from; start the run "
                                    "without --resume")
        state = torch.load(self.resume_path, weights_only=True)
        self.learner.load_state_dict(state["learner"])
        self.replay.load_state_dict(state["replay"])
        self.load_extra_resume_state(state)
        self.sample_rng.bit_generator.state = json.loads(state["sample_rng"])
        for key, value in state["counters"].items():
            setattr(self, key, int(value))
        self.wall_s = float(state["wall_s"])
        self.curve = json.loads(state["curve"])
        torch.set_rng_state(state["torch_rng"])
        for chunk in (self.out / "snapshots").glob("batch_*.pt"):
            if int(chunk.stem.split("_")[1]) >= self.acting_batches:
                chunk.unlink()
        for ckpt in (self.out / "checkpoints").glob("step_*.pt"):
            if int(ckpt.stem.split("_")[1]) > self.env_steps:
                ckpt.unlink()
        self._write_curve()

    # -- the loop ---------------------------------------------------------------------------------
    def train(self, resume: bool = False, log=print) -> list[dict[str, Any]]:
        """Train until cfg.env_steps, evaluating every eval_interval_steps; returns the curve."""
        torch.set_num_threads(self.cfg.torch_threads)
        if resume:
            self.load_resume()
            log(f"resumed {self.out} at {self.env_steps} env steps, {self.episodes} episodes")
        elif self.resume_path.exists():
            raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        self._write_config()
        if not self.curve:
            log(self.format_row(self.evaluate_and_checkpoint()))
        interval = self.cfg.eval_interval_steps
        next_eval = (self.env_steps // interval + 1) * interval
        while self.env_steps < self.cfg.env_steps:
            t0 = time.perf_counter()
            data = self.act()
            t1 = time.perf_counter()
            metrics = self.learn_from(data)
            t2 = time.perf_counter()
            since = self._since_eval
            since["returns"].extend(data.episode_returns().tolist())
            self.tally(since, metrics)
            since["act_s"] += t1 - t0
            since["update_s"] += t2 - t1
            since["steps"] += data.n_transitions
            since["wall"] += t2 - t0
            self.wall_s += t2 - t0
            if self.env_steps >= next_eval or self.env_steps >= self.cfg.env_steps:
                log(self.format_row(self.evaluate_and_checkpoint()))
                next_eval = (self.env_steps // interval + 1) * interval
        if self.evaluations % self.cfg.resume_interval_evals:
            self.save_resume()
        return self.curve

    def finish_evaluation(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append a curve row, start a new tally, and write resume.pt when it is due."""
        self.curve.append(row)
        self._since_eval = self._fresh_tally()
        self._write_curve()
        self.evaluations += 1
        if self.evaluations % self.cfg.resume_interval_evals == 0:
            self.save_resume()
        return row

    def close(self) -> None:
        self.env.close()


# -- the trainers' command line -------------------------------------------------------------------
def training_parser(prog: str, description: str, task_example: str,
                    set_example: str) -> argparse.ArgumentParser:
    """The arguments every ``python -m collection.<learner>`` takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--task", required=True, help=f"task id, e.g. {task_example}")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    parser.add_argument("--env-steps", type=int, default=None, help="training budget override")
    parser.add_argument("--seed", type=int, default=None, help="seed override")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help=f"further config overrides, e.g. --set {set_example}")
    return parser


def train_from_args(args: argparse.Namespace, config_cls: type, config_for: Callable,
                    trainer_cls: type) -> int:
    """Resolve the config (defaults, task row, --set, a resumed run's own), then train."""
    # One XLA thread for the JAX engines unless the caller chose otherwise (shared machine).
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
    overrides: dict[str, Any] = {}
    names = [f.name for f in fields(config_cls)]
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(names)}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.seed is not None:
        overrides["seed"] = args.seed
    out = Path(args.out)
    if args.resume and (out / "resume.pt").exists():
        saved = torch.load(out / "resume.pt", weights_only=True)["config"]
        if saved["task"] != args.task:
            raise SystemExit(f"{out} holds a run of {saved['task']}, not {args.task}")
        cfg = config_cls(**{**saved, **overrides})
    else:
        cfg = config_for(args.task, **overrides)
    if args.env_steps is not None:
        cfg = replace(cfg, env_steps=args.env_steps)
    trainer = trainer_cls(cfg, out)
    try:
        trainer.train(resume=args.resume, log=lambda line: print(line, flush=True))
    finally:
        trainer.close()
    return 0
