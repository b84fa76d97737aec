"""Pure helpers of benchmarks/sample_efficiency.py, against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from tests.conftest import load_benchmark

bench = load_benchmark("sample_efficiency")

# (step, mean, std, training wall seconds, training CPU seconds) per evaluation
HISTORY = [
    (2500, 20.0, 5.0, 4.0, 3.0),
    (5000, 474.9, 1.0, 9.0, 7.0),
    (7500, 475.0, 0.0, 15.0, 12.0),  # exactly the target counts as reached
    (10000, 300.0, 90.0, 22.0, 18.0),
    (12500, 500.0, 0.0, 30.0, 25.0),
]


def test_steps_and_time_to_target_take_the_first_eval_at_or_above_target():
    assert bench.steps_to_target(HISTORY, 475.0) == 7500
    assert bench.time_to_target(HISTORY, 475.0) == 15.0
    assert bench.time_to_target(HISTORY, 475.0, cpu=True) == 12.0
    assert bench.steps_to_target(HISTORY, 10.0) == 2500
    assert bench.steps_to_target(HISTORY, 501.0) is None
    assert bench.time_to_target(HISTORY, 501.0) is None
    assert bench.steps_to_target([], 0.0) is None


def test_negative_targets_work_as_for_acrobot():
    history = [(2500, -500.0, 0, 1, 1), (5000, -101.0, 3, 2, 2), (7500, -99.5, 2, 3, 3)]
    assert bench.steps_to_target(history, -100.0) == 7500


def test_late_evals_count_the_second_half_of_the_run():
    # last eval at 12500: the second half is 6250 onwards, i.e. 7500, 10000 and 12500
    assert bench.late_evals_at_target(HISTORY, 475.0) == (2, 3)
    assert bench.late_evals_at_target(HISTORY, 501.0) == (0, 3)
    # an eval exactly at the half counts: 2500 of 5000
    assert bench.late_evals_at_target([(2500, 500.0), (5000, 10.0)], 475.0) == (1, 2)
    assert bench.late_evals_at_target([], 475.0) == (0, 0)


def test_median_counts_unsolved_seeds_as_infinite():
    assert bench.median_with_failures([10, None, 30]) == 30  # sorted: 10, 30, ∞
    assert bench.median_with_failures([None, None, 5]) == math.inf  # 5, ∞, ∞
    assert bench.median_with_failures([1, 2, 3, 4]) == 2.5
    assert bench.median_with_failures([1, 2, None, None]) == math.inf  # (2 + ∞) / 2
    assert math.isnan(bench.median_with_failures([]))


def test_ratio_of_medians():
    assert bench.ratio(15000.0, 10000.0) == 1.5
    assert bench.ratio(math.inf, 1000.0) == math.inf  # baseline never solved
    assert bench.ratio(1000.0, math.inf) == 0.0  # daif never solved
    assert math.isnan(bench.ratio(math.inf, math.inf))
    assert math.isnan(bench.ratio(math.nan, 1.0))


def test_summary_of_two_algorithms():
    run = bench.RunResult
    runs = [
        run("daif", 0, [(2500, 100.0, 0, 5, 4), (5000, 500.0, 0, 11, 9)], 20.0, 18.0, 5000),
        run("daif", 1, [(2500, 480.0, 0, 6, 5), (5000, 470.0, 0, 12, 10)], 25.0, 20.0, 5000),
        run("daif", 2, [(2500, 10.0, 0, 4, 3), (5000, 20.0, 0, 8, 7)], 10.0, 9.0, 5000),
        run("ppo", 0, [(2500, 10.0, 0.0, 2.0, 2.0)], 4.0, 4.0, 2500),
        run("ppo", 1, error="Traceback ...\nRuntimeError: boom"),
    ]
    daif, ppo = bench.summarise(runs, target=475.0)
    assert daif["algo"] == "daif" and ppo["algo"] == "ppo"
    assert daif["solved"] == 2 and daif["seeds"] == 3 and daif["errors"] == 0
    assert daif["median_steps"] == 5000  # 2500, 5000, ∞
    assert daif["median_time"] == 11.0  # 6, 11, ∞
    assert daif["median_cpu_time"] == 9.0  # 5, 9, ∞
    assert daif["median_final"] == 470.0  # 20, 470, 500
    assert daif["final_at_target"] == 1
    assert daif["late_at_target"] == (2, 6)  # seed 0: 5000; seed 1: 2500; seed 2: none
    assert daif["median_wall"] == 20.0
    assert daif["median_sps"] == 250.0  # 5000/20, 5000/25, 5000/10 -> 200, 250, 500
    assert ppo["errors"] == 1 and ppo["solved"] == 0
    assert ppo["median_steps"] == math.inf
    table = bench.markdown_tables(runs, 475.0)
    assert "RuntimeError: boom" in table
    assert "| **daif** | 2/3 |" in table
    assert "| 500.0 ± 0.0 | 1/2 |" in table  # seed 0's row: final, then its late evals
    assert "| 1/3 | 2/6 |" in table  # summary: finals ≥ target, then late evals pooled


def test_runs_survive_a_json_round_trip(tmp_path):
    runs = [
        bench.RunResult("dqn", 3, [(2500, 9.5, 1.0, 2.0, 1.5)], 4.0, 3.0, 2500),
        bench.RunResult("ppo", 0, wall_time=1.0, cpu_time=1.0, error="boom"),
    ]
    path = tmp_path / "runs.json"
    bench.save_runs(path, runs, {"command": "x"})
    loaded, meta = bench.load_runs(path)
    assert loaded == runs and meta == {"command": "x"}


@pytest.mark.parametrize("text", [None, '{"runs": 3}', "not json", '{"meta": {}}'])
def test_a_missing_or_foreign_run_file_is_refused_by_name(tmp_path, capsys, text):
    path = tmp_path / "runs.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=f"--load {path}: not a run file"):
        bench.load_runs(path)
    argv = ["--env=cartpole", "--no-daif", "--baselines=none", f"--load={path}"]
    assert bench.main([*argv, f"--out={tmp_path / 'r.md'}"]) == 2
    assert f"error: --load {path}" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()  # refused before anything is written


def test_zoo_linear_schedule_runs_over_the_zoo_length():
    # learn() runs 2x the zoo's length: SB3's progress p=0.75 is a quarter of learn's steps,
    # i.e. half of the zoo's, so the zoo schedule is at 0.5·x; it reaches 0 at p=0.5.
    sched = bench._zoo_schedule("lin_0.001", scale=2.0)
    assert sched(1.0) == pytest.approx(0.001)
    assert sched(0.75) == pytest.approx(0.0005)
    assert sched(0.5) == pytest.approx(0.0)
    assert sched(0.0) == 0.0
    same = bench._zoo_schedule("lin_0.2", scale=1.0)
    assert same(0.3) == pytest.approx(0.06)
    assert bench._zoo_schedule(3e-4, scale=2.0) == 3e-4


def test_cli_defaults_and_variants():
    args = bench.parse_args(
        ["--env", "acrobot", "--baselines", "none", "--ablate", "agent.info_gain_weight=0 a.b=1"]
    )
    assert (args.env_id, args.target, args.steps) == ("Acrobot-v1", -100.0, 100_000)
    jobs = bench.build_jobs(args)
    labels = [fargs[0] for _, fargs in jobs]
    assert labels == ["daif"] * 5 + ["daif [agent.info_gain_weight=0 a.b=1]"] * 5
    assert jobs[-1][1][4] == ["agent.info_gain_weight=0", "a.b=1"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--env", "pong"])


def test_no_daif_keeps_the_ablations_and_an_empty_invocation_is_refused(capsys):
    args = bench.parse_args(["--baselines", "none", "--no-daif", "--ablate", "a.b=1"])
    labels = [fargs[0] for _, fargs in bench.build_jobs(args)]
    assert labels == ["daif [a.b=1]"] * 5
    assert bench.main(["--baselines", "none", "--no-daif"]) == 2
    assert "nothing to run" in capsys.readouterr().err


def test_preset_trainer_values_survive_composition():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    preset = OmegaConf.load(bench.CONFIG_DIR / "experiment" / "cartpole_pixels.yaml").trainer
    overrides = bench.preset_trainer_overrides("cartpole_pixels")
    assert f"trainer.num_envs={preset.num_envs}" in overrides
    with initialize_config_dir(config_dir=str(bench.CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["env=cartpole_pixels", *overrides])
    for key, value in preset.items():
        assert cfg.trainer[key] == value


def test_stop_at_target_ends_a_daif_run_at_its_first_evaluation_reaching_it(
    tmp_path, monkeypatch, capsys
):
    # no gradient steps (learning starts after the budget): a few seconds of random play
    monkeypatch.setattr(bench, "REPO", tmp_path)
    args = bench.parse_args(
        [
            "--env",
            "cartpole",
            "--seeds",
            "1",
            "--steps",
            "7500",
            "--baselines",
            "none",
            "--stop-at-target",
            "--target",
            "5",
        ]
    )
    ((fn, fargs),) = bench.build_jobs(args)
    assert fargs[-2:] == (5.0, 2500)  # stop_at, eval_interval (the protocol's default)
    out = fn(*fargs[:-3], ["agent.learning_starts=7400"], fargs[-2])
    assert out.error is None, out.error
    assert out.steps == 2500 and [e[0] for e in out.evals] == [2500]
    # each evaluation is reported as it happens, with the run's label, seed and step
    mean, std = out.evals[0][1:3]
    assert f"[daif seed 0] 2,500 steps: eval {mean:.1f} ± {std:.1f}" in capsys.readouterr().out
    # without the flag the same run goes on to the budget
    full = fn(*fargs[:-3], ["agent.learning_starts=7400"], None)
    assert full.steps == 7500 and [e[0] for e in full.evals] == [2500, 5000, 7500]
    # --eval-interval spaces the evaluations out; the budget's end is always evaluated
    sparse = fn(*fargs[:-3], ["agent.learning_starts=7400"], None, 5000)
    assert [e[0] for e in sparse.evals] == [5000, 7500]


def test_eval_interval_must_fit_the_budget():
    with pytest.raises(SystemExit):
        bench.parse_args(["--env", "cartpole", "--steps", "5000", "--eval-interval", "10000"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--env", "cartpole", "--eval-interval", "0"])
    args = bench.parse_args(
        ["--env", "cartpole", "--baselines", "none", "--eval-interval", "10000"]
    )
    assert all(fargs[-1] == 10000 for _, fargs in bench.build_jobs(args))


def test_progress_names_a_failed_run_as_an_error_and_a_finished_one_by_its_numbers(
    tmp_path, monkeypatch, capsys
):
    finished = bench.RunResult(
        "daif", 0, [(2500, 480.0, 2.0, 6.0, 5.0), (5000, 490.0, 1.0, 12.0, 10.0)], 30.0, 25.0, 5000
    )
    failed = bench.RunResult("daif", 1, error="Traceback ...\nModuleNotFoundError: daif")
    monkeypatch.setattr(bench, "_run_jobs", lambda jobs, args: iter([finished, failed]))
    out = tmp_path / "r.md"
    argv = ["--env", "cartpole", "--seeds", "2", "--steps", "5000", "--baselines", "none"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [ln.strip() for ln in captured.out.splitlines() if ln.strip().startswith("done")]
    assert lines == [
        "done                     daif seed 0: final 490.0, steps to target 2,500, 30s",
        "done                     daif seed 1: error (traceback below)",
    ]
    assert "ModuleNotFoundError: daif" in captured.err
    assert "ModuleNotFoundError: daif" in out.read_text()
