"""CFCQL training speed on this machine: updates per second, and what the batching buys.

Three learners are timed on the same synthetic data, each for full updates (sampling, forward,
backward, optimiser step):

* discrete, SMAC sizes (32 episodes x 60 steps, 5 agents, obs 80, 12 actions, state 120):
  CFCQL as shipped (mixer hypernetworks once per state, all counterfactuals in one product);
  CFCQL with the reference code's per-agent loop (one full mixer call per agent and action);
  plain QMIX (TD(lambda) loss only) on the same networks.
* continuous, MPE sizes (1024 transitions, 3 agents, obs 18, action 2, state 54):
  CFCQL as shipped (all n x 3M counterfactual joint actions through the critic in one call);
  CFCQL with a per-agent, per-source loop that re-runs the whole critic on repeated states;
  CFCQL with a loop over agents and sampled actions, one critic call of B rows each (the
  continuous counterpart of the discrete loop over agents and actions);
  the same update without the conservative term (TD loss and counterfactual actor only).
  All three CFCQL variants push the same B x n x 3M rows through the critic's hidden layers,
  which is where the time goes on a CPU; batching saves only the repeated state part of the
  first layer and Python overhead, so expect little speed-up here (a GPU is another matter).
  The behaviour density for lambda (a VAE with L importance samples) costs the same in both
  CFCQL variants and is timed on its own.

Then every registered learner (``marl_offline_bench.algorithm_registry()``, on each action kind it supports) at the
``full`` protocol's batch (its config is ``Cls.config_for(dataset_id, "full")``), on a small real
dataset of one task per family (Equal_Line n4 and MPE CN by default; SMAC 2s3z and HalfCheetah
2x3, slower to build and to update, with ``--slow-families``), built into a scratch Minari root:

* updates per second (whole rounds of the continuous learners: one critic+actor update and four
  critic-only ones), after one warm-up round;
* FLOPs per update, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
  attention only: element-wise work is not counted, as in every FLOP count of this kind);
* achieved GFLOP/s = FLOPs per update x updates per second;
* the matmul rate of this machine at the learner's own shapes, measured in the same run: every
  matrix product of one update is recorded by shape, and ``torch.mm``/``torch.bmm`` is timed
  alone at the shapes that carry 90% of the FLOPs (six at most); the rate is their
  FLOP-weighted harmonic mean, i.e. the update's FLOPs over the time those products would take
  at the rate each reaches alone. ``ratio`` = achieved / matmul rate: near 1 the update is bound
  by its matrix products; far below, by everything else (Python, small kernels, sampling).

One-off fits before the first update (CFCQL's behaviour model ``bc_steps``, its VAE
``vae_steps``, MADTKD's teacher ``teacher_steps``) are set to 0: they are a separate phase,
not the per-update cost. ``batch`` is the config's batch size: episodes for the discrete
learners (MADTKD: one window per episode), transitions for the continuous ones except MAICQ,
whose continuous batch counts 25-step windows.

``--profile`` runs ``torch.profiler`` on a few updates of one recurrent learner and one MLP
learner (``--profile-learners``) and splits an update's wall time into matrix products, other
ATen operators and what lies outside any operator (Python and framework overhead), with the
operator count per update and named regions (GRU unroll, CEM search, batch sampling, optimiser
steps).

Run: ``python benchmarks/train_speed.py [--repeats 5] [--threads 1] [--slow-families]
[--profile]``. Synthetic tensors stand in for data in the CFCQL comparison: speed does not
depend on the values.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from baselines.cfcql import (CFCQLContinuous, CFCQLDiscrete, counterfactual_actor_loss,
                             counterfactual_joint_q_reference)
from baselines.qmix_backbone import qmix_td_loss
from marl_offline_bench.networks import QMixer, build_agent_inputs, soft_update
import marl_offline_bench as mob
from marl_offline_bench.dataset import MARLDataset, synthetic_dataset
from marl_offline_bench.envs import TaskInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import scratch_minari_root, seconds_per_call  # noqa: E402


# -- synthetic tasks -------------------------------------------------------------------------------
def task(task_id: str, n: int, obs_dim: int, state_dim: int, n_actions: int = 0,
         action_dim: int = 0, limit: int = 60) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_ids=tuple(f"agent_{i}" for i in range(n)),
                    obs_dims=(obs_dim,) * n, state_dim=state_dim, discrete=n_actions > 0,
                    n_actions=n_actions, action_dims=(action_dim,) * n if action_dim else (),
                    episode_limit=limit)


# -- the reference code's way, as subclasses -------------------------------------------------
class LoopCFCQLDiscrete(CFCQLDiscrete):
    """CFCQL whose counterfactual Q re-runs the full mixer per agent and action (as the code)."""

    def counterfactual_q(self, qs, chosen_qs, actions, state, weights, avail):
        return counterfactual_joint_q_reference(self.qmix.mixer, qs, actions, state, avail)


class LoopCFCQLContinuous(CFCQLContinuous):
    """CFCQL whose counterfactual Q runs the whole critic once per agent and sample source."""

    def counterfactual_q(self, features, state, actions, samples):
        batch_size, n, n_samples, d = samples.shape
        per_source = self.config.num_sampled_actions
        rows = []
        for i in range(n):
            blocks = []
            for start in range(0, n_samples, per_source):
                joint = actions.unsqueeze(1).repeat(1, per_source, 1, 1)           # (B, M, n, d)
                joint[:, :, i] = samples[:, i, start:start + per_source]
                states = state.unsqueeze(1).expand(-1, per_source, -1)
                q = self.critic(states.reshape(batch_size * per_source, -1),
                                joint.reshape(batch_size * per_source, n * d))
                blocks.append(q.reshape(2, batch_size, per_source))
            rows.append(torch.cat(blocks, dim=-1))
        return torch.stack(rows, dim=2)


class SampleLoopCFCQLContinuous(CFCQLContinuous):
    """CFCQL whose counterfactual Q runs the whole critic once per agent and sampled action,
    the continuous counterpart of the discrete loop over agents and actions."""

    def counterfactual_q(self, features, state, actions, samples):
        batch_size, n, n_samples, d = samples.shape
        rows = []
        for i in range(n):
            columns = []
            for k in range(n_samples):
                joint = actions.clone()                                            # (B, n, d)
                joint[:, i] = samples[:, i, k]
                columns.append(self.critic(state, joint.reshape(batch_size, n * d)))  # (2, B)
            rows.append(torch.stack(columns, dim=-1))
        return torch.stack(rows, dim=2)


# -- the plain updates CFCQL is compared with ------------------------------------------------
def qmix_update(algo: CFCQLDiscrete) -> None:
    """One plain QMIX update (TD(lambda), double Q) with the learner's networks and optimiser."""
    batch = next(algo.sampler)
    state, actions, mask = batch.states, batch.actions.long(), batch.mask
    qmix = algo.qmix
    inputs = build_agent_inputs(batch.observations, actions, algo.info.n_actions)
    agent_qs = qmix.agent.unroll(inputs)
    targets = qmix.td_targets(inputs, agent_qs, batch.avail_actions, state, batch.rewards,
                              batch.terminals, mask)
    chosen = agent_qs[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    qmix.step(qmix_td_loss(qmix.mixer(chosen, state[:, :-1]), targets, mask))


def td_only_update(algo: CFCQLContinuous) -> None:
    """The continuous update without the conservative term (and so without lambda)."""
    cfg = algo.config
    batch = next(algo.sampler)
    state, actions = batch.states, batch.actions
    with torch.no_grad():
        next_q = algo.target_critic(batch.next_states,
                                    algo._target_actions(batch.next_observations).flatten(1))
        targets = batch.rewards + cfg.gamma * (1 - batch.terminals.float()) * next_q.min(0).values
    td_loss = ((algo.critic(state, actions.flatten(1)) - targets) ** 2).mean(-1).sum()
    algo.critic_optimiser.zero_grad()
    td_loss.backward()
    torch.nn.utils.clip_grad_norm_(algo.critic.parameters(), cfg.grad_clip)
    algo.critic_optimiser.step()
    if algo.updates % cfg.critic_updates_per_round == 0:
        policy_actions = algo.actors(batch.observations)
        actor_loss = counterfactual_actor_loss(algo.critic, state, policy_actions, actions,
                                               algo.action_mask, cfg.action_reg).sum()
        algo.actor_optimiser.zero_grad()
        actor_loss.backward()
        algo.actor_optimiser.step()
    if algo.updates % cfg.critic_updates_per_round == cfg.critic_updates_per_round - 1:
        soft_update(algo.target_critic, algo.critic, cfg.target_rate)
        soft_update(algo.target_actors, algo.actors, cfg.target_rate)
    algo.updates += 1


# -- timing ---------------------------------------------------------------------------------------
def row(label: str, seconds: float) -> str:
    return f"  {label} {seconds:7.3f} s/update  {1 / seconds:6.2f} updates/s"


def check_same_values() -> None:
    """The batched and looped counterfactual Q agree (else the timing compares different things)."""
    torch.manual_seed(0)
    mixer = QMixer(5, 120)
    qs, state = torch.randn(2, 7, 5, 12), torch.randn(2, 7, 120)
    actions = torch.randint(0, 12, (2, 7, 5))
    chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    from baselines.cfcql import counterfactual_joint_q
    fast = counterfactual_joint_q(qs, chosen, mixer.hyper(state))
    slow = counterfactual_joint_q_reference(mixer, qs, actions, state)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def check_same_continuous(batched: CFCQLContinuous, *loops: CFCQLContinuous) -> None:
    """Every continuous variant gives the same counterfactual Q with the same critic."""
    torch.manual_seed(0)
    n, d = batched.info.n_agents, batched.info.action_dim
    state, actions = torch.randn(5, batched.info.state_dim), torch.rand(5, n, d) * 2 - 1
    samples = torch.rand(5, n, 3 * batched.config.num_sampled_actions, d) * 2 - 1
    with torch.no_grad():
        fast = batched.counterfactual_q(batched.critic.state_features(state), state, actions,
                                        samples)
        for loop in loops:
            loop.critic.load_state_dict(batched.critic.state_dict())
            slow = loop.counterfactual_q(loop.critic.state_features(state), state, actions,
                                         samples)
            torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


# -- every registered learner at the full batch ----------------------------------------------------
#: One small real dataset per family (random quality: speed does not depend on the policy that
#: collected the data), and how many episodes to build: enough for a full batch (128 episodes,
#: 1024 or 256 transitions).
FAMILY_DATASETS: dict[str, tuple[str, int]] = {
    "equal_line": ("equal_line-n4-random-v0", 300),
    "mpe": ("mpe-cn-random-v0", 400),
    "smac": ("smac-2s3z-random-v0", 300),
    "mamujoco": ("mamujoco-halfcheetah_2x3-random-v0", 12),
}
FAST_FAMILIES = ("equal_line", "mpe")
SLOW_FAMILIES = ("smac", "mamujoco")
#: Config fields of one-off fits that run before the first update; 0 here (see the docstring).
PRETRAINING_FIELDS = ("bc_steps", "vae_steps", "teacher_steps")


def family_dataset(family: str) -> MARLDataset:
    """The family's speed dataset, built into the current Minari root when it is not there."""
    import marl_offline_bench as mob

    dataset_id, episodes = FAMILY_DATASETS[family]
    try:
        return mob.load(dataset_id, build=False, progress=False)
    except FileNotFoundError:
        mob.collect_dataset(dataset_id, episodes=episodes, show_progress=False)
        return mob.load(dataset_id, build=False, progress=False)


def build_learner(name: str, dataset: MARLDataset, protocol: str = "full"):
    """The registry's learner ``name`` on ``dataset`` with the protocol's config and no one-off
    fits, or None when it does not support the dataset's action kind."""
    from marl_offline_bench.envs import task_info

    info = task_info(dataset.task_id)
    spec = mob.get_algorithm(name)
    if not spec.supports(info.discrete):
        return None  # the other action kind
    fields = spec.algorithm_class(info.discrete).config_fields()
    no_fit = {k: 0 for k in PRETRAINING_FIELDS if k in fields}
    return mob.build_algorithm(name, info, dataset, protocol=protocol, seed=0, device="cpu",
                               **no_fit)


def round_length(algo) -> int:
    """Updates per round: the continuous learners alternate one critic+actor update with
    critic-only ones, so their cost is only fair over whole rounds."""
    return int(getattr(algo.config, "critic_updates_per_round", 1))


def batch_size(algo) -> int:
    """The config's batch size (BC keeps one per action kind)."""
    cfg = algo.config
    if hasattr(cfg, "batch_size"):
        return int(cfg.batch_size)
    return int(cfg.episode_batch_size if algo.info.discrete else cfg.transition_batch_size)


class MatmulShape(NamedTuple):
    """One matrix product: ``batch`` products of (m x k) @ (k x n)."""

    op: str
    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def describe(self) -> str:
        lead = f"{self.batch}x" if self.op == "bmm" else ""
        return f"{lead}({self.m}x{self.k})@({self.k}x{self.n})"


class MatmulShapes(TorchDispatchMode):
    """Records the FLOPs of every matrix product by shape (mm, addmm, bmm, baddbmm; linear
    layers and GRU cells reach these under the dispatcher)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[MatmulShape] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name in ("mm", "bmm") else (args[1], args[2])
            if name in ("mm", "addmm"):
                shape = MatmulShape("mm", 1, a.shape[0], a.shape[1], b.shape[1])
            else:
                shape = MatmulShape("bmm", a.shape[0], a.shape[1], a.shape[2], b.shape[2])
            self.flops[shape] += shape.flops
        return func(*args, **(kwargs or {}))


def count_flops(algo, updates: int) -> tuple[float, Counter[MatmulShape]]:
    """FLOPs per update by ``FlopCounterMode`` over ``updates`` updates, and the matrix
    products' FLOPs per update by shape (over the same updates)."""
    with FlopCounterMode(display=False) as counter, MatmulShapes() as shapes:
        for _ in range(updates):
            algo.update()
    per_update = Counter({k: v / updates for k, v in shapes.flops.items()})
    return counter.get_total_flops() / updates, per_update


@functools.lru_cache(maxsize=None)
def matmul_gflops(shape: MatmulShape, seconds: float = 0.15) -> float:
    """This machine's rate for one product shape alone: ``torch.mm`` (or ``torch.bmm``) on
    fresh float32 operands, the best of three blocks of ``seconds``."""
    if shape.op == "mm":
        a, b = torch.randn(shape.m, shape.k), torch.randn(shape.k, shape.n)
        op = functools.partial(torch.mm, a, b)
    else:
        a = torch.randn(shape.batch, shape.m, shape.k)
        b = torch.randn(shape.batch, shape.k, shape.n)
        op = functools.partial(torch.bmm, a, b)
    op()
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            op()
            calls += 1
        best = max(best, shape.flops * calls / elapsed / 1e9)
    return best


def matmul_bound_rate(shape_flops: Counter[MatmulShape], coverage: float = 0.9,
                      max_shapes: int = 6) -> tuple[float, MatmulShape, float]:
    """The rate the update's products would reach if each ran as fast as alone.

    Times the largest shapes until ``coverage`` of the FLOPs (at most ``max_shapes``) and
    returns their FLOP-weighted harmonic mean rate (GFLOP/s), the dominant shape and its share
    of the FLOPs.
    """
    total = sum(shape_flops.values())
    chosen, covered = [], 0.0
    for shape, flops in shape_flops.most_common():
        chosen.append((shape, flops))
        covered += flops
        if covered >= coverage * total or len(chosen) == max_shapes:
            break
    seconds = sum(flops / (matmul_gflops(shape) * 1e9) for shape, flops in chosen)
    dominant, dominant_flops = chosen[0]
    return covered / seconds / 1e9, dominant, dominant_flops / total


def measure_learner(algo, updates: int) -> dict[str, Any]:
    """Updates per second, FLOPs per update, achieved and matmul GFLOP/s of one learner."""
    per_round = round_length(algo)
    timed_updates = per_round * max(1, -(-updates // per_round))
    for _ in range(per_round):                                      # warm-up: one whole round
        algo.update()
    start = time.perf_counter()
    for _ in range(timed_updates):
        algo.update()
    seconds = (time.perf_counter() - start) / timed_updates
    flops, shapes = count_flops(algo, per_round)
    matmul, dominant, share = matmul_bound_rate(shapes)
    achieved = flops / seconds / 1e9
    return {"updates_per_s": 1 / seconds, "mflop": flops / 1e6, "achieved": achieved,
            "matmul": matmul, "ratio": achieved / matmul, "dominant": dominant.describe(),
            "share": share, "timed": timed_updates}


def learner_rows(families: list[str], names: list[str], updates: int,
                 report: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One measured row per (family, learner) pairing the learner supports."""
    rows = []
    for family in families:
        start = time.perf_counter()
        dataset = family_dataset(family)
        report(f"  {dataset.dataset_id}: {dataset['observations'].shape[0]:,} transitions "
               f"ready in {time.perf_counter() - start:.1f} s")
        for name in names:
            algo = build_learner(name, dataset)
            if algo is None:
                continue
            row = {"learner": name, "family": family,
                   "kind": "discrete" if algo.info.discrete else "continuous",
                   "dataset": dataset.dataset_id, "batch": batch_size(algo),
                   **measure_learner(algo, updates)}
            rows.append(row)
            report(f"  measured {name} on {dataset.dataset_id}")
    return rows


def learner_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width table."""
    header = (f"{'learner':9} {'kind':10} {'dataset':36} {'batch':>5} {'upd/s':>7} "
              f"{'MFLOP/upd':>10} {'GFLOP/s':>8} {'mm GFLOP/s':>10} {'ratio':>6}  "
              "dominant product (share of FLOPs)")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['learner']:9} {r['kind']:10} {r['dataset']:36} {r['batch']:5d} "
                     f"{r['updates_per_s']:7.2f} {r['mflop']:10.1f} {r['achieved']:8.2f} "
                     f"{r['matmul']:10.2f} {r['ratio']:6.2f}  {r['dominant']} "
                     f"({100 * r['share']:.0f}%)")
    return "\n".join(lines)


# -- where an update's time goes -----------------------------------------------------------------
#: Methods wrapped in a named profiler region when a learner has them (instance attributes
#: first, then its sub-objects), so the profile says how long each phase takes.
PROFILE_REGIONS: dict[str, str] = {
    "sampler.sample": "batch sampling",
    "agent.unroll": "GRU unroll (online net)",
    "target_agent.unroll": "GRU unroll (target net)",
    "rectified_actions": "CEM search",
    "counterfactual_q": "counterfactual Q",
}

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


@contextmanager
def labelled(algo, regions: dict[str, str]) -> Iterator[list[str]]:
    """Wrap each of ``algo``'s methods named in ``regions`` in ``record_function``; yields the
    labels that were found and restores the methods after."""
    patched, found = [], []
    for path, label in regions.items():
        *owners, attr = path.split(".")
        owner = algo
        for part in owners:
            owner = getattr(owner, part, None)
        method = getattr(owner, attr, None) if owner is not None else None
        if not callable(method):
            continue

        def wrapper(*args, _method=method, _label=label, **kwargs):
            with torch.profiler.record_function(_label):
                return _method(*args, **kwargs)

        own = vars(owner).get(attr) if hasattr(owner, "__dict__") else None
        setattr(owner, attr, wrapper)
        patched.append((owner, attr, own))
        found.append(label)
    try:
        yield found
    finally:
        for owner, attr, own in patched:
            if own is None:
                delattr(owner, attr)                 # the class's method shows through again
            else:
                setattr(owner, attr, own)


def profile_update(algo, updates: int) -> dict[str, Any]:
    """Split ``updates`` updates' wall time: matrix products, other operators, outside
    operators, and named regions (inclusive)."""
    per_round = round_length(algo)
    updates = per_round * max(1, -(-updates // per_round))
    for _ in range(per_round):
        algo.update()
    with labelled(algo, PROFILE_REGIONS) as labels:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(updates):
                algo.update()
            wall = time.perf_counter() - start
    stats = prof.key_averages()
    aten = [e for e in stats if e.key.startswith("aten::")]
    matmul_us = sum(e.self_cpu_time_total for e in aten if e.key in MATMUL_OPS)
    other_us = sum(e.self_cpu_time_total for e in aten if e.key not in MATMUL_OPS)
    ops = sum(e.count for e in aten)
    regions = {e.key: e.cpu_time_total / 1e3 / updates for e in stats
               if e.key in labels or e.key.startswith("Optimizer.step")}
    # The autograd engine runs one backward function after another, never nested: their
    # inclusive times add up to the backward passes.
    regions["backward passes"] = sum(
        e.cpu_time_total for e in stats
        if e.key.startswith("autograd::engine::evaluate_function")) / 1e3 / updates
    top = sorted(aten, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {"wall_ms": 1e3 * wall / updates, "matmul_ms": matmul_us / 1e3 / updates,
            "other_ms": other_us / 1e3 / updates,
            "outside_ms": (1e6 * wall - matmul_us - other_us) / 1e3 / updates,
            "ops": ops / updates, "regions": regions,
            "top": [(e.key, e.self_cpu_time_total / 1e3 / updates, e.count / updates)
                    for e in top]}


def print_profile(name: str, dataset_id: str, profile: dict[str, Any]) -> None:
    wall = profile["wall_ms"]
    print(f"  {name} on {dataset_id}: {wall:.1f} ms per update under the profiler, "
          f"{profile['ops']:.0f} ATen operator calls per update (nested ones included) "
          f"({1e3 * wall / profile['ops']:.1f} us of wall time per operator)")
    for key, label in (("matmul_ms", "matrix products (self time)"),
                       ("other_ms", "other ATen operators (self time)"),
                       ("outside_ms", "outside any operator (Python, autograd, framework)")):
        print(f"    {label:52} {profile[key]:8.1f} ms  {100 * profile[key] / wall:5.1f}%")
    for label, ms in sorted(profile["regions"].items(), key=lambda kv: -kv[1]):
        print(f"    region {label:45} {ms:8.1f} ms  {100 * ms / wall:5.1f}% (inclusive)")
    print("    top operators by self time: " + "; ".join(
        f"{key} {ms:.1f} ms x{count:.0f}" for key, ms, count in profile["top"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per learner")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--vae-hidden", type=int, default=750,
                        help="hidden width of the behaviour VAE (the code's 750 by default)")
    parser.add_argument("--vae-samples", type=int, default=20,
                        help="importance samples L per log-density estimate (the code's 20)")
    parser.add_argument("--skip-continuous", action="store_true",
                        help="skip the continuous CFCQL comparison")
    parser.add_argument("--skip-discrete", action="store_true",
                        help="skip the discrete CFCQL comparison")
    parser.add_argument("--skip-variants", action="store_true",
                        help="skip both CFCQL comparisons (batched against looped)")
    parser.add_argument("--skip-learners", action="store_true",
                        help="skip the table of every learner at the full batch")
    parser.add_argument("--learners", default=None,
                        help="comma-separated registry names for the table (default: all)")
    parser.add_argument("--slow-families", action="store_true",
                        help="also SMAC 2s3z and HalfCheetah 2x3 (slower to build and to update)")
    parser.add_argument("--learner-updates", type=int, default=5,
                        help="timed updates per learner, rounded up to whole rounds")
    parser.add_argument("--profile", action="store_true",
                        help="profile where the time of an update goes (--profile-learners)")
    parser.add_argument("--profile-learners", default="cfcql:equal_line,omar:mpe",
                        help="learner:family pairs to profile (default: one recurrent, one MLP)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    if not args.skip_variants:
        check_same_values()
        compare_cfcql_variants(args)
    if not args.skip_learners or args.profile:
        scratch_minari_root("marl-bench-train-speed-")
    if not args.skip_learners:
        names = args.learners.split(",") if args.learners else mob.algorithm_names()
        families = list(FAST_FAMILIES) + (list(SLOW_FAMILIES) if args.slow_families else [])
        square = MatmulShape("mm", 1, 1024, 1024, 1024)
        print(f"every learner at the full batch, {args.learner_updates} timed updates each "
              "(whole rounds), one-off fits excluded; this machine's torch.mm on "
              f"(1024x1024)@(1024x1024): {matmul_gflops(square):.1f} GFLOP/s")
        rows = learner_rows(families, names, args.learner_updates)
        print()
        print(learner_table(rows))
        slow = [f"{r['learner']} on {r['family']}" for r in rows if r["ratio"] < 0.5]
        print(f"\n  below half their matmul rate: {', '.join(slow) or 'none'}\n")
    if args.profile:
        print("where an update's time goes (torch.profiler, CPU):")
        for pair in args.profile_learners.split(","):
            name, family = pair.split(":")
            dataset = family_dataset(family)
            algo = build_learner(name, dataset)
            if algo is None:
                raise ValueError(f"{name} does not support {dataset.dataset_id}; pick another "
                                 "learner:family pair for --profile-learners")
            print_profile(name, dataset.dataset_id, profile_update(algo, args.learner_updates))


def compare_cfcql_variants(args: argparse.Namespace) -> None:
    """CFCQL as shipped against the reference code's loops and the plain updates (see the
    module docstring)."""
    print("CFCQL: batched counterfactuals against loops; learners take turns, one update each "
          "per turn\n")
    if not args.skip_discrete:
        info = task("smac-synthetic", n=5, obs_dim=80, state_dim=120, n_actions=12, limit=60)
        data = synthetic_dataset(info, episodes=64, length=60)
        small = dict(batch_size=32, bc_steps=0)
        batched = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(**small))
        looped = LoopCFCQLDiscrete(info, data, LoopCFCQLDiscrete.Config(**small))
        qmix = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(**small))
        t = seconds_per_call({"batched": batched.update, "looped": looped.update,
                              "qmix": lambda: qmix_update(qmix)}, args.repeats)
        t_batched, t_looped, t_qmix = t["batched"], t["looped"], t["qmix"]
        print("discrete, SMAC sizes: 32 episodes x 60 steps, 5 agents, obs 80, 12 actions, "
              f"state 120; median of {args.repeats} updates")
        print(row("CFCQL, batched counterfactuals   ", t_batched))
        print(row("CFCQL, per-agent loop (ref. code)", t_looped))
        print(row("plain QMIX                       ", t_qmix))
        print(f"  speed-up of batching: {t_looped / t_batched:.2f}x;  CFCQL cost over QMIX: "
              f"{t_batched / t_qmix:.2f}x\n")

    if not args.skip_continuous:
        info = task("mpe-synthetic", n=3, obs_dim=18, state_dim=54, action_dim=2, limit=25)
        data = synthetic_dataset(info, episodes=400, length=25)
        settings = dict(batch_size=1024, vae_steps=0, vae_hidden_dim=args.vae_hidden,
                        vae_samples=args.vae_samples)
        batched = CFCQLContinuous(info, data, CFCQLContinuous.Config(**settings))
        looped = LoopCFCQLContinuous(info, data, LoopCFCQLContinuous.Config(**settings))
        sampled = SampleLoopCFCQLContinuous(info, data,
                                            SampleLoopCFCQLContinuous.Config(**settings))
        plain = CFCQLContinuous(info, data, CFCQLContinuous.Config(**settings))
        check_same_continuous(batched, looped, sampled)
        # mean over whole rounds (1 critic+actor update, then 4 critic-only updates)
        per_round = batched.config.critic_updates_per_round
        timed = per_round * max(1, round(args.repeats / per_round))
        t = seconds_per_call({"batched": batched.update, "looped": looped.update,
                              "sampled": sampled.update, "plain": lambda: td_only_update(plain)},
                             timed, 1, statistics.mean)
        t_batched, t_looped, t_plain = t["batched"], t["looped"], t["plain"]
        t_sampled = t["sampled"]
        cfg = batched.config
        state = torch.randn(1024, 54)
        with torch.no_grad():
            acts = batched.actors(torch.randn(1024, 3, 18))
            t_lambda = seconds_per_call(
                {"lambda": lambda: batched.vae.log_prob(state, acts, cfg.vae_samples)}, 3)["lambda"]
        print("continuous, MPE sizes: 1024 transitions, 3 agents, obs 18, action 2, state 54; "
              f"M = {cfg.num_sampled_actions} x 3 sources; mean over {timed} updates")
        print(row("CFCQL, batched counterfactuals   ", t_batched))
        print(row("CFCQL, loop over agents x sources", t_looped))
        print(row("CFCQL, loop over agents x samples", t_sampled))
        print(row("without the CQL term (TD + actor)", t_plain))
        print(f"  of which lambda (VAE hidden {cfg.vae_hidden_dim}, L = {cfg.vae_samples}): "
              f"{t_lambda:.3f} s per update, in both CFCQL variants")
        excl_b, excl_l = t_batched - t_lambda, t_looped - t_lambda
        excl_s = t_sampled - t_lambda
        print(f"  speed-up of batching over the agent x sample loop: {t_sampled / t_batched:.2f}x "
              f"whole update, {excl_s / excl_b:.2f}x without lambda")
        print(f"  speed-up of batching over the agent x source loop: {t_looped / t_batched:.2f}x "
              f"whole update, {excl_l / excl_b:.2f}x without lambda;  CFCQL cost over TD-only: "
              f"{t_batched / t_plain:.2f}x ({excl_b / t_plain:.2f}x without lambda)")


if __name__ == "__main__":
    main()
