"""Config schema and validation: bad values are rejected before training, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from daif.config import TrainerConfig, validate_config
from daif.trainer import train
from daif.validation import ConfigError, check_choice, check_int, check_positive, check_range

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.num_envs=0", "trainer.num_envs"),
        ("trainer.num_envs=abc", "trainer.num_envs"),
        ("trainer.action_repeat=0", "trainer.action_repeat"),
        ("trainer.threads=0", "trainer.threads"),
        ("trainer.total_steps=-5", "trainer.total_steps"),
        ("trainer.amp=fp8", "trainer.amp"),
        ("trainer.compile=maybe", "trainer.compile"),
        ("trainer.log_interval=0", "trainer.log_interval"),
        ("trainer.device=tpu", "trainer.device"),
        ("logger.backend=mlflow", "logger.backend"),
        ("logger=wandb logger.mode=cloud", "logger.mode"),
        ("seed=-1", "seed"),
        ("+trainer.bogus=1", "trainer.bogus"),
    ],
)
def test_bad_trainer_values_rejected_before_anything_is_built(compose_cfg, tmp_path, override, key):
    run_dir = tmp_path / "never"
    cfg = compose_cfg(*override.split(), run_dir=run_dir)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg)
    assert not run_dir.exists()  # failed before the run dir (or anything else) was made


def test_negative_learning_rate_names_agent_key(compose_cfg, tmp_path):
    cfg = compose_cfg("agent.lr=-0.001", run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"agent\.lr.*-0\.001"):
        train(cfg)


def test_unknown_env_lists_available_ones(compose_cfg):
    cfg = compose_cfg("env.id=NoSuchEnv-v9")
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    msg = str(info.value)
    assert "NoSuchEnv-v9" in msg
    for known in ("CartPole-v1", "daif/TMaze-v0", "daif/GridWorld-v0"):
        assert known in msg


def test_valid_config_returns_typed_settings(compose_cfg):
    t, lg, env = validate_config(compose_cfg("trainer.amp=bf16"))
    assert (t.num_envs, t.total_steps, t.amp) == (2, 400, "bf16")
    assert lg.backend == "tensorboard"
    assert env.id == "CartPole-v1"


def test_schema_defaults_mirror_trainer_yaml():
    """configs/trainer/default.yaml and the TrainerConfig dataclass must not drift apart."""
    yaml_defaults = yaml.safe_load((ROOT / "configs/trainer/default.yaml").read_text())
    schema = OmegaConf.to_container(OmegaConf.structured(TrainerConfig))
    assert yaml_defaults == schema


def test_check_helpers():
    assert check_positive("agent.lr", 0.5) == 0.5
    assert check_positive("agent.x", 0, allow_zero=True) == 0.0
    for bad in (0, -1e-3, float("nan"), float("inf"), "1", True):
        with pytest.raises(ConfigError, match=r"agent\.lr"):
            check_positive("agent.lr", bad)
    assert check_range("agent.gamma", 1.0, 0.0, 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"agent\.gamma"):
        check_range("agent.gamma", 1.0, 0.0, 1.0, inclusive=False)
    with pytest.raises(ConfigError, match=r"agent\.gamma.*1\.5"):
        check_range("agent.gamma", 1.5, 0.0, 1.0)
    assert check_int("agent.k", 3, minimum=1) == 3
    for bad in (0, 2.0, False):
        with pytest.raises(ConfigError, match=r"agent\.k"):
            check_int("agent.k", bad, minimum=1)
    assert check_choice("agent.planner", "mpc", ("mpc", "amortised")) == "mpc"
    with pytest.raises(ConfigError, match=r"agent\.planner.*'cem'"):
        check_choice("agent.planner", "cem", ("mpc", "amortised"))


def test_cli_bad_value_is_one_line_error(tmp_path):
    """`python train.py trainer.num_envs=0` exits non-zero with one line and no traceback."""
    proc = subprocess.run(
        [sys.executable, "train.py", "trainer.num_envs=0", f"hydra.run.dir={tmp_path}/r"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: trainer.num_envs")
