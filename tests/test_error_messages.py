"""Bad input and damaged files end in a message that names the path and the fix, never a
traceback, and is found before the work starts where it can be (issue 21, item 6)."""
import os
import time

import pytest

import marl_offline_bench as mob
from marl_offline_bench import storage
from marl_offline_bench.cli import main
from marl_offline_bench.registry import get_dataset

DATASET = "equal_line-n2-random-v0"


@pytest.fixture
def built(minari_root):
    mob.collect_dataset(DATASET, episodes=12, num_envs=4, show_progress=False)
    return storage.dataset_dir(get_dataset(DATASET).minari_id)


def _error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("content", ["{not json", "[]", '{"marl_bench": []}'])
def test_bad_metadata_is_named_in_info_and_load(built, capsys, content):
    meta = built / "data" / "metadata.json"
    meta.write_text(content)
    assert main(["info", DATASET]) == 2
    err = _error(capsys)
    assert str(meta) in err and "collect the dataset again" in err
    with pytest.raises(mob.CorruptDatasetError, match=str(meta)):
        mob.load(DATASET, build=False)


def test_deleted_metadata_advises_force_and_collect_refuses_before_work(built, capsys):
    (built / "data" / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="--force"):
        mob.load(DATASET)
    assert main(["info", DATASET]) == 0
    out = capsys.readouterr().out
    assert "(damaged)" in out and "--quality random --force" in out
    started = time.time()
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random",
                 "--quiet"]) == 2
    assert time.time() - started < 5, "the damaged folder must be found before collecting"
    err = _error(capsys)
    assert str(built) in err and "--force" in err
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random",
                 "--episodes", "12", "--quiet", "--force"]) == 0
    assert mob.load(DATASET, build=False).n_episodes == 12


def test_a_file_as_datasets_root_fails_before_generating(tmp_path, monkeypatch, capsys):
    root = tmp_path / "not-a-folder"
    root.write_text("")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random",
                 "--quiet"]) == 2
    err = _error(capsys)
    assert str(root) in err and "is a file" in err and "MINARI_DATASETS_PATH" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_datasets_root_fails_before_generating(tmp_path, monkeypatch, capsys):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    started = time.time()
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random",
                 "--quiet"]) == 2
    assert time.time() - started < 5
    err = _error(capsys)
    assert "not writable" in err and "MINARI_DATASETS_PATH" in err


def test_a_non_string_id_is_a_type_error_with_the_fix():
    with pytest.raises(TypeError, match="dataset id is a string"):
        mob.load(123)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "99999999999"], "between 1 and 1000"),
    (["--seeds", "0"], "--seeds 1 is seed 0 alone"),
    (["--seeds=-1,2"], "seeds are non-negative"),
    (["--seeds", "2,2"], "names a seed twice"),
    (["--bootstrap-reps", "-5"], "--bootstrap-reps must be at least 1"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_evaluate_arguments_are_checked_first(minari_root, tmp_path, capsys, args, message):
    assert main(["evaluate", "--algo", "bc", "--out", str(tmp_path / "out"), *args]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_evaluate_out_that_is_a_file_is_named(minari_root, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("")
    assert main(["evaluate", "--algo", "bc", "--datasets", DATASET, "--out", str(out)]) == 2
    err = _error(capsys)
    assert str(out) in err and "--out" in err


def test_leaderboard_rejects_negative_reps(tmp_path, capsys):
    assert main(["leaderboard", "--out", str(tmp_path), "--bootstrap-reps", "-5"]) == 2
    assert "--bootstrap-reps must be at least 1" in _error(capsys)


@pytest.mark.parametrize("flag", ["--episodes", "--num-envs"])
def test_collect_rejects_non_positive_counts(minari_root, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random", flag, "0"])
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_collect_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--seed" in out and "canonical" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    for command in ("list", "info", "verify", "collect", "record", "docs", "evaluate",
                    "leaderboard"):
        assert command in out
