"""Prior preferences ln P̃(o) of the deep agent over the outcomes it observes.

A preference is called as ``preference(reward, termination_prob)`` and returns E_q[ln P̃]
per outcome; the risk of an observed or predicted outcome is its negative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from daif.validation import check_positive, check_range


class RewardPreference(nn.Module):
    """Prior preferences over outcomes: ln P̃(r, d) = r / T + c·d (up to a constant).

    The reward is an outcome the agent prefers with a Boltzmann density,
    P̃(r) ∝ exp(r / T) (temperature T > 0: lower T = stronger preference), and
    termination d ∈ {0, 1} is an outcome with log-odds c (c < 0: the agent prefers
    episodes not to end; c > 0: it prefers reaching a terminal state). The additive
    constant is fixed so that the outcome (r = 0, d = 0) has ln P̃ = 0: in episodic
    tasks a constant per-step cost would otherwise act as a bonus for dying (or living).
    """

    def __init__(self, temperature: float = 1.0, termination: float = 0.0) -> None:
        super().__init__()
        temperature = check_positive("agent.preference.temperature", temperature)
        termination = check_range("agent.preference.termination", termination, -math.inf, math.inf)
        self.register_buffer("log_temperature", torch.tensor(math.log(temperature)))
        self.register_buffer("termination", torch.tensor(float(termination)))

    def forward(self, reward: Tensor, termination_prob: Tensor) -> Tensor:
        """E_q[ln P̃(r, d)] for q(r) with mean ``reward`` and q(d = 1) = ``termination_prob``.

        Linear in both, so an observed outcome (a point mass) is the special case
        ``termination_prob ∈ {0, 1}``. Shapes broadcast; returns the broadcast shape.
        """
        return (
            reward.float() * torch.exp(-self.log_temperature) + self.termination * termination_prob
        )
