"""``--executor ray`` on a loopback Ray cluster (2 CPUs, started and stopped here).

The Ray sweep gives the local executor's records, a worker killed part-way is retried from its
checkpoint and leaves one record, a second sweep runs nothing, a node without a dataset fails
clearly, ``collect --executor ray`` builds several datasets, and Ray stays optional.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402

import marl_offline_bench as mob  # noqa: E402
from marl_offline_bench import ray_executor  # noqa: E402
from marl_offline_bench.runstore import checkpoint_path, record_path  # noqa: E402
from marl_offline_bench.cli import main  # noqa: E402

#: Builds datasets or runs simulators: `pytest -m 'not slow'` leaves these out.
pytestmark = pytest.mark.slow

N2, N4 = "equal_line-n2-random-v0", "equal_line-n4-random-v0"
SMALL = ["--set", "episode_batch_size=8", "--bootstrap-reps", "200"]
REPO = Path(__file__).resolve().parents[1]
KILL_AT = 30  # an update after the smoke protocol's first checkpoint, at update 25


def _kill_switch() -> None:
    """Ray worker setup hook: while ``$MOB_TEST_KILL_DIR/armed`` exists, the first BC run to
    reach update ``KILL_AT`` ends its worker process (as an OOM kill would), once: the marker
    ``fired`` tells the retry to go on."""
    from baselines.bc import BCDiscrete

    real_update = BCDiscrete.update
    switch = Path(os.environ["MOB_TEST_KILL_DIR"])

    def update(self):
        self._test_updates = getattr(self, "_test_updates", 0) + 1
        if self._test_updates == KILL_AT and (switch / "armed").exists():
            try:
                os.close(os.open(switch / "fired", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return real_update(self)

    BCDiscrete.update = update


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Minari root holding N2, and a 2-CPU Ray whose workers read it (and carry the switch)."""
    root = tmp_path_factory.mktemp("ray")
    minari, switch = root / "minari", root / "switch"
    switch.mkdir()
    env = pytest.MonkeyPatch()
    env.setenv("MINARI_DATASETS_PATH", str(minari))
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    # address="local": a private instance, even where this machine runs (or ran) a cluster.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"MINARI_DATASETS_PATH": str(minari),
                                       "MOB_TEST_KILL_DIR": str(switch), "PYTHONPATH": path},
                          "worker_process_setup_hook": "tests.test_ray._kill_switch"})
    try:
        yield root
    finally:
        ray.shutdown()
        env.undo()


@pytest.fixture(scope="module")
def local_records(cluster):
    """Seeds 0 and 1 through the local executor, for comparison."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert evaluate(cluster / "local", seeds="2") == 0
    torch.set_num_threads(before)
    return records(cluster / "local")


def evaluate(out, *extra, seeds="1"):
    return main(["evaluate", "--algo", "bc", "--protocol", "smoke", "--seeds", seeds,
                 "--device", "cpu", "--out", str(out), *SMALL, *extra])


def records(out):
    return {p.relative_to(out).as_posix(): json.loads(p.read_text())
            for p in sorted((out / "runs").rglob("*.json"))}


def assert_same_run(a, b):
    """The deterministic parts of two records of the same run agree."""
    for key in ("status", "algo", "dataset_id", "seed", "protocol", "budget", "config", "device"):
        assert a[key] == b[key], key
    assert [p["step"] for p in a["curve"]] == [p["step"] for p in b["curve"]]
    for pa, pb in zip(a["curve"], b["curve"]):
        assert pa["returns"] == pytest.approx(pb["returns"], abs=1e-5)
    assert a["final"]["returns"] == pytest.approx(b["final"]["returns"], abs=1e-5)
    assert a["final"]["mean_return"] == pytest.approx(b["final"]["mean_return"], abs=1e-5)


def leftovers(out):
    """Lock, temporary and checkpoint files a finished sweep must not leave."""
    return sorted(p.name for p in out.rglob("*") if p.suffix in (".lock", ".tmp", ".pt"))


def test_ray_sweep_gives_local_records_and_a_rerun_runs_nothing(cluster, local_records, capsys):
    out = cluster / "sweep"
    assert evaluate(out, "--executor", "ray", seeds="2") == 0
    got = records(out)
    assert list(got) == list(local_records) == [f"runs/smoke/bc/{N2}/seed0.json",
                                                f"runs/smoke/bc/{N2}/seed1.json"]
    for key in got:
        assert_same_run(got[key], local_records[key])
        assert got[key]["resumed_from"] is None
    assert leftovers(out) == [] and not (out / "checkpoints").exists()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}
    capsys.readouterr()
    assert evaluate(out, "--executor", "ray", seeds="2") == 0
    text = capsys.readouterr().out
    assert "2 skipped" in text and ": done" not in text
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")} == stamps


def test_killed_worker_is_retried_from_its_checkpoint(cluster, local_records):
    switch, out = cluster / "switch", cluster / "killed"
    (switch / "armed").touch()
    try:
        assert evaluate(out, "--executor", "ray") == 0
    finally:
        (switch / "armed").unlink()
    assert (switch / "fired").exists()  # the first attempt's worker did exit part-way
    got = records(out)
    assert list(got) == [f"runs/smoke/bc/{N2}/seed0.json"]
    rec = got[f"runs/smoke/bc/{N2}/seed0.json"]
    assert rec["status"] == "done" and rec["resumed_from"] == 25  # the checkpoint at update 25
    assert_same_run(rec, local_records[f"runs/smoke/bc/{N2}/seed0.json"])
    assert not checkpoint_path(out, "bc", N2, 0).exists() and leftovers(out) == []


def test_node_without_the_dataset_fails_naming_it_the_node_and_the_fix(cluster, tmp_path,
                                                                       monkeypatch, capsys):
    # The driver sees its own Minari root holding N4; the workers' root lacks it.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "driver-minari"))
    mob.collect_dataset(N4, episodes=20, show_progress=False)
    out = tmp_path / "lb"
    assert evaluate(out, "--executor", "ray", "--datasets", N4) == 2
    err = capsys.readouterr().err
    assert f"dataset {N4} is not on node {socket.gethostname()}" in err
    assert str(cluster / "minari") in err
    assert "--build-on-nodes" in err and "MINARI_DATASETS_PATH at shared storage" in err
    assert not record_path(out, "bc", N4, 0, "smoke").exists() and leftovers(out) == []


def test_build_on_nodes_builds_once_where_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "node-minari"))
    built = []

    def small_collect(dataset_id, show_progress=True):
        built.append(dataset_id)
        return mob.collect_dataset(dataset_id, episodes=20, show_progress=show_progress)

    monkeypatch.setattr("marl_offline_bench.collect.collect_dataset", small_collect)
    with pytest.raises(FileNotFoundError, match="not on node"):
        ray_executor.ensure_dataset_on_node(N4)
    ray_executor.ensure_dataset_on_node(N4, build=True)
    ray_executor.ensure_dataset_on_node(N4, build=True)
    assert built == [N4] and mob.load(N4, build=False).n_episodes == 20


def test_collect_builds_several_datasets_on_the_cluster(cluster, capsys):
    argv = ["collect", "--env", "equal_line", "--task", "n8,n10", "--quality", "random",
            "--episodes", "20", "--executor", "ray", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for dataset_id in ("equal_line-n8-random-v0", "equal_line-n10-random-v0"):
        assert f"{dataset_id}: written to" in text and "not visible here" not in text
        assert mob.load(dataset_id, build=False).n_episodes == 20
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already built on node") == 2


def test_impossible_requests_are_refused_before_anything_is_sent(cluster, tmp_path, capsys):
    out = tmp_path / "lb"
    assert main(["evaluate", "--algo", "bc", "--datasets", N2, "--protocol", "smoke",
                 "--out", str(out), "--executor", "ray", "--gpus-per-run", "1"]) == 2
    err = capsys.readouterr().err
    assert "no node of the Ray cluster can hold a run" in err and "0 GPUs" in err
    assert evaluate(out, "--executor", "ray", "--gpus-per-run", "1") == 2  # with --device cpu
    assert "leave --device at auto or set --gpus-per-run" in capsys.readouterr().err
    assert evaluate(out, "--executor", "ray", "--workers", "2") == 2
    assert "--workers is for --executor local" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when not installed
    assert evaluate(tmp_path / "lb", "--executor", "ray") == 2
    assert "pip install 'marl-offline-bench[ray]'" in capsys.readouterr().err
    assert main(["collect", "--env", "equal_line", "--task", "n2", "--quality", "random",
                 "--executor", "ray"]) == 2
    assert "marl-offline-bench[ray]" in capsys.readouterr().err
    assert evaluate(tmp_path / "lb", "--cpus-per-run", "2") == 2
    assert "--cpus-per-run only apply with --executor ray" in capsys.readouterr().err


def test_importing_the_package_does_not_import_ray():
    code = ("import sys, marl_offline_bench, marl_offline_bench.cli, "
            "marl_offline_bench.evaluate_cli, marl_offline_bench.ray_executor; "
            "marl_offline_bench.cli.build_parser(); assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
