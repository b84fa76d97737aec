"""Continuous (Box) actions in the deep agent: the squashed Gaussian, bounds, the policy's
free energy, the information gain, and a short Pendulum run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from daif import maths
from daif.build import make_agent
from daif.checkpoint import load_checkpoint
from daif.deep import efe
from daif.protocol import AgentContext, Transition
from daif.trainer import train
from daif.validation import ConfigError
from tests.conftest import ROOT
from tests.test_agent_core import _documented_scalar_tags

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
SMALL = [
    "agent.latent_dim=4",
    "agent.batch_size=16",
    "agent.buffer_size=512",
    "agent.learning_starts=32",
    "agent.encoder.hidden=[16]",
    "agent.decoder.hidden=[16]",
    "agent.transition.hidden=[16]",
    "agent.outcome.hidden=[16]",
    "agent.critic.hidden=[16]",
    "agent.actor.hidden=[16]",
]


def continuous_agent(
    action_space: gym.spaces.Box, *overrides: str, obs_dim: int = 3, amp: str = "off"
):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["env=pendulum", *SMALL, *overrides])
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
    return make_agent(cfg.agent, AgentContext(obs_space, action_space, amp=amp))


def test_squashed_gaussian_density_against_the_change_of_variables_by_hand():
    u, mu, sigma = 0.5, 0.2, 0.3
    by_hand = (
        -0.5 * ((u - mu) / sigma) ** 2
        - math.log(sigma)
        - 0.5 * math.log(2 * math.pi)
        - math.log(1 - math.tanh(u) ** 2)  # |da/du| = 1 − tanh²(u)
    )
    got = maths.squashed_gaussian_log_prob(
        torch.tensor([[u]], dtype=torch.float64),
        torch.tensor([[mu]], dtype=torch.float64),
        torch.tensor([[sigma]], dtype=torch.float64),
    )
    assert got.item() == pytest.approx(by_hand, abs=1e-12)
    # two dimensions: the log densities add
    two = maths.squashed_gaussian_log_prob(
        torch.tensor([u, u], dtype=torch.float64),
        torch.tensor([mu, mu], dtype=torch.float64),
        torch.tensor([sigma, sigma], dtype=torch.float64),
    )
    assert two.item() == pytest.approx(2 * by_hand, abs=1e-12)
    # far in the tail (tanh(u) rounds to 1) it stays finite
    tail = maths.squashed_gaussian_log_prob(torch.tensor([30.0]), torch.zeros(1), torch.ones(1))
    assert torch.isfinite(tail).all()


def test_squashed_gaussian_density_integrates_to_one_over_the_box():
    a = torch.linspace(-1 + 1e-9, 1 - 1e-9, 400_001, dtype=torch.float64)
    u = torch.atanh(a).unsqueeze(-1)
    for mu, sigma in [(0.0, 1.0), (1.5, 0.4), (-0.7, 2.0)]:
        log_q = maths.squashed_gaussian_log_prob(
            u, torch.full_like(u, mu), torch.full_like(u, sigma)
        )
        mass = torch.trapezoid(log_q.exp(), a).item()
        assert mass == pytest.approx(1.0, abs=2e-3)


def test_temperature_rises_while_the_policy_is_below_its_target_entropy():
    log_alpha = torch.zeros((), requires_grad=True)
    low_entropy = torch.full((8,), 2.0)  # ln q = 2: entropy −2, target −1
    efe.temperature_loss(log_alpha, low_entropy, target_entropy=-1.0).backward()
    assert log_alpha.grad.item() == pytest.approx(-1.0)  # descent raises ln α
    log_alpha.grad = None
    efe.temperature_loss(log_alpha, torch.full((8,), -3.0), target_entropy=-1.0).backward()
    assert log_alpha.grad.item() == pytest.approx(4.0)
    # the soft value and the actor's loss: G + α ln q
    g, log_q, alpha = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.5]), torch.tensor(0.5)
    np.testing.assert_allclose(efe.soft_state_value(g, log_q, alpha).numpy(), [0.5, 3.25])
    assert efe.policy_free_energy(g, log_q, alpha).item() == pytest.approx(1.875)


def test_actions_stay_inside_asymmetric_bounds_and_the_mean_is_deterministic():
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    agent = continuous_agent(space)
    obs = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32) * 5
    random_phase, _ = agent.act(obs, None, np.ones(256, bool))
    agent.env_steps = 10_000  # past learning_starts: the actor acts
    sampled, _ = agent.act(obs, None, np.ones(256, bool))
    mode, _ = agent.act(obs, None, np.ones(256, bool), deterministic=True)
    for a in (random_phase, sampled, mode):
        assert a.shape == (256, 2)
        assert np.all(a >= space.low) and np.all(a <= space.high)
    # the uniform phase covers the box: both ends of each dimension are approached
    assert np.all(random_phase.min(0) < space.low + 0.1 * (space.high - space.low))
    assert np.all(random_phase.max(0) > space.high - 0.1 * (space.high - space.low))
    # deterministic = the squashed mean, rescaled to [low, high]
    with torch.no_grad():
        mean, _ = agent.actor(agent.world_model.encode(torch.as_tensor(obs)))
    expected = space.low + (np.tanh(mean.numpy()) + 1) / 2 * (space.high - space.low)
    np.testing.assert_allclose(mode, expected, atol=1e-5)
    again, _ = agent.act(obs, None, np.ones(256, bool), deterministic=True)
    np.testing.assert_array_equal(mode, again)


def test_information_gain_is_zero_when_every_member_agrees_for_continuous_actions():
    agent = continuous_agent(gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    transition = agent.world_model.transition
    with torch.no_grad():
        for p in transition.parameters():
            p.copy_(p[:1].expand_as(p))  # member 0's weights everywhere
    z = torch.randn(32, 4)
    a = torch.rand(32, 1) * 2 - 1
    ambiguity, info_gain = agent.world_model.epistemic_terms(z, a)
    assert torch.allclose(info_gain, torch.zeros(32), atol=1e-6)
    assert torch.isfinite(ambiguity).all()
    # members that disagree give a positive gain, and the action changes it
    torch.manual_seed(1)
    fresh = continuous_agent(gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
    _, gain_lo = fresh.world_model.epistemic_terms(z, -torch.ones(32, 1))
    _, gain_hi = fresh.world_model.epistemic_terms(z, torch.ones(32, 1))
    assert (gain_lo > 0).all() and not torch.allclose(gain_lo, gain_hi)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_replay_keeps_actions_in_unit_box_and_a_gradient_step_trains_the_actor(amp):
    space = gym.spaces.Box(np.array([-2.0], np.float32), np.array([2.0], np.float32))
    agent = continuous_agent(space, amp=amp)
    rng = np.random.default_rng(0)
    for i in range(64):
        agent.observe(
            Transition(
                obs=rng.normal(size=(1, 3)).astype(np.float32),
                action=np.array([[2.0 * math.sin(i)]], np.float32),
                reward=np.array([-float(i % 5)], np.float32),
                next_obs=rng.normal(size=(1, 3)).astype(np.float32),
                terminated=np.array([False]),
                truncated=np.array([i % 16 == 15]),
            )
        )
    stored = agent.replay.data["action"][:64, 0, 0].numpy()
    np.testing.assert_allclose(stored, np.sin(np.arange(64)), atol=1e-6)
    before = [p.clone() for p in agent.actor.parameters()]
    log_alpha = agent.temperature.log_alpha.item()
    metrics = agent.update(64)
    documented = _documented_scalar_tags("deep agent")
    assert set(metrics) == documented | _documented_scalar_tags("continuous deep agent")
    assert all(torch.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor.parameters(), strict=True))
    assert agent.temperature.log_alpha.item() != log_alpha


def test_a_discrete_agent_config_on_a_continuous_env_is_refused_by_name():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["env=pendulum", "agent=daif"])
    env = gym.make("Pendulum-v1")
    with pytest.raises(ConfigError, match=r"agent\.actor: .*agent=daif_continuous"):
        make_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))
    unbounded = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    with pytest.raises(ConfigError, match="finite bounds"):
        continuous_agent(unbounded)
    with pytest.raises(ConfigError, match=r"agent\.target_entropy: expected a finite number"):
        continuous_agent(gym.spaces.Box(-1.0, 1.0, (1,), np.float32), "agent.target_entropy=nan")


@pytest.mark.slow
def test_short_seeded_pendulum_run_beats_a_random_policy(tmp_path):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "env=pendulum",
                "trainer.total_steps=3000",
                "trainer.eval_interval=3000",
                "trainer.eval_episodes=5",
                "trainer.progress=false",
                f"trainer.run_dir={tmp_path / 'pendulum'}",
                "logger=none",
                "agent.critic.hidden=[64,64]",
                "agent.actor.hidden=[64,64]",
                "agent.learning_starts=500",
            ],
        )
    result = train(cfg)
    # a uniformly random torque scores −1,201 ± 279 per episode (50 episodes, best −737)
    assert result.final_eval_mean > -700, result.eval_history


def test_a_resumed_pendulum_run_continues_bit_identically(compose_deep, tmp_path):
    small = ["env=pendulum", "agent.actor.hidden=[16]", "trainer.num_envs=1"]
    full = train(compose_deep(*small, run_dir=tmp_path / "full"))
    train(compose_deep(*small, "trainer.total_steps=200", run_dir=tmp_path / "split"))
    resumed = train(
        compose_deep(*small, f"trainer.resume={tmp_path / 'split'}", run_dir=tmp_path / "split")
    )
    assert resumed.global_step == full.global_step == 300
    # the split run's final evaluation at 200 is its own; the rest is the same, bit for bit
    assert [e for e in resumed.eval_history if e[0] != 200] == full.eval_history
    a = load_checkpoint(full.checkpoint)["agent"]["modules"]
    b = load_checkpoint(resumed.checkpoint)["agent"]["modules"]
    for name in ("actor", "temperature", "critic"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), f"{name}.{key}"


def test_evaluate_cli_scores_a_pendulum_checkpoint_as_the_trainer_did(compose_deep, tmp_path):
    small = ["env=pendulum", "agent.actor.hidden=[16]", "trainer.num_envs=1"]
    run = train(compose_deep(*small, "trainer.eval_episodes=2", run_dir=tmp_path / "p")).run_dir
    out = tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_AUDIODRIVER": "dummy"}
    cmd = [sys.executable, "evaluate.py", f"checkpoint={run}", "episodes=2", f"output={out}"]
    proc = subprocess.run([*cmd, "video=true"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    final = load_checkpoint(run)["loop"]["eval_history"][-1]
    assert (summary["mean"], summary["std"]) == pytest.approx((final[1], final[2]))
    assert len(list((run / "videos").glob("*.mp4"))) == 2
