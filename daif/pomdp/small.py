"""The agent step for small models in NumPy: the same maths as the torch path, less overhead.

On a T-maze sized model (8 joint states, 16 policies) a step is a few dozen operations
on arrays of a few dozen numbers, so its cost is per-call overhead: a torch operator
costs a few microseconds to dispatch, a NumPy one about a microsecond. This module runs
the fixed-point state inference (:func:`~daif.pomdp.inference.fpi`), the fused policy
evaluation (``control._evaluate_fused``), q(π) and the action marginals on NumPy arrays
prepared once per model (:class:`SmallModel`), and the :class:`~daif.pomdp.Agent` uses it
when the model is small and on the CPU (``backend="auto"``). Tests hold it equal to the
torch path.

Shapes: ``b`` agents, ``bm`` models (1 shared or ``b``), ``SJ = Π_f S_f``, ``U_J = Π_f U_f``,
``K = 1 + K_H + K_o`` values per joint state (utility, outcome entropies, p(o|s)).
"""

from __future__ import annotations

import itertools
import math
import string
from operator import add, mul
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from daif.maths import EPS
from daif.pomdp.control import policy_operator

if TYPE_CHECKING:
    from daif.pomdp.control import PolicyTree, PreparedModel

__all__ = ["SmallModel", "is_small"]

# NumPy wins where per-call overhead dominates: up to these fused-operator entries
# (SJ · U_J · K; T-maze 8 · 4 · 12, 10×10 grid 100 · 5 · 26), batch rows × joint states,
# and multiply-adds in the step's largest product (past about a million OpenBLAS may
# spread one product over threads, and torch's kernels win: a batch of 256 on the grid)
_MAX_OPERATOR = 2**16
_MAX_ROWS_STATES = 2**10
_MAX_PRODUCT = 2**20


def is_small(sj: int, uj: int, k: int, batch_size: int, max_parents: int = 1) -> bool:
    """Whether a model of ``sj`` joint states, ``uj`` joint actions and ``k`` values per
    state, run for ``batch_size`` agents over a policy tree whose widest parent level has
    ``max_parents`` nodes, is small enough for the NumPy step."""
    return (
        sj * uj * k <= _MAX_OPERATOR
        and batch_size * sj <= _MAX_ROWS_STATES
        and batch_size * max_parents * sj * uj * k <= _MAX_PRODUCT
    )


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().copy()


def log_stable(x: np.ndarray) -> np.ndarray:
    """ln max(x, EPS), as :func:`daif.maths.log_stable`."""
    return np.log(np.maximum(x, EPS))


def softmax(x: np.ndarray) -> np.ndarray:
    """σ(x) over the last axis."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """ln σ(x) over the last axis."""
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def joint(qs: list[np.ndarray]) -> np.ndarray:
    """Mean-field joint Π_f q(s_f) ``[..., SJ]`` (factor 0 slowest)."""
    out = qs[0]
    for q in qs[1:]:
        out = (out[..., :, None] * q[..., None, :]).reshape(*out.shape[:-1], -1)
    return out


class SmallModel:
    """NumPy copies of what a step reads, prepared once per model (and after learning).

    Args:
        prep: the torch :class:`~daif.pomdp.control.PreparedModel` (fused operators built,
            factorised B).
        D: F tensors ``[bm, S_f]``.
        policies: ``[P, T, F]``; tree: their prefix tree.
        E: ``[bm, P]`` or None.
        num_iter, dF, dF_tol: fixed-point iteration settings (as :func:`inference.fpi`).
    """

    def __init__(
        self,
        prep: PreparedModel,
        D: list[Tensor],
        policies: Tensor,
        tree: PolicyTree,
        E: Tensor | None,
        num_iter: int,
        dF: float,
        dF_tol: float,
    ) -> None:
        assert prep.fwd_joint is not None and prep.fwd_values_t is not None
        self.num_states = list(prep.num_states)
        self.num_controls = list(prep.num_controls)
        self.num_iter, self.dF, self.dF_tol = int(num_iter), float(dF), float(dF_tol)
        self.lnA = _np(prep.lnA)  # [bA, ΣO, SJ]
        self.offsets = _np(prep.obs_offsets)
        # per factor [bm, U, S_prev, S_next]: the prior is q @ Bt[u]
        self.Bt = []
        for f, op in enumerate(prep.fwd):
            s, u = self.num_states[f], self.num_controls[f]
            self.Bt.append(np.ascontiguousarray(_np(op).reshape(-1, s, u, s).transpose(0, 2, 1, 3)))
        self.D = [_np(d) for d in D]
        self.sj, self.uj = prep.sj, int(np.prod(self.num_controls))
        self.fwd_joint = _np(prep.fwd_joint)  # [bm, SJ, U_J·SJ]
        self.fwd_values_t = [_np(v) for v in prep.fwd_values_t]  # [bm, SJ, U_J·K]
        two = prep.fwd_values2_t  # [bm, SJ, U_J·U_J·K], or None
        # every tree node's values as one map of the joint state, [bm, SJ, N·K], or None
        self.W = _np(policy_operator(prep, tree))
        self.K = int(prep.values.shape[-1])
        self.fwd_values2_t = None if two is None else [_np(v) for v in two]
        self.num_C_steps = prep.num_C_steps
        self.k = prep.num_entropies
        levels = len(tree.parents)
        self.edges = [_np(tree.joint_edge_index(t, self.num_controls)) for t in range(levels)]
        self.path = _np(tree.path_matrix(prep.lnA.dtype))  # [N_total, P]
        self.lnE = None if E is None else log_stable(_np(E))
        # one-hot of each policy's first action per factor, [P, U_f]: q(u_f) = q(π) @ it
        first = policies[:, 0, :].numpy()
        dt = self.lnA.dtype
        self.first_action = [
            np.eye(u, dtype=dt)[first[:, f]] for f, u in enumerate(self.num_controls)
        ]
        nf = len(self.num_states)
        # each joint state's factor indices (factor 0 slowest), for the one-agent loops
        self._joint_index = list(itertools.product(*[range(n) for n in self.num_states]))
        letters = string.ascii_lowercase[:nf]
        # E_{q(s_¬f)}[ln p(o|s)] for f, as einsum subscripts over [b, S_1..S_F]
        self._ell_subs = [
            ",".join(["z" + letters] + ["z" + letters[g] for g in range(nf) if g != f])
            + "->z"
            + letters[f]
            for f in range(nf)
        ]

    # ------------------------------------------------------------------ inference
    def empirical_prior(
        self, qs: list[np.ndarray], action: np.ndarray, has_action: np.ndarray
    ) -> list[np.ndarray]:
        """B_f[u_f] q(s_f) where a row has a last action, else D_f.

        Args:
            qs: F arrays ``[b, S_f]``; action ``[b, F]`` int; has_action ``[b]`` bool.
        Returns:
            F arrays ``[b, S_f]``.
        """
        b = action.shape[0]
        if b == 1:  # one agent (one model): a vector-matrix product per factor
            acts = action[0].tolist()
            return [(q[0] @ bt[0, a])[None] for q, bt, a in zip(qs, self.Bt, acts, strict=True)]
        out = []
        for f, q in enumerate(qs):
            bt = self.Bt[f]
            ops = bt[0, action[:, f]] if bt.shape[0] == 1 else bt[np.arange(b), action[:, f]]
            pred = (q[:, None, :] @ ops)[:, 0]  # [b, S]
            if not has_action.all():
                d = np.broadcast_to(self.D[f], pred.shape)
                pred = np.where(has_action[:, None], pred, d)
            out.append(pred)
        return out

    def log_likelihood(self, obs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """ln p(o|s) = Σ_m ln A_m[o_m, s] (masked modalities add 0), ``[b, SJ]``."""
        rows = obs + self.offsets
        if self.lnA.shape[0] == 1:
            per = self.lnA[0][rows]  # [b, M, SJ]
        else:
            per = np.take_along_axis(self.lnA, rows[:, :, None], 1)
        if mask is not None:
            per = per * mask[:, :, None]
        return per.sum(1)

    def fpi(self, log_lik: np.ndarray, prior: list[np.ndarray]) -> list[np.ndarray]:
        """Mean-field fixed-point iteration, as :func:`daif.pomdp.inference.fpi`:
        q_f ← σ(E_{q_¬f}[ln p(o|s)] + ln p(s_f)), stopped per row once |ΔF| < dF_tol.

        Args:
            log_lik: ``[b, SJ]``; prior: F arrays ``[b, S_f]``.
        Returns:
            F arrays ``[b, S_f]``.
        """
        log_prior = [log_stable(p) for p in prior]
        if len(self.num_states) == 1:
            return [softmax(log_lik + log_prior[0])]
        b = log_lik.shape[0]
        if b == 1:
            rows = self._fpi_one(log_lik[0].tolist(), [lp[0].tolist() for lp in log_prior])
            return [np.asarray([r], dtype=log_lik.dtype) for r in rows]
        dt = log_lik.dtype
        qs = [np.full((b, s), 1.0 / s, dtype=dt) for s in self.num_states]
        log_qs = [np.full((b, s), -np.log(s), dtype=dt) for s in self.num_states]
        full = log_lik.reshape(b, *self.num_states)

        def vfe(with_accuracy: bool) -> np.ndarray:
            parts = zip(qs, log_qs, log_prior, strict=True)
            out = sum((q * (lq - lp)).sum(-1) for q, lq, lp in parts)
            if with_accuracy:
                out = out - (log_lik * joint(qs)).sum(-1)
            return out

        def sweep(qs: list[np.ndarray]) -> list[np.ndarray]:
            if len(qs) == 2:
                ell = [(full @ qs[1][:, :, None])[..., 0], (qs[0][:, None, :] @ full)[:, 0]]
            else:
                ell = [
                    np.einsum(sub, full, *[q for g, q in enumerate(qs) if g != f])
                    for f, sub in enumerate(self._ell_subs)
                ]
            return [log_softmax(e + lp) for e, lp in zip(ell, log_prior, strict=True)]

        prev = vfe(with_accuracy=False)
        active = np.full(b, self.dF >= self.dF_tol)
        for _ in range(self.num_iter):
            if not active.any():
                break
            new_log = sweep(qs)
            if active.all():
                log_qs = new_log
            else:
                keep = active[:, None]
                log_qs = [np.where(keep, n, q) for n, q in zip(new_log, log_qs, strict=True)]
            qs = [np.exp(lq) for lq in log_qs]
            new = vfe(with_accuracy=True)
            change = np.abs(prev - new)
            prev = np.where(active, new, prev)
            active = active & (change >= self.dF_tol)
        return qs

    def _fpi_one(self, log_lik: list[float], log_prior: list[list[float]]) -> list[list[float]]:
        """:meth:`fpi` of one agent on Python floats: with a few dozen joint states a
        loop over them costs less than dispatching array operations.

        The accuracy term of F, Σ_s ln p(o|s) Π_f q(s_f), is Σ_i q_0(i) ℓ_0(i) with
        ℓ_f = E_{q(s_¬f)}[ln p(o|s)], so the expectations computed for the stopping test
        are the next sweep's input; and after a sweep ln q_f = ℓ'_f + ln p_f − ln Z_f (ℓ'
        of the previous sweep), so the complexity is Σ_f (q_f · ℓ'_f − ln Z_f).
        """
        sizes = self.num_states
        index = self._joint_index
        nf = len(sizes)
        qs = [[1.0 / n] * n for n in sizes]

        if nf == 2:  # rows and columns of ln p(o|s) as a [S_0, S_1] table
            n1 = sizes[1]
            rows = [log_lik[i * n1 : (i + 1) * n1] for i in range(sizes[0])]
            cols = [list(c) for c in zip(*rows, strict=True)]

        def expectations(qs: list[list[float]]) -> list[list[float]]:
            if nf == 2:
                q0, q1 = qs
                return [[sum(map(mul, r, q1)) for r in rows], [sum(map(mul, c, q0)) for c in cols]]
            out = [[0.0] * n for n in sizes]
            for ll, idx in zip(log_lik, index, strict=True):
                probs = [q[i] for q, i in zip(qs, idx, strict=True)]
                for f in range(nf):
                    w = ll
                    for g in range(nf):
                        if g != f:
                            w *= probs[g]
                    out[f][idx[f]] += w
            return out

        # the complexity of the uniform start: Σ_f Σ_i q (ln q − ln p)
        prev = sum(
            sum((-math.log(n) - lp) / n for lp in lpf)
            for n, lpf in zip(sizes, log_prior, strict=True)
        )
        running = self.dF >= self.dF_tol
        ell = expectations(qs)
        for _ in range(self.num_iter):
            if not running:
                break
            qs, new = [], 0.0
            for e, lp in zip(ell, log_prior, strict=True):
                x = list(map(add, e, lp))
                top = max(x)
                w = [math.exp(v - top) for v in x]
                z = sum(w)
                q = [v / z for v in w]
                qs.append(q)
                new += sum(map(mul, q, e)) - top - math.log(z)
            ell = expectations(qs)
            new -= sum(map(mul, qs[0], ell[0]))
            running = abs(prev - new) >= self.dF_tol
            prev = new
        return qs

    # ------------------------------------------------------------------ planning
    def evaluate_policies(
        self, qs: list[np.ndarray], use_utility: bool, use_states_info_gain: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Utility and state information gain of every policy, summed over the horizon,
        from the joint-action operators (as ``control._evaluate_fused``).

        Returns:
            (utility ``[b, P]``, states info gain ``[b, P]``).
        """
        parent = joint(qs)[:, None, :]  # [b, 1, SJ]
        b = parent.shape[0]
        levels = len(self.edges)
        vals = []
        if self.W is not None:  # one product for the whole tree
            levels = 0
            vals.append(_matmul(parent, self.W).reshape(b, -1, self.K))
        for t in range(levels):
            idx = self.edges[t]
            op = self.fwd_values_t[t if self.num_C_steps > 1 else 0]
            v = _matmul(parent, op)
            v = v.reshape(b, -1, v.shape[-1] // self.uj)
            vals.append(v if idx is None else v[:, idx])
            last_two = t + 2 == levels and self.fwd_values2_t is not None
            if last_two and idx is None and self.edges[t + 1] is None:
                # full last two levels: the last one's values from this level's parents
                assert self.fwd_values2_t is not None
                op2 = self.fwd_values2_t[t + 1 if self.num_C_steps > 1 else 0]
                v2 = _matmul(parent, op2)
                vals.append(v2.reshape(b, -1, v2.shape[-1] // (self.uj * self.uj)))
                break
            if t + 1 < levels:
                nxt = _matmul(parent, self.fwd_joint).reshape(b, -1, self.sj)
                parent = nxt if idx is None else nxt[:, idx]
        vals_all = vals[0] if len(vals) == 1 else np.concatenate(vals, 1)  # [b, N, K]
        k = self.k
        zero = np.zeros(vals_all.shape[:-1], dtype=vals_all.dtype)
        util = vals_all[..., 0] if use_utility else zero
        if not use_states_info_gain:
            sig = zero
        else:
            # Σ_m (H[q(o_m)] − E_q H[A_m]) = −Σ_o q(o) ln q(o) − Σ_m E_q H[A_m] over the
            # modalities side by side (or the one joint outcome)
            qo = vals_all[..., 1 + k :]
            sig = -(qo * np.log(np.maximum(qo, EPS))).sum(-1) - vals_all[..., 1 : 1 + k].sum(-1)
        return util @ self.path, sig @ self.path

    def posterior_over_policies(self, G: np.ndarray, gamma: float | np.ndarray) -> np.ndarray:
        """q(π) = σ(ln E − γ G), ``[b, P]``."""
        logits = -gamma * G
        if self.lnE is not None:
            logits = logits + self.lnE
        return softmax(logits)

    def action_marginals(self, q_pi: np.ndarray) -> list[np.ndarray]:
        """q(u_f) = Σ_π q(π) [π_0,f = u], F arrays ``[b, U_f]``."""
        return [q_pi @ oh for oh in self.first_action]


def _matmul(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x [b, N, K] @ m [bm, K, J]`` with ``bm`` 1 (one GEMM) or b → ``[b, N, J]``."""
    if m.shape[0] == 1:
        b, n, k = x.shape
        return (x.reshape(b * n, k) @ m[0]).reshape(b, n, -1)
    return x @ m


def as_torch(x: np.ndarray) -> Tensor:
    """A NumPy result as a CPU tensor (no copy; strided views are fine)."""
    return torch.from_numpy(x)
