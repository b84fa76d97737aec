"""`python train.py ...` as a user runs it: each run its own folder, one process per folder,
bad input refused in one line (exit 2), nothing left by a failed start.

Most tests call ``train.py``'s ``main`` in this process (``sys.argv`` patched, Hydra's
logging left alone) for speed; the ones about processes run it as a subprocess.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import train as train_cli
from daif.checkpoint import load_checkpoint
from daif.runs import RunLock
from daif.trainer import train
from daif.utils import NonFiniteLossError
from tests.conftest import DEEP_TINY, ROOT, TINY, write_test_configs
from tests.test_trainer_tensorboard import read_scalars


@pytest.fixture
def cli(tmp_path: Path, monkeypatch, capsys) -> Callable[..., tuple[int, str]]:
    """``cli(*overrides)`` → ``(exit code, stderr)`` of ``python train.py <overrides>`` run
    in ``tmp_path`` with the test agent at :data:`TINY` size (later overrides win)."""
    folder = write_test_configs(tmp_path / "test_configs")
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()

    def run(
        *overrides: str,
        agent: tuple[str, ...] = ("+agent=linear_pg", "env=cartpole_test"),
        budgets: tuple[str, ...] = tuple(TINY),
    ) -> tuple[int, str]:
        argv = ["train.py", f"hydra.searchpath=[file://{folder}]", *agent, *budgets, *overrides]
        monkeypatch.setattr(sys, "argv", argv)
        handlers, level = root.handlers[:], root.level
        GlobalHydra.instance().clear()
        capsys.readouterr()
        try:
            train_cli.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            GlobalHydra.instance().clear()
            for h in root.handlers:  # Hydra's console and train.log handlers
                if h not in handlers:
                    h.close()
            root.handlers[:], root.level = handlers, level
        return code, capsys.readouterr().err

    return run


def _runs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent.parent for p in (tmp_path / "runs").rglob("checkpoints/last.pt"))


# ----------------------------------------------------------------------------- run dirs


def test_running_a_command_twice_keeps_both_runs(cli, tmp_path):
    assert cli()[0] == 0
    first = _runs(tmp_path)
    assert [p.name for p in first] == ["seed0"]
    before = (first[0] / "checkpoints" / "last.pt").read_bytes()
    assert cli()[0] == 0
    both = _runs(tmp_path)
    assert [p.name for p in both] == ["seed0", "seed0-1"]
    assert (first[0] / "checkpoints" / "last.pt").read_bytes() == before  # untouched
    for run in both:  # Hydra's record of each run is in that run's own folder
        assert (run / ".hydra" / "overrides.yaml").is_file()
        assert "eval return" in (run / "train.log").read_text()  # the periodic eval line


def test_debug_preset_lands_under_its_name_and_learns(cli, tmp_path):
    assert cli("debug=smoke", agent=(), budgets=("trainer.progress=false",))[0] == 0
    (run,) = _runs(tmp_path)
    assert run.relative_to(tmp_path) == Path("runs/debug/cartpole/daif/seed0")
    losses = {t for t in read_scalars(run) if t.startswith("losses/")}
    assert {"losses/critic_td", "losses/reconstruction"} <= losses


def test_explicit_run_dir_holding_a_run_is_refused_and_left_as_it_was(cli, tmp_path):
    run = tmp_path / "mine"
    assert cli(f"trainer.run_dir={run}")[0] == 0
    record = (run / ".hydra" / "overrides.yaml").read_text()
    code, err = cli(f"trainer.run_dir={run}", "seed=3")
    assert code == 2
    assert err.count("\n") == 1 and "trainer.run_dir" in err and "trainer.overwrite" in err
    assert (run / ".hydra" / "overrides.yaml").read_text() == record  # not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "test_configs"]

    assert cli(f"trainer.run_dir={run}", "seed=3", "trainer.overwrite=true")[0] == 0
    assert load_checkpoint(run)["config"]["seed"] == 3
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the old run's curves are gone


def test_resume_writes_into_the_run_it_resumes(cli, tmp_path):
    assert cli("trainer.total_steps=200")[0] == 0
    (run,) = _runs(tmp_path)
    stale = run / "checkpoints" / ".last.pt.killed.tmp"  # as a SIGKILL mid-write leaves it
    stale.write_bytes(b"half a checkpoint")
    assert cli(f"trainer.resume={run}", "trainer.total_steps=400")[0] == 0
    assert _runs(tmp_path) == [run]
    assert load_checkpoint(run)["loop"]["global_step"] == 400
    assert not stale.exists()
    # the curve is continuous: the evaluation at the checkpoint's step survives the resume
    assert [s for s, _ in read_scalars(run)["eval/mean_return"]] == [200, 400]


def test_resuming_a_finished_run_says_there_is_nothing_to_train(cli, tmp_path):
    assert cli()[0] == 0
    (run,) = _runs(tmp_path)
    mtime = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert cli(f"trainer.resume={run}")[0] == 0
    last_line = (run / "train.log").read_text().splitlines()[-1]
    assert "nothing left to train" in last_line and "trainer.total_steps=400" in last_line
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime


def test_a_locked_run_dir_refuses_a_second_process(cli, tmp_path):
    run = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from daif.runs import RunLock; lock = RunLock({str(run)!r}).acquire()"
            "; print('locked', flush=True); import sys; sys.stdin.read()",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = cli(f"trainer.run_dir={run}")
        assert code == 2 and err.count("\n") == 1
        assert "in use by another process" in err and f"pid {holder.pid}" in err
    finally:
        holder.communicate("")
    assert not (run / "checkpoints").exists()
    with RunLock(run):  # the lock died with its process
        pass


def test_a_failed_start_leaves_no_folder(cli, tmp_path):
    assert cli("agent.lr=-1")[0] == 2
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- bad input


def _deep(*overrides: str) -> tuple[str, ...]:
    return ("env=cartpole", *DEEP_TINY, *overrides)


BAD_INPUT = [
    # (overrides, agent/env overrides, text the one line must hold)
    (("+agent.lrr=1e-3",), _deep(), "agent.lrr"),
    (("agent.encoder.hidden=[-3]",), _deep(), "agent.encoder.hidden[0]: must be >= 1, got -3"),
    (("agent.encoder.hidden=[abc]",), _deep(), "agent.encoder.hidden[0]: expected an int"),
    (("agent.critic.hidden=[0]",), _deep(), "agent.critic.hidden[0]: must be >= 1, got 0"),
    (("agent.batch_size=2000", "agent.buffer_size=1000"), _deep(), "agent.batch_size=2000"),
    (("agent.buffer_size=10",), _deep(), "agent.buffer_size=10"),
    (("agent.learning_starts=5000",), _deep(), "agent.learning_starts=5000"),
    (("agent.batch_size=1000",), _deep(), "agent.batch_size=1000"),  # > total_steps
    (("+env.kwargs.bogus=1",), _deep(), "env.kwargs"),
]


@pytest.mark.parametrize(("overrides", "base", "text"), BAD_INPUT, ids=lambda x: str(x)[:40])
def test_bad_input_is_one_line_naming_its_key(cli, tmp_path, overrides, base, text):
    code, err = cli(*overrides, agent=base)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and text in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(cli):
    code, err = cli("trainer.device=cuda")
    assert code == 2 and err.count("\n") == 1 and "trainer.device='cuda'" in err, err


def _box2d_missing() -> bool:
    try:
        import Box2D  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _box2d_missing(), reason="Box2D is installed here")
def test_box2d_task_without_box2d_names_the_extra(cli, tmp_path):
    code, err = cli("env=lunarlander", agent=())
    assert code == 2 and err.count("\n") == 1
    assert "pip install -e '.[box2d]'" in err
    assert not (tmp_path / "runs").exists()


def test_missing_env_dependency_names_what_to_install(cli, tmp_path):
    def needs_box2d() -> gym.Env:
        raise gym.error.DependencyNotInstalled("Box2D is not installed, run `pip install swig`")

    gym.register("daif_test/NeedsBox2D-v0", entry_point=needs_box2d)
    try:
        code, err = cli("env.id=daif_test/NeedsBox2D-v0")
    finally:
        del gym.registry["daif_test/NeedsBox2D-v0"]
    assert code == 2 and "env.id='daif_test/NeedsBox2D-v0'" in err
    assert "pip install -e '.[box2d]'" in err and "swig" not in err


# ----------------------------------------------------------------------------- divergence


def test_divergence_is_caught_by_name_with_the_default_check_interval(compose_deep, tmp_path):
    """lr=1e3 blows the critic up within a few updates; whether the first NaN shows in a
    loss (checked every nan_check_interval updates) or in the action probabilities (checked
    at every act), the run stops with the named error after writing crash.pt."""
    cfg = compose_deep("agent.lr=1000", "agent.model_lr=1000", run_dir=tmp_path / "boom")
    assert cfg.agent.nan_check_interval == 100  # the default
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d+") as info:
        train(cfg)
    crash = tmp_path / "boom" / "checkpoints" / "crash.pt"
    assert info.value.checkpoint == crash and crash.is_file()
    assert load_checkpoint(crash)["loop"]["global_step"] == info.value.step


def test_divergence_on_the_cli_exits_1_after_naming_it(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *DEEP_TINY,
            "agent.lr=1000",
            "agent.model_lr=1000",
            f"trainer.run_dir={tmp_path / 'r'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "non-finite" in proc.stdout and "crash.pt" in proc.stdout
