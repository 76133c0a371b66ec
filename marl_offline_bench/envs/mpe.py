"""MPE: cooperative navigation (``cn``), predator-prey (``pp``) and World (``world``).

Scenarios and rewards are mpe2's (``simple_spread_v3``, ``simple_tag_v3``,
``simple_world_comm_v3``, ``continuous_actions=True``, ``max_cycles=25``, default sizes and
``local_ratio=0.5`` for simple_spread). Two engines run them:

* ``"mpe2"``: the reference, one Python environment per copy (:class:`MPEEnv`'s default).
* ``"jaxmarl"``: JaxMARL's MPE (``MPE_simple_spread_v3`` etc., ``action_type="Continuous"``,
  ``max_steps=24``: JaxMARL's MPE runs ``max_steps + 1`` steps, so 24 gives mpe2's 25), stepped
  as one ``jax.jit(jax.vmap(...))`` call over the whole batch (:class:`MPEVectorEnv`'s default).
  It reproduces mpe2 to float32 precision (it computes in float32, mpe2 in float64).

Teams:

* ``cn``: the 3 agents ``agent_0..2``; team reward = the sum of mpe2's per-agent rewards (the
  original MPE ``shared_reward`` convention).
* ``pp``: the 3 predators ``adversary_0..2`` against 1 prey ``agent_0``.
* ``world``: the 4 predators ``leadadversary_0, adversary_0..2`` against 2 prey ``agent_0..1``,
  with 1 obstacle, 2 food, 2 forests (mpe2's defaults).

For ``pp`` and ``world`` the team reward is the mean of the predators' rewards. In ``pp`` mpe2
gives every predator the same reward (+10 per predator-prey collision), so the mean *is* that
reward. In ``world`` the predators share the collision term (+5 per collision) but each also
gets its own shaping term -0.1 * (distance to its nearest prey), so they differ; the mean keeps
the shared reward's scale. ``agent_rewards`` keeps each predator's own reward.

Prey are not learners: a frozen pretrained policy drives them. It ships with the package as
``marl_offline_bench/data/prey/{pp,world}.npz`` (the prey's per-agent MLP actors, 2 ReLU layers,
tanh output) beside a ``.json`` that says how it was trained (MATD3 with predators and prey
learning together, :mod:`collection.matd3` with ``train_prey=true``: budget, wall time, seed,
config) and the file's sha256. :class:`PretrainedPrey` runs it in numpy, deterministically, and
is the default whenever no ``prey_policy`` is given; its sha256 is recorded in
``info.engine["pretrained_prey"]`` and so in every dataset's metadata. **The prey is part of
the task:** if the shipped prey ever changes, the version of every ``mpe-pp-*`` /
``mpe-world-*`` dataset id (``-v0``) and of their reference scores must change with it.

A ``prey_policy`` argument (tests, the ``random`` reference of a prey, joint training) replaces
the shipped prey: a callable ``prey_policy(prey_obs [B, n_prey, prey_obs_dim] float32) -> [B,
n_prey, 2]`` in [-1, 1] (numpy in, numpy out), called on the prey's current observations before
every step. If it has a ``reset(seed)`` method, the env calls it at every reset so a stochastic
prey replays with the seed (see :func:`random_prey_policy`). To train prey, read what they see
and get: :attr:`MPEVectorEnv.prey_observations` (before the step: what the prey policy was
given; after it: the next observations) and ``MPEVectorEnv.last_all_rewards`` (every agent's
reward of the last step, prey after the learners, in ``info.engine["agents"]`` order).

Actions. Every learner's movement is a 2-D action (x, y) in [-1, 1] (as OMAR and CFCQL use); it
maps one-to-one onto mpe2's 5-dim [0, 1] action [no-op, left, right, down, up]
= [0, max(-x, 0), max(x, 0), max(-y, 0), max(y, 0)] (:func:`to_mpe2_action`), on which mpe2's
force is accel * (right - left, up - down) = accel * (x, y) exactly. World's lead adversary
keeps its 4-dim communication beside its movement: its action is (x, y, c_1..c_4), each c in
[-1, 1] mapped to mpe2's [0, 1] comm entry by (c + 1) / 2 (:func:`to_mpe2_comm`), so its action
is 6-dim; the padded ``action_dim`` is 6 and ``TaskInfo.action_dims`` = (6, 2, 2, 2). Actions
are clipped to [-1, 1] (the same as mpe2's clip of the 5-dim action to [0, 1]).

Global state: the concatenation of the learners' observations, in agent order (what OMAR and
CFCQL use for MPE). It leaves out the prey's own observations (mpe2's ``state()`` has them).

Initial states: a batch reset with ``seed`` draws every copy's positions from one
``np.random.default_rng(seed)`` in mpe2's own order (agents uniform in [-1, 1], landmarks in
[-1, 1] for cn and [-0.9, 0.9] for pp / world, World's food and forests drawn a second time as
mpe2 does). Copy 0 therefore starts exactly where mpe2's ``reset(seed=seed)`` starts, and both
engines start from the same states for the same seed. (JaxMARL's own reset draws landmarks in
[-1, 1] for every scenario; it is not used.)

:class:`WorldState` and :func:`get_mpe2_world_state` / :func:`set_mpe2_world_state` plus the
envs' ``get_world_state`` / ``set_world_state`` copy a state (positions, velocities,
communication, step count) between engines.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import TaskEnv, TaskInfo, VecObservation, VecStep, VectorTaskEnv

__all__ = [
    "EPISODE_LIMIT", "TASKS", "MPEEnv", "MPEVectorEnv", "WorldState", "task_info",
    "to_mpe2_action", "from_mpe2_action", "to_mpe2_comm", "from_mpe2_comm",
    "random_prey_policy", "still_prey_policy", "PretrainedPrey", "pretrained_prey",
    "PREY_DIR", "get_mpe2_world_state",
    "set_mpe2_world_state", "make_mpe2_env",
]

EPISODE_LIMIT = 25
#: JaxMARL's MPE runs ``max_steps + 1`` steps.
JAXMARL_MAX_STEPS = EPISODE_LIMIT - 1
ENGINES = ("jaxmarl", "mpe2")
#: Where the frozen pretrained prey of ``pp`` and ``world`` ship (``<name>.npz`` + ``.json``).
PREY_DIR = Path(__file__).resolve().parent.parent / "data" / "prey"

PreyPolicy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Spec:
    name: str
    mpe2_env: str                 # module under mpe2
    mpe2_kwargs: dict             # the scenario's sizes / settings (mpe2 defaults, spelled out)
    jaxmarl_id: str
    agents: tuple[str, ...]       # every agent, in the engines' order (learners first)
    n_learners: int
    obs_dims: tuple[int, ...]     # every agent's observation size
    n_landmarks: int
    dim_c: int
    leader_comm: int              # comm entries in the first learner's action (0: none)
    # Initial-position draws in mpe2's order: (first entity, count, low, high); later draws
    # overwrite earlier ones, as mpe2's World reset does for food and forests.
    init_draws: tuple[tuple[int, int, float, float], ...]
    team_reward: str              # "sum" or "mean" over the learners

    @property
    def learners(self) -> tuple[str, ...]:
        return self.agents[: self.n_learners]

    @property
    def prey(self) -> tuple[str, ...]:
        return self.agents[self.n_learners:]

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def n_entities(self) -> int:
        return self.n_agents + self.n_landmarks

    @property
    def prey_obs_dim(self) -> int:
        return max(self.obs_dims[self.n_learners:], default=0)


_SPECS: dict[str, _Spec] = {
    "cn": _Spec(
        name="cn", mpe2_env="simple_spread_v3", mpe2_kwargs={"N": 3, "local_ratio": 0.5},
        jaxmarl_id="MPE_simple_spread_v3",
        agents=("agent_0", "agent_1", "agent_2"), n_learners=3, obs_dims=(18, 18, 18),
        n_landmarks=3, dim_c=2, leader_comm=0,
        init_draws=((0, 3, -1.0, 1.0), (3, 3, -1.0, 1.0)), team_reward="sum",
    ),
    "pp": _Spec(
        name="pp", mpe2_env="simple_tag_v3",
        mpe2_kwargs={"num_good": 1, "num_adversaries": 3, "num_obstacles": 2},
        jaxmarl_id="MPE_simple_tag_v3",
        agents=("adversary_0", "adversary_1", "adversary_2", "agent_0"), n_learners=3,
        obs_dims=(16, 16, 16, 14), n_landmarks=2, dim_c=2, leader_comm=0,
        init_draws=((0, 4, -1.0, 1.0), (4, 2, -0.9, 0.9)), team_reward="mean",
    ),
    "world": _Spec(
        name="world", mpe2_env="simple_world_comm_v3",
        mpe2_kwargs={"num_good": 2, "num_adversaries": 4, "num_obstacles": 1, "num_food": 2,
                     "num_forests": 2},
        jaxmarl_id="MPE_simple_world_comm_v3",
        agents=("leadadversary_0", "adversary_0", "adversary_1", "adversary_2", "agent_0",
                "agent_1"),
        n_learners=4, obs_dims=(34, 34, 34, 34, 28, 28), n_landmarks=5, dim_c=4, leader_comm=4,
        # agents; obstacle + food + forests; food again; forests again.
        init_draws=((0, 6, -1.0, 1.0), (6, 5, -0.9, 0.9), (7, 2, -0.9, 0.9), (9, 2, -0.9, 0.9)),
        team_reward="mean",
    ),
}
TASKS = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise KeyError(f"Unknown MPE task {name!r}; valid tasks: {', '.join(_SPECS)}.")
    return _SPECS[name]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- actions ------------------------------------------------------------------------------------
def to_mpe2_action(xy: np.ndarray) -> np.ndarray:
    """2-D movement (x, y) in [-1, 1] -> mpe2's 5-dim [0, 1] action, over any leading axes.

    ``[..., 2] -> [..., 5]`` float32 = [0, max(-x, 0), max(x, 0), max(-y, 0), max(y, 0)], after
    clipping (x, y) to [-1, 1]. mpe2's force, accel * (a[2] - a[1], a[4] - a[3]), is then
    accel * (x, y) exactly (one of each pair is 0).
    """
    xy = np.clip(np.asarray(xy, dtype=np.float32), -1.0, 1.0)
    zero = np.zeros(xy.shape[:-1] + (1,), np.float32)
    x, y = xy[..., :1], xy[..., 1:2]
    return np.concatenate(
        [zero, np.maximum(-x, 0), np.maximum(x, 0), np.maximum(-y, 0), np.maximum(y, 0)], axis=-1
    ).astype(np.float32)


def from_mpe2_action(action5: np.ndarray) -> np.ndarray:
    """mpe2's 5-dim action -> the 2-D (x, y) with the same force: (a[2] - a[1], a[4] - a[3]).

    The inverse of :func:`to_mpe2_action` (exact on its image); mpe2 ignores the no-op entry.
    """
    a = np.clip(np.asarray(action5, dtype=np.float32), 0.0, 1.0)
    return np.stack([a[..., 2] - a[..., 1], a[..., 4] - a[..., 3]], axis=-1).astype(np.float32)


def to_mpe2_comm(c: np.ndarray) -> np.ndarray:
    """Communication entries in [-1, 1] -> mpe2's [0, 1] comm entries, (c + 1) / 2."""
    return ((np.clip(np.asarray(c, dtype=np.float32), -1.0, 1.0) + 1.0) / 2.0).astype(np.float32)


def from_mpe2_comm(c: np.ndarray) -> np.ndarray:
    """mpe2's [0, 1] comm entries -> [-1, 1], 2 c - 1 (the inverse of :func:`to_mpe2_comm`)."""
    return (2.0 * np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0) - 1.0).astype(np.float32)


def _to_mpe2_agent_action(action: np.ndarray, comm: int) -> np.ndarray:
    """One learner's benchmark action (x, y[, c...]) -> its mpe2 action (5 or 5 + comm)."""
    action = np.asarray(action, dtype=np.float32)
    move = to_mpe2_action(action[..., :2])
    if not comm:
        return move
    return np.concatenate([move, to_mpe2_comm(action[..., 2: 2 + comm])], axis=-1)


# -- prey policies ------------------------------------------------------------------------------
class RandomPreyPolicy:
    """Uniform prey actions in [-1, 1]; ``reset(seed)`` reseeds from (seed of the policy, seed)."""

    name = "random"

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng([0 if self.seed is None else self.seed, seed])

    def __call__(self, prey_obs: np.ndarray) -> np.ndarray:
        shape = prey_obs.shape[:2] + (2,)
        return self._rng.uniform(-1.0, 1.0, shape).astype(np.float32)


class StillPreyPolicy:
    """Prey that never push (action (0, 0)); they still move when something collides with them."""

    name = "still"

    def __call__(self, prey_obs: np.ndarray) -> np.ndarray:
        return np.zeros(prey_obs.shape[:2] + (2,), np.float32)


def random_prey_policy(seed: int | None = None) -> RandomPreyPolicy:
    """A uniformly random prey, for tests and the ``random`` reference; reseeded at each reset."""
    return RandomPreyPolicy(seed)


def still_prey_policy() -> StillPreyPolicy:
    """A prey that applies no force, for tests."""
    return StillPreyPolicy()


def _prey_policy_name(policy: Any) -> str | None:
    if policy is None:
        return None
    return str(getattr(policy, "name", None) or getattr(policy, "__qualname__", None)
               or type(policy).__qualname__)


class PretrainedPrey:
    """The frozen pretrained prey of a task, run in numpy: a deterministic policy.

    Each prey has its own MLP (2 hidden ReLU layers, tanh output) on its own observation; the
    weights are read from ``PREY_DIR / <name>.npz`` (see the module docstring). ``sha256`` is the
    weight file's, ``name`` ``"pretrained-<first 12 hex digits>"``.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no pretrained prey at {path}; it is trained with "
                                    "`python -m collection.matd3 --set train_prey=true` and "
                                    "exported with --export-prey")
        raw = path.read_bytes()
        self.path, self.sha256 = path, hashlib.sha256(raw).hexdigest()
        self.name = f"pretrained-{self.sha256[:12]}"
        with np.load(path, allow_pickle=False) as arrays:
            names = sorted(k for k in arrays.files if k.startswith("hidden_"))
            self._layers = [(arrays[f"hidden_{i}_weight"].astype(np.float32),
                             arrays[f"hidden_{i}_bias"].astype(np.float32))
                            for i in range(len(names) // 2)]
            self._out = (arrays["out_weight"].astype(np.float32),
                         arrays["out_bias"].astype(np.float32))
        self.n_prey, self.obs_dim = self._layers[0][0].shape[:2]

    def __call__(self, prey_obs: np.ndarray) -> np.ndarray:
        h = np.asarray(prey_obs, np.float32)                               # (B, n_prey, d)
        if h.shape[1:] != (self.n_prey, self.obs_dim):
            raise ValueError(f"prey observations of shape {h.shape[1:]}; this prey takes "
                             f"{(self.n_prey, self.obs_dim)}")
        for weight, bias in self._layers:                  # weight (n_prey, in, out)
            h = np.maximum(np.einsum("bni,nio->bno", h, weight) + bias, 0.0)
        weight, bias = self._out
        return np.tanh(np.einsum("bni,nio->bno", h, weight) + bias).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """What the datasets record about the prey: file, sha256 and how it was trained."""
        doc = {"file": f"marl_offline_bench/data/prey/{self.path.name}", "sha256": self.sha256}
        meta = self.path.with_suffix(".json")
        if meta.is_file():
            trained = json.loads(meta.read_text())
            doc["trained"] = {k: trained.get(k) for k in ("algorithm", "env_steps", "episodes",
                                                          "seed", "wall_s", "eval")}
        return doc


@functools.lru_cache(maxsize=None)
def pretrained_prey(name: str) -> PretrainedPrey:
    """The shipped prey of ``pp`` or ``world`` (loaded once per process; it is stateless)."""
    spec = _spec(name)
    if not spec.prey:
        raise ValueError(f"mpe-{name} has no prey")
    return PretrainedPrey(PREY_DIR / f"{name}.npz")


def _check_prey_policy(spec: _Spec, prey_policy: Any) -> None:
    if not spec.prey and prey_policy is not None:
        raise ValueError(f"mpe-{spec.name} has no prey; do not pass a prey_policy.")
    if prey_policy is not None and not callable(prey_policy):
        raise TypeError(f"prey_policy must be callable, got {type(prey_policy).__name__}")


# -- static facts -------------------------------------------------------------------------------
def _engine_dict(spec: _Spec, engine: str) -> dict[str, Any]:
    mpe2 = {
        "name": "mpe2", "version": _version("mpe2"), "env": spec.mpe2_env,
        "kwargs": {**spec.mpe2_kwargs, "continuous_actions": True, "max_cycles": EPISODE_LIMIT},
    }
    common = {
        "episode_limit": EPISODE_LIMIT,
        "agents": list(spec.agents),
        "learners": list(spec.learners),
        "prey": list(spec.prey),
        "action_mapping": "(x, y) in [-1,1] -> mpe2 [0, max(-x,0), max(x,0), max(-y,0), max(y,0)]",
        "comm_mapping": "(c + 1) / 2" if spec.leader_comm else None,
        "team_reward": ("sum of the agents' rewards" if spec.team_reward == "sum"
                        else "mean of the predators' rewards"),
        "state": "concatenation of the learners' observations",
        "initial_state": "np.random.default_rng(seed), mpe2's draw order",
    }
    if engine == "mpe2":
        return {**mpe2, **common}
    if engine == "jaxmarl":
        return {
            "name": "jaxmarl", "version": _version("jaxmarl"), "jax": _version("jax"),
            "env_id": spec.jaxmarl_id,
            "kwargs": {"action_type": "Continuous", "max_steps": JAXMARL_MAX_STEPS},
            "reference": mpe2, **common,
        }
    raise ValueError(f"Engine {engine!r} cannot run MPE tasks; choose one of {ENGINES}.")


def task_info(name: str, engine: str = "jaxmarl") -> TaskInfo:
    """The static :class:`TaskInfo` of ``mpe-<name>``; ``engine`` only fills ``info.engine``."""
    spec = _spec(name)
    learner_dims = spec.obs_dims[: spec.n_learners]
    action_dims = tuple(2 + (spec.leader_comm if i == 0 else 0) for i in range(spec.n_learners))
    return TaskInfo(
        task_id=f"mpe-{name}",
        agent_ids=spec.learners,
        obs_dims=learner_dims,
        state_dim=sum(learner_dims),
        discrete=False,
        n_actions=0,
        action_dims=action_dims,
        episode_limit=EPISODE_LIMIT,
        engine=_engine_dict(spec, engine),
    )


# -- world state --------------------------------------------------------------------------------
@dataclass
class WorldState:
    """The dynamic state of MPE worlds, in the engines' entity order (agents, then landmarks).

    Attributes:
        p_pos: [..., n_entities, 2] positions.
        p_vel: [..., n_entities, 2] velocities (0 for landmarks).
        c: [..., n_agents, dim_c] communication states (0 for silent agents).
        step: [...] int, steps taken in the episode.
    A single world has no leading axis; a batch has one (see :meth:`stack`, :meth:`index`).
    """

    p_pos: np.ndarray
    p_vel: np.ndarray
    c: np.ndarray
    step: np.ndarray

    @staticmethod
    def stack(states: list[WorldState]) -> WorldState:
        return WorldState(*(np.stack([getattr(s, f.name) for s in states])
                            for f in dataclasses.fields(WorldState)))

    def index(self, i: int) -> WorldState:
        return WorldState(*(np.array(getattr(self, f.name)[i])
                            for f in dataclasses.fields(WorldState)))

    @property
    def batch_size(self) -> int:
        return self.p_pos.shape[0]


def _raw(env: Any) -> Any:
    raw = getattr(env, "unwrapped", env)
    if not hasattr(raw, "world"):
        raise TypeError(f"not an mpe2 environment: {type(env).__name__}")
    return raw


def get_mpe2_world_state(env: Any) -> WorldState:
    """The :class:`WorldState` of an mpe2 env (AEC or parallel, wrapped or raw)."""
    raw = _raw(env)
    world = raw.world
    return WorldState(
        p_pos=np.array([e.state.p_pos for e in world.entities], np.float64),
        p_vel=np.array([e.state.p_vel for e in world.entities], np.float64),
        c=np.array([a.state.c for a in world.agents], np.float64).reshape(
            len(world.agents), world.dim_c),
        step=np.array(raw.steps),
    )


def set_mpe2_world_state(env: Any, state: WorldState) -> None:
    """Put a single :class:`WorldState` into an mpe2 env that has been reset.

    Sets positions, velocities, communication states and mpe2's step counter (which decides
    truncation). Reset the env first if its episode has ended: this does not revive agents.
    """
    raw = _raw(env)
    world = raw.world
    if state.p_pos.shape != (len(world.entities), world.dim_p):
        raise ValueError(f"p_pos shape {state.p_pos.shape} does not fit this world "
                         f"({len(world.entities)} entities)")
    for i, e in enumerate(world.entities):
        e.state.p_pos = np.array(state.p_pos[i], np.float64)
        e.state.p_vel = np.array(state.p_vel[i], np.float64)
    for i, a in enumerate(world.agents):
        a.state.c = np.array(state.c[i], np.float64)
    raw.steps = int(state.step)


def make_mpe2_env(name: str, **kwargs: Any):
    """mpe2's own ``parallel_env`` of a task, with the benchmark's settings."""
    spec = _spec(name)
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    module = importlib.import_module(f"mpe2.{spec.mpe2_env}")
    settings = {**spec.mpe2_kwargs, "continuous_actions": True, "max_cycles": EPISODE_LIMIT,
                **kwargs}
    return module.parallel_env(**settings)


def _initial_positions(spec: _Spec, seed: int, batch: int) -> np.ndarray:
    """[B, n_entities, 2] float64 start positions, drawn as mpe2's reset draws them."""
    rng = np.random.default_rng(seed)
    per_env = sum(2 * count for _, count, _, _ in spec.init_draws)
    draws = rng.random((batch, per_env))
    pos = np.zeros((batch, spec.n_entities, 2), np.float64)
    k = 0
    for first, count, low, high in spec.init_draws:
        d = draws[:, k: k + 2 * count].reshape(batch, count, 2)
        # numpy's Generator.uniform computes low + (high - low) * U, as here.
        pos[:, first: first + count] = low + (high - low) * d
        k += 2 * count
    return pos


# -- engines ------------------------------------------------------------------------------------
class _Mpe2Backend:
    """``batch`` mpe2 parallel envs stepped one after another (the reference)."""

    def __init__(self, spec: _Spec, batch: int):
        self.spec = spec
        self.envs = [make_mpe2_env(spec.name) for _ in range(batch)]
        self._obs = np.zeros((batch, spec.n_agents, max(spec.obs_dims)), np.float32)

    def _observe(self, e: int) -> None:
        raw = self.envs[e].unwrapped
        for i, a in enumerate(self.spec.agents):
            o = raw.observe(a)
            self._obs[e, i, : o.shape[0]] = o

    def _split(self):
        n = self.spec.n_learners
        learn = self._obs[:, :n].copy()
        prey = self._obs[:, n:, : self.spec.prey_obs_dim].copy()
        return learn, prey

    def reset(self, seed: int, positions: np.ndarray):
        zeros = np.zeros_like(positions[0])
        for e, env in enumerate(self.envs):
            env.reset(seed=seed)
            set_mpe2_world_state(env, WorldState(
                positions[e], zeros, np.zeros((self.spec.n_agents, self.spec.dim_c)), np.array(0)))
            self._observe(e)
        return self._split()

    def step(self, learn_act: np.ndarray, prey_act: np.ndarray):
        spec = self.spec
        batch = len(self.envs)
        rewards = np.zeros((batch, spec.n_agents), np.float32)
        terminated = np.zeros(batch, bool)
        truncated = np.zeros(batch, bool)
        for e, env in enumerate(self.envs):
            if not env.agents:  # ended: undefined by the vector contract; keep the last values
                truncated[e] = True
                continue
            actions = {}
            for i, a in enumerate(spec.learners):
                comm = spec.leader_comm if i == 0 else 0
                actions[a] = _to_mpe2_agent_action(learn_act[e, i], comm)
            for j, a in enumerate(spec.prey):
                actions[a] = to_mpe2_action(prey_act[e, j])
            obs, rew, terms, truncs, _ = env.step(actions)
            for i, a in enumerate(spec.agents):
                o = obs[a]
                self._obs[e, i, : o.shape[0]] = o
                rewards[e, i] = rew[a]
            terminated[e] = any(terms.values())
            truncated[e] = any(truncs.values()) and not terminated[e]
        learn, prey = self._split()
        return learn, prey, rewards, terminated, truncated

    def get_world_state(self) -> WorldState:
        return WorldState.stack([get_mpe2_world_state(env) for env in self.envs])

    def set_world_state(self, state: WorldState):
        for e, env in enumerate(self.envs):
            env.reset()  # revive ended episodes; everything it drew is overwritten below
            set_mpe2_world_state(env, state.index(e))
            self._observe(e)
        return self._split()

    def close(self) -> None:
        for env in self.envs:
            env.close()


@functools.lru_cache(maxsize=None)
def _jax_functions(name: str):
    """JaxMARL env of a task and its batched, jitted (make_state, step) functions.

    Cached per task, so that every vector env of a task shares the compiled code (jax compiles
    once per batch size).
    """
    import jax
    import jax.numpy as jnp
    import jaxmarl
    from jaxmarl.environments.mpe.simple import State

    spec = _spec(name)
    env = jaxmarl.make(spec.jaxmarl_id, action_type="Continuous", max_steps=JAXMARL_MAX_STEPS)
    obs_dim = max(spec.obs_dims[: spec.n_learners])
    prey_dim = spec.prey_obs_dim
    key = jax.random.PRNGKey(0)  # these scenarios have no motor or comm noise: the key is unused

    def split_obs(obs: dict):
        learn = jnp.stack([jnp.pad(obs[a], (0, obs_dim - obs[a].shape[0])) for a in spec.learners])
        if spec.prey:
            prey = jnp.stack([jnp.pad(obs[a], (0, prey_dim - obs[a].shape[0])) for a in spec.prey])
        else:
            prey = jnp.zeros((0, 0), jnp.float32)
        return learn.astype(jnp.float32), prey.astype(jnp.float32)

    def make_state(p_pos, p_vel, c, step):
        state = State(p_pos=p_pos, p_vel=p_vel, c=c, done=step > JAXMARL_MAX_STEPS, step=step)
        learn, prey = split_obs(env.get_obs(state))
        return state, learn, prey

    def to5(xy):
        xy = jnp.clip(xy, -1.0, 1.0)
        x, y = xy[0], xy[1]
        return jnp.stack([jnp.zeros_like(x), jnp.maximum(-x, 0.0), jnp.maximum(x, 0.0),
                          jnp.maximum(-y, 0.0), jnp.maximum(y, 0.0)])

    def step(state, learn_act, prey_act):
        actions = {}
        for i, a in enumerate(spec.learners):
            move = to5(learn_act[i, :2])
            if i == 0 and spec.leader_comm:
                comm = (jnp.clip(learn_act[i, 2: 2 + spec.leader_comm], -1.0, 1.0) + 1.0) / 2.0
                move = jnp.concatenate([move, comm])
            actions[a] = move
        for j, a in enumerate(spec.prey):
            actions[a] = to5(prey_act[j])
        obs, state, rew, dones, _ = env.step_env(key, state, actions)
        learn, prey = split_obs(obs)
        rewards = jnp.stack([jnp.asarray(rew[a], jnp.float32) for a in spec.agents])
        return state, learn, prey, rewards, dones["__all__"]

    return env, jax.jit(jax.vmap(make_state)), jax.jit(jax.vmap(step))


class _JaxBackend:
    """JaxMARL's MPE over a batch: one jitted, vmapped call per step."""

    def __init__(self, spec: _Spec, batch: int):
        self.spec = spec
        self.batch = batch
        self.env, self._make_state, self._step = _jax_functions(spec.name)
        self._state = None

    def _from_arrays(self, p_pos, p_vel, c, step):
        import jax

        self._state, learn, prey = self._make_state(
            np.asarray(p_pos, np.float32), np.asarray(p_vel, np.float32),
            np.asarray(c, np.float32), np.asarray(step, np.int32))
        learn, prey = jax.device_get((learn, prey))
        return np.array(learn), np.array(prey)

    def reset(self, seed: int, positions: np.ndarray):
        b, spec = self.batch, self.spec
        return self._from_arrays(positions, np.zeros_like(positions),
                                 np.zeros((b, spec.n_agents, spec.dim_c)), np.zeros(b, np.int32))

    def step(self, learn_act: np.ndarray, prey_act: np.ndarray):
        import jax

        self._state, learn, prey, rewards, done = self._step(self._state, learn_act, prey_act)
        learn, prey, rewards, done = jax.device_get((learn, prey, rewards, done))
        return (np.array(learn), np.array(prey), np.array(rewards),
                np.zeros(self.batch, bool), np.array(done, bool))

    def get_world_state(self) -> WorldState:
        import jax

        s = jax.device_get(self._state)
        return WorldState(p_pos=np.array(s.p_pos), p_vel=np.array(s.p_vel), c=np.array(s.c),
                          step=np.array(s.step))

    def set_world_state(self, state: WorldState):
        return self._from_arrays(state.p_pos, state.p_vel, state.c, state.step)

    def close(self) -> None:
        self._state = None


# -- the adapters -------------------------------------------------------------------------------
class MPEVectorEnv(VectorTaskEnv):
    """``num_envs`` copies of an MPE task stepped together (see the module docstring).

    Args:
        name: ``"cn"``, ``"pp"`` or ``"world"``.
        num_envs: batch size B.
        engine: ``"jaxmarl"`` (vectorised, default) or ``"mpe2"`` (a Python loop over mpe2 envs).
        prey_policy: for ``pp`` / ``world``, ``prey_policy(prey_obs [B, n_prey, d]) -> [B,
            n_prey, 2]`` in [-1, 1]; None (the default) drives the prey with the shipped
            :class:`PretrainedPrey`.

    ``reset(seed)`` is deterministic in the seed (positions drawn as mpe2 does, copy 0 exactly
    mpe2's ``reset(seed=seed)``); ``step(actions [B, n_agents, action_dim])`` with actions in
    [-1, 1] (padded entries ignored). Episodes end by truncation after 25 steps. After a step,
    ``last_all_rewards`` [B, n_all_agents] holds every agent's reward, the prey's included, and
    :attr:`prey_observations` the prey's observations.
    """

    def __init__(self, name: str, num_envs: int, engine: str = "jaxmarl",
                 prey_policy: PreyPolicy | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        spec = _spec(name)
        _check_prey_policy(spec, prey_policy)
        info = task_info(name, engine)
        if spec.prey and prey_policy is None:
            prey_policy = pretrained_prey(name)
            info.engine["pretrained_prey"] = prey_policy.describe()
        info.engine["prey_policy"] = _prey_policy_name(prey_policy)
        self.info = info
        self.spec = spec
        self.name = name
        self.engine = engine
        self.num_envs = num_envs
        self.prey_policy = prey_policy
        backend = {"jaxmarl": _JaxBackend, "mpe2": _Mpe2Backend}[engine]
        self._backend = backend(spec, num_envs)
        self._state_mask = info.obs_mask
        self._prey_obs: np.ndarray | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _observation(self, learn: np.ndarray, prey: np.ndarray) -> VecObservation:
        self._prey_obs = prey
        state = learn[:, self._state_mask].astype(np.float32)
        return VecObservation(obs=learn.astype(np.float32, copy=False), state=state,
                              avail_actions=None)

    def _prey_actions(self) -> np.ndarray:
        n_prey = len(self.spec.prey)
        if not n_prey:
            return np.zeros((self.num_envs, 0, 2), np.float32)
        act = np.asarray(self.prey_policy(self._prey_obs.copy()), dtype=np.float32)
        if act.shape != (self.num_envs, n_prey, 2):
            raise ValueError(f"prey_policy returned shape {act.shape}; expected "
                             f"{(self.num_envs, n_prey, 2)}")
        return np.clip(act, -1.0, 1.0)

    @property
    def prey_observations(self) -> np.ndarray | None:
        """[B, n_prey, prey_obs_dim] the prey's current observations (what the prey policy sees)."""
        return None if self._prey_obs is None else self._prey_obs.copy()

    # -- the interface ---------------------------------------------------------------------
    def reset(self, seed: int) -> VecObservation:
        seed = int(seed)
        if hasattr(self.prey_policy, "reset"):
            self.prey_policy.reset(seed)
        positions = _initial_positions(self.spec, seed, self.num_envs)
        return self._observation(*self._backend.reset(seed, positions))

    def step(self, actions: np.ndarray) -> VecStep:
        info = self.info
        if self._prey_obs is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, info.n_agents, info.action_dim)
        if actions.shape != expected:
            raise ValueError(f"MPE actions must have shape {expected}, got {actions.shape}")
        prey_act = self._prey_actions()
        learn, prey, rewards, terminated, truncated = self._backend.step(actions, prey_act)
        agent_rewards = rewards[:, : self.spec.n_learners].astype(np.float32)
        if self.spec.team_reward == "sum":
            team = agent_rewards.sum(axis=1, dtype=np.float64)
        else:
            team = agent_rewards.mean(axis=1, dtype=np.float64)
        self.last_all_rewards = rewards  # every agent's, prey included
        return VecStep(
            next=self._observation(learn, prey),
            reward=team.astype(np.float32),
            agent_rewards=agent_rewards,
            terminated=terminated,
            truncated=truncated & ~terminated,
        )

    def get_world_state(self) -> WorldState:
        """The batch's :class:`WorldState` ([B, ...] arrays)."""
        return self._backend.get_world_state()

    def set_world_state(self, state: WorldState) -> VecObservation:
        """Continue every copy from ``state`` ([B, ...], e.g. from mpe2 envs via
        ``WorldState.stack([get_mpe2_world_state(e) for e in envs])``); returns the observations."""
        if state.p_pos.shape != (self.num_envs, self.spec.n_entities, 2):
            raise ValueError(f"state p_pos shape {state.p_pos.shape}; expected "
                             f"{(self.num_envs, self.spec.n_entities, 2)}")
        step = np.broadcast_to(np.asarray(state.step), (self.num_envs,))
        state = WorldState(state.p_pos, state.p_vel, state.c, np.array(step))
        return self._observation(*self._backend.set_world_state(state))

    def close(self) -> None:
        self._backend.close()


class MPEEnv(TaskEnv):
    """One MPE episode at a time as a PettingZoo ``ParallelEnv`` (mpe2 by default).

    ``reset(seed=s)`` starts where mpe2's ``reset(seed=s)`` starts, on either engine; ``engine=
    "jaxmarl"`` runs JaxMARL's MPE with a batch of 1. See :class:`MPEVectorEnv` for the rest.
    """

    def __init__(self, name: str, engine: str = "mpe2", prey_policy: PreyPolicy | None = None):
        self._core = MPEVectorEnv(name, 1, engine=engine, prey_policy=prey_policy)
        self.info = self._core.info
        self.name = name
        self.engine = engine
        self._unseeded = np.random.default_rng()
        super().__init__()

    def _split(self, vobs: VecObservation) -> list[np.ndarray]:
        self._last = vobs
        return [vobs.obs[0, i, :d].copy() for i, d in enumerate(self.info.obs_dims)]

    def _reset(self, seed):
        seed = int(self._unseeded.integers(2**31)) if seed is None else int(seed)
        return self._split(self._core.reset(seed)), None

    def _step(self, actions):
        info = self.info
        batch = np.zeros((1, info.n_agents, info.action_dim), np.float32)
        for i, (a, d) in enumerate(zip(actions, info.action_dims)):
            a = np.asarray(a, dtype=np.float32).reshape(-1)
            if a.shape[0] != d:
                raise ValueError(f"{info.agent_ids[i]} takes a {d}-dim action, got {a.shape[0]}")
            batch[0, i, :d] = a
        out = self._core.step(batch)
        return dict(
            obs=self._split(out.next),
            avail=None,
            agent_rewards=out.agent_rewards[0],
            reward=float(out.reward[0]),
            terminated=bool(out.terminated[0]),
            truncated=bool(out.truncated[0]),
        )

    def state(self) -> np.ndarray:
        return self._last.state[0].copy()

    @property
    def prey_observations(self) -> np.ndarray | None:
        """[n_prey, prey_obs_dim] the prey's current observations."""
        p = self._core.prey_observations
        return None if p is None else p[0]

    def get_world_state(self) -> WorldState:
        """The single world's :class:`WorldState`."""
        return self._core.get_world_state().index(0)

    def set_world_state(self, state: WorldState) -> dict[str, np.ndarray]:
        """Continue from a single :class:`WorldState`; returns the observations dict."""
        batched = WorldState(*(np.asarray(getattr(state, f.name))[None]
                               for f in dataclasses.fields(WorldState)))
        self.agents = list(self.possible_agents)
        return self._as_dict(self._split(self._core.set_world_state(batched)))

    def close(self) -> None:
        self._core.close()
