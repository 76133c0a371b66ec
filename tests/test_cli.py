"""The CLI's answers to bad input, and a collect/list/info round trip."""
import json

import pytest

from marl_offline_bench.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_all_65_ids(capsys, minari_root):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "65 datasets over 13 tasks" in out
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert {r["status"] for r in rows} <= {"built", "buildable", "not buildable"}
    buildable = {r["dataset_id"] for r in rows if r["status"] == "buildable"}
    randoms = {r["dataset_id"] for r in rows if r["quality"] == "random"}
    assert randoms <= buildable        # pp and world too: their pretrained prey ships


def test_unknown_task_lists_valid_ones(capsys, minari_root):
    code, _, err = run(capsys, "collect", "--env", "equal_line", "--task", "n7", "--quality", "random")
    assert code == 2 and "n2, n4, n6, n8, n10" in err
    code, _, err = run(capsys, "collect", "--env", "smac", "--map", "3m", "--quality", "random")
    assert code == 2 and "2s3z, 3s_vs_5z, 5m_vs_6m, 6h_vs_8z" in err
    code, _, err = run(capsys, "collect", "--env", "smac", "--quality", "random")
    assert code == 2 and "--map" in err


def test_unknown_env_and_quality_list_valid_ones(capsys, minari_root):
    with pytest.raises(SystemExit):
        main(["collect", "--env", "atari", "--task", "x", "--quality", "random"])
    assert "equal_line" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["collect", "--env", "mpe", "--task", "cn", "--quality", "great"])
    assert "medium-replay" in capsys.readouterr().err


def test_unknown_id_in_info(capsys, minari_root):
    code, _, err = run(capsys, "info", "mpe-world-meduim-v0")
    assert code == 2 and "mpe-world-medium-v0" in err


def test_unbuildable_quality_says_why(capsys, minari_root):
    # Every default-engine dataset is buildable now; other engines' data are not all.
    code, _, err = run(capsys, "collect", "--env", "smac", "--map", "2s3z", "--quality", "expert",
                       "--engine", "sc2")
    assert code == 2 and "QMIX" in err and "StarCraft II" in err
    code, _, err = run(capsys, "collect", "--env", "mpe", "--task", "cn", "--quality",
                       "medium-replay", "--engine", "mpe2")
    assert code == 2 and "no mpe2 variant" in err


def test_collect_then_info(capsys, minari_root):
    code, out, _ = run(capsys, "collect", "--env", "equal_line", "--task", "n2", "--quality",
                       "random", "--episodes", "12", "--seed", "4", "--quiet")
    assert code == 0 and "equal_line-n2-random-v0" in out
    code, out, _ = run(capsys, "info", "equal_line-n2-random-v0", "--json")
    card = json.loads(out)
    assert card["status"] == "built" and card["statistics"]["episodes"] == 12
    assert card["recipe"]["seed"] == 4 and len(card["sha256"]) == 64
    code, out, _ = run(capsys, "collect", "--env", "equal_line", "--task", "n2", "--quality",
                       "random", "--episodes", "12", "--seed", "4", "--quiet")
    assert code == 0 and "already built with this recipe" in out
    code, _, err = run(capsys, "collect", "--env", "equal_line", "--task", "n2", "--quality",
                       "random", "--episodes", "12", "--quiet")
    assert code == 2 and "--force" in err, "another seed must not silently keep the old data"


def test_collect_builds_several_at_once(capsys, minari_root):
    code, out, _ = run(capsys, "collect", "--env", "equal_line", "--task", "n2,n4", "--quality",
                       "random", "--episodes", "12", "--workers", "2", "--quiet")
    assert code == 0
    assert "equal_line-n2-random-v0: written" in out and "equal_line-n4-random-v0: written" in out
    code, out, _ = run(capsys, "info", "equal_line-n4-random-v0", "--json")
    assert json.loads(out)["statistics"]["episodes"] == 12
    code, _, err = run(capsys, "collect", "--env", "equal_line", "--task", "n2", "--quality",
                       "random", "--workers", "0")
    assert code == 2 and "--workers must be at least 1" in err
    code, _, err = run(capsys, "collect", "--env", "equal_line", "--task", "n2", "--quality",
                       "random", "--workers", "2", "--executor", "ray")
    assert code == 2 and "--executor local" in err
