"""Behaviour policies from QMIX and MATD3 runs: choose expert and medium, ship, measure, replay.

A QMIX run (:mod:`collection.qmix`) or a MATD3 run (:mod:`collection.matd3`; its checkpoints
and snapshots say ``"algorithm": "matd3"``, and the functions below dispatch on that) leaves
a greedy evaluation and a checkpoint every ``eval_interval_steps``. From it this module

* chooses the **expert** (the best greedy return) and the **medium** checkpoint (greedy return
  about 1/3 to 1/2 of the expert's), re-evaluating the candidates on more episodes than the
  curve's, so that one lucky evaluation does not decide (:func:`select_checkpoints`);
* ships them small, agent network only, under ``marl_offline_bench/data/behaviour/<task>/`` with the run's
  ``config.json`` and ``curve.csv`` (:func:`ship_checkpoints`);
* turns a checkpoint into an acting policy for :func:`marl_offline_bench.collect.rollout`
  (:func:`behaviour_policy`) and measures the task's ``ref_expert``
  (:func:`measure_expert_reference`);
* rebuilds the learner's own episodes, for medium-replay, by replaying its acting snapshots in
  order (:func:`replay_snapshots`).

CLI: ``python -m collection.behaviour select --run collection/runs/equal_line-n6 [--ship]
[--record-reference]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl_offline_bench.action_log import replay_action_log, write_action_log
from marl_offline_bench.behaviour import (MEDIUM_REPLAY_LOG, SHIPPED_ROOT, agent_from_checkpoint,
                                          behaviour_policy, load_checkpoint)
from marl_offline_bench.provenance import git_commit
from marl_offline_bench.policies import EpsilonGreedyPolicy
from marl_offline_bench.rollout import rollout
from marl_offline_bench.dataset import EpisodeArrays
from marl_offline_bench.envs import make_vec_env
from marl_offline_bench.evaluation import evaluate_policy
from marl_offline_bench.registry import record_reference, reference_scores

from . import matd3
from .run import atomic_save, write_json

__all__ = [
    "CHECKPOINT_ROOT",
    "read_curve", "load_run_checkpoint", "Selection", "select_checkpoints", "ship_checkpoints",
    "measure_expert_reference", "record_shipped_reference", "replay_snapshots", "replay_chunks",
    "medium_replay_window", "ship_medium_replay", "replay_capacity_episodes", "replay_batches",
    "window_of", "MEDIUM_BAND",
]

#: Where the chosen checkpoints ship by default: the library's folder of shipped agents.
CHECKPOINT_ROOT = SHIPPED_ROOT
#: A medium policy's greedy return, as a fraction of the expert's (DESIGN section 3).
MEDIUM_BAND = (1.0 / 3.0, 1.0 / 2.0)
#: Seed of the re-evaluations that choose checkpoints (away from training and collection seeds).
SELECT_SEED = 20_000


# -- loading --------------------------------------------------------------------------------------
def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``curve.csv``, numbers parsed (empty cells become None)."""
    path = Path(run_dir) / "curve.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no learning curve at {path}")
    def parse(value: str) -> Any:
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    with path.open() as fh:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _run_task(run_dir: Path) -> str:
    return json.loads((run_dir / "config.json").read_text())["config"]["task"]


# -- choosing expert and medium -------------------------------------------------------------------
@dataclass
class Selection:
    """The chosen checkpoints of a run and the evidence for them.

    Attributes:
        task_id: the task.
        expert: curve row of the expert checkpoint, with ``reeval_return`` / ``reeval_std``
            (and ``reeval_win_rate`` on SMAC) added.
        medium: the same for the medium checkpoint.
        medium_band: the target band of the medium's return, in absolute return.
        reeval_episodes: episodes of each re-evaluation; reeval_seed their seed.
        candidates: every re-evaluated row (env_steps, curve return, re-evaluated return).
    """

    task_id: str
    expert: dict[str, Any]
    medium: dict[str, Any]
    medium_band: tuple[float, float]
    reeval_episodes: int
    reeval_seed: int
    candidates: list[dict[str, Any]]


def load_run_checkpoint(run_dir: str | Path, ref: str) -> dict[str, Any]:
    """A checkpoint of a run by its curve reference: ``checkpoints/step_N.pt``, or
    ``snapshots/batch_K.pt#j`` for the j-th acting snapshot of a snapshot file (agent weights
    only; the evaluation fields are None)."""
    run_dir = Path(run_dir)
    path, _, index = ref.partition("#")
    if not index:
        return load_checkpoint(run_dir / path)
    chunk, j = torch.load(run_dir / path, weights_only=True), int(index)
    if chunk.get("algorithm") == "matd3":
        return {
            "actors": {k: v[j].clone() for k, v in chunk["actors"].items()},
            "env_steps": int(chunk["env_steps"][j]), "episodes": int(chunk["episode"][j]),
            "updates": None, "noise_std": float(chunk["noise_std"][j]), "eval_return": None,
            "eval_return_std": None, "eval_win_rate": None, "eval_episodes": 0,
            "config": json.loads((run_dir / "config.json").read_text())["config"],
            "task": chunk["task"], "algorithm": "matd3", "hidden_dim": chunk["hidden_dim"],
        }
    return {
        "agent": {k: v[j].clone() for k, v in chunk["agent"].items()},
        "env_steps": int(chunk["env_steps"][j]), "episodes": int(chunk["episode"][j]),
        "updates": None, "epsilon": float(chunk["epsilon"][j]), "eval_return": None,
        "eval_return_std": None, "eval_win_rate": None, "eval_episodes": 0,
        "config": json.loads((run_dir / "config.json").read_text())["config"],
        "task": chunk["task"],
    }


def _snapshot_rows(run_dir: Path, after_steps: int, before_steps: int) -> list[dict[str, Any]]:
    """Curve-like rows for the acting snapshots strictly between two step counts."""
    rows = []
    for path in _snapshot_chunks(run_dir):
        chunk = torch.load(path, weights_only=True)
        for j, (steps, episodes) in enumerate(zip(chunk["env_steps"].tolist(),
                                                  chunk["episode"].tolist())):
            if after_steps < steps < before_steps:
                rows.append({"env_steps": steps, "episodes": episodes, "eval_return": None,
                             "checkpoint": f"snapshots/{path.name}#{j}"})
    return rows


def _reevaluate(run_dir: Path, row: dict[str, Any], task_id: str, episodes: int, seed: int,
                cache: dict[int, dict[str, Any]]) -> dict[str, Any]:
    if row["env_steps"] not in cache:
        policy = behaviour_policy(load_run_checkpoint(run_dir, row["checkpoint"]))
        result = evaluate_policy(policy, task_id, episodes=episodes, seed=seed)
        out = {**row, "reeval_return": result.mean_return,
               "reeval_std": float(result.returns.std())}
        if result.win_rate is not None:
            out["reeval_win_rate"] = result.win_rate
        cache[row["env_steps"]] = out
    return cache[row["env_steps"]]


def select_checkpoints(run_dir: str | Path, reeval_episodes: int = 320, top_k: int = 5,
                       medium_candidates: int = 8, band: tuple[float, float] = MEDIUM_BAND,
                       expert_fraction: float = 0.9, seed: int = SELECT_SEED,
                       random_reference: float | None = None) -> Selection:
    """Choose the expert and the medium checkpoint of a run.

    Expert: of the ``top_k`` best rows of the curve, the one whose re-evaluation over
    ``reeval_episodes`` episodes is best (later rows win ties).

    Medium: a policy on the way up, so that medium-replay (the learner's episodes until then)
    means what it says. Candidates are the rows after the first gradient update and before the
    curve first reaches ``expert_fraction`` of the expert's return; of those whose curve return
    lies in ``band`` times the expert's, the ``medium_candidates`` closest to the band's middle
    are re-evaluated and the one closest to the middle wins. Where the curve jumps over the band
    between two evaluations (Equal_Line n2 goes from 0.3 to 10 within three updates), the acting
    snapshots between them, which hold the weights of every acting batch, are evaluated too. If
    nothing lands in the band the closest candidate is taken and a warning says so.

    Fractions are taken of the gap above ``random_reference`` (the band is
    r + band * (expert - r), and so is ``expert_fraction``): 0 for QMIX runs, as before; for
    MATD3 runs (MPE returns are negative) the task's measured ``ref_random`` unless given.
    """
    run_dir = Path(run_dir)
    task_id = _run_task(run_dir)
    rows = read_curve(run_dir)
    run_doc = json.loads((run_dir / "config.json").read_text())
    if run_doc.get("algorithm") == "matd3":
        # Updates start once the replay holds max(batch_size, start_steps) transitions.
        first_update = matd3.first_update_episode(run_doc["config"],
                                                  run_doc["task"]["episode_limit"])
        if random_reference is None:
            refs = reference_scores(task_id)
            if "ref_random" not in refs:
                raise ValueError(f"{task_id} has no measured ref_random; pass random_reference")
            random_reference = float(refs["ref_random"]["value"])
    else:
        # The first gradient step follows the acting batch that fills the replay to batch_size
        # episodes; rows and snapshots from before it hold the initial weights.
        first_update = run_doc["config"]["batch_size"]
    base = float(random_reference or 0.0)
    trained = [r for r in rows if r["episodes"] >= first_update]
    if not trained:
        raise ValueError(f"{run_dir}: no evaluation after learning started; train longer")
    cache: dict[int, dict[str, Any]] = {}
    ranked = sorted(trained, key=lambda r: (r["eval_return"], r["env_steps"]), reverse=True)
    experts = [_reevaluate(run_dir, r, task_id, reeval_episodes, seed, cache)
               for r in ranked[:top_k]]
    expert = max(experts, key=lambda r: (r["reeval_return"], r["env_steps"]))
    gap = expert["reeval_return"] - base
    lo, hi = base + band[0] * gap, base + band[1] * gap
    middle = 0.5 * (lo + hi)
    arrival = next((r for r in trained
                    if r["eval_return"] >= base + expert_fraction * gap), expert)
    before = [r for r in rows if r["env_steps"] < arrival["env_steps"]]
    earlier = [r for r in before if r["episodes"] >= first_update]
    in_band = [r for r in earlier if lo <= r["eval_return"] <= hi]
    nearest = sorted(in_band or earlier,
                     key=lambda r: abs(r["eval_return"] - middle))[:medium_candidates]
    mediums = [_reevaluate(run_dir, r, task_id, reeval_episodes, seed, cache) for r in nearest]
    if not any(lo <= r["reeval_return"] <= hi for r in mediums):
        # The first few places where the curve steps over the band: look between evaluations.
        crossings = [(a, b) for a, b in zip(before, before[1:] + [arrival])
                     if min(a["eval_return"], b["eval_return"]) < lo
                     and max(a["eval_return"], b["eval_return"]) > hi][:3]
        for a, b in crossings:
            mediums += [_reevaluate(run_dir, r, task_id, reeval_episodes, seed, cache)
                        for r in _snapshot_rows(run_dir, a["env_steps"], b["env_steps"])
                        if r["episodes"] >= first_update]
    if not mediums:
        raise ValueError(f"{run_dir}: nothing between the first update and the curve's arrival "
                         f"at {expert_fraction:.0%} of the expert's return to choose a medium "
                         "from; evaluate more often (eval_interval_steps)")
    medium = min(mediums, key=lambda r: (abs(r["reeval_return"] - middle), r["env_steps"]))
    if not lo <= medium["reeval_return"] <= hi:
        warnings.warn(f"{task_id}: no checkpoint's return lies in [{lo:.3f}, {hi:.3f}]; the "
                      f"nearest, {medium['reeval_return']:.3f} at {medium['env_steps']} steps, "
                      "is taken as medium", stacklevel=2)
    candidates = [{"env_steps": r["env_steps"], "eval_return": r["eval_return"],
                   "reeval_return": r["reeval_return"]} for r in cache.values()]
    return Selection(task_id, expert, medium, (lo, hi), reeval_episodes, seed,
                     sorted(candidates, key=lambda r: r["env_steps"]))


# -- shipping -------------------------------------------------------------------------------------
def ship_checkpoints(run_dir: str | Path, selection: Selection,
                     dest: str | Path | None = None) -> Path:
    """Copy the chosen checkpoints, agent network only, with the run's config and curve.

    Writes ``dest/{expert,medium}.pt``, ``dest/config.json`` (run config, the selection and
    where medium-replay ends) and ``dest/curve.csv``; returns ``dest``.
    """
    run_dir = Path(run_dir)
    dest = Path(dest) if dest is not None else CHECKPOINT_ROOT / selection.task_id
    dest.mkdir(parents=True, exist_ok=True)
    for quality, row in (("expert", selection.expert), ("medium", selection.medium)):
        full = load_run_checkpoint(run_dir, row["checkpoint"])
        keys = matd3.SHIPPED_KEYS if full.get("algorithm") == "matd3" else (
            "agent", "env_steps", "episodes", "updates", "epsilon", "eval_return",
            "eval_return_std", "eval_win_rate", "eval_episodes", "config", "task")
        small = {k: full[k] for k in keys}
        small.update(quality=quality, reeval_return=row["reeval_return"],
                     reeval_std=row["reeval_std"], reeval_episodes=selection.reeval_episodes,
                     reeval_seed=selection.reeval_seed, source=row["checkpoint"])
        atomic_save(small, dest / f"{quality}.pt")
    run_config = json.loads((run_dir / "config.json").read_text())
    doc = {
        **run_config,
        "selection": {**asdict(selection), "medium_band_fraction": list(MEDIUM_BAND)},
        # Medium-replay: the learner's acting episodes [0, this) (see replay_snapshots).
        "medium_replay_until_episode": int(selection.medium["episodes"]),
        "commit": git_commit(),
        "shipped": time.strftime("%Y-%m-%d"),
    }
    write_json(dest / "config.json", doc)
    shutil.copyfile(run_dir / "curve.csv", dest / "curve.csv")
    return dest


# -- reference score ------------------------------------------------------------------------------
def measure_expert_reference(task_id: str, checkpoint: str | Path, episodes: int = 320,
                             seed: int = 10_000, record: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint greedily and record the result as the task's ``ref_expert``.

    Args:
        task_id: the task, e.g. ``"equal_line-n6"``.
        checkpoint: the expert checkpoint (shipped or from a run).
        episodes: evaluation episodes.
        seed: evaluation seed (:func:`~marl_offline_bench.evaluate_policy`'s default).
        record: write the entry with :func:`marl_offline_bench.registry.record_reference`.

    Returns:
        The entry: value (mean return), std, episodes, seed, checkpoint, commit, ... .
    """
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint)
    if loaded["task"]["task_id"] != task_id:
        raise ValueError(f"{checkpoint} was trained on {loaded['task']['task_id']}, not {task_id}")
    started = time.time()
    result = evaluate_policy(behaviour_policy(loaded), task_id, episodes=episodes, seed=seed)
    try:
        shown = str(checkpoint.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        shown = str(checkpoint)
    entry = {"value": result.mean_return, "std": float(result.returns.std()),
             "episodes": int(len(result.returns)), "seed": seed, "checkpoint": shown,
             "policy": ("MATD3 deterministic actors" if loaded.get("algorithm") == "matd3"
                        else "QMIX greedy"),
             "checkpoint_env_steps": int(loaded["env_steps"]),
             "commit": git_commit(), "seconds": round(time.time() - started, 1),
             "measured": time.strftime("%Y-%m-%d")}
    if result.win_rate is not None:
        entry["win_rate"] = result.win_rate
    if record:
        record_reference(task_id, "ref_expert", entry)
    return entry


# -- medium-replay: replaying the learner's acting snapshots --------------------------------------
def _snapshot_chunks(run_dir: Path) -> list[Path]:
    chunks = sorted((run_dir / "snapshots").glob("batch_*.pt"))
    if not chunks:
        raise FileNotFoundError(f"no acting snapshots under {run_dir / 'snapshots'}")
    return chunks


def _snapshot_policy(chunk: dict[str, Any], j: int, env, cache: dict[str, Any]):
    """The acting policy of snapshot ``j`` of a chunk (QMIX or MATD3)."""
    if chunk.get("algorithm", "qmix") == "matd3":
        from .matd3 import policy_from_snapshot

        return policy_from_snapshot(chunk, j, env.info)
    if "agent" not in cache:
        cache["agent"] = agent_from_checkpoint({
            "task": chunk["task"], "config": {"agent_hidden_dim": chunk["agent_hidden_dim"]},
            "agent": {k: v[j] for k, v in chunk["agent"].items()}})
    agent = cache["agent"]
    agent.load_state_dict({k: v[j] for k, v in chunk["agent"].items()})
    return EpsilonGreedyPolicy(agent, env.info.n_agents, env.info.n_actions,
                               float(chunk["epsilon"][j]), int(chunk["action_seed"][j]))


def replay_batches(chunks, first_episode: int, until_episode: int, engine: str | None = None,
                   progress: Any = None):
    """Yield (reset seed, first learner episode, episodes) of every acting batch that overlaps
    [first_episode, until_episode), replayed in order from snapshot chunks.

    Each acting batch of a run was a pure function of its acting weights, its exploration
    setting and two seeds, all in the snapshot; replaying the batches in order gives back the
    learner's own episodes. ``progress`` (a tqdm bar) advances by the episodes in the window.
    """
    env = None
    cache: dict[str, Any] = {}
    try:
        for chunk in chunks:
            if env is None:
                env = make_vec_env(chunk["task"]["task_id"], int(chunk["num_envs"]),
                                   engine=engine)
            for j, episode in enumerate(chunk["episode"].tolist()):
                end = episode + int(chunk["num_envs"])
                if end <= first_episode or episode >= until_episode:
                    continue
                policy = _snapshot_policy(chunk, j, env, cache)
                seed = int(chunk["rollout_seed"][j])
                data = rollout(env, policy, env.num_envs, seed)
                if progress is not None:
                    progress.update(min(end, until_episode) - max(episode, first_episode))
                yield seed, episode, data
    finally:
        if env is not None:
            env.close()


def window_of(batches, first_episode: int, until_episode: int) -> EpisodeArrays:
    """The episodes of (seed, start, episodes) batches that fall in [first, until)."""
    parts = []
    for _, start, data in batches:
        keep = np.arange(max(start, first_episode),
                         min(start + data.n_episodes, until_episode)) - start
        parts.append(data.select_episodes(keep))
    if not parts:
        raise ValueError(f"no acting snapshot covers episodes [{first_episode}, {until_episode})")
    return EpisodeArrays.concatenate(parts)


def replay_chunks(chunks, first_episode: int, until_episode: int, engine: str | None = None,
                  progress: Any = None) -> EpisodeArrays:
    """The learner's episodes [first_episode, until_episode), replayed from snapshot chunks."""
    return window_of(replay_batches(chunks, first_episode, until_episode, engine, progress),
                     first_episode, until_episode)


def replay_snapshots(run_dir: str | Path, until_episode: int, last_episodes: int | None = None,
                     engine: str | None = None) -> EpisodeArrays:
    """The learner's own episodes before ``until_episode``, from a run's snapshot files.

    ``last_episodes`` keeps only the final ones (what a replay of that capacity held).
    """
    run_dir = Path(run_dir)
    first = max(0, until_episode - last_episodes) if last_episodes else 0
    chunks = (torch.load(path, weights_only=True) for path in _snapshot_chunks(run_dir))
    return replay_chunks(chunks, first, until_episode, engine=engine)


def replay_capacity_episodes(run_dir: str | Path) -> int:
    """How many episodes a run's replay holds: QMIX counts episodes, MATD3 transitions (of
    fixed-length episodes: MPE and MaMuJoCo end by time limit only)."""
    doc = json.loads((Path(run_dir) / "config.json").read_text())
    capacity = int(doc["config"]["buffer_size"])
    if doc.get("algorithm", "qmix") == "matd3":
        capacity //= int(doc["task"]["episode_limit"])
    return capacity


def medium_replay_window(run_dir: str | Path, until_episode: int) -> tuple[int, int]:
    """Episodes [first, until) the learner's replay held when it reached medium."""
    return max(0, until_episode - replay_capacity_episodes(run_dir)), until_episode


def ship_medium_replay(run_dir: str | Path, task_id: str | None = None,
                       dest: str | Path | None = None) -> dict[str, Any]:
    """Ship what rebuilds medium-replay exactly, and describe it in the shipped config.json.

    The window is what the learner's replay held at the shipped medium checkpoint (its
    ``medium_replay_until_episode``): the episodes of its replay capacity before it. What ships
    is the learner's joint actions per acting batch (:mod:`marl_offline_bench.action_log`), replayed here
    once from the run's snapshots and checked by re-simulating them.
    """

    run_dir = Path(run_dir)
    task_id = task_id or _run_task(run_dir)
    dest = Path(dest) if dest is not None else CHECKPOINT_ROOT / task_id
    config_path = dest / "config.json"
    doc = json.loads(config_path.read_text())
    first, until = medium_replay_window(run_dir, int(doc["medium_replay_until_episode"]))
    run_config = json.loads((run_dir / "config.json").read_text())
    chunks = [torch.load(p, weights_only=True) for p in _snapshot_chunks(run_dir)]
    batches = list(replay_batches(chunks, first, until))
    window = window_of(batches, first, until)
    description: dict[str, Any] = {
        "task_id": task_id,
        "algorithm": run_config.get("algorithm", "qmix"),
        "first_episode": first,
        "until_episode": until,
        "episodes": until - first,
        "transitions": int(window.n_transitions),
        "acting_batches": len(batches),
        "run_seed": run_config["config"]["seed"],
        "replay_capacity_episodes": replay_capacity_episodes(run_dir),
        "engine": run_config.get("engine"),
        "how": ("the behaviour learner's own episodes: its joint actions per acting batch, "
                "re-simulated from the batch's reset seed (the actions were taken from its "
                "acting snapshots, with their exploration, when the log was made)"),
    }
    for column in ("epsilon", "noise_std"):
        values = [float(v) for c in chunks if column in c
                  for v, e in zip(c[column].tolist(), c["episode"].tolist())
                  if e + int(c["num_envs"]) > first and e < until]
        if values:
            description[f"{column}_range"] = [min(values), max(values)]
    name = MEDIUM_REPLAY_LOG
    sha = write_action_log(dest / name, batches, first, until, window, description)
    _, matches = replay_action_log(dest / name, task_id)
    if not matches:
        raise RuntimeError(f"{dest / name}: re-simulating the logged actions does not give back "
                           "the snapshots' episodes")
    doc["medium_replay"] = {**description, "file": name, "sha256": sha,
                            "bytes": (dest / name).stat().st_size}
    write_json(config_path, doc)
    return doc["medium_replay"]


# -- entry point ----------------------------------------------------------------------------------
def record_shipped_reference(task_id: str, root: str | Path | None = None) -> Path:
    """Record the ``ref_expert`` measured at shipping time (kept in the shipped config.json)
    in the registry, without measuring again; returns the registry file written."""
    path = Path(root or CHECKPOINT_ROOT) / task_id / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped behaviour checkpoints for {task_id} at {path.parent}")
    entry = json.loads(path.read_text()).get("ref_expert")
    if entry is None:
        raise KeyError(f"{path} holds no measured ref_expert; run `python -m collection.behaviour "
                       "select --run RUN --ship --measure-reference` first")
    return record_reference(task_id, "ref_expert", entry)


def _print_selection(selection: Selection) -> None:
    for quality in ("expert", "medium"):
        row = getattr(selection, quality)
        win = f", win rate {row['reeval_win_rate']:.3f}" if "reeval_win_rate" in row else ""
        curve = "snapshot" if row["eval_return"] is None else f"curve {row['eval_return']:.3f}"
        print(f"{selection.task_id} {quality}: {row['checkpoint']} at {row['env_steps']} steps "
              f"({curve}, re-evaluated {row['reeval_return']:.3f} ± {row['reeval_std']:.3f}{win})")
    print(f"medium band [{selection.medium_band[0]:.3f}, {selection.medium_band[1]:.3f}]")


def main(argv: list[str] | None = None) -> int:
    """Choose, ship and measure QMIX behaviour checkpoints."""
    parser = argparse.ArgumentParser(prog="python -m collection.behaviour",
                                     description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("select", help="choose expert and medium checkpoints of a run")
    p.add_argument("--run", required=True, help="run directory of collection.qmix")
    p.add_argument("--episodes", type=int, default=320, help="episodes per re-evaluation")
    p.add_argument("--reference-episodes", type=int, default=None,
                   help="episodes of the ref_expert measurement (default: --episodes)")
    p.add_argument("--random-reference", type=float, default=None,
                   help="return the medium band is measured from (default: 0 for QMIX runs, "
                        "the task's ref_random for MATD3 runs)")
    p.add_argument("--ship", action="store_true", help="copy them to marl_offline_bench/data/behaviour/")
    p.add_argument("--measure-reference", action="store_true",
                   help="with --ship: measure the shipped expert greedily and keep the result "
                        "as ref_expert in the shipped config.json")
    p.add_argument("--record", action="store_true",
                   help="with --measure-reference: also record it in the registry")
    p = sub.add_parser("record", help="record a shipped ref_expert in the registry")
    p.add_argument("--task", required=True, help="task id, e.g. equal_line-n6")
    p = sub.add_parser("ship-replay", help="ship the snapshots that rebuild medium-replay")
    p.add_argument("--run", required=True, help="run directory whose medium checkpoint shipped")
    args = parser.parse_args(argv)
    if args.command == "ship-replay":
        entry = ship_medium_replay(args.run)
        print(f"{entry['task_id']}: medium-replay = episodes [{entry['first_episode']}, "
              f"{entry['until_episode']}) from {entry['acting_batches']} acting batches, "
              f"action log {entry['bytes'] / 1e3:.0f} kB")
        return 0
    if args.command == "record":
        print(f"{args.task}: ref_expert recorded in {record_shipped_reference(args.task)}")
        return 0
    selection = select_checkpoints(args.run, reeval_episodes=args.episodes,
                                   random_reference=args.random_reference)
    _print_selection(selection)
    if args.ship:
        dest = ship_checkpoints(args.run, selection)
        print(f"shipped to {dest}")
        if args.measure_reference:
            entry = measure_expert_reference(selection.task_id, dest / "expert.pt",
                                             episodes=args.reference_episodes or args.episodes,
                                             record=args.record)
            doc = json.loads((dest / "config.json").read_text())
            doc["ref_expert"] = entry
            write_json(dest / "config.json", doc)
            win = f", win rate {entry['win_rate']:.3f}" if "win_rate" in entry else ""
            print(f"{selection.task_id} ref_expert = {entry['value']:.4f} ± {entry['std']:.4f} "
                  f"over {entry['episodes']} episodes{win}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
