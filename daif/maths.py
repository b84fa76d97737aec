"""The mathematics of free energy, written once.

Both the deep agent (``daif.deep``) and the discrete planner (``daif.pomdp``) import
from here, so a KL, an entropy or an expected-free-energy term has exactly one
implementation in the code base, and every function here is used by one of them.

Conventions
-----------
* Categorical distributions are probability tensors whose **last** dimension (or the
  dimension given by ``dim``) indexes outcomes.
* Diagonal Gaussians are given by a mean and a *standard deviation* of equal shape;
  the event dimension is the last one and densities factorise over it.
* Independent Bernoulli variables are given by their logits l, p = σ(l).
* Every function is pure and works on arbitrary leading batch dimensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-16
"""Floor used inside logarithms; matches the ``log_stable`` floor of pymdp/SPM."""

LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# Elementary numerics
# ---------------------------------------------------------------------------
def log_stable(x: Tensor, eps: float = EPS) -> Tensor:
    """``ln(max(x, eps))``: a logarithm that is finite at zero probability.

    Args:
        x: probabilities, any shape.
    Returns:
        same shape as ``x``.
    """
    return torch.log(torch.clamp(x, min=eps))


def softmax(x: Tensor, precision: float | Tensor = 1.0, dim: int = -1) -> Tensor:
    """σ(γ·x) = exp(γ·x_i) / Σ_j exp(γ·x_j), computed with log-sum-exp.

    As γ → ∞ this tends to the one-hot argmax; as γ → 0 to the uniform distribution.

    Args:
        x: scores, any shape; normalised along ``dim``.
        precision: γ ≥ 0, a float or a tensor broadcastable against ``x``.
    """
    return torch.softmax(x * precision, dim=dim)


def symlog(x: Tensor) -> Tensor:
    """symlog(x) = sign(x)·ln(1 + |x|): compresses large magnitudes, identity near 0."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(y: Tensor) -> Tensor:
    """symexp(y) = sign(y)·(e^|y| − 1), the inverse of :func:`symlog`."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def free_bits(kl: Tensor, nats: float) -> Tensor:
    """max(KL, nats): stops the optimiser pushing a KL below a floor of ``nats``.

    The gradient is zero wherever the KL already sits below the floor, which keeps
    the posterior from collapsing onto the prior early in training.
    """
    return torch.clamp(kl, min=nats)


# ---------------------------------------------------------------------------
# Categorical distributions
# ---------------------------------------------------------------------------
def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """H[p] = −Σ_i p_i ln p_i (nats), with 0·ln 0 = 0.

    Args:
        p: probabilities, normalised along ``dim``.
    Returns:
        ``p`` with ``dim`` reduced.
    """
    return -(p * log_stable(p)).sum(dim)


def kl_categorical_to_log(q: Tensor, log_p: Tensor, dim: int = -1) -> Tensor:
    """KL[q ‖ p] = Σ_i q_i (ln q_i − ln p_i) with p given as log-probabilities ``log_p``.

    Used where p is only known in log space (a log prior, log preferences).
    """
    return (q * (log_stable(q) - log_p)).sum(dim)


# ---------------------------------------------------------------------------
# Bernoulli flags (0/1 observation entries)
# ---------------------------------------------------------------------------
def bernoulli_log_prob(y: Tensor, logits: Tensor) -> Tensor:
    """ln Bern(y; σ(l)) = Σ_d [y_d·l_d − softplus(l_d)], for y ∈ {0, 1}.

    Args:
        y, logits: ``[..., D]``.
    Returns:
        ``[...]``.
    """
    return (y * logits - F.softplus(logits)).sum(-1)


def bernoulli_entropy(logits: Tensor) -> Tensor:
    """H[Bern(σ(l))] = −Σ_d [p_d ln p_d + (1 − p_d) ln(1 − p_d)], p = σ(l), in [0, D·ln 2].

    Computed as softplus(l) − σ(l)·l, always in float32: at large |l| the two terms nearly
    cancel, which bf16 would turn into errors of 0.02 nats.

    Args:
        logits: ``[..., D]``.
    Returns:
        ``[...]`` float32.
    """
    x = logits.float()
    return (F.softplus(x) - torch.sigmoid(x) * x).sum(-1)


# ---------------------------------------------------------------------------
# Diagonal Gaussians
# ---------------------------------------------------------------------------
def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """ln N(x; μ, diag σ²) = −½ Σ_d [((x−μ)/σ)² + 2 ln σ + ln 2π].

    Args:
        x, mean, std: ``[..., D]``.
    Returns:
        ``[...]``.
    """
    z = (x - mean) / std
    return -0.5 * (z.pow(2) + 2.0 * torch.log(std) + LOG_2PI).sum(-1)


def gaussian_entropy(std: Tensor) -> Tensor:
    """H[N(μ, diag σ²)] = ½ Σ_d (1 + ln 2π + 2 ln σ_d).

    Args:
        std: ``[..., D]``.
    Returns:
        ``[...]``.
    """
    return (0.5 * (1.0 + LOG_2PI) + torch.log(std)).sum(-1)


def gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """KL[N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)] summed over the last dimension.

    Per dimension: ln(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2σ_p²) − ½.

    Args:
        mean_q, std_q, mean_p, std_p: ``[..., D]`` (broadcastable).
    Returns:
        ``[...]``.
    """
    var_ratio = (std_q / std_p).pow(2)
    mahal = ((mean_q - mean_p) / std_p).pow(2)
    return 0.5 * (var_ratio + mahal - 1.0 - torch.log(var_ratio)).sum(-1)


def gaussian_mixture_info_gain(means: Tensor, stds: Tensor) -> Tensor:
    """Expected information gain about which of K equally weighted Gaussians generated x.

    I(x; k) = H[(1/K) Σ_k N(μ_k, σ_k²)] − (1/K) Σ_k H[N(μ_k, σ_k²)].

    The mixture entropy has no closed form; we use the pairwise-KL bound of
    Kolchinsky & Tracey (2017), H[mix] ≈ Σ_i w_i H_i − Σ_i w_i ln Σ_j w_j exp(−KL_ij),
    which makes the information gain

        I ≈ −(1/K) Σ_i ln (1/K) Σ_j exp(−KL[N_i ‖ N_j]),

    exactly 0 when all members agree, non-negative, and at most ln K.
    For a deep ensemble this is the epistemic value of resolving model uncertainty
    (information gain about the transition model's parameters).

    Args:
        means, stds: ``[K, ..., D]`` member means and standard deviations.
    Returns:
        ``[...]`` information gain in nats.
    """
    k, dim = means.shape[0], means.shape[-1]
    # The K² pairwise KLs are expanded into member-by-member products (einsum), so no
    # [K, K, ..., D] tensor is built — on the critic's batches that tensor was most of
    # an update's time. With τ = 1/σ², per dimension
    #     2·KL_ij = (σ_i² + μ_i²)τ_j − 2μ_i μ_j τ_j + μ_j²τ_j + ln σ_j² − ln σ_i² − 1.
    # KLs depend only on mean differences, so the means are centred first: the expanded
    # quadratic then has no large cancelling terms. Always float32 (no autocast).
    with torch.autocast(device_type=means.device.type, enabled=False):
        mu = means.float() - means.float().mean(0, keepdim=True)
        var = stds.float().pow(2)
        tau = var.reciprocal()
        log_var = var.log()
        cross = torch.einsum("i...d,j...d->...ij", var + mu.pow(2), tau)
        cross = cross - 2.0 * torch.einsum("i...d,j...d->...ij", mu, mu * tau)
        own_j = (mu.pow(2) * tau + log_var).sum(-1)  # [K, ...]
        own_i = log_var.sum(-1)  # [K, ...]
        kl = 0.5 * (
            cross + own_j.movedim(0, -1).unsqueeze(-2) - own_i.movedim(0, -1).unsqueeze(-1) - dim
        )
        kl = kl.clamp(min=0.0)  # rounding can leave −1e-7 where members agree
        log_mix = torch.logsumexp(-kl, dim=-1) - math.log(k)  # [..., K] over i
    return (-log_mix).mean(-1).clamp(min=0.0)


def squashed_gaussian_log_prob(u: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """ln q(a) of a = tanh(u), u ~ N(μ, diag σ²): the density after the change of variables,

        ln q(a) = ln N(u; μ, σ²) − Σ_d ln(1 − tanh²(u_d)),

    with ln(1 − tanh² u) = 2·(ln 2 − u − softplus(−2u)), exact and finite for any u
    (no 1 − a² that rounds to 0 once |a| nears 1).

    Args:
        u: ``[..., D]`` pre-squash sample; mean, std: ``[..., D]``.
    Returns:
        ``[...]``.
    """
    log_det = 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))
    return gaussian_log_prob(u, mean, std) - log_det.sum(-1)


def squashed_gaussian_sample(mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """A reparameterised sample a = tanh(μ + σ·ε), ε ~ N(0, I), and its ln q(a).

    Args:
        mean, std: ``[..., D]``.
    Returns:
        ``(a[..., D] in (−1, 1), log_prob[...])``; gradients flow to μ and σ.
    """
    u = mean + std * torch.randn_like(std)
    return torch.tanh(u), squashed_gaussian_log_prob(u, mean, std)


# ---------------------------------------------------------------------------
# Expected free energy terms
# ---------------------------------------------------------------------------
def states_info_gain(q_o: Tensor, expected_likelihood_entropy: Tensor, dim: int = -1) -> Tensor:
    """Information gain about states = I(o; s) = H[q(o)] − E_q(s)[H[p(o|s)]].

    Args:
        q_o: predicted outcomes Σ_s p(o|s) q(s), normalised along ``dim``.
        expected_likelihood_entropy: the ambiguity E_q(s) H[p(o|s)], shape of ``q_o``
            with ``dim`` reduced.
    """
    return entropy(q_o, dim) - expected_likelihood_entropy


def expected_free_energy(
    risk: Tensor,
    ambiguity: Tensor,
    info_gain: Tensor | float = 0.0,
    *,
    risk_weight: float = 1.0,
    ambiguity_weight: float = 1.0,
    info_gain_weight: float = 1.0,
) -> Tensor:
    """G = w_r·risk + w_a·ambiguity − w_i·info_gain.

    With unit weights and ``info_gain`` the parameter information gain, this is the
    expected free energy of Friston et al. (2015, 2017); risk + ambiguity equals
    −(utility + state information gain).
    """
    return risk_weight * risk + ambiguity_weight * ambiguity - info_gain_weight * info_gain
