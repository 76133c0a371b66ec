"""Convergence marks in the leaderboard: the still-rising rule, its cell vote, and the tables."""
import json

import numpy as np
import pandas as pd
import pytest

from marl_offline_bench import runstore
from marl_offline_bench.runstore import record_path
from marl_offline_bench.leaderboard import (RISING_MARK, cell_still_rising, dataset_order,
                                            end_trend, end_verdict, natural_key, still_rising,
                                            write_leaderboards)
from marl_offline_bench.protocols import BUDGET_BOUND

EPISODES = 32


def curve(true_means, noise=1.0, seed=0, episodes=EPISODES, step=250):
    """A learning curve whose evaluations draw ``episodes`` returns around each true mean."""
    rng = np.random.default_rng(seed)
    points = []
    for i, mu in enumerate(true_means):
        returns = (mu + noise * rng.standard_normal(episodes)).tolist()
        points.append({"step": step * (i + 1), "episodes": episodes,
                       "mean_return": float(np.mean(returns)),
                       "std_return": float(np.std(returns)), "returns": returns,
                       "normalized_score": None})
    return points


def test_flat_noisy_curves_are_rarely_rising():
    # Evaluation noise alone: a 2-standard-error one-sided test fires on about 2.3% of them.
    verdicts = [still_rising(curve([5.0] * 4, seed=s)) for s in range(400)]
    assert None not in verdicts
    assert 0.005 < np.mean(verdicts) < 0.05


def test_a_rise_of_four_standard_errors_is_rising():
    # Each evaluation's error is 1/sqrt(32) = 0.18, the difference's 0.25: a rise of 1.0 is 4
    # standard errors (it would be 0.7 if the episodes' std were taken for the error).
    rises = [still_rising(curve([0.0, 0.0, 4.0, 5.0], seed=s)) for s in range(50)]
    assert np.mean(rises) > 0.9
    trend = end_trend(curve([0.0, 0.0, 4.0, 5.0]))
    assert trend.window == 1
    assert trend.standard_error == pytest.approx(np.sqrt(2 / EPISODES), rel=0.3)


def test_a_clearly_falling_curve_is_falling_not_rising():
    points = curve([5.0, 5.0, 5.0, 2.0])
    assert end_verdict(points) == "falling" and still_rising(points) is False


def test_too_few_points_or_episodes_is_unknown():
    assert still_rising(curve([0.0, 10.0])) is None
    assert still_rising(curve([0.0, 1.0, 5.0])) is None
    assert still_rising([]) is None
    one_episode = curve([0.0, 1.0, 2.0, 30.0], episodes=1)
    assert still_rising(one_episode) is None  # one episode says nothing about its own noise


def test_deterministic_evaluations_round_off_is_not_a_rise():
    constant = curve([3.0] * 4, noise=0.0)
    assert end_verdict(constant) == "flat"
    jitter = curve([3.0, 3.0, 3.0, 3.0 + 1e-8], noise=0.0)
    assert still_rising(jitter) is False
    real = curve([3.0, 3.0, 3.0, 3.5], noise=0.0)
    assert still_rising(real) is True


def test_the_window_is_the_last_quarter_against_the_one_before():
    # 20 evaluations: rose over the first half, flat for the last ten: converged.
    early_rise = curve(list(np.linspace(0, 10, 10)) + [10.0] * 10, seed=3)
    assert end_trend(early_rise).window == 5
    assert still_rising(early_rise) is False
    late_rise = curve([0.0] * 10 + [0.0] * 5 + [3.0] * 5, seed=3)
    assert still_rising(late_rise) is True


def test_the_legacy_point_without_returns_uses_its_std():
    points = [{"mean_return": m, "std_return": 1.0, "episodes": 100}
              for m in (0.0, 0.0, 0.0, 1.0)]
    trend = end_trend(points)
    assert trend.increase == pytest.approx(1.0)
    assert trend.standard_error == pytest.approx(np.sqrt(2 * 100 / 99 / 100))
    assert still_rising(points) is True


@pytest.mark.parametrize("verdicts, marked", [
    ([True, True, False], True), ([True, False, False], False), ([True, None, None], False),
    ([True, True], True), ([True, False], False), ([True], True), ([None, None, None], False),
    ([], False)])
def test_a_cell_is_marked_by_a_strict_majority_of_its_seeds(verdicts, marked):
    assert cell_still_rising(verdicts) is marked


def _write(out, protocol, algo, dataset_id, seed, points, updates, wall_time_s=None):
    budget = {"updates": updates, "eval_every": updates // len(points), "eval_episodes": EPISODES,
              "final_episodes": 10 * EPISODES}
    final = {**points[-1], "step": updates}
    runstore.write_json_atomic(record_path(out, algo, dataset_id, seed, protocol), {
        "status": "done", "algo": algo, "dataset_id": dataset_id, "task_id": "equal_line-n2",
        "family": "equal_line", "seed": seed, "protocol": protocol, "budget": budget,
        "commit": "abc", "curve": points, "final": final, "wall_time_s": wall_time_s})


def test_tables_mark_rising_cells_and_state_the_protocol(tmp_path, monkeypatch):
    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(tmp_path / "no-references.json"))
    out = tmp_path / "lb"
    rising, flat = [0.0, 1.0, 2.0, 5.0], [5.0] * 4
    for seed in range(3):
        # quick: BC still rising on every seed; CFCQL rising on one seed of three only
        _write(out, "quick", "bc", "equal_line-n2-random-v0", seed, curve(rising, seed=seed), 1000)
        _write(out, "quick", "cfcql", "equal_line-n2-random-v0", seed,
               curve(rising if seed == 0 else flat, seed=seed), 1000)
        _write(out, "quick", "bc", "equal_line-n2-medium-v0", seed, curve(flat, seed=seed), 1000)
        _write(out, "quick", "cfcql", "equal_line-n2-medium-v0", seed,
               curve([5.0, 5.0, 5.0, 1.0], seed=seed), 1000)  # falls: counted, never marked
        # full: 20 evaluations, flat at the end
        _write(out, "full", "bc", "equal_line-n2-random-v0", seed,
               curve(list(np.linspace(0, 5, 10)) + [5.0] * 10, seed=seed, step=100), 2000)
    write_leaderboards(out, reps=20)
    text = (out / "equal_line.md").read_text()
    full, quick = text.split("## Protocol `full`")[1].split("## Protocol `quick`")
    assert BUDGET_BOUND in quick and BUDGET_BOUND not in full
    assert f"5.00 ± 0.00 {RISING_MARK}" not in full and RISING_MARK + " |" not in full
    assert "here k = 5 on curves of 20 evaluations). Marked: 0 of 1 cells." in full
    assert "here k = 1 on curves of 4 evaluations). Marked: 1 of 4 cells." in quick
    assert "Runs: 4 of 12 still rising, 3 falling by as much" in quick
    assert "by the same vote, 1 cell ended falling" in quick
    row = next(line for line in quick.splitlines() if line.startswith("| equal_line-n2-random"))
    _, cfcql_cell, bc_cell = [c.strip() for c in row.strip("|").split("|")]  # CFCQL first
    assert bc_cell.strip("*").endswith(f" {RISING_MARK}")  # bold: the best mean
    assert RISING_MARK not in cfcql_cell  # one rising seed of three does not mark the cell
    assert "Aggregates over 2 datasets, protocol `quick`" in quick
    table = pd.read_csv(out / "equal_line.csv")
    bc = table[(table.protocol == "quick") & (table.algo == "bc")].set_index("dataset_id")
    assert bc.loc["equal_line-n2-random-v0", "still_rising"]
    assert bc.loc["equal_line-n2-random-v0", "rising_seeds"] == 3
    assert not bc.loc["equal_line-n2-medium-v0", "still_rising"]
    cf = table[(table.protocol == "quick") & (table.algo == "cfcql")].set_index("dataset_id")
    assert cf.loc["equal_line-n2-random-v0", "rising_seeds"] == 1
    assert not cf.loc["equal_line-n2-random-v0", "still_rising"]
    assert cf.loc["equal_line-n2-medium-v0", "rising_seeds"] == 0
    index = (out / "README.md").read_text()
    assert "protocol `quick`: 2 datasets, bc, cfcql; still rising (↑): 1 of 4 cells" in index
    assert "protocol `full`: 1 datasets, bc; still rising (↑): 0 of 1 cells" in index
    assert BUDGET_BOUND in index
    assert json.loads((out / "marl_eval.json").read_text())  # the export still works


def test_cells_trained_on_other_bytes_than_the_canonical_build_are_marked():
    from marl_offline_bench.leaderboard import OTHER_BYTES_MARK, family_table, runs_frame
    from marl_offline_bench.records import RunRecord
    from marl_offline_bench.registry import recorded_statistics

    canonical = recorded_statistics("mpe-cn-random-v0")["sha256"]
    point = {"step": 10, "mean_return": -20.0, "returns": [-20.0, -20.0], "episodes": 2}

    def record(algo, sha):
        return RunRecord(algo=algo, dataset_id="mpe-cn-random-v0", task_id="mpe-cn",
                         family="mpe", seed=0, protocol="smoke", budget={
                             "updates": 10, "eval_every": 10, "eval_episodes": 2,
                             "final_episodes": 2}, status="done", curve=[point], final=point,
                         dataset_sha256=sha)

    display, long = family_table(runs_frame([record("bc", canonical), record("cfcql", "0" * 64),
                                             record("omar", None)]))
    cells = dict(zip(long.algo, long.other_bytes))
    assert cells == {"bc": False, "cfcql": True, "omar": False}
    row = display.iloc[0].to_dict()
    assert OTHER_BYTES_MARK in row["CFCQL"] and OTHER_BYTES_MARK not in row["BC"]


def test_natural_key_orders_agent_counts_by_value():
    ids = ["equal_line-n10-medium-v0", "equal_line-n2-medium-v0", "equal_line-n4-expert-v0",
           "equal_line-n2-expert-v0", "mpe-cn-expert-v0"]
    assert sorted(ids, key=natural_key) == [
        "equal_line-n2-expert-v0", "equal_line-n2-medium-v0", "equal_line-n4-expert-v0",
        "equal_line-n10-medium-v0", "mpe-cn-expert-v0"]


def test_dataset_order_is_task_by_value_then_quality_random_to_expert():
    ids = ["equal_line-n10-medium-v0", "equal_line-n2-expert-v0", "equal_line-n2-random-v0",
           "equal_line-n2-medium-v0", "equal_line-n2-medium-replay-v0", "not-registered-v0",
           "equal_line-n2-mixed-v0"]
    assert sorted(ids, key=dataset_order) == [
        "equal_line-n2-random-v0", "equal_line-n2-medium-replay-v0", "equal_line-n2-medium-v0",
        "equal_line-n2-expert-v0", "equal_line-n2-mixed-v0", "equal_line-n10-medium-v0",
        "not-registered-v0"]


def test_every_registered_algorithm_has_its_own_colour_in_every_plot():
    from marl_offline_bench.algorithms import algorithm_registry
    from marl_offline_bench.leaderboard import algorithm_colour

    colours = [algorithm_colour(name) for name in algorithm_registry()]
    assert len(set(colours)) == len(colours) and "black" not in colours
    assert algorithm_colour("not-an-algorithm") == "black"


def test_columns_put_cfcql_first_then_the_baselines_then_the_ablations_as_declared_then_data():
    from marl_offline_bench.leaderboard import _column_order

    algos = ["cfcql_alpha_double", "omar", "data", "cfcql_policy_samples", "bc", "cfcql",
             "cfcql_alpha_half"]
    assert _column_order(algos) == ["cfcql", "bc", "omar", "cfcql_policy_samples",
                                    "cfcql_alpha_half", "cfcql_alpha_double", "data"]


def test_the_readme_full_table_gives_seed_means_spreads_and_wall_times(tmp_path, monkeypatch):
    """scripts/full_table.py: one row per dataset with a `full` record, each cell its seeds'
    mean ± std and count, the `quick` cells beside; --wall-time gives minutes and their range."""
    from marl_offline_bench.leaderboard import load_records, runs_frame

    monkeypatch.setenv("MARL_BENCH_REFERENCE_FILE", str(tmp_path / "no-references.json"))
    full_table = _script("full_table")
    out, dataset_id, flat = tmp_path / "lb", "equal_line-n2-medium-v0", [5.0] * 4
    for seed, level, minutes in ((0, 10.0, 30), (1, 20.0, 50)):
        _write(out, "full", "cfcql", dataset_id, seed, curve([level] * 4, noise=0.0, seed=seed),
               2000, wall_time_s=60.0 * minutes)
    _write(out, "full", "bc", dataset_id, 0, curve(flat, noise=0.0), 2000, wall_time_s=60.0)
    _write(out, "quick", "cfcql", "equal_line-n2-random-v0", 0, curve(flat), 1000)
    runs = runs_frame(load_records(out))

    scores = full_table.table(runs, ["cfcql", "bc"], ["cfcql"]).set_index("dataset")
    assert list(scores.index) == ["equal_line-n2-medium"]   # no `full` record, no row
    row = scores.loc["equal_line-n2-medium"]
    assert row["CFCQL `full`"] == "15.0 ± 5.0 (2 seeds)" and row["BC `full`"] == "5.0"
    assert row["CFCQL `quick`"] == "" and row["CFCQL wall time"] == "40 min"
    minutes = full_table.table(runs, ["cfcql", "bc"], [], full_table.wall_time_cell)
    assert minutes.iloc[0]["CFCQL `full`"] == "40 min (30-50)"
    assert minutes.iloc[0]["BC `full`"] == "1 min" and "CFCQL wall time" not in minutes


def test_paired_episodes_tells_a_tail_of_failed_starts_from_a_lower_level():
    """scripts/paired_episodes.py: a gap made in a tenth of the starts is all in the worst
    tenth with a median gap of 0; a gap spread over every start has its median equal to it."""
    paired = _script("paired_episodes")
    reference = np.linspace(60.0, 120.0, 100)
    tail = reference.copy()
    tail[::10] -= 80.0                                  # ten starts fail, the rest match
    lower = reference - 8.0                             # every start loses 8
    tail_summary = paired.paired_summary(tail, reference)
    assert tail_summary["gap"] == pytest.approx(-8.0)
    assert tail_summary["gap from the worst tenth"] == pytest.approx(-8.0)
    assert tail_summary["median gap"] == 0.0 and tail_summary["% below 50"] == 10.0
    lower_summary = paired.paired_summary(lower, reference)
    assert lower_summary["median gap"] == pytest.approx(-8.0)
    assert lower_summary["gap from the worst tenth"] == pytest.approx(-0.8)


def test_cn_coverage_reads_collisions_doubling_up_and_strays_from_observations():
    """scripts/cn_coverage.py: agents on their own landmarks score nothing; two agents on one
    landmark collide and double up, and the third, far from all, strays."""
    from types import SimpleNamespace

    cn_coverage = _script("cn_coverage")
    landmarks = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    def observations(agents):               # (3, 2) -> (3, 18) as simple_spread observes
        obs = np.zeros((3, 18), np.float32)
        obs[:, 2:4] = agents
        obs[:, 4:10] = (landmarks[None] - agents[:, None]).reshape(3, 6)
        return obs

    spread = observations(landmarks)
    crowded = observations(np.array([[0.0, 0.0], [0.1, 0.0], [3.0, 3.0]]))
    steps = 2                                # each episode: 2 steps, 3 observations
    arrays = SimpleNamespace(obs=np.stack([spread] * (steps + 1) + [crowded] * (steps + 1)),
                             episode_starts=np.array([0, steps, 2 * steps]))
    measures = cn_coverage.episode_measures(arrays)
    assert measures["collisions"].tolist() == [0, steps]
    assert measures["distance"].tolist() == pytest.approx([0.0, steps * (0.9 + 1.0)])  # L1, L2
    assert measures["doubled up"].tolist() == [False, True]
    assert measures["stray agent"].tolist() == [False, True]


def test_critic_on_failures_reads_each_acting_step_once_with_its_episode():
    """scripts/critic_on_failures.py: episodes of 2 and 3 steps keep T + 1 observations each;
    the acting steps are the first T of each, and each knows its episode."""
    from types import SimpleNamespace

    critic_on_failures = _script("critic_on_failures")
    # observation rows: episode 0 at 0, 1, (2 = its last); episode 1 at 3, 4, 5, (6 = its last)
    obs = np.arange(7, dtype=np.float32).reshape(7, 1, 1)
    states = np.arange(7, dtype=np.float32).reshape(7, 1) * 10
    arrays = SimpleNamespace(obs=obs, states=states, episode_starts=np.array([0, 2, 5]))
    step_obs, step_states, episode = critic_on_failures.acting_steps(arrays)
    assert step_obs.ravel().tolist() == [0, 1, 3, 4, 5]
    assert step_states.ravel().tolist() == [0, 10, 30, 40, 50]
    assert episode.tolist() == [0, 0, 1, 1, 1]


def test_plot_legends_follow_the_column_order_by_display_name():
    """Plot lines carry display names; their shared legend still lists CFCQL first, the
    baselines, the ablations as declared, then the data line, under the figure's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marl_offline_bench.algorithms import display_name
    from marl_offline_bench.leaderboard import _title_and_legend

    fig, axes = plt.subplots(1, 2, squeeze=False, layout="constrained")
    for ax, algos in zip(axes.ravel(), (["omar", "cfcql_alpha_double", "cfcql"],
                                        ["bc", "cfcql_alpha_half", "data"])):
        for algo in algos:
            ax.plot([0, 1], [0, 1], label=display_name(algo))
    _title_and_legend(fig, axes, "a title")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        display_name(a) for a in ("cfcql", "bc", "omar", "cfcql_alpha_half",
                                  "cfcql_alpha_double")] + ["data"]
    assert legend.get_title().get_text() == "a title"
    plt.close(fig)


def _script(name: str):
    """A module of the repository's scripts/ folder, loaded from its file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
