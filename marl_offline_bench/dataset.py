"""The in-memory form of a dataset: :class:`MARLDataset`, its episode views and batch sampler.

Storage keeps each episode's T + 1 observations (the last one is the final observation), as
Minari does; :class:`EpisodeArrays` holds exactly that, concatenated over episodes. The
transition view (``observations`` / ``next_observations``) is derived from it, so no transition
ever crosses an episode boundary.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np


@dataclass
class EpisodeArrays:
    """Episodes concatenated along the first axis (E episodes, N transitions).

    Attributes:
        obs: [N + E, n_agents, obs_dim] float32, each episode's T + 1 observations.
        states: [N + E, state_dim] float32.
        avail_actions: [N + E, n_agents, n_actions] bool, or None (continuous tasks).
        actions: [N, n_agents] int64, or [N, n_agents, action_dim] float32.
        rewards: [N] float32 team reward.
        agent_rewards: [N, n_agents] float32.
        terminals: [N] bool, a real end of the episode.
        timeouts: [N] bool, the time limit.
        won: [N] bool (SMAC, true on a won episode's last step), or None.
        episode_starts: [E + 1] int64 offsets into the transition axis.
        seeds: [E] int64, the seed of each episode's batch.
    """

    obs: np.ndarray
    states: np.ndarray
    avail_actions: np.ndarray | None
    actions: np.ndarray
    rewards: np.ndarray
    agent_rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    won: np.ndarray | None
    episode_starts: np.ndarray
    seeds: np.ndarray

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts) - 1

    @property
    def n_transitions(self) -> int:
        return int(self.episode_starts[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.episode_starts)

    def transition_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Row indices into ``obs`` of each transition's observation and next observation."""
        episode_of_step = np.repeat(np.arange(self.n_episodes), self.lengths)
        rows = np.arange(self.n_transitions) + episode_of_step
        return rows, rows + 1

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.episode_starts[:-1]) if self.n_episodes else \
            np.zeros(0, np.float32)

    def episode_won(self) -> np.ndarray | None:
        if self.won is None:
            return None
        return np.logical_or.reduceat(self.won, self.episode_starts[:-1])

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def concatenate(cls, parts: list["EpisodeArrays"]) -> "EpisodeArrays":
        if not parts:
            raise ValueError("no episodes to concatenate")
        offsets = np.cumsum([0] + [p.n_transitions for p in parts[:-1]])
        starts = np.concatenate(
            [p.episode_starts[:-1] + o for p, o in zip(parts, offsets)]
            + [[offsets[-1] + parts[-1].n_transitions]]
        ).astype(np.int64)
        def cat(name):
            first = getattr(parts[0], name)
            return None if first is None else np.concatenate([getattr(p, name) for p in parts])
        values = {f.name: cat(f.name) for f in fields(cls) if f.name != "episode_starts"}
        return cls(episode_starts=starts, **values)

    def select_episodes(self, index: np.ndarray) -> "EpisodeArrays":
        """A new EpisodeArrays with the given episodes, in the given order."""
        index = np.asarray(index, np.int64)
        lengths = self.lengths[index]
        starts = self.episode_starts[index]
        step_rows = np.concatenate([np.arange(s, s + l) for s, l in zip(starts, lengths)]) \
            if len(index) else np.zeros(0, np.int64)
        obs_starts = starts + index
        obs_rows = np.concatenate([np.arange(s, s + l + 1) for s, l in zip(obs_starts, lengths)]) \
            if len(index) else np.zeros(0, np.int64)
        def take(name, rows):
            value = getattr(self, name)
            return None if value is None else value[rows]
        return EpisodeArrays(
            obs=take("obs", obs_rows), states=take("states", obs_rows),
            avail_actions=take("avail_actions", obs_rows),
            actions=take("actions", step_rows), rewards=take("rewards", step_rows),
            agent_rewards=take("agent_rewards", step_rows),
            terminals=take("terminals", step_rows), timeouts=take("timeouts", step_rows),
            won=take("won", step_rows),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            seeds=self.seeds[index],
        )


class EpisodeBatch(NamedTuple):
    """Episodes padded to a common length T for recurrent learners.

    ``obs``, ``states`` and ``avail_actions`` carry T + 1 steps (the last is the observation
    after the final action); the rest carry T. ``mask`` [B, T] is true on real steps.
    """

    obs: np.ndarray            # (B, T+1, n_agents, obs_dim)
    states: np.ndarray         # (B, T+1, state_dim)
    avail_actions: np.ndarray | None  # (B, T+1, n_agents, n_actions)
    actions: np.ndarray        # (B, T, n_agents) or (B, T, n_agents, action_dim)
    rewards: np.ndarray        # (B, T)
    terminals: np.ndarray      # (B, T)
    mask: np.ndarray           # (B, T)


class MARLDataset(Mapping):
    """A multi-agent offline dataset, read like D4RL's dict: ``dataset["observations"]``.

    Keys: ``observations``, ``next_observations`` [N, n_agents, obs_dim]; ``states``,
    ``next_states`` [N, state_dim]; ``actions``; ``avail_actions`` and ``next_avail_actions``
    [N, n_agents, n_actions] (discrete tasks); ``rewards`` [N] (team); ``agent_rewards``;
    ``terminals`` and ``timeouts`` [N] (never merged); ``episode_starts`` [E + 1]; ``won``
    (SMAC); ``obs_mask`` / ``action_mask`` for agents of different sizes.

    Attributes:
        dataset_id: the registry id.
        task_id: the task the data came from (``marl_offline_bench.make_env(task_id)``).
        card: the dataset's metadata: recipe, statistics, reference scores, engine, checksum.
        episodes_data: the underlying :class:`EpisodeArrays`.
    """

    def __init__(self, episodes: EpisodeArrays, dataset_id: str, task_id: str,
                 card: dict[str, Any], obs_mask: np.ndarray, action_mask: np.ndarray | None):
        self.episodes_data = episodes
        self.dataset_id = dataset_id
        self.task_id = task_id
        self.card = card
        self._derived: dict[str, np.ndarray] = {}
        self._static = {"obs_mask": obs_mask}
        if action_mask is not None:
            self._static["action_mask"] = action_mask

    # -- the D4RL-style mapping ----------------------------------------------------------
    def _keys(self) -> list[str]:
        e = self.episodes_data
        keys = ["observations", "next_observations", "states", "next_states", "actions"]
        if e.avail_actions is not None:
            keys += ["avail_actions", "next_avail_actions"]
        keys += ["rewards", "agent_rewards", "terminals", "timeouts", "episode_starts"]
        if e.won is not None:
            keys.append("won")
        return keys + list(self._static)

    def __getitem__(self, key: str) -> np.ndarray:
        e = self.episodes_data
        if key in self._static:
            return self._static[key]
        direct = {"actions": e.actions, "rewards": e.rewards, "agent_rewards": e.agent_rewards,
                  "terminals": e.terminals, "timeouts": e.timeouts,
                  "episode_starts": e.episode_starts, "won": e.won}
        if key in direct and direct[key] is not None:
            return direct[key]
        paired = {"observations": ("obs", 0), "next_observations": ("obs", 1),
                  "states": ("states", 0), "next_states": ("states", 1),
                  "avail_actions": ("avail_actions", 0),
                  "next_avail_actions": ("avail_actions", 1)}
        if key in paired and getattr(e, paired[key][0]) is not None:
            if key not in self._derived:
                rows = e.transition_rows()[paired[key][1]]
                self._derived[key] = getattr(e, paired[key][0])[rows]
            return self._derived[key]
        raise KeyError(f"{self.dataset_id} has no key {key!r}; keys: {', '.join(self._keys())}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        e = self.episodes_data
        return (f"MARLDataset({self.dataset_id!r}: {e.n_episodes} episodes, "
                f"{e.n_transitions} transitions, {e.obs.shape[1]} agents)")

    # -- sizes and episode views ---------------------------------------------------------
    @property
    def n_transitions(self) -> int:
        return self.episodes_data.n_transitions

    @property
    def n_episodes(self) -> int:
        return self.episodes_data.n_episodes

    @property
    def n_agents(self) -> int:
        return int(self.episodes_data.obs.shape[1])

    def episode_returns(self) -> np.ndarray:
        return self.episodes_data.episode_returns()

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Each episode as a dict of array views (``observations`` has T + 1 rows)."""
        e = self.episodes_data
        for k in range(e.n_episodes):
            s, t = int(e.episode_starts[k]), int(e.episode_starts[k + 1])
            episode = {
                "observations": e.obs[s + k: t + k + 1], "states": e.states[s + k: t + k + 1],
                "actions": e.actions[s:t], "rewards": e.rewards[s:t],
                "agent_rewards": e.agent_rewards[s:t],
                "terminals": e.terminals[s:t], "timeouts": e.timeouts[s:t],
            }
            if e.avail_actions is not None:
                episode["avail_actions"] = e.avail_actions[s + k: t + k + 1]
            if e.won is not None:
                episode["won"] = e.won[s:t]
            yield episode

    def episode_batch(self, index: np.ndarray, max_len: int | None = None) -> EpisodeBatch:
        """Episodes ``index`` padded to ``max_len`` (default: the longest among them)."""
        e = self.episodes_data
        index = np.asarray(index, np.int64)
        starts, lengths = e.episode_starts[index], e.lengths[index]
        horizon = int(max_len or lengths.max())
        t = np.arange(horizon)
        mask = t[None, :] < lengths[:, None]                                   # (B, T)
        step_rows = np.where(mask, starts[:, None] + t[None, :], 0)
        t1 = np.arange(horizon + 1)
        obs_rows = starts[:, None] + index[:, None] + np.minimum(t1[None, :], lengths[:, None])
        def pad(values, rows, valid):
            out = values[rows]
            out[~valid] = 0
            return out
        obs_valid = t1[None, :] <= lengths[:, None]
        return EpisodeBatch(
            obs=pad(e.obs, obs_rows, obs_valid),
            states=pad(e.states, obs_rows, obs_valid),
            avail_actions=None if e.avail_actions is None else _pad_avail(e.avail_actions[obs_rows], obs_valid),
            actions=pad(e.actions, step_rows, mask),
            rewards=pad(e.rewards, step_rows, mask),
            terminals=pad(e.terminals, step_rows, mask),
            mask=mask,
        )

    def sampler(self, batch_size: int, kind: str = "transitions", seed: int = 0,
                device: str = "cpu", max_len: int | None = None) -> "BatchSampler":
        """An endless iterator of torch batches (see :class:`BatchSampler`)."""
        return BatchSampler(self, batch_size, kind, seed, device, max_len)


def _pad_avail(avail: np.ndarray, valid: np.ndarray) -> np.ndarray:
    # Padding steps get "every action available" so masked maxima stay finite.
    avail[~valid] = True
    return avail


class BatchSampler:
    """Draws random batches as dicts of torch tensors, gathering only the rows it needs.

    ``kind="transitions"`` yields the D4RL keys for ``batch_size`` transitions;
    ``kind="episodes"`` yields an :class:`EpisodeBatch` of ``batch_size`` episodes as tensors.
    """

    def __init__(self, dataset: MARLDataset, batch_size: int, kind: str, seed: int,
                 device: str, max_len: int | None):
        if kind not in ("transitions", "episodes"):
            raise ValueError(f"kind must be 'transitions' or 'episodes', got {kind!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        import torch

        self._torch = torch
        self.dataset, self.batch_size, self.kind = dataset, batch_size, kind
        self.device, self.max_len = device, max_len
        self.rng = np.random.default_rng(seed)
        e = dataset.episodes_data
        self._rows = e.transition_rows() if kind == "transitions" else None

    def __iter__(self) -> "BatchSampler":
        return self

    def _tensor(self, array: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def __next__(self) -> dict[str, Any]:
        e = self.dataset.episodes_data
        if self.kind == "episodes":
            index = self.rng.integers(0, e.n_episodes, self.batch_size)
            batch = self.dataset.episode_batch(index, self.max_len)
            return {k: self._tensor(v) for k, v in batch._asdict().items() if v is not None}
        pick = self.rng.integers(0, e.n_transitions, self.batch_size)
        now, nxt = self._rows[0][pick], self._rows[1][pick]
        out = {
            "observations": e.obs[now], "next_observations": e.obs[nxt],
            "states": e.states[now], "next_states": e.states[nxt],
            "actions": e.actions[pick], "rewards": e.rewards[pick],
            "agent_rewards": e.agent_rewards[pick],
            "terminals": e.terminals[pick], "timeouts": e.timeouts[pick],
        }
        if e.avail_actions is not None:
            out["avail_actions"] = e.avail_actions[now]
            out["next_avail_actions"] = e.avail_actions[nxt]
        return {k: self._tensor(v) for k, v in out.items()}
