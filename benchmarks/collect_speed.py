"""Vectorised collection against a plain single-environment loop, per task.

The vectorised side is what ``marl-bench collect`` runs: :func:`marl_offline_bench.rollout`
on the task's vector engine with batched policy calls, recording every array. The plain side
steps one environment at a time with one policy call per step: for MPE random play that is
mpe2's own ``parallel_env`` loop, elsewhere the task's single PettingZoo env (on mpe2 for MPE).
The figures are environment steps (transitions) per second, measured in this run.

``--policy random`` plays uniform random actions on both sides. ``--policy expert`` runs the
shipped expert behaviour policy (what ``--quality expert`` collects with): batched over the
vector engine's episodes on one side, called once per step on a batch of one on the other.

Run: ``python benchmarks/collect_speed.py [--tasks equal_line-n6,mpe-cn,...] [--seconds 20]
[--policy random|expert]``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

TASKS = ["equal_line-n6", "mpe-cn", "mamujoco-halfcheetah_2x3", "smac-2s3z"]
EXPERT_TASKS = ["smac-2s3z", "mpe-world", "mamujoco-halfcheetah_2x3"]
TARGETS = {"equal_line": 1.8, "mpe": 20.0, "mamujoco": 1.8, "smac": 20.0}
EXPERT_TARGETS = {"equal_line": 1.8, "mpe": 20.0, "mamujoco": 1.8, "smac": 10.0}


def make_policy(kind: str, task_id: str, info):
    """A fresh policy of the kind asked for (random, or the shipped expert)."""
    import marl_offline_bench as mob

    if kind == "random":
        return mob.RandomPolicy(info, 0)
    from collection.behaviour import behaviour_policy, shipped_checkpoint

    return behaviour_policy(shipped_checkpoint(task_id, "expert"))


def plain_loop_mpe2(seconds: float) -> float:
    """mpe2's simple_spread, one env, a random 5-dim action per agent per step."""
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(max_cycles=25, continuous_actions=True)
    rng = np.random.default_rng(0)
    steps, start, seed = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        env.reset(seed=seed)
        seed += 1
        while env.agents:
            actions = {a: rng.random(5).astype(np.float32) for a in env.agents}
            env.step(actions)
            steps += 1
    return steps / (time.perf_counter() - start)


def plain_loop(task_id: str, seconds: float) -> float:
    """The task's single env, one random action dict per step."""
    import marl_offline_bench as mob

    env = mob.make_env(task_id)
    info = env.info
    rng = np.random.default_rng(0)
    steps, start, seed = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        _, infos = env.reset(seed=seed)
        seed += 1
        while env.agents:
            actions = {}
            for i, a in enumerate(env.agents):
                if info.discrete:
                    actions[a] = int(rng.choice(np.flatnonzero(infos[a]["avail_actions"])))
                else:
                    actions[a] = rng.uniform(-1, 1, info.action_dims[i]).astype(np.float32)
            _, _, _, _, infos = env.step(actions)
            steps += 1
    return steps / (time.perf_counter() - start)


def plain_loop_policy(task_id: str, seconds: float, kind: str) -> float:
    """The task's single env, the policy called on a batch of one at every step."""
    import marl_offline_bench as mob
    from marl_offline_bench.envs.base import pad_observations

    env = mob.make_env(task_id)
    info = env.info
    policy = make_policy(kind, task_id, info)
    steps, start, seed = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        obs, infos = env.reset(seed=seed)
        seed += 1
        if hasattr(policy, "reset"):
            policy.reset(1)
        while env.agents:
            # Agents that left the episode (dead SMAC units) act as padding.
            batch = pad_observations([np.asarray(obs.get(a, np.zeros(d)))[None] for a, d in
                                      zip(info.agent_ids, info.obs_dims)], info.obs_dim)
            avail = None
            if info.discrete:
                noop = np.eye(info.n_actions, dtype=bool)[0]
                avail = np.stack([infos[a]["avail_actions"] if a in infos else noop
                                  for a in info.agent_ids])[None]
            joint = policy(batch, avail)[0]
            actions = {a: (int(joint[i]) if info.discrete
                           else np.asarray(joint[i][: info.action_dims[i]], np.float32))
                       for i, a in enumerate(info.agent_ids) if a in env.agents}
            obs, _, _, _, infos = env.step(actions)
            steps += 1
    return steps / (time.perf_counter() - start)


def vectorised(task_id: str, seconds: float, kind: str = "random") -> tuple[float, int]:
    """rollout() of the policy on the vector engine, batches until the time is up."""
    import marl_offline_bench as mob
    from marl_offline_bench.collect import DEFAULT_NUM_ENVS

    family = task_id.split("-")[0]
    num_envs = DEFAULT_NUM_ENVS[family]
    env = mob.make_vec_env(task_id, num_envs)
    policy = make_policy(kind, task_id, env.info)
    mob.rollout(env, policy, num_envs, seed=999)  # compile / warm up outside the clock
    steps, start, batch = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        data = mob.rollout(env, policy, num_envs, seed=batch)
        steps += data.n_transitions
        batch += 1
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate, num_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None,
                        help=f"comma list (default: {','.join(TASKS)} for random play, "
                             f"{','.join(EXPERT_TASKS)} for the expert)")
    parser.add_argument("--seconds", type=float, default=20.0, help="wall time per side")
    parser.add_argument("--policy", choices=["random", "expert"], default="random")
    args = parser.parse_args()
    tasks = args.tasks.split(",") if args.tasks else \
        (TASKS if args.policy == "random" else EXPERT_TASKS)
    targets = TARGETS if args.policy == "random" else EXPERT_TARGETS
    rows = []
    print(f"policy: {args.policy}")
    for task_id in tasks:
        family = task_id.split("-")[0]
        fast, num_envs = vectorised(task_id, args.seconds, args.policy)
        if args.policy == "random" and task_id == "mpe-cn":
            slow, baseline = plain_loop_mpe2(args.seconds), "mpe2 parallel_env loop"
        elif args.policy == "random":
            slow, baseline = plain_loop(task_id, args.seconds), "single env loop"
        else:
            slow = plain_loop_policy(task_id, args.seconds, args.policy)
            baseline = "single env loop, policy per step"
        rows.append((task_id, fast, num_envs, slow, baseline, fast / slow, targets[family]))
        print(f"{task_id}: vectorised {fast:,.0f} steps/s (num_envs={num_envs}), "
              f"{baseline} {slow:,.0f} steps/s -> {fast / slow:.1f}x "
              f"(target {targets[family]}x)", flush=True)
    print("\n| task | vectorised steps/s | plain loop steps/s | ratio | target |")
    print("|---|---|---|---|---|")
    for task_id, fast, n, slow, baseline, ratio, target in rows:
        print(f"| {task_id} | {fast:,.0f} (B={n}) | {slow:,.0f} ({baseline}) | {ratio:.1f}x | {target}x |")


if __name__ == "__main__":
    main()
