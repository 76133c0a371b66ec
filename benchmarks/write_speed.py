"""Our HDF5 writer against Minari's ``create_dataset_from_buffers`` on the same episodes.

Reports time and bytes on disk for both, and bytes relative to the raw array bytes.
Run: ``python benchmarks/write_speed.py`` (``--dataset`` to pick another one).
"""
from __future__ import annotations

import argparse
import shutil

import numpy as np

from _common import dir_bytes, scratch_minari_root, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mpe-cn-random-v0")
    args = parser.parse_args()
    root = scratch_minari_root("write-speed-")

    import minari
    from minari.data_collector import EpisodeBuffer

    import marl_offline_bench as mob
    from marl_offline_bench import storage
    from marl_offline_bench.envs import task_info

    entry = mob.get_dataset(args.dataset)
    if not storage.is_built(entry.minari_id):
        print(f"building {args.dataset} under {root} ...")
        mob.collect_dataset(args.dataset)
    data = mob.load(args.dataset, build=False, progress=False).episodes_data
    info = task_info(entry.task_id)
    raw = sum(a.nbytes for k, a in data.arrays().items() if k not in ("seeds", "episode_starts"))

    t: dict[str, float] = {}
    ours_id = f"marl-bench-bench/{entry.task_id}/ours-v0"
    with timed(t, "ours"):
        path = storage.write_dataset(ours_id, info, data, {"benchmark": True}, overwrite=True)
    ours_bytes = dir_bytes(path / "data")

    obs_space, act_space = storage.dataset_spaces(info)
    buffers = []
    for k, ep in enumerate(mob.MARLDataset(data, args.dataset, entry.task_id, {},
                                           info.obs_mask, info.action_mask).episodes()):
        observations = {a: ep["observations"][:, i, : info.obs_dims[i]]
                        for i, a in enumerate(info.agent_ids)}
        observations["state"] = ep["states"]
        if info.discrete:
            observations["avail_actions"] = ep["avail_actions"].astype(np.int8)
            actions = {a: ep["actions"][:, i] for i, a in enumerate(info.agent_ids)}
        else:
            actions = {a: ep["actions"][:, i, : info.action_dims[i]]
                       for i, a in enumerate(info.agent_ids)}
        buffers.append(EpisodeBuffer(id=k, observations=observations, actions=actions,
                                     rewards=ep["rewards"], terminations=ep["terminals"],
                                     truncations=ep["timeouts"],
                                     infos={"agent_rewards": ep["agent_rewards"]}))
    theirs_id = f"marl-bench-bench/{entry.task_id}/minari-v0"
    shutil.rmtree(storage.dataset_dir(theirs_id), ignore_errors=True)
    with timed(t, "minari"):
        made = minari.create_dataset_from_buffers(
            theirs_id, buffers, observation_space=obs_space, action_space=act_space,
            algorithm_name="benchmark", code_permalink="benchmarks/write_speed.py",
            author="marl-bench", author_email="none@example.org", data_format="hdf5")
    theirs_bytes = dir_bytes(made.spec.data_path)
    print(f"dataset: {args.dataset}: {data.n_episodes} episodes, {data.n_transitions} transitions, "
          f"raw array bytes {raw / 1e6:.1f} MB")
    print(f"ours  : {t['ours']:.1f} s, {ours_bytes / 1e6:.1f} MB ({ours_bytes / raw:.2f}x raw)")
    print(f"minari: {t['minari']:.1f} s, {theirs_bytes / 1e6:.1f} MB ({theirs_bytes / raw:.2f}x raw)")
    print(f"speed-up {t['minari'] / t['ours']:.1f}x (target >= 5x); "
          f"size ratio ours {ours_bytes / raw:.2f}x raw (target <= 1.3x)")


if __name__ == "__main__":
    main()
