"""Evaluation protocols: how long a run trains, on what batch, and how it is evaluated.

Four protocols, after OG-MARL and CORL:

* ``smoke``: seconds, for tests and CI.
* ``quick``: what a 2-core CPU affords over every dataset (1000 updates, CPU-sized batches).
  It is budget-bound: a Q-driven learner has not converged after 1000 updates, so tables built
  from it say so.
* ``full``: the reference code's budget, task by task (:data:`REFERENCE`), each number with
  the line of the authors' code it comes from.
* ``tenth``: ``full``'s settings for a tenth of its updates, curve points as dense. For a task
  whose ``full`` run is a cluster job (HalfCheetah: about 22 hours on a 2-core CPU), it shows
  where the curve heads; its records sit in their own tables, beside ``full``'s, never in them.

An *update* is one call of an algorithm's ``update()``: one critic step for the continuous
learners (a round of the reference code is one critic+actor step and four critic-only steps),
one gradient step on a batch of episodes for the discrete ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .registry import episode_limit, get_dataset, recorded_statistics

__all__ = ["Budget", "PROTOCOLS", "ReferenceTask", "REFERENCE", "DISCRETE_T_MAX",
           "protocol_budget", "reference_task", "reference_overrides", "budget_source",
           "BUDGET_BOUND", "FRACTION_OF_FULL"]


@dataclass(frozen=True)
class Budget:
    """How long one run trains and how it is evaluated.

    Attributes:
        updates: calls to ``update()``.
        eval_every: updates between evaluations of the learning curve.
        eval_episodes: episodes per learning-curve evaluation (32 after OG-MARL).
        final_episodes: episodes of the final evaluation (10x, capped where episodes are long).
    """

    updates: int
    eval_every: int
    eval_episodes: int
    final_episodes: int

    def __post_init__(self) -> None:
        for name in ("updates", "eval_every", "eval_episodes", "final_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Budget.{name} must be positive, got {getattr(self, name)}")

    def describe(self) -> str:
        return (f"{self.updates:,} updates, evaluation every {self.eval_every:,} updates on "
                f"{self.eval_episodes} episodes, final evaluation on {self.final_episodes} "
                "episodes")


_FAMILIES = ("equal_line", "mpe", "mamujoco", "smac")

#: protocol -> family -> budget, for the protocols whose budget is the same on a whole family.
#: MaMuJoCo's 1000-step episodes cap its final evaluation at 100 episodes.
PROTOCOLS: dict[str, dict[str, Budget]] = {
    "smoke": {f: Budget(50, 25, 4, 40) for f in _FAMILIES},
    "quick": {f: Budget(1_000, 250, 32, 100 if f == "mamujoco" else 320) for f in _FAMILIES},
    "full": {},  # per task and dataset: see REFERENCE and protocol_budget()
    "tenth": {},  # full's, divided: see FRACTION_OF_FULL
}

#: The protocols that train with the reference code's settings, and the share of its updates
#: each runs.
FRACTION_OF_FULL: dict[str, int] = {"full": 1, "tenth": 10}

#: What every table built from ``quick`` says about itself.
BUDGET_BOUND = ("`quick` is budget-bound: 1,000 updates on CPU-sized batches, a tenth to a "
                "five-hundredth of the reference code's budget. A Q-driven learner has not "
                "converged by then; a learner with a behaviour-cloning term has. Read its "
                "columns as what 1,000 updates reach, not as the algorithms' standing.")

#: pymarl's t_max for CFCQL's offline runs (discrete/src/config/algs/cql_qmix.yaml `t_max:
#: 10050000`; it overrides envs/sc2.yaml's 5050000 because main.py merges the algorithm config
#: last). run.py's offline loop adds the filled steps of each 128-episode batch to t_env and
#: runs `while runner.t_env <= args.t_max`, so a dataset whose episodes average L steps gets
#: floor(t_max / (128 L)) + 1 updates.
DISCRETE_T_MAX = 10_050_000


@dataclass(frozen=True)
class ReferenceTask:
    """The reference code's training budget and settings on one task.

    Attributes:
        task_id: the registry's task.
        updates: critic updates (continuous), or None where they follow from the dataset
            (discrete: :data:`DISCRETE_T_MAX` over the batch's steps).
        eval_every: updates between learning-curve evaluations (ours; the code's interval in
            comments).
        final_episodes: episodes of the final evaluation.
        settings: config fields the reference code sets on this task; an algorithm takes those
            its config has.
        source: where each number comes from in github.com/thu-rllab/CFCQL.
    """

    task_id: str
    updates: int | None
    eval_every: int
    final_episodes: int
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    source: str = ""


_MPE_SOURCE = (
    "continuous/main.py: num_steps={steps} ({why}), steps_per_update={every} ({every_why}), one "
    "round per {every} steps (`if (t % config.steps_per_update) < config.n_rollout_threads`, "
    "n_rollout_threads=1) for t in range(num_steps + 1): {rounds:,} rounds x ca_ratio=5 (one "
    "critic+actor update, four critic-only) = {updates:,} critic updates; batch_size=1024 "
    "(argparse default); lr {lr} ({lr_why}); continuous/algorithms/maddpg_cc.py (and maddpg.py "
    "for the independent critics): off MaMuJoCo the CQL term draws num_sampled_actions=10 "
    "uniform actions only")


def _mpe(task_id: str, steps: int, why: str, every: int, every_why: str, lr: float,
         lr_why: str) -> ReferenceTask:
    rounds = steps // every + 1
    updates = 5 * rounds
    return ReferenceTask(
        task_id, updates, eval_every=updates // 20, final_episodes=320,
        settings=dict(batch_size=1024, transition_batch_size=1024, lr=lr, hidden_dim=64,
                      target_rate=0.01, gamma=0.95, critic_updates_per_round=5,
                      num_sampled_actions=10, policy_samples=False),
        source=_MPE_SOURCE.format(steps=f"{steps:,}", why=why, every=every, every_why=every_why,
                                  rounds=rounds, updates=updates, lr=lr, lr_why=lr_why))


_DISCRETE_SOURCE = (
    "discrete/src/config/algs/cql_qmix.yaml: t_max 10050000, batch_size 128 (episodes), lr 0.001, "
    "td_lambda 0.6, target_update_interval 200 episodes (8 per update with batch_size_run 8: "
    "every 25 updates); discrete/src/run/run.py: t_env grows by each batch's filled steps, "
    "`while runner.t_env <= args.t_max`: floor(10050000 / (128 x mean episode length)) + 1 "
    "updates")

#: The reference code's budget per task (what ``full`` means).
REFERENCE: dict[str, ReferenceTask] = {
    "mpe-cn": _mpe("mpe-cn", 200_000, "`if config.env_id in ['simple_spread', 'simple_tag']: "
                   "config.num_steps = 200000`", 100, "argparse default", 0.01,
                   "`if config.env_id == 'simple_spread': config.lr=0.01`"),
    "mpe-pp": _mpe("mpe-pp", 200_000, "`config.num_steps = 200000` for simple_tag", 100,
                   "argparse default", 1e-3, "argparse default"),
    "mpe-world": _mpe("mpe-world", 100_000, "argparse default int(1e5)", 20,
                      "`elif config.env_id == 'simple_world': config.steps_per_update=20`", 1e-3,
                      "argparse default"),
    "mamujoco-halfcheetah_2x3": ReferenceTask(
        "mamujoco-halfcheetah_2x3", 500_005, eval_every=25_000, final_episodes=100,
        settings=dict(batch_size=256, transition_batch_size=256, lr=3e-4, hidden_dim=256,
                      target_rate=0.005, gamma=0.95, critic_updates_per_round=5,
                      num_sampled_actions=10, policy_samples=True),
        source=("continuous/main.py: for HalfCheetah-v2 num_steps=int(1e6), steps_per_update=10: "
                "100,001 rounds x ca_ratio 5 = 500,005 critic updates; batch_size=256, "
                "hidden_dim=256, lr=0.0003, tau=0.005 (gamma=0.99 is set on the config but never "
                "passed to MATD3CC.init_from_env, whose default 0.95 is used); "
                "maddpg_cc.py: on MaMuJoCo the CQL term draws from three sources (uniform, "
                "around pi at s, around pi at s')")),
    **{f"equal_line-n{n}": ReferenceTask(
        f"equal_line-n{n}", None, eval_every=100, final_episodes=320,
        settings=dict(batch_size=128, episode_batch_size=128), source=_DISCRETE_SOURCE) for n in (2, 4, 6, 8, 10)},
    **{f"smac-{m}": ReferenceTask(
        f"smac-{m}", None, eval_every=100, final_episodes=320,
        settings=dict(batch_size=128, episode_batch_size=128), source=_DISCRETE_SOURCE) for m in ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")},
}


def reference_task(dataset_id: str) -> ReferenceTask:
    """The reference budget of a dataset's task.

    Raises:
        KeyError: the task has no reference budget (the message names the task).
    """
    task_id = get_dataset(dataset_id).task_id
    if task_id not in REFERENCE:
        raise KeyError(f"task {task_id!r} has no reference budget; protocol 'full' covers "
                       f"{', '.join(sorted(REFERENCE))}.")
    return REFERENCE[task_id]


def _mean_episode_length(dataset_id: str) -> tuple[float, str]:
    """Mean episode length of the dataset's canonical build, and where it was read."""
    entry = get_dataset(dataset_id)
    stats = (recorded_statistics(dataset_id) or {}).get("statistics") or {}
    if stats.get("episodes") and stats.get("transitions"):
        return stats["transitions"] / stats["episodes"], "the canonical build's statistics"
    return float(episode_limit(entry.task.family)), "the episode limit (no canonical statistics)"


def protocol_budget(protocol: str, dataset_id: str) -> Budget:
    """The budget of ``protocol`` on a dataset.

    ``full`` is per task (continuous: the reference code's critic updates) or per dataset
    (discrete: :data:`DISCRETE_T_MAX` environment steps at 128 episodes per update); ``tenth``
    divides its updates and its curve interval by ten, rounding up.

    Raises:
        ValueError: an unknown protocol.
        KeyError: an unknown dataset id, or a task without a reference budget.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}.")
    if protocol not in FRACTION_OF_FULL:
        return PROTOCOLS[protocol][get_dataset(dataset_id).task.family]
    ref = reference_task(dataset_id)
    updates = ref.updates
    if updates is None:
        length, _ = _mean_episode_length(dataset_id)
        updates = math.floor(DISCRETE_T_MAX / (ref.settings["batch_size"] * length)) + 1
    share = FRACTION_OF_FULL[protocol]
    updates, eval_every = math.ceil(updates / share), math.ceil(ref.eval_every / share)
    return Budget(updates, min(eval_every, updates), 32, ref.final_episodes)


def budget_source(protocol: str, dataset_id: str) -> str:
    """Where a run's budget comes from, in words, for its record."""
    if protocol not in FRACTION_OF_FULL:
        return f"protocol {protocol!r} (marl_offline_bench.protocols.PROTOCOLS)"
    ref = reference_task(dataset_id)
    source = ref.source
    if ref.updates is None:
        length, where = _mean_episode_length(dataset_id)
        source = f"{source}; mean episode length {length:.2f} from {where}"
    share = FRACTION_OF_FULL[protocol]
    return source if share == 1 else f"1/{share} of the updates of protocol 'full': {source}"


def reference_overrides(protocol: str | None, dataset_id: str,
                        names: tuple[str, ...]) -> dict[str, Any]:
    """The reference code's settings of a dataset's task, those among ``names``.

    ``names`` are the settings an algorithm declares it takes from the reference code (its
    ``reference_settings``): the same name can mean another thing in a learner that is not
    built on that code (MAICQ's ``batch_size`` counts windows). Empty except under ``full`` and
    ``tenth``: the other protocols keep each algorithm's own defaults and per-dataset table.
    """
    if protocol not in FRACTION_OF_FULL:
        return {}
    return {k: v for k, v in reference_task(dataset_id).settings.items() if k in names}
