"""The cross-entropy-method planner (``agent.planner=cem``): CEM on known quadratics, the
expected free energy of a plan against a hand computation, and the agent's wiring."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from daif import maths
from daif.build import make_agent
from daif.deep.config import DeepAgentConfig
from daif.deep.epistemic import ExactEpistemic
from daif.deep.planner import INIT_STD, CEMPlanner, cross_entropy_method
from daif.nets.preference import RewardPreference
from daif.protocol import AgentContext
from daif.trainer import train
from daif.validation import ConfigError
from tests.test_continuous_actions import continuous_agent

CEM = {"candidates": 256, "elites": 32, "iterations": 6}


def _quadratic(target: Tensor):
    """G(x) = Σ_d (x_d − x*_d)², for candidates ``x[N, B, D]`` and ``target[B, D]``."""
    return lambda x: ((x - target) ** 2).sum(-1)


def test_cem_finds_the_minimiser_of_a_quadratic_inside_the_box():
    torch.manual_seed(0)
    target = torch.tensor([[0.3, -0.7, 0.0], [0.5, 0.1, -0.95]])  # two problems at once
    mean, std = cross_entropy_method(_quadratic(target), torch.zeros(2, 3), torch.ones(2, 3), **CEM)
    torch.testing.assert_close(mean, target, atol=1e-2, rtol=0)
    assert (std < 1e-2).all()  # converged, not just lucky


def test_cem_finds_the_clamp_of_a_minimiser_outside_the_box():
    torch.manual_seed(0)
    # argmin over [−1, 1]² of (x₁ − 1.7)² + (x₂ + 2.5)² is the corner-side point (1, −1)
    mean, _ = cross_entropy_method(
        _quadratic(torch.tensor([[1.7, -2.5]])), torch.zeros(1, 2), torch.ones(1, 2), **CEM
    )
    torch.testing.assert_close(mean, torch.tensor([[1.0, -1.0]]), atol=1e-2, rtol=0)
    # a box of another size: argmin over [0, 0.5] of (x − 0.8)² is 0.5
    mean, _ = cross_entropy_method(
        _quadratic(torch.tensor([[0.8]])),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        low=0.0,
        high=0.5,
        **CEM,
    )
    assert mean.item() == pytest.approx(0.5, abs=1e-2)


def test_cem_keeps_the_incumbent_so_a_perfect_start_is_not_lost():
    # one iteration, four candidates: the three samples around μ = x* are all worse than μ,
    # which is itself a candidate, so the single elite is μ exactly
    torch.manual_seed(0)
    target = torch.tensor([[0.25, -0.5]])
    mean, std = cross_entropy_method(
        _quadratic(target), target.clone(), torch.ones(1, 2), candidates=4, elites=1, iterations=1
    )
    torch.testing.assert_close(mean, target)
    torch.testing.assert_close(std, torch.zeros(1, 2))


def test_symexp_inverts_symlog():
    # symexp(y) = sign(y)(e^|y| − 1): symexp(1) = e − 1, symexp(−ln 3) = −2
    y = torch.tensor([1.0, -np.log(3.0), 0.0])
    np.testing.assert_allclose(maths.symexp(y).numpy(), [np.e - 1, -2.0, 0.0], rtol=1e-6)
    x = torch.tensor([-1e4, -2.5, 0.0, 0.3, 700.0])
    torch.testing.assert_close(maths.symexp(maths.symlog(x)), x)


# -------------------------------------------------------------- EFE of a plan, by hand
class _LinearModel(nn.Module):
    """A world model with s' = s + a (two agreeing members), reward r = −a², never-ending
    episodes and no epistemic value: G of a plan has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("obs_scale", torch.ones(()))

    def transition(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        mean = (z + a).expand(2, -1, -1)
        return mean, torch.ones_like(mean)

    def outcome(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        reward = -(a**2).sum(-1)
        return maths.symlog(reward), torch.full_like(reward, -50.0)  # p(end) ≈ 2e−22

    def epistemic_terms(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(z.shape[0]), torch.zeros(z.shape[0])


class _Critic(nn.Module):
    """Two heads, G₁ = s², G₂ = 2s²: the pessimistic one is 2s²."""

    def forward(self, z: Tensor, a: Tensor) -> Tensor:
        g = (z**2).sum(-1)
        return torch.stack([g, 2 * g])


class _ZeroActor(nn.Module):
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(z), torch.ones_like(z)


def _planner(horizon: int = 2, discount: float = 0.9, **cem: int) -> CEMPlanner:
    model = _LinearModel()
    return CEMPlanner(
        model,  # type: ignore[arg-type]
        _Critic(),
        _ZeroActor(),
        RewardPreference(temperature=1.0),
        ExactEpistemic(model, 0.01, 0.1, False),  # type: ignore[arg-type]
        horizon=horizon,
        discount=discount,
        risk_weight=1.0,
        **{**CEM, **cem},
    )


def test_expected_free_energy_of_a_plan_matches_the_hand_computation():
    planner = _planner()
    s0 = torch.tensor([[0.8]])
    plans = torch.tensor([[0.5, -0.25], [-1.0, 0.0], [0.0, 0.0]]).view(3, 1, 2, 1)
    # G = a₀² + γ·a₁² + γ²·2·(s₀ + a₀ + a₁)², γ = 0.9
    expected = [
        0.25 + 0.9 * 0.0625 + 0.81 * 2 * 1.05**2,
        1.0 + 0.0 + 0.81 * 2 * 0.2**2,
        0.0 + 0.0 + 0.81 * 2 * 0.8**2,
    ]
    g = planner.expected_free_energy(s0, plans)
    np.testing.assert_allclose(g.squeeze(1).numpy(), expected, rtol=1e-5)


def test_planned_action_is_the_minimiser_of_the_plans_expected_free_energy():
    # G(a₀, a₁) = a₀² + γa₁² + 2γ²(s₀ + a₀ + a₁)²; ∂G/∂a = 0 gives a₀ = γa₁ and
    # a₀ = −2γ²(s₀ + a₀ + a₁), so a₀ = −2γ²s₀ / (1 + 2γ² + 2γ), a₁ = a₀/γ
    gamma, s0 = 0.9, 0.8
    a0 = -2 * gamma**2 * s0 / (1 + 2 * gamma**2 + 2 * gamma)
    torch.manual_seed(0)
    planner = _planner(discount=gamma)
    z = torch.tensor([[s0], [-s0]])  # the mirror image has the mirrored answer
    planned = planner.act(z, deterministic=True)
    np.testing.assert_allclose(planned.numpy(), [[a0], [-a0]], atol=1e-2)
    # a training action is a sample around it, inside the box
    sampled = torch.stack([planner.act(z, deterministic=False) for _ in range(20)])
    assert (sampled.abs() <= 1.0).all()
    np.testing.assert_allclose(sampled.mean(0).numpy(), [[a0], [-a0]], atol=5e-2)


def test_deterministic_action_is_the_final_cem_mean():
    planner = _planner(iterations=2)
    z = torch.tensor([[0.3]])
    torch.manual_seed(7)
    acted = planner.act(z, deterministic=True)
    torch.manual_seed(7)
    start = planner.actor_plan(z)
    torch.testing.assert_close(start, torch.zeros(1, 2, 1))  # the zero actor's plan
    mean, _ = cross_entropy_method(
        lambda plans: planner.expected_free_energy(z, plans),
        start,
        torch.full_like(start, INIT_STD),
        candidates=CEM["candidates"],
        elites=CEM["elites"],
        iterations=2,
    )
    torch.testing.assert_close(acted, mean[:, 0])


# -------------------------------------------------------------- the agent with planner=cem
def test_cem_agent_actions_stay_inside_asymmetric_bounds():
    space = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    agent = continuous_agent(space, "agent.planner=cem", "agent.plan_candidates=32")
    assert agent.planner is not None
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 5
    agent.env_steps = 10_000  # past learning_starts: the planner acts
    sampled, _ = agent.act(obs, None, np.ones(64, bool))
    mode, _ = agent.act(obs, None, np.ones(64, bool), deterministic=True)
    for a in (sampled, mode):
        assert a.shape == (64, 2)
        assert np.all(a >= space.low) and np.all(a <= space.high)
    assert not np.array_equal(sampled, mode)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("agent.planner=mpc", r"agent\.planner: unknown value 'mpc'"),
        ("agent.plan_horizon=0", r"agent\.plan_horizon"),
        ("agent.plan_elites=300", r"agent\.plan_elites=300: must be at most agent\.plan_cand"),
        ("agent.plan_iterations=0", r"agent\.plan_iterations"),
    ],
)
def test_bad_planner_settings_are_refused_by_name(override, match):
    key, value = override.removeprefix("agent.").split("=")
    with pytest.raises(ConfigError, match=match):
        DeepAgentConfig.from_mapping({key: value if key == "planner" else int(value)})


def test_cem_on_discrete_actions_is_refused_by_name(compose_deep):
    cfg = compose_deep("agent.planner=cem")  # the deep agent on CartPole
    env = gym.make("CartPole-v1")
    with pytest.raises(ConfigError, match=r"agent\.planner='cem' plans continuous actions"):
        make_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))


def test_a_short_pendulum_run_with_the_cem_planner(compose_deep, tmp_path):
    small = ["env=pendulum", "agent.actor.hidden=[16]", "trainer.num_envs=1"]
    cem = ["agent.planner=cem", "agent.plan_candidates=16", "agent.plan_elites=4"]
    once = ["trainer.eval_interval=300", "trainer.eval_episodes=1"]
    result = train(compose_deep(*small, *cem, *once, run_dir=tmp_path / "cem"))
    assert result.global_step == 300
    assert [e[0] for e in result.eval_history] == [300]
    # an episode's return lies in [−16.2736·200, 0]: the largest cost of a step is
    # π² + 0.1·8² + 0.001·2²
    assert -16.2736 * 200 <= result.final_eval_mean <= 0
