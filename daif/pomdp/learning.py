"""Dirichlet learning of A, B and D, batched, with a learning rate and forgetting.

Each update is the conjugate Dirichlet posterior of one observation, scaled by a
learning rate η, after the old counts decay by a forgetting factor ω ∈ (0, 1]
(ω = 1 is no forgetting, pymdp's behaviour):

    pA_m ← ω pA_m + η · (o_m ⊗ q(s_1) ⊗ … ⊗ q(s_F)) ⊙ [A_m > 0]
    pB_f[:, :, u] ← ω pB_f[:, :, u] + η · (q(s_f) ⊗ q(s_f,prev)) ⊙ [B_f[:, :, u] > 0]
        (with B_dependencies: q(s_f) ⊗ Π_{d ∈ deps} q(s_d,prev) over [S_f, *S_deps])
    pD_f ← ω pD_f + η · q(s_f,0) ⊙ [pD_f > 0]

Forgetting applies to the slice being updated only for B (the other actions' counts
are untouched), so unvisited transitions keep their prior counts. Entries whose
probability is exactly zero receive no counts (structural zeros stay zero).
"""

from __future__ import annotations

from torch import Tensor

from daif.pomdp.maths import joint_from_marginals, onehot

__all__ = [
    "expected_parameters",
    "update_obs_likelihood_dirichlet",
    "update_state_likelihood_dirichlet",
    "update_state_prior_dirichlet",
]


def _check_rates(lr: float, fr: float, name: str) -> None:
    if lr < 0:
        raise ValueError(f"lr_{name} must be >= 0; got {lr}")
    if not 0.0 < fr <= 1.0:
        raise ValueError(f"fr_{name} (forgetting factor) must be in (0, 1]; got {fr}")


def update_obs_likelihood_dirichlet(
    pA: list[Tensor],
    A: list[Tensor],
    obs: Tensor,
    qs: list[Tensor],
    lr: float = 1.0,
    fr: float = 1.0,
    modalities: list[int] | None = None,
    mask: Tensor | None = None,
) -> list[Tensor]:
    """Posterior counts over A after observing ``obs`` in belief ``qs``.

    Args:
        pA: M tensors ``[b, O_m, S_1..S_F]`` (or a shared ``[1, …]``).
        A: the current likelihood (same shapes), for the structural-zero mask.
        obs: ``[b, M]`` observation indices.
        qs: F tensors ``[b, S_f]``.
        modalities: which to update (default all).
        mask: ``[b, M]`` bool, False where a modality was not observed (no counts added
            for it in that row), or None.
    Returns:
        new counts ``[b, O_m, S_1..S_F]``.
    """
    _check_rates(lr, fr, "pA")
    joint = joint_from_marginals(qs)  # [b, SJ]
    out = list(pA)
    mods = range(len(pA)) if modalities is None else modalities
    for m in mods:
        p = pA[m]
        o = onehot(obs[:, m], p.shape[1], joint.dtype)  # [b, O]
        if mask is not None:
            o = o * mask[:, m : m + 1]
        dfda = (o.unsqueeze(-1) * joint.unsqueeze(1)).reshape(joint.shape[0], *p.shape[1:])
        out[m] = fr * p + lr * dfda * (A[m] > 0)
    return out


def update_state_likelihood_dirichlet(
    pB: list[Tensor],
    B: list[Tensor],
    actions: Tensor,
    qs: list[Tensor],
    qs_prev: list[Tensor],
    lr: float = 1.0,
    fr: float = 1.0,
    factors: list[int] | None = None,
    B_dependencies: list[list[int]] | None = None,
) -> list[Tensor]:
    """Posterior counts over B after moving from ``qs_prev`` to ``qs`` under ``actions``.

    pB_f[s', s_deps, u_f] ← ω pB_f + η q(s'_f) Π_{d∈deps} q_prev(s_d) [u = u_f] where
    B_f > 0 (ω only on the taken action's slice).

    Args:
        pB, B: F tensors ``[b, S_f, *S_deps, U_f]`` (or shared ``[1, …]``; S_deps = S_f
            without dependencies).
        actions: ``[b, F]`` the actions taken.
        qs, qs_prev: F tensors ``[b, S_f]`` beliefs after and before the move.
        B_dependencies: per factor, the factors its transition depends on (default
            ``[f]``).
    Returns:
        new counts, the shapes of ``pB``.
    """
    _check_rates(lr, fr, "pB")
    out = list(pB)
    facs = range(len(pB)) if factors is None else factors
    for f in facs:
        p = pB[f]
        deps = [f] if B_dependencies is None else B_dependencies[f]
        b = qs[f].shape[0]
        u = onehot(actions[:, f], p.shape[-1], qs[f].dtype)  # [b, U]
        u = u.reshape(b, *([1] * (p.ndim - 2)), -1)  # [b, 1, …, 1, U]
        prev = joint_from_marginals([qs_prev[d] for d in deps])  # [b, Π S_deps]
        cross = (qs[f].unsqueeze(-1) * prev.unsqueeze(-2)).reshape(b, *p.shape[1:-1])
        dfdb = cross.unsqueeze(-1) * u * (B[f] > 0)
        decay = 1.0 - (1.0 - fr) * u  # ω on the taken action's slice
        out[f] = p * decay + lr * dfdb
    return out


def update_state_prior_dirichlet(
    pD: list[Tensor],
    qs: list[Tensor],
    lr: float = 1.0,
    fr: float = 1.0,
    factors: list[int] | None = None,
) -> list[Tensor]:
    """Posterior counts over D given the belief ``qs`` about the initial state.

    Args:
        pD: F tensors ``[b, S_f]`` (or ``[1, S_f]``); qs: F tensors ``[b, S_f]``.
    Returns:
        new counts ``[b, S_f]``.
    """
    _check_rates(lr, fr, "pD")
    out = list(pD)
    facs = range(len(pD)) if factors is None else factors
    for f in facs:
        p = pD[f]
        out[f] = fr * p + lr * qs[f] * (p > 0)
    return out


def expected_parameters(counts: list[Tensor]) -> list[Tensor]:
    """E[Dir(a)] = a / Σ a over the outcome axis (dim 1; dim 0 is the batch)."""
    return [c / c.sum(1, keepdim=True) for c in counts]
