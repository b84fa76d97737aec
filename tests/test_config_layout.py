"""configs/: env=<name> brings its tuned experiment and agent; debug and search presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import daif.build  # noqa: F401  (registers agent/deep_defaults)
from daif.deep import DeepAgentConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_env_name_loads_its_experiment_and_agent() -> None:
    cfg = _compose("env=cartpole")
    assert cfg.agent._target_ == "daif.deep.DeepActiveInferenceAgent"
    tuned = OmegaConf.load(CONFIGS / "experiment" / "cartpole.yaml")
    assert cfg.trainer.total_steps == tuned.trainer.total_steps
    assert cfg.agent.epistemic_estimate == tuned.agent.epistemic_estimate == "cached"
    assert _compose("env=tmaze").agent._target_ == "daif.pomdp.trainer_agent.POMDPAgent"
    pixels = _compose("env=cartpole_pixels")
    assert pixels.agent._target_ == "daif.deep.RecurrentActiveInferenceAgent"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml")))
def test_every_env_holds_only_the_environment_and_has_an_experiment(name: str) -> None:
    assert set(OmegaConf.load(CONFIGS / "env" / f"{name}.yaml")) <= {"id", "kwargs"}
    assert (CONFIGS / "experiment" / f"{name}.yaml").is_file()


def test_deep_agent_defaults_come_from_the_dataclass() -> None:
    agent = _compose("env=mountaincar").agent
    assert agent.free_nats == DeepAgentConfig().free_nats
    assert agent.precision_anneal_steps == 50000  # the experiment overrides the default


def test_debug_preset_keeps_its_name_and_outlasts_learning_starts() -> None:
    cfg = _compose("debug=smoke")
    assert cfg.name == "debug"
    assert cfg.trainer.total_steps > cfg.agent.learning_starts
