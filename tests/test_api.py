"""The Python API (``daif.make`` / ``learn`` / ``predict`` / ``save`` / ``daif.load``): the same
code path as ``train.py``, and saved agents that load safely and act the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import daif
from daif.checkpoint import CheckpointError, load_checkpoint
from daif.validation import ConfigError
from tests.conftest import DEEP_TINY, ROOT

# the deep CartPole agent at test size, in the CLI's override syntax
SMALL = [o for o in DEEP_TINY if not o.startswith("trainer.progress")]


def _params(ckpt: dict) -> list[torch.Tensor]:
    modules = ckpt["agent"]["modules"]
    return [v for name in sorted(modules) for v in modules[name].values()]


def test_api_and_cli_train_the_same_agent(tmp_path):
    learner = daif.make("cartpole", SMALL, seed=1, run_dir=tmp_path / "api", progress=False)
    result = learner.learn()
    proc = subprocess.run(
        [sys.executable, "train.py", *SMALL, "seed=1", f"trainer.run_dir={tmp_path / 'cli'}"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    api, cli = load_checkpoint(tmp_path / "api"), load_checkpoint(tmp_path / "cli")
    assert api["loop"]["eval_history"] == cli["loop"]["eval_history"] == result.eval_history
    for a, c in zip(_params(api), _params(cli), strict=True):
        assert torch.equal(a, c)
    assert list((tmp_path / "api").glob("events.out.tfevents.*"))  # the same logs


def test_make_uses_the_cli_run_folder_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = daif.make("cartpole", seed=2)
    assert first.run_dir == Path("runs/default/cartpole/daif/seed2")
    (tmp_path / first.run_dir / "checkpoints").mkdir(parents=True)
    (tmp_path / first.run_dir / "checkpoints" / "last.pt").write_bytes(b"an earlier run")
    assert daif.make("cartpole", seed=2).run_dir == Path("runs/default/cartpole/daif/seed2-1")


def test_second_learn_resumes_and_matches_one_long_run(tmp_path):
    two = daif.make("cartpole", SMALL, run_dir=tmp_path / "two", progress=False)
    two.learn(total_steps=150)
    res = two.learn(total_steps=150)
    assert two.num_timesteps == 300 and res.trained_steps == 150
    one = daif.make("cartpole", SMALL, run_dir=tmp_path / "one", progress=False)
    assert one.learn(total_steps=300).eval_history == res.eval_history


def test_callback_false_stops_after_that_evaluation(tmp_path):
    seen: list[int] = []

    def stop_at_first(trainer) -> bool:
        seen.append(trainer.global_step)
        return False

    learner = daif.make("cartpole", SMALL, run_dir=tmp_path / "r", progress=False)
    result = learner.learn(callback=stop_at_first)
    assert seen == [150] and result.global_step == 150
    assert load_checkpoint(tmp_path / "r")["loop"]["global_step"] == 150


def test_saved_agent_loads_safely_and_acts_the_same(tmp_path):
    learner = daif.make("cartpole", SMALL, run_dir=tmp_path / "r", progress=False)
    result = learner.learn()
    path = learner.save(tmp_path / "agent.pt")
    raw = torch.load(path, weights_only=True)  # plain weights and data, no code
    assert "agent:" in raw["config_yaml"] and raw["loop"]["global_step"] == 300

    agent = daif.load(path)
    assert agent.num_timesteps == 300
    env = gym.make("CartPole-v1")
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    a_batch, _ = agent.predict(obs)
    assert np.array_equal(a_batch, learner.predict(obs)[0])
    single, state = agent.predict(obs[0])
    assert isinstance(single, int) and single == a_batch[0] and state is None
    # the trainer's eval seeds and split: the last evaluation of the run, reproduced
    eps = int(learner.cfg.trainer.eval_episodes)
    final = (result.final_eval_mean, result.final_eval_std)
    assert agent.evaluate(episodes=eps) == pytest.approx(final)
    assert daif.load(tmp_path / "r").evaluate(episodes=eps) == pytest.approx(final)

    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"checkpoint={path}", f"episodes={eps}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"return {final[0]:.2f} ± {final[1]:.2f}" in proc.stdout


def test_predict_on_one_observation_gives_a_continuous_action_vector(tmp_path):
    tiny = [o for o in SMALL if not o.startswith("agent.precision_anneal")]
    learner = daif.make("pendulum", tiny, run_dir=tmp_path / "p", progress=False)
    learner.learn()
    env = gym.make("Pendulum-v1")
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    batch, _ = learner.predict(obs)
    single, _ = learner.predict(obs[0])
    assert batch.shape == (3, 1) and single.shape == (1,)
    # the same action up to float32 rounding (a batch of 3 and of 1 sum in different orders)
    np.testing.assert_allclose(single, batch[0], atol=1e-6)
    assert -2.0 <= single[0] <= 2.0
    _, reward, *_ = env.step(single)  # the env takes it as it is
    assert np.isfinite(reward)


def test_an_export_cannot_resume_a_run(tmp_path):
    learner = daif.make("cartpole", SMALL, run_dir=tmp_path / "r", progress=False)
    learner.learn()
    path = learner.save(tmp_path / "agent.pt")
    again = daif.make("cartpole", SMALL, run_dir=tmp_path / "r2", resume=str(path), progress=False)
    with pytest.raises(CheckpointError, match="exported agent"):
        again.learn()


def test_the_pomdp_agent_through_the_same_api(tmp_path):
    learner = daif.make("tmaze", ["trainer.total_steps=200"], run_dir=tmp_path / "t")
    result = learner.learn()
    assert result.global_step == 200
    env = gym.make("daif/TMaze-v0")
    obs, _ = env.reset(seed=0)
    action, state = learner.predict(obs)  # beliefs come back as the state
    assert env.action_space.contains(np.int64(action)) and state is not None
    action2, _ = learner.predict(env.step(action)[0], state)
    assert env.action_space.contains(np.int64(action2))


def test_bad_preset_values_are_refused_at_make():
    with pytest.raises(ConfigError, match=r"trainer\.num_envs"):
        daif.make("cartpole", num_envs=0)


def test_readme_python_section_runs(tmp_path, monkeypatch):
    """The README's Python example, as a new user copies it (15k steps cut to 1,500)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("total_steps=15_000", "total_steps=1500")
    code = code.replace("seed=1)", "seed=1, progress=False)")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "cartpole.pt").is_file()
    assert scope["learner"].num_timesteps == 1500 and scope["done"]
