"""A pymdp-style active inference agent for discrete POMDPs, batched in torch.

``Agent`` keeps pymdp's names (A, B, C, D, E, pA, pB, pD, qs, q_pi, G, gamma, alpha,
policy_len, inference_algo, …) and methods (``infer_states``, ``infer_policies``,
``sample_action``, ``update_A``, ``update_B``, ``update_D``, ``reset``), but every
belief carries a leading batch dimension of ``batch_size`` independent agents that
share (or, once they learn, each own) the generative model.

The public methods run under ``torch.inference_mode()`` (about a fifth less per-call
overhead on small models): beliefs and learned counts are inference tensors, for reading
and for further agent calls, not for autograd.

Differences from pymdp, on purpose:
* the agent keeps its beliefs (pymdp 1.0 passes them in and out) and ``infer_states``
  takes ``[batch, num_modalities]`` indices (a tuple/int for one agent);
* ``reset`` also forgets the last action, so the next prior is D, and can reset chosen
  batch rows only (fixed-point inference);
* fixed-point inference stops once the free energy settles (``dF_tol``; pymdp 1.0 always
  runs ``num_iter`` sweeps);
* the information gains default to SPM's definitions (``info_gain="joint"``,
  ``param_info_gain="approx"``, as pymdp 0.0.7.1); pymdp 1.0's are named options;
* with ``inference_algo="mmp"`` the window's past actions are always the last
  ``T_past − 1`` ones (pymdp 0.0.7.1 reuses the whole action history when
  ``inference_horizon == 1``);
* ``planning="sophisticated"`` scores one-step actions by recursive tree search to depth
  ``policy_len`` instead of enumerating open-loop policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from daif.pomdp import control, inference, learning
from daif.pomdp.model import GenerativeModel

__all__ = ["Agent"]

_ALGOS = {"fpi": "fpi", "vanilla": "fpi", "mmp": "mmp"}
_PLANNING = ("enumerate", "sophisticated")
_SAMPLING = ("marginal", "full")


class Agent:
    """Active inference agent (perception, planning, action, learning).

    Args:
        A, B, C, D, E, pA, pB, pD: the generative model in pymdp's layout (see
            :class:`~daif.pomdp.model.GenerativeModel`); or pass ``model``: one
            ``GenerativeModel`` shared by the batch, or one per agent (same sizes).
        A_factor_list: factors each modality's A depends on.
        B_dependencies: factors each factor's next state depends on (default itself);
            ``B[f]`` is then ``[S_f, *(S_d for d in B_dependencies[f]), U_f]``. Needs
            fixed-point inference, enumerated policies and no B learning.
        policy_len: planning horizon T.
        inference_horizon: MMP window of past observations.
        control_fac_idx: controllable factors (default: factors with > 1 action).
        policies: ``[P, T, F]`` explicit policies (default: all sequences).
        gamma: policy precision γ in q(π) = σ(ln E − γ G): a number, or one per agent
            (``[batch_size]``).
        alpha: action precision α for stochastic selection (a number or one per agent).
        use_utility, use_states_info_gain, use_param_info_gain: EFE terms.
        info_gain: "joint" (SPM, pymdp 0.0.7.1: I(o; s) of the joint outcome) or
            "per_modality" (pymdp 1.0: Σ_m I(o_m; s)).
        param_info_gain: "approx" (SPM's ``spm_wnorm``, pymdp 0.0.7.1) or "exact"
            (pymdp 1.0's default, the digamma form of the Dirichlet information gain).
        action_selection: "deterministic" (argmax) or "stochastic" (σ(α ln q(u))).
        sampling_mode: "marginal" (act from action marginals) or "full" (from q(π)).
        inference_algo: "fpi" (a.k.a. "VANILLA") or "mmp".
        inference_params: fpi: ``num_iter``, ``dF``, ``dF_tol``; mmp: ``num_iter``, ``tau``.
        planning: "enumerate" or "sophisticated".
        si_action_threshold, si_obs_threshold: pruning thresholds of the tree search.
        modalities_to_learn, factors_to_learn: "all" or lists of indices.
        lr_pA, lr_pB, lr_pD: learning rates; fr_pA, fr_pB, fr_pD: forgetting (1 = none).
        batch_size: number of agents.
        device, dtype: where and in which precision beliefs live.
        seed: seed of a private generator for stochastic selection (None: global RNG).
    """

    def __init__(
        self,
        A: Any = None,
        B: Any = None,
        C: Any = None,
        D: Any = None,
        E: Any = None,
        pA: Any = None,
        pB: Any = None,
        pD: Any = None,
        *,
        model: GenerativeModel | Sequence[GenerativeModel] | None = None,
        A_factor_list: Sequence[Sequence[int]] | None = None,
        B_dependencies: Sequence[Sequence[int]] | None = None,
        policy_len: int = 1,
        inference_horizon: int = 1,
        control_fac_idx: list[int] | None = None,
        policies: Any = None,
        gamma: float = 16.0,
        alpha: float = 16.0,
        use_utility: bool = True,
        use_states_info_gain: bool = True,
        use_param_info_gain: bool = False,
        info_gain: str = "joint",
        param_info_gain: str = "approx",
        action_selection: str = "deterministic",
        sampling_mode: str = "marginal",
        inference_algo: str = "fpi",
        inference_params: dict[str, Any] | None = None,
        planning: str = "enumerate",
        si_action_threshold: float = 1.0 / 16.0,
        si_obs_threshold: float = 1.0 / 16.0,
        modalities_to_learn: str | list[int] = "all",
        lr_pA: float = 1.0,
        fr_pA: float = 1.0,
        factors_to_learn: str | list[int] = "all",
        lr_pB: float = 1.0,
        fr_pB: float = 1.0,
        lr_pD: float = 1.0,
        fr_pD: float = 1.0,
        use_BMA: bool = True,
        batch_size: int = 1,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> None:
        models = _check_models(model, batch_size) if isinstance(model, (list, tuple)) else None
        if models is not None:
            model = models[0]
        if model is None:
            model = GenerativeModel(
                A,
                B,
                C,
                D,
                E,
                pA,
                pB,
                pD,
                A_factor_list=A_factor_list,
                B_dependencies=B_dependencies,
            )
        algo = _ALGOS.get(str(inference_algo).lower())
        if algo is None:
            raise ValueError(
                f"inference_algo must be 'fpi' (VANILLA) or 'mmp'; got {inference_algo!r}"
            )
        if action_selection not in control.ACTION_SELECTIONS:
            raise ValueError(
                "action_selection must be 'deterministic' or 'stochastic'; "
                f"got {action_selection!r}"
            )
        if sampling_mode not in _SAMPLING:
            raise ValueError(f"sampling_mode must be 'marginal' or 'full'; got {sampling_mode!r}")
        if info_gain not in control.INFO_GAINS:
            raise ValueError(f"info_gain must be one of {control.INFO_GAINS}; got {info_gain!r}")
        if param_info_gain not in control.PARAM_INFO_GAINS:
            raise ValueError(
                f"param_info_gain must be one of {control.PARAM_INFO_GAINS}; "
                f"got {param_info_gain!r}"
            )
        if planning not in _PLANNING:
            raise ValueError(f"planning must be 'enumerate' or 'sophisticated'; got {planning!r}")
        if planning == "sophisticated" and algo != "fpi":
            raise ValueError("planning='sophisticated' needs inference_algo='fpi'")
        for name, val in (("policy_len", policy_len), ("inference_horizon", inference_horizon)):
            if int(val) != val or val < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {val!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        for name, val in (("gamma", gamma), ("alpha", alpha)):
            arr = np.asarray(val, dtype=float)
            if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != batch_size):
                raise ValueError(
                    f"{name} must be a number or one per agent ({batch_size}); "
                    f"got shape {arr.shape}"
                )
            bad = ~np.isfinite(arr) | (arr < 0)
            if bad.any():
                where = "" if arr.ndim == 0 else f" at agent {int(np.flatnonzero(bad)[0])}"
                raise ValueError(f"{name} must be finite and >= 0; got {val!r}{where}")
        if planning == "sophisticated" and np.ndim(gamma) > 0:
            raise ValueError("planning='sophisticated' needs one gamma for the batch")
        for name, val in (("lr_pA", lr_pA), ("lr_pB", lr_pB), ("lr_pD", lr_pD)):
            if val < 0:
                raise ValueError(f"{name} must be >= 0; got {val!r}")
        for name, val in (("fr_pA", fr_pA), ("fr_pB", fr_pB), ("fr_pD", fr_pD)):
            if not 0.0 < val <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {val!r}")

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.num_obs = model.num_obs
        self._num_obs_t = torch.tensor(self.num_obs, device=self.device)
        self.num_states = model.num_states
        self.num_controls = model.num_controls
        self.num_modalities = model.num_modalities
        self.num_factors = model.num_factors
        self.policy_len = int(policy_len)
        self.inference_horizon = int(inference_horizon)
        # one precision for all agents stays a float; one per agent is a [b, 1] column
        self.gamma: float | Tensor = self._precision(gamma)
        self.alpha: float | Tensor = self._precision(alpha)
        self.use_utility = use_utility
        self.use_states_info_gain = use_states_info_gain
        self.use_param_info_gain = use_param_info_gain
        self.info_gain = info_gain
        self.param_info_gain = param_info_gain
        self.action_selection = action_selection
        self.sampling_mode = sampling_mode
        self.inference_algo = algo
        self.planning = planning
        self.si_action_threshold = si_action_threshold
        self.si_obs_threshold = si_obs_threshold
        self.use_BMA = use_BMA
        self.lr_pA, self.lr_pB, self.lr_pD = lr_pA, lr_pB, lr_pD
        self.fr_pA, self.fr_pB, self.fr_pD = fr_pA, fr_pB, fr_pD
        self.modalities_to_learn = (
            list(range(self.num_modalities))
            if modalities_to_learn == "all"
            else list(modalities_to_learn)
        )
        self.factors_to_learn = (
            list(range(self.num_factors)) if factors_to_learn == "all" else list(factors_to_learn)
        )
        defaults = (
            {"num_iter": 10, "dF": 1.0, "dF_tol": 0.001}
            if algo == "fpi"
            else {"num_iter": 10, "tau": 0.25}
        )
        unknown = set(inference_params or {}) - set(defaults)
        if unknown:
            raise ValueError(
                f"unknown inference_params {sorted(unknown)} for {algo}: allowed {sorted(defaults)}"
            )
        self.inference_params = {**defaults, **(inference_params or {})}

        def put(key: str) -> Any:
            """The model's tensors with a leading model-batch dim: 1 (shared) or one per
            agent when given a batch of models."""
            lst = getattr(model, key)
            if lst is None:
                return None
            if models is None:
                return [t.to(self.device, self.dtype).unsqueeze(0) for t in lst]
            return [
                torch.stack([getattr(m, key)[i] for m in models]).to(self.device, self.dtype)
                for i in range(len(lst))
            ]

        self.B_dependencies = model.B_dependencies
        if any(d != [f] for f, d in enumerate(self.B_dependencies)) and (
            planning != "enumerate" or algo != "fpi"
        ):
            raise ValueError(
                f"B_dependencies {self.B_dependencies} (a factor's transition depending on "
                "other factors) needs planning='enumerate' and inference_algo='fpi'"
            )
        steps = [int(c.shape[0]) for c in model.C if c.ndim == 2]
        if steps and (planning != "enumerate" or algo != "fpi"):
            raise ValueError(
                "time-indexed C (a [T, O] preference per modality) needs planning='enumerate' "
                "and inference_algo='fpi'"
            )
        self.A: list[Tensor] = put("A")
        self.B: list[Tensor] = put("B")
        self.C: list[Tensor] = put("C")
        self.D: list[Tensor] = put("D")
        self.pA: list[Tensor] | None = put("pA")
        self.pB: list[Tensor] | None = put("pB")
        self.pD: list[Tensor] | None = put("pD")

        # ---- policies
        nf = self.num_factors
        if control_fac_idx is None:
            control_fac_idx = [f for f in range(nf) if self.num_controls[f] > 1]
        for f in control_fac_idx:
            if not 0 <= f < nf:
                raise ValueError(f"control_fac_idx names factor {f}; there are {nf}")
        self.control_fac_idx = list(control_fac_idx)
        if policies is None:
            horizon = 1 if planning == "sophisticated" else self.policy_len
            pols = control.construct_policies(
                self.num_states, self.num_controls, horizon, self.control_fac_idx
            )
        else:
            pols = torch.as_tensor(np.asarray(policies), dtype=torch.long)
            if pols.ndim != 3 or pols.shape[2] != nf:
                raise ValueError(f"policies must have shape [P, T, {nf}]; got {tuple(pols.shape)}")
            for f in range(nf):
                if int(pols[..., f].max()) >= self.num_controls[f] or int(pols[..., f].min()) < 0:
                    raise ValueError(
                        f"policies use action {int(pols[..., f].max())} of factor {f}, "
                        f"which has {self.num_controls[f]} actions"
                    )
            self.policy_len = int(pols.shape[1]) if planning == "enumerate" else self.policy_len
        self.policies = pols.to(self.device)
        self.num_policies = int(pols.shape[0])
        for m, c in enumerate(model.C):
            if c.ndim == 2 and c.shape[0] < self.policy_len:
                raise ValueError(
                    f"C[{m}] has preferences for {c.shape[0]} steps; policy_len is "
                    f"{self.policy_len}"
                )
        self.tree = control.PolicyTree.from_policies(pols).to(self.device)
        if model.E is not None and model.E.shape[-1] != self.num_policies:
            raise ValueError(
                f"E has {model.E.shape[-1]} entries but there are {self.num_policies} policies"
            )
        # [P] shared, or [b, P] for a batch of models
        self.E = None
        if model.E is not None:
            E = model.E if models is None else torch.stack([m.E for m in models])  # type: ignore[misc]
            self.E = E.to(self.device, self.dtype)

        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(int(seed))
        self._refresh()
        self.reset()

    # ------------------------------------------------------------------ helpers
    def _precision(self, val: Any) -> float | Tensor:
        if np.ndim(val) == 0:
            return float(val)
        return torch.as_tensor(np.asarray(val, dtype=float), dtype=self.dtype).to(self.device)[
            :, None
        ]

    def _refresh(self) -> None:
        """Recompute planning quantities after A, B or their counts changed."""
        self.prep = control.PreparedModel(
            self.A,
            self.B,
            self.C,
            self.pA if self.use_param_info_gain else None,
            self.pB if self.use_param_info_gain else None,
            info_gain=self.info_gain,
            param_info_gain=self.param_info_gain,
            B_dependencies=self.B_dependencies,
        )
        if self.planning == "sophisticated" and self.prep.L is None:
            raise ValueError(
                "planning='sophisticated' branches on joint outcomes, and the joint outcome "
                f"space of {self.num_obs} is too large"
            )
        if self.planning == "sophisticated" and self.prep.L.shape[0] != 1:
            raise ValueError(
                "planning='sophisticated' needs a model shared by the batch (no learning)"
            )

    def _as_obs(self, obs: Any, mask: Any = None) -> tuple[Tensor, Tensor | None]:
        """Observations → ``[b, M]`` long tensor, validated, and the mask → ``[b, M]``
        bool (None: all observed); a masked entry's index is ignored (set to 0)."""
        if isinstance(obs, (int, np.integer)):
            obs = [int(obs)]
        t = torch.as_tensor(np.asarray(obs) if not isinstance(obs, Tensor) else obs)
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"observations must be integer indices; got {obs!r}")
        t = self._rows(t.long().to(self.device), "observation")
        m = None
        if mask is not None:
            m = self._rows(torch.as_tensor(np.asarray(mask), device=self.device), "mask")
            if m.dtype != torch.bool:
                raise ValueError(f"mask must be boolean (True = observed); got {m.dtype}")
            if m.shape != t.shape:
                raise ValueError(
                    f"mask has shape {tuple(m.shape)}; the observations have {tuple(t.shape)}"
                )
            t = torch.where(m, t, torch.zeros_like(t))
        check_obs(t, self.num_obs, self._num_obs_t)
        return t, m

    def _rows(self, t: Tensor, what: str) -> Tensor:
        """``t`` as ``[b, M]``: a scalar or one row for one agent, a column for M = 1."""
        if t.ndim == 0:
            t = t.reshape(1, 1)
        elif t.ndim == 1:
            t = t.reshape(1, -1) if self.batch_size == 1 else t.reshape(-1, 1)
        if t.shape[0] != self.batch_size:
            raise ValueError(f"{what} batch has {t.shape[0]} rows; batch_size is {self.batch_size}")
        return t

    def _expand_model(self) -> None:
        """Give every agent its own copy of the model before it learns."""
        b = self.batch_size

        def ex(lst: list[Tensor] | None) -> list[Tensor] | None:
            if lst is None:
                return None
            return [t.expand(b, *t.shape[1:]).clone() if t.shape[0] == 1 else t for t in lst]

        self.A = ex(self.A)  # type: ignore[assignment]
        self.B = ex(self.B)  # type: ignore[assignment]
        self.D = ex(self.D)  # type: ignore[assignment]
        self.pA, self.pB, self.pD = ex(self.pA), ex(self.pB), ex(self.pD)

    def _uniform(self) -> list[Tensor]:
        return [
            torch.full((self.batch_size, s), 1.0 / s, dtype=self.dtype, device=self.device)
            for s in self.num_states
        ]

    def _D_batch(self) -> list[Tensor]:
        return [d.expand(self.batch_size, -1) for d in self.D]

    # ------------------------------------------------------------------ API
    @torch.inference_mode()
    def reset(self, mask: Any = None) -> list[Tensor]:
        """Start new episodes: uniform beliefs, no last action (next prior is D).

        Args:
            mask: ``[b]`` bool, rows to reset (default all). Row-wise resets need fpi.
        Returns:
            ``qs``.
        """
        b = self.batch_size
        if mask is None or bool(torch.as_tensor(np.asarray(mask)).all()):
            self.qs = self._uniform()
            self.action: Tensor | None = None
            self._has_action = torch.zeros(b, dtype=torch.bool, device=self.device)
            self._all_acted = False  # every row has a last action (no D to mix in)
            self._qs_first: list[Tensor] | None = None
            self.q_pi = self._policy_prior()
            self.G = torch.zeros(b, self.num_policies, dtype=self.dtype, device=self.device)
            self.F = torch.zeros_like(self.G)
            self.efe_terms: dict[str, Tensor] = {}
            self.curr_timestep = 0
            self._lh_hist: list[Tensor] = []
            self._act_hist: list[Tensor] = []
            self.latest_belief = [d.clone() for d in self._D_batch()]
            self.qs_seq: list[list[Tensor]] | None = None
            return self.qs
        if self.inference_algo != "fpi":
            raise ValueError(
                "resetting some batch rows only is supported with inference_algo='fpi'"
            )
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=self.device)
        if m.shape != (b,):
            raise ValueError(f"reset mask must have shape [{b}]; got {tuple(m.shape)}")
        uni = self._uniform()
        self.qs = [torch.where(m[:, None], u, q) for u, q in zip(uni, self.qs, strict=True)]
        self._has_action = self._has_action & ~m
        self._all_acted = False
        self.q_pi = torch.where(m[:, None], self._policy_prior(), self.q_pi)
        return self.qs

    def _policy_prior(self) -> Tensor:
        b, p = self.batch_size, self.num_policies
        if self.E is not None:
            return self.E.expand(b, p).clone()
        return torch.full((b, p), 1.0 / p, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def empirical_prior(self) -> list[Tensor]:
        """Prior over the next state: B[u] q(s) where an action was taken, else D (with
        ``B_dependencies``, B_f[u] applied to the mean-field joint of its factors)."""
        d = self._D_batch()
        if self.action is None:
            return [x.clone() for x in d]
        out = []
        for f, deps in enumerate(self.B_dependencies):
            pred = inference._apply(
                control.dependency_joint(self.qs, deps).unsqueeze(1),
                self.prep.fwd[f],
                self.action[:, f : f + 1],
                self.num_controls[f],
            ).squeeze(1)
            out.append(
                pred if self._all_acted else torch.where(self._has_action[:, None], pred, d[f])
            )
        return out

    @torch.inference_mode()
    def infer_states(self, obs: Any, mask: Any = None) -> list[Tensor]:
        """Update beliefs about the current hidden state from an observation.

        Args:
            obs: ``[b, M]`` indices (or a tuple of M indices / an int for one agent).
            mask: ``[b, M]`` bool (or M bools for one agent), False where a modality was
                not observed: it then carries no evidence (its index is ignored). None:
                all observed.
        Returns:
            ``qs``: F tensors ``[b, S_f]`` (for MMP: the policy-averaged current belief;
            the per-policy window is in ``qs_seq``).
        """
        o, m = self._as_obs(obs, mask)
        if self.inference_algo == "fpi":
            prior = self.empirical_prior()
            p = self.inference_params
            log_lik = inference.joint_log_likelihood(self.prep.lnA, o, self.prep.obs_offsets, m)
            self.qs = inference.fpi(
                log_lik, prior, self.num_states, p["num_iter"], p["dF"], p["dF_tol"]
            )
        else:
            lik = inference.joint_likelihood(self.prep.A_flat, o, m)  # [b, SJ]
            self._lh_hist.append(lik)
            self._lh_hist = self._lh_hist[-self.inference_horizon :]
            past = len(self._lh_hist)
            acts = self._act_hist[len(self._act_hist) - (past - 1) :] if past > 1 else []
            b, p = self.batch_size, self.num_policies
            pol = self.policies.unsqueeze(0).expand(b, p, -1, -1)
            if acts:
                prev = torch.stack(acts, 1).unsqueeze(1).expand(b, p, -1, -1)
                pol = torch.cat([prev, pol], 2)
            qs_seq, free = inference.mmp(
                torch.stack(self._lh_hist, 1),
                self.B,
                pol,
                self.latest_belief,
                self.num_states,
                self.policy_len,
                self.inference_params["num_iter"],
                self.inference_params["tau"],
            )
            self.qs_seq, self.F = qs_seq, free
            self.qs = [(self.q_pi.unsqueeze(-1) * q).sum(1) for q in qs_seq[past - 1]]
        if self._qs_first is None:
            self._qs_first = [q.clone() for q in self.qs]
        return self.qs

    @torch.inference_mode()
    def infer_policies(self) -> tuple[Tensor, Tensor]:
        """Posterior over policies from their expected free energy.

        Returns:
            (q_pi ``[b, P]``, G ``[b, P]``) with G = −(utility + info gains) and
            q_pi = σ(ln E − γ G) (− F(π) under MMP).
        """
        flags = dict(
            use_utility=self.use_utility,
            use_states_info_gain=self.use_states_info_gain,
        )
        if self.inference_algo == "mmp":
            assert self.qs_seq is not None, "call infer_states before infer_policies"
            terms = control.evaluate_sequences(
                self.qs_seq[-(self.policy_len + 1) :],
                self.prep,
                use_param_info_gain=self.use_param_info_gain,
                **flags,
            )
            G = terms["G"]
            q_pi = control.posterior_over_policies(G, self.gamma, self.E, self.F)
        elif self.planning == "sophisticated":
            G = control.sophisticated_inference(
                self.qs,
                self.prep,
                self.policies[:, 0, :],
                self.policy_len,
                self.gamma,
                action_threshold=self.si_action_threshold,
                obs_threshold=self.si_obs_threshold,
                **flags,
            )
            terms = {"G": G}
            q_pi = control.posterior_over_policies(G, self.gamma, self.E)
        else:
            terms = control.evaluate_policies(
                self.qs, self.prep, self.tree, use_param_info_gain=self.use_param_info_gain, **flags
            )
            G = terms["G"]
            q_pi = control.posterior_over_policies(G, self.gamma, self.E)
        self.q_pi, self.G, self.efe_terms = q_pi, G, terms
        return q_pi, G

    @torch.inference_mode()
    def action_marginals(self) -> list[Tensor]:
        """q(u_f) for each factor, ``[b, U_f]``."""
        return control.action_marginals(self.q_pi, self.policies, self.num_controls)

    @torch.inference_mode()
    def sample_action(self) -> Tensor:
        """Choose and remember the next action.

        Returns:
            ``[b, F]`` long (0 for uncontrolled factors).
        """
        if self.sampling_mode == "marginal":
            action = control.sample_action(
                self.action_marginals(), self.action_selection, self.alpha, self.generator
            )
        else:
            action = control.sample_policy(
                self.q_pi, self.policies, self.action_selection, self.alpha, self.generator
            )
        self.action = action
        self._has_action = torch.ones_like(self._has_action)
        self._all_acted = True
        self._step_time()
        return action

    def _step_time(self) -> None:
        self.curr_timestep += 1
        if self.inference_algo != "mmp":
            return
        assert self.action is not None
        self._act_hist.append(self.action)
        self._act_hist = self._act_hist[-max(self.inference_horizon, 1) :]
        if self.curr_timestep - self.inference_horizon >= 0 and self.qs_seq is not None:
            first = self.qs_seq[0]
            if self.use_BMA:
                self.latest_belief = [(self.q_pi.unsqueeze(-1) * q).sum(1) for q in first]
            else:
                self.latest_belief = [q[:, 0] for q in first]

    @torch.inference_mode()
    def step(self, obs: Any, mask: Any = None) -> Tensor:
        """``infer_states(obs, mask)``, ``infer_policies()``, ``sample_action()`` in one call."""
        self.infer_states(obs, mask)
        self.infer_policies()
        return self.sample_action()

    @torch.inference_mode()
    def update_A(self, obs: Any, mask: Any = None) -> list[Tensor]:
        """Dirichlet update of pA from ``obs`` and the current ``qs``; A ← E[pA].

        Args:
            obs, mask: as for :meth:`infer_states`; unobserved modalities learn nothing.
        """
        if self.pA is None:
            raise ValueError("update_A needs Dirichlet counts pA")
        o, m = self._as_obs(obs, mask)
        self._expand_model()
        self.pA = learning.update_obs_likelihood_dirichlet(
            self.pA, self.A, o, self.qs, self.lr_pA, self.fr_pA, self.modalities_to_learn, m
        )
        self.A = learning.expected_parameters(self.pA)
        self._refresh()
        return self.pA

    @torch.inference_mode()
    def update_B(self, qs_prev: list[Tensor]) -> list[Tensor]:
        """Dirichlet update of pB from the last action, ``qs_prev`` and ``qs``; B ← E[pB]."""
        if self.pB is None:
            raise ValueError("update_B needs Dirichlet counts pB")
        if self.action is None:
            raise ValueError("update_B needs an action: call sample_action first")
        if not self.prep.factorised:
            raise ValueError(f"update_B does not support B_dependencies {self.B_dependencies}")
        self._expand_model()
        self.pB = learning.update_state_likelihood_dirichlet(
            self.pB,
            self.B,
            self.action,
            self.qs,
            qs_prev,
            self.lr_pB,
            self.fr_pB,
            self.factors_to_learn,
        )
        self.B = learning.expected_parameters(self.pB)
        self._refresh()
        return self.pB

    @torch.inference_mode()
    def update_D(self, qs_t0: list[Tensor] | None = None) -> list[Tensor]:
        """Dirichlet update of pD from the belief about the first state; D ← E[pD].

        Args:
            qs_t0: F tensors ``[b, S_f]``; default the first posterior since ``reset``
                (fpi) or the window's first belief (mmp).
        """
        if self.pD is None:
            raise ValueError("update_D needs Dirichlet counts pD")
        if qs_t0 is None:
            qs_t0 = self.latest_belief if self.inference_algo == "mmp" else self._qs_first
        if qs_t0 is None:
            raise ValueError("update_D needs qs_t0 (no belief has been inferred since reset)")
        self._expand_model()
        self.pD = learning.update_state_prior_dirichlet(
            self.pD, qs_t0, self.lr_pD, self.fr_pD, self.factors_to_learn
        )
        self.D = [p / p.sum(-1, keepdim=True) for p in self.pD]
        return self.pD

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Model parameters and counts (beliefs are per episode and not saved)."""
        out: dict[str, Any] = {"A": self.A, "B": self.B, "D": self.D}
        for k in ("pA", "pB", "pD"):
            out[k] = getattr(self, k)
        if self.generator is not None:
            out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for k in ("A", "B", "D", "pA", "pB", "pD"):
            v = state.get(k)
            setattr(self, k, None if v is None else [t.to(self.device, self.dtype) for t in v])
        if "generator" in state and self.generator is not None:
            self.generator.set_state(state["generator"])
        self._refresh()


def _check_models(models: Sequence[GenerativeModel], batch_size: int) -> list[GenerativeModel]:
    """A batch of models, one per agent: same sizes and structure, or an error naming both."""
    models = list(models)
    if len(models) != batch_size:
        raise ValueError(f"model has {len(models)} entries; batch_size is {batch_size}")
    first = models[0]

    def layout(m: GenerativeModel) -> dict[str, Any]:
        return {
            "num_obs": m.num_obs,
            "num_states": m.num_states,
            "num_controls": m.num_controls,
            "B_dependencies": m.B_dependencies,
            "C shapes": [tuple(c.shape) for c in m.C],
            **{f"{k} given": getattr(m, k) is not None for k in ("pA", "pB", "pD", "E")},
        }

    ref = layout(first)
    for i, m in enumerate(models[1:], 1):
        for key, val in layout(m).items():
            if val != ref[key]:
                raise ValueError(
                    f"model[{i}] {key} is {val} but model[0]'s is {ref[key]}: "
                    "a batch of models must share sizes and structure"
                )
    return models


def check_obs(obs: Tensor, num_obs: list[int], num_obs_t: Tensor | None = None) -> None:
    """Raise naming the modality, value and batch row of an out-of-range observation.

    Args:
        obs: ``[b, M]`` integer indices.
        num_obs_t: ``num_obs`` as a tensor on ``obs``'s device, if the caller keeps one.
    """
    if obs.shape[1] != len(num_obs):
        raise ValueError(
            f"observation has {obs.shape[1]} modalities per row; the model has {len(num_obs)}"
        )
    if num_obs_t is None:
        num_obs_t = torch.tensor(num_obs, device=obs.device)
    bad = (obs < 0) | (obs >= num_obs_t)
    if bad.any():
        i, m = (int(x) for x in bad.nonzero()[0])
        raise ValueError(
            f"observation index {int(obs[i, m])} out of range for modality {m} "
            f"(valid 0..{num_obs[m] - 1}) in batch row {i}"
        )
