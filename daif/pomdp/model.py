"""The discrete generative model (pymdp's A, B, C, D, E and Dirichlet counts), validated.

Conventions follow pymdp / SPM:

* ``A[m]``: ``[O_m, S_1, …, S_F]`` likelihood p(o_m | s); every column (fixed state
  configuration) sums to 1. With ``A_factor_list[m]`` it may depend on a subset of
  factors only, ``[O_m, *(S_f for f in A_factor_list[m])]``; it is broadcast to all
  factors here so the rest of the package sees one layout.
* ``B[f]``: ``[S_f, S_f, U_f]`` transition p(s'_f | s_f, u_f) (next state first); a
  2-D ``B[f]`` is an uncontrollable factor with one action. With ``B_dependencies[f]``
  the next state may depend on several factors (pymdp 1.0's layout):
  ``[S_f, *(S_d for d in B_dependencies[f]), U_f]``, p(s'_f | s_deps, u_f). With
  ``B_action_dependencies[f]`` (pymdp 1.0) a factor's transition may depend on several
  control factors (or none): its action axes are ``[*(U_c for c in
  B_action_dependencies[f])]`` over the control factors' sizes ``num_controls``; they are
  flattened here into one axis of ``Π_c U_c`` joint actions (mixed radix, the last control
  factor fastest), so the rest of the package sees one action axis per factor.
* ``C[m]``: ``[O_m]`` relative log-preferences (softmaxed into ln P̃(o) when used), or
  ``[T, O_m]``: the preferences of each planning step (row t for the t-th step ahead).
* ``D[f]``: ``[S_f]`` prior over initial states.
* ``E``: ``[P]`` prior over policies (checked against the policies by the agent).
* ``pA``, ``pB``, ``pD``: Dirichlet counts with the shapes of A, B, D.

Every problem raises ``ValueError`` naming the array, its index and the offending
value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from daif.pomdp.maths import norm_dist

__all__ = ["GenerativeModel", "as_tensor_list"]

ArrayLike = Any


def _ndim(e: Any) -> int:
    return int(e.ndim) if hasattr(e, "ndim") else int(np.ndim(e))


def as_tensor_list(
    x: ArrayLike, name: str, dtype: torch.dtype = torch.float64, min_ndim: int = 1
) -> list[Tensor]:
    """Turn one array or a sequence / numpy object array of arrays into a list of tensors.

    A Tensor, a numeric ndarray, or a nested list whose elements have fewer than
    ``min_ndim`` dimensions is one array (one modality or factor); a numpy object array
    or a list of arrays with at least ``min_ndim`` dimensions each is a list.
    """
    if isinstance(x, Tensor) or (isinstance(x, np.ndarray) and x.dtype != object):
        items = [x]
    elif isinstance(x, np.ndarray) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(_ndim(e) >= min_ndim for e in x)
    ):
        items = list(x)
    else:
        items = [x]
    out = []
    for i, item in enumerate(items):
        try:
            t = item if isinstance(item, Tensor) else torch.as_tensor(np.asarray(item, dtype=float))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}[{i}] is not a numeric array: {err}") from err
        t = t.to(dtype)
        bad = ~torch.isfinite(t)
        if bad.any():
            idx = tuple(int(j) for j in bad.nonzero()[0])
            raise ValueError(f"{name}[{i}] has a non-finite entry {float(t[idx])} at index {idx}")
        out.append(t)
    return out


def _check_columns(t: Tensor, name: str, atol: float) -> None:
    """Raise if any column (fixed trailing index) of ``t`` does not sum to 1."""
    if (t < 0).any():
        idx = tuple(int(i) for i in (t < 0).nonzero()[0])
        raise ValueError(f"{name} has a negative entry {float(t[idx]):.4g} at index {idx}")
    sums = t.sum(0)
    bad = (sums - 1.0).abs() > atol
    if bad.any():
        col = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} column {col} sums to {float(sums[col]):.6g}, not 1 "
            f"(each distribution over the first axis must be normalised)"
        )


def _check_vector(t: Tensor, name: str, atol: float) -> None:
    """Raise if a probability vector has a negative entry or does not sum to 1."""
    if (t < 0).any():
        i = int((t < 0).nonzero()[0])
        raise ValueError(f"{name} has a negative entry {float(t[i]):.4g} at index {i}")
    total = float(t.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} sums to {total:.6g}, not 1")


def _check_counts(t: Tensor, name: str) -> None:
    if (t < 0).any():
        idx = tuple(int(i) for i in (t < 0).nonzero()[0])
        raise ValueError(f"{name} has a negative Dirichlet count {float(t[idx]):.4g} at {idx}")


class GenerativeModel:
    """A validated discrete POMDP generative model.

    Args:
        A: likelihood(s), one array or a list (one per modality). May be ``None`` when
            ``pA`` is given (then A = E[Dir(pA)]).
        B: transition(s), one array or a list (one per factor). May be ``None`` when
            ``pB`` is given.
        C: log-preferences per modality (default zeros).
        D: initial-state priors per factor (default uniform, or E[Dir(pD)]).
        E: prior over policies ``[P]`` (default uniform; length checked by the agent).
        pA, pB, pD: Dirichlet counts (optional; enable learning).
        A_factor_list: for each modality, the factors its A depends on (default all).
        B_dependencies: for each factor f, the factors its next state depends on (default
            ``[f]``); ``B[f]`` is then ``[S_f, *(S_d for d in B_dependencies[f]), U_f]``.
        B_action_dependencies: for each factor f, the control factors its transition
            depends on (default ``[f]``: one control factor per state factor); ``B[f]`` is
            then ``[S_f, *S_deps, *(num_controls[c] for c in B_action_dependencies[f])]``
            (``[]``: no action axis, an uncontrolled factor).
        num_controls: sizes of the control factors with ``B_action_dependencies`` (default:
            read from B's action axes).
        atol: tolerance for "sums to 1".
        dtype: floating dtype of the stored tensors.
    """

    def __init__(
        self,
        A: ArrayLike | None,
        B: ArrayLike | None,
        C: ArrayLike | None = None,
        D: ArrayLike | None = None,
        E: ArrayLike | None = None,
        pA: ArrayLike | None = None,
        pB: ArrayLike | None = None,
        pD: ArrayLike | None = None,
        A_factor_list: Sequence[Sequence[int]] | None = None,
        B_dependencies: Sequence[Sequence[int]] | None = None,
        B_action_dependencies: Sequence[Sequence[int]] | None = None,
        num_controls: Sequence[int] | None = None,
        atol: float = 1e-4,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.dtype = dtype
        # ---- counts first: they may define A, B, D
        self.pA = as_tensor_list(pA, "pA", dtype, 2) if pA is not None else None
        self.pB = as_tensor_list(pB, "pB", dtype, 2) if pB is not None else None
        self.pD = as_tensor_list(pD, "pD", dtype, 1) if pD is not None else None
        for nm, lst in (("pA", self.pA), ("pB", self.pB), ("pD", self.pD)):
            for i, t in enumerate(lst or []):
                _check_counts(t, f"{nm}[{i}]")
        if A is None and self.pA is None:
            raise ValueError("A is None and no pA was given: one of them is required")
        if B is None and self.pB is None:
            raise ValueError("B is None and no pB was given: one of them is required")
        # without A (B) the expected value of its Dirichlet counts is the model
        A_list = (
            [norm_dist(t) for t in self.pA]  # type: ignore[union-attr]
            if A is None
            else as_tensor_list(A, "A", dtype, 2)
        )
        B_list = (
            [norm_dist(t) for t in self.pB]  # type: ignore[union-attr]
            if B is None
            else as_tensor_list(B, "B", dtype, 2)
        )

        # ---- B: [S_f, *S_deps, U] (deps default [f]: [S, S, U])
        nf = len(B_list)
        if B_dependencies is None:
            B_dependencies = [[f] for f in range(nf)]
        if len(B_dependencies) != nf:
            raise ValueError(
                f"B_dependencies has {len(B_dependencies)} entries but B has {nf} factors"
            )
        self.B_dependencies = [list(map(int, deps)) for deps in B_dependencies]
        self.num_states = [int(b.shape[0]) for b in B_list]
        # several control factors per transition: flatten B's (and pB's) action axes
        self.B_action_dependencies: list[list[int]] | None = None
        self.num_controls_multi: list[int] | None = None
        if B_action_dependencies is not None:
            B_list = self._flatten_actions(B_list, B_action_dependencies, num_controls, "B")
            if self.pB is not None:
                if len(self.pB) != nf:
                    raise ValueError(f"pB has {len(self.pB)} factors, B has {nf}")
                self.pB = self._flatten_actions(self.pB, B_action_dependencies, None, "pB")
        elif num_controls is not None:
            raise ValueError(
                "num_controls is for B_action_dependencies; without it B's last "
                "axis gives each factor's actions"
            )
        self.B: list[Tensor] = []
        for f, (b, deps) in enumerate(zip(B_list, self.B_dependencies, strict=True)):
            for d in deps:
                if not 0 <= d < nf:
                    raise ValueError(f"B_dependencies[{f}] names factor {d}; there are {nf}")
            expected = tuple(self.num_states[d] for d in deps)
            if b.ndim == 1 + len(deps):  # no action axis: an uncontrolled factor
                b = b.unsqueeze(-1)
            if b.ndim != 2 + len(deps) or tuple(b.shape[1:-1]) != expected:
                layout = (
                    "[S, S, U] (next state, state, action)"
                    if deps == [f]
                    else f"[S, *{list(expected)}, U] (next state, the states of factors {deps}, "
                    "action)"
                )
                raise ValueError(f"B[{f}] must have shape {layout}; got {tuple(b.shape)}")
            _check_columns(b, f"B[{f}]", atol)
            self.B.append(b)
        self.num_factors = nf
        self.num_controls = [int(b.shape[-1]) for b in self.B]

        # ---- A: [O, S_1..S_F] (broadcast from the factors it depends on)
        if A_factor_list is None:
            A_factor_list = [list(range(self.num_factors)) for _ in A_list]
        if len(A_factor_list) != len(A_list):
            raise ValueError(
                f"A_factor_list has {len(A_factor_list)} entries but A has {len(A_list)} modalities"
            )
        self.A_factor_list = [list(map(int, fl)) for fl in A_factor_list]
        self.A: list[Tensor] = []
        for m, (a, fl) in enumerate(zip(A_list, self.A_factor_list, strict=True)):
            for f in fl:
                if not 0 <= f < self.num_factors:
                    raise ValueError(
                        f"A_factor_list[{m}] names factor {f}; there are {self.num_factors}"
                    )
            expected = tuple(self.num_states[f] for f in fl)
            if a.ndim != 1 + len(fl) or tuple(a.shape[1:]) != expected:
                raise ValueError(
                    f"A[{m}] has shape {tuple(a.shape)}, but B implies [O, *{list(expected)}] "
                    f"(states of factors {fl})"
                )
            _check_columns(a, f"A[{m}]", atol)
            self.A.append(self._broadcast_to_factors(a, fl))
        self.num_obs = [int(a.shape[0]) for a in self.A]
        self.num_modalities = len(self.A)
        if self.pA is not None:
            if len(self.pA) != self.num_modalities:
                raise ValueError(f"pA has {len(self.pA)} modalities, A has {self.num_modalities}")
            self.pA = [
                self._broadcast_to_factors(p, fl) if p.ndim != 1 + self.num_factors else p
                for p, fl in zip(self.pA, self.A_factor_list, strict=True)
            ]
            for m, (p, a) in enumerate(zip(self.pA, self.A, strict=True)):
                if p.shape != a.shape:
                    raise ValueError(f"pA[{m}] has shape {tuple(p.shape)}, A[{m}] {tuple(a.shape)}")
        if self.pB is not None:
            if len(self.pB) != self.num_factors:
                raise ValueError(f"pB has {len(self.pB)} factors, B has {self.num_factors}")
            self.pB = [
                p.unsqueeze(-1) if p.ndim == b.ndim - 1 else p
                for p, b in zip(self.pB, self.B, strict=True)
            ]
            for f, (p, b) in enumerate(zip(self.pB, self.B, strict=True)):
                if p.shape != b.shape:
                    raise ValueError(f"pB[{f}] has shape {tuple(p.shape)}, B[{f}] {tuple(b.shape)}")

        # ---- C
        if C is None:
            self.C = [torch.zeros(o, dtype=dtype) for o in self.num_obs]
        else:
            self.C = as_tensor_list(C, "C", dtype, 1)
            if len(self.C) != self.num_modalities:
                raise ValueError(f"C has {len(self.C)} modalities, A has {self.num_modalities}")
            for m, c in enumerate(self.C):
                if c.ndim not in (1, 2) or c.shape[-1] != self.num_obs[m] or c.shape[0] == 0:
                    raise ValueError(
                        f"C[{m}] has shape {tuple(c.shape)}, expected ({self.num_obs[m]},) or "
                        f"(T, {self.num_obs[m]}) for preferences per planning step"
                    )

        # ---- D (pD checked first: without D it defines D)
        if self.pD is not None:
            if len(self.pD) != self.num_factors:
                raise ValueError(f"pD has {len(self.pD)} factors, B has {self.num_factors}")
            for f, p in enumerate(self.pD):
                if tuple(p.shape) != (self.num_states[f],):
                    raise ValueError(
                        f"pD[{f}] has shape {tuple(p.shape)}, expected ({self.num_states[f]},)"
                    )
        if D is None:
            if self.pD is not None:
                self.D = [norm_dist(p) for p in self.pD]
            else:
                self.D = [torch.full((s,), 1.0 / s, dtype=dtype) for s in self.num_states]
        else:
            self.D = as_tensor_list(D, "D", dtype, 1)
        if len(self.D) != self.num_factors:
            raise ValueError(f"D has {len(self.D)} factors, B has {self.num_factors}")
        for f, d in enumerate(self.D):
            if tuple(d.shape) != (self.num_states[f],):
                raise ValueError(
                    f"D[{f}] has shape {tuple(d.shape)}, expected ({self.num_states[f]},)"
                )
            _check_vector(d, f"D[{f}]", atol)

        # ---- E
        self.E: Tensor | None = None
        if E is not None:
            e = torch.as_tensor(np.asarray(E, dtype=float) if not isinstance(E, Tensor) else E)
            e = e.to(dtype)
            if e.ndim != 1:
                raise ValueError(f"E must be 1-D [num_policies]; got shape {tuple(e.shape)}")
            _check_vector(e, "E", atol)
            self.E = e

    def _flatten_actions(
        self,
        B_list: list[Tensor],
        B_action_dependencies: Sequence[Sequence[int]],
        num_controls: Sequence[int] | None,
        name: str,
    ) -> list[Tensor]:
        """``[S_f, *S_deps, *U_(B_action_dependencies[f])]`` → ``[S_f, *S_deps, Π U]``
        (mixed radix, the last control factor fastest), checking every size by name.

        Sets ``B_action_dependencies`` and ``num_controls_multi`` (read from B's action
        axes where ``num_controls`` is None) on the first call (B), checks them on the next
        (pB).
        """
        nf = len(B_list)
        if len(B_action_dependencies) != nf:
            raise ValueError(
                f"B_action_dependencies has {len(B_action_dependencies)} entries but {name} "
                f"has {nf} factors"
            )
        acts = [list(map(int, a)) for a in B_action_dependencies]
        if self.num_controls_multi is None:
            sizes: dict[int, int] = {}
            if num_controls is not None:
                sizes = {c: int(n) for c, n in enumerate(num_controls)}
                for c, n in sizes.items():
                    if n < 1:
                        raise ValueError(f"num_controls[{c}] must be >= 1; got {n}")
            num_c = len(num_controls) if num_controls is not None else None
            for f, (b, deps, ad) in enumerate(zip(B_list, self.B_dependencies, acts, strict=True)):
                n_state_axes = 1 + len(deps)
                if b.ndim != n_state_axes + len(ad):
                    raise ValueError(
                        f"{name}[{f}] has {b.ndim} axes; with B_dependencies[{f}]={deps} and "
                        f"B_action_dependencies[{f}]={ad} it needs {n_state_axes + len(ad)} "
                        "(next state, the states it depends on, one axis per control factor)"
                    )
                for j, c in enumerate(ad):
                    if c < 0 or (num_c is not None and c >= num_c):
                        raise ValueError(
                            f"B_action_dependencies[{f}] names control factor {c}; "
                            f"num_controls has {num_c}"
                        )
                    n = int(b.shape[n_state_axes + j])
                    if sizes.setdefault(c, n) != n:
                        raise ValueError(
                            f"{name}[{f}] axis {n_state_axes + j} (control factor {c}) has {n} "
                            f"actions; num_controls[{c}] is {sizes[c]}"
                        )
            num_c = num_c if num_c is not None else max(sizes, default=-1) + 1
            used = {c for ad in acts for c in ad}
            missing = [c for c in range(num_c) if c not in used]
            if missing:
                raise ValueError(
                    f"control factor {missing[0]} is in no B_action_dependencies entry "
                    "(every control factor must move some state factor)"
                )
            self.B_action_dependencies = acts
            self.num_controls_multi = [sizes[c] for c in range(num_c)]
        out = []
        for f, (b, deps, ad) in enumerate(zip(B_list, self.B_dependencies, acts, strict=True)):
            expected = (
                b.shape[0],
                *(self.num_states[d] for d in deps),
                *(self.num_controls_multi[c] for c in ad),
            )
            if tuple(b.shape) != expected and name != "B":
                raise ValueError(f"{name}[{f}] has shape {tuple(b.shape)}, B[{f}] {expected}")
            lead = b.shape[: 1 + len(deps)]
            out.append(b.reshape(*lead, math.prod(b.shape[1 + len(deps) :])))
        return out

    def _broadcast_to_factors(self, a: Tensor, factors: list[int]) -> Tensor:
        """[O, *S_fl] → [O, S_1, …, S_F], repeating over the factors A does not use."""
        if factors == list(range(self.num_factors)):
            return a
        order = sorted(range(len(factors)), key=lambda i: factors[i])
        a = a.permute(0, *[1 + i for i in order])
        sorted_f = sorted(factors)
        shape = [a.shape[0]] + [
            self.num_states[f] if f in sorted_f else 1 for f in range(self.num_factors)
        ]
        return a.reshape(shape).expand(a.shape[0], *self.num_states).contiguous()
