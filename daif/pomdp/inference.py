"""State inference for discrete POMDPs, batched over a leading dimension ``b``.

* :func:`fpi` — mean-field fixed-point iteration at the current time step
  (pymdp's "VANILLA"): q(s_f) = σ(E_{q(s_¬f)}[ln p(o|s)] + ln p(s_f)), all factors
  updated from the same expectation each sweep, stopped per batch row once the free
  energy changes by less than ``dF_tol``.
* :func:`mmp` — marginal message passing over a window of past and future steps
  under each policy (pymdp's "MMP"), with gradient descent on the free energy.

Shapes: ``SJ = Π_f S_f``; likelihoods are over the flattened joint state (factor 0
slowest); beliefs are lists of per-factor tensors.
"""

from __future__ import annotations

import math
import string

import torch
from torch import Tensor

from daif.maths import kl_categorical_to_log, log_stable, softmax
from daif.pomdp.maths import joint_from_marginals

__all__ = [
    "expected_log_likelihood",
    "fpi",
    "joint_likelihood",
    "joint_log_likelihood",
    "mmp",
    "variational_free_energy",
]


def joint_likelihood(A: list[Tensor], obs: Tensor, mask: Tensor | None = None) -> Tensor:
    """p(o|s) = Π_m A_m[o_m, s] for observed indices, over the joint state.

    Args:
        A: M tensors ``[bA, O_m, SJ]`` (``bA`` 1 or ``b``).
        obs: ``[b, M]`` integer indices.
        mask: ``[b, M]`` bool, False where a modality was not observed (its factor is 1:
            a missing outcome carries no evidence), or None (all observed).
    Returns:
        ``[b, SJ]``.
    """
    b = obs.shape[0]
    out = None
    for m, a in enumerate(A):
        idx = obs[:, m].long()
        rows = a[0, idx] if a.shape[0] == 1 else a[torch.arange(b, device=a.device), idx]
        if mask is not None:
            rows = torch.where(mask[:, m : m + 1], rows, torch.ones_like(rows))
        out = rows if out is None else out * rows
    return out  # type: ignore[return-value]


def joint_log_likelihood(
    lnA: Tensor, obs: Tensor, offsets: Tensor, mask: Tensor | None = None
) -> Tensor:
    """ln p(o|s) = Σ_m ln A_m[o_m, s] (each ln A_m floored as ``log_stable``, as pymdp 1.0
    sums per-modality log-likelihoods), over the joint state.

    Args:
        lnA: ``[bA, Σ_m O_m, SJ]`` the modalities' ln A stacked (``bA`` 1 or ``b``).
        obs: ``[b, M]`` integer indices.
        offsets: ``[M]`` first row of each modality in ``lnA``.
        mask: ``[b, M]`` bool, False where a modality was not observed (it adds 0), or None.
    Returns:
        ``[b, SJ]``.
    """
    rows = obs + offsets  # [b, M]
    if lnA.shape[0] == 1:
        per_modality = lnA[0][rows]
    else:
        per_modality = lnA.gather(1, rows.unsqueeze(-1).expand(-1, -1, lnA.shape[-1]))
    if mask is not None:
        per_modality = per_modality * mask.unsqueeze(-1)
    return per_modality.sum(1)


def _einsum_except(x: Tensor, qs: list[Tensor], keep: int, extra_lead: int = 0) -> Tensor:
    """Σ_{s_¬keep} x(s) Π_{g≠keep} q_g(s_g).

    Args:
        x: ``[b, S_1..S_F]`` (shared over the ``extra_lead`` dims of ``qs``).
        qs: F tensors ``[b, *extra, S_f]``.
    Returns:
        ``[b, *extra, S_keep]``.
    """
    nf = len(qs)
    letters = string.ascii_lowercase
    fac = letters[:nf]
    extra = letters[nf : nf + extra_lead]
    ops = [x]
    subs = ["z" + fac]
    for g, q in enumerate(qs):
        if g != keep:
            ops.append(q)
            subs.append("z" + extra + fac[g])
    out = "z" + extra + fac[keep]
    return torch.einsum(",".join(subs) + "->" + out, *ops)


def expected_log_likelihood(
    log_lik: Tensor, qs: list[Tensor], num_states: list[int]
) -> list[Tensor]:
    """E_{q(s_¬f)}[ln p(o|s)] for every factor f.

    Args:
        log_lik: ``[b, SJ]``.
        qs: F tensors ``[b, S_f]``.
    Returns:
        F tensors ``[b, S_f]``.
    """
    full = log_lik.reshape(log_lik.shape[0], *num_states)
    if len(qs) == 2:  # two matrix-vector products, the common case, without einsum's overhead
        return [(full @ qs[1].unsqueeze(-1)).squeeze(-1), (qs[0].unsqueeze(1) @ full).squeeze(1)]
    return [_einsum_except(full, qs, f) for f in range(len(qs))]


def variational_free_energy(
    qs: list[Tensor], log_prior: list[Tensor], log_lik: Tensor | None = None
) -> Tensor:
    """F = Σ_f (E_q[ln q(s_f)] − E_q[ln p(s_f)]) − E_q[ln p(o|s)] under the mean field.

    Args:
        qs, log_prior: F tensors ``[b, S_f]``.
        log_lik: ``[b, SJ]`` or None (then the accuracy term is omitted).
    Returns:
        ``[b]``.
    """
    vfe = sum(kl_categorical_to_log(q, lp) for q, lp in zip(qs, log_prior, strict=True))
    if log_lik is not None:
        vfe = vfe - (log_lik * joint_from_marginals(qs)).sum(-1)
    return vfe  # type: ignore[return-value]


def fpi(
    log_lik: Tensor,
    prior: list[Tensor],
    num_states: list[int],
    num_iter: int = 10,
    dF: float = 1.0,
    dF_tol: float = 1e-3,
) -> list[Tensor]:
    """Fixed-point iteration for the mean-field posterior over state factors.

    With one factor the optimum is exact in one step, q(s) = σ(ln p(o|s) + ln p(s))
    (Bayes' rule). With several, start from uniform marginals and iterate
    q_f ← σ(E_{q_¬f}[ln p(o|s)] + ln p(s_f)) (all factors from the previous sweep),
    stopping a batch row once |ΔF| < ``dF_tol`` or after ``num_iter`` sweeps.

    Args:
        log_lik: ``[b, SJ]`` ln p(o|s) of the current observation(s).
        prior: F tensors ``[b, S_f]`` (empirical) prior p(s_f).
        num_states: factor sizes.
        dF: initial |ΔF| (≥ ``dF_tol`` runs at least one sweep).
    Returns:
        F tensors ``[b, S_f]`` posterior marginals.
    """
    log_prior = [log_stable(p) for p in prior]
    if len(num_states) == 1:
        return [softmax(log_lik + log_prior[0])]
    b = log_lik.shape[0]
    dt, dev = log_lik.dtype, log_lik.device
    qs = [torch.full((b, s), 1.0 / s, dtype=dt, device=dev) for s in num_states]
    log_qs = [torch.full((b, s), -math.log(s), dtype=dt, device=dev) for s in num_states]

    def vfe(with_accuracy: bool) -> Tensor:
        # F of variational_free_energy, with ln q known exactly (from the log-softmax)
        terms = [(q * (lq - lp)).sum(-1) for q, lq, lp in zip(qs, log_qs, log_prior, strict=True)]
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        if with_accuracy:
            out = out - (log_lik * joint_from_marginals(qs)).sum(-1)
        return out

    if b == 1:  # one row: plain Python control flow and numbers, no masks
        prev = float(vfe(with_accuracy=False))
        running = dF >= dF_tol
        for _ in range(num_iter):
            if not running:
                break
            ell = expected_log_likelihood(log_lik, qs, num_states)
            log_qs = [torch.log_softmax(e + lp, -1) for e, lp in zip(ell, log_prior, strict=True)]
            qs = [lq.exp() for lq in log_qs]
            new = float(vfe(with_accuracy=True))
            running = abs(prev - new) >= dF_tol
            prev = new
        return qs
    prev_vfe = vfe(with_accuracy=False)
    active = torch.full((b,), dF >= dF_tol, dtype=torch.bool, device=dev)
    for _ in range(num_iter):
        if not bool(active.any()):
            break
        ell = expected_log_likelihood(log_lik, qs, num_states)
        new_log = [torch.log_softmax(e + lp, -1) for e, lp in zip(ell, log_prior, strict=True)]
        keep = active[:, None]
        log_qs = [torch.where(keep, n, q) for n, q in zip(new_log, log_qs, strict=True)]
        qs = [lq.exp() for lq in log_qs]
        new_vfe = vfe(with_accuracy=True)
        change = (prev_vfe - new_vfe).abs()
        prev_vfe = torch.where(active, new_vfe, prev_vfe)
        active = active & (change >= dF_tol)
    return qs


def _transition_operators(B: Tensor) -> tuple[Tensor, Tensor]:
    """Forward and backward message operators for one factor.

    Args:
        B: ``[bB, S, S, U]`` with ``B[:, i, j, u] = p(s'=i | s=j, u)``.
    Returns:
        ``fwd [bB, S, U·S]`` with ``(q @ fwd)[u, i] = Σ_j B[i, j, u] q_j`` and
        ``bwd [bB, S, U·S]`` applying the column-normalised transpose
        ``B̃[j, i, u] ∝ B[i, j, u] + ε`` (normalised over j), the "future" message.
    """
    bb, s, _, u = B.shape
    fwd = B.permute(0, 2, 3, 1).reshape(bb, s, u * s)
    bt = B.transpose(1, 2) + 1e-16  # [bB, j, i, u]
    bt = bt / bt.sum(1, keepdim=True)
    bwd = bt.permute(0, 2, 3, 1).reshape(bb, s, u * s)  # [bB, i, (u, j)]
    return fwd, bwd


def _apply(q: Tensor, op: Tensor, actions: Tensor, num_actions: int) -> Tensor:
    """Messages for chosen actions: ``q [b, P, S]``, ``op [bB, S, U·S]``, ``actions [b, P]``.

    Returns ``[b, P, S']`` with ``out[b, p] = q[b, p] @ op[:, u, :]`` for ``u = actions[b, p]``.
    """
    b, p, s = q.shape
    if b * p < num_actions:
        # fewer rows than actions: copy out the chosen operators and apply only those
        # (reads b·P·S·S' instead of the whole U·S·S' operator)
        ops = op.reshape(op.shape[0], s, num_actions, -1)
        a = actions.long()
        if op.shape[0] == 1:
            w = ops[0].transpose(0, 1)[a.reshape(-1)]  # [b·P, S, S']
        else:
            rows = torch.arange(b, device=a.device).repeat_interleave(p)
            w = ops[rows, :, a.reshape(-1), :]  # [b·P, S, S']
        return torch.bmm(q.reshape(b * p, 1, s), w).reshape(b, p, -1)
    # many rows: one product for all actions, then pick (a GEMM beats b·P small ones)
    if op.shape[0] == 1:
        all_u = (q.reshape(b * p, s) @ op[0]).reshape(b, p, num_actions, -1)
    else:
        all_u = torch.bmm(q, op).reshape(b, p, num_actions, -1)
    idx = actions.long()[:, :, None, None].expand(b, p, 1, all_u.shape[-1])
    return all_u.gather(2, idx).squeeze(2)


def mmp(
    lh_seq: Tensor,
    B: list[Tensor],
    actions: Tensor,
    prior: list[Tensor],
    num_states: list[int],
    future_len: int,
    num_iter: int = 10,
    tau: float = 0.25,
) -> tuple[list[list[Tensor]], Tensor]:
    """Marginal message passing (gradient descent on F) for every policy at once.

    For each time t of the window (``T_past`` observed steps then ``future_len``
    planned ones) and factor f, with v = ln q(s_t,f):

        ε = c·ln A_t + ln(B_{t−1} q_{t−1}) + ln(B̃_t q_{t+1}) − c·v,
        v ← v + τ (ε − mean ε),  q = σ(v),

    where c = 2 (1 in the last two steps, which get no future message), ln A_t =
    ln E_{q(s_¬f)}[p(o_t|s)] (0 in the future), ln(B_{−1} q_{−1}) = ln prior.
    Updates are sequential in t and f (Gauss–Seidel), as in SPM and pymdp.
    The free energy of each policy is F = Σ_t Σ_f q·½(ε − (F_n−1)/F_n ln A)
    (without the correction at the first and last steps).

    Args:
        lh_seq: ``[b, T_past, SJ]`` likelihoods p(o_t|s) of the observed window.
        B: F tensors ``[bB, S_f, S_f, U_f]``.
        actions: ``[b, P, T_past + future_len − 1, F]`` past actions then each policy.
        prior: F tensors ``[b, S_f]`` belief at the window's first step.
        num_states: factor sizes.
        future_len: the policy length.
    Returns:
        (``qs[t][f]`` of shape ``[b, P, S_f]`` for the ``T_past + future_len`` steps,
        F ``[b, P]``).
    """
    b, past_len, _ = lh_seq.shape
    p = actions.shape[1]
    nf = len(num_states)
    infer_len = past_len + future_len
    future_cutoff = past_len + future_len - 2
    dt, dev = lh_seq.dtype, lh_seq.device
    ops = [_transition_operators(bf) for bf in B]
    nu = [bf.shape[-1] for bf in B]
    qs = [
        [torch.full((b, p, s), 1.0 / s, dtype=dt, device=dev) for s in num_states]
        for _ in range(infer_len)
    ]
    ln_prior = [log_stable(pr).unsqueeze(1).expand(b, p, -1) for pr in prior]
    lh_full = lh_seq.reshape(b, past_len, *num_states)
    free = torch.zeros(b, p, dtype=dt, device=dev)
    for _ in range(num_iter):
        free = torch.zeros(b, p, dtype=dt, device=dev)
        for t in range(infer_len):
            for f in range(nf):
                if t < past_len:
                    if nf == 1:
                        ln_a = log_stable(lh_seq[:, t]).unsqueeze(1).expand(b, p, -1)
                    else:
                        ln_a = log_stable(_einsum_except(lh_full[:, t], qs[t], f, extra_lead=1))
                else:
                    ln_a = torch.zeros(b, p, num_states[f], dtype=dt, device=dev)
                if t == 0:
                    ln_past = ln_prior[f]
                else:
                    msg = _apply(qs[t - 1][f], ops[f][0], actions[:, :, t - 1, f], nu[f])
                    ln_past = log_stable(msg)
                if t >= future_cutoff:
                    ln_future = torch.zeros_like(ln_past)
                else:
                    msg = _apply(qs[t + 1][f], ops[f][1], actions[:, :, t, f], nu[f])
                    ln_future = log_stable(msg)
                sx = qs[t][f]
                ln_q = log_stable(sx)
                c = 1.0 if t >= future_cutoff else 2.0
                err = c * ln_a + ln_past + ln_future - c * ln_q
                ln_q = ln_q + tau * (err - err.mean(-1, keepdim=True))
                qs[t][f] = softmax(ln_q)
                if t in (0, infer_len - 1):
                    free = free + (sx * 0.5 * err).sum(-1)
                else:
                    free = free + (sx * 0.5 * (err - (nf - 1) * ln_a / nf)).sum(-1)
    return qs, free
