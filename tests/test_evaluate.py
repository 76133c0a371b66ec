"""`marl-bench evaluate` / `leaderboard` end to end on tiny Equal_Line datasets with BC."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import marl_offline_bench as mob
from marl_offline_bench import runstore
from marl_offline_bench.protocols import PROTOCOLS
from marl_offline_bench.runstore import RunLock, checkpoint_path, record_path
from marl_offline_bench.cli import main

N2 = "equal_line-n2-random-v0"
N4 = "equal_line-n4-random-v0"
SMALL = ["--set", "episode_batch_size=8", "--bootstrap-reps", "200"]


@pytest.fixture(autouse=True)
def one_thread():
    # The test machine is shared: one torch thread is much faster than two contended ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # Tables here are checked on raw returns: no shipped reference scores.
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(tmp_path / "no-references.json"))
    mob.collect_dataset(N2, episodes=20, show_progress=False)
    return tmp_path


def evaluate(out, *extra, seeds="1"):
    return main(["evaluate", "--algo", "bc", "--protocol", "smoke", "--seeds", seeds,
                 "--device", "cpu", "--out", str(out), *SMALL, *extra])


def records(out):
    return {p.relative_to(out).as_posix(): json.loads(p.read_text())
            for p in sorted((out / "runs").rglob("*.json"))}


def comparable(record):
    """A record without what legitimately differs between two executions of the same run."""
    drop = {"wall_time_s", "eval_time_s", "prepare_time_s", "finished", "versions",
            "resumed_from"}
    return {k: v for k, v in record.items() if k not in drop}


def test_smoke_end_to_end_then_rerun_skips(built, capsys):
    mob.collect_dataset(N4, episodes=20, show_progress=False)
    out = built / "lb"
    assert evaluate(out, seeds="2") == 0
    recs = records(out)
    assert sorted(recs) == [f"runs/smoke/bc/{d}/seed{k}.json" for d in (N2, N4) for k in (0, 1)]
    budget = PROTOCOLS["smoke"]["equal_line"]
    for rec in recs.values():
        assert rec["status"] == "done" and rec["protocol"] == "smoke"
        assert rec["budget"]["updates"] == budget.updates
        assert [p["step"] for p in rec["curve"]] == [25, 50]
        assert len(rec["curve"][0]["returns"]) == budget.eval_episodes
        assert rec["final"]["episodes"] == budget.final_episodes == 10 * budget.eval_episodes
        assert rec["config"]["episode_batch_size"] == 8 and rec["final"]["normalized_score"] is None
        assert "bc_loss" in rec["curve"][0]["train"]
        assert 0 < rec["eval_time_s"] < rec["wall_time_s"]
        assert 0 <= rec["prepare_time_s"] < rec["wall_time_s"]
    assert not (out / "checkpoints").exists() and not (out / "learners").exists()
    table = (out / "equal_line.md").read_text()
    assert "Protocol `smoke`" in table and "50 updates" in table and "Seeds per cell: 2" in table
    assert f"| {N2} |" in table and "Aggregates over 2 datasets" in table
    csv = pd.read_csv(out / "equal_line.csv")
    assert set(csv.dataset_id) == {N2, N4} and (csv.seeds == 2).all()
    assert set(pd.read_csv(out / "aggregates.csv").statistic) == {"IQM", "median", "mean"}
    assert (out / "plots" / "equal_line-smoke-curves.png").stat().st_size > 0
    assert (out / "plots" / "equal_line-smoke-profile.png").stat().st_size > 0
    export = json.loads((out / "marl_eval.json").read_text())
    run = export["equal_line"][N2]["bc"]["run_1"]
    assert run["step_1"]["step_count"] == 50 and len(run["absolute_metrics"]["return"]) == 40

    capsys.readouterr()
    assert evaluate(out, seeds="2") == 0
    assert "4 skipped" in capsys.readouterr().out
    assert records(out) == recs
    assert main(["leaderboard", "--out", str(out), "--bootstrap-reps", "50"]) == 0


def test_a_kept_learner_plays_its_final_episodes_again(built):
    """--keep-learners moves each finished run's final checkpoint to learners/; load_learner
    rebuilds it with the run's overrides, and its policy replays the recorded final episodes."""
    from marl_offline_bench.runstore import learner_path
    from marl_offline_bench.training import FINAL_SEED

    out = built / "lb"
    assert evaluate(out, "--keep-learners") == 0
    final = records(out)[f"runs/smoke/bc/{N2}/seed0.json"]["final"]
    path = learner_path(out, "bc", N2, 0)
    assert path.exists() and not (out / "checkpoints").exists()
    learner = mob.load_learner(path)
    assert learner.config.episode_batch_size == 8
    replay = mob.evaluate_policy(learner.policy(), N2, episodes=final["episodes"],
                                 seed=FINAL_SEED + 0)
    assert replay.returns.tolist() == pytest.approx(final["returns"])
    with pytest.raises(FileNotFoundError, match="--keep-learners"):
        mob.load_learner(out / "learners" / "bc" / N2 / "seed7.pt")


def _killed_at_update(monkeypatch, learner=None, n=30):
    """Make a learner's (default BC's) n-th update raise, as a killed run stops; returns the
    real update."""
    if learner is None:
        from baselines.bc import BCDiscrete as learner

    real_update, calls = learner.update, {"n": 0}

    def dies_at_update_n(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("simulated kill")
        return real_update(self)

    monkeypatch.setattr(learner, "update", dies_at_update_n)
    return real_update


def test_killed_run_resumes_from_checkpoint(built, monkeypatch, capsys):
    from baselines.bc import BCDiscrete

    clean, out = built / "clean", built / "lb"
    assert evaluate(clean) == 0
    real_update = _killed_at_update(monkeypatch)
    assert evaluate(out) == 2  # the run raised: exit status 2, no record, a checkpoint
    assert not record_path(out, "bc", N2, 0, "smoke").exists()
    ckpt = torch.load(checkpoint_path(out, "bc", N2, 0), weights_only=True)
    assert ckpt["step"] == 25 and len(ckpt["curve"]) == 1

    monkeypatch.setattr(BCDiscrete, "update", real_update)
    capsys.readouterr()
    assert evaluate(out) == 0
    recs = records(out)
    assert list(recs) == [f"runs/smoke/bc/{N2}/seed0.json"]
    resumed = recs[f"runs/smoke/bc/{N2}/seed0.json"]
    assert resumed["status"] == "done" and resumed["resumed_from"] == 25
    # the sweep's line says that this attempt's seconds are only part of the run's
    line = f"(resumed from update 25, {resumed['wall_time_s']:.0f}s in all)"
    assert line in capsys.readouterr().out
    assert not checkpoint_path(out, "bc", N2, 0).exists()
    # Restoring the learner, its sampler and the RNGs makes the resumed run the uninterrupted one.
    assert comparable(resumed) == comparable(records(clean)[f"runs/smoke/bc/{N2}/seed0.json"])


def test_run_killed_before_its_first_evaluation_keeps_its_fitted_behaviour(built, monkeypatch):
    """The one-off fit before the first update (CFCQL's behaviour model; hours for the paper's
    VAE) is checkpointed at once: a run killed before its first evaluation resumes at update 0
    without fitting again, and ends as the uninterrupted run does."""
    from baselines.cfcql import CFCQLDiscrete

    def cfcql(out):
        return main(["evaluate", "--algo", "cfcql", "--protocol", "smoke", "--seeds", "1",
                     "--device", "cpu", "--out", str(out), "--no-tables",
                     "--set", "batch_size=8"])

    clean, out = built / "clean", built / "lb"
    assert cfcql(clean) == 0
    real_fit = CFCQLDiscrete.fit_behaviour
    real_update = _killed_at_update(monkeypatch, CFCQLDiscrete, n=10)
    assert cfcql(out) == 2
    ckpt = torch.load(checkpoint_path(out, "cfcql", N2, 0), weights_only=True)
    assert ckpt["step"] == 0 and ckpt["curve"] == [] and ckpt["algorithm"]["behaviour_ready"]

    def fits_again(self, progress=None):
        raise AssertionError("the behaviour model was fitted again")

    monkeypatch.setattr(CFCQLDiscrete, "update", real_update)
    monkeypatch.setattr(CFCQLDiscrete, "fit_behaviour", fits_again)
    assert cfcql(out) == 0
    resumed = records(out)[f"runs/smoke/cfcql/{N2}/seed0.json"]
    assert resumed["status"] == "done" and resumed["resumed_from"] == 0
    assert resumed["prepare_time_s"] == ckpt["prepare_elapsed"] > 0   # the fit's segment's time
    assert comparable(resumed) == comparable(records(clean)[f"runs/smoke/cfcql/{N2}/seed0.json"])
    monkeypatch.setattr(CFCQLDiscrete, "fit_behaviour", real_fit)


def test_variants_that_fit_the_same_behaviour_model_share_one_fit(built, monkeypatch, tmp_path):
    """cfcql and cfcql_sign_plus differ only after the behaviour fit: the second run loads the
    first's from the fit store and ends as it would have after fitting it again."""
    store = tmp_path / "fits"
    monkeypatch.setenv("MARL_BENCH_FIT_STORE", str(store))

    def run(algo, out):
        return main(["evaluate", "--algo", algo, "--protocol", "smoke", "--seeds", "1",
                     "--device", "cpu", "--out", str(out), "--no-tables",
                     "--set", "batch_size=8"])

    assert run("cfcql", built / "a") == 0
    fitted = sorted(p.name for p in store.iterdir())
    assert len(fitted) == 1 and fitted[0].startswith("behaviour-model-")
    assert run("cfcql_sign_plus", built / "a") == 0
    assert sorted(p.name for p in store.iterdir()) == fitted
    shared = records(built / "a")[f"runs/smoke/cfcql_sign_plus/{N2}/seed0.json"]
    monkeypatch.setenv("MARL_BENCH_FIT_STORE", "off")
    assert run("cfcql_sign_plus", built / "b") == 0
    refitted = records(built / "b")[f"runs/smoke/cfcql_sign_plus/{N2}/seed0.json"]
    assert comparable(shared) == comparable(refitted)


def test_record_names_the_commit_given_where_the_code_has_no_git(built, monkeypatch):
    """Code copied without its git folder (a cluster node) records MARL_BENCH_COMMIT."""
    monkeypatch.setenv("MARL_BENCH_COMMIT", "0123abc")
    out = built / "lb"
    assert evaluate(out, "--no-tables") == 0
    assert records(out)[f"runs/smoke/bc/{N2}/seed0.json"]["commit"] == "0123abc"


def test_checkpoint_of_other_networks_starts_afresh(built, monkeypatch, capsys):
    """A checkpoint whose learner state does not load (written by another commit's networks)
    is reported and the run starts from update 0, instead of failing on every retry."""
    from baselines.bc import BCDiscrete

    out = built / "lb"
    real_update = _killed_at_update(monkeypatch)
    assert evaluate(out) == 2
    path = checkpoint_path(out, "bc", N2, 0)
    ckpt = torch.load(path, weights_only=True)
    module = next(v for v in ckpt["algorithm"].values()
                  if isinstance(v, dict) and v and all(torch.is_tensor(t) for t in v.values()))
    module["renamed_layer.weight"] = torch.zeros(1)
    torch.save(ckpt, path)

    monkeypatch.setattr(BCDiscrete, "update", real_update)
    capsys.readouterr()
    assert evaluate(out) == 0
    captured = capsys.readouterr()
    assert "does not fit this code's learner" in captured.out + captured.err
    rec = json.loads(record_path(out, "bc", N2, 0, "smoke").read_text())
    assert rec["status"] == "done" and rec["resumed_from"] is None
    assert [p["step"] for p in rec["curve"]] == [25, 50]


def test_checkpoint_of_other_dataset_bytes_starts_afresh(built, monkeypatch, capsys):
    """A checkpoint made on another build of the dataset (copied from a machine whose rebuild
    differs) is not finished on this one: the run would have trained on two datasets."""
    from baselines.bc import BCDiscrete

    out = built / "lb"
    real_update = _killed_at_update(monkeypatch)
    assert evaluate(out) == 2
    path = checkpoint_path(out, "bc", N2, 0)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["dataset_sha256"] == mob.load(N2, build=False, progress=False).card["sha256"]
    torch.save({**ckpt, "dataset_sha256": "f" * 64}, path)

    monkeypatch.setattr(BCDiscrete, "update", real_update)
    capsys.readouterr()
    assert evaluate(out) == 0
    assert "trained on other bytes of" in capsys.readouterr().out
    rec = json.loads(record_path(out, "bc", N2, 0, "smoke").read_text())
    assert rec["status"] == "done" and rec["resumed_from"] is None


def test_nan_loss_gives_failed_record(built, monkeypatch, capsys):
    from baselines.bc import BCDiscrete

    real_update, calls = BCDiscrete.update, {"n": 0}

    def nan_at_update_20(self):
        calls["n"] += 1
        metrics = real_update(self)
        return {**metrics, "bc_loss": float("nan")} if calls["n"] == 20 else metrics

    monkeypatch.setattr(BCDiscrete, "update", nan_at_update_20)
    out = built / "lb"
    assert evaluate(out) == 0
    rec = json.loads(record_path(out, "bc", N2, 0, "smoke").read_text())
    assert rec["status"] == "failed" and rec["final"] is None
    assert rec["failure"]["step"] == 20 and "bc_loss=nan" in rec["failure"]["reason"]
    assert "| failed |" in (out / "equal_line.md").read_text()
    assert not checkpoint_path(out, "bc", N2, 0).exists()

    monkeypatch.setattr(BCDiscrete, "update", real_update)
    capsys.readouterr()
    assert evaluate(out) == 0 and "1 skipped" in capsys.readouterr().out
    assert evaluate(out, "--retry-failed") == 0
    assert json.loads(record_path(out, "bc", N2, 0, "smoke").read_text())["status"] == "done"


def test_two_workers_give_the_same_records_as_one(built):
    one, two = built / "one", built / "two"
    assert evaluate(one, seeds="2") == 0
    assert evaluate(two, "--workers", "2", seeds="2") == 0
    a, b = records(one), records(two)
    assert list(a) == list(b) == [f"runs/smoke/bc/{N2}/seed0.json", f"runs/smoke/bc/{N2}/seed1.json"]
    for key in a:
        ra, rb = comparable(a[key]), comparable(b[key])
        assert ra["curve"][-1]["returns"] == pytest.approx(rb["curve"][-1]["returns"], abs=1e-5)
        assert ra["final"]["mean_return"] == pytest.approx(rb["final"]["mean_return"], abs=1e-5)
        assert [p["step"] for p in ra["curve"]] == [p["step"] for p in rb["curve"]]


def test_bad_input_is_a_clear_error(built, monkeypatch, capsys):
    assert main(["evaluate", "--algo", "nope", "--out", str(built / "lb")]) == 2
    err = capsys.readouterr().err
    assert "Unknown algorithm 'nope'" in err and "bc" in err and "cfcql" in err
    assert main(["evaluate", "--algo", "bc", "--datasets", "equal_line-n3-*",
                 "--out", str(built / "lb")]) == 2
    assert "matches no registered id" in capsys.readouterr().err
    assert main(["leaderboard", "--out", str(built / "empty")]) == 2
    assert "no run records" in capsys.readouterr().err


def test_unsupported_pairing_is_skipped_with_both_names(built, monkeypatch, capsys):
    from marl_offline_bench import AlgorithmSpec, algorithm_registry

    monkeypatch.setitem(algorithm_registry(), "bc_cont",
                        AlgorithmSpec("bc_cont", "BC (continuous only)",
                                      continuous="baselines.bc:BCContinuous"))
    out = built / "lb"
    assert main(["evaluate", "--algo", "bc_cont", "--protocol", "smoke", "--seeds", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"skipping bc_cont on {N2}" in text and "does not support discrete" in text
    assert not (out / "runs").exists()


def test_run_lock_takes_over_only_dead_owners(tmp_path, monkeypatch):
    lock_path = tmp_path / "seed0.lock"
    held = RunLock(lock_path)
    assert held.acquire() and not RunLock(lock_path).acquire()  # a live owner keeps it
    held.release()
    lock_path.write_text(json.dumps({"host": runstore.socket.gethostname(), "pid": 2**22 + 7}))
    monkeypatch.setattr(runstore.os, "kill", _no_such_process)
    taker = RunLock(lock_path)
    assert taker.acquire()  # the owner is gone: a stale lock is taken over
    taker.release()
    assert not lock_path.exists()


def _no_such_process(pid, sig):
    raise ProcessLookupError(pid)


def test_leaderboard_layout_with_references_and_win_rates(tmp_path, monkeypatch):
    """Synthetic SMAC records: normalised scores where references exist, win-rate table."""
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"smac-2s3z": {"ref_random": {"value": 0.0, "episodes": 10},
                                              "ref_expert": {"value": 2.0, "episodes": 10}}}))
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(refs))
    out = tmp_path / "lb"
    budget = {"updates": 50, "eval_every": 25, "eval_episodes": 4, "final_episodes": 40}
    for algo, level in (("bc", 0.5), ("cfcql", 1.5)):
        for dataset_id, task in (("smac-2s3z-random-v0", "smac-2s3z"),
                                 ("smac-3s_vs_5z-random-v0", "smac-3s_vs_5z")):
            for seed in (0, 1):
                ret = level + 0.1 * seed
                point = {"episodes": 2, "mean_return": ret, "returns": [ret, ret],
                         "win_rate": 0.5, "normalized_score": None}
                runstore.write_json_atomic(record_path(out, algo, dataset_id, seed, "smoke"), {
                    "status": "done", "algo": algo, "dataset_id": dataset_id, "task_id": task,
                    "family": "smac", "seed": seed, "protocol": "smoke", "budget": budget,
                    "commit": "abc", "curve": [{"step": 50, **point}],
                    "final": {"step": 50, **point}})
    assert main(["leaderboard", "--out", str(out), "--bootstrap-reps", "50"]) == 0
    table = (out / "smac.md").read_text()
    assert "| dataset | score | CFCQL | BC |" in table  # CFCQL first; the best mean in bold
    assert "| smac-2s3z-random-v0 | normalized | **77.50 ± 2.50** | 27.50 ± 2.50 |" in table
    assert "| smac-3s_vs_5z-random-v0 | return | **1.55 ± 0.05** | 0.55 ± 0.05 |" in table
    assert "Highest mean (bold) on: CFCQL 2, BC 0 of the 2 datasets with two algorithms or more." \
        in table
    assert "Win rate (%)" in table and "**50.00 ± 0.00**" in table  # a tie: both bold
    index = (out / "README.md").read_text()
    assert "| algorithm | smac (20) |" in index and "| CFCQL | 2 / 4 |" in index  # coverage
    export = json.loads((out / "marl_eval.json").read_text())
    run = export["smac"]["smac-2s3z-random-v0"]["cfcql"]["run_0"]
    assert run["absolute_metrics"]["normalized_score"] == [75.0, 75.0]
    assert run["step_0"]["win_rate"] == [0.5]
    agg = pd.read_csv(out / "aggregates.csv")  # mixed kinds: aggregated on raw returns
    mean_bc = agg[(agg.algo == "bc") & (agg.statistic == "mean")].point.item()
    assert mean_bc == pytest.approx(0.55) and set(agg.score) == {"raw return"}


def test_family_table_data_column_and_best_counts(tmp_path, monkeypatch):
    from marl_offline_bench.leaderboard import best_counts, family_table, quality_table

    refs, stats = tmp_path / "refs.json", tmp_path / "stats.json"
    refs.write_text(json.dumps({"smac-2s3z": {"ref_random": {"value": 0.0},
                                              "ref_expert": {"value": 2.0}}}))
    stats.write_text(json.dumps({"smac-2s3z-medium-v0": {"statistics": {"return_mean": 0.5}}}))
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(refs))
    monkeypatch.setenv("MARL_BENCH_STATISTICS_FILE", str(stats))
    rows = [{"dataset_id": d, "algo": a, "seed": 0, "status": "done", "metric": "normalized",
             "score": score}
            for d, a, score in (("smac-2s3z-medium-v0", "bc", 30.0),
                                ("smac-2s3z-medium-v0", "cfcql", 20.0),
                                ("smac-2s3z-medium-v0", "cfcql_tau0", 99.0),  # an ablation
                                ("smac-2s3z-expert-v0", "bc", 90.0),
                                ("smac-2s3z-expert-v0", "cfcql", 90.001))]  # equal as printed
    display, long = family_table(pd.DataFrame(rows), data_column=True)
    assert list(display.columns) == ["dataset", "data", "CFCQL", "BC", "CFCQL (tau 0)"]
    medium = display[display.dataset == "smac-2s3z-medium-v0"].iloc[0]
    # one seed each: the score alone, no spread
    assert medium["data"] == "25.00" and medium["BC"] == "**30.00**"
    assert medium["CFCQL (tau 0)"] == "99.00"  # ablations are never bold
    assert medium["CFCQL"] == "20.00"
    assert display[display.dataset == "smac-2s3z-expert-v0"].iloc[0]["data"] == ""  # no stats
    assert best_counts(long) == {"cfcql": 1, "bc": 2}  # the expert tie counts for both
    by_quality = quality_table(long[long.algo != "cfcql_tau0"])
    assert list(by_quality.columns) == ["quality", "datasets", "data", "CFCQL", "BC"]
    assert by_quality.values.tolist() == [["medium", 1, "25.0", "20.0", "30.0"],
                                          ["expert", 1, "", "90.0", "90.0"]]
    no_bc_expert = (long.algo == "bc") & long.dataset_id.str.contains("exp")
    partial = quality_table(long[~no_bc_expert & (long.algo != "cfcql_tau0")])
    assert partial.values.tolist()[1] == ["expert", 1, "", "90.0", ""]  # BC did not run there


def test_an_algorithms_interval_does_not_depend_on_the_others():
    from marl_offline_bench.leaderboard import _aggregate_func, interval_estimates

    rng = np.random.default_rng(0)
    a, b = rng.normal(50, 10, (3, 6)), rng.normal(20, 5, (3, 6))
    _, alone, _ = interval_estimates({"b": b}, _aggregate_func, reps=100)
    _, together, _ = interval_estimates({"a": a, "b": b}, _aggregate_func, reps=100)
    np.testing.assert_array_equal(alone["b"], together["b"])
    _, other_seed, _ = interval_estimates({"b": b}, _aggregate_func, reps=100, seed=1)
    assert not np.array_equal(alone["b"], other_seed["b"])  # the seed is what fixes it


def test_agent_scaling_plot_groups_equal_line_by_n_and_quality(tmp_path):
    from marl_offline_bench.leaderboard import plot_agent_scaling

    rows = [{"status": "done", "score": float(10 * n + seed), "task_id": f"equal_line-n{n}",
             "dataset_id": f"equal_line-n{n}-medium-replay-v0", "algo": algo, "seed": seed,
             "metric": "normalized"}
            for algo in ("cfcql", "macql") for n in (2, 4) for seed in (0, 1)]
    path = plot_agent_scaling(pd.DataFrame(rows), tmp_path / "agents.png", "t")
    assert path is not None and path.stat().st_size > 0
    one_n = pd.DataFrame([r for r in rows if r["task_id"] == "equal_line-n2"])
    assert plot_agent_scaling(one_n, tmp_path / "none.png", "t") is None  # nothing to compare
    smac = pd.DataFrame([{**rows[0], "task_id": "smac-2s3z", "dataset_id": "smac-2s3z-medium-v0"}])
    assert plot_agent_scaling(smac, tmp_path / "none.png", "t") is None


def test_run_lock_sees_a_reused_pid(tmp_path):
    """A lock whose pid is alive but names a process started at another time is stale."""
    import os

    lock_path = tmp_path / "seed0.lock"
    started = runstore.process_start(os.getpid())
    assert started is not None
    lock_path.write_text(json.dumps({"host": runstore.socket.gethostname(), "pid": os.getpid(),
                                     "started": started + 1}))
    taker = RunLock(lock_path)
    assert taker.acquire()  # the pid was reused: its owner is gone
    taker.release()
    lock_path.write_text(json.dumps({"host": runstore.socket.gethostname(), "pid": os.getpid(),
                                     "started": started}))
    assert not RunLock(lock_path).acquire()  # the very process: a live owner keeps it


def test_a_busy_run_makes_evaluate_fail_and_say_who_holds_it(built, capsys):
    out = built / "lb"
    holder = RunLock(record_path(out, "bc", N2, 0, "smoke").with_suffix(".lock"))
    assert holder.acquire()
    try:
        assert evaluate(out, seeds="0,") == 2
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert "held by another live process" in err and "pid" in err


def test_local_workers_die_with_their_parent(tmp_path):
    """kill -9 of the process that started a worker ends the worker too (no orphan keeps
    training and holding a run's lock)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    worker = ("import os, time\n"
              "from marl_offline_bench.processes import die_with_parent\n"
              "die_with_parent(os.getppid())\n"
              "print('ready', flush=True)\n"
              "time.sleep(120)\n")
    parent = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE,"
              " text=True)\n"
              "assert p.stdout.readline().strip() == 'ready'\n"
              "print(p.pid, flush=True)\n"
              "time.sleep(120)\n")
    boss = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(boss.stdout.readline())
    os.kill(boss.pid, signal.SIGKILL)
    boss.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a dead worker stays a zombie until its new parent (init) reaps it: that is gone too
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the worker outlived its parent")


def test_dry_run_prices_runs_without_running_them(built, capsys):
    out = built / "lb"
    assert main(["evaluate", "--algo", "bc,cfcql_alpha_half", "--datasets", N2, "--seeds", "2",
                 "--protocol", "full", "--dry-run", "--out", str(out),
                 "--set", "cfcql_alpha_half.alpha=1.0"]) == 0
    text = capsys.readouterr().out
    assert "bc equal_line-n2-random-v0 seed 1: 1,571 updates at batch 128" in text
    assert "timed here" in text and "total: " in text and "CPU-hours" in text
    assert "% of it evaluating" in text and "of the timed runs' hours evaluating" in text
    assert not (out / "runs").exists()  # nothing ran, nothing was built
    assert main(["evaluate", "--algo", "bc", "--datasets", N2, "--seeds", "1", "--protocol",
                 "smoke", "--dry-run", "--from-records", "--out", str(out)]) == 0
    assert "bc equal_line-n2-random-v0 seed 0: 50 updates" in capsys.readouterr().out


def test_dry_run_prices_the_one_off_fits(built, capsys):
    """A behaviour fit before the first update is part of a run's price: timed for a few steps
    and scaled to its length (an hour of one core for the paper's VAE on World)."""
    def hours(*extra):
        assert main(["evaluate", "--algo", "cfcql", "--datasets", N2, "--seeds", "1",
                     "--protocol", "full", "--dry-run", "--out", str(built / "lb"), *extra]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "seed 0:" in x)
        return float(line.split(" CPU-hours")[0].rsplit(" ", 1)[1])
    assert hours("--set", "bc_steps=2000000") > hours("--set", "bc_steps=0") + 0.25


@pytest.mark.parametrize("store", ["private", "off"])
def test_dry_run_prices_a_shared_fit_once(built, capsys, monkeypatch, store):
    """cfcql_sign_plus fits the very VAE cfcql_vae fits; with the fit store on it loads that
    fit, and the dry run, its probes sharing a store, prices the fit once. With the store off
    both runs fit it."""
    if store == "off":
        monkeypatch.setenv("MARL_BENCH_FIT_STORE", "off")
    assert main(["evaluate", "--algo", "cfcql_vae,cfcql_sign_plus", "--datasets",
                 "mpe-world-expert-v0", "--seeds", "1", "--protocol", "smoke", "--dry-run",
                 "--set", "vae_steps=50000000", "--out", str(built / "lb")]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "seed 0:" in x]
    vae, sign_plus = (float(x.split(" CPU-hours")[0].rsplit(" ", 1)[1]) for x in lines)
    assert vae > 5.0  # 50 million VAE steps
    assert (sign_plus < 0.25 * vae) == (store == "private")


def test_workers_build_the_missing_datasets_together(tmp_path, monkeypatch, capsys):
    """With --workers 2 the datasets a command lacks build two at once, each the same as a
    build alone (its own seeds, its own file), and then the runs use them."""
    from marl_offline_bench import storage

    def checksum(root):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
        return storage.read_metadata(mob.get_dataset(N2).minari_id)["marl_bench"]["sha256"]

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "alone"))
    mob.collect_dataset(N2, show_progress=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "together"))
    assert evaluate(tmp_path / "lb", "--workers", "2", "--datasets", f"{N2},{N4}",
                    "--no-tables") == 0
    printed = capsys.readouterr()
    assert f"built {N2}" in printed.out and f"built {N4}" in printed.out
    assert "2 at once" in printed.err and "2 done" in printed.out
    assert checksum(tmp_path / "together") == checksum(tmp_path / "alone")
