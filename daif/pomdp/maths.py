"""Discrete-model helpers that ``daif.maths`` does not need to know about.

Generic quantities (softmax, entropies, KLs, ``log_stable``) come from :mod:`daif.maths`;
this module only holds the operations specific to tabular generative models: outer
products of factorised beliefs, normalising Dirichlet counts and the Dirichlet
"novelty" weights used for parameter information gain.

Shapes: ``b`` is the batch of agents, ``S_f`` the size of state factor ``f``,
``SJ = Π_f S_f`` the size of the joint state space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from daif.maths import EPS

__all__ = [
    "joint_from_marginals",
    "marginals_from_joint",
    "norm_dist",
    "onehot",
    "wnorm",
    "wnorm_exact",
]


def joint_from_marginals(qs: list[Tensor]) -> Tensor:
    """Mean-field joint q(s_1, …, s_F) = Π_f q(s_f), flattened (factor 0 varies slowest).

    Args:
        qs: F tensors ``[..., S_f]`` (same leading shape).
    Returns:
        ``[..., SJ]`` with ``SJ = Π_f S_f``.
    """
    joint = qs[0]
    for q in qs[1:]:
        joint = (joint.unsqueeze(-1) * q.unsqueeze(-2)).flatten(-2)
    return joint


def marginals_from_joint(joint: Tensor, num_states: list[int]) -> list[Tensor]:
    """Marginals q(s_f) = Σ_{s_¬f} q(s) of a flattened joint.

    Args:
        joint: ``[..., SJ]``.
        num_states: the factor sizes ``[S_1, …, S_F]`` with ``Π S_f = SJ``.
    Returns:
        F tensors ``[..., S_f]``.
    """
    if len(num_states) == 1:
        return [joint]
    lead = joint.shape[:-1]
    full = joint.reshape(*lead, *num_states)
    nd = len(lead)
    out = []
    for f in range(len(num_states)):
        dims = [nd + g for g in range(len(num_states)) if g != f]
        out.append(full.sum(dim=dims))
    return out


def norm_dist(counts: Tensor, dim: int = 0) -> Tensor:
    """Expected categorical of Dirichlet counts: a_i / Σ_j a_j along ``dim``.

    Args:
        counts: non-negative concentration parameters, any shape.
    """
    return counts / counts.sum(dim=dim, keepdim=True)


def wnorm(counts: Tensor, dim: int = 0) -> Tensor:
    """Dirichlet novelty weights W = 1/Σ_j a_j − 1/a_i (SPM's ``spm_wnorm``).

    For a Dirichlet with counts a, −W_i is the expected reduction in uncertainty about
    the parameter a_i per unit of new evidence; the parameter information gain of a
    predicted outcome o from state s is −q(o)·W q(s) ≥ 0. Counts are floored by
    ``EPS`` so zero counts give large (finite) novelty.

    Args:
        counts: ``[..., O, ...]`` with ``dim`` the outcome axis.
    Returns:
        same shape, ≤ 0.
    """
    a = counts + EPS
    return 1.0 / a.sum(dim=dim, keepdim=True) - 1.0 / a


def wnorm_exact(counts: Tensor, dim: int = 0) -> Tensor:
    """Exact Dirichlet novelty weights (pymdp 1.0's default): minus the information gain
    about the parameters from one outcome of each category.

    For θ ~ Dir(a) along ``dim`` with a₀ = Σ_j a_j, observing category i once turns the
    prior into Dir(a + e_i), with p(θ | i) = θ_i p(θ) / p(i) and p(i) = a_i / a₀. The
    information gain is

        KL[Dir(a + e_i) ‖ Dir(a)] = E_{Dir(a+e_i)}[ln θ_i] − ln(a_i / a₀)
                                  = ψ(a_i + 1) − ψ(a₀ + 1) + ln a₀ − ln a_i  (≥ 0),

    and W_i is its negative, so −q(o)·W q(s) is the expected information gain as with
    :func:`wnorm`. For large counts ψ(x + 1) ≈ ln x + 1/(2x) gives
    W ≈ (1/a₀ − 1/a_i) / 2, half SPM's ``spm_wnorm`` approximation. Counts are floored
    at ``EPS`` (as pymdp clips at machine epsilon).

    Args:
        counts: ``[..., O, ...]`` non-negative concentrations, ``dim`` the outcome axis.
    Returns:
        same shape, ≤ 0.
    """
    a = counts.clamp(min=EPS)
    a0 = a.sum(dim=dim, keepdim=True)
    gain = torch.digamma(a + 1.0) - torch.digamma(a0 + 1.0) + torch.log(a0) - torch.log(a)
    return -gain


def onehot(index: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows ``[..., n]`` for integer ``index`` ``[...]``."""
    return torch.nn.functional.one_hot(index.long(), n).to(dtype)
