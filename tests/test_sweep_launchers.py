"""Multirun sweeps: joblib and submitit_local launchers, and the Optuna preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import DEEP_TINY, ROOT, write_test_configs
from tests.test_trainer_tensorboard import read_scalars

# PYTHONPATH: jobs run from tmp_path and import the test agent from tests.conftest
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
TINY_SWEEP = [
    "trainer.total_steps=100",
    "trainer.num_envs=2",
    "trainer.eval_interval=0",
    "trainer.eval_episodes=1",
    "trainer.log_interval=50",
    "trainer.checkpoint_interval=0",
    "trainer.progress=false",
    "trainer.device=cpu",
]


def _multirun(tmp_path: Path, *overrides: str, default_dir: bool = False) -> Path:
    """Run a two-seed sweep; in ``tmp_path/sweep``, or with ``default_dir`` where the
    config puts it (under ``tmp_path``, the working directory)."""
    folder = write_test_configs(tmp_path / "test_configs")
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            f"hydra.searchpath=[file://{folder}]",
            "+agent=linear_pg",
            "env=cartpole_test",
            *TINY_SWEEP,
            *([] if default_dir else [f"hydra.sweep.dir={sweep_dir}"]),
            "seed=0,1",
            *overrides,
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return sweep_dir


def _assert_two_jobs_logged(sweep_dir: Path) -> None:
    jobs = sweep_dir / "cartpole_test" / "linear_pg"
    assert sorted(p.name for p in jobs.iterdir()) == ["job0", "job1"]
    for job, seed in (("job0", 0), ("job1", 1)):
        scalars = read_scalars(jobs / job)
        assert "charts/episodic_return" in scalars and "eval/mean_return" in scalars
        assert (jobs / job / "checkpoints" / "last.pt").is_file()
        assert yaml.safe_load((jobs / job / ".hydra" / "config.yaml").read_text())["seed"] == seed


@pytest.mark.parametrize("launcher", ["basic", "parallel", "local"])
def test_two_job_multirun_writes_logs_side_by_side(tmp_path, launcher):
    extra = {
        "basic": [],  # Hydra's default launcher: jobs one after another in this process
        "parallel": ["hydra/launcher=parallel"],  # preset over joblib, n_jobs=2
        "local": ["hydra/launcher=local", "hydra.launcher.timeout_min=5"],  # submitit_local
    }[launcher]
    sweep_dir = _multirun(tmp_path, *extra)
    _assert_two_jobs_logged(sweep_dir)
    if launcher == "local":  # submitit's logs sit in one folder, none literally named %j
        assert not list(sweep_dir.rglob("%j"))
        assert list((sweep_dir / ".submitit").glob("*_0_log.out"))


def test_each_sweep_gets_its_own_folder(tmp_path):
    _multirun(tmp_path, default_dir=True)
    _multirun(tmp_path, default_dir=True)
    assert sorted(p.name for p in (tmp_path / "runs" / "default").iterdir()) == [
        "multirun",
        "multirun-1",
    ]
    for sweep in ("multirun", "multirun-1"):
        _assert_two_jobs_logged(tmp_path / "runs" / "default" / sweep)


@pytest.mark.parametrize(
    ("preset", "target"),
    [
        ("parallel", "hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("local", "hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
        ("slurm", "hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_presets_select_their_plugin(preset, target):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_ == f"hydra_plugins.{target}"
    if preset == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 240


def _optuna_sweep(cwd: Path, sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start the Optuna preset on the tiny deep agent (two trials) in ``cwd``."""
    deep = [o for o in DEEP_TINY if not o.startswith("trainer.")]
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "hparams_search=cartpole_optuna",
            *deep,
            *TINY_SWEEP,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep_dir}",
            "logger=none",
            *overrides,
        ],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    return out


def _finals(stdout: str) -> list[float]:
    """The objective: the final eval return each trial printed."""
    return [float(line.split()[3]) for line in stdout.splitlines() if line.startswith("final eval")]


def test_optuna_preset_maximises_eval_return_in_an_sqlite_study(tmp_path):
    sweep_dir = tmp_path / "optuna"
    stdout = _finish(_optuna_sweep(tmp_path, sweep_dir))
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna"
    assert set(result["best_params"]) == {
        "agent.model_lr",
        "agent.lr",
        "agent.info_gain_weight",
        "agent.precision_final",
    }
    jobs = sorted((sweep_dir / "cartpole" / "daif").iterdir())
    assert [j.name for j in jobs] == ["job0", "job1"]
    finals = _finals(stdout)
    assert len(finals) == 2 and result["best_value"] == pytest.approx(max(finals), abs=0.01)
    # the study is kept in runs/<name>/optuna.db under the working directory
    assert (tmp_path / "runs" / "cartpole_optuna" / "optuna.db").is_file()


def test_two_processes_share_one_sqlite_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    # two sweepers started together, each with its own sampler seed, on the default
    # storage: both must add their trials to the one study
    procs = [_optuna_sweep(tmp_path, tmp_path / f"sweep{i}", f"seed={i}") for i in (0, 1)]
    finals = [v for proc in procs for v in _finals(_finish(proc))]
    url = f"sqlite:///{tmp_path / 'runs' / 'cartpole_optuna' / 'optuna.db'}"
    study = optuna.load_study(study_name="cartpole_optuna", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    assert sorted(t.value for t in done) == pytest.approx(sorted(finals), abs=0.01)
    # a third sweep continues the study instead of starting a new one
    _finish(_optuna_sweep(tmp_path, tmp_path / "sweep2", "hydra.sweeper.n_trials=1"))
    assert len(optuna.load_study(study_name="cartpole_optuna", storage=url).trials) == 5
