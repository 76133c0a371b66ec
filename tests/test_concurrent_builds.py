"""Two builds of one dataset at once: one builds, the other waits and loads (issue 21, item 4)."""
import json
import os
import subprocess
import sys
import time

import marl_offline_bench as mob
from marl_offline_bench import storage
from marl_offline_bench.cli import main
from marl_offline_bench.registry import get_dataset

DATASET = "equal_line-n4-random-v0"

_BUILD_AND_LOAD = f"""
import marl_offline_bench as mob
mob.collect_dataset({DATASET!r}, episodes=300, seed=0, num_envs=50, show_progress=False)
print(mob.load({DATASET!r}, build=False).n_episodes)
"""


def _wait_for(proc, text, timeout=120):
    """Read proc's stderr until a line holds ``text``; return the lines read."""
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"never printed {text!r}: {''.join(lines)[-2000:]}")


def test_second_build_waits_for_the_first_and_loads_its_result(minari_root):
    entry = get_dataset(DATASET)
    procs = []
    # Hold the lock ourselves until both builds are queued on it, so the test does not depend
    # on which process starts first.
    with storage.build_lock(entry.minari_id):
        for _ in range(2):
            proc = subprocess.Popen([sys.executable, "-c", _BUILD_AND_LOAD], env=os.environ.copy(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            _wait_for(proc, "another process is building it")
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
        assert out.split()[-1] == "300"
    assert mob.load(DATASET, build=False).n_episodes == 300
    assert not list(storage.dataset_dir(entry.minari_id).parent.glob(".tmp-*"))


def _temp_dir(parent, name, pid):
    tmp = parent / f".tmp-{name}-{pid:08x}"
    (tmp / "data").mkdir(parents=True)
    (tmp / "data" / "main_data.hdf5").write_bytes(b"x" * 1000)
    (tmp / ".owner.json").write_text(json.dumps({"pid": pid, "host": storage._this_host(),
                                                "started": time.time()}))
    return tmp


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temp_folders_of_ended_processes_are_leftovers(minari_root, capsys):
    entry = get_dataset(DATASET)
    final = storage.dataset_dir(entry.minari_id)
    final.parent.mkdir(parents=True)
    live = _temp_dir(final.parent, final.name, os.getpid())
    dead = _temp_dir(final.parent, final.name, _dead_pid())
    assert storage.leftover_temp_dirs() == [dead]
    assert main(["list", "--env", "equal_line"]) == 0
    out = capsys.readouterr().out
    assert "1 leftover(s) of interrupted builds" in out and str(dead) in out
    assert str(live) not in out
    mob.collect_dataset(DATASET, episodes=20, show_progress=False)
    assert live.exists(), "a live build's folder must survive another build"
    assert not dead.exists(), "a killed build's folder is cleared by the next build"


def test_list_removes_leftovers_when_asked(minari_root, capsys):
    parent = minari_root / "marl-bench" / "equal_line-n6"
    dead = _temp_dir(parent, "expert-v0", _dead_pid())
    assert main(["list", "--remove-leftovers"]) == 0
    assert "removed 1 leftover(s)" in capsys.readouterr().out
    assert not dead.exists()


def test_an_old_temp_folder_without_owner_is_a_leftover(minari_root):
    parent = minari_root / "marl-bench" / "equal_line-n6"
    young = parent / ".tmp-random-v0-aaaaaaaa"
    old = parent / ".tmp-random-v0-bbbbbbbb"
    young.mkdir(parents=True)
    old.mkdir()
    past = time.time() - 2 * storage._OWNERLESS_STALE_S
    os.utime(old, (past, past))
    assert storage.leftover_temp_dirs() == [old]
