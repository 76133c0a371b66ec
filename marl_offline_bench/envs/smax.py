"""SMAC tasks: JaxMARL's SMAX by default, oxwhirl's ``smac`` on StarCraft II where installed.

Engine ``"smax"`` (the default)
    ``jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(name), **SMAX_SETTINGS)``
    with the settings of JaxMARL's own SMAX baselines (``see_enemy_actions=True``,
    ``walls_cause_death=True``, ``attack_mode="closest"``). The allies (``ally_0`` ..) are the
    team; the enemies are SMAX's scripted heuristic. SMAX is not SMAC: every map has a 100-step
    limit, the reward is the enemies' normalised health loss plus 1 for a win (a return is at
    most 2) and units have no shields. Every ally receives the same reward, which is the team
    reward. The observation is SMAX's ``unit_list`` observation, the global state SMAX's
    ``world_state`` and the available actions ``env.get_avail_actions(state)``.

    Ends: ``terminated`` is set when the battle is over (every ally or every enemy dead), also
    when that happens on the last allowed step; ``truncated`` when the 100-step limit ends a
    battle still going on. Quirk: SMAX's own ``dones["__all__"]`` reads the step counter before
    incrementing it, so on its own it first fires on step 101 (``env.step`` episodes in
    JaxMARL's baselines last up to 101 steps); the adapter ends episodes after step 100
    (``max_steps``), as the task's limit says. ``won`` = every enemy dead and at least one ally
    alive (SMAX pays its win bonus on exactly that condition; both teams dying together is a
    draw).

    Keys: an episode reset with seed ``s`` in copy ``i`` of a batch starts from
    ``key = fold_in(PRNGKey(s), i)``, then ``key, reset_key = split(key)`` and
    ``env.reset(reset_key)``; each step does ``key, step_key = split(key)`` and
    ``env.step_env(step_key, state, actions)`` (``step_env`` rather than ``step``, which
    auto-resets). The single env is copy 0, so ``make_smac_env(m).reset(seed=s)`` replays
    ``make_smac_vec_env(m, B).reset(s)``'s first copy, whatever ``B``.

Engine ``"sc2"``
    oxwhirl's SMAC (``from smac.env import StarCraft2Env``) on StarCraft II, behind the same
    interface: observations ``get_obs_agent``, state ``get_state``, available actions
    ``get_avail_agent_actions``, ``won`` from ``info["battle_won"]``, ``truncated`` from
    ``info["episode_limit"]`` (the env is made with ``continuing_episode=True`` so that SMAC
    reports it). SMAC's action set (no-op, stop, 4 moves, attacks) and reward scale (a return
    up to 20) differ from SMAX's, and the task info's engine name differs, so data from the two
    engines never share an id. StarCraft II seeds a game when it is launched, so by default a
    game keeps the seed of its first ``reset`` and later seeds are ignored; pass
    ``reseed=True`` to relaunch the game whenever a new seed is asked for (seconds per reset).
    SC2 is not bit-reproducible in any case. SMAC refuses unavailable actions; the adapter
    replaces them by stop (alive unit) or no-op (dead unit), as SMAX ignores them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from typing import Any

import numpy as np

from .base import TaskEnv, TaskInfo, VecObservation, VecStep, VectorTaskEnv, import_jaxmarl_quietly

MAPS = ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")
ENGINE_NAMES = {"smax": "jaxmarl.smax", "sc2": "oxwhirl.smac+starcraft2"}
#: Settings of JaxMARL's own SMAX baselines (``baselines/*/config/env/smax.yaml``).
SMAX_SETTINGS: dict[str, Any] = {
    "see_enemy_actions": True,
    "walls_cause_death": True,
    "attack_mode": "closest",
}
SMAX_ENV_ID = "HeuristicEnemySMAX"


def _check_map(name: str) -> None:
    if name not in MAPS:
        raise KeyError(f"Unknown SMAC task {name!r}; valid tasks: {', '.join(MAPS)}.")


def _check_engine(engine: str) -> None:
    if engine not in ENGINE_NAMES:
        raise ValueError(
            f"Engine {engine!r} cannot run smac tasks; choose one of {tuple(ENGINE_NAMES)}."
        )


def derive_seed(seed: int, index: int) -> int:
    """Seed of copy ``index`` of a batch reset with ``seed`` (the sc2 engine; SMAX uses keys)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, index]).generate_state(1)[0] % 2**31)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# =====================================================================================
# Public API
# =====================================================================================
def task_info(name: str, engine: str = "smax", **kw: Any) -> TaskInfo:
    """Static facts about an SMAC task on the given engine (no game is started)."""
    _check_map(name)
    _check_engine(engine)
    if engine == "smax":
        return _smax_core(name, _settings_key(kw)).info
    return _sc2_task_info(name, **kw)


def make_smac_env(name: str, engine: str = "smax", **kw: Any) -> TaskEnv:
    """One SMAC episode at a time (PettingZoo ``ParallelEnv``); SMAX jitted, not vmapped."""
    _check_map(name)
    _check_engine(engine)
    if engine == "smax":
        return SMAXEnv(name, **kw)
    return SC2Env(name, **kw)


def make_smac_vec_env(name: str, num_envs: int, engine: str = "smax", **kw: Any) -> VectorTaskEnv:
    """``num_envs`` SMAC episodes as one batch: ``jax.vmap`` + ``jit`` for SMAX, a loop for sc2."""
    _check_map(name)
    _check_engine(engine)
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    if engine == "smax":
        return SMAXVectorEnv(name, num_envs, **kw)
    return SC2VectorEnv(name, num_envs, **kw)


# =====================================================================================
# SMAX
# =====================================================================================
def _settings_key(kw: dict[str, Any]) -> tuple:
    settings = dict(SMAX_SETTINGS)
    settings.update(kw)
    return tuple(sorted(settings.items()))


_import_jaxmarl = import_jaxmarl_quietly


class _SMAXCore:
    """The jaxmarl env and the jitted per-copy / batched functions for one map and settings.

    Shared by every env of that map (see :func:`_smax_core`) so that JAX compiles each
    function once per process and batch size.
    """

    def __init__(self, name: str, settings: tuple):
        import jax
        import jax.numpy as jnp

        jaxmarl = _import_jaxmarl()
        from jaxmarl.environments.smax import map_name_to_scenario

        self.settings = dict(settings)
        env = jaxmarl.make(SMAX_ENV_ID, scenario=map_name_to_scenario(name), **self.settings)
        self.env = env
        self.agents = list(env.agents)
        n_allies = env.num_allies
        n = len(self.agents)
        obs_dim = int(env.observation_space(self.agents[0]).shape[0])
        n_actions = int(env.action_space(self.agents[0]).n)
        inner = env._env
        state_dim = int(inner.state_size)
        max_steps = int(inner.max_steps)
        self.info = TaskInfo(
            task_id=f"smac-{name}",
            agent_ids=tuple(self.agents),
            obs_dims=(obs_dim,) * n,
            state_dim=state_dim,
            discrete=True,
            n_actions=n_actions,
            action_dims=(),
            episode_limit=max_steps,
            engine={
                "name": ENGINE_NAMES["smax"],
                "version": _version("jaxmarl"),
                "jax_version": _version("jax"),
                "env": SMAX_ENV_ID,
                "map": name,
                **self.settings,
                "max_steps": max_steps,
                "episode_end": (
                    "terminated when every ally or every enemy is dead; truncated after "
                    "max_steps steps (SMAX's own done flag would allow one step more)"
                ),
                "won_battle_bonus": float(inner.won_battle_bonus),
                "observation_type": inner.observation_type,
                "action_type": inner.action_type,
                "n_enemies": int(env.num_enemies),
                "keys": "copy i: fold_in(PRNGKey(seed), i); reset/step split as documented",
            },
        )

        def observe(obs, state):
            o = jnp.stack([obs[a] for a in self.agents]).astype(jnp.float32)
            avail = env.get_avail_actions(state)
            av = jnp.stack([avail[a] for a in self.agents]).astype(bool)
            return o, obs["world_state"].astype(jnp.float32), av

        def reset_one(base_key, index):
            key = jax.random.fold_in(base_key, index)
            key, reset_key = jax.random.split(key)
            obs, state = env.reset(reset_key)
            # Strong dtypes, so that the step function sees the same types after a reset as
            # after a step (a weak int in the heuristic's state would force a recompile).
            state = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)
            return (key, state), observe(obs, state)

        def step_one(carry, actions):
            key, state = carry
            key, step_key = jax.random.split(key)
            act = {a: actions[i] for i, a in enumerate(self.agents)}
            obs, state, rewards, dones, _ = env.step_env(step_key, state, act)
            alive = state.state.unit_alive
            allies_dead = ~jnp.any(alive[:n_allies])
            enemies_dead = ~jnp.any(alive[n_allies:])
            terminated = allies_dead | enemies_dead
            # SMAX's own ``done`` reads the step counter before incrementing it, so it first
            # fires on step max_steps + 1; the adapter ends episodes at max_steps itself.
            truncated = (state.state.step >= max_steps) & ~terminated
            won = enemies_dead & ~allies_dead
            agent_rewards = jnp.stack([rewards[a] for a in self.agents]).astype(jnp.float32)
            o, s, av = observe(obs, state)
            return (key, state), (o, s, av, agent_rewards, terminated, truncated, won)

        self.reset_one = jax.jit(reset_one)
        self.step_one = jax.jit(step_one)
        self.reset_batch = jax.jit(jax.vmap(reset_one, in_axes=(None, 0)))
        self.step_batch = jax.jit(jax.vmap(step_one))
        self._jax = jax

    def base_key(self, seed: int):
        return self._jax.random.PRNGKey(int(seed) % 2**32)


@functools.lru_cache(maxsize=None)
def _smax_core(name: str, settings: tuple) -> _SMAXCore:
    return _SMAXCore(name, settings)


def _host(arrays) -> list[np.ndarray]:
    """Writable numpy copies of device arrays (``np.asarray`` of a JAX array is read-only)."""
    import jax

    return [np.array(a) for a in jax.device_get(arrays)]


class SMAXVectorEnv(VectorTaskEnv):
    """``num_envs`` SMAX battles stepped by one jitted, vmapped call per batched step."""

    def __init__(self, name: str, num_envs: int, **settings: Any):
        _check_map(name)
        self._core = _smax_core(name, _settings_key(settings))
        self.info = self._core.info
        self.num_envs = int(num_envs)
        self._indices = np.arange(self.num_envs, dtype=np.uint32)
        self._carry = None

    def reset(self, seed: int) -> VecObservation:
        import jax.numpy as jnp

        self._carry, obs = self._core.reset_batch(
            self._core.base_key(seed), jnp.asarray(self._indices)
        )
        o, s, av = _host(obs)
        return VecObservation(obs=o, state=s, avail_actions=av)

    def step(self, actions: np.ndarray) -> VecStep:
        if self._carry is None:
            raise RuntimeError("call reset(seed) before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.info.n_agents):
            raise ValueError(
                f"SMAX actions must have shape {(self.num_envs, self.info.n_agents)}, "
                f"got {actions.shape}"
            )
        self._carry, out = self._core.step_batch(self._carry, actions.astype(np.int32, copy=False))
        o, s, av, rew, term, trunc, won = _host(out)
        return VecStep(
            next=VecObservation(obs=o, state=s, avail_actions=av),
            reward=rew[:, 0].copy(),
            agent_rewards=rew,
            terminated=term,
            truncated=trunc,
            won=won,
        )


class SMAXEnv(TaskEnv):
    """One SMAX battle at a time, as a PettingZoo ``ParallelEnv`` (jitted, not vmapped)."""

    def __init__(self, name: str, **settings: Any):
        _check_map(name)
        self._core = _smax_core(name, _settings_key(settings))
        self.info = self._core.info
        self._unseeded = np.random.default_rng()
        self._carry = None
        self._state = np.zeros(self.info.state_dim, np.float32)
        super().__init__()

    def _reset(self, seed):
        import jax.numpy as jnp

        if seed is None:
            seed = int(self._unseeded.integers(2**31))
        self._carry, obs = self._core.reset_one(self._core.base_key(seed), jnp.uint32(0))
        o, s, av = _host(obs)
        self._state = s
        return list(o), av

    def _step(self, actions):
        if self._carry is None:
            raise RuntimeError("call reset() before step()")
        act = np.asarray([int(a) for a in actions], dtype=np.int32)
        self._carry, out = self._core.step_one(self._carry, act)
        o, s, av, rew, term, trunc, won = _host(out)
        self._state = s
        return dict(
            obs=list(o),
            avail=av,
            agent_rewards=rew,
            reward=float(rew[0]),
            terminated=bool(term),
            truncated=bool(trunc),
            won=bool(won),
        )

    def state(self) -> np.ndarray:
        return self._state.copy()


# =====================================================================================
# oxwhirl SMAC on StarCraft II
# =====================================================================================
SC2_INSTALL_HELP = (
    "The 'sc2' engine runs oxwhirl's SMAC on StarCraft II. To use it:\n"
    "  1. pip install git+https://github.com/oxwhirl/smac.git\n"
    "     (the PyPI package named 'smac' is SMAC3, an unrelated hyper-parameter optimiser);\n"
    "  2. install StarCraft II (Linux: the headless build 4.10 from\n"
    "     https://github.com/Blizzard/s2client-proto, password 'iagreetotheeula');\n"
    "  3. unzip the SMAC maps\n"
    "     (https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip)\n"
    "     into $SC2PATH/Maps/SMAC_Maps;\n"
    "  4. set SC2PATH to the StarCraft II folder (default ~/StarCraftII on Linux).\n"
    "Without StarCraft II use the default engine 'smax' (JaxMARL's SMAX)."
)


def _sc2_default_path() -> str:
    if sys.platform == "win32":
        return "C:/Program Files (x86)/StarCraft II"
    if sys.platform == "darwin":
        return "/Applications/StarCraft II"
    return "~/StarCraftII"


def _import_starcraft2_env():
    """oxwhirl's ``StarCraft2Env`` class, or a RuntimeError saying what is missing."""
    if importlib.util.find_spec("smac") is None:
        raise RuntimeError(
            "The 'smac' package (oxwhirl SMAC) is not installed.\n" + SC2_INSTALL_HELP
        )
    try:
        from smac.env import StarCraft2Env
    except ImportError as err:
        import smac

        if importlib.util.find_spec("smac.facade") is not None or hasattr(
            smac, "HyperparameterOptimizationFacade"
        ):
            what = (
                "The installed 'smac' package is SMAC3 (the hyper-parameter optimiser from PyPI), "
                "not oxwhirl's StarCraft Multi-Agent Challenge."
            )
        else:
            what = f"oxwhirl SMAC could not be imported ({type(err).__name__}: {err})."
        raise RuntimeError(what + "\n" + SC2_INSTALL_HELP) from err
    return StarCraft2Env


def _check_starcraft2(name: str) -> str:
    """The StarCraft II folder, or a RuntimeError saying what is missing."""
    where = os.environ.get("SC2PATH")
    path = os.path.expanduser(where or _sc2_default_path())
    source = f"SC2PATH={where!r}" if where else f"SC2PATH is not set and the default {path!r}"
    if not os.path.isdir(os.path.join(path, "Versions")):
        raise RuntimeError(
            f"StarCraft II was not found: {source} does not hold a StarCraft II installation "
            f"(no 'Versions' folder).\n" + SC2_INSTALL_HELP
        )
    map_file = os.path.join(path, "Maps", "SMAC_Maps", f"{name}.SC2Map")
    if not os.path.isfile(map_file):
        raise RuntimeError(f"The SMAC map {map_file!r} is missing.\n" + SC2_INSTALL_HELP)
    return path


SC2_DEFAULTS: dict[str, Any] = {"continuing_episode": True}


def _sc2_task_info(name: str, **kw: Any) -> TaskInfo:
    kw.pop("reseed", None)
    StarCraft2Env = _import_starcraft2_env()
    settings = {**SC2_DEFAULTS, **kw}
    env = StarCraft2Env(map_name=name, **settings)  # constructing does not launch the game
    try:
        env_info = env.get_env_info()
    finally:
        try:
            env.close()
        except Exception:  # noqa: BLE001 - nothing was launched
            pass
    n = int(env_info["n_agents"])
    return TaskInfo(
        task_id=f"smac-{name}",
        agent_ids=tuple(f"ally_{i}" for i in range(n)),
        obs_dims=(int(env_info["obs_shape"]),) * n,
        state_dim=int(env_info["state_shape"]),
        discrete=True,
        n_actions=int(env_info["n_actions"]),
        action_dims=(),
        episode_limit=int(env_info["episode_limit"]),
        engine={
            "name": ENGINE_NAMES["sc2"],
            "version": _version("smac") or getattr(sys.modules.get("smac"), "__version__", None),
            "pysc2_version": _version("pysc2"),
            "map": name,
            "sc2_game_version": settings.get("game_version"),
            "unavailable_actions": "replaced by stop (alive unit) or no-op (dead unit)",
            **{
                k: v
                for k, v in settings.items()
                if isinstance(v, (bool, int, float, str, type(None)))
            },
        },
    )


class _SC2Game:
    """One ``StarCraft2Env`` with the adapter's bookkeeping (seeding, ends, arrays)."""

    def __init__(self, name: str, info: TaskInfo, reseed: bool, settings: dict[str, Any]):
        self._cls = _import_starcraft2_env()
        self.settings = dict(settings)
        self.default_seed = self.settings.pop("seed", None)
        self.name, self.info, self.reseed = name, info, reseed
        self.env = None
        self.seed: int | None = None

    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if seed is None:
            seed = self.default_seed
        if self.env is None or (self.reseed and seed is not None and seed != self.seed):
            self.close()
            self.seed = seed
            self.env = self._cls(map_name=self.name, seed=seed, **self.settings)
        self.env.reset()
        return self.observe()

    def observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env, n = self.env, self.info.n_agents
        obs = np.stack([np.asarray(env.get_obs_agent(i), np.float32) for i in range(n)])
        state = np.asarray(env.get_state(), np.float32)
        avail = np.stack([np.asarray(env.get_avail_agent_actions(i)) for i in range(n)]).astype(
            bool
        )
        return obs, state, avail

    def step(self, actions) -> dict[str, Any]:
        # SMAC asserts that every action is available; SMAX ignores unavailable ones. Replace
        # them by stop (alive units) or no-op (dead units) so that both engines accept any action.
        chosen = []
        for i, a in enumerate(actions):
            avail = self.env.get_avail_agent_actions(i)
            a = int(a)
            if not (0 <= a < len(avail)) or not avail[a]:
                a = 1 if avail[1] else 0
            chosen.append(a)
        reward, done, info = self.env.step(chosen)
        truncated = bool(done) and bool(info.get("episode_limit", False))
        if done and not info:
            # SMAC answers (0, True, {}) when the game crashed and was relaunched.
            truncated = True
        terminated = bool(done) and not truncated
        obs, state, avail = self.observe()
        return dict(
            obs=obs,
            state=state,
            avail=avail,
            reward=float(reward),
            terminated=terminated,
            truncated=truncated,
            won=bool(info.get("battle_won", False)),
        )

    def close(self) -> None:
        if self.env is not None:
            try:
                self.env.close()
            finally:
                self.env = None


def _sc2_setup(name: str, kw: dict[str, Any]) -> tuple[TaskInfo, bool, dict[str, Any]]:
    reseed = bool(kw.pop("reseed", False))
    _import_starcraft2_env()
    _check_starcraft2(name)
    settings = {**SC2_DEFAULTS, **kw}
    info = _sc2_task_info(name, **settings)
    return info, reseed, settings


class SC2Env(TaskEnv):
    """oxwhirl SMAC on StarCraft II, as a PettingZoo ``ParallelEnv``."""

    def __init__(self, name: str, **kw: Any):
        _check_map(name)
        info, reseed, settings = _sc2_setup(name, dict(kw))
        self.info = info
        self._game = _SC2Game(name, info, reseed, settings)
        self._state = np.zeros(info.state_dim, np.float32)
        super().__init__()

    def _reset(self, seed):
        obs, state, avail = self._game.reset(seed)
        self._state = state
        return list(obs), avail

    def _step(self, actions):
        out = self._game.step(actions)
        self._state = out["state"]
        n = self.info.n_agents
        return dict(
            obs=list(out["obs"]),
            avail=out["avail"],
            agent_rewards=np.full(n, out["reward"], np.float32),
            reward=out["reward"],
            terminated=out["terminated"],
            truncated=out["truncated"],
            won=out["won"],
        )

    def state(self) -> np.ndarray:
        return self._state.copy()

    def close(self) -> None:
        self._game.close()


class SC2VectorEnv(VectorTaskEnv):
    """``num_envs`` StarCraft II games stepped in a Python loop."""

    def __init__(self, name: str, num_envs: int, **kw: Any):
        _check_map(name)
        info, reseed, settings = _sc2_setup(name, dict(kw))
        self.info = info
        self.num_envs = int(num_envs)
        self._games = [_SC2Game(name, info, reseed, settings) for _ in range(self.num_envs)]
        self._done = np.zeros(self.num_envs, bool)
        self._last: list[tuple] = []

    def reset(self, seed: int) -> VecObservation:
        self._last = [g.reset(derive_seed(seed, i)) for i, g in enumerate(self._games)]
        self._done[:] = False
        return self._stack(self._last)

    @staticmethod
    def _stack(parts) -> VecObservation:
        obs, state, avail = (np.stack(x) for x in zip(*parts))
        return VecObservation(obs=obs, state=state, avail_actions=avail)

    def step(self, actions: np.ndarray) -> VecStep:
        actions = np.asarray(actions)
        b, n = self.num_envs, self.info.n_agents
        reward = np.zeros(b, np.float32)
        term, trunc, won = (np.zeros(b, bool) for _ in range(3))
        for i, game in enumerate(self._games):
            if self._done[i]:  # ended episodes are not stepped: their outputs are undefined
                continue
            out = game.step(actions[i])
            self._last[i] = (out["obs"], out["state"], out["avail"])
            reward[i], term[i], trunc[i], won[i] = (
                out["reward"],
                out["terminated"],
                out["truncated"],
                out["won"],
            )
            self._done[i] = term[i] or trunc[i]
        return VecStep(
            next=self._stack(self._last),
            reward=reward,
            agent_rewards=np.repeat(reward[:, None], n, axis=1),
            terminated=term,
            truncated=trunc,
            won=won,
        )

    def close(self) -> None:
        for g in self._games:
            g.close()
