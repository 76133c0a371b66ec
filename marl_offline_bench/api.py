"""The small public API: load a dataset, list the registry, read a dataset's card."""
from __future__ import annotations

from typing import Any

from . import storage
from .collect import build_blocker, collect_dataset
from .dataset import MARLDataset
from .envs import task_info
from .registry import DATASETS, DatasetEntry, get_dataset, recorded_statistics, reference_scores


def collect_command(entry: DatasetEntry) -> str:
    """The CLI command that builds a registered dataset."""
    task = entry.task
    where = f"--map {task.name}" if task.family == "smac" else f"--task {task.name}"
    return f"marl-bench collect --env {task.family} {where} --quality {entry.quality}"


def load(dataset_id: str, build: bool = True, progress: bool = True) -> MARLDataset:
    """Load a registered dataset as a :class:`MARLDataset`, building it first if needed.

    Args:
        dataset_id: e.g. ``"equal_line-n6-random-v0"`` (``marl-bench list`` shows them all).
        build: when the dataset is not on disk, build it from what the package ships (as D4RL
            downloads on first use); with ``build=False`` that is an error instead.
        progress: show progress bars while building.

    Raises:
        KeyError: unknown id; the message lists the nearest registered ids.
        FileNotFoundError: not built and ``build=False``; the message gives the command.
        RuntimeError: not built and not buildable by this installation (the message says why).
        storage.CorruptDatasetError: the data file fails its checksum (the message names it).
    """
    entry = get_dataset(dataset_id)
    if not storage.is_built(entry.minari_id):
        if not build:
            raise FileNotFoundError(
                f"{dataset_id} is not on disk under {storage.minari_root()}. Build it with:\n"
                f"  {collect_command(entry)}\nor call load({dataset_id!r}) with build=True."
            )
        collect_dataset(dataset_id, show_progress=progress)
    info = task_info(entry.task_id)
    data = storage.read_dataset(entry.minari_id, info)
    card = dataset_card(dataset_id)
    return MARLDataset(data, dataset_id=dataset_id, task_id=entry.task_id, card=card,
                       obs_mask=info.obs_mask, action_mask=info.action_mask)


def dataset_card(dataset_id: str) -> dict[str, Any]:
    """Everything known about a dataset: recipe, status, statistics, references, path, checksum."""
    entry = get_dataset(dataset_id)
    built = storage.is_built(entry.minari_id)
    blocker = build_blocker(entry)
    card: dict[str, Any] = {
        "dataset_id": dataset_id,
        "minari_id": entry.minari_id,
        "task_id": entry.task_id,
        "quality": entry.quality,
        "recipe": entry.recipe,
        "status": "built" if built else ("buildable" if blocker is None else "not buildable"),
        "reference_scores": reference_scores(entry.task_id),
        "collect_command": collect_command(entry),
    }
    if blocker and not built:
        card["why_not_buildable"] = blocker
    recorded = recorded_statistics(dataset_id)
    if recorded:
        # The canonical build's numbers, shipped with the package: known before building.
        card["canonical_build"] = {k: recorded[k] for k in ("statistics", "sha256", "size_bytes",
                                                            "commit", "canonical") if k in recorded}
    if built:
        root = storage.dataset_dir(entry.minari_id)
        meta = storage.read_metadata(entry.minari_id)
        ours = meta.get("marl_bench", {})
        card.update(
            path=str(root),
            size_bytes=sum(p.stat().st_size for p in (root / "data").glob("*")),
            sha256=ours.get("sha256"),
            recipe=ours.get("recipe", entry.recipe),
            statistics=ours.get("statistics", {}),
            engine=ours.get("engine", {}),
            versions=ours.get("versions", {}),
            commit=ours.get("commit"),
        )
    return card


def list_datasets(family: str | None = None, quality: str | None = None,
                  task: str | None = None) -> list[dict[str, Any]]:
    """Registered datasets with their status (``built``, ``buildable`` or ``not buildable``)."""
    rows = []
    for dataset_id, entry in DATASETS.items():
        if family and entry.task.family != family:
            continue
        if quality and entry.quality != quality:
            continue
        if task and entry.task_id != task and entry.task.name != task:
            continue
        built = storage.is_built(entry.minari_id)
        blocker = build_blocker(entry)
        rows.append({"dataset_id": dataset_id, "task_id": entry.task_id,
                     "quality": entry.quality,
                     "status": "built" if built else ("buildable" if blocker is None
                                                       else "not buildable")})
    return rows
