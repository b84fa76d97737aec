"""0/1 observation flags (``agent.binary_obs``): a Bernoulli likelihood whose entropy, the
ambiguity, stays in [0, ln 2], against hand computations; refusals of bad flag lists."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from daif import maths
from daif.build import make_agent
from daif.protocol import AgentContext, Transition
from daif.validation import ConfigError

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TINY = [
    "agent.latent_dim=4",
    "agent.batch_size=16",
    "agent.buffer_size=512",
    "agent.learning_starts=16",
    "agent.encoder.hidden=[32]",
    "agent.decoder.hidden=[32]",
    "agent.transition.hidden=[8]",
    "agent.outcome.hidden=[8]",
    "agent.critic.hidden=[8]",
    "agent.epistemic_estimate=exact",
]
# entry 0 is a position in [−2, 2]; entries 1 and 2 are contact flags
SPACE = gym.spaces.Box(np.array([-2.0, 0.0, 0.0]), np.array([2.0, 1.0, 1.0]), dtype=np.float32)


def build(*overrides: str, space: gym.spaces.Box = SPACE, agent: str = "daif"):
    tiny = TINY if agent != "daif_conv" else []
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"agent={agent}", *tiny, *overrides])
    torch.manual_seed(0)
    return make_agent(cfg.agent, AgentContext(space, gym.spaces.Discrete(2)))


def test_bernoulli_log_prob_and_entropy_by_hand() -> None:
    logits = torch.tensor([0.0, math.log(3.0)])  # p = 1/2 and 3/4
    # ln Bern(y=[0, 1]) = ln(1/2) + ln(3/4)
    lp = maths.bernoulli_log_prob(torch.tensor([0.0, 1.0]), logits)
    assert lp.item() == pytest.approx(math.log(0.5) + math.log(0.75), abs=1e-6)
    h_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert maths.bernoulli_entropy(logits).item() == pytest.approx(math.log(2) + h_34, abs=1e-6)
    # certainty either way is no entropy, and nothing is ever more uncertain than a fair coin
    extreme = maths.bernoulli_entropy(torch.tensor([[40.0], [-40.0]]))
    assert torch.allclose(extreme, torch.zeros(2), atol=1e-6)
    grid = maths.bernoulli_entropy(torch.linspace(-20, 20, 401).unsqueeze(-1))
    assert grid.min() >= 0 and grid.max() <= math.log(2) + 1e-7
    # bf16 logits are evaluated in float32 (the terms cancel at large |l|)
    h_big = maths.bernoulli_entropy(torch.tensor([[8.0], [-8.0]]).bfloat16())
    assert h_big.dtype == torch.float32
    assert torch.allclose(h_big, torch.full((2,), 9 * math.exp(-8)), rtol=1e-3)  # ≈ e^−l (1 + l)


def test_flags_get_a_bernoulli_and_the_other_entries_a_gaussian() -> None:
    model = build("agent.binary_obs=[1,2]").world_model
    mean = torch.tensor([[0.3, 0.0, math.log(3.0)]])
    std = torch.tensor([[0.5, 7.0, 0.01]])  # a flag's std is not used
    target = torch.tensor([[0.2, -1.0, 1.0]])  # flags off and on, in scaled units
    gauss_lp = -0.5 * ((0.1 / 0.5) ** 2 + 2 * math.log(0.5) + math.log(2 * math.pi))
    expected_lp = gauss_lp + math.log(0.5) + math.log(0.75)
    assert model.observation_log_prob(target, mean, std).item() == pytest.approx(expected_lp)
    gauss_h = 0.5 * (1 + math.log(2 * math.pi)) + math.log(0.5)
    h_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected_h = gauss_h + math.log(2) + h_34
    assert model.observation_entropy(mean, std).item() == pytest.approx(expected_h, abs=1e-6)
    # the picture shows a flag's expectation 2p − 1 in scaled units: 0 and 1/2
    shown = model.observation_mean(mean)
    assert torch.allclose(shown, torch.tensor([[0.3, 0.0, 0.5]]), atol=1e-6)


class FixedDecoder(torch.nn.Module):
    """p(o|s) that ignores s: the same (mean, std) for every row."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.expand(z.shape[0], -1), self.std.expand(z.shape[0], -1)


@pytest.mark.parametrize("agent", ["daif", "daif_rssm"])
def test_the_ambiguity_of_both_world_models_counts_a_flag_as_a_bernoulli(agent: str) -> None:
    model = build("agent.binary_obs=[1,2]", "agent.model_update_every=1", agent=agent)
    model = model.world_model
    # flag 1 is a fair coin, flag 2 is on with p = 3/4; their stds (7 and 0.01) are not used
    mean, std = torch.tensor([0.3, 0.0, math.log(3.0)]), torch.tensor([0.5, 7.0, 0.01])
    model.decoder = FixedDecoder(mean, std)
    h_34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = 0.5 * (1 + math.log(2 * math.pi)) + math.log(0.5) + math.log(2) + h_34
    with torch.no_grad():
        if agent == "daif":
            z = torch.randn(3, model.feature_dim)
            ambiguity, _ = model.epistemic_terms(z, torch.tensor([0, 1, 0]))
        else:
            ambiguity, _ = model.epistemic_terms(torch.randn(3, model.rssm.deter_dim))
    assert torch.allclose(ambiguity, torch.full((3,), expected), atol=1e-5)


def test_without_flags_the_likelihood_is_the_plain_gaussian() -> None:
    model = build().world_model
    mean, std, target = torch.randn(5, 3), torch.rand(5, 3) + 0.1, torch.randn(5, 3)
    assert torch.equal(
        model.observation_log_prob(target, mean, std), maths.gaussian_log_prob(target, mean, std)
    )
    assert torch.equal(model.observation_entropy(mean, std), maths.gaussian_entropy(std))


def test_a_learned_flag_is_predicted_with_little_ambiguity() -> None:
    """A flag that is set exactly when the position is positive: after training, the model
    reconstructs it and its ambiguity is far below a fair coin's ln 2."""
    agent = build("agent.binary_obs=[1]", "agent.model_lr=0.003")
    rng = np.random.default_rng(0)

    def observation(position: float) -> np.ndarray:
        return np.array([[position, position > 0, 0.0]], np.float32)

    for i in range(256):  # a world that stands still: the prior can follow the posterior
        position = next_position = rng.uniform(-2, 2)
        agent.observe(
            Transition(
                obs=observation(position),
                action=np.array([i % 2]),
                reward=np.zeros(1, np.float32),
                next_obs=observation(next_position),
                terminated=np.array([False]),
                truncated=np.array([i % 16 == 15]),
            )
        )
    for step in range(400):
        agent.update(step)
    model = agent.world_model
    probe = torch.tensor([[-1.5, 0.0, 0.0], [1.5, 1.0, 0.0]])
    with torch.no_grad():
        mean, _ = model.decoder(model.encoder(model.preprocess(probe))[0])
        flag_entropy = maths.bernoulli_entropy(mean[:, 1:2])
    assert (mean[0, 1] < 0) and (mean[1, 1] > 0)  # off at −1.5, on at +1.5
    assert flag_entropy.max().item() < 0.3 * math.log(2)


def test_the_recurrent_model_keeps_a_flags_target_at_plus_minus_one() -> None:
    model = build("agent.binary_obs=[2]", "agent.model_update_every=1", agent="daif_rssm")
    model = model.world_model
    x = torch.tensor([[2.0, -1.0, 1.0], [-3.0, 1.0, -1.0]])
    target = model.target(x)
    assert torch.allclose(target[:, :2], maths.symlog(x[:, :2]))
    assert torch.equal(target[:, 2], x[:, 2])


@pytest.mark.parametrize(
    ("override", "space", "message"),
    [
        (
            "agent.binary_obs=[3]",
            SPACE,
            "agent.binary_obs=[3]: entry 3 is out of range; the observation has 3",
        ),
        ("agent.binary_obs=[0]", SPACE, "agent.binary_obs=[0]: entry 0 is bounded [-2, 2]"),
        ("agent.binary_obs=[-1]", SPACE, "agent.binary_obs[0]: must be >= 0, got -1"),
        ("agent.binary_obs=legs", SPACE, "agent.binary_obs: must be a list"),
        ("agent.binary_obs=[2,1,2]", SPACE, "agent.binary_obs=[2, 1, 2]: an entry is listed twice"),
        ("agent.binary_obs=[2,0]", SPACE, "agent.binary_obs=[2, 0]: entry 0 is bounded [-2, 2]"),
        (
            "agent.binary_obs=[0]",
            gym.spaces.Box(0, 255, (2, 64, 64), np.uint8),
            "agent.binary_obs=[0]: flags are entries of a vector observation",
        ),
    ],
)
def test_bad_flag_lists_are_refused_naming_the_value(
    override: str, space: gym.spaces.Box, message: str
) -> None:
    agent = "daif_conv" if space.dtype == np.uint8 else "daif"
    with pytest.raises(ConfigError) as info:
        build(override, space=space, agent=agent)
    assert message in str(info.value) and "\n" not in str(info.value)
