"""Every file load() reads is covered by a recorded checksum (issue 21, item 3)."""
import json
import os

import numpy as np
import pytest

import marl_offline_bench as mob
from marl_offline_bench import storage
from marl_offline_bench.registry import get_dataset

DATASET = "equal_line-n2-random-v0"


@pytest.fixture
def built(minari_root):
    mob.collect_dataset(DATASET, episodes=24, seed=5, num_envs=8, show_progress=False)
    entry = get_dataset(DATASET)
    reference = {k: np.array(v) for k, v in mob.load(DATASET, build=False).items()}
    return storage.dataset_dir(entry.minari_id), reference


def _flip(path, where=0.75):
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0xFF
    path.write_bytes(bytes(raw))


def _age(root, seconds=60):
    """Make every file look written a while ago, as after a real build (the check trusts a
    recorded size and mtime only for files older than the check)."""
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def _same_or_raises(reference):
    try:
        again = mob.load(DATASET, build=False)
    except (OSError, ValueError):
        return
    for key, value in reference.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def _array_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and p.suffix not in (".hdf5", ".json", ".lock"))


@pytest.mark.parametrize("aged", [False, True], ids=["fresh", "verified-long-ago"])
def test_a_flipped_byte_in_any_array_file_is_caught(built, aged):
    root, reference = built
    files = _array_files(root)
    assert any(p.parent.name == "cache" for p in files)
    if aged:
        _age(root)
        mob.load(DATASET, build=False)  # the stamp now vouches for every file
    for path in files:
        _flip(path)
        with pytest.warns(RuntimeWarning, match=str(path)):
            _same_or_raises(reference)


def test_a_valid_replacement_array_is_caught_and_the_cache_rebuilt(built):
    root, reference = built
    rewards = root / "cache" / "rewards.npy"
    np.save(rewards, np.full_like(reference["rewards"], 1000.0))
    with pytest.warns(RuntimeWarning, match="rewards.npy fails its checksum"):
        again = mob.load(DATASET, build=False)
    np.testing.assert_array_equal(again["rewards"], reference["rewards"])
    # rebuilt from the verified data file: the next load is silent and still right
    np.testing.assert_array_equal(np.load(rewards), reference["rewards"])


def test_the_manifest_records_every_cache_file(built):
    root, _ = built
    manifest = json.loads((root / "cache" / "manifest.json").read_text())
    on_disk = sorted(p.name for p in (root / "cache").glob("*.npy"))
    assert sorted(manifest["files"]) == on_disk
    for name, sha in manifest["files"].items():
        assert storage.sha256_file(root / "cache" / name) == sha


def test_files_are_hashed_once_per_size_and_mtime(built, monkeypatch):
    root, reference = built
    _age(root)
    mob.load(DATASET, build=False)
    hashed = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    mob.load(DATASET, build=False)
    assert hashed == []
    path = root / "cache" / "actions.npy"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    mob.load(DATASET, build=False)
    assert hashed == [path]


def test_an_old_format_cache_is_rebuilt(built):
    root, reference = built
    manifest_path = root / "cache" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 1
    del manifest["files"]
    manifest_path.write_text(json.dumps(manifest))
    _same_or_raises(reference)
    assert json.loads(manifest_path.read_text())["format"] == storage.CACHE_FORMAT


def test_episode_digests_are_recorded_and_match_the_data_file(built):
    root, _ = built
    entry = get_dataset(DATASET)
    recorded = storage.read_episode_digests(entry.minari_id)
    assert len(recorded) == 24 and len(set(recorded)) == 24
    from marl_offline_bench.envs import task_info

    from_file = storage.episode_digests(storage.read_episodes_from_hdf5(
        root / "data" / storage.DATA_FILE, task_info(entry.task_id)))
    assert from_file == recorded
