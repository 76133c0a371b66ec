"""Issue 20 item 5: where a continuous CFCQL run's actors go, against the data.

Trains CFCQL (``full`` settings) on a dataset and prints, at a few updates, on 4,096 dataset
states: how saturated the actors' actions are (|a| > 0.99) against the data's, their distance
from the data's actions, and the critic's Q of the actors' actions against Q of the data's.

    python scripts/actor_saturation.py mpe-pp-expert-v0 --updates 3000
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import marl_offline_bench as mob
from marl_offline_bench import build_algorithm
from marl_offline_bench.envs import task_info
from marl_offline_bench.registry import get_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = mob.load(args.dataset, progress=False)
    info = task_info(get_dataset(args.dataset).task_id)
    algo = build_algorithm("cfcql", info, data, protocol="full", seed=args.seed)
    rows = np.random.default_rng(0).choice(data.n_transitions, 4096, replace=False)
    obs, state, actions = (torch.as_tensor(data[k][rows])
                           for k in ("observations", "states", "actions"))
    print(f"data: |a| mean {actions.abs().mean():.3f}, "
          f"saturated {(actions.abs() > 0.99).float().mean():.2f}")
    checkpoints = {0, 50, 250, 1000, 2000, 3000, args.updates}
    for step in range(args.updates + 1):
        if step:
            algo.update()
        if step in checkpoints:
            with torch.no_grad():
                policy = algo.actors(obs)
                q_policy = algo.critic(state, policy.flatten(-2))[0].mean().item()
                q_data = algo.critic(state, actions.flatten(-2))[0].mean().item()
            print(f"update {step}: |pi| mean {policy.abs().mean():.3f}, saturated "
                  f"{(policy.abs() > 0.99).float().mean():.2f}, pi-data distance "
                  f"{(policy - actions).abs().mean():.3f}, Q(s, pi) {q_policy:.2f}, "
                  f"Q(s, a_data) {q_data:.2f}", flush=True)


if __name__ == "__main__":
    main()
