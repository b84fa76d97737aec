"""benchmarks/sample_efficiency.py's runs keep every evaluation episode's return and length."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import load_benchmark

bench = load_benchmark("sample_efficiency")

TINY = [
    "agent.batch_size=16",
    "agent.learning_starts=64",
    "agent.buffer_size=512",
    "trainer.num_envs=1",
]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # a benchmark worker pins torch to one thread
    yield
    torch.set_num_threads(threads)


def _check_cartpole_episodes(run) -> None:
    assert run.error is None, run.error
    assert len(run.episodes) == len(run.evals) >= 2
    for (returns, lengths), (_, mean, std, *_) in zip(run.episodes, run.evals, strict=True):
        assert len(returns) == len(lengths) == bench.EVAL_EPISODES
        # CartPole pays 1 per frame: each episode's return is its length
        assert returns == [float(n) for n in lengths]
        assert mean == pytest.approx(sum(returns) / len(returns))
        assert std == pytest.approx(torch.tensor(returns, dtype=torch.float64).std(False).item())


def test_a_daif_run_keeps_each_evaluations_episodes(tmp_path):
    run = bench.run_daif(
        "daif", "cartpole", 0, 400, [*TINY, f"trainer.run_dir={tmp_path}"], eval_interval=200
    )
    _check_cartpole_episodes(run)


def test_a_baseline_run_keeps_each_evaluations_episodes():
    pytest.importorskip("stable_baselines3")
    run = bench.run_sb3("ppo", "CartPole-v1", 0, 512, eval_interval=256)
    _check_cartpole_episodes(run)


def test_episodes_survive_a_json_round_trip_and_older_files_load_without_them(tmp_path):
    run = bench.RunResult(
        "daif",
        1,
        [(2500, 15.0, 5.0, 2.0, 1.5)],
        4.0,
        3.0,
        2500,
        episodes=[([10.0, 20.0], [10, 20])],
    )
    path = tmp_path / "runs.json"
    bench.save_runs(path, [run], {})
    assert bench.load_runs(path)[0] == [run]
    legacy = tmp_path / "legacy.json"  # a file written before episodes were kept
    legacy.write_text(
        '{"meta": {}, "runs": [{"algo": "dqn", "seed": 0, "evals": [[100, 1.0, 0.0, 1.0, 1.0]],'
        ' "wall_time": 1.0, "cpu_time": 1.0, "steps": 100, "error": null}]}'
    )
    (loaded,), _ = bench.load_runs(legacy)
    assert loaded.episodes == [] and loaded.evals == [(100, 1.0, 0.0, 1.0, 1.0)]


def test_a_killed_benchmark_takes_its_workers_with_it(tmp_path):
    """`kill` reaches only the parent; its workers must not run on holding cores and locks."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import argparse, os, sys, time\n"
        f"sys.path.insert(0, {str(bench.BENCH_DIR)!r})\n"
        "import sample_efficiency as bench\n"
        "if __name__ == '__main__':\n"  # spawned workers import this file again
        "    args = argparse.Namespace(workers=1, nice=0)\n"
        "    results = bench._run_jobs([(os.getpid, ()), (time.sleep, (120,))], args)\n"
        "    print(next(results), flush=True)\n"
        "    next(results)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())  # the worker's pid; it now sleeps for 120 s
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"worker {worker} outlived its killed parent")
