"""Deep active inference agent: targets, action selection, EFE terms, errors, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from daif import maths
from daif.agent import (
    DeepActiveInferenceAgent,
    action_gap_target,
    bootstrap_index,
    n_step_efe_target,
    n_step_weights,
    sample_sequence_step,
)
from daif.protocol import Agent, Transition
from daif.utils import NonFiniteLossError

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
    "agent.value.hidden=[8]",
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
    return instantiate(
        cfg.agent,
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=1,
        env=env,
        device=torch.device("cpu"),
        amp=amp,
        compile=compile,
    )


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
    target = n_step_efe_target(g, v, terminated, truncated, gamma=0.5)
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
        ("agent.gamma=1.5", "agent.gamma"),
        ("agent.planner=beam", "agent.planner"),
        ("agent.n_step=0", "agent.n_step"),
        ("agent.precision=-1.0", "agent.precision"),
        ("agent.info_gain_weight=-0.1", "agent.info_gain_weight"),
        ("agent.critic_trains_encoder=maybe", "agent.critic_trains_encoder"),
        ("agent.lr_decay_steps=-5", "agent.lr_decay_steps"),
        ("agent.cem_elites=500", "agent.cem_elites"),
        ("agent.terminal_fraction=1.5", "agent.terminal_fraction"),
    ],
)
def test_bad_hyperparameter_raises_naming_key(override: str, key: str) -> None:
    # Hydra wraps the agent's ValueError; the cause must name the key and the value
    with pytest.raises(InstantiationException) as info:
        make_agent(override)
    assert isinstance(info.value.__cause__, ValueError)
    assert key in str(info.value.__cause__)
    assert override.split("=")[1] in str(info.value.__cause__)


def test_fp16_on_cpu_is_rejected() -> None:
    with pytest.raises(InstantiationException) as info:
        make_agent(amp="fp16")
    assert isinstance(info.value.__cause__, ValueError)
    assert "fp16" in str(info.value.__cause__)


# ------------------------------------------------------------------ action selection
def test_softmax_precision_limits() -> None:
    g = torch.tensor([[0.3, -0.2, 0.1]])
    assert torch.allclose(maths.softmax(-g, 1e6), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.allclose(maths.softmax(-g, 0.0), torch.full((1, 3), 1 / 3))


def test_deterministic_action_is_mode_and_high_precision_sampling_agrees() -> None:
    agent = make_agent("agent.precision=1e6", "agent.precision_final=1e6", "agent.random_steps=0")
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    g = agent.expected_free_energy(torch.as_tensor(obs))
    greedy = g.argmin(-1).numpy()
    det, _ = agent.act(obs, None, np.zeros(32, bool), deterministic=True)
    sampled, _ = agent.act(obs, None, np.zeros(32, bool))
    np.testing.assert_array_equal(det, greedy)
    np.testing.assert_array_equal(sampled, greedy)


def test_zero_precision_samples_uniformly() -> None:
    agent = make_agent("agent.precision=0.0", "agent.precision_final=0.0", "agent.random_steps=0")
    torch.manual_seed(1)
    obs = np.zeros((4000, 4), np.float32)
    actions, _ = agent.act(obs, None, np.zeros(4000, bool))
    # Binomial(4000, ½): std 0.0079, so 0.05 is > 6 sigma
    assert abs(actions.mean() - 0.5) < 0.05


def test_precision_anneals_linearly() -> None:
    agent = make_agent(
        "agent.precision=1.0", "agent.precision_final=5.0", "agent.precision_anneal_steps=100"
    )
    agent.env_steps = 25
    assert agent.current_precision() == pytest.approx(2.0)
    agent.env_steps = 1000
    assert agent.current_precision() == pytest.approx(5.0)


# ------------------------------------------------------------------ EFE terms
def test_info_gain_is_zero_when_ensemble_members_agree() -> None:
    agent = make_agent()
    with torch.no_grad():
        for p in agent.transition.parameters():
            p.copy_(p[:1].expand_as(p))
    z = torch.randn(16, agent.latent_dim)
    _, info_gain, _, _ = agent._efe_terms(z, torch.randint(0, 2, (16,)))
    assert torch.allclose(info_gain, torch.zeros(16), atol=1e-5)


def test_risk_is_negative_log_preference_of_outcome() -> None:
    agent = make_agent("agent.preference.temperature=0.5", "agent.preference.termination=-2.0")
    # ln P̃(r, d) = r / T + c·d: r = 1, not terminal → 2; r = 1, terminal → 0
    lp = agent.preference(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(lp, torch.tensor([2.0, 0.0]))


def test_mpc_horizon_one_equals_one_step_efe_plus_critic_tail() -> None:
    agent = make_agent("agent.planner=mpc", "agent.horizon=1", "agent.target_precision=3.0")
    z = torch.randn(5, agent.latent_dim)
    with torch.no_grad():
        g_plan = agent._plan(z)
        for a in range(2):
            act = torch.full((5,), a)
            r, logit = agent.outcome(z, act)
            p_term = torch.sigmoid(logit)
            risk = -(maths.symexp(r) * 1.0 + 0.0 * p_term)
            amb, ig, _, _ = agent._efe_terms(z, act)
            z1 = agent.transition(z, act)[0].mean(0)
            q = torch.softmax(-3.0 * agent.critic(z1), -1)
            tail = (q * agent.critic_target(z1)).sum(-1)
            w_a, w_i = agent.ambiguity_weight, agent.info_gain_weight
            g = risk + w_a * amb - w_i * ig + agent.gamma * (1 - p_term) * tail
            assert torch.allclose(g_plan[:, a], g, atol=1e-5)


def test_mpc_cem_returns_finite_scores_for_sampled_first_actions() -> None:
    agent = make_agent("agent.planner=mpc", "agent.horizon=4", "agent.max_sequences=4")
    g = agent.expected_free_energy(torch.randn(3, 4))
    assert g.shape == (3, 2)
    assert torch.isfinite(g.min(-1).values).all()


# ------------------------------------------------------------------ learning and errors
def test_update_returns_every_logged_term() -> None:
    agent = make_agent()
    assert agent.update(0) == {}  # nothing observed yet
    fill(agent)
    metrics = agent.update(64)
    for tag in (
        "losses/reconstruction",
        "free_energy/kl",
        "losses/transition_nll",
        "losses/outcome_nll",
        "losses/critic_td",
        "efe/risk",
        "efe/ambiguity",
        "efe/info_gain",
    ):
        assert tag in metrics and torch.isfinite(metrics[tag])
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
    enc = [p.clone() for p in agent.encoder.parameters()]
    critic = [p.clone() for p in agent.critic.parameters()]
    agent.update(1)  # update 1: critic only
    assert all(torch.equal(a, b) for a, b in zip(enc, agent.encoder.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters(), strict=True)
    )
    agent.update(2)  # update 2: both again
    assert not all(torch.equal(a, b) for a, b in zip(enc, agent.encoder.parameters(), strict=True))


def test_critic_trains_encoder_lets_the_td_loss_reach_the_encoder_only() -> None:
    agent = make_agent("agent.model_update_every=2", "agent.critic_trains_encoder=true")
    fill(agent)
    agent.update(0)
    enc = [p.clone() for p in agent.encoder.parameters()]
    dec = [p.clone() for p in agent.decoder.parameters()]
    agent.update(1)  # a critic-only step: its gradient now moves the encoder, not the decoder
    assert not all(torch.equal(a, b) for a, b in zip(enc, agent.encoder.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(dec, agent.decoder.parameters(), strict=True))


@pytest.mark.parametrize(
    ("n_step", "action_gap", "critics"), [(1, 0.0, 1), (3, 0.0, 1), (3, 0.6, 1), (3, 0.0, 3)]
)
@pytest.mark.parametrize("critic_trains_encoder", [False, True])
def test_critic_loss_matches_its_definition_step_by_step(
    critic_trains_encoder: bool, n_step: int, action_gap: float, critics: int
) -> None:
    # The critic loss packs every state it encodes into as few calls as it can; here each
    # piece is computed separately, the plain way, and the two must agree.
    agent = make_agent(
        f"agent.n_step={n_step}",
        "agent.info_gain_weight=0.5",
        "agent.ambiguity_weight=0.3",
        f"agent.action_gap={action_gap}",
        f"agent.value.num_members={critics}",
    )
    agent.critic_trains_encoder = critic_trains_encoder
    fill(agent)
    torch.manual_seed(1)
    batch = agent.replay.sample(8, n_step)
    loss, metrics = agent._critic_losses(batch)

    b, length = batch["action"].shape
    with torch.no_grad():
        z = torch.stack(
            [agent.encoder(agent.preprocess(batch["obs"][:, k]))[0] for k in range(length)], 1
        )
        amb, ig = torch.zeros(b, length), torch.zeros(b, length)
        for k in range(length):
            amb[:, k], ig[:, k], _, _ = agent._efe_terms(z[:, k], batch["action"][:, k])
        risk = -agent.preference(batch["reward"], batch["terminated"].float())
        g = risk + 0.3 * amb - 0.5 * ig
        last = bootstrap_index(batch["terminated"], batch["truncated"])
        z_last = agent.encoder(agent.preprocess(batch["next_obs"][torch.arange(b), last]))[0]
        v = agent._state_value(z_last, agent._target_precision())
        target = n_step_efe_target(g, v, batch["terminated"], batch["truncated"], agent.gamma)
        g_target = agent.critic_target(z[:, 0])  # advantage learning: + α·(G(s,a) − min G(s,·))
        a0 = batch["action"][:, 0]
        target = target + action_gap * (g_target[torch.arange(b), a0] - g_target.min(1).values)
        # each critic of an ensemble against the same target, the loss their mean
        per_member = []
        for g_k in agent.critic.members(z[:, 0]):
            g_pred = g_k[torch.arange(b), a0]
            per_member.append(
                torch.nn.functional.huber_loss(g_pred, target, delta=agent.huber_delta)
            )
    expected = torch.stack(per_member).mean()
    assert len(per_member) == critics
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["efe/info_gain"], ig[:, 0].mean(), rtol=1e-5, atol=1e-6)
    # the TD gradient reaches the encoder exactly when asked to
    agent.encoder.zero_grad(set_to_none=True)
    loss.backward()
    reached = any(p.grad is not None for p in agent.encoder.parameters())
    assert reached == critic_trains_encoder


def test_n_step_weights_are_discounts_until_the_episode_ends() -> None:
    g = 0.5
    term = torch.tensor([[False, False, False], [False, True, False], [False, False, False]])
    trunc = torch.tensor([[False, False, False], [False, False, False], [True, False, False]])
    expected = torch.tensor([[1.0, g, g * g], [1.0, g, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(n_step_weights(term, trunc, g), expected)


def test_sampled_step_is_uniform_and_its_estimate_unbiased() -> None:
    # m = 0, 1, 2, 4; 60 evenly spaced uniforms hit every k ≤ m exactly 60/(m+1) times
    last = torch.tensor([0, 1, 2, 4]).repeat_interleave(60)
    u = ((torch.arange(60) + 0.5) / 60).repeat(4)
    k = sample_sequence_step(last, u)
    for m in (0, 1, 2, 4):
        counts = torch.bincount(k[last == m], minlength=5)
        assert counts.tolist() == [60 // (m + 1)] * (m + 1) + [0] * (4 - m)
    # the estimate (m+1)·w_k·x_k averages to Σ_{k≤m} w_k x_k (here by hand: γ = 0.9)
    w = torch.tensor([1.0, 0.9, 0.81, 0.729, 0.6561])
    x = torch.tensor([2.0, -1.0, 3.0, 0.5, 4.0])
    estimates = (last + 1) * w[k] * x[k]
    by_hand = {0: 2.0, 1: 2.0 - 0.9, 2: 2.0 - 0.9 + 2.43, 4: 1.1 + 2.43 + 0.3645 + 2.6244}
    for m, exact in by_hand.items():
        torch.testing.assert_close(estimates[last == m].mean(), torch.tensor(exact))
    # u just below 1 never yields k = m + 1
    assert sample_sequence_step(torch.tensor([3]), torch.tensor([1.0 - 1e-7])).item() == 3


def test_sampled_epistemic_target_equals_exact_for_one_step_targets() -> None:
    # with n_step = 1 the only step is k = 0 with weight 1: both estimates coincide
    agent = make_agent("agent.n_step=1", "agent.info_gain_weight=0.5", "agent.ambiguity_weight=0.3")
    fill(agent)
    batch = agent.replay.sample(8, 1)
    exact, _ = agent._critic_losses(batch)
    agent.epistemic_estimate = "sampled"
    sampled, _ = agent._critic_losses(batch)
    torch.testing.assert_close(sampled, exact)


@pytest.mark.parametrize("critic_trains_encoder", [False, True])
def test_sampled_critic_loss_matches_its_definition(critic_trains_encoder: bool) -> None:
    # target = Σ_k w_k w_r·risk_k + (m+1)·w_k*·(w_a·amb − β·ig)(s_k*, a_k*) + bootstrap,
    # with k* drawn from the first torch.rand of the call
    agent = make_agent(
        "agent.n_step=4",
        "agent.info_gain_weight=0.5",
        "agent.ambiguity_weight=0.3",
        "agent.epistemic_estimate=sampled",
    )
    agent.critic_trains_encoder = critic_trains_encoder
    fill(agent)
    torch.manual_seed(1)
    batch = agent.replay.sample(16, 4)
    torch.manual_seed(7)
    loss, metrics = agent._critic_losses(batch)

    b = batch["action"].shape[0]
    rows = torch.arange(b)
    term, trunc = batch["terminated"], batch["truncated"]
    last = bootstrap_index(term, trunc)
    torch.manual_seed(7)
    k = sample_sequence_step(last, torch.rand(b))
    with torch.no_grad():
        z_k = agent.encoder(agent.preprocess(batch["obs"][rows, k]))[0]
        amb, ig, _, _ = agent._efe_terms(z_k, batch["action"][rows, k])
        w = n_step_weights(term, trunc, agent.gamma)
        epistemic = (last + 1) * w[rows, k] * (0.3 * amb - 0.5 * ig)
        risk = -agent.preference(batch["reward"], term.float())
        z_last = agent.encoder(agent.preprocess(batch["next_obs"][rows, last]))[0]
        v = agent._state_value(z_last, agent._target_precision())
        target = epistemic + n_step_efe_target(risk, v, term, trunc, agent.gamma)
        z0 = agent.encoder(agent.preprocess(batch["obs"][:, 0]))[0]
        g_pred = agent.critic(z0).gather(1, batch["action"][:, :1]).squeeze(1)
    expected = torch.nn.functional.huber_loss(g_pred, target, delta=agent.huber_delta)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["efe/info_gain"], ig.mean(), rtol=1e-5, atol=1e-6)
    assert bool((k <= last).all()) and bool((k > 0).any())  # not just the first step


@pytest.mark.parametrize("critic_trains_encoder", [False, True])
def test_cached_critic_loss_equals_exact_when_its_cache_is_fresh(
    critic_trains_encoder: bool,
) -> None:
    # the cached estimate reads what the exact one computes: refresh every step of the
    # batch with the current model, and the two losses coincide
    agent = make_agent(
        "agent.n_step=3",
        "agent.info_gain_weight=0.5",
        "agent.ambiguity_weight=0.3",
        "agent.epistemic_estimate=cached",
    )
    agent.critic_trains_encoder = critic_trains_encoder
    fill(agent)
    agent._ambiguity_baseline.fill_(0.7)  # the running mean is subtracted in both
    torch.manual_seed(1)
    batch = agent.replay.sample(8, 3)
    agent._refresh_epistemic(batch["slot"].flatten(), batch["env"].flatten())
    for name in ("ambiguity", "info_gain"):
        batch[name] = agent.replay.data[name][batch["slot"], batch["env"]]
    cached, metrics = agent._critic_losses(batch)
    agent.epistemic_estimate = "exact"
    exact, exact_metrics = agent._critic_losses(batch)
    torch.testing.assert_close(cached, exact, rtol=1e-5, atol=1e-6)
    for tag in ("efe/ambiguity", "efe/info_gain", "efe/risk", "efe/G"):
        torch.testing.assert_close(metrics[tag], exact_metrics[tag], rtol=1e-5, atol=1e-6)
    # and a stale cache is what the loss reads: zero notes give the risk-only target
    agent.epistemic_estimate = "cached"
    batch["ambiguity"] = torch.full_like(batch["ambiguity"], 0.7)  # = the baseline
    batch["info_gain"] = torch.zeros_like(batch["info_gain"])
    stale, _ = agent._critic_losses(batch)
    agent.info_gain_weight = agent.ambiguity_weight = 0.0
    agent.epistemic_estimate = "exact"
    risk_only, _ = agent._critic_losses(batch)
    torch.testing.assert_close(stale, risk_only, rtol=1e-5, atol=1e-6)


def test_cache_refresh_writes_the_models_terms_for_the_batch_and_every_new_transition() -> None:
    agent = make_agent("agent.epistemic_estimate=cached")
    fill(agent, n=40)
    replay = agent.replay
    torch.manual_seed(2)
    batch = replay.sample(8, agent.n_step)
    slot, env = agent._cache_rows(batch)
    # first time: the batch's first steps and all 40 stored transitions
    assert slot.tolist() == batch["slot"][:, 0].tolist() + list(range(40))
    mean_ambiguity = agent._refresh_epistemic(slot, env)
    with torch.no_grad():
        z, _ = agent.encoder(agent.preprocess(replay.data["obs"][:40, 0]))
        amb, ig, _, _ = agent._epistemic_terms(z, replay.data["action"][:40, 0])
    torch.testing.assert_close(replay.data["ambiguity"][:40, 0], amb)
    torch.testing.assert_close(replay.data["info_gain"][:40, 0], ig)
    assert bool((ig > 0).all())  # an untrained ensemble disagrees
    torch.testing.assert_close(mean_ambiguity, torch.cat([amb[slot[:8]], amb]).mean())
    # later: only what was stored since, once
    fill(agent, n=3, seed=1)
    slot, _ = agent._cache_rows(batch)
    assert slot[8:].tolist() == [40, 41, 42]
    slot, _ = agent._cache_rows(batch)
    assert slot.shape == (8,)


def test_cached_estimate_runs_no_model_in_a_critic_only_step() -> None:
    agent = make_agent("agent.epistemic_estimate=cached", "agent.model_update_every=2")
    fill(agent)
    agent.update(0)  # a model step refreshes the cache
    assert bool((agent.replay.data["info_gain"][:64] > 0).all())
    calls = []
    agent.transition.register_forward_hook(lambda *_: calls.append(1))
    agent.decoder.register_forward_hook(lambda *_: calls.append(1))
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


def test_action_gap_target_by_hand() -> None:
    # G(s,·) = [2, 5, 3]: the greedy action 0 keeps its target, the others rise by α·gap
    g_s = torch.tensor([[2.0, 5.0, 3.0]]).repeat(3, 1)
    target = torch.tensor([1.0, 1.0, 1.0])
    out = action_gap_target(target, g_s, torch.tensor([0, 1, 2]), alpha=0.5)
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0 + 0.5 * 3.0, 1.0 + 0.5 * 1.0]))


@pytest.mark.parametrize("bad", ["1.0", "-0.1", "1.5"])
def test_action_gap_outside_zero_one_is_named(bad: str) -> None:
    with pytest.raises(InstantiationException, match=r"agent\.action_gap"):
        make_agent(f"agent.action_gap={bad}")


def test_critic_ensemble_is_the_mean_of_independent_members() -> None:
    agent = make_agent("agent.value.num_members=4")
    z = torch.randn(6, agent.latent_dim)
    members = agent.critic.members(z)
    assert members.shape == (4, 6, agent.num_actions)
    torch.testing.assert_close(agent.critic(z), members.mean(0))
    assert not torch.allclose(members[0], members[1])  # initialised independently
    single = make_agent()
    torch.testing.assert_close(single.critic.members(z)[0], single.critic(z))


def test_critic_ensemble_of_no_members_is_named() -> None:
    with pytest.raises(
        InstantiationException, match=r"agent\.value\): num_members must be ≥ 1, got 0"
    ):
        make_agent("agent.value.num_members=0")


def test_unknown_epistemic_estimate_is_named() -> None:
    with pytest.raises(InstantiationException, match=r"agent\.epistemic_estimate"):
        make_agent("agent.epistemic_estimate=all")


def test_lr_sets_both_optimiser_groups_unless_one_is_given() -> None:
    shared = make_agent("agent.lr=3e-4")
    assert [g["lr"] for g in shared.optimizer.param_groups] == [3e-4, 3e-4]
    split = make_agent("agent.lr=3e-4", "agent.critic_lr=1e-2")
    assert [g["lr"] for g in split.optimizer.param_groups] == [3e-4, 1e-2]
    with pytest.raises(Exception, match=r"agent\.lr.*-0\.1"):
        make_agent("agent.lr=-0.1")


def test_lr_decays_linearly_to_its_final_fraction_over_the_decay_steps() -> None:
    agent = make_agent(
        "agent.lr=1e-3",
        "agent.critic_lr=2e-3",
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
    assert agent.lr_scale() == 1.0
    assert [g["lr"] for g in agent.optimizer.param_groups] == pytest.approx([1e-3, 1e-3])
    with pytest.raises(Exception, match=r"agent\.lr_final_fraction.*1\.5"):
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
    scaled = agent.preprocess(obs[-8:]).clamp(-1, 1).numpy()
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
