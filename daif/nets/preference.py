"""Prior preferences ln P̃(o) of the deep agent: fixed, or learned from its best episodes.

* :class:`RewardPreference` — ln P̃(r, d) = r / T + c·d: the reward is an outcome the
  agent prefers with a Boltzmann density, termination an outcome with log-odds c.
* :class:`LearnedPreference` — the same, plus a learned preference over observed
  outcomes: w·ℓ_φ(o), where ℓ_φ is trained to tell the outcomes of the agent's best
  recent episodes from the outcomes it usually sees (a density-ratio classifier).

Both are called as ``preference(reward, termination_prob, obs)`` and return
E_q[ln P̃] per outcome; the risk of an observed or predicted outcome is its negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daif.config import ConfigError, check_int, check_positive, check_range
from daif.nets.mlp import mlp


class RewardPreference(nn.Module):
    """Prior preferences over outcomes: ln P̃(r, d) = r / T + c·d (up to a constant).

    The reward is an outcome the agent prefers with a Boltzmann density,
    P̃(r) ∝ exp(r / T) (temperature T > 0: lower T = stronger preference), and
    termination d ∈ {0, 1} is an outcome with log-odds c (c < 0: the agent prefers
    episodes not to end; c > 0: it prefers reaching a terminal state). The additive
    constant is fixed so that the outcome (r = 0, d = 0) has ln P̃ = 0: in episodic
    tasks a constant per-step cost would otherwise act as a bonus for dying (or living).

    ``obs_shape`` is accepted (the agent passes it to every preference) and unused.
    """

    #: whether the agent must feed this preference outcomes of its best episodes
    learns_from_episodes = False

    def __init__(
        self,
        temperature: float = 1.0,
        termination: float = 0.0,
        obs_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        temperature = check_positive("agent.preference.temperature", temperature)
        termination = check_range("agent.preference.termination", termination, -math.inf, math.inf)
        self.register_buffer("log_temperature", torch.tensor(math.log(temperature)))
        self.register_buffer("termination", torch.tensor(float(termination)))

    def forward(
        self, reward: Tensor, termination_prob: Tensor, obs: Tensor | None = None
    ) -> Tensor:
        """E_q[ln P̃(r, d)] for q(r) with mean ``reward`` and q(d = 1) = ``termination_prob``.

        Linear in both, so an observed outcome (a point mass) is the special case
        ``termination_prob ∈ {0, 1}``. Shapes broadcast; returns the broadcast shape.
        ``obs`` is ignored.
        """
        return (
            reward.float() * torch.exp(-self.log_temperature) + self.termination * termination_prob
        )


class LearnedPreference(RewardPreference):
    """ln P̃(o, r, d) = r / T + c·d + w·clip(ℓ_φ(o) − b, −m, m).

    ℓ_φ is a classifier logit trained by logistic regression to separate *preferred*
    outcomes (next observations of the agent's best recent episodes, see
    :class:`daif.replay.PreferredOutcomes`) from *experienced* ones (drawn from the
    replay buffer), in equal numbers. Its optimum is the log density ratio

        ℓ*(o) = ln p_preferred(o) − ln p_experienced(o),

    so exp(w·ℓ) tilts the outcomes the agent already produces towards those of its best
    episodes — a prior preference learned from its own successes, which turns a sparse
    reward into a dense one once the task has been solved a few times. b is a running
    mean of ℓ over experienced outcomes: centring keeps the average step's preference at
    0, so that the term is no per-step bonus for living or dying (as for the reward, see
    :class:`RewardPreference`). Until the classifier has taken a step (no preferred
    episode yet), only the reward and termination preferences count.

    Args:
        obs_shape: shape of one (scaled) observation; the classifier is an MLP on its
            flattened entries.
        temperature, termination: as :class:`RewardPreference`.
        weight: w ≥ 0, nats of preference per unit of log density ratio.
        max_log_ratio: m > 0, bound on the centred log ratio (a few preferred outcomes
            must not dominate the TD target).
        top_fraction, window: an episode is preferred when its return reaches the
            (1 − top_fraction) quantile of the last ``window`` returns.
        capacity: preferred outcomes kept (oldest dropped first).
        hidden, activation: the classifier's MLP.
        baseline_rate: step size of the running mean b.
    """

    learns_from_episodes = True

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        temperature: float = 1.0,
        termination: float = 0.0,
        weight: float = 1.0,
        max_log_ratio: float = 5.0,
        top_fraction: float = 0.1,
        window: int = 100,
        capacity: int = 20_000,
        hidden: Sequence[int] = (64, 64),
        activation: str = "elu",
        baseline_rate: float = 0.01,
    ) -> None:
        super().__init__(temperature, termination)
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.weight = check_positive("agent.preference.weight", weight, allow_zero=True)
        self.max_log_ratio = check_positive("agent.preference.max_log_ratio", max_log_ratio)
        self.top_fraction = check_positive("agent.preference.top_fraction", top_fraction)
        if self.top_fraction > 1.0:
            raise ConfigError(
                f"agent.preference.top_fraction: must be in (0, 1], got {top_fraction}"
            )
        self.window = check_int("agent.preference.window", window, minimum=2)
        self.capacity = check_int("agent.preference.capacity", capacity, minimum=1)
        self.baseline_rate = check_range(
            "agent.preference.baseline_rate", baseline_rate, 0.0, 1.0, inclusive=False
        )
        self.net = mlp(math.prod(self.obs_shape), hidden, 1, activation)
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("trained", torch.zeros((), dtype=torch.bool))

    def log_ratio(self, obs: Tensor) -> Tensor:
        """ℓ_φ(o), uncentred and unbounded: ``obs[..., *obs_shape]`` → ``[...]``."""
        flat = obs.flatten(start_dim=obs.dim() - len(self.obs_shape))
        return self.net(flat.float()).squeeze(-1).float()

    def forward(
        self, reward: Tensor, termination_prob: Tensor, obs: Tensor | None = None
    ) -> Tensor:
        """E_q[ln P̃] of outcomes ``(reward[...], termination_prob[...], obs[..., *obs_shape])``."""
        base = super().forward(reward, termination_prob)
        if obs is None:
            raise ValueError("LearnedPreference needs the outcome observations (obs=None)")
        if self.weight == 0.0:
            return base
        centred = (self.log_ratio(obs) - self.baseline).clamp(
            -self.max_log_ratio, self.max_log_ratio
        )
        # × trained rather than an `if`: no host sync on a GPU
        return base + self.weight * self.trained.float() * centred

    def loss(self, preferred: Tensor, experienced: Tensor) -> tuple[Tensor, Tensor]:
        """Logistic loss of ℓ_φ, preferred outcomes labelled 1 and experienced ones 0.

        Args:
            preferred: ``[B, *obs_shape]`` outcomes of preferred episodes.
            experienced: ``[B', *obs_shape]`` outcomes drawn from replay.
        Returns:
            ``(loss, mean ℓ over experienced)``; pass the latter to :meth:`track_baseline`
            after the optimiser step.
        """
        pos, neg = self.log_ratio(preferred), self.log_ratio(experienced)
        loss = F.binary_cross_entropy_with_logits(
            pos, torch.ones_like(pos)
        ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        return loss, neg.detach().mean()

    @torch.no_grad()
    def track_baseline(self, mean_experienced: Tensor) -> None:
        """b ← b + rate·(mean − b) (b ← mean on the first call); marks ℓ as trained."""
        mean = mean_experienced.float()
        self.baseline.copy_(
            torch.where(self.trained, self.baseline.lerp(mean, self.baseline_rate), mean)
        )
        self.trained.fill_(True)


__all__ = ["LearnedPreference", "RewardPreference"]
