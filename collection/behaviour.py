"""Behaviour policies from QMIX runs: load, choose expert and medium, ship, measure, replay.

A QMIX run (:mod:`collection.qmix`) leaves a greedy evaluation and a checkpoint every
``eval_interval_steps``. From it this module

* chooses the **expert** (the best greedy return) and the **medium** checkpoint (greedy return
  about 1/3 to 1/2 of the expert's), re-evaluating the candidates on more episodes than the
  curve's, so that one lucky evaluation does not decide (:func:`select_checkpoints`);
* ships them small, agent network only, under ``collection/checkpoints/<task>/`` with the run's
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
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.networks import RNNAgent
from marl_offline_bench.collect import git_commit, rollout
from marl_offline_bench.dataset import EpisodeArrays
from marl_offline_bench.envs import make_vec_env, split_task_id
from marl_offline_bench.evaluation import evaluate_policy
from marl_offline_bench.registry import record_reference

from .qmix import EpsilonGreedyPolicy, atomic_save

__all__ = [
    "CHECKPOINT_ROOT", "load_checkpoint", "agent_from_checkpoint", "behaviour_policy",
    "read_curve", "load_run_checkpoint", "Selection", "select_checkpoints", "ship_checkpoints",
    "shipped_checkpoint",
    "measure_expert_reference", "record_shipped_reference", "replay_snapshots", "MEDIUM_BAND",
]

#: Where the chosen checkpoints ship: ``CHECKPOINT_ROOT / <task_id> / {expert,medium}.pt``.
CHECKPOINT_ROOT = Path(__file__).with_name("checkpoints")
#: A medium policy's greedy return, as a fraction of the expert's (DESIGN section 3).
MEDIUM_BAND = (1.0 / 3.0, 1.0 / 2.0)
#: Seed of the re-evaluations that choose checkpoints (away from training and collection seeds).
SELECT_SEED = 20_000


# -- loading --------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A QMIX checkpoint (run or shipped) as a dict of tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no QMIX checkpoint at {path}; train one with "
                                "`python -m collection.qmix --task T --out DIR`")
    return torch.load(path, weights_only=True)


def agent_from_checkpoint(checkpoint: dict[str, Any]) -> RNNAgent:
    """The GRU agent network of a checkpoint, weights loaded, in eval mode."""
    dims = checkpoint["task"]
    agent = RNNAgent(dims["obs_dim"] + dims["n_actions"] + dims["n_agents"], dims["n_actions"],
                     checkpoint["config"]["agent_hidden_dim"])
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval()


def behaviour_policy(checkpoint: str | Path | dict[str, Any], epsilon: float = 0.0,
                     seed: int = 0) -> EpsilonGreedyPolicy:
    """An acting policy for :func:`~marl_offline_bench.collect.rollout` from a checkpoint.

    Args:
        checkpoint: a path, or a dict from :func:`load_checkpoint`.
        epsilon: exploration rate over available actions (0: greedy, as evaluated).
        seed: seed of the exploration draws; ``reset(num_envs)`` restarts them and the hidden
            state, so each batch of episodes is reproducible.
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    dims = checkpoint["task"]
    return EpsilonGreedyPolicy(agent_from_checkpoint(checkpoint), dims["n_agents"],
                               dims["n_actions"], epsilon, seed)


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
                       expert_fraction: float = 0.9, seed: int = SELECT_SEED) -> Selection:
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
    """
    run_dir = Path(run_dir)
    task_id = _run_task(run_dir)
    rows = read_curve(run_dir)
    # The first gradient step follows the acting batch that fills the replay to batch_size
    # episodes; rows and snapshots from before it hold the initial weights.
    first_update = json.loads((run_dir / "config.json").read_text())["config"]["batch_size"]
    trained = [r for r in rows if r["episodes"] >= first_update]
    if not trained:
        raise ValueError(f"{run_dir}: no evaluation after learning started; train longer")
    cache: dict[int, dict[str, Any]] = {}
    ranked = sorted(trained, key=lambda r: (r["eval_return"], r["env_steps"]), reverse=True)
    experts = [_reevaluate(run_dir, r, task_id, reeval_episodes, seed, cache)
               for r in ranked[:top_k]]
    expert = max(experts, key=lambda r: (r["reeval_return"], r["env_steps"]))
    lo, hi = band[0] * expert["reeval_return"], band[1] * expert["reeval_return"]
    middle = 0.5 * (lo + hi)
    arrival = next((r for r in trained
                    if r["eval_return"] >= expert_fraction * expert["reeval_return"]), expert)
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
def shipped_checkpoint(task_id: str, quality: str) -> Path:
    """Path of a shipped behaviour checkpoint (``expert`` or ``medium``)."""
    split_task_id(task_id)
    if quality not in ("expert", "medium"):
        raise ValueError(f"behaviour checkpoints exist for 'expert' and 'medium', not {quality!r}")
    return CHECKPOINT_ROOT / task_id / f"{quality}.pt"


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
        small = {k: full[k] for k in ("agent", "env_steps", "episodes", "updates", "epsilon",
                                      "eval_return", "eval_return_std", "eval_win_rate",
                                      "eval_episodes", "config", "task")}
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
    tmp = dest / ".config.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, dest / "config.json")
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
             "policy": "QMIX greedy", "checkpoint_env_steps": int(loaded["env_steps"]),
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


def replay_snapshots(run_dir: str | Path, until_episode: int, last_episodes: int | None = None,
                     engine: str | None = None) -> EpisodeArrays:
    """The learner's own episodes [0, until_episode), rebuilt from its acting snapshots.

    Each acting batch of the run was a pure function of the agent weights, epsilon and two
    seeds, all recorded; this replays the batches in order. ``last_episodes`` keeps only the
    final ones (SMAC's medium-replay is the last 5000 episodes before medium).
    """
    run_dir = Path(run_dir)
    first = max(0, until_episode - last_episodes) if last_episodes else 0
    env = agent = None
    parts = []
    try:
        for path in _snapshot_chunks(run_dir):
            chunk = torch.load(path, weights_only=True)
            if env is None:
                env = make_vec_env(chunk["task"]["task_id"], int(chunk["num_envs"]),
                                   engine=engine)
                fake = {"task": chunk["task"], "config": {
                    "agent_hidden_dim": chunk["agent_hidden_dim"]},
                        "agent": {k: v[0] for k, v in chunk["agent"].items()}}
                agent = agent_from_checkpoint(fake)
            for j, episode in enumerate(chunk["episode"].tolist()):
                end = episode + int(chunk["num_envs"])
                if end <= first or episode >= until_episode:
                    continue
                agent.load_state_dict({k: v[j] for k, v in chunk["agent"].items()})
                policy = EpsilonGreedyPolicy(agent, env.info.n_agents, env.info.n_actions,
                                             float(chunk["epsilon"][j]),
                                             int(chunk["action_seed"][j]))
                data = rollout(env, policy, env.num_envs, int(chunk["rollout_seed"][j]))
                keep = np.arange(max(episode, first), min(end, until_episode)) - episode
                parts.append(data.select_episodes(keep))
    finally:
        if env is not None:
            env.close()
    if not parts:
        raise ValueError(f"{run_dir}: no acting snapshot covers episodes "
                         f"[{first}, {until_episode})")
    return EpisodeArrays.concatenate(parts)


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
    p.add_argument("--ship", action="store_true", help="copy them to collection/checkpoints/")
    p.add_argument("--measure-reference", action="store_true",
                   help="with --ship: measure the shipped expert greedily and keep the result "
                        "as ref_expert in the shipped config.json")
    p.add_argument("--record", action="store_true",
                   help="with --measure-reference: also record it in the registry")
    p = sub.add_parser("record", help="record a shipped ref_expert in the registry")
    p.add_argument("--task", required=True, help="task id, e.g. equal_line-n6")
    args = parser.parse_args(argv)
    if args.command == "record":
        print(f"{args.task}: ref_expert recorded in {record_shipped_reference(args.task)}")
        return 0
    selection = select_checkpoints(args.run, reeval_episodes=args.episodes)
    _print_selection(selection)
    if args.ship:
        dest = ship_checkpoints(args.run, selection)
        print(f"shipped to {dest}")
        if args.measure_reference:
            entry = measure_expert_reference(selection.task_id, dest / "expert.pt",
                                             episodes=args.episodes, record=args.record)
            doc = json.loads((dest / "config.json").read_text())
            doc["ref_expert"] = entry
            tmp = dest / ".config.json.tmp"
            tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
            os.replace(tmp, dest / "config.json")
            win = f", win rate {entry['win_rate']:.3f}" if "win_rate" in entry else ""
            print(f"{selection.task_id} ref_expert = {entry['value']:.4f} ± {entry['std']:.4f} "
                  f"over {entry['episodes']} episodes{win}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
