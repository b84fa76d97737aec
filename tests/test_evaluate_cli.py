"""evaluate.py: rebuilds the agent from the checkpoint's config, plays deterministic
episodes, prints mean ± std, writes JSON, records video, and fails in one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import evaluate as evaluate_cli
from daif.checkpoint import load_checkpoint, save_checkpoint
from daif.trainer import train
from tests.conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_AUDIODRIVER": "dummy"}


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "evaluate.py", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def trained_run(compose_cfg, tmp_path) -> Path:
    # eval_episodes=3 over num_envs=2, so the final trainer eval is reproducible below
    return train(
        compose_cfg(
            "trainer.total_steps=1200", "trainer.eval_episodes=3", run_dir=tmp_path / "trained"
        )
    ).run_dir


def test_evaluate_prints_summary_and_writes_json(trained_run, tmp_path):
    out = tmp_path / "summary.json"
    proc = _evaluate(f"checkpoint={trained_run}", "episodes=3", f"output={out}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 3 and len(summary["returns"]) == 3
    assert summary["mean"] == pytest.approx(np.mean(summary["returns"]))
    assert summary["std"] == pytest.approx(np.std(summary["returns"]))
    assert summary["global_step"] == 1200
    # CartPole pays 1 per step, so each return is its episode's length
    assert summary["returns"] == [float(n) for n in summary["lengths"]]
    assert f"return {summary['mean']:.2f} ± {summary['std']:.2f} over 3 episodes" in proc.stdout
    # same seed, episodes and env split as the trainer's final evaluation → same numbers
    final = load_checkpoint(trained_run)["loop"]["eval_history"][-1]
    assert (summary["mean"], summary["std"]) == pytest.approx((final[1], final[2]))


def test_evaluate_records_video_headless_without_warnings(trained_run, tmp_path):
    videos = tmp_path / "videos"
    headless = {
        k: v for k, v in ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"checkpoint={trained_run}",
            "episodes=2",
            "video=true",
            f"video_dir={videos}",
            f"output={tmp_path / 'v.json'}",
        ],
        cwd=ROOT,
        env=headless,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr and "error" not in proc.stderr.lower()
    files = sorted(p.name for p in videos.glob("*.mp4"))
    assert files == ["eval-episode-0.mp4", "eval-episode-1.mp4"]
    assert all((videos / f).stat().st_size > 1000 for f in files)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_missing_checkpoint_is_one_line_error(tmp_path):
    line = _one_line_error(_evaluate(f"checkpoint={tmp_path / 'nope.pt'}"))
    assert "not found" in line and "nope.pt" in line


def test_mismatched_checkpoint_is_one_line_error(trained_run, tmp_path):
    ckpt = load_checkpoint(trained_run)
    # weights of a different network than the stored config builds
    ckpt["agent"]["policy"] = {"weight": torch.zeros(5, 7), "bias": torch.zeros(5)}
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, {k: v for k, v in ckpt.items() if k not in ("format", "version", "path")})
    line = _one_line_error(_evaluate(f"checkpoint={bad}"))
    assert "does not fit the agent" in line and "size mismatch" in line


def test_checkpoint_from_before_the_deep_package_is_refused_in_one_line(tmp_path):
    # a version-1 file (daif.agent.DeepActiveInferenceAgent, `gamma`, flat modules)
    old = tmp_path / "old.pt"
    torch.save(
        {
            "format": "daif-checkpoint",
            "version": 1,
            "config": {"agent": {"_target_": "daif.agent.DeepActiveInferenceAgent", "gamma": 0.99}},
            "agent": {"modules": {"encoder": {}}},
        },
        old,
    )
    line = _one_line_error(_evaluate(f"checkpoint={old}"))
    assert "version 1" in line and "reads version 2" in line and "daif.deep" in line


def test_evaluate_runs_on_one_thread_by_default(trained_run, tmp_path, monkeypatch):
    """One busy process beside an evaluation should not halve its speed: torch gets one
    intra-op thread unless ``threads`` says otherwise."""
    out = tmp_path / "e.json"
    monkeypatch.setattr(sys, "argv", ["evaluate.py", f"checkpoint={trained_run}", f"output={out}"])
    root = logging.getLogger()
    handlers = root.handlers[:]
    torch.set_num_threads(2)
    GlobalHydra.instance().clear()
    try:
        evaluate_cli.main()
        assert torch.get_num_threads() == 1 and out.is_file()
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers  # Hydra configured logging for the job
        torch.set_num_threads(1)
