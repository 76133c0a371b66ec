"""Issue 20 item 5: does a continuous learner's critic see its failed episodes?

Replays a kept actor-critic learner and a kept reference learner (``marl-bench evaluate
--keep-learners``, same dataset and seed) on the seed's final starts. Along the learner's own
episodes, its critic rates its actors' joint action and the reference's joint action in the same
states. Over the learner's worst tenth of starts against the reference and over the rest, it
prints:

- how often, and by how much, the critic prefers the learner's action;
- the critic's Q of the learner's action, beside the episodes' mean normalised score, and what
  the learner's episodes then returned from each step (the discounted return-to-go, under the
  learner's gamma and reward) and Q's excess over it. Every episode runs to the time limit,
  where Q still counts the rewards beyond it and the return-to-go does not, so the excess is
  biased upward alike in both groups: a critic that sees the failure overrates the failed
  episodes no more than the others;
- how far the two joint actions lie apart (the mean absolute difference per action component).

A critic that prefers its own action and gives the failed episodes the Q it gives the others
does not see the failure: the actors climb a critic that is wrong in those states. A critic
that prefers the reference's action there points at the actors instead.

    python scripts/critic_on_failures.py LEARNERS/cfcql/mpe-cn-expert-v0/seed0.pt \\
        LEARNERS/bc/mpe-cn-expert-v0/seed0.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import marl_offline_bench as mob
from marl_offline_bench.leaderboard import markdown_table
from marl_offline_bench.runstore import FileCheckpoints
from marl_offline_bench.training import FINAL_SEED


def acting_steps(arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each acting step's observations (N, n, o) and state (N, S), and its episode (N,)."""
    starts = arrays.episode_starts
    lengths = np.diff(starts)
    # episode e's T_e + 1 observations begin at starts[e] + e; its acting steps are the first T_e
    rows = np.concatenate([np.arange(s + e, s + e + t) for e, (s, t) in
                           enumerate(zip(starts[:-1], lengths))])
    return arrays.obs[rows], arrays.states[rows], np.repeat(np.arange(len(lengths)), lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learner", type=Path, help="a kept learner with actors and a critic")
    parser.add_argument("reference", type=Path, help="a kept learner of the same dataset and seed")
    args = parser.parse_args()
    runs = [FileCheckpoints(path).load() or {} for path in (args.learner, args.reference)]
    names = [(run.get("dataset_id"), run.get("seed")) for run in runs]
    if None in names[0] or names[0] != names[1]:
        raise SystemExit(f"need two kept learners of one dataset and seed, got {names}; "
                         f"`marl-bench evaluate --keep-learners` keeps them")
    dataset_id, seed = names[0]
    learner, reference = mob.load_learner(args.learner), mob.load_learner(args.reference)
    if not (hasattr(learner, "actors") and hasattr(learner, "critic")):
        raise SystemExit(f"{args.learner} is a {runs[0]['algo']} learner without actors and a "
                         f"critic to read")
    episodes = mob.protocol_budget(runs[0]["protocol"], dataset_id).final_episodes
    with torch.no_grad():
        mine, theirs = (mob.play_episodes(run.policy(), dataset_id, episodes, FINAL_SEED + seed)
                        for run in (learner, reference))
    score = {name: mob.normalized_score(dataset_id, arrays.episode_returns())
             for name, arrays in (("mine", mine), ("theirs", theirs))}
    order = np.argsort(score["mine"] - score["theirs"])
    worst = np.zeros(episodes, bool)
    worst[order[:episodes // 10]] = True

    obs, state, episode = acting_steps(mine)
    config = learner.config
    reward_agent = getattr(config, "reward_agent", None)
    returns_to_go = mine.returns_to_go(config.gamma, None if reward_agent is None
                                       else mine.agent_rewards[:, reward_agent])
    with torch.no_grad():
        obs_t, state_t = torch.as_tensor(obs), torch.as_tensor(state)
        own = learner.actors(obs_t)
        other = torch.as_tensor(np.asarray(reference.policy()(obs, None)), dtype=own.dtype)
        q_own = learner.critic(state_t, own.flatten(1))[0].numpy()
        q_other = learner.critic(state_t, other.flatten(1))[0].numpy()
        apart = (own - other).abs().mean((1, 2)).numpy()
    rows = []
    for label, on in ((f"worst tenth against {runs[1]['algo']}", worst), ("the rest", ~worst)):
        steps = on[episode]
        rows.append({"starts": label, "episodes' score": score["mine"][on].mean(),
                     "% steps the critic prefers its own action":
                         100 * (q_own[steps] > q_other[steps]).mean(),
                     "Q(own) - Q(other)": (q_own[steps] - q_other[steps]).mean(dtype=np.float64),
                     "Q(own)": q_own[steps].mean(dtype=np.float64),
                     "return-to-go": returns_to_go[steps].mean(),
                     "Q(own) - return-to-go": (q_own[steps] - returns_to_go[steps]).mean(),
                     "action distance": apart[steps].mean(dtype=np.float64)})
    print(f"{runs[0]['algo']} against {runs[1]['algo']} on {dataset_id}, seed {seed}, "
          f"along {runs[0]['algo']}'s {episodes} final episodes\n")
    print(markdown_table(pd.DataFrame(rows).round(2)))


if __name__ == "__main__":
    main()
