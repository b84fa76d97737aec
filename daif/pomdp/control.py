"""Policies, expected free energy and action selection, vectorised over policies.

Expected free energy of a policy π over horizon T (pymdp / SPM conventions):

    G(π) = −Σ_t [ utility_t + state info gain_t + parameter info gain_t ]
    utility_t          = Σ_o q(o_t|π) ln P̃(o),           ln P̃ = ln σ(C)
    state info gain_t  = H[q(o_t|π)] − Σ_s q(s_t|π) H[p(o|s)]   (= I(o_t; s_t))
    pA info gain_t     = −Σ_o q(o_t|π) Σ_s W_A(o,s) q(s_t|π),   W = wnorm(pA)
    pB info gain_t     = −Σ_f q(s_t,f|π) · W_B[:, :, u_t] q(s_{t−1},f|π)

and q(π) = σ(ln E − γ G). Two definitions differ between SPM / pymdp 0.0.7.1 and
pymdp 1.0, and both are offered, named:

* ``info_gain="joint"`` (SPM, pymdp 0.0.7.1): the state information gain is the mutual
  information I(o_t; s_t) between the *joint* outcome of all modalities and the state;
  ``info_gain="per_modality"`` (pymdp 1.0): Σ_m I(o_{m,t}; s_t), modality by modality
  (larger or equal when modalities are not independent given the predicted state).
* ``param_info_gain="approx"`` (SPM's ``spm_wnorm``, pymdp 0.0.7.1): W = 1/a₀ − 1/a_i;
  ``param_info_gain="exact"`` (pymdp 1.0's default): W_i = −(ψ(a_i+1) − ψ(a₀+1) +
  ln a₀ − ln a_i), the exact information gain of one outcome (see
  :func:`~daif.pomdp.maths.wnorm_exact`).

Predicted states use the mean field over factors, q(s_t,f|π) = B_f[u_t] q(s_{t−1},f).

Policies that share a prefix share predicted states, so states are propagated over
the *tree* of distinct prefixes (one matrix product per level for all children) and
each policy's G is a sum of its nodes' terms — no Python loop over policies.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from daif.maths import EPS, entropy, log_stable, softmax
from daif.pomdp.maths import joint_from_marginals, marginals_from_joint, wnorm, wnorm_exact

__all__ = [
    "ACTION_SELECTIONS",
    "INFO_GAINS",
    "PARAM_INFO_GAINS",
    "PolicyTree",
    "PreparedModel",
    "action_marginals",
    "construct_policies",
    "evaluate_policies",
    "evaluate_sequences",
    "policy_operator",
    "posterior_over_policies",
    "sample_action",
    "sample_policy",
    "sophisticated_inference",
    "state_efe_terms",
]

ACTION_SELECTIONS = ("deterministic", "stochastic")
INFO_GAINS = ("joint", "per_modality")
PARAM_INFO_GAINS = ("approx", "exact")


def construct_policies(
    num_states: list[int],
    num_controls: list[int] | None = None,
    policy_len: int = 1,
    control_fac_idx: list[int] | None = None,
) -> Tensor:
    """All action sequences over the control factors, in pymdp's order.

    Args:
        num_states: factor sizes (used when ``num_controls`` is None).
        num_controls: actions per factor (uncontrolled factors have 1).
        policy_len: horizon T ≥ 1.
        control_fac_idx: controllable factors (default: those with > 1 action).
    Returns:
        ``[P, T, F]`` long, ``P = Π_f U_f^T``; the last factor at the last step varies
        fastest.
    """
    if policy_len < 1:
        raise ValueError(f"policy_len must be >= 1; got {policy_len}")
    nf = len(num_states)
    if control_fac_idx is None:
        if num_controls is not None:
            control_fac_idx = [f for f, n in enumerate(num_controls) if n > 1]
        else:
            control_fac_idx = list(range(nf))
    if num_controls is None:
        num_controls = [num_states[f] if f in control_fac_idx else 1 for f in range(nf)]
    ranges = [range(n) for n in list(num_controls) * policy_len]
    pols = torch.tensor(list(itertools.product(*ranges)), dtype=torch.long)
    return pols.reshape(-1, policy_len, nf)


@dataclass
class PolicyTree:
    """The prefix tree of a set of policies.

    Attributes:
        parents: per level t, ``[N_t]`` index of each node's parent at level t−1
            (level 0 nodes have parent 0, the root).
        actions: per level t, ``[N_t, F]`` the action taken into the node.
        node_of_policy: ``[T, P]`` the node of policy p at level t.
    """

    parents: list[Tensor] = field(default_factory=list)
    actions: list[Tensor] = field(default_factory=list)
    node_of_policy: Tensor = field(default_factory=lambda: torch.empty(0))

    @classmethod
    def from_policies(cls, policies: Tensor) -> PolicyTree:
        """Build the tree of ``policies [P, T, F]``."""
        p, t_len, nf = policies.shape
        tree = cls()
        nodes = []
        prev_inv = torch.zeros(p, dtype=torch.long)
        for t in range(t_len):
            prefix = policies[:, : t + 1, :].reshape(p, -1)
            uniq, inv = torch.unique(prefix, dim=0, return_inverse=True)
            first = torch.full((uniq.shape[0],), p, dtype=torch.long)
            first = first.scatter_reduce(0, inv, torch.arange(p), reduce="amin")
            tree.parents.append(prev_inv[first].clone())
            tree.actions.append(uniq.reshape(-1, t + 1, nf)[:, t, :].clone())
            nodes.append(inv)
            prev_inv = inv
        tree.node_of_policy = torch.stack(nodes)
        return tree

    def edge_index(self, t: int, f: int, nu: int) -> Tensor | None:
        """Index of level-t nodes among all (parent, action of factor f) children.

        ``None`` when it is the identity (a full level in enumeration order), so the
        gather can be skipped. Cached per (t, f, nu).
        """
        cache = self.__dict__.setdefault("_edge_cache", {})
        key = (t, f, nu)
        if key not in cache:
            idx = self.parents[t] * nu + self.actions[t][:, f]
            n_prev = 1 if t == 0 else self.parents[t - 1].shape[0]
            full = idx.shape[0] == n_prev * nu and bool(
                (idx == torch.arange(idx.shape[0], device=idx.device)).all()
            )
            cache[key] = None if full else idx
        return cache[key]

    def joint_edge_index(self, t: int, num_controls: list[int]) -> Tensor | None:
        """Index of level-t nodes among all (parent, joint action) children.

        The joint action of ``actions [N, F]`` is its mixed-radix index, factor 0 slowest
        (``U_J = Π_f U_f``). ``None`` when it is the identity. Cached per (t, controls).
        """
        cache = self.__dict__.setdefault("_joint_edge_cache", {})
        key = (t, tuple(num_controls))
        if key not in cache:
            joint = torch.zeros_like(self.actions[t][:, 0])
            for f, n in enumerate(num_controls):
                joint = joint * n + self.actions[t][:, f]
            nu = math.prod(num_controls)
            idx = self.parents[t] * nu + joint
            n_prev = 1 if t == 0 else self.parents[t - 1].shape[0]
            full = idx.shape[0] == n_prev * nu and bool(
                (idx == torch.arange(idx.shape[0], device=idx.device)).all()
            )
            cache[key] = None if full else idx
        return cache[key]

    def path_matrix(self, dtype: torch.dtype) -> Tensor:
        """``[N_0 + … + N_{T−1}, P]``: 1 where a node (levels concatenated) lies on a
        policy's path, so node terms ``[…, N] @ path`` are the policies' sums. Cached."""
        cache = self.__dict__.setdefault("_path_cache", {})
        if dtype not in cache:
            p = self.node_of_policy.shape[1]
            rows, offset = [], 0
            for t, parents in enumerate(self.parents):
                rows.append(self.node_of_policy[t] + offset)
                offset += parents.shape[0]
            path = torch.zeros(offset, p, dtype=dtype, device=self.node_of_policy.device)
            cols = torch.arange(p, device=path.device)
            for r in rows:
                path[r, cols] = 1.0
            cache[dtype] = path
        return cache[dtype]

    def policy_nodes(self, t: int) -> Tensor | None:
        """``node_of_policy[t]``, or ``None`` when it is the identity (gather skipped)."""
        cache = self.__dict__.setdefault("_node_cache", {})
        if t not in cache:
            nodes = self.node_of_policy[t]
            ident = torch.arange(nodes.shape[0], device=nodes.device)
            same = self.parents[t].shape[0] == nodes.shape[0] and bool((nodes == ident).all())
            cache[t] = None if same else nodes
        return cache[t]

    def to(self, device: torch.device) -> PolicyTree:
        return PolicyTree(
            [x.to(device) for x in self.parents],
            [x.to(device) for x in self.actions],
            self.node_of_policy.to(device),
        )


def _matmul(x: Tensor, m: Tensor) -> Tensor:
    """``x [b, N, K] @ m [bm, K, J]`` with ``bm`` 1 (shared) or b → ``[b, N, J]``."""
    if m.shape[0] == 1:
        b, n, k = x.shape
        return (x.reshape(b * n, k) @ m[0]).reshape(b, n, -1)
    return torch.bmm(x, m)


class PreparedModel:
    """Quantities derived from A, B, C (and pA, pB) that planning reuses every step.

    All tensors carry a leading model-batch dim ``bm`` (1 if shared by all agents).

    Args:
        A: M tensors ``[bm, O_m, S_1..S_F]``.
        B: F tensors ``[bm, S_f, S_f, U_f]``.
        C: M tensors ``[bm, O_m]`` log-preferences, or ``[bm, T_C, O_m]`` per planning
            step (the same T_C for all time-indexed modalities).
        pA, pB: Dirichlet counts (same shapes) or None.
        info_gain: "joint" (SPM, pymdp 0.0.7.1) or "per_modality" (pymdp 1.0).
        param_info_gain: "approx" (SPM's ``spm_wnorm``) or "exact" (pymdp 1.0).
        joint_outcome_limit: refuse to build the joint-outcome likelihood beyond this
            many entries (O_joint × S_joint) when the joint info gain needs it.
        fused_limit: build the joint-action operators (see ``fwd_values``) only up to
            this many entries.
        B_dependencies: per factor, the factors its next state depends on (default
            ``[f]``); then ``B[f]`` is ``[bm, S_f, *S_deps, U_f]``.

    Attributes:
        lnA, obs_offsets: ``[bm, Σ_m O_m, SJ]`` ln A of all modalities stacked, and each
            modality's first row (for :func:`~daif.pomdp.inference.joint_log_likelihood`).
        values: ``[bm, SJ, 1 + K + K_o]`` per joint state: utility, the K outcome
            entropies, p(o|s) (joint outcome, or modalities side by side); ``values_t``
            one per planning step when C is time-indexed (``num_C_steps`` of them).
        fwd_joint, fwd_values: ``[bm, SJ, U_J·SJ]`` and ``[bm, SJ, U_J·(1 + K + K_o)]``
            with ``(q @ fwd_joint)[u] = B_u q`` and ``(q @ fwd_values)[u] = (B_u q) @ values``
            for every joint action u (B_u = ⊗_f B_f[u_f]), or None when too large; they let
            a tree level's terms come from its parents in one product (``fwd_values_t``:
            one per planning step; ``fwd_values2_t``: ``[bm, SJ, U_J·U_J·(1 + K + K_o)]``,
            two steps ahead, ``(q @ it)[u1, u2] = (B_u2 B_u1 q) @ values``).
    """

    def __init__(
        self,
        A: list[Tensor],
        B: list[Tensor],
        C: list[Tensor],
        pA: list[Tensor] | None = None,
        pB: list[Tensor] | None = None,
        info_gain: str = "joint",
        param_info_gain: str = "approx",
        joint_outcome_limit: int = 2**26,
        fused_limit: int = 2**22,
        B_dependencies: list[list[int]] | None = None,
    ) -> None:
        if info_gain not in INFO_GAINS:
            raise ValueError(f"info_gain must be one of {INFO_GAINS}; got {info_gain!r}")
        if param_info_gain not in PARAM_INFO_GAINS:
            raise ValueError(
                f"param_info_gain must be one of {PARAM_INFO_GAINS}; got {param_info_gain!r}"
            )
        self.info_gain = info_gain
        self.num_states = [int(b.shape[1]) for b in B]
        self.num_controls = [int(b.shape[-1]) for b in B]
        self.B_dependencies = B_dependencies or [[f] for f in range(len(B))]
        self.factorised = all(d == [f] for f, d in enumerate(self.B_dependencies))
        self.num_obs = [int(a.shape[1]) for a in A]
        sj = 1
        for s in self.num_states:
            sj *= s
        self.sj = sj
        bm = max([a.shape[0] for a in A] + [b.shape[0] for b in B] + [c.shape[0] for c in C])
        self.A_flat = [a.reshape(a.shape[0], a.shape[1], sj) for a in A]  # [bm, O, SJ]
        # state inference reads ln A of the observed rows: all modalities stacked once
        ba = max(a.shape[0] for a in A)
        self.lnA = torch.cat([log_stable(a).expand(ba, -1, -1) for a in self.A_flat], 1)
        self.obs_offsets = torch.tensor(
            [0, *itertools.accumulate(self.num_obs)][:-1], device=self.lnA.device
        )
        # ln P̃(o) = ln σ(C), pymdp's normalisation of relative preferences; a C with a
        # time axis ([bm, T_C, O]) gives the preferences of each planning step
        steps = {c.shape[1] for c in C if c.ndim == 3}
        if len(steps) > 1:
            raise ValueError(f"time-indexed C must share one number of steps; got {sorted(steps)}")
        self.num_C_steps = steps.pop() if steps else 1
        lnC = [log_stable(softmax(c if c.ndim == 3 else c.unsqueeze(1))) for c in C]
        # expected utility of each joint state and step: Σ_m Σ_o A_m(o|s) ln P̃_t(o_m)
        u = sum(torch.einsum("zos,zto->zts", a, lc) for a, lc in zip(self.A_flat, lnC, strict=True))
        utility_s = u.expand(bm, self.num_C_steps, sj)  # [bm, T_C, SJ]
        # joint outcome likelihood L[o_1..o_M, s] = Π_m A_m(o_m|s): the joint info gain
        # and the outcome branches of sophisticated inference need it
        oj = 1
        for o in self.num_obs:
            oj *= o
        self.num_obs_joint = oj
        too_big = len(A) > 1 and oj * sj > joint_outcome_limit
        if too_big and info_gain == "joint":
            raise ValueError(
                f"joint outcome space {self.num_obs} × {sj} states is too large "
                f"({oj * sj} > {joint_outcome_limit}); use info_gain='per_modality' "
                "or use_states_info_gain=False"
            )
        self.L: Tensor | None = None
        self.LT: Tensor | None = None
        if not too_big:
            lj = self.A_flat[0]
            for a in self.A_flat[1:]:
                lj = (lj.unsqueeze(2) * a.unsqueeze(1)).reshape(
                    max(lj.shape[0], a.shape[0]), -1, sj
                )
            self.L = lj  # [bm, OJ, SJ]
            self.LT = lj.transpose(1, 2).contiguous()  # [bm, SJ, OJ]
        if info_gain == "joint":
            assert self.L is not None
            # entropy of the joint outcome per state, [bm, SJ, 1]
            H_A = entropy(self.L, dim=1).unsqueeze(-1)
            self.outcome_T = self.LT  # q(s) @ outcome_T = q(o) of the joint outcome
            self.outcome_seg: Tensor | None = None
        else:
            # per-modality entropies [bm, SJ, M]; q(o_m) of all modalities side by side,
            # and a [ΣO, M] matrix of −1 per modality, so (q ln q) @ it gives each entropy
            H_A = torch.stack([entropy(a, dim=1) for a in self.A_flat], -1)
            bo = max(a.shape[0] for a in self.A_flat)
            self.outcome_T = torch.cat(
                [a.expand(bo, -1, -1).transpose(1, 2) for a in self.A_flat], -1
            ).contiguous()
            self.outcome_seg = torch.block_diag(
                *[-a.new_ones(o, 1) for a, o in zip(self.A_flat, self.num_obs, strict=True)]
            )
        bu = max(utility_s.shape[0], H_A.shape[0], self.outcome_T.shape[0])
        self.num_entropies = int(H_A.shape[-1])
        # per planning step, [bm, SJ, 1 + K + K_o]: per state, the utility, the K outcome
        # entropies H[p(o|s)] and p(o|s) itself, so one product q(s) @ values gives every
        # expectation
        self.values_t = [
            torch.cat(
                [
                    utility_s[:, t].expand(bu, sj).unsqueeze(-1),
                    H_A.expand(bu, sj, -1),
                    self.outcome_T.expand(bu, -1, -1),
                ],
                -1,
            )
            for t in range(self.num_C_steps)
        ]
        self.values = self.values_t[0]
        # transition operators: (q @ fwd)[u, i] = Σ_j B[i, j, u] q_j, with j over the joint
        # state of the factor's dependencies ([bm, S_deps, U·S_f])
        self.fwd = [_forward_operator(b) for b in B]
        self._fuse(fused_limit)
        self.AT = [a.transpose(1, 2).contiguous() for a in self.A_flat]  # [bm, SJ, O]
        w = wnorm if param_info_gain == "approx" else wnorm_exact
        self.wA = None
        if pA is not None:
            # W_A masked to where counts exist, as [bm, SJ, O] for q(s) @ W^T
            self.wA = [
                (w(p, dim=1) * (p > 0)).reshape(p.shape[0], p.shape[1], sj).transpose(1, 2)
                for p in pA
            ]
        self.wB = None
        if pB is not None:
            self.wB = [_forward_operator(w(p, dim=1) * (p > 0)) for p in pB]

    def _fuse(self, limit: int) -> None:
        """Joint-action transition and value operators, where they are small and pay off.

        Fused, a level costs N·SJ·U_J·K multiply-adds instead of N·U·SJ·(SJ + K), but the
        operator has SJ·U_J·K entries: with few nodes (matrix-vector products, bound by
        memory) it pays only when K ≤ SJ, or when everything is tiny (per-call overhead).
        """
        self.fwd_joint: Tensor | None = None
        self.fwd_values_t: list[Tensor] | None = None
        self.fwd_values2_t: list[Tensor] | None = None
        self.fwd_values: Tensor | None = None
        sj, k = self.sj, self.values.shape[-1]
        uj = math.prod(self.num_controls)
        # with dependencies between factors the mean-field prediction is not linear in
        # the joint state, so there is no joint-action operator
        if (
            not self.factorised
            or sj * sj * uj > limit
            or sj * uj * k > limit
            or (k > sj and sj * uj * k > 2**16)
        ):
            return
        bm = max(max(f.shape[0] for f in self.fwd), self.values.shape[0])
        # ⊗_f B_f: [bm, S_prev, U, S_next] with factor 0 slowest in states and actions
        s0, u0 = self.num_states[0], self.num_controls[0]
        joint = self.fwd[0].expand(bm, -1, -1).reshape(bm, s0, u0, s0)
        for f in range(1, len(self.fwd)):
            s, u = self.num_states[f], self.num_controls[f]
            g = self.fwd[f].expand(bm, -1, -1).reshape(bm, s, u, s)
            a, ua = joint.shape[1], joint.shape[2]
            joint = torch.einsum("zaub,zcvd->zacuvbd", joint, g).reshape(bm, a * s, ua * u, a * s)
        joint = joint.reshape(bm, sj, uj, sj)
        self.fwd_joint = joint.reshape(bm, sj, uj * sj)
        self.fwd_values_t = [
            (joint.reshape(bm, sj * uj, sj) @ v.expand(bm, -1, -1)).reshape(bm, sj, uj * k)
            for v in self.values_t
        ]
        self.fwd_values = self.fwd_values_t[0]
        # two steps at once, [bm, SJ, U_J·U_J·K]: (q @ it)[u1, u2] = (B_u2 B_u1 q) @ values,
        # so the last tree level's terms come from its grandparents' states and the widest
        # state propagation (to the last level's parents) is skipped
        if sj * uj * uj * k <= limit:
            self.fwd_values2_t = [
                (self.fwd_joint.reshape(bm, sj * uj, sj) @ v).reshape(bm, sj, uj * uj * k)
                for v in self.fwd_values_t
            ]

    def step(self, t: int) -> int:
        """Index of planning step t (0 = the next) in the time-indexed quantities."""
        return t if self.num_C_steps > 1 else 0


def _forward_operator(b: Tensor) -> Tensor:
    """``B [bm, S', *S_deps, U]`` → ``op [bm, S_deps, U·S']``.

    (q @ op)[u, i] = Σ_j B[i, j, u] q_j, j over the joint state of the dependencies.
    """
    bm, s_next, u = b.shape[0], b.shape[1], b.shape[-1]
    return b.reshape(bm, s_next, -1, u).permute(0, 2, 3, 1).reshape(bm, -1, u * s_next)


def dependency_joint(qs: list[Tensor], deps: list[int]) -> Tensor:
    """The mean-field joint of the factors in ``deps`` (``[..., Π S_d]``, the first slowest),
    the input of a transition that depends on them."""
    return qs[deps[0]] if len(deps) == 1 else joint_from_marginals([qs[d] for d in deps])


def _children(q: Tensor, op: Tensor, idx: Tensor | None, nu: int) -> Tensor:
    """States after each tree edge: ``q [b, N_prev, S]`` → ``[b, N_t, S]``.

    ``idx`` selects (parent, action) pairs from all children, ``None`` keeps them all.
    """
    allu = _matmul(q, op)  # [b, N_prev, U*S]
    b, n_prev, _ = allu.shape
    flat = allu.reshape(b, n_prev * nu, allu.shape[-1] // nu)
    return flat if idx is None else flat.index_select(1, idx)


def state_efe_terms(
    joint: Tensor,
    model: PreparedModel,
    use_utility: bool = True,
    use_states_info_gain: bool = True,
    t: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Utility and state information gain of predicted joint states.

    utility = Σ_s q(s) Σ_m Σ_o A_m(o|s) ln P̃(o_m);
    info gain (joint) = H[Σ_s q(s) p(o|s)] − Σ_s q(s) H[p(o|s)] over joint outcomes o;
    info gain (per_modality) = Σ_m ( H[Σ_s q(s) A_m(o_m|s)] − Σ_s q(s) H[A_m(·|s)] ).

    Args:
        joint: ``[b, N, SJ]`` predicted joint-state distributions (N policies or nodes).
        t: the planning step (0 = the next), for a time-indexed C.
    Returns:
        (utility ``[b, N]``, info gain ``[b, N]``, predicted outcomes ``[b, N, K_o]``: the
        joint outcome (K_o = OJ) or the modalities side by side (K_o = Σ_m O_m)).
    """
    # one product gives every per-state expectation: utility, ambiguities, q(o)
    vals = _matmul(joint, model.values_t[model.step(t)])
    return terms_from_values(vals, model, use_utility, use_states_info_gain)


def terms_from_values(
    vals: Tensor, model: PreparedModel, use_utility: bool = True, use_states_info_gain: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`state_efe_terms` from ``vals = q(s) @ model.values`` ``[b, N, 1 + K + K_o]``."""
    k = model.num_entropies
    util = vals[..., 0] if use_utility else vals.new_zeros(vals.shape[:-1])
    qo = vals[..., 1 + k :]
    if not use_states_info_gain:
        return util, vals.new_zeros(vals.shape[:-1]), qo
    # H[q(o)] − E_q H[p(o|s)] of the joint outcome, or Σ_m of it per modality: with the
    # modalities side by side Σ_m H[q(o_m)] = −Σ_o q(o) ln q(o) over all of them
    # (ln floored as log_stable; the logarithm in place saves a pass on large batches)
    plogp = qo * qo.clamp(min=EPS).log_()
    sig = -plogp.sum(-1) - vals[..., 1 : 1 + k].sum(-1)
    return util, sig, qo


def evaluate_policies(
    qs: list[Tensor],
    model: PreparedModel,
    tree: PolicyTree,
    use_utility: bool = True,
    use_states_info_gain: bool = True,
    use_param_info_gain: bool = False,
) -> dict[str, Tensor]:
    """Expected free energy terms of every policy.

    Args:
        qs: F tensors ``[b, S_f]`` current posterior.
        model: derived model tensors.
        tree: the policies' prefix tree.
    Returns:
        dict of ``[b, P]`` tensors: ``utility``, ``states_info_gain``,
        ``param_info_gain`` (each summed over the horizon) and ``G`` = −(their sum).
    """
    b = qs[0].shape[0]
    p = tree.node_of_policy.shape[1]
    dt, dev = qs[0].dtype, qs[0].device
    zero = torch.zeros(b, p, dtype=dt, device=dev)
    util, sig, pig = zero, zero, zero
    parent_q = [q.unsqueeze(1) for q in qs]  # [b, 1, S_f]
    if model.fwd_values is not None and not use_param_info_gain:
        return _evaluate_fused(parent_q, model, tree, use_utility, use_states_info_gain)
    for t in range(len(tree.parents)):
        nus = model.num_controls
        edges = [tree.edge_index(t, f, nus[f]) for f in range(len(parent_q))]
        inputs = [dependency_joint(parent_q, deps) for deps in model.B_dependencies]
        child_q = [_children(x, model.fwd[f], edges[f], nus[f]) for f, x in enumerate(inputs)]
        joint = joint_from_marginals(child_q)  # [b, N, SJ]
        nodes = tree.policy_nodes(t)
        u_node, sig_node, _ = state_efe_terms(joint, model, use_utility, use_states_info_gain, t)
        if use_utility:
            util = util + (u_node if nodes is None else u_node[:, nodes])
        if use_states_info_gain:
            sig = sig + (sig_node if nodes is None else sig_node[:, nodes])
        if use_param_info_gain:
            g = torch.zeros_like(joint[..., 0])
            if model.wA is not None:
                for m, w in enumerate(model.wA):
                    qo_m = _matmul(joint, model.AT[m])
                    g = g - (qo_m * _matmul(joint, w)).sum(-1)
            if model.wB is not None:
                for f, w in enumerate(model.wB):
                    wq = _children(inputs[f], w, edges[f], nus[f])
                    g = g - (child_q[f] * wq).sum(-1)
            pig = pig + (g if nodes is None else g[:, nodes])
        parent_q = child_q
    return {
        "utility": util,
        "states_info_gain": sig,
        "param_info_gain": pig,
        "G": -(util + sig + pig),
    }


def _node_values(parent: Tensor, model: PreparedModel, tree: PolicyTree) -> list[Tensor]:
    """Per tree level, ``[b, N_t, K]``: each node's ``q(s) @ values`` (utility, outcome
    entropies, predicted outcomes) from the root joint states ``parent [b, 1, SJ]``, level by
    level with the joint-action operators (the last two full levels in one product)."""
    assert model.fwd_values_t is not None and model.fwd_joint is not None
    nus = model.num_controls
    uj = math.prod(nus)
    levels = len(tree.parents)
    out = []
    for t in range(levels):
        edges = tree.joint_edge_index(t, nus)
        out.append(_children(parent, model.fwd_values_t[model.step(t)], edges, uj))
        last_two = t + 2 == levels and model.fwd_values2_t is not None
        if last_two and edges is None and tree.joint_edge_index(t + 1, nus) is None:
            # full last two levels: the last one's values straight from this level's parents
            assert model.fwd_values2_t is not None
            op2 = model.fwd_values2_t[model.step(t + 1)]
            out.append(_children(parent, op2, None, uj * uj))
            break
        if t + 1 < levels:
            parent = _children(parent, model.fwd_joint, edges, uj)
    return out


def policy_operator(model: PreparedModel, tree: PolicyTree, limit: int = 2**22) -> Tensor | None:
    """The values of every node of the policy tree as one linear map of the current joint
    state: ``W [bm, SJ, N·K]`` with ``(q(s) @ W)[n] = q(s_n | π) @ values`` for the N nodes
    (levels concatenated).

    The mean-field predictions of a factorised B are linear in the joint state,
    q(s_n) = B_{u_t} ⋯ B_{u_1} q(s), so planning is one product instead of a loop over
    levels. Built once per model and tree by running :func:`_node_values` on the basis
    states; None when B has factor dependencies, when there are no joint-action operators,
    or when W would have more than ``limit`` entries. Cached on ``model``.
    """
    cache = model.__dict__.setdefault("_policy_operators", {})
    hit = cache.get(id(tree))
    if hit is not None and hit[0] is tree:
        return hit[1]
    W = None
    if model.fwd_values_t is not None and model.fwd_joint is not None:
        sj, k = model.sj, model.values.shape[-1]
        n = sum(int(p.shape[0]) for p in tree.parents)
        bm = max(model.fwd_joint.shape[0], *(v.shape[0] for v in model.fwd_values_t))
        if bm * sj * n * k <= limit:
            eye = torch.eye(sj, dtype=model.lnA.dtype, device=model.lnA.device).unsqueeze(1)
            ops = []
            for z in range(bm):
                one = _ModelRow(model, z)
                vals = _node_values(eye, one, tree)  # type: ignore[arg-type]
                ops.append(torch.cat(vals, 1).reshape(sj, n * k))
            W = torch.stack(ops)
    cache[id(tree)] = (tree, W)
    return W


class _ModelRow:
    """Model ``z`` of a batch of prepared models, for :func:`_node_values` (shared
    operators, ``bm`` = 1, are used as they are)."""

    def __init__(self, model: PreparedModel, z: int) -> None:
        def row(x: Tensor) -> Tensor:
            return x if x.shape[0] == 1 else x[z : z + 1]

        assert model.fwd_values_t is not None and model.fwd_joint is not None
        self.num_controls = model.num_controls
        self.fwd_joint = row(model.fwd_joint)
        self.fwd_values_t = [row(v) for v in model.fwd_values_t]
        two = model.fwd_values2_t
        self.fwd_values2_t = None if two is None else [row(v) for v in two]
        self.step = model.step


def _evaluate_fused(
    parent_q: list[Tensor],
    model: PreparedModel,
    tree: PolicyTree,
    use_utility: bool,
    use_states_info_gain: bool,
) -> dict[str, Tensor]:
    """:func:`evaluate_policies` with the joint-action operators: every node's values in one
    product with :func:`policy_operator` where it is small enough, else level by level from
    the parents' joint states (the same mean-field predictions, since
    ⊗_f B_f q_f = (⊗_f B_f)(⊗_f q_f))."""
    joint = joint_from_marginals(parent_q)  # [b, 1, SJ]
    W = policy_operator(model, tree)
    if W is not None:
        b = joint.shape[0]
        vals = [_matmul(joint, W).reshape(b, -1, model.values.shape[-1])]
    else:
        vals = _node_values(joint, model, tree)
    utils, sigs = [], []
    for v in vals:
        u_t, s_t, _ = terms_from_values(v, model, use_utility, use_states_info_gain)
        utils.append(u_t)
        sigs.append(s_t)
    # each policy's sum over its path of nodes in one product ([b, N] terms, not the
    # [b, N, K] values, are concatenated)
    util, sig = (utils[0], sigs[0]) if len(vals) == 1 else (torch.cat(utils, 1), torch.cat(sigs, 1))
    b, n = util.shape
    per_policy = torch.stack([util, sig]).reshape(2 * b, n) @ tree.path_matrix(util.dtype)
    util, sig = per_policy[:b], per_policy[b:]
    return {
        "utility": util,
        "states_info_gain": sig,
        "param_info_gain": torch.zeros_like(util),
        "G": -(util + sig),
    }


def posterior_over_policies(
    G: Tensor, gamma: float | Tensor, E: Tensor | None = None, F: Tensor | None = None
) -> Tensor:
    """q(π) = σ(ln E − γ G − F) over the last dim; ``E`` None means uniform.

    Args:
        G: ``[b, P]``; gamma: a number or ``[b, 1]`` (one per agent); E: ``[P]`` or
            ``[b, P]``; F: ``[b, P]`` the variational free energy of each policy (MMP) or
            None.
    """
    logits = -gamma * G
    if E is not None:
        logits = logits + log_stable(E)
    if F is not None:
        logits = logits - F
    return softmax(logits)


def action_marginals(q_pi: Tensor, policies: Tensor, num_controls: list[int]) -> list[Tensor]:
    """q(u_f) = Σ_π q(π) [π_0,f = u], per factor.

    Args:
        q_pi: ``[b, P]``; policies ``[P, T, F]``.
    Returns:
        F tensors ``[b, U_f]``.
    """
    # scatter-add q(π) onto each policy's first action (no [P, U] one-hot per call); q(π)
    # sums to 1, so the marginals do too
    return [
        q_pi.new_zeros(q_pi.shape[0], n).index_add_(1, policies[:, 0, f], q_pi)
        for f, n in enumerate(num_controls)
    ]


def sample_action(
    marginals: list[Tensor],
    action_selection: str = "deterministic",
    alpha: float | Tensor = 16.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one action per factor from the action marginals.

    Deterministic: argmax (first maximum). Stochastic: sample from σ(α ln q(u)), α a
    number or ``[b, 1]`` (one per agent).

    Returns:
        ``[b, F]`` long.
    """
    if action_selection not in ACTION_SELECTIONS:
        raise ValueError(
            f"action_selection must be one of {ACTION_SELECTIONS}; got {action_selection!r}"
        )
    acts = []
    for m in marginals:
        if action_selection == "deterministic":
            acts.append(m.argmax(-1))
        else:
            p = softmax(log_stable(m), alpha)
            acts.append(torch.multinomial(p, 1, generator=generator).squeeze(-1))
    return torch.stack(acts, -1)


def sample_policy(
    q_pi: Tensor,
    policies: Tensor,
    action_selection: str = "deterministic",
    alpha: float | Tensor = 16.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """First actions of a policy picked from q(π) (pymdp's ``sampling_mode="full"``).

    Returns:
        ``[b, F]`` long.
    """
    if action_selection not in ACTION_SELECTIONS:
        raise ValueError(
            f"action_selection must be one of {ACTION_SELECTIONS}; got {action_selection!r}"
        )
    if action_selection == "deterministic":
        idx = q_pi.argmax(-1)
    else:
        idx = torch.multinomial(softmax(log_stable(q_pi), alpha), 1, generator=generator).squeeze(
            -1
        )
    return policies[idx.to(policies.device), 0, :].to(q_pi.device)


# ---------------------------------------------------------------------------
# Sophisticated inference
# ---------------------------------------------------------------------------
def _one_step_terms(
    joint: Tensor, model: PreparedModel, use_utility: bool, use_states_info_gain: bool
) -> tuple[Tensor, Tensor]:
    """−(utility + state info gain) of predicted joint states ``[K, U, SJ]`` and q(o)."""
    k, u, sj = joint.shape
    flat = joint.reshape(1, k * u, sj)
    util, sig, qo = state_efe_terms(flat, model, use_utility, use_states_info_gain)
    if model.outcome_seg is not None:
        # branching needs the joint outcome, not the modalities side by side
        assert model.LT is not None
        qo = _matmul(flat, model.LT[:1])
    return -(util + sig).reshape(k, u), qo.reshape(k, u, -1)


def sophisticated_inference(
    qs: list[Tensor],
    model: PreparedModel,
    joint_actions: Tensor,
    horizon: int,
    gamma: float = 16.0,
    use_utility: bool = True,
    use_states_info_gain: bool = True,
    action_threshold: float = 1.0 / 16.0,
    obs_threshold: float = 1.0 / 16.0,
) -> Tensor:
    """Expected free energy of each next action by recursive search over actions and outcomes.

    G(u | q) = G_1(u | q) + Σ_o q(o | u) Σ_u' q(u' | o) G(u' | q(s | o, u)),
    q(u' | o) = σ(−γ G(· | q(s | o, u))), to depth ``horizon``. Branches are pruned:
    an action is expanded only if its one-step probability σ(−γ G_1) exceeds
    ``action_threshold`` and an outcome only if q(o | u) exceeds ``obs_threshold``
    (as in SPM's ``spm_forwards``). The expectation is renormalised over the outcomes
    kept, and a pruned action is charged the worst continuation among its row's
    expanded actions, so skipping its future never makes it look better.
    Posteriors after an outcome are over the joint state, projected back to
    factor marginals (mean field). Uses the shared model (``bm`` = 1).

    Args:
        qs: F tensors ``[b, S_f]``.
        joint_actions: ``[U, F]`` the actions (one-step policies) to score.
        horizon: search depth ≥ 1.
    Returns:
        G ``[b, U]``.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1; got {horizon}")
    return _si_recurse(
        [q for q in qs],
        model,
        joint_actions,
        horizon,
        gamma,
        use_utility,
        use_states_info_gain,
        action_threshold,
        obs_threshold,
    )


def _si_recurse(
    qs: list[Tensor],
    model: PreparedModel,
    joint_actions: Tensor,
    depth: int,
    gamma: float,
    use_utility: bool,
    use_sig: bool,
    act_thr: float,
    obs_thr: float,
) -> Tensor:
    k = qs[0].shape[0]
    # predicted factor marginals for every joint action: [K, U, S_f]
    nxt = []
    for f, deps in enumerate(model.B_dependencies):
        # B_f applied to the mean-field joint of the factors it depends on
        x = dependency_joint(qs, deps)
        allu = (x @ model.fwd[f][0]).reshape(k, model.num_controls[f], -1)
        nxt.append(allu[:, joint_actions[:, f], :])
    joint = joint_from_marginals(nxt)  # [K, U, SJ]
    g, qo = _one_step_terms(joint, model, use_utility, use_sig)
    if depth == 1:
        return g
    q_u = softmax(-gamma * g)
    ki, ui = (q_u > act_thr).nonzero(as_tuple=True)
    if ki.numel() == 0:
        return g
    qo_sel = qo[ki, ui]  # [n, OJ]
    ni, oi = (qo_sel > obs_thr).nonzero(as_tuple=True)
    if ni.numel() == 0:
        return g
    prior = joint[ki[ni], ui[ni]]  # [m, SJ]
    post = model.L[0][oi] * prior
    post = post / post.sum(-1, keepdim=True)
    post_f = marginals_from_joint(post, model.num_states)
    g_next = _si_recurse(
        post_f, model, joint_actions, depth - 1, gamma, use_utility, use_sig, act_thr, obs_thr
    )
    value = (softmax(-gamma * g_next) * g_next).sum(-1)  # [m]
    p_kept = qo_sel[ni, oi]
    n = ki.shape[0]
    num = torch.zeros(n, dtype=g.dtype, device=g.device).index_add(0, ni, p_kept * value)
    den = torch.zeros(n, dtype=g.dtype, device=g.device).index_add(0, ni, p_kept)
    # expectation over the outcomes kept (renormalised so pruning does not shrink it)
    per_branch = torch.where(den > 0, num / den.clamp(min=1e-30), torch.zeros_like(num))
    cont = torch.zeros_like(g).index_put((ki, ui), per_branch)
    expanded = torch.zeros_like(g, dtype=torch.bool).index_put(
        (ki, ui), torch.ones_like(ki, dtype=torch.bool)
    )
    # a pruned action is charged the worst continuation of its row's expanded ones, so
    # that skipping its future never makes it look better than the actions searched
    worst = torch.where(expanded, cont, torch.full_like(cont, -torch.inf)).amax(-1, keepdim=True)
    worst = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst))
    return g + torch.where(expanded, cont, worst.expand_as(cont))


def evaluate_sequences(
    qs_seq: list[list[Tensor]],
    model: PreparedModel,
    use_utility: bool = True,
    use_states_info_gain: bool = True,
    use_param_info_gain: bool = False,
) -> dict[str, Tensor]:
    """Expected free energy terms of given per-policy state sequences (used after MMP).

    Args:
        qs_seq: per time step, F tensors ``[b, P, S_f]`` (q(s_t | π)).
    Returns:
        dict of ``[b, P]`` tensors as :func:`evaluate_policies` (the parameter
        information gain covers A only: the per-policy sequences carry no edges).
    """
    b, p = qs_seq[0][0].shape[:2]
    dt, dev = qs_seq[0][0].dtype, qs_seq[0][0].device
    util = torch.zeros(b, p, dtype=dt, device=dev)
    sig = torch.zeros(b, p, dtype=dt, device=dev)
    pig = torch.zeros(b, p, dtype=dt, device=dev)
    for qs_t in qs_seq:
        joint = joint_from_marginals(qs_t)  # [b, P, SJ]
        u_t, sig_t, _ = state_efe_terms(joint, model, use_utility, use_states_info_gain)
        util, sig = util + u_t, sig + sig_t
        if use_param_info_gain and model.wA is not None:
            for m, w in enumerate(model.wA):
                pig = pig - (_matmul(joint, model.AT[m]) * _matmul(joint, w)).sum(-1)
    return {
        "utility": util,
        "states_info_gain": sig,
        "param_info_gain": pig,
        "G": -(util + sig + pig),
    }
