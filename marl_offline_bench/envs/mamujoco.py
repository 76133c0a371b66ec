"""MaMuJoCo: ``gymnasium_robotics.mamujoco_v1.parallel_env("HalfCheetah", "2x3")``.

The library's defaults throughout: ``agent_obsk=1`` (12-dim observations per agent), the
17-dim state of ``env.state()`` (HalfCheetah-v5's observation), HalfCheetah-v5's reward shared
by both agents (the team reward), 1000-step episodes that end by truncation only (HalfCheetah
never terminates). Actions are each agent's 3 joint torques in [-1, 1].

Both forms step the library's own objects: the underlying Gymnasium env
(``env.single_agent_env``, i.e. ``TimeLimit(HalfCheetah-v5)``) is stepped with the global
action the library would build (``map_local_actions_to_global_action``, float64), and each
agent's observation is taken from the state with the library's own index map
(``env.observation_factorization``), which for HalfCheetah is exactly what ``build_obs``
returns (the tests check both against ``parallel_env`` step by step). This skips the dict
plumbing of ``parallel_env.step`` (about a third of its cost).

:class:`MaMuJoCoVectorEnv` cuts the batch into one shard per core; this process steps the
first shard itself and worker processes (fresh interpreters) step the others in place in
shared memory, signalled with one byte per worker and step over a socket. Copy ``i`` of a
batch reset with ``seed`` is reset with ``episode_seeds(seed, num_envs)[i]``, whatever the
number of workers; the single env passes its seed to the library unchanged, so
``MaMuJoCoEnv(name).reset(seed=episode_seeds(s, B)[i])`` replays copy ``i``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import subprocess
import traceback
import weakref
from typing import Any

import numpy as np

from .base import TaskEnv, TaskInfo, VecObservation, VecStep, VectorTaskEnv

EPISODE_LIMIT = 1000
#: task name -> (scenario, agent_conf, agent ids, obs dims, state dim, action dims)
TASKS: dict[str, tuple[str, str, tuple[str, ...], tuple[int, ...], int, tuple[int, ...]]] = {
    "halfcheetah_2x3": ("HalfCheetah", "2x3", ("agent_0", "agent_1"), (12, 12), 17, (3, 3)),
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_task(name: str) -> None:
    if name not in TASKS:
        raise KeyError(f"Unknown mamujoco task {name!r}; valid tasks: {', '.join(TASKS)}.")


def task_info(name: str) -> TaskInfo:
    """Static facts about a MaMuJoCo task with the library's defaults (no simulator started)."""
    _check_task(name)
    scenario, conf, agents, obs_dims, state_dim, action_dims = TASKS[name]
    return TaskInfo(
        task_id=f"mamujoco-{name}",
        agent_ids=agents,
        obs_dims=obs_dims,
        state_dim=state_dim,
        discrete=False,
        n_actions=0,
        action_dims=action_dims,
        episode_limit=EPISODE_LIMIT,
        engine=_engine(name, {}),
    )


def _engine(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    scenario, conf = TASKS[name][:2]
    return {
        "name": "gymnasium_robotics.mamujoco_v1",
        "version": _version("gymnasium_robotics"),
        "mujoco_version": _version("mujoco"),
        "gymnasium_version": _version("gymnasium"),
        "scenario": scenario,
        "agent_conf": conf,
        "agent_obsk": kwargs.get("agent_obsk", 1),
        "gym_env": f"{scenario}-v5",
        "max_episode_steps": EPISODE_LIMIT,
        "reward": "shared: the single-agent env's reward, given to every agent",
        "kwargs": {
            k: v for k, v in kwargs.items() if isinstance(v, (bool, int, float, str, type(None)))
        },
    }


def episode_seeds(seed: int, num_envs: int) -> list[int]:
    """The library seed of each copy of a vector env reset with ``seed``."""
    return [
        int(np.random.SeedSequence([int(seed) % 2**32, i]).generate_state(1)[0] % 2**31)
        for i in range(num_envs)
    ]


class _Core:
    """One library env and the precomputed maps between it and the padded arrays."""

    def __init__(self, name: str, **kwargs: Any):
        import contextlib
        import io
        import warnings

        # gymnasium_robotics prints a notice about its Adroit tasks on import.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            from gymnasium_robotics import mamujoco_v1

        scenario, conf = TASKS[name][:2]
        self.env = mamujoco_v1.parallel_env(scenario, conf, **kwargs)
        env = self.env
        self.gym = env.single_agent_env
        self.agents = list(env.possible_agents)
        self.obs_dims = tuple(int(env.observation_space(a).shape[0]) for a in self.agents)
        self.action_dims = tuple(int(env.action_space(a).shape[0]) for a in self.agents)
        self.state_dim = int(np.asarray(env.state()).shape[0])
        self.global_action_dim = int(self.gym.action_space.shape[0])
        width = max(self.action_dims)
        # global action[g] = padded actions.reshape(-1)[take[g]], as the library's
        # map_local_actions_to_global_action places them
        take = np.full(self.global_action_dim, -1, np.int64)
        for i, partition in enumerate(env.agent_action_partitions):
            for j, part in enumerate(partition):
                for g in np.atleast_1d(part.act_ids):
                    assert take[g] < 0, "a global action is doubly defined"
                    take[g] = i * width + j
        assert (take >= 0).all(), "a global action is undefined"
        self.take = take
        fact = getattr(env, "observation_factorization", None)
        if fact is not None and env.agent_obsk is not None:
            self.obs_index = [np.asarray(fact[a], np.int64) for a in self.agents]
        else:
            self.obs_index = None
        self.width = max(self.obs_dims)

    def info(self, name: str, kwargs: dict[str, Any]) -> TaskInfo:
        return TaskInfo(
            task_id=f"mamujoco-{name}",
            agent_ids=tuple(self.agents),
            obs_dims=self.obs_dims,
            state_dim=self.state_dim,
            discrete=False,
            n_actions=0,
            action_dims=self.action_dims,
            episode_limit=EPISODE_LIMIT,
            engine=_engine(name, kwargs),
        )

    def global_actions(self, actions: np.ndarray) -> np.ndarray:
        """[B, n, action_dim] -> [B, global_action_dim] float64, as the library maps them."""
        flat = np.asarray(actions, dtype=np.float64).reshape(actions.shape[0], -1)
        return flat[:, self.take]

    def reset(self, seed: int | None) -> np.ndarray:
        self.env.reset(seed=seed)
        return np.asarray(self.env.state(), np.float64)

    def step(self, global_action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        state, reward, terminated, truncated, _ = self.gym.step(global_action)
        return state, float(reward), bool(terminated), bool(truncated)

    def observe(self, states: np.ndarray) -> np.ndarray:
        """States [B, state_dim] -> padded observations [B, n, obs_dim] float32."""
        out = np.zeros((states.shape[0], len(self.agents), self.width), np.float32)
        for i, index in enumerate(self.obs_index):
            out[:, i, : len(index)] = states[:, index]
        return out

    def observe_library(self) -> np.ndarray:
        """Observations built by the library itself (configurations without an index map)."""
        obs = self.env._get_obs()
        out = np.zeros((len(self.agents), self.width), np.float32)
        for i, a in enumerate(self.agents):
            out[i, : self.obs_dims[i]] = obs[a]
        return out

    def close(self) -> None:
        self.env.close()


class MaMuJoCoEnv(TaskEnv):
    """One MaMuJoCo episode at a time, as a PettingZoo ``ParallelEnv``."""

    def __init__(self, name: str, **kwargs: Any):
        _check_task(name)
        self._core = _Core(name, **kwargs)
        self.info = self._core.info(name, kwargs)
        self._state = np.zeros((1, self.info.state_dim), np.float64)
        super().__init__()

    def _observe(self) -> list[np.ndarray]:
        if self._core.obs_index is None:
            padded = self._core.observe_library()
        else:
            padded = self._core.observe(self._state)[0]
        return [padded[i, :d] for i, d in enumerate(self.info.obs_dims)]

    def _reset(self, seed):
        self._state[0] = self._core.reset(seed)
        return self._observe(), None

    def _step(self, actions):
        width = self.info.action_dim
        padded = np.zeros((1, self.info.n_agents, width), np.float64)
        for i, a in enumerate(actions):
            a = np.asarray(a, dtype=np.float64).reshape(-1)
            padded[0, i, : a.shape[0]] = a
        state, reward, terminated, truncated = self._core.step(self._core.global_actions(padded)[0])
        self._state[0] = state
        n = self.info.n_agents
        return dict(
            obs=self._observe(),
            avail=None,
            agent_rewards=np.full(n, reward, np.float64),
            reward=reward,
            terminated=terminated,
            truncated=truncated and not terminated,
        )

    def state(self) -> np.ndarray:
        return self._state[0].astype(np.float32)

    def close(self) -> None:
        self._core.close()


# ----------------------------------------------------------------------------- workers
# Workers are fresh interpreters (``python -c``) rather than multiprocessing children: they
# inherit no JAX / torch threads from the parent (as fork would), and they do not re-import the
# parent's ``__main__`` (as spawn and forkserver do, which breaks scripts without an
# ``if __name__ == "__main__"`` guard). Each holds a socket for one-byte commands and maps the
# batch's shared buffers from a file descriptor of an already-unlinked temporary file.
_WORKER_CODE = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
    "from marl_offline_bench.envs.mamujoco import _worker_main; "
    "_worker_main(int(sys.argv[2]), int(sys.argv[3]))"
)


class _Buffers:
    """The batch's shared arrays, laid out in one memory map."""

    def __init__(self, mm, num_envs: int, action_dim: int, state_dim: int):
        sizes = [num_envs * action_dim * 8, num_envs * state_dim * 8, num_envs * 8, num_envs * 2]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.mm = mm
        self.act = np.frombuffer(mm, np.float64, num_envs * action_dim, int(offsets[0])).reshape(
            num_envs, action_dim
        )
        self.state = np.frombuffer(mm, np.float64, num_envs * state_dim, int(offsets[1])).reshape(
            num_envs, state_dim
        )
        self.reward = np.frombuffer(mm, np.float64, num_envs, int(offsets[2]))
        self.flags = np.frombuffer(mm, np.uint8, num_envs * 2, int(offsets[3])).reshape(num_envs, 2)

    @staticmethod
    def nbytes(num_envs: int, action_dim: int, state_dim: int) -> int:
        return num_envs * (action_dim * 8 + state_dim * 8 + 8 + 2)


class _Shard:
    """Copies ``lo:hi`` of the batch, stepped in place in the shared buffers."""

    def __init__(
        self, name: str, kwargs: dict[str, Any], lo: int, hi: int, buffers: _Buffers, first=None
    ):
        self.lo, self.hi, self.buf = lo, hi, buffers
        self.cores = [first] if first is not None else []
        self.cores += [_Core(name, **kwargs) for _ in range(hi - lo - len(self.cores))]

    def step(self) -> None:
        act, state, reward, flags = self.buf.act, self.buf.state, self.buf.reward, self.buf.flags
        for i, core in enumerate(self.cores, self.lo):
            state[i], reward[i], flags[i, 0], flags[i, 1] = core.step(act[i])

    def reset(self, seeds: list[int]) -> None:
        for i, core in enumerate(self.cores, self.lo):
            self.buf.state[i] = core.reset(seeds[i])
            self.buf.reward[i] = 0.0
            self.buf.flags[i] = 0

    def close(self) -> None:
        for core in self.cores:
            try:
                core.close()
            except Exception:  # noqa: BLE001 - closing a MuJoCo env cannot matter here
                pass


def _worker_main(sock_fd: int, shm_fd: int) -> None:
    """A worker's loop: b"s" steps its shard, b"r"+seeds resets it, b"c" (or EOF) ends it."""
    import mmap
    from multiprocessing.connection import Connection

    conn = Connection(sock_fd)
    shard = None
    try:
        name, kwargs, lo, hi, num_envs, adim, sdim = pickle.loads(conn.recv_bytes())
        mm = mmap.mmap(shm_fd, _Buffers.nbytes(num_envs, adim, sdim))
        os.close(shm_fd)
        shard = _Shard(name, kwargs, lo, hi, _Buffers(mm, num_envs, adim, sdim))
        conn.send_bytes(b"k")
        while True:
            msg = conn.recv_bytes()
            try:
                if msg == b"s":
                    shard.step()
                elif msg[:1] == b"r":
                    shard.reset(pickle.loads(msg[1:]))
                elif msg == b"c":
                    break
                else:
                    raise ValueError(f"unknown command {msg[:20]!r}")
            except Exception:  # noqa: BLE001 - reported to the parent, which raises
                conn.send_bytes(b"e" + traceback.format_exc().encode())
                continue
            conn.send_bytes(b"k")
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the parent went away
    except Exception:  # noqa: BLE001 - a start-up failure, reported to the parent
        try:
            conn.send_bytes(b"e" + traceback.format_exc().encode())
        except OSError:
            pass
    finally:
        if shard is not None:
            shard.close()
        conn.close()


def _shutdown(procs: list, conns: list, files: list) -> None:
    """Stop the workers: ask, then kill (runs on close(), garbage collection or exit)."""
    for conn in conns:
        try:
            conn.send_bytes(b"c")
        except OSError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3.0)
    for handle in conns + files:
        try:
            handle.close()
        except OSError:
            pass
    procs.clear()
    conns.clear()


def default_num_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class MaMuJoCoVectorEnv(VectorTaskEnv):
    """``num_envs`` MaMuJoCo copies stepped in parallel, in shared numpy buffers.

    The batch is cut into ``num_workers`` equal shards. By default (``parent_share=True``)
    this process steps the first shard itself while worker processes step the others, so a
    machine with ``c`` cores runs ``c - 1`` workers; with ``parent_share=False`` every shard
    has its own worker and this process only waits.

    Args:
        name: task name, e.g. ``"halfcheetah_2x3"``.
        num_envs: copies in the batch.
        num_workers: shards, i.e. parallel steppers (default: one per core, at most
            ``num_envs``). ``1`` with ``parent_share`` steps everything in this process.
        parent_share: whether this process steps a shard itself.
        **kwargs: passed to ``mamujoco_v1.parallel_env``.
    """

    def __init__(
        self,
        name: str,
        num_envs: int,
        num_workers: int | None = None,
        parent_share: bool = True,
        **kwargs: Any,
    ):
        import mmap
        import socket
        import sys
        import tempfile
        from multiprocessing.connection import Connection

        _check_task(name)
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.num_envs = int(num_envs)
        shards = default_num_workers() if num_workers is None else int(num_workers)
        shards = max(1, min(self.num_envs, shards))
        probe = _Core(name, **kwargs)
        self._probe = probe
        self.info = probe.info(name, kwargs)
        if probe.obs_index is None:
            raise NotImplementedError(
                "MaMuJoCoVectorEnv needs the library's observation index map "
                "(env.observation_factorization); this configuration has none."
            )
        adim, sdim = probe.global_action_dim, self.info.state_dim
        bounds = np.linspace(0, self.num_envs, shards + 1).round().astype(int)
        slices = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

        self._procs: list[subprocess.Popen] = []
        self._conns: list[Connection] = []
        self._files: list = []
        self._closed = False
        self._reset_done = False
        self._local: _Shard | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns, self._files)

        remote = slices[1:] if parent_share else slices
        nbytes = _Buffers.nbytes(self.num_envs, adim, sdim)
        if remote:
            shm = tempfile.TemporaryFile(prefix="mamujoco-")  # unlinked: vanishes with its fds
            self._files.append(shm)
            os.ftruncate(shm.fileno(), nbytes)
            mm = mmap.mmap(shm.fileno(), nbytes)
        else:
            mm = bytearray(nbytes)
        self._buf = _Buffers(mm, self.num_envs, adim, sdim)
        if parent_share:
            lo, hi = slices[0]
            self._local = _Shard(name, kwargs, lo, hi, self._buf, first=probe)

        path = json.dumps([p for p in sys.path if p])
        for lo, hi in remote:
            ours, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _WORKER_CODE,
                        path,
                        str(theirs.fileno()),
                        str(shm.fileno()),
                    ],
                    pass_fds=(theirs.fileno(), shm.fileno()),
                    stdin=subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            conn = Connection(ours.detach())
            self._procs.append(proc)
            self._conns.append(conn)
            conn.send_bytes(pickle.dumps((name, dict(kwargs), lo, hi, self.num_envs, adim, sdim)))
        self.num_workers = len(self._procs)
        self._gather("start-up")

    # -------------------------------------------------------------------- messaging
    def _send(self, msg: bytes) -> None:
        for conn in self._conns:
            conn.send_bytes(msg)

    def _gather(self, what: str) -> None:
        errors = []
        for conn, proc in zip(self._conns, self._procs):
            try:
                msg = conn.recv_bytes()
            except (EOFError, OSError) as err:
                errors.append(f"a worker died ({err!r}, exit code {proc.poll()})")
                continue
            if msg != b"k":
                errors.append(msg[1:].decode(errors="replace"))
        if errors:
            self.close()
            raise RuntimeError(f"MaMuJoCo worker failed during {what}:\n" + "\n".join(errors))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this MaMuJoCoVectorEnv is closed")

    # -------------------------------------------------------------------- the interface
    def reset(self, seed: int) -> VecObservation:
        self._check_open()
        seeds = episode_seeds(seed, self.num_envs)
        self._send(b"r" + pickle.dumps(seeds))
        if self._local is not None:
            self._local.reset(seeds)
        self._gather("reset")
        self._reset_done = True
        return self._observation()

    def step(self, actions: np.ndarray) -> VecStep:
        self._check_open()
        if not self._reset_done:
            raise RuntimeError("call reset(seed) before step()")
        actions = np.asarray(actions)
        expected = (self.num_envs, self.info.n_agents, self.info.action_dim)
        if actions.shape != expected:
            raise ValueError(f"MaMuJoCo actions must have shape {expected}, got {actions.shape}")
        self._buf.act[:] = self._probe.global_actions(actions)
        self._send(b"s")
        if self._local is not None:
            self._local.step()
        self._gather("step")
        reward = self._buf.reward.astype(np.float32)
        terminated = self._buf.flags[:, 0].astype(bool)
        truncated = self._buf.flags[:, 1].astype(bool) & ~terminated
        return VecStep(
            next=self._observation(),
            reward=reward,
            agent_rewards=np.repeat(reward[:, None], self.info.n_agents, axis=1),
            terminated=terminated,
            truncated=truncated,
        )

    def _observation(self) -> VecObservation:
        return VecObservation(
            obs=self._probe.observe(self._buf.state),
            state=self._buf.state.astype(np.float32),
            avail_actions=None,
        )

    def close(self) -> None:
        """Stop the workers and close the envs (also done on garbage collection)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        if self._local is not None:
            self._local.close()
        else:
            self._probe.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
