"""Deep active inference agent: targets, action selection, EFE terms, errors, checkpoints."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from daif import maths
from daif.build import make_agent as build_agent
from daif.deep import DeepActiveInferenceAgent
from daif.deep.efe import (
    bootstrap_index,
    critic_loss,
    n_step_efe_target,
    n_step_weights,
    state_value,
)
from daif.deep.epistemic import CachedEpistemic, ExactEpistemic
from daif.protocol import Agent, AgentContext, Transition
from daif.utils import NonFiniteLossError
from daif.validation import ConfigError

LOGGING_DOC = Path(__file__).resolve().parents[1] / "docs" / "logging.md"
CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TINY = [
    "agent.latent_dim=4",
    "agent.batch_size=8",
    "agent.buffer_size=256",
    "agent.learning_starts=16",
    "agent.encoder.hidden=[8]",
    "agent.decoder.hidden=[8]",
    "agent.transition.hidden=[8]",
    "agent.outcome.hidden=[8]",
    "agent.critic.hidden=[8]",
    "agent.updates_per_step=1",
    "agent.model_update_every=1",
    # the agent's default; the CartPole preset's cached estimate is tested by name below
    "agent.epistemic_estimate=exact",
]


def make_agent(*overrides: str, amp: str = "off", compile: bool = False, seed: int = 0):
    """Build the agent exactly as the trainer does, from configs/train.yaml + env=cartpole."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["env=cartpole", *TINY, *overrides])
    torch.manual_seed(seed)
    env = gym.make(cfg.env.id)
    ctx = AgentContext(env.observation_space, env.action_space, amp=amp, compile=compile)
    return build_agent(cfg.agent, ctx)


def fill(agent: DeepActiveInferenceAgent, n: int = 64, seed: int = 0) -> None:
    """Feed ``n`` random CartPole-like transitions (episodes of 10 steps)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        obs = rng.normal(size=(1, 4)).astype(np.float32)
        agent.observe(
            Transition(
                obs=obs,
                action=np.array([i % 2]),
                reward=np.ones(1, np.float32),
                next_obs=obs + 0.1,
                terminated=np.array([i % 10 == 9]),
                truncated=np.array([False]),
            )
        )


# ------------------------------------------------------------------ TD target
def test_td_target_masks_termination_but_not_truncation() -> None:
    g = torch.ones(4, 3)
    v = torch.full((4,), 10.0)
    f, t = False, True
    terminated = torch.tensor([[f, f, f], [f, t, f], [f, f, f], [t, f, f]])
    truncated = torch.tensor([[f, f, f], [f, f, f], [t, f, f], [f, f, f]])
    assert bootstrap_index(terminated, truncated).tolist() == [2, 1, 0, 0]
    target = n_step_efe_target(g, v, terminated, truncated, discount=0.5)
    expected = torch.tensor(
        [
            1 + 0.5 + 0.25 + 0.125 * 10,  # full 3 steps, bootstrap from step 2
            1 + 0.5,  # terminal at step 1: no bootstrap, nothing after
            1 + 0.5 * 10,  # truncated at step 0: bootstrap kept from s'_0
            1.0,  # terminal at step 0
        ]
    )
    assert torch.allclose(target, expected)


def test_td_target_one_step_is_bellman() -> None:
    g = torch.tensor([[2.0], [2.0]])
    v = torch.tensor([3.0, 3.0])
    target = n_step_efe_target(
        g, v, torch.tensor([[False], [True]]), torch.tensor([[False], [False]]), 0.9
    )
    assert torch.allclose(target, torch.tensor([2.0 + 0.9 * 3.0, 2.0]))


# ------------------------------------------------------------------ construction
def test_agent_satisfies_protocol_and_acts() -> None:
    agent = make_agent()
    assert isinstance(agent, Agent)
    assert agent.initial_state(3) is None
    obs = np.zeros((1, 4), np.float32)
    actions, state = agent.act(obs, None, np.array([True]))
    assert actions.shape == (1,) and state is None and actions[0] in (0, 1)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("agent.discount=1.5", "agent.discount"),
        ("+agent.lrr=0.1", "agent.lrr"),
        ("agent.n_step=0", "agent.n_step"),
        ("agent.precision=-1.0", "agent.precision"),
        ("agent.info_gain_weight=-0.1", "agent.info_gain_weight"),
        ("agent.critic_trains_encoder=maybe", "agent.critic_trains_encoder"),
        ("agent.lr_decay_steps=-5", "agent.lr_decay_steps"),
        ("agent.epistemic_estimate=all", "agent.epistemic_estimate"),
        ("agent.batch_size=5000", "agent.batch_size"),
        ("agent.terminal_fraction=1.5", "agent.terminal_fraction"),
        ("agent.action_persistence=1.0", "agent.action_persistence"),
        ("agent.action_persistence=-0.2", "agent.action_persistence"),
    ],
)
def test_bad_hyperparameter_raises_naming_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_agent(override)
    assert key in str(info.value)
    assert override.split("=")[1] in str(info.value) or "unknown key" in str(info.value)
    assert "\n" not in str(info.value)


def test_fp16_on_cpu_is_rejected() -> None:
    with pytest.raises(ConfigError, match="fp16"):
        make_agent(amp="fp16")


# ------------------------------------------------------------------ action selection
def test_softmax_precision_limits() -> None:
    g = torch.tensor([[0.3, -0.2, 0.1]])
    assert torch.allclose(maths.softmax(-g, 1e6), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.allclose(maths.softmax(-g, 0.0), torch.full((1, 3), 1 / 3))


def test_deterministic_action_is_mode_and_high_precision_sampling_agrees() -> None:
    agent = make_agent(
        "agent.precision=1e6", "agent.precision_final=1e6", "agent.learning_starts=0"
    )
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    g = agent.expected_free_energy(torch.as_tensor(obs))
    greedy = g.argmin(-1).numpy()
    det, _ = agent.act(obs, None, np.zeros(32, bool), deterministic=True)
    sampled, _ = agent.act(obs, None, np.zeros(32, bool))
    np.testing.assert_array_equal(det, greedy)
    np.testing.assert_array_equal(sampled, greedy)


def _last_linear(net: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]


def test_the_eval_average_is_a_polyak_average_of_encoder_and_critic() -> None:
    rho = 0.25
    agent = make_agent(f"agent.eval_average_rate={rho}", "agent.learning_starts=0")
    fill(agent)
    live = [*agent.world_model.encoder.parameters(), *agent.critic.parameters()]
    theta0 = [p.detach().clone() for p in live]
    agent.update(0)  # one gradient step (updates_per_step=1)
    assert agent.num_updates == 1
    averaged = [
        *agent.eval_average["encoder"].parameters(),
        *agent.eval_average["critic"].parameters(),
    ]
    assert len(averaged) == len(live)
    moved = 0
    for a, t0, t1 in zip(averaged, theta0, live, strict=True):
        # θ̄_1 = θ̄_0 + ρ(θ_1 − θ̄_0) with θ̄_0 = θ_0
        torch.testing.assert_close(a, t0 + rho * (t1.detach() - t0))
        moved += int(not torch.equal(t1, t0))
    assert moved > 0  # the step moved the online networks, so the check has teeth


def test_deterministic_acting_reads_the_average_and_sampling_the_online_critic() -> None:
    agent = make_agent(
        "agent.eval_average_rate=0.01",
        "agent.precision=1e6",
        "agent.precision_final=1e6",
        "agent.learning_starts=0",
    )
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    with torch.no_grad():  # online G prefers action 0, the average's G action 1 (lower wins)
        average = agent.eval_average["critic"]
        for critic, bias in ((agent.critic, [-5.0, 5.0]), (average, [5.0, -5.0])):
            for net in critic.nets:
                _last_linear(net).weight.zero_()
                _last_linear(net).bias.copy_(torch.tensor(bias))
    det, _ = agent.act(obs, None, np.zeros(16, bool), deterministic=True)
    sampled, _ = agent.act(obs, None, np.zeros(16, bool))
    np.testing.assert_array_equal(det, np.ones(16))
    np.testing.assert_array_equal(sampled, np.zeros(16))


def test_eval_average_is_refused_for_continuous_actions_and_bad_rates() -> None:
    with pytest.raises(ConfigError, match=r"agent\.eval_average_rate=0\.01.*continuous"):
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=["env=pendulum", "agent=daif_continuous", "agent.eval_average_rate=0.01"],
            )
        env = gym.make(cfg.env.id)
        build_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))
    with pytest.raises(ConfigError, match=r"agent\.eval_average_rate.*1\.5"):
        make_agent("agent.eval_average_rate=1.5")


def test_a_continuous_agent_on_a_discrete_env_is_refused_naming_the_actor() -> None:
    with pytest.raises(ConfigError, match=r"agent\.actor: the env's actions are discrete"):
        make_agent("agent=daif_continuous")


def test_a_checkpoint_keeps_the_eval_average() -> None:
    a = make_agent("agent.eval_average_rate=0.1", "agent.learning_starts=0")
    fill(a)
    for step in range(3):
        a.update(step)
    b = make_agent("agent.eval_average_rate=0.1", "agent.learning_starts=0", seed=5)
    b.load_state_dict(a.state_dict())
    for pa, pb in zip(a.eval_average.parameters(), b.eval_average.parameters(), strict=True):
        assert torch.equal(pa, pb)
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    g_a = a.expected_free_energy(torch.as_tensor(obs), average=True)
    g_b = b.expected_free_energy(torch.as_tensor(obs), average=True)
    assert torch.equal(g_a, g_b)
    assert not torch.equal(g_a, a.expected_free_energy(torch.as_tensor(obs)))


def test_zero_precision_samples_uniformly() -> None:
    agent = make_agent(
        "agent.precision=0.0", "agent.precision_final=0.0", "agent.learning_starts=0"
    )
    torch.manual_seed(1)
    obs = np.zeros((4000, 4), np.float32)
    actions, _ = agent.act(obs, None, np.zeros(4000, bool))
    # Binomial(4000, ½): std 0.0079, so 0.05 is > 6 sigma
    assert abs(actions.mean() - 0.5) < 0.05


def test_action_persistence_repeats_the_previous_action_with_probability_kappa() -> None:
    # β = 0: softmax(−β·G) is uniform over CartPole's 2 actions, so an env's action equals its
    # previous one with probability κ + (1 − κ)/2 (0.85 at κ = 0.7); a new episode, 1/2.
    agent = make_agent(
        "agent.precision=0.0",
        "agent.precision_final=0.0",
        "agent.learning_starts=0",
        "agent.action_persistence=0.7",
    )
    torch.manual_seed(2)
    n = 4000
    obs = np.zeros((n, 4), np.float32)
    state = agent.initial_state(n)
    first, state = agent.act(obs, state, np.ones(n, bool))
    second, state = agent.act(obs, state, np.zeros(n, bool))
    third, _ = agent.act(obs, state, np.ones(n, bool))
    # Binomial(4000, p) has std ≤ 0.0079: 0.04 is > 5 sigma
    assert abs((second == first).mean() - 0.85) < 0.04
    assert abs((third == second).mean() - 0.5) < 0.04
    assert make_agent().initial_state(3) is None  # κ = 0: stateless, as before


def test_action_persistence_leaves_deterministic_actions_alone() -> None:
    agent = make_agent("agent.learning_starts=0", "agent.action_persistence=0.9")
    fill(agent)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    mode = agent.expected_free_energy(torch.as_tensor(obs), average=True).argmin(-1).numpy()
    previous = torch.as_tensor(1 - mode)  # every env's previous action is the other one
    actions, _ = agent.act(obs, previous, np.zeros(64, bool), deterministic=True)
    np.testing.assert_array_equal(actions, mode)


def test_action_persistence_is_refused_for_continuous_actions() -> None:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["env=pendulum", "agent=daif_continuous", "agent.action_persistence=0.5"],
        )
    env = gym.make(cfg.env.id)
    with pytest.raises(ConfigError, match=r"agent.action_persistence=0.5: discrete actions only"):
        build_agent(cfg.agent, AgentContext(env.observation_space, env.action_space))


def test_precision_anneals_linearly() -> None:
    agent = make_agent(
        "agent.precision=1.0", "agent.precision_final=5.0", "agent.precision_anneal_steps=100"
    )
    assert agent.config.precision_at(25) == pytest.approx(2.0)
    assert agent.config.precision_at(1000) == pytest.approx(5.0)


# ------------------------------------------------------------------ EFE terms
def test_info_gain_is_zero_when_ensemble_members_agree() -> None:
    agent = make_agent()
    with torch.no_grad():
        for p in agent.world_model.transition.parameters():
            p.copy_(p[:1].expand_as(p))
    z = torch.randn(16, agent.config.latent_dim)
    _, info_gain = agent.world_model.epistemic_terms(z, torch.randint(0, 2, (16,)))
    assert torch.allclose(info_gain, torch.zeros(16), atol=1e-5)


def test_risk_is_negative_log_preference_of_outcome() -> None:
    agent = make_agent("agent.preference.temperature=0.5", "agent.preference.termination=-2.0")
    # ln P̃(r, d) = r / T + c·d: r = 1, not terminal → 2; r = 1, terminal → 0
    lp = agent.preference(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(lp, torch.tensor([2.0, 0.0]))


# ------------------------------------------------------------------ learning and errors
def _documented_scalar_tags(writer: str) -> set[str]:
    """Scalar tags the TensorBoard table of docs/logging.md attributes to ``writer``."""
    rows = [ln for ln in LOGGING_DOC.read_text().splitlines() if ln.startswith("| `")]
    cells = [ln.split("|")[1] for ln in rows if ln.split("|")[2].strip().startswith(writer)]
    return {t for c in cells for t in re.findall(r"`([\w]+/[\w]+)`", c.split("; image")[0])}


def test_update_returns_the_terms_the_logging_doc_lists() -> None:
    agent = make_agent()
    assert agent.update(0) == {}  # nothing observed yet
    fill(agent)
    metrics = agent.update(64)
    assert set(metrics) == _documented_scalar_tags("deep agent")
    assert all(torch.isfinite(v) for v in metrics.values())
    # reward 1 with temperature 1: risk = −ln P̃(r=1, d) ∈ {−1 − 0·d}
    assert metrics["efe/risk"].item() == pytest.approx(-1.0)


def test_non_finite_loss_raises_naming_loss_and_step() -> None:
    agent = make_agent("agent.nan_check_interval=1")
    fill(agent)
    agent.replay.data["reward"].fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"losses/outcome_nll.*step 123"):
        agent.update(123)


@pytest.mark.parametrize("estimate", ["exact", "cached"])
def test_state_dict_round_trip_continues_identically(estimate: str) -> None:
    a = make_agent(f"agent.epistemic_estimate={estimate}")
    fill(a)
    for step in range(3):
        a.update(step)
    fill(a, n=5, seed=1)  # new transitions the cache has not seen yet
    b = make_agent(f"agent.epistemic_estimate={estimate}", seed=7)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(3)
    ma = a.update(10)
    torch.manual_seed(3)
    mb = b.update(10)
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert b.env_steps == a.env_steps and b.num_updates == a.num_updates


def test_bf16_autocast_updates_stay_finite() -> None:
    agent = make_agent(amp="bf16")
    fill(agent)
    for step in range(5):
        metrics = agent.update(step)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert all(torch.isfinite(p).all() for p in agent.critic.parameters())


def test_model_trains_only_every_kth_step_but_critic_every_step() -> None:
    agent = make_agent("agent.model_update_every=2", "agent.critic_trains_encoder=false")
    fill(agent)
    agent.update(0)  # update 0 trains model and critic
    enc = [p.clone() for p in agent.world_model.encoder.parameters()]
    critic = [p.clone() for p in agent.critic.parameters()]
    agent.update(1)  # update 1: critic only
    assert all(
        torch.equal(a, b) for a, b in zip(enc, agent.world_model.encoder.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters(), strict=True)
    )
    agent.update(2)  # update 2: both again
    assert not all(
        torch.equal(a, b) for a, b in zip(enc, agent.world_model.encoder.parameters(), strict=True)
    )


def test_critic_trains_encoder_lets_the_td_loss_reach_the_encoder_only() -> None:
    agent = make_agent("agent.model_update_every=2", "agent.critic_trains_encoder=true")
    fill(agent)
    agent.update(0)
    enc = [p.clone() for p in agent.world_model.encoder.parameters()]
    dec = [p.clone() for p in agent.world_model.decoder.parameters()]
    agent.update(1)  # a critic-only step: its gradient now moves the encoder, not the decoder
    assert not all(
        torch.equal(a, b) for a, b in zip(enc, agent.world_model.encoder.parameters(), strict=True)
    )
    assert all(
        torch.equal(a, b) for a, b in zip(dec, agent.world_model.decoder.parameters(), strict=True)
    )


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("critic_trains_encoder", [False, True])
def test_critic_loss_matches_its_definition_step_by_step(
    critic_trains_encoder: bool, n_step: int
) -> None:
    # The critic loss packs every state it encodes into as few calls as it can; here each
    # piece is computed separately, the plain way, and the two must agree.
    agent = make_agent(
        f"agent.n_step={n_step}",
        "agent.info_gain_weight=0.5",
        "agent.ambiguity_weight=0.3",
        f"agent.critic_trains_encoder={critic_trains_encoder}",
    )
    fill(agent)
    agent.epistemic.baseline.fill_(0.7)  # ā is subtracted from every step's ambiguity
    torch.manual_seed(1)
    batch = agent.replay.sample(8, n_step)
    loss, metrics, _ = agent.critic_loss(batch)

    wm, c = agent.world_model, agent.config
    b, length = batch["action"].shape
    with torch.no_grad():
        z = torch.stack([wm.encode(batch["obs"][:, k]) for k in range(length)], 1)
        amb, ig = torch.zeros(b, length), torch.zeros(b, length)
        for k in range(length):
            amb[:, k], ig[:, k] = wm.epistemic_terms(z[:, k], batch["action"][:, k])
        risk = -agent.preference(batch["reward"], batch["terminated"].float())
        g = risk + 0.3 * (amb - 0.7) - 0.5 * ig
        last = bootstrap_index(batch["terminated"], batch["truncated"])
        z_last = wm.encode(batch["next_obs"][torch.arange(b), last])
        precision = c.precision_at(agent.env_steps)
        v = state_value(agent.critic(z_last), agent.critic_target(z_last), precision)
        target = n_step_efe_target(g, v, batch["terminated"], batch["truncated"], c.discount)
        g_pred = agent.critic(z[:, 0])[torch.arange(b), batch["action"][:, 0]]
        expected = torch.nn.functional.huber_loss(g_pred, target, delta=c.huber_delta)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["efe/info_gain"], ig[:, 0].mean(), rtol=1e-5, atol=1e-6)
    # the TD gradient reaches the encoder exactly when asked to
    wm.encoder.zero_grad(set_to_none=True)
    loss.backward()
    reached = any(p.grad is not None for p in wm.encoder.parameters())
    assert reached == critic_trains_encoder


def test_huber_critic_loss_sums_the_heads_against_a_hand_computation() -> None:
    # Huber_1(x) = x²/2 for |x| ≤ 1, |x| − 1/2 beyond; each head's loss is a mean over B
    g = torch.tensor([[0.0, 3.0], [1.0, -2.0]])  # [K=2, B=2]
    target = torch.zeros(2)
    expected = (0.0 + 2.5) / 2 + (0.5 + 1.5) / 2
    assert critic_loss(g, target, huber_delta=1.0).item() == pytest.approx(expected)


def test_a_critic_with_heads_acts_on_their_mean_and_regresses_each_on_the_target() -> None:
    agent = make_agent("agent.critic.num_heads=3")
    fill(agent)
    z = torch.randn(5, 4)
    heads = agent.critic.heads(z)
    assert heads.shape == (3, 5, 2)
    torch.testing.assert_close(agent.critic(z), heads.mean(0))
    assert not torch.allclose(heads[0], heads[1])  # independently initialised

    torch.manual_seed(1)
    batch = agent.replay.sample(8, agent.config.n_step)
    loss, metrics, _ = agent.critic_loss(batch)
    # recompute with the target held fixed: the loss is Σ_k Huber(G_k(ŝ_0, a_0) − target)
    wm, c = agent.world_model, agent.config
    with torch.no_grad():
        risk = -agent.preference(batch["reward"], batch["terminated"].float())
        est = agent.epistemic.estimate(
            batch,
            n_step_weights(batch["terminated"], batch["truncated"], c.discount),
            batch["next_obs"][
                torch.arange(8), bootstrap_index(batch["terminated"], batch["truncated"])
            ],
        )
        v = state_value(
            agent.critic(est.z_last),
            agent.critic_target(est.z_last),
            c.precision_at(agent.env_steps),
        )
        target = est.weighted_sum + n_step_efe_target(
            risk, v, batch["terminated"], batch["truncated"], c.discount
        )
        g0 = agent.critic.heads(wm.encode(batch["obs"][:, 0]))[
            :, torch.arange(8), batch["action"][:, 0]
        ]
        expected = sum(
            torch.nn.functional.huber_loss(g0[k], target, delta=c.huber_delta) for k in range(3)
        )
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["efe/G"], g0.mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(net[0].weight.grad.abs().sum() > 0 for net in agent.critic.nets)


def test_a_critic_checkpoint_from_before_heads_loads_into_one_head() -> None:
    agent = make_agent()
    old = {k.replace("nets.0.", "net."): v for k, v in agent.critic.state_dict().items()}
    assert all(k.startswith("net.") for k in old)
    fresh = make_agent(seed=1).critic
    fresh.load_state_dict(old)
    z = torch.randn(5, 4)
    torch.testing.assert_close(fresh(z), agent.critic(z))


def test_a_critic_without_heads_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="num_heads: must be >= 1, got 0"):
        make_agent("agent.critic.num_heads=0")


def test_n_step_weights_are_discounts_until_the_episode_ends() -> None:
    g = 0.5
    term = torch.tensor([[False, False, False], [False, True, False], [False, False, False]])
    trunc = torch.tensor([[False, False, False], [False, False, False], [True, False, False]])
    expected = torch.tensor([[1.0, g, g * g], [1.0, g, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(n_step_weights(term, trunc, g), expected)


@pytest.mark.parametrize("critic_trains_encoder", [False, True])
def test_cached_critic_loss_equals_exact_when_its_cache_is_fresh(
    critic_trains_encoder: bool,
) -> None:
    # the cached estimate reads what the exact one computes: with every step of the batch
    # freshly annotated by the current model, the two losses coincide
    agent = make_agent(
        "agent.n_step=3",
        "agent.info_gain_weight=0.5",
        "agent.ambiguity_weight=0.3",
        "agent.epistemic_estimate=cached",
        f"agent.critic_trains_encoder={critic_trains_encoder}",
    )
    fill(agent)
    cached_source = agent.epistemic
    exact_source = ExactEpistemic(agent.world_model, 0.3, 0.5, critic_trains_encoder)
    for source in (cached_source, exact_source):
        source.baseline.fill_(0.7)
    torch.manual_seed(1)
    batch = agent.replay.sample(8, 3)
    with torch.no_grad():  # annotate every step of the batch, as refreshes eventually do
        flat_obs = batch["obs"].flatten(0, 1)
        amb, ig = agent.world_model.epistemic_terms(
            agent.world_model.encode(flat_obs), batch["action"].flatten()
        )
    batch["ambiguity"], batch["info_gain"] = amb.view(8, 3), ig.view(8, 3)
    cached, metrics, _ = agent.critic_loss(batch)
    agent.epistemic = exact_source
    exact, exact_metrics, _ = agent.critic_loss(batch)
    torch.testing.assert_close(cached, exact, rtol=1e-5, atol=1e-6)
    for tag in ("efe/ambiguity", "efe/info_gain", "efe/risk", "efe/G"):
        torch.testing.assert_close(metrics[tag], exact_metrics[tag], rtol=1e-5, atol=1e-6)
    # and a stale cache is what the loss reads: notes equal to ā and no information gain
    # give the risk-only target
    agent.epistemic = cached_source
    batch["ambiguity"] = torch.full_like(batch["ambiguity"], 0.7)
    batch["info_gain"] = torch.zeros_like(batch["info_gain"])
    stale, _, _ = agent.critic_loss(batch)
    agent.epistemic = ExactEpistemic(agent.world_model, 0.0, 0.0, critic_trains_encoder)
    risk_only, _, _ = agent.critic_loss(batch)
    torch.testing.assert_close(stale, risk_only, rtol=1e-5, atol=1e-6)


def test_cache_refresh_writes_the_models_terms_for_the_batch_and_every_new_transition() -> None:
    agent = make_agent("agent.epistemic_estimate=cached")
    assert isinstance(agent.epistemic, CachedEpistemic)
    fill(agent, n=40)
    replay, wm = agent.replay, agent.world_model
    torch.manual_seed(2)
    batch = replay.sample(8, agent.config.n_step)
    agent.epistemic.refresh(replay, batch)
    # first time: the batch's first steps and all 40 stored transitions
    with torch.no_grad():
        amb, ig = wm.epistemic_terms(
            wm.encode(replay.data["obs"][:40, 0]), replay.data["action"][:40, 0]
        )
    torch.testing.assert_close(replay.data["ambiguity"][:40, 0], amb)
    torch.testing.assert_close(replay.data["info_gain"][:40, 0], ig)
    assert bool((ig > 0).all())  # an untrained ensemble disagrees
    torch.testing.assert_close(batch["info_gain"], replay.data["info_gain"][batch["slot"], 0])
    # ā then moves to the mean ambiguity the refresh evaluated (first step: set to it)
    agent.epistemic.end_step(None)
    first = batch["slot"][:, 0]
    torch.testing.assert_close(agent.epistemic.baseline, torch.cat([amb[first], amb]).mean())
    # later: only what was stored since, once
    assert agent.epistemic.refreshed_upto == 40
    fill(agent, n=3, seed=1)
    agent.epistemic.refresh(replay, batch)
    assert agent.epistemic.refreshed_upto == 43
    assert bool((replay.data["info_gain"][40:43, 0] > 0).all())


def test_cached_estimate_runs_no_model_in_a_critic_only_step() -> None:
    agent = make_agent("agent.epistemic_estimate=cached", "agent.model_update_every=2")
    fill(agent)
    agent.update(0)  # a model step refreshes the cache
    assert bool((agent.replay.data["info_gain"][:64] > 0).all())
    calls = []
    agent.world_model.transition.register_forward_hook(lambda *_: calls.append(1))
    agent.world_model.decoder.register_forward_hook(lambda *_: calls.append(1))
    metrics = agent.update(1)  # critic only: the epistemic terms come from the cache
    assert calls == [] and metrics["efe/info_gain"] > 0
    agent.update(2)
    assert len(calls) > 0


def test_terminal_fraction_reaches_the_agents_batches() -> None:
    agent = make_agent("agent.terminal_fraction=1.0", "agent.n_step=3")
    fill(agent)  # episodes end every 10 steps
    seen = []
    sample = agent.replay.sample
    agent.replay.sample = lambda *a: seen.append(sample(*a)) or seen[-1]
    agent.update(0)
    assert len(seen) == 1 and bool(seen[0]["terminated"].any(1).all())


def test_lr_sets_both_optimiser_groups_unless_the_model_has_its_own() -> None:
    shared = make_agent("agent.lr=3e-4")
    assert [g["lr"] for g in shared.optimizer.param_groups] == [3e-4, 3e-4]  # [model, critic]
    split = make_agent("agent.lr=3e-4", "agent.model_lr=1e-2")
    assert [g["lr"] for g in split.optimizer.param_groups] == [1e-2, 3e-4]
    with pytest.raises(ConfigError, match=r"agent\.lr.*-0\.1"):
        make_agent("agent.lr=-0.1")


def test_lr_decays_linearly_to_its_final_fraction_over_the_decay_steps() -> None:
    agent = make_agent(
        "agent.lr=2e-3",
        "agent.model_lr=1e-3",
        "agent.lr_final_fraction=0.1",
        "agent.lr_decay_steps=200",
        "agent.learning_starts=0",
    )
    fill(agent, 100)  # env_steps = 100: halfway, factor 1 − 0.5·0.9 = 0.55
    agent.update(0)
    lrs = [g["lr"] for g in agent.optimizer.param_groups]
    assert lrs == pytest.approx([0.55e-3, 1.1e-3])
    fill(agent, 200)  # past the decay: the final fraction, not below
    agent.update(0)
    assert [g["lr"] for g in agent.optimizer.param_groups] == pytest.approx([1e-4, 2e-4])


def test_lr_is_constant_with_zero_decay_steps_and_bad_fractions_are_named() -> None:
    agent = make_agent("agent.learning_starts=0", "agent.lr=1e-3", "agent.lr_decay_steps=0")
    fill(agent, 100)
    agent.update(0)
    assert agent.config.lr_scale_at(agent.env_steps) == 1.0
    assert [g["lr"] for g in agent.optimizer.param_groups] == pytest.approx([1e-3, 1e-3])
    with pytest.raises(ConfigError, match=r"agent\.lr_final_fraction.*1\.5"):
        make_agent("agent.lr_final_fraction=1.5")


def test_images_show_the_newest_observations_above_their_reconstructions() -> None:
    from daif.images import heatmap

    agent = make_agent()
    assert agent.images() == {}  # nothing observed yet
    fill(agent, 20)
    rng = np.random.default_rng(0)  # the observations fill() drew
    obs = torch.as_tensor(np.concatenate([rng.normal(size=(1, 4)) for _ in range(20)]))
    img = agent.images()["model/reconstruction"]
    assert img.shape == (3, 2 * 8 * 8, 4 * 8) and img.dtype == np.uint8
    scaled = agent.world_model.preprocess(obs[-8:]).clamp(-1, 1).numpy()
    np.testing.assert_array_equal(img[:, : 8 * 8], heatmap((scaled + 1) / 2, cell=8, vmax=1.0))


def test_a_critic_only_step_right_after_loading_a_checkpoint_works() -> None:
    # model every 2nd update: a checkpoint after update 1 resumes on a critic-only step,
    # whose metrics have no model losses yet (this used to raise KeyError)
    agent = make_agent("agent.model_update_every=2")
    fill(agent)
    agent.update(0)
    resumed = make_agent("agent.model_update_every=2", seed=1)
    resumed.load_state_dict(agent.state_dict())
    metrics = resumed.update(1)
    assert "losses/critic_td" in metrics and "losses/reconstruction" not in metrics
    assert math.isfinite(float(metrics["losses/critic_td"]))
