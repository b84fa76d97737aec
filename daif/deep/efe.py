"""The expected-free-energy target of the deep agent's critic, as pure functions.

The critic G(s, a) regresses on the n-step target of the first step of each replayed
sequence (s_0, a_0, o_1, …, s_L):

    target = Σ_{k≤m} γ^k g_k + γ^{m+1} (1 − terminated_m) V(s'_m),
    g_k    = w_r·risk_k + w_a·ambiguity_k − w_i·info_gain_k,
    V(s)   = Σ_a q(a|s) G_target(s, a),   q(a|s) = softmax(−β·G(s, ·)),

where m is the first step whose episode ended (terminated or truncated), else L − 1. A
time-limit truncation stops the sum but keeps the bootstrap; only termination zeroes it.

By linearity the sum splits into an observed part (risk needs only the outcomes in replay)
and an epistemic part (ambiguity and information gain need the world model); the two are
computed apart (:mod:`daif.deep.epistemic`) and added.

With continuous actions q(a|s) is an amortised actor instead of a softmax over G, and the
policy's own free energy enters: the actor minimises F[q] = E_q[G(s, a)] − α·H[q(·|s)],
whose minimiser over all densities is q ∝ exp(−G/α), the continuous form of
softmax(−β·G) with precision β = 1/α; accordingly V(s) = E_q[G(s, a) + α ln q(a|s)].
α is tuned so that H[q] stays near a target entropy (as in SAC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from daif import maths


def bootstrap_index(terminated: Tensor, truncated: Tensor) -> Tensor:
    """m, the last step an n-step target uses: the first step whose episode ended, else
    L − 1. ``terminated, truncated [B, L]`` bool → ``[B]`` long."""
    done = terminated | truncated
    length = done.shape[1]
    return torch.where(
        done.any(1),
        done.to(torch.uint8).argmax(1),  # argmax returns the first maximal index
        torch.full_like(done[:, 0], length - 1, dtype=torch.long),
    )


def n_step_weights(terminated: Tensor, truncated: Tensor, discount: float) -> Tensor:
    """w_k = γ^k while no step before k ended its episode, else 0.

    Step m = :func:`bootstrap_index` is the last one with weight.
    ``terminated, truncated [B, L]`` bool → ``[B, L]`` float32.
    """
    done = terminated | truncated
    length = done.shape[1]
    ended_before = torch.cat([torch.zeros_like(done[:, :1]), done[:, :-1]], 1).cumsum(1) > 0
    powers = discount ** torch.arange(length, device=done.device, dtype=torch.float32)
    return (~ended_before).float() * powers


def n_step_efe_target(
    g_step: Tensor,
    v_last: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    discount: float,
    weights: Tensor | None = None,
    last: Tensor | None = None,
) -> Tensor:
    """Σ_{k≤m} γ^k g_k + γ^{m+1} (1 − terminated_m) V(s'_m).

    Args:
        g_step: ``[B, L]`` per-step expected free energy g_k (or any part of it).
        v_last: ``[B]`` V(s'_m), the state value at the next state of step m.
        terminated, truncated: ``[B, L]`` bool.
        discount: γ ∈ [0, 1].
        weights, last: :func:`n_step_weights` ``[B, L]`` and :func:`bootstrap_index` ``[B]``
            of these flags, when the caller already has them.
    Returns:
        ``[B]`` targets.
    """
    if weights is None:
        weights = n_step_weights(terminated, truncated, discount)
    if last is None:
        last = bootstrap_index(terminated, truncated)
    ret = (g_step * weights.to(g_step.dtype)).sum(1)
    rows = torch.arange(last.shape[0], device=last.device)
    keep = 1.0 - terminated[rows, last].to(v_last.dtype)
    return ret + discount ** (last.to(v_last.dtype) + 1.0) * keep * v_last


def state_value(g_online: Tensor, g_target: Tensor, precision: float) -> Tensor:
    """V(s) = Σ_a q(a|s) G_target(s, a) with q = softmax(−β·G_online(s, ·)).

    The online critic picks the action distribution and the target critic scores it (the
    double estimator, which curbs the optimism of minimising over noise).
    ``[B, A], [B, A]`` → ``[B]``.
    """
    q = maths.softmax(-g_online, precision)
    return (q * g_target).sum(-1)


def critic_loss(g_heads: Tensor, target: Tensor, huber_delta: float) -> Tensor:
    """Σ_k Huber(G_k(s_0, a_0) − target), every head of the critic regressed on one target:
    ``[K, B], [B]`` → 0-d. A sum, not a mean: an encoder the critic trains gets every head's
    TD gradient (halving it slowed LunarLander; docs/notes/other_tasks.md)."""
    loss = F.huber_loss(g_heads[0], target, delta=huber_delta)
    for g in g_heads[1:]:
        loss = loss + F.huber_loss(g, target, delta=huber_delta)
    return loss


def soft_state_value(g_next: Tensor, log_prob_next: Tensor, temperature: Tensor) -> Tensor:
    """V(s') = E_q[G(s', a') + α ln q(a'|s')], one sample a' ~ q(·|s'): ``[B], [B], 0-d → [B]``."""
    return g_next + temperature * log_prob_next


def policy_free_energy(g_pi: Tensor, log_prob: Tensor, temperature: Tensor) -> Tensor:
    """The actor's loss F[q] = E_q[G(s, a) + α ln q(a|s)], a ~ q reparameterised:
    ``[B], [B], 0-d → 0-d``."""
    return (g_pi + temperature * log_prob).mean()


def temperature_loss(log_temperature: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """−ln α·(ln q(a|s) + H̄), whose gradient raises α while H[q] < H̄ and lowers it
    above: ``0-d, [B] → 0-d``."""
    return -(log_temperature * (log_prob.detach() + target_entropy)).mean()
