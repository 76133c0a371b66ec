"""Task adapters: one interface (:mod:`.base`) over every simulator the benchmark uses.

Simulators are imported only when a task of their family is made, so that ``import
marl_offline_bench`` stays light and a missing optional engine only matters to its own tasks.
"""
from __future__ import annotations

from typing import Any

from .base import TaskEnv, TaskInfo, VecObservation, VecStep, VectorTaskEnv, import_jaxmarl_quietly

__all__ = [
    "TaskEnv", "TaskInfo", "VecObservation", "VecStep", "VectorTaskEnv",
    "make_env", "make_vec_env", "FAMILIES", "ENGINES",
]

#: family -> (task names, default engine)
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "equal_line": (("n2", "n4", "n6", "n8", "n10"), "numpy"),
    "mpe": (("cn", "pp", "world"), "jaxmarl"),
    "mamujoco": (("halfcheetah_2x3",), "gymnasium_robotics"),
    "smac": (("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z"), "smax"),
}

#: family -> engines that can run it. ``mpe2`` is the reference MPE that JaxMARL's MPE is tested
#: against; ``sc2`` is the original SMAC on StarCraft II, used only where a user has installed it.
ENGINES: dict[str, tuple[str, ...]] = {
    "equal_line": ("numpy",),
    "mpe": ("jaxmarl", "mpe2"),
    "mamujoco": ("gymnasium_robotics",),
    "smac": ("smax", "sc2"),
}


def split_task_id(task_id: str) -> tuple[str, str]:
    """``"smac-3s_vs_5z"`` -> ``("smac", "3s_vs_5z")``, checked against :data:`FAMILIES`."""
    family, sep, name = task_id.partition("-")
    if not sep or family not in FAMILIES:
        raise KeyError(
            f"Unknown task {task_id!r}: a task id is '<family>-<task>' with family one of "
            f"{sorted(FAMILIES)}, e.g. 'smac-2s3z'."
        )
    names = FAMILIES[family][0]
    if name not in names:
        raise KeyError(f"Unknown {family} task {name!r}; valid tasks: {', '.join(names)}.")
    return family, name


def _resolve_engine(family: str, engine: str | None) -> str:
    engine = engine or FAMILIES[family][1]
    if engine not in ENGINES[family]:
        raise ValueError(
            f"Engine {engine!r} cannot run {family} tasks; choose one of {ENGINES[family]}."
        )
    return engine


def make_env(task_id: str, engine: str | None = None, **kwargs: Any) -> TaskEnv:
    """A single PettingZoo ``ParallelEnv`` for a task.

    Args:
        task_id: e.g. ``"equal_line-n6"``, ``"mpe-world"``, ``"smac-2s3z"``.
        engine: which simulator; the family's default when ``None``. For MPE the single env
            is mpe2 by default (the reference), for SMAC it is SMAX unless ``engine="sc2"``.
        **kwargs: passed to the adapter (e.g. ``prey_policy`` for ``mpe-pp`` / ``mpe-world``).
    """
    family, name = split_task_id(task_id)
    if family == "equal_line":
        from .equal_line import EqualLineEnv

        return EqualLineEnv(int(name[1:]))
    if family == "mpe":
        import_jaxmarl_quietly()
        from .mpe import MPEEnv

        _resolve_engine(family, engine)
        return MPEEnv(name, engine=engine or "mpe2", **kwargs)
    if family == "mamujoco":
        from .mamujoco import MaMuJoCoEnv

        return MaMuJoCoEnv(name, **kwargs)
    import_jaxmarl_quietly()
    from .smax import make_smac_env

    return make_smac_env(name, engine=_resolve_engine(family, engine), **kwargs)


def make_vec_env(
    task_id: str, num_envs: int, engine: str | None = None, **kwargs: Any
) -> VectorTaskEnv:
    """``num_envs`` copies of a task stepped as one numpy batch (:class:`VectorTaskEnv`)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    family, name = split_task_id(task_id)
    engine = _resolve_engine(family, engine)
    if family == "equal_line":
        from .equal_line import EqualLineVectorEnv

        return EqualLineVectorEnv(int(name[1:]), num_envs)
    if family == "mpe":
        import_jaxmarl_quietly()
        from .mpe import MPEVectorEnv

        return MPEVectorEnv(name, num_envs, engine=engine, **kwargs)
    if family == "mamujoco":
        from .mamujoco import MaMuJoCoVectorEnv

        return MaMuJoCoVectorEnv(name, num_envs, **kwargs)
    import_jaxmarl_quietly()
    from .smax import make_smac_vec_env

    return make_smac_vec_env(name, num_envs, engine=engine, **kwargs)


def task_info(task_id: str, **kwargs: Any) -> TaskInfo:
    """The static :class:`TaskInfo` of a task, without starting a simulator where avoidable."""
    family, name = split_task_id(task_id)
    if family == "equal_line":
        from .equal_line import task_info as equal_line_info

        return equal_line_info(int(name[1:]))
    if family == "mpe":
        import_jaxmarl_quietly()
        from .mpe import task_info as mpe_info

        return mpe_info(name)
    if family == "mamujoco":
        from .mamujoco import task_info as mamujoco_info

        return mamujoco_info(name)
    import_jaxmarl_quietly()
    from .smax import task_info as smax_info

    return smax_info(name, **kwargs)


