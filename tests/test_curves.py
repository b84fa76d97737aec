"""Learning curves of the benchmarks (benchmarks/curves.py): the step grid, the IQM and
its interval against hand-computed cases, and the PNG that sample_efficiency.py writes."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, load_benchmark

curves = load_benchmark("curves")


@dataclass
class Run:
    algo: str
    seed: int
    evals: list = field(default_factory=list)
    error: str | None = None


def test_runs_are_put_on_one_grid_and_a_stopped_run_is_carried_forward():
    runs = [
        Run("daif", 1, [(2500, 10.0), (5000, 475.0)]),  # stopped at target
        Run("daif", 0, [(2500, 5.0), (5000, 6.0), (7500, 7.0)]),
        Run("ppo", 0, [(2504, 1.0), (5004, 2.0), (7504, 3.0)]),  # SB3 overshoots a little
        Run("ppo", 1, [], error="Traceback ..."),  # skipped
    ]
    steps, scores = curves.score_matrices(runs)
    np.testing.assert_array_equal(steps, [2500, 5000, 7500])
    assert list(scores) == ["daif", "ppo"]
    # rows in seed order; seed 1 keeps 475 after it stopped
    np.testing.assert_array_equal(scores["daif"], [[5.0, 6.0, 7.0], [10.0, 475.0, 475.0]])
    np.testing.assert_array_equal(scores["ppo"], [[1.0, 2.0, 3.0]])


def test_iqm_is_the_mean_of_the_middle_half_of_the_seeds():
    # 4 seeds: trim one from each end; 8 seeds: two from each end
    scores = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 10.0], [100.0, 10.0]])
    np.testing.assert_allclose(curves.iqm_per_step(scores), [2.5, 5.0])
    eight = np.arange(8, dtype=float)[:, None]
    np.testing.assert_allclose(curves.iqm_per_step(eight), [(2 + 3 + 4 + 5) / 4])


def test_bootstrap_interval_brackets_the_iqm_and_collapses_when_seeds_agree():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(10, 3)) * np.array([0.0, 1.0, 10.0])  # step 0: all equal
    ((iqm, ci),) = curves.iqm_with_ci({"daif": spread}, reps=500).values()
    assert ci.shape == (2, 3)
    assert np.all(ci[0] <= iqm + 1e-12) and np.all(iqm <= ci[1] + 1e-12)
    assert ci[1, 0] - ci[0, 0] == pytest.approx(0.0)
    assert 0 < ci[1, 1] - ci[0, 1] < ci[1, 2] - ci[0, 2]  # wider for a wider spread
    # the same runs always give the same interval, and the caller's RNG is left alone
    np.random.seed(123)
    ((_, again),) = curves.iqm_with_ci({"daif": spread}, reps=500).values()
    np.testing.assert_array_equal(ci, again)
    assert np.random.random() == np.random.RandomState(123).random_sample()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_sample_efficiency_writes_the_curves_beside_its_table(tmp_path):
    evals = lambda finals: [  # noqa: E731
        (2500 * (i + 1), v, 0.0, float(i), float(i)) for i, v in enumerate(finals)
    ]
    runs = [
        {"algo": "daif", "seed": s, "evals": evals([20.0, 200.0 + s, 480.0]), "steps": 7500}
        for s in range(3)
    ] + [
        {"algo": "ppo", "seed": s, "evals": evals([20.0, 100.0, 300.0 + s]), "steps": 7500}
        for s in range(3)
    ]
    saved = tmp_path / "saved.json"
    meta = {"env": "cartpole", "target": 475.0, "command": "python ...", "date": "today"}
    saved.write_text(json.dumps({"meta": meta, "runs": runs}))
    out = tmp_path / "report.md"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "sample_efficiency.py"),
        "--env=cartpole",
        "--no-daif",
        "--baselines=none",
        f"--load={saved}",
        f"--out={out}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    png = out.with_suffix(".png")
    assert _png_size(png) == (1000, 460)
    assert "![learning curves](report.png)" in out.read_text()
    # the report's own .json holds every run the report shows, and where they came from
    merged = json.loads(out.with_suffix(".json").read_text())
    assert sorted((r["algo"], r["seed"]) for r in merged["runs"]) == sorted(
        (r["algo"], r["seed"]) for r in runs
    )
    assert merged["meta"]["loaded"] == [
        {"file": "saved.json", "command": "python ...", "date": "today"}
    ]
    # the stand-alone renderer draws the same file from the saved runs
    again = tmp_path / "again.png"
    cli = [sys.executable, str(ROOT / "benchmarks" / "curves.py"), str(saved), f"--out={again}"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _png_size(again) == (1000, 460)
