"""A short seeded CartPole run of the deep agent beats a uniformly random policy clearly."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from daif.trainer import train

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def random_policy_mean_return(episodes: int = 50) -> float:
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    returns = []
    for i in range(episodes):
        env.reset(seed=i)
        done, total = False, 0.0
        while not done:
            _, r, terminated, truncated, _ = env.step(int(rng.integers(2)))
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow
def test_short_cartpole_run_beats_random_policy(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "env=cartpole",
                "logger=none",
                "seed=0",
                "trainer.total_steps=3000",
                "trainer.eval_interval=0",
                "trainer.eval_episodes=10",
                "trainer.checkpoint_interval=0",
                "trainer.progress=false",
                "trainer.device=cpu",
                f"trainer.run_dir={tmp_path}",
            ],
        )
    result = train(cfg)
    baseline = random_policy_mean_return()  # ≈ 22 steps
    # "clear margin": at least four times the random policy's mean return
    assert result.final_eval_mean >= 4.0 * baseline, (result.final_eval_mean, baseline)
