"""A preference over outcomes learned from the agent's best episodes (agent/preference=learned)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from daif.nets.preference import LearnedPreference
from daif.protocol import Transition
from daif.replay import PreferredOutcomes
from daif.trainer import train
from tests.test_agent_core import make_agent
from tests.test_trainer_tensorboard import read_scalars


def _fit(pref: LearnedPreference, preferred: torch.Tensor, experienced: torch.Tensor) -> None:
    opt = torch.optim.Adam(pref.parameters(), lr=0.02)
    for _ in range(1500):
        loss, mean = pref.loss(preferred, experienced)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pref.track_baseline(mean)


def _two_outcomes() -> tuple[torch.Tensor, torch.Tensor]:
    # exact proportions, so the optimum is exact: preferred o = +1 w.p. 0.9,
    # experienced o = +1 w.p. 0.5
    preferred = torch.tensor([[1.0]] * 9 + [[-1.0]])
    experienced = torch.tensor([[1.0]] * 5 + [[-1.0]] * 5)
    return preferred, experienced


def test_classifier_logit_is_the_log_density_ratio_and_preference_is_centred() -> None:
    torch.manual_seed(0)
    pref = LearnedPreference(obs_shape=(1,), temperature=2.0, weight=0.5, hidden=[16])
    _fit(pref, *_two_outcomes())
    o = torch.tensor([[1.0], [-1.0]])
    # logistic regression with balanced classes: ℓ*(o) = ln p_pref(o) − ln p_exp(o)
    expected = torch.tensor([math.log(0.9 / 0.5), math.log(0.1 / 0.5)])
    assert torch.allclose(pref.log_ratio(o), expected, atol=0.02)
    # b = E_exp[ℓ] = ½(ln 1.8 + ln 0.2) = ln 0.6, so ℓ − b = ±ln 3 at o = ±1
    assert pref.baseline.item() == pytest.approx(math.log(0.6), abs=0.02)
    # ln P̃ = r/T + w·(ℓ − b) with r = 1, T = 2, w = ½
    lp = pref(torch.ones(2), torch.zeros(2), o)
    assert torch.allclose(
        lp, torch.tensor([0.5 + 0.5 * math.log(3), 0.5 - 0.5 * math.log(3)]), atol=0.02
    )
    pref.max_log_ratio = 0.5  # the centred ratio is clipped to ±m
    assert torch.allclose(pref(torch.ones(2), torch.zeros(2), o), torch.tensor([0.75, 0.25]))


def test_untrained_learned_preference_is_the_reward_preference() -> None:
    torch.manual_seed(0)
    pref = LearnedPreference(obs_shape=(3,), temperature=2.0, termination=-3.0)
    obs = torch.randn(2, 3)
    assert pref.log_ratio(obs).abs().max() > 0  # the random classifier says something ...
    lp = pref(torch.tensor([1.0, 4.0]), torch.tensor([0.0, 1.0]), obs)
    assert torch.equal(lp, torch.tensor([0.5, 4.0 / 2.0 - 3.0]))  # ... and is not heard yet
    with pytest.raises(ValueError, match="obs=None"):
        pref(torch.ones(2), torch.zeros(2))


def _step(next_obs: list[float], reward: list[float], done: list[bool]) -> Transition:
    n = len(reward)
    return Transition(
        obs=np.zeros((n, 1), np.float32),
        action=np.zeros(n, np.int64),
        reward=np.array(reward, np.float32),
        next_obs=np.array(next_obs, np.float32)[:, None],
        terminated=np.array(done),
        truncated=np.zeros(n, bool),
    )


def test_preferred_outcomes_keep_the_best_recent_episodes() -> None:
    buf = PreferredOutcomes(capacity=4, num_envs=2, obs_shape=(1,), top_fraction=0.5, window=4)
    # next_obs = 10·env + t. env 0: A = t0–1 (R 2), C = t2 (R 0.5), E = t3–4 (R 5);
    # env 1: B = t0–2 (R 3), then an unfinished episode.
    rewards = [[1, 1], [1, 1], [0.5, 1], [5, 0], [0, 0]]
    dones = [[False, False], [True, False], [True, True], [False, False], [True, False]]
    for t in range(5):
        buf.add(_step([t, 10 + t], rewards[t], dones[t]))
    # A: window [2]: R = min → no. C: [2, .5], median 1.25 → no.
    # B: [2, .5, 3], median 2, 3 ≥ 2 → yes (10, 11, 12). E: [2, .5, 3, 5], median 2.5 → yes (3, 4)
    assert list(buf.returns) == [2.0, 0.5, 3.0, 5.0]
    assert buf.episodes_preferred == 2
    # a ring of 4: E's two outcomes overwrite slot 3 then wrap to slot 0
    assert buf.obs.squeeze(1).tolist() == [4.0, 11.0, 12.0, 3.0]
    assert len(buf) == 4 and set(buf.sample(64).squeeze(1).tolist()) <= {3.0, 4.0, 11.0, 12.0}


def test_no_episode_is_preferred_when_all_score_the_same() -> None:
    buf = PreferredOutcomes(capacity=8, num_envs=1, obs_shape=(1,), top_fraction=0.5, window=4)
    for t in range(6):  # three episodes of two steps, each returning −2
        buf.add(_step([t], [-1.0], [t % 2 == 1]))
    assert len(buf) == 0 and buf.episodes_preferred == 0
    with pytest.raises(ValueError, match="no preferred outcomes"):
        buf.sample(1)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("agent.preference.top_fraction=0", "agent.preference.top_fraction"),
        ("agent.preference.top_fraction=1.5", "agent.preference.top_fraction"),
        ("agent.preference.weight=-1", "agent.preference.weight"),
        ("agent.preference.window=1", "agent.preference.window"),
    ],
)
def test_bad_learned_preference_settings_are_named(override: str, key: str) -> None:
    with pytest.raises(InstantiationException) as info:
        make_agent("agent/preference=learned", override)
    assert key in str(info.value.__cause__) and override.split("=")[1] in str(info.value.__cause__)


def _episodes(agent, lengths: list[int]) -> None:
    """Feed episodes of +1 per step with these lengths; next_obs = [t/10, 0, 0, 0]."""
    for length in lengths:
        for t in range(length):
            agent.observe(
                Transition(
                    obs=np.zeros((1, 4), np.float32),
                    action=np.array([t % 2]),
                    reward=np.ones(1, np.float32),
                    next_obs=np.array([[t / 10, 0, 0, 0]], np.float32),
                    terminated=np.array([t == length - 1]),
                    truncated=np.array([False]),
                )
            )


def test_agent_learns_the_preference_and_checkpoints_it() -> None:
    agent = make_agent("agent/preference=learned", "agent.preference.hidden=[8]")
    _episodes(agent, [5, 5, 20, 5, 5])  # only the 20-step episode is preferred
    assert agent.preferred is not None and len(agent.preferred) == 20
    metrics = agent.update(0)
    assert "losses/preference" in metrics and torch.isfinite(metrics["losses/preference"])
    assert bool(agent.preference.trained)
    # the classifier's gradient reaches it through the model optimiser
    before = [p.detach().clone() for p in agent.preference.parameters()]
    agent.update(1)
    after = list(agent.preference.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, after, strict=True))

    other = make_agent("agent/preference=learned", "agent.preference.hidden=[8]", seed=5)
    other.load_state_dict(agent.state_dict())
    assert torch.equal(other.preferred.obs, agent.preferred.obs)
    assert list(other.preferred.returns) == list(agent.preferred.returns)
    assert torch.equal(other.preference.baseline, agent.preference.baseline)
    torch.manual_seed(3)
    ma = agent.update(2)
    torch.manual_seed(3)
    mb = other.update(2)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_mpc_planner_scores_predicted_outcomes_with_the_learned_preference() -> None:
    agent = make_agent("agent/preference=learned", "agent.planner=mpc", "agent.horizon=2")
    _episodes(agent, [5, 5, 20])
    agent.update(0)
    g = agent.expected_free_energy(torch.zeros(3, 4))
    assert g.shape == (3, 2) and torch.isfinite(g).all()


def test_training_with_a_learned_preference_logs_its_loss(compose_deep, tmp_path) -> None:
    result = train(compose_deep("agent/preference=learned", "agent.preference.hidden=[16]"))
    scalars = read_scalars(result.run_dir)
    assert "losses/preference" in scalars
    assert all(math.isfinite(v) for _, v in scalars["losses/preference"])


def test_td_risk_is_minus_the_learned_log_preference_of_the_next_observation() -> None:
    agent = make_agent("agent/preference=learned", "agent.preference.temperature=2.0")
    _episodes(agent, [5, 5, 20, 5])
    agent.update(0)
    pref = agent.preference
    batch = agent.replay.sample(32, agent.n_step)
    _, metrics = agent._critic_losses(batch)

    def risk(o: torch.Tensor) -> torch.Tensor:
        ratio = (pref.log_ratio(agent.preprocess(o)) - pref.baseline).clamp(-5.0, 5.0)
        return -(batch["reward"][:, 0] / 2.0 + ratio).mean()

    with torch.no_grad():
        assert metrics["efe/risk"] == pytest.approx(risk(batch["next_obs"][:, 0]).item(), abs=1e-5)
        # the outcome is what the step produced, not where it started
        assert metrics["efe/risk"] != pytest.approx(risk(batch["obs"][:, 0]).item(), abs=1e-3)


def test_checkpoints_naming_the_old_reward_preference_path_still_resolve() -> None:
    from hydra.utils import get_class

    from daif.nets.preference import RewardPreference

    assert get_class("daif.nets.mlp.RewardPreference") is RewardPreference
