"""`marl-bench verify`: are the local bytes the canonical build's, and if not where they part."""
import json

import pytest

from marl_offline_bench import storage
from marl_offline_bench.api import verify_dataset
from marl_offline_bench.cli import main
from marl_offline_bench.collect import collect_dataset
from marl_offline_bench.registry import canonical_episode_digests, get_dataset

# The canonical build of this id ships its per-episode digests, and a build takes seconds.
DATASET = "equal_line-n2-random-v0"


@pytest.fixture(scope="module")
def canonical_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        collect_dataset(DATASET, show_progress=False)
    return root


def test_a_canonical_rebuild_verifies(canonical_root, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(canonical_root))
    assert main(["verify", DATASET]) == 0
    out = capsys.readouterr().out
    assert "OK: the local data file holds the canonical build's bytes" in out
    assert canonical_episode_digests(DATASET) == storage.read_episode_digests(
        get_dataset(DATASET).minari_id)


def test_another_build_names_the_first_differing_episode(minari_root, capsys):
    # Batches of 250 instead of 500: the random policy's draws part from the first step.
    collect_dataset(DATASET, num_envs=250, show_progress=False)
    assert main(["verify", DATASET]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "recipe num_envs: local 250, canonical 500" in out
    report = verify_dataset(DATASET)
    local = storage.read_episode_digests(get_dataset(DATASET).minari_id)
    expected = next(k for k, (a, b) in enumerate(zip(local, canonical_episode_digests(DATASET)))
                    if a != b)
    assert report["first_differing_episode"] == expected
    assert f"first differing episode: {expected} (" in out
    assert "return_mean" in report["statistics"]


def test_a_smaller_build_reports_statistics_without_digests(minari_root, capsys):
    collect_dataset("equal_line-n4-random-v0", episodes=30, show_progress=False)
    assert main(["verify", "equal_line-n4-random-v0", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["statistics"]["episodes"] == {"local": 30, "canonical": 5000,
                                                "difference": -4970}
    assert "first_differing_episode" not in report  # no digests ship for this id


def test_verify_errors_are_messages(minari_root, capsys):
    assert main(["verify", DATASET]) == 2
    assert "marl-bench collect --env equal_line --task n2 --quality random" in \
        capsys.readouterr().err
    collect_dataset(DATASET, episodes=10, show_progress=False)
    main_file = storage.dataset_dir(get_dataset(DATASET).minari_id) / "data" / storage.DATA_FILE
    raw = bytearray(main_file.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0xFF
    main_file.write_bytes(bytes(raw))
    assert main(["verify", DATASET]) == 2
    err = capsys.readouterr().err
    assert str(main_file) in err and "corrupt" in err
