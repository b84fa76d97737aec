"""Planning continuous actions by the cross-entropy method (CEM) over expected free energy.

The alternative to the amortised actor (``agent.planner=cem``): at the posterior mean s_0
of the current observation, search over action sequences π = a_{0:H−1} ∈ [−1, 1]^{H×A}
for the one of least expected free energy under the world model,

    G(π) = Σ_{k<H} c_k g_k + c_H · max_j G_j(s_H, ā_H),
    g_k  = w_r·risk_k + w_a·(ambiguity_k − ā) − w_i·info_gain_k,
    c_k  = γ^k Π_{i<k} (1 − p_i),

where s_{k+1} = (1/K) Σ_m μ_m(s_k, a_k) is the transition ensemble's mean prediction,
risk_k = −ln P̃(r̂_k, p_k) of the predicted reward r̂_k = symexp(outcome mean) and
termination probability p_k, ambiguity and information gain are those of
:meth:`daif.deep.world_model.WorldModel.epistemic_terms`, the weights and ā those of the
critic's target (:mod:`daif.deep.epistemic`), and the tail is the critic's pessimistic
(largest over heads) G at the actor's mean action ā_H = tanh(μ(s_H)), as in the critic's
own target. H ≥ 1; the actor minimises the critic's G(s_0, a_0) instead, with no model.

CEM (:func:`cross_entropy_method`) samples N sequences from a diagonal Gaussian, keeps the
E of least G, refits the Gaussian to them and repeats; it starts from the actor's mean
rollout, which stays among the candidates, so the plan is never worse than the actor's
by the model's own estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from daif import maths
from daif.deep.epistemic import EpistemicSource
from daif.deep.world_model import WorldModel

INIT_STD = 0.5
"""σ of the first CEM distribution around the actor's plan, in [−1, 1] action units: wide
enough to reach the whole box within 2σ from its centre."""


def cross_entropy_method(
    cost: Callable[[Tensor], Tensor],
    mean: Tensor,
    std: Tensor,
    *,
    candidates: int,
    elites: int,
    iterations: int,
    low: float = -1.0,
    high: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Minimise ``cost`` over the box [low, high]^D by the cross-entropy method.

    Each iteration draws x_n = clamp(μ + σ·ε_n, low, high), n = 1..N, ε_n ~ N(0, I),
    replacing x_1 by μ itself (the incumbent stays a candidate), and refits μ, σ to the
    mean and (biased) std of the E candidates of least cost. A minimiser outside the box is
    found at its clamp, since clamped samples pile up on the boundary.

    Args:
        cost: ``x[N, B, *D] → [N, B]``, the cost of N candidates for each of B problems.
        mean, std: ``[B, *D]``, the initial sampling distribution.
        candidates: N ≥ 1; elites: 1 ≤ E ≤ N; iterations: ≥ 1.
    Returns:
        ``(mean[B, *D], std[B, *D])`` of the last elites.
    """
    if not 1 <= elites <= candidates or iterations < 1:
        raise ValueError(
            f"need 1 <= elites <= candidates and iterations >= 1; got elites={elites}, "
            f"candidates={candidates}, iterations={iterations}"
        )
    mean = mean.clamp(low, high)
    ones = (1,) * (mean.dim() - 1)
    for _ in range(iterations):
        noise = torch.randn((candidates, *mean.shape), device=mean.device, dtype=mean.dtype)
        x = (mean + std * noise).clamp(low, high)
        x[0] = mean
        g = cost(x)  # [N, B]
        best = g.topk(elites, dim=0, largest=False).indices  # [E, B]
        index = best.view(elites, -1, *ones).expand(elites, *mean.shape)
        elite = x.gather(0, index)  # [E, B, *D]
        mean, std = elite.mean(0), elite.std(0, correction=0)
    return mean, std


class CEMPlanner:
    """Acts by CEM over action sequences of length H, scored by their expected free energy
    (module docstring) with the agent's own modules; actions in [−1, 1]."""

    def __init__(
        self,
        world_model: WorldModel,
        critic: nn.Module,
        actor: nn.Module,
        preference: nn.Module,
        epistemic: EpistemicSource,
        *,
        horizon: int,
        candidates: int,
        elites: int,
        iterations: int,
        discount: float,
        risk_weight: float,
    ) -> None:
        self.world_model, self.critic, self.actor = world_model, critic, actor
        self.preference, self.epistemic = preference, epistemic
        self.horizon, self.candidates = horizon, candidates
        self.elites, self.iterations = elites, iterations
        self.discount, self.risk_weight = discount, risk_weight

    def _next_latent(self, z: Tensor, action: Tensor) -> Tensor:
        """The ensemble's mean prediction of s': ``[M, Z], [M, A] → [M, Z]``."""
        return self.world_model.transition(z, action)[0].mean(0)

    def _tail(self, z: Tensor) -> Tensor:
        """max_j G_j(s, tanh μ(s)), the critic's pessimistic G of the actor's mean action:
        ``[M, Z] → [M]``."""
        return self.critic(z, torch.tanh(self.actor(z)[0])).amax(0)

    def expected_free_energy(self, z: Tensor, plans: Tensor) -> Tensor:
        """G(π) of action sequences ``plans[N, B, H, A]`` from latents ``z[B, Z]`` → ``[N, B]``."""
        n, b, horizon, num_actions = plans.shape
        s = z.unsqueeze(0).expand(n, -1, -1).reshape(n * b, -1)
        total = torch.zeros(n * b, device=z.device)
        weight = torch.ones_like(total)  # c_k = γ^k Π (1 − p_i)
        for k in range(horizon):
            a = plans[:, :, k].reshape(n * b, num_actions)
            reward, end_logit = self.world_model.outcome(s, a)
            p_end = torch.sigmoid(end_logit)
            risk = -self.preference(maths.symexp(reward), p_end)
            ambiguity, info_gain = self.world_model.epistemic_terms(s, a)
            g = self.risk_weight * risk + self.epistemic.epistemic_value(ambiguity, info_gain)
            total = total + weight * g.float()
            weight = weight * self.discount * (1.0 - p_end)
            s = self._next_latent(s, a)
        return (total + weight * self._tail(s)).view(n, b)

    def actor_plan(self, z: Tensor) -> Tensor:
        """The actor's mean rollout a_k = tanh μ(s_k), s_{k+1} the mean prediction:
        ``[B, Z] → [B, H, A]``."""
        steps = []
        for _ in range(self.horizon):
            a = torch.tanh(self.actor(z)[0])
            steps.append(a)
            z = self._next_latent(z, a)
        return torch.stack(steps, 1)

    @torch.no_grad()
    def act(self, z: Tensor, deterministic: bool) -> Tensor:
        """The first action of the CEM plan at latents ``z[B, Z]`` → ``[B, A]`` in [−1, 1]:
        the final mean when ``deterministic``, else a sample of the final Gaussian."""
        start = self.actor_plan(z)
        mean, std = cross_entropy_method(
            lambda plans: self.expected_free_energy(z, plans),
            start,
            torch.full_like(start, INIT_STD),
            candidates=self.candidates,
            elites=self.elites,
            iterations=self.iterations,
        )
        if deterministic:
            return mean[:, 0]
        return (mean[:, 0] + std[:, 0] * torch.randn_like(std[:, 0])).clamp(-1.0, 1.0)
