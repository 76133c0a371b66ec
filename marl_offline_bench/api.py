"""The small public API: load a dataset, list the registry, read a dataset's card, check a
build against the canonical one."""
from __future__ import annotations

from typing import Any

from . import storage
from .collect import build_blocker, collect_dataset
from .dataset import MARLDataset
from .envs import task_info
from .registry import (DATASETS, DatasetEntry, canonical_episode_digests, get_dataset,
                       recorded_statistics, reference_scores)


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
        PermissionError: not built and the datasets root is not writable (checked first).
        storage.CorruptDatasetError: the data file fails its checksum (the message names it).
        TypeError: ``dataset_id`` is not a string.
    """
    entry = get_dataset(dataset_id)
    if storage.is_damaged(entry.minari_id):
        root = storage.dataset_dir(entry.minari_id)
        raise FileNotFoundError(
            f"{root} exists but has no data/metadata.json: the dataset is damaged (a file was "
            f"deleted, or a build was interrupted by hand). Rebuild it with:\n"
            f"  {collect_command(entry)} --force\nor delete {root} and load it again.")
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
    if storage.is_damaged(entry.minari_id):
        card["status"] = "damaged"
        card["collect_command"] += " --force"
        card["damaged"] = (f"{storage.dataset_dir(entry.minari_id)} exists without "
                           "data/metadata.json; rebuild it with --force or delete the folder.")
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
            disk_bytes=storage.folder_bytes(root),  # with the flat cache load() keeps
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
    """Registered datasets with their status (``built``, ``buildable``, ``not buildable`` or
    ``damaged``: a folder without its metadata, which only a ``--force`` build replaces)."""
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
        status = "built" if built else ("buildable" if blocker is None else "not buildable")
        if not built and storage.is_damaged(entry.minari_id):
            status = "damaged"  # its folder is in the way of a build without --force
        rows.append({"dataset_id": dataset_id, "task_id": entry.task_id,
                     "quality": entry.quality, "status": status})
    return rows


def dataset_sha256(dataset_id: str) -> str:
    """The SHA-256 of a built dataset's data file, checked against the one its metadata
    records: the identity of the bytes a run trains on (compare with the canonical build's in
    ``dataset_card(dataset_id)["canonical_build"]["sha256"]``).

    Raises:
        FileNotFoundError: the dataset is not built.
        storage.CorruptDatasetError: the file does not match its record.
    """
    entry = get_dataset(dataset_id)
    if not storage.is_built(entry.minari_id):
        raise FileNotFoundError(f"{dataset_id} is not built under {storage.minari_root()}; "
                                f"build it with `{collect_command(entry)}`.")
    return storage.data_sha256(entry.minari_id)


#: Statistics compared by :func:`verify_dataset`, in the order they are reported.
_COMPARED = ("episodes", "transitions", "return_mean", "return_std", "return_min", "return_max",
             "episode_length_mean", "win_rate")


def verify_dataset(dataset_id: str) -> dict[str, Any]:
    """Whether the local build of a dataset holds the canonical build's bytes, and if not where
    and how it differs.

    The data file is hashed afresh (not from the load-time stamp) and compared with the SHA-256
    recorded for the canonical build in ``data/dataset_statistics.json``.

    Returns:
        A dict with ``matches`` (bool), ``local_sha256``, ``canonical_sha256``,
        ``recipe_differences`` (recipe keys whose values differ from the canonical recipe),
        ``note`` (where the canonical build chose actions another way than this version),
        ``statistics`` (per statistic: local, canonical, local - canonical; only those that
        differ), ``first_differing_episode`` (an int, None when every compared episode agrees,
        or absent when the canonical build's per-episode digests are not shipped) and
        ``episodes_compared``.

    Raises:
        KeyError: unknown id.
        FileNotFoundError: not built (the message gives the command).
        LookupError: no canonical build is recorded for this id.
        storage.CorruptDatasetError: the file does not match its own metadata.
    """
    entry = get_dataset(dataset_id)
    canonical = recorded_statistics(dataset_id)
    if not canonical or "sha256" not in canonical:
        raise LookupError(f"{dataset_id} has no recorded canonical build to compare with "
                          "(`marl-bench info` lists what is recorded).")
    if not storage.is_built(entry.minari_id):
        raise FileNotFoundError(f"{dataset_id} is not built under {storage.minari_root()}; "
                                f"build it with `{collect_command(entry)}`, then verify it.")
    root = storage.dataset_dir(entry.minari_id)
    ours = storage.read_metadata(entry.minari_id).get("marl_bench", {})
    local_sha = storage.sha256_file(root / "data" / storage.DATA_FILE)
    if local_sha != ours.get("sha256"):
        raise storage.CorruptDatasetError(
            f"{root / 'data' / storage.DATA_FILE} does not match the SHA-256 its own metadata "
            f"records ({local_sha[:16]}... vs {str(ours.get('sha256'))[:16]}...): the file is "
            f"corrupt. Rebuild it with `{collect_command(entry)} --force`.")
    report: dict[str, Any] = {
        "dataset_id": dataset_id, "path": str(root), "local_sha256": local_sha,
        "canonical_sha256": canonical["sha256"], "matches": local_sha == canonical["sha256"],
    }
    wanted, built = canonical.get("recipe", {}), ours.get("recipe", {})
    report["recipe_differences"] = {
        k: {"local": built.get(k), "canonical": wanted.get(k)}
        for k in ("episodes", "seed", "num_envs", "behaviour_sha256", "epsilon", "noise_std",
                  "action_choice")
        if (k in wanted or k in built) and built.get(k) != wanted.get(k)}
    if "action_choice" in built and "action_choice" not in wanted:
        report["note"] = (
            "The canonical build was made before the behaviour agents chose in float64: it "
            "chose in float32 with torch's scalar CPU kernels. Where two Q-values lie a "
            "rounding apart the two choices can differ, so a rebuild made now can part from "
            "it although both are faithful to the recipe; its canonical record is to be "
            "re-made with the float64 choice.")
    local_stats, canon_stats = ours.get("statistics", {}), canonical.get("statistics", {})
    report["statistics"] = {}
    for key in _COMPARED:
        a, b = local_stats.get(key), canon_stats.get(key)
        if a is not None and b is not None and a != b:
            report["statistics"][key] = {"local": a, "canonical": b, "difference": a - b}
    if report["matches"]:
        report["first_differing_episode"] = None
        return report
    reference = canonical_episode_digests(dataset_id)
    if reference is not None:
        local = storage.read_episode_digests(entry.minari_id, task_info(entry.task_id))
        n = min(len(local), len(reference))
        first = next((k for k in range(n) if local[k] != reference[k]), None)
        if first is None and len(local) != len(reference):
            first = n
        report["first_differing_episode"] = first
        report["episodes_compared"] = n
        report["differing_episodes"] = sum(a != b for a, b in zip(local, reference)) \
            + abs(len(local) - len(reference))
    return report
