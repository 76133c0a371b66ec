"""The in-memory form of a dataset: :class:`MARLDataset`, its episode views and batch sampler.

Storage keeps each episode's T + 1 observations (the last one is the final observation), as
Minari does; :class:`EpisodeArrays` holds exactly that, concatenated over episodes. The
transition view (``observations`` / ``next_observations``) is derived from it, so no transition
ever crosses an episode boundary.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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

    def returns_to_go(self, gamma: float, rewards: np.ndarray | None = None) -> np.ndarray:
        """[N] float64: each step's discounted return to the end of its episode,
        sum_k gamma^k r_{t+k}, of the team reward or of the given per-step ``rewards`` [N]
        (one agent's, say); what a critic's Q of the data's actions estimates."""
        rewards = self.rewards if rewards is None else rewards
        out = np.empty(self.n_transitions, np.float64)
        last_step = np.zeros(self.n_transitions, bool)
        last_step[self.episode_starts[1:] - 1] = True
        future = 0.0
        for t in range(self.n_transitions - 1, -1, -1):   # one pass, backwards
            future = rewards[t] + (0.0 if last_step[t] else gamma * future)
            out[t] = future
        return out

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


@dataclass(frozen=True)
class EpisodeBatch:
    """Episodes padded to a common length T, for recurrent learners (numpy arrays from
    :meth:`MARLDataset.episode_batch`, torch tensors from its sampler).

    ``observations``, ``states`` and ``avail_actions`` carry T + 1 steps (the last is the
    observation after the final action); the rest carry T. ``mask`` [B, T] is true on real steps.
    Padding steps hold zeros, and every action is available there, so masked maxima stay finite.
    """

    observations: Any          # (B, T+1, n_agents, obs_dim)
    states: Any                # (B, T+1, state_dim)
    avail_actions: Any         # (B, T+1, n_agents, n_actions) bool; None: continuous actions
    actions: Any               # (B, T, n_agents) or (B, T, n_agents, action_dim)
    rewards: Any               # (B, T)
    terminals: Any             # (B, T) bool
    mask: Any                  # (B, T) bool
    index: Any = None          # (B,) the episodes drawn
    extras: Mapping[str, Any] = field(default_factory=dict)  # name -> (B, T, ...) attached rows

    def arrays(self) -> dict[str, Any]:
        """The padded fields by name (``index`` and ``extras`` aside)."""
        return {name: getattr(self, name) for name in _EPISODE_FIELDS}


_EPISODE_FIELDS = ("observations", "states", "avail_actions", "actions", "rewards", "terminals",
                   "mask")


@dataclass(frozen=True)
class TransitionBatch:
    """``B`` transitions as torch tensors, with D4RL's names.

    ``next_actions`` is the dataset's joint action one step later where the episode goes on
    (``has_next_actions``), zeros at an episode's last step. On a discrete task without action
    masks, every action is available.
    """

    index: Any                 # (B,) dataset rows
    observations: Any          # (B, n, obs_dim)
    next_observations: Any     # (B, n, obs_dim)
    states: Any                # (B, state_dim)
    next_states: Any           # (B, state_dim)
    actions: Any               # (B, n) int64 or (B, n, action_dim) float32
    next_actions: Any          # like actions
    has_next_actions: Any      # (B,) bool
    avail_actions: Any         # (B, n, n_actions) bool; None: continuous actions
    next_avail_actions: Any    # (B, n, n_actions) bool; None: continuous actions
    rewards: Any               # (B,) float32 team reward
    agent_rewards: Any         # (B, n) float32
    terminals: Any             # (B,) bool, a real end
    timeouts: Any              # (B,) bool, the time limit
    extras: Mapping[str, Any] = field(default_factory=dict)  # name -> (B, ...) attached rows


@dataclass(frozen=True)
class WindowBatch:
    """``B`` windows of up to ``L`` consecutive steps, each inside one episode.

    Step ``t`` of a window has observation ``observations[:, t]`` and acts ``actions[:, t]``;
    ``observations[:, t + 1]`` follows it. Index ``L`` holds what follows the window's last
    step, and the dataset's action there where the episode goes on (``has_action``).
    """

    index: Any                 # (B,) the transition each window was drawn around
    observations: Any          # (B, L+1, n, obs_dim)
    states: Any                # (B, L+1, state_dim)
    actions: Any               # (B, L+1, n, ...); zero where has_action is false
    has_action: Any            # (B, L+1) bool: the dataset holds an action at this step
    rewards: Any               # (B, L) float32 team reward
    terminals: Any             # (B, L) float32, a real end of the episode
    mask: Any                  # (B, L) bool, real steps (a short episode's window is padded)
    extras: Mapping[str, Any] = field(default_factory=dict)  # name -> (B, L, ...) attached rows


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
        """The number of arrays (keys), as a dict's; :attr:`n_transitions` counts transitions."""
        return len(self._keys())

    def __repr__(self) -> str:
        e = self.episodes_data
        return (f"MARLDataset({self.dataset_id!r}: {e.n_episodes:,} episodes, "
                f"{e.n_transitions:,} transitions (n_transitions), {e.obs.shape[1]} agents; "
                f"{len(self)} arrays: {', '.join(self._keys())})")

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

    def returns_to_go(self, gamma: float, rewards: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`EpisodeArrays.returns_to_go`."""
        return self.episodes_data.returns_to_go(gamma, rewards)

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
            observations=pad(e.obs, obs_rows, obs_valid),
            states=pad(e.states, obs_rows, obs_valid),
            avail_actions=None if e.avail_actions is None else _pad_avail(e.avail_actions[obs_rows], obs_valid),
            actions=pad(e.actions, step_rows, mask),
            rewards=pad(e.rewards, step_rows, mask),
            terminals=pad(e.terminals, step_rows, mask),
            mask=mask,
            index=index,
        )

    def sampler(self, batch_size: int, kind: str = "transitions", seed: int = 0,
                device: str = "cpu", max_len: int | None = None, window: int | None = None,
                n_actions: int | None = None) -> "BatchSampler":
        """An endless iterator of typed torch batches (see :class:`BatchSampler`)."""
        return BatchSampler(self, batch_size, kind, seed, device, max_len, window, n_actions)


def _pad_avail(avail: np.ndarray, valid: np.ndarray) -> np.ndarray:
    # Padding steps get "every action available" so masked maxima stay finite.
    avail[~valid] = True
    return avail


class BatchSampler:
    """The one way to draw training batches from a dataset: random transitions, whole episodes
    or windows of episodes, as typed batches of torch tensors.

    * ``kind="transitions"``: :class:`TransitionBatch` of ``batch_size`` transitions drawn
      uniformly.
    * ``kind="episodes"``: :class:`EpisodeBatch` of ``batch_size`` episodes drawn uniformly,
      padded to the longest (or ``max_len``).
    * ``kind="windows"``: :class:`WindowBatch` of ``window`` steps: a transition is drawn
      uniformly and the window slides back to stay inside its episode (episodes shorter than
      ``window`` come whole, padded), so every transition is about equally likely to be seen.

    Every batch carries the rows it drew (``index``). ``n_actions``, for a discrete task whose
    data hold no action masks, makes every action available. A learner can :meth:`attach` a
    per-transition table once (its cached behaviour log-probabilities, say); each batch then
    carries that table's rows in ``extras``. The generator :attr:`rng` is the sampler's whole
    state: a checkpoint that saves ``rng.bit_generator.state`` resumes the same stream.

    Rows are gathered from the episode arrays, never copying the dataset.
    """

    KINDS = ("transitions", "episodes", "windows")

    def __init__(self, dataset: MARLDataset, batch_size: int, kind: str = "transitions",
                 seed: int = 0, device: str = "cpu", max_len: int | None = None,
                 window: int | None = None, n_actions: int | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if (kind == "windows") != (window is not None) or (window is not None and window < 1):
            raise ValueError("kind='windows' takes a positive window (steps per window), and "
                             f"only it does; got kind={kind!r}, window={window!r}")
        import torch

        self._torch = torch
        self.dataset, self.batch_size, self.kind = dataset, batch_size, kind
        self.device, self.max_len, self.window = device, max_len, window
        self.rng = np.random.default_rng(seed)
        e = dataset.episodes_data
        self.n_actions = n_actions if e.avail_actions is None and n_actions else None
        self.extras: dict[str, Any] = {}
        if kind == "transitions":
            self._rows = e.transition_rows()
            last_step = np.zeros(e.n_transitions, bool)
            last_step[e.episode_starts[1:] - 1] = True
            self._has_next = ~last_step
            self._next_row = np.minimum(np.arange(e.n_transitions) + 1, e.n_transitions - 1)
        if kind == "windows":
            self._episode_of_step = np.repeat(np.arange(e.n_episodes), e.lengths)

    def attach(self, name: str, table: Any) -> None:
        """Carry ``table[row]`` (a tensor with one row per transition) in every batch's
        ``extras[name]``; padding steps read row 0 (finite, and masked out of every loss)."""
        if len(table) != self.dataset.n_transitions:
            raise ValueError(f"extra {name!r} has {len(table)} rows; the dataset has "
                             f"{self.dataset.n_transitions} transitions")
        self.extras[name] = table

    def detach(self, name: str) -> None:
        """Stop carrying ``name``."""
        self.extras.pop(name, None)

    def __iter__(self) -> "BatchSampler":
        return self

    def _tensor(self, array: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _extras(self, rows: np.ndarray) -> dict[str, Any]:
        return {name: table[self._torch.from_numpy(rows).to(table.device)]
                for name, table in self.extras.items()}

    def _all_available(self, shape: tuple[int, ...]):
        return self._torch.ones(*shape, self.n_actions, dtype=self._torch.bool,
                                device=self.device)

    def __next__(self) -> TransitionBatch | EpisodeBatch | WindowBatch:
        return {"transitions": self._transitions, "episodes": self._episodes,
                "windows": self._windows}[self.kind]()

    def _transitions(self) -> TransitionBatch:
        e, t = self.dataset.episodes_data, self._tensor
        pick = self.rng.integers(0, e.n_transitions, self.batch_size)
        now, nxt = self._rows[0][pick], self._rows[1][pick]
        has_next = self._has_next[pick]
        next_actions = e.actions[self._next_row[pick]]
        next_actions[~has_next] = 0
        if e.avail_actions is not None:
            avail, next_avail = t(e.avail_actions[now]), t(e.avail_actions[nxt])
        elif self.n_actions:
            avail = next_avail = self._all_available(e.actions[pick].shape)
        else:
            avail = next_avail = None
        return TransitionBatch(
            index=t(pick), observations=t(e.obs[now]), next_observations=t(e.obs[nxt]),
            states=t(e.states[now]), next_states=t(e.states[nxt]), actions=t(e.actions[pick]),
            next_actions=t(next_actions), has_next_actions=t(has_next),
            avail_actions=avail, next_avail_actions=next_avail, rewards=t(e.rewards[pick]),
            agent_rewards=t(e.agent_rewards[pick]), terminals=t(e.terminals[pick]),
            timeouts=t(e.timeouts[pick]), extras=self._extras(pick))

    def _episodes(self) -> EpisodeBatch:
        e = self.dataset.episodes_data
        index = self.rng.integers(0, e.n_episodes, self.batch_size)
        batch = self.dataset.episode_batch(index, self.max_len)
        arrays = {k: None if v is None else self._tensor(v) for k, v in batch.arrays().items()}
        if arrays["avail_actions"] is None and self.n_actions:
            arrays["avail_actions"] = self._all_available(batch.observations.shape[:3])
        rows = np.where(batch.mask, e.episode_starts[index][:, None]
                        + np.arange(batch.mask.shape[1]), 0)
        return EpisodeBatch(**arrays, index=self._tensor(index), extras=self._extras(rows))

    def _windows(self) -> WindowBatch:
        e, horizon = self.dataset.episodes_data, self.window
        pick = self.rng.integers(0, e.n_transitions, self.batch_size)
        episode = self._episode_of_step[pick]
        first, end = e.episode_starts[episode], e.episode_starts[episode + 1]     # (B,)
        start = np.maximum(np.minimum(pick, end - horizon), first)
        length = np.minimum(end - start, horizon)                                  # (B,)
        steps = np.arange(horizon + 1)
        step = start[:, None] + steps[None, :]                                     # (B, L+1)
        real = steps[None, :] < length[:, None]                                    # (B, L+1)
        has_action = step < end[:, None]                                           # (B, L+1)
        obs_valid = steps[None, :] <= length[:, None]
        step_rows = np.where(has_action, step, 0)
        obs_rows = np.where(obs_valid, step + episode[:, None], 0)

        def gather(values: np.ndarray, rows: np.ndarray, valid: np.ndarray):
            out = values[rows]
            out[~valid] = 0
            return self._tensor(out)

        return WindowBatch(
            index=self._tensor(pick),
            observations=gather(e.obs, obs_rows, obs_valid),
            states=gather(e.states, obs_rows, obs_valid),
            actions=gather(e.actions, step_rows, has_action),
            has_action=self._tensor(has_action & obs_valid),
            rewards=gather(e.rewards.astype(np.float32), step_rows[:, :-1], real[:, :-1]),
            terminals=gather(e.terminals.astype(np.float32), step_rows[:, :-1], real[:, :-1]),
            mask=self._tensor(real[:, :-1].copy()),
            extras=self._extras(np.where(real[:, :-1], step_rows[:, :-1], 0)))


def synthetic_dataset(info, episodes: int, length: int, seed: int = 0) -> MARLDataset:
    """Full-length episodes of random values with a task's shapes (``info``: its TaskInfo).

    For timing: an update's cost depends on the shapes only. Discrete tasks get random
    availability (about 70% of actions), action 0 always available and always taken. The card
    holds a checksum of the arrays, as a stored dataset's holds its file's, so that the fit store
    names one-off fits on them as it does on real data (the dry run prices shared fits so).
    """
    rng = np.random.default_rng(seed)
    n, steps = info.n_agents, episodes * length
    obs_rows = steps + episodes
    if info.discrete:
        avail = rng.random((obs_rows, n, info.n_actions)) > 0.3
        avail[..., 0] = True
        actions = np.zeros((steps, n), np.int64)
    else:
        avail = None
        actions = rng.uniform(-1, 1, (steps, n, info.action_dim)).astype(np.float32)
    arrays = EpisodeArrays(
        obs=rng.normal(size=(obs_rows, n, info.obs_dim)).astype(np.float32),
        states=rng.normal(size=(obs_rows, info.state_dim)).astype(np.float32),
        avail_actions=avail, actions=actions,
        rewards=rng.normal(size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=np.zeros(steps, bool),
        timeouts=np.tile(np.arange(length) == length - 1, episodes), won=None,
        episode_starts=np.arange(0, steps + 1, length).astype(np.int64),
        seeds=np.zeros(episodes, np.int64))
    digest = hashlib.sha256()
    for array in (arrays.obs, arrays.states, arrays.actions, arrays.rewards, avail):
        if array is not None:
            digest.update(array.tobytes())
    return MARLDataset(arrays, f"{info.task_id}-synthetic-v0", info.task_id,
                       {"sha256": digest.hexdigest()}, info.obs_mask, info.action_mask)
