"""Checkpoints: atomic writes, loading errors, config checks, and exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from daif.checkpoint import (
    CheckpointError,
    check_compatible,
    config_mismatches,
    load_checkpoint,
    save_checkpoint,
)
from daif.trainer import Trainer, train
from daif.utils import NonFiniteLossError
from tests.conftest import DEEP_TINY, ROOT
from tests.test_trainer_loop import CountEnv

# ------------------------------------------------------------------ file-level behaviour


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while writing")


def test_atomic_save_keeps_previous_file_when_a_write_fails(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"x": torch.arange(3)})
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"x": _Unpicklable()})
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp left over


def test_load_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)  # a dir without checkpoints/last.pt
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a daif checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "garbage.pt")


class _RunsCode:
    """Unpickling this calls ``marker.touch()``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "daif-checkpoint", "version": 2, "agent": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"refused .*could run code"):
        load_checkpoint(evil)
    assert not marker.exists()
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"checkpoint={evil}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: refused")
    assert proc.stderr.count("\n") == 1 and not marker.exists()


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(compose_cfg, tmp_path, caplog):
    res = train(compose_cfg("trainer.checkpoint_interval=200", run_dir=tmp_path / "r"))
    folder = res.run_dir / "checkpoints"
    assert load_checkpoint(folder / "previous.pt")["loop"]["global_step"] == 200
    last = folder / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # half a copy
    with caplog.at_level("WARNING", logger="daif.checkpoint"):
        ckpt = load_checkpoint(res.run_dir)
    assert ckpt["loop"]["global_step"] == 200 and ckpt["path"].endswith("previous.pt")
    assert "cannot read checkpoint" in caplog.text and "previous.pt" in caplog.text
    # and the run resumes from it, to the same end
    resumed = train(compose_cfg(f"trainer.resume={res.run_dir}", run_dir=res.run_dir))
    assert resumed.global_step == 400 and resumed.trained_steps == 200


def test_resuming_a_file_written_by_someone_else_needs_trust(compose_cfg, tmp_path, monkeypatch):
    train(compose_cfg("trainer.total_steps=200", run_dir=tmp_path / "theirs"))
    monkeypatch.setenv("DAIF_CHECKPOINT_KEY", str(tmp_path / "my.key"))  # another user
    cfg = compose_cfg(f"trainer.resume={tmp_path / 'theirs'}", run_dir=tmp_path / "theirs")
    with pytest.raises(CheckpointError, match=r"trainer\.trust_checkpoint=true"):
        train(cfg)
    trusted = compose_cfg(
        f"trainer.resume={tmp_path / 'theirs'}",
        "trainer.trust_checkpoint=true",
        run_dir=tmp_path / "theirs",
    )
    assert train(trusted).global_step == 400


def test_run_dir_resolves_to_last_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"k": 7})
    assert load_checkpoint(tmp_path)["k"] == 7


def test_config_mismatch_names_keys():
    a = {
        "seed": 0,
        "agent": {"lr": 0.1, "net": {"h": 8}},
        "env": {"id": "A"},
        "trainer": {"num_envs": 2},
    }
    b = {
        "seed": 0,
        "agent": {"lr": 0.1, "net": {"h": 16}},
        "env": {"id": "A"},
        "trainer": {"num_envs": 4},
    }
    assert config_mismatches(a, a) == []
    assert config_mismatches(a, b) == ["agent.net.h", "trainer.num_envs"]
    with pytest.raises(CheckpointError, match=r"agent\.net\.h \(checkpoint 8 vs now 16\)"):
        check_compatible(a, b)
    # budgets may change on resume (e.g. train longer)
    c = {**a, "trainer": {"num_envs": 2, "total_steps": 10**6}}
    assert config_mismatches(a, c) == []


# ------------------------------------------------------------------ resume


def _policy(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.agent.policy.parameters()]


def test_resume_in_process_matches_uninterrupted(compose_cfg, tmp_path):
    full = Trainer(compose_cfg(run_dir=tmp_path / "full"))
    full_res = full.run()

    half = compose_cfg("trainer.total_steps=200", run_dir=tmp_path / "split")
    train(half)
    resumed = Trainer(
        compose_cfg(f"trainer.resume={tmp_path / 'split'}", run_dir=tmp_path / "split")
    )
    assert resumed.global_step == 200
    res = resumed.run()
    for x, y in zip(_policy(full), _policy(resumed), strict=True):
        assert torch.equal(x, y)
    assert res.eval_history == full_res.eval_history
    assert res.global_step == 400


def test_resume_rejects_mismatched_config(compose_cfg, tmp_path):
    train(compose_cfg("trainer.total_steps=100", run_dir=tmp_path / "a"))
    cfg = compose_cfg("agent.lr=0.5", f"trainer.resume={tmp_path / 'a'}", run_dir=tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"agent\.lr"):
        train(cfg)
    with pytest.raises(CheckpointError, match="not found"):
        train(compose_cfg(f"trainer.resume={tmp_path / 'nothing.pt'}"))


def test_non_finite_loss_saves_crash_checkpoint_then_raises(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "agent.poison_step=250", "trainer.checkpoint_interval=100", run_dir=tmp_path / "nan"
    )
    with pytest.raises(NonFiniteLossError, match="losses/policy"):
        train(cfg)
    crash = load_checkpoint(tmp_path / "nan" / "checkpoints" / "crash.pt")
    last = load_checkpoint(tmp_path / "nan")
    assert crash["loop"]["global_step"] >= 250
    assert last["loop"]["global_step"] == 200  # the last good periodic checkpoint is kept
    assert all(torch.isfinite(p).all() for p in crash["agent"]["policy"].values())


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc={proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.02)


def _deep_params(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return load_checkpoint(run_dir)["agent"]["modules"]


def test_sigkill_and_resume_gives_same_parameters_as_uninterrupted(tmp_path):
    """The deep agent on CartPole (tiny): a run SIGKILLed after its first checkpoint and
    resumed ends with exactly the parameters of an uninterrupted run of the same seed."""
    steps = ["trainer.total_steps=600", "trainer.checkpoint_interval=100", "logger=none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def cmd(run_dir: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "train.py",
            *DEEP_TINY,
            *steps,
            f"trainer.run_dir={run_dir}",
            f"hydra.run.dir={run_dir}",
            *extra,
        ]

    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.Popen(
        cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for(killed / "checkpoints" / "last.pt", proc, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    at_kill = load_checkpoint(killed)
    assert proc.returncode == -signal.SIGKILL and at_kill["loop"]["global_step"] < 600
    assert at_kill["envs"] is not None  # CartPole's vector env is pickled, not reseeded

    subprocess.run(
        cmd(killed, f"trainer.resume={killed}"),
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(cmd(full), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)

    a, b = _deep_params(full), _deep_params(killed)
    assert load_checkpoint(killed)["loop"]["global_step"] == 600
    assert a.keys() == b.keys()
    for module in a:
        for name, tensor in a[module].items():
            assert torch.equal(tensor, b[module][name]), f"{module}.{name} differs"
    np.testing.assert_array_equal(
        load_checkpoint(full)["loop"]["eval_history"],
        load_checkpoint(killed)["loop"]["eval_history"],
    )


class _UnpicklableCount(CountEnv):
    """CountEnv holding a lock, so the vector env cannot be pickled (like a pygame window)."""

    def __init__(self, terminate_at: int = 1000) -> None:
        super().__init__(terminate_at)
        self.lock = threading.Lock()


NOPICKLE_ID = "daif_test/CountNoPickle-v0"
if NOPICKLE_ID not in gym.registry:
    gym.register(id=NOPICKLE_ID, entry_point=_UnpicklableCount, max_episode_steps=5)


def test_unpicklable_env_falls_back_to_a_seeded_reset(compose_cfg, tmp_path):
    """Documented fallback: when the vector env does not pickle, the checkpoint stores no env;
    resuming restores agent, RNGs and counters and starts fresh episodes."""
    base = [
        "agent._target_=tests.test_trainer_loop.RecordingAgent",
        "~agent.lr",
        "~agent.gamma",
        "~agent.poison_step",
        f"env.id={NOPICKLE_ID}",
        "trainer.eval_episodes=0",
        "trainer.log_interval=10",
    ]
    run = tmp_path / "nopickle"
    train(compose_cfg(*base, "trainer.total_steps=14", run_dir=run))
    ckpt = load_checkpoint(run)
    assert ckpt["envs"] is None and ckpt["loop"]["global_step"] == 14
    # mid-episode (14 steps / 2 envs = 7: step 2 of the 2nd episode) when it was saved
    np.testing.assert_array_equal(ckpt["loop"]["obs"][:, 0], [2.0, 2.0])

    resumed = Trainer(
        compose_cfg(*base, "trainer.total_steps=20", f"trainer.resume={run}", run_dir=run)
    )
    assert not resumed.env_restored and resumed.global_step == 14
    res = resumed.run()
    first = resumed.agent.transitions[0]
    np.testing.assert_array_equal(first.obs[:, 0], [0.0, 0.0])  # fresh episodes
    np.testing.assert_array_equal(resumed.agent.starts[0], [True, True])
    assert res.global_step == 20


def test_a_resumed_run_with_action_persistence_continues_bit_identically(compose_deep, tmp_path):
    # κ > 0 makes each env's previous action part of the loop state that a checkpoint keeps
    kappa = "agent.action_persistence=0.5"
    full = train(compose_deep(kappa, run_dir=tmp_path / "full"))
    train(compose_deep(kappa, "trainer.total_steps=200", run_dir=tmp_path / "split"))
    resumed = train(
        compose_deep(kappa, f"trainer.resume={tmp_path / 'split'}", run_dir=tmp_path / "split")
    )
    assert resumed.global_step == full.global_step == 300
    assert resumed.episode_returns[-3:] == full.episode_returns[-3:]
    a = load_checkpoint(full.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    assert torch.equal(a["loop"]["agent_state"], b["loop"]["agent_state"])
    for key, value in a["agent"]["modules"]["critic"].items():
        assert torch.equal(value, b["agent"]["modules"]["critic"][key]), key
