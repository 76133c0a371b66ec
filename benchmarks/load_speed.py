"""load() of a >= 1M-transition random MPE CN dataset against Minari's own episode API.

Both sides end with the same thing in memory: every episode's per-agent observations, state,
actions, rewards and ends as numpy arrays. Run: ``python benchmarks/load_speed.py``
(``--dataset`` to pick another built or buildable dataset).
"""
from __future__ import annotations

import argparse

import numpy as np

from _common import scratch_minari_root, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mpe-cn-random-v0")
    args = parser.parse_args()
    root = scratch_minari_root("load-speed-")

    import minari

    import marl_offline_bench as mob
    from marl_offline_bench import storage

    entry = mob.get_dataset(args.dataset)
    if not storage.is_built(entry.minari_id):
        print(f"building {args.dataset} under {root} ...")
        mob.collect_dataset(args.dataset)
    t: dict[str, float] = {}
    with timed(t, "load_first"):
        data = mob.load(args.dataset, build=False, progress=False)
        _ = data["observations"], data["next_observations"], data["states"], data["next_states"]
    warm = []
    for _ in range(3):
        with timed(t, "load_warm"):
            data = mob.load(args.dataset, build=False, progress=False)
            _ = data["observations"], data["next_observations"], data["states"], data["next_states"]
        warm.append(t["load_warm"])
    t["load_warm"] = min(warm)
    agents = list(data.card.get("agent_ids") or mob.make_env(data.task_id).possible_agents)
    with timed(t, "minari"):
        dataset = minari.load_dataset(entry.minari_id)
        obs, acts, rews = [], [], []
        for episode in dataset.iterate_episodes():
            obs.append(np.stack([episode.observations[a] for a in agents], 1))
            acts.append(np.stack([episode.actions[a] for a in agents], 1))
            rews.append(episode.rewards)
        obs, acts, rews = np.concatenate(obs), np.concatenate(acts), np.concatenate(rews)
    assert len(rews) == data.n_transitions
    print(f"dataset: {args.dataset}: {data.n_episodes} episodes, {data.n_transitions} transitions")
    print(f"load() first call (checksum + cache): {t['load_first']:.2f} s")
    print(f"load() warm, best of 3:               {t['load_warm']:.2f} s "
          f"({', '.join(f'{w:.2f}' for w in warm)})")
    print(f"minari iterate_episodes:              {t['minari']:.2f} s")
    print(f"ratio minari / load() warm: {t['minari'] / t['load_warm']:.1f}x  (target >= 20x, warm < 2 s)")


if __name__ == "__main__":
    main()
