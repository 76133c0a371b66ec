"""Every task and every dataset of the benchmark, declared in one place.

A dataset id reads ``{family}-{task}-{quality}-v{N}`` (``mpe-world-medium-v0``,
``smac-3s_vs_5z-expert-v0``, ``mamujoco-halfcheetah_2x3-medium-replay-v0``). Ids are looked up
in :data:`DATASETS`, never split on ``-``: qualities and map names contain dashes and
underscores. Each id maps to the Minari id ``marl-bench/{family}-{task}/{quality}-v{N}``.

Reference scores are measurements, kept in ``data/reference_scores.json`` beside this file with
the number of episodes, the seed and the commit of the run that produced them; the registry
never invents one.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .envs import ENGINES, FAMILIES

QUALITIES: tuple[str, ...] = ("random", "medium-replay", "medium", "expert", "mixed")
NAMESPACE = "marl-bench"
REFERENCE_FILE = Path(__file__).with_name("data") / "reference_scores.json"


@dataclass(frozen=True)
class Task:
    """A benchmark task and how its datasets are sized.

    Attributes:
        task_id: ``{family}-{name}``.
        family: ``equal_line``, ``mpe``, ``mamujoco`` or ``smac``.
        name: the task within its family.
        behaviour: the online learner that makes the behaviour policies (``qmix`` / ``matd3``).
        dataset_episodes: episodes per dataset (the papers' 5000 for SMAC and Equal_Line; 1M
            transitions' worth of fixed-length episodes for MPE and MaMuJoCo).
        needs: what the task needs before any of its datasets can be built, if anything.
    """

    task_id: str
    family: str
    name: str
    behaviour: str
    dataset_episodes: int
    needs: str | None = None

    @property
    def discrete(self) -> bool:
        return self.family in ("equal_line", "smac")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset id and its recipe."""

    dataset_id: str
    task_id: str
    quality: str
    version: int
    recipe: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    engine: str | None = None
    """A simulator other than the family's default (``sc2`` for SMAC on StarCraft II, ``mpe2``
    for MPE's reference engine); None for the default, which is what the canonical datasets,
    shipped behaviour agents and reference scores use."""

    @property
    def minari_id(self) -> str:
        engine = f"-{self.engine}" if self.engine else ""
        return f"{NAMESPACE}/{self.task_id}/{self.quality}{engine}-v{self.version}"

    @property
    def task(self) -> Task:
        return TASKS[self.task_id]


_EPISODE_LIMITS = {"equal_line": 50, "mpe": 25, "mamujoco": 1000, "smac": 100}


def episode_limit(family: str) -> int:
    """The longest episode of a task family (SMAX: 100 steps on every map)."""
    return _EPISODE_LIMITS[family]


def _dataset_episodes(family: str) -> int:
    if family in ("equal_line", "smac"):
        return 5000
    return 1_000_000 // _EPISODE_LIMITS[family]


TASKS: dict[str, Task] = {
    f"{family}-{name}": Task(
        task_id=f"{family}-{name}",
        family=family,
        name=name,
        behaviour="qmix" if family in ("equal_line", "smac") else "matd3",
        dataset_episodes=_dataset_episodes(family),
    )
    for family, (names, _engine) in FAMILIES.items()
    for name in names
}

_RECIPES: dict[str, dict[str, Any]] = {
    "random": {"policy": "uniform over available actions", "behaviour_checkpoint": None},
    "medium": {"policy": "behaviour checkpoint at about 1/3-1/2 of the expert's return"},
    "expert": {"policy": "fully trained behaviour policy"},
    "medium-replay": {"policy": "the behaviour learner's replay until medium performance"},
    "mixed": {"policy": "medium and expert episodes in equal numbers"},
}

def _entry(task: Task, quality: str, engine: str | None = None) -> DatasetEntry:
    suffix = f"-{engine}" if engine else ""
    return DatasetEntry(
        dataset_id=f"{task.task_id}-{quality}{suffix}-v0",
        task_id=task.task_id,
        quality=quality,
        version=0,
        recipe={"task": task.task_id, "quality": quality, "episodes": task.dataset_episodes,
                **_RECIPES[quality], **({"engine": engine} if engine else {})},
        engine=engine,
    )


#: The benchmark's datasets: every task in every quality, on the family's default engine.
DATASETS: dict[str, DatasetEntry] = {
    entry.dataset_id: entry
    for task in TASKS.values()
    for entry in (_entry(task, quality) for quality in QUALITIES)
}

#: The same recipes on another simulator. Data from two engines never share an id, e.g.
#: ``smac-2s3z-random-sc2-v0`` (StarCraft II) beside ``smac-2s3z-random-v0`` (SMAX).
ENGINE_DATASETS: dict[str, DatasetEntry] = {
    entry.dataset_id: entry
    for task in TASKS.values()
    for engine in ENGINES[task.family][1:]
    for entry in (_entry(task, quality, engine) for quality in QUALITIES)
}


#: Engines that reproduce the default one's task exactly enough to share its reference scores
#: (mpe2 is the implementation JaxMARL's MPE reproduces; their observations agree to 1e-5).
#: StarCraft II is another game engine with other observations: no shared references.
SCORE_COMPATIBLE_ENGINES = frozenset({"mpe2"})


def engine_variant(dataset_id: str, engine: str | None) -> DatasetEntry:
    """The entry of a dataset's recipe on ``engine`` (None or the default: the entry itself)."""
    entry = get_dataset(dataset_id)
    default = FAMILIES[entry.task.family][1]
    if engine in (None, default, entry.engine):
        return entry
    if engine not in ENGINES[entry.task.family]:
        raise ValueError(f"Engine {engine!r} cannot run {entry.task.family} tasks; choose one "
                         f"of {ENGINES[entry.task.family]}.")
    return ENGINE_DATASETS[f"{entry.task_id}-{entry.quality}-{engine}-v{entry.version}"]


def nearest_ids(wrong: str, candidates: list[str] | None = None, n: int = 5) -> list[str]:
    """The registered ids closest to a mistyped one."""
    candidates = candidates if candidates is not None else list(DATASETS)
    close = difflib.get_close_matches(wrong, candidates, n=n, cutoff=0.5)
    return close or difflib.get_close_matches(wrong, candidates, n=n, cutoff=0.0)


def get_dataset(dataset_id: str) -> DatasetEntry:
    """The registry entry of a dataset id; an unknown id lists the nearest registered ids.

    Raises:
        TypeError: ``dataset_id`` is not a string.
        KeyError: unknown id (the message lists the nearest registered ones).
    """
    if not isinstance(dataset_id, str):
        raise TypeError(f"A dataset id is a string such as 'equal_line-n6-random-v0', got "
                        f"{type(dataset_id).__name__} {dataset_id!r}; `marl-bench list` shows "
                        "the registered ids.")
    try:
        return DATASETS[dataset_id] if dataset_id in DATASETS else ENGINE_DATASETS[dataset_id]
    except KeyError:
        near = ", ".join(nearest_ids(dataset_id))
        raise KeyError(
            f"Unknown dataset id {dataset_id!r}. Nearest registered ids: {near}. "
            "`marl-bench list` shows them all."
        ) from None


def get_task(task_or_dataset_id: str) -> Task:
    """A task by task id (``smac-2s3z``) or by the id of one of its datasets."""
    if not isinstance(task_or_dataset_id, str):
        raise TypeError(f"A task id is a string such as 'equal_line-n6', got "
                        f"{type(task_or_dataset_id).__name__} {task_or_dataset_id!r}.")
    if task_or_dataset_id in TASKS:
        return TASKS[task_or_dataset_id]
    if task_or_dataset_id in DATASETS or task_or_dataset_id in ENGINE_DATASETS:
        return get_dataset(task_or_dataset_id).task
    near = ", ".join(nearest_ids(task_or_dataset_id, list(TASKS) + list(DATASETS)))
    raise KeyError(f"Unknown task or dataset id {task_or_dataset_id!r}. Nearest: {near}.")


def dataset_id_for(family: str, name: str, quality: str, version: int = 0) -> str:
    """Build and validate an id from its parts (the CLI's ``--env/--task/--quality``)."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown env {family!r}; valid envs: {', '.join(FAMILIES)}.")
    names = FAMILIES[family][0]
    if name not in names:
        raise ValueError(f"Unknown {family} task {name!r}; valid: {', '.join(names)}.")
    if quality not in QUALITIES:
        raise ValueError(f"Unknown quality {quality!r}; valid: {', '.join(QUALITIES)}.")
    return get_dataset(f"{family}-{name}-{quality}-v{version}").dataset_id


def engines(family: str) -> tuple[str, ...]:
    return ENGINES[family]


# -- measured numbers: reference scores and the statistics of the canonical builds ----------
STATISTICS_FILE = Path(__file__).with_name("data") / "dataset_statistics.json"


def _reference_path() -> Path:
    override = os.environ.get("MARL_BENCH_REFERENCE_FILE")
    return Path(override) if override else REFERENCE_FILE


def _statistics_path() -> Path:
    override = os.environ.get("MARL_BENCH_STATISTICS_FILE")
    return Path(override) if override else STATISTICS_FILE


def _read_table(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


@functools.lru_cache(maxsize=8)
def _parsed_table(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    return _read_table(path)


def _lookup_table(path: Path) -> dict[str, Any]:
    """A table for lookups, parsed once per file version (the leaderboards ask for one entry
    at a time, hundreds of times per regeneration). Shared: hand out copies of its entries."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    return _parsed_table(path, stat.st_mtime_ns, stat.st_size)


def _write_table(path: Path, table: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def reference_scores(task_id: str) -> dict[str, dict[str, Any]]:
    """The measured references of a task: ``{"ref_random": {...}, "ref_expert": {...}}``.

    Each entry holds ``value`` (mean return), ``std``, ``episodes`` and the run's provenance.
    Missing keys mean the reference has not been measured yet.
    """
    return copy.deepcopy(_lookup_table(_reference_path()).get(task_id, {}))


def record_reference(task_id: str, kind: str, entry: dict[str, Any]) -> Path:
    """Store one measured reference score (atomically) and return the file written."""
    if kind not in ("ref_random", "ref_expert"):
        raise ValueError(f"kind must be 'ref_random' or 'ref_expert', got {kind!r}")
    get_task(task_id)
    path = _reference_path()
    table = _read_table(path)
    table.setdefault(task_id, {})[kind] = entry
    _write_table(path, table)
    return path


def recorded_statistics(dataset_id: str) -> dict[str, Any] | None:
    """Statistics of the canonical build of a dataset (registry recipe), if one was recorded."""
    return copy.deepcopy(_lookup_table(_statistics_path()).get(dataset_id))


def record_statistics(dataset_id: str, entry: dict[str, Any]) -> Path:
    """Store the statistics and recipe of a dataset's canonical build."""
    get_dataset(dataset_id)
    path = _statistics_path()
    table = _read_table(path)
    table[dataset_id] = entry
    _write_table(path, table)
    return path


def _digests_dir() -> Path:
    """Per-episode digests of canonical builds (``storage.episode_digests``), one file per id,
    in ``episode_digests/`` beside the statistics file."""
    return _statistics_path().with_name("episode_digests")


def canonical_episode_digests(dataset_id: str) -> list[str] | None:
    """The canonical build's per-episode digests, where they ship (None otherwise)."""
    path = _digests_dir() / f"{dataset_id}.txt"
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return None


def record_episode_digests(dataset_id: str, digests: list[str]) -> Path:
    """Ship the per-episode digests of a dataset's canonical build (atomically)."""
    get_dataset(dataset_id)
    folder = _digests_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset_id}.txt"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(digests) + "\n")
    os.replace(tmp, path)
    return path
