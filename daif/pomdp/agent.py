"""A pymdp-style active inference agent for discrete POMDPs, batched in torch.

``Agent`` keeps pymdp's names (A, B, C, D, E, pA, pB, pD, qs, q_pi, G, gamma, alpha,
policy_len, inference_algo, …). Every belief carries a leading batch dimension of
``batch_size`` independent agents that share (or, once they learn, each own) the
generative model. Two ways to call it:

* functional (as pymdp 1.0 and the deep agent): the per-episode beliefs, the MMP window
  and the last action live in an :class:`AgentState` that is passed in and returned,
  ``action, state = agent.act(obs, state, episode_start, deterministic)``, or step by
  step ``agent.infer`` → ``agent.plan`` → ``agent.choose``; separate states give
  separate, interleavable episodes;
* stateful (pymdp 0.0.7.1's ``infer_states``, ``infer_policies``, ``sample_action``,
  ``reset``, ``step``): the same calls on ``agent.state``.

Learned counts live in the state too: ``learn_A``, ``learn_B`` (per agent, or ``pooled``
into one shared model) and ``learn_D`` return a state whose ``params`` (a
:class:`ModelParams`: A, B, D and their Dirichlet counts) the next calls run on; a state
without ``params`` runs on the agent's own model. The stateful ``update_A/B/D`` learn on
``agent.state`` and make the result the agent's own model.

Fixed-point inference and enumerated planning of small models on the CPU run in NumPy
(:mod:`daif.pomdp.small`, the same maths with less per-call overhead; ``backend``).
The torch methods run under ``torch.inference_mode()``: beliefs and learned counts are
for reading and further agent calls, not for autograd.

Differences from pymdp, on purpose:
* ``infer_states`` takes ``[batch, num_modalities]`` indices (a tuple/int for one agent);
* ``reset`` also forgets the last action, so the next prior is D, and can reset chosen
  batch rows only;
* fixed-point inference stops once the free energy settles (``dF_tol``; pymdp 1.0 always
  runs ``num_iter`` sweeps);
* the information gains default to SPM's definitions (``info_gain="joint"``,
  ``param_info_gain="approx"``, as pymdp 0.0.7.1); pymdp 1.0's are named options;
* with ``inference_algo="mmp"`` the window's past actions are always the last
  ``T_past − 1`` ones (pymdp 0.0.7.1 reuses the whole action history when
  ``inference_horizon == 1``); each batch row has its own window;
* ``planning="sophisticated"`` scores one-step actions by recursive tree search to depth
  ``policy_len`` instead of enumerating open-loop policies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from daif.pomdp import control, inference, learning, small
from daif.pomdp.model import GenerativeModel

__all__ = ["Agent", "AgentState", "ModelParams"]

_ALGOS = {"fpi": "fpi", "vanilla": "fpi", "mmp": "mmp"}
_PLANNING = ("enumerate", "sophisticated")
_SAMPLING = ("marginal", "full")
_BACKENDS = ("auto", "torch", "numpy")


class Agent:
    """Active inference agent (perception, planning, action, learning).

    Args:
        A, B, C, D, E, pA, pB, pD: the generative model in pymdp's layout (see
            :class:`~daif.pomdp.model.GenerativeModel`); or pass ``model``: one
            ``GenerativeModel`` shared by the batch, or one per agent (same sizes).
        A_factor_list: factors each modality's A depends on.
        B_action_dependencies, num_controls: control factors each factor's transition
            depends on and their sizes (pymdp 1.0; see
            :class:`~daif.pomdp.model.GenerativeModel`). Policies are then sequences of
            control-factor actions (``policies_multi [P, T, C]``); actions, ``policies`` and
            ``state.action`` stay one (flattened) index per state factor:
            :meth:`decode_actions` gives the control factors' actions.
        B_dependencies: factors each factor's next state depends on (default itself);
            ``B[f]`` is then ``[S_f, *(S_d for d in B_dependencies[f]), U_f]``. Needs
            fixed-point inference (not MMP).
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
        backend: "auto" (fixed-point inference and enumerated planning of small models
            on the CPU run in NumPy, :mod:`daif.pomdp.small`: less per-call overhead),
            "torch" (never) or "numpy" (whenever the model allows it, any size).
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
        B_action_dependencies: Sequence[Sequence[int]] | None = None,
        num_controls: Sequence[int] | None = None,
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
        backend: str = "auto",
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
                B_action_dependencies=B_action_dependencies,
                num_controls=num_controls,
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
        if any(d != [f] for f, d in enumerate(self.B_dependencies)) and algo != "fpi":
            raise ValueError(
                f"B_dependencies {self.B_dependencies} (a factor's transition depending on "
                "other factors) needs inference_algo='fpi' (marginal message passing has "
                "no messages through a transition of several factors here)"
            )
        steps = [int(c.shape[0]) for c in model.C if c.ndim == 2]
        if steps and (planning != "enumerate" or algo != "fpi"):
            raise ValueError(
                "time-indexed C (a [T, O] preference per modality) needs planning='enumerate' "
                "and inference_algo='fpi'"
            )
        self.C: list[Tensor] = put("C")
        # A, B, D and the counts: the learnable model (assigning one re-prepares it)
        self._params = ModelParams(put("A"), put("B"), put("D"), put("pA"), put("pB"), put("pD"))
        self._own_cache: _Derived | None = None
        self._derived_cache: dict[int, tuple[ModelParams, _Derived]] = {}

        # ---- policies: sequences of control-factor actions (one control factor per state
        # factor unless B_action_dependencies says otherwise), then one index per factor
        self.B_action_dependencies = model.B_action_dependencies
        self._multi = model.B_action_dependencies is not None
        self.num_controls_multi = list(model.num_controls_multi or self.num_controls)
        nc = len(self.num_controls_multi)
        what = "control factor" if self._multi else "factor"
        if control_fac_idx is None:
            control_fac_idx = [c for c in range(nc) if self.num_controls_multi[c] > 1]
        for c in control_fac_idx:
            if not 0 <= c < nc:
                raise ValueError(f"control_fac_idx names {what} {c}; there are {nc}")
        self.control_fac_idx = list(control_fac_idx)
        if policies is None:
            horizon = 1 if planning == "sophisticated" else self.policy_len
            pols = control.construct_policies(
                self.num_controls_multi, self.num_controls_multi, horizon, self.control_fac_idx
            )
        else:
            pols = torch.as_tensor(np.asarray(policies), dtype=torch.long)
            if pols.ndim != 3 or pols.shape[2] != nc:
                raise ValueError(f"policies must have shape [P, T, {nc}]; got {tuple(pols.shape)}")
            for c in range(nc):
                n = self.num_controls_multi[c]
                if int(pols[..., c].max()) >= n or int(pols[..., c].min()) < 0:
                    raise ValueError(
                        f"policies use action {int(pols[..., c].max())} of {what} {c}, "
                        f"which has {n} actions"
                    )
            self.policy_len = int(pols.shape[1]) if planning == "enumerate" else self.policy_len
        self.policies_multi = pols.to(self.device)
        pols = self.encode_actions(pols)
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
        self._E: Tensor | None = None
        if model.E is not None:
            E = model.E if models is None else torch.stack([m.E for m in models])  # type: ignore[misc]
            self._E = E.to(self.device, self.dtype)

        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(int(seed))
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}; got {backend!r}")
        self.backend = backend
        self._num_obs_np = np.asarray(self.num_obs)
        self._refresh()
        self.state = self.init_state()

    # ------------------------------------------------------------------ helpers
    def _precision(self, val: Any) -> float | Tensor:
        if np.ndim(val) == 0:
            return float(val)
        return torch.as_tensor(np.asarray(val, dtype=float), dtype=self.dtype).to(self.device)[
            :, None
        ]

    def _refresh(self) -> None:
        """Recompute planning quantities after A, B, D or their counts changed."""
        self._own_cache = _Derived(self, self._params)
        self._derived_cache = {}

    @property
    def _own(self) -> _Derived:
        if self._own_cache is None:
            self._refresh()
        assert self._own_cache is not None
        return self._own_cache

    def _set_params(self, **changes: Any) -> None:
        self._params = self._params.replace(**changes)
        self._own_cache = None  # prepared again on next use

    @property
    def params(self) -> ModelParams:
        """The agent's own model parameters and counts (what a state without ``params``
        uses)."""
        return self._params

    @property
    def A(self) -> list[Tensor]:
        """M tensors ``[bm, O_m, S_1..S_F]``, the likelihood."""
        return self._params.A

    @A.setter
    def A(self, value: list[Tensor]) -> None:
        self._set_params(A=list(value))

    @property
    def B(self) -> list[Tensor]:
        """F tensors ``[bm, S_f, *S_deps, U_f]``, the transitions."""
        return self._params.B

    @B.setter
    def B(self, value: list[Tensor]) -> None:
        self._set_params(B=list(value))

    @property
    def D(self) -> list[Tensor]:
        """F tensors ``[bm, S_f]``, the initial-state prior."""
        return self._params.D

    @D.setter
    def D(self, value: list[Tensor]) -> None:
        self._set_params(D=list(value))

    @property
    def pA(self) -> list[Tensor] | None:
        """Dirichlet counts of A (or None)."""
        return self._params.pA

    @pA.setter
    def pA(self, value: list[Tensor] | None) -> None:
        self._set_params(pA=value)

    @property
    def pB(self) -> list[Tensor] | None:
        """Dirichlet counts of B (or None)."""
        return self._params.pB

    @pB.setter
    def pB(self, value: list[Tensor] | None) -> None:
        self._set_params(pB=value)

    @property
    def E(self) -> Tensor | None:
        """The prior over policies ``[P]`` (or ``[b, P]``), None: uniform."""
        return self._E

    @E.setter
    def E(self, value: Tensor | None) -> None:
        self._E = value
        self._own_cache = None  # the NumPy step keeps ln E
        self._derived_cache = {}

    @property
    def pD(self) -> list[Tensor] | None:
        """Dirichlet counts of D (or None)."""
        return self._params.pD

    @pD.setter
    def pD(self, value: list[Tensor] | None) -> None:
        self._set_params(pD=value)

    @property
    def prep(self) -> control.PreparedModel:
        """Planning quantities of the agent's own model."""
        return self._own.prep

    @property
    def _use_small(self) -> bool:
        return self._own.use_small

    @property
    def _small(self) -> small.SmallModel:
        return self._own.small

    def _ctx(self, state: AgentState) -> _Derived:
        """The derived model a state runs on: the agent's own, or its learned ``params``
        (prepared once per parameter set and kept for the last few)."""
        if state.params is None:
            return self._own
        key = id(state.params)
        hit = self._derived_cache.get(key)
        if hit is not None and hit[0] is state.params:
            return hit[1]
        derived = _Derived(self, state.params)
        if len(self._derived_cache) >= 8:
            self._derived_cache.pop(next(iter(self._derived_cache)))
        self._derived_cache[key] = (state.params, derived)
        return derived

    def _small_applies(self, prep: control.PreparedModel) -> bool:
        """Whether the NumPy step (:mod:`daif.pomdp.small`) runs fpi and planning."""
        if (
            self.backend == "torch"
            or self.device.type != "cpu"
            or self.inference_algo != "fpi"
            or self.planning != "enumerate"
            or self.use_param_info_gain
            or prep.fwd_values is None
        ):
            return False
        if self.backend == "numpy":
            return True
        k = prep.values.shape[-1]
        # the widest level whose children are evaluated (all but the last)
        parents = max([1] + [int(p.shape[0]) for p in self.tree.parents[:-1]])
        uj = math.prod(self.num_controls)
        return small.is_small(prep.sj, uj, k, self.batch_size, parents)

    def _as_obs(
        self, obs: Any, mask: Any = None, rows: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Observations → ``[b, M]`` long tensor, validated, and the mask → ``[b, M]``
        bool (None: all observed); a masked entry's index is ignored (set to 0).
        ``rows``: the batch expected (default ``batch_size``)."""
        if isinstance(obs, (int, np.integer)):
            obs = [int(obs)]
        t = torch.as_tensor(np.asarray(obs) if not isinstance(obs, Tensor) else obs)
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"observations must be integer indices; got {obs!r}")
        t = self._rows(t.long().to(self.device), "observation", rows)
        m = None
        if mask is not None:
            m = self._rows(torch.as_tensor(np.asarray(mask), device=self.device), "mask", rows)
            if m.dtype != torch.bool:
                raise ValueError(f"mask must be boolean (True = observed); got {m.dtype}")
            if m.shape != t.shape:
                raise ValueError(
                    f"mask has shape {tuple(m.shape)}; the observations have {tuple(t.shape)}"
                )
            t = torch.where(m, t, torch.zeros_like(t))
        check_obs(t, self.num_obs, self._num_obs_t)
        return t, m

    def _as_obs_np(self, obs: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_as_obs` in NumPy (the small-model path): ``[b, M]`` int64 and bool."""
        o = obs.cpu().numpy() if isinstance(obs, Tensor) else np.asarray(obs)
        if o.dtype.kind == "f":
            if not np.array_equal(o, np.round(o)):
                raise ValueError(f"observations must be integer indices; got {obs!r}")
        elif o.dtype.kind not in "iub":
            raise ValueError(f"observations must be integer indices; got {obs!r}")
        o = self._rows_np(o.astype(np.int64, copy=False), "observation")
        m = None
        if mask is not None:
            m = self._rows_np(
                mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask), "mask"
            )
            if m.dtype != np.bool_:
                raise ValueError(f"mask must be boolean (True = observed); got {m.dtype}")
            if m.shape != o.shape:
                raise ValueError(f"mask has shape {m.shape}; the observations have {o.shape}")
            o = np.where(m, o, 0)
        if o.shape[1] != len(self.num_obs) or (o < 0).any() or (o >= self._num_obs_np).any():
            check_obs(torch.from_numpy(o), self.num_obs)  # raises, naming the entry
        return o, m

    def _rows(self, t: Tensor, what: str, rows: int | None = None) -> Tensor:
        """``t`` as ``[b, M]``: a scalar or one row for one agent, a column for M = 1."""
        b = self.batch_size if rows is None else rows
        if t.ndim == 0:
            t = t.reshape(1, 1)
        elif t.ndim == 1:
            t = t.reshape(1, -1) if b == 1 else t.reshape(-1, 1)
        if t.shape[0] != b:
            raise ValueError(f"{what} batch has {t.shape[0]} rows; the state has {b}")
        return t

    def _rows_np(self, a: np.ndarray, what: str) -> np.ndarray:
        if a.ndim == 0:
            a = a.reshape(1, 1)
        elif a.ndim == 1:
            a = a.reshape(1, -1) if self.batch_size == 1 else a.reshape(-1, 1)
        if a.shape[0] != self.batch_size:
            raise ValueError(f"{what} batch has {a.shape[0]} rows; the state has {self.batch_size}")
        return a

    def _policy_prior(self, b: int) -> Tensor:
        p = self.num_policies
        if self.E is not None:
            return self.E.expand(b, p).clone()
        return torch.full((b, p), 1.0 / p, dtype=self.dtype, device=self.device)

    def _D_rows(self, b: int) -> list[Tensor]:
        return [d.expand(b, -1) for d in self.D]

    def encode_actions(self, actions: Tensor) -> Tensor:
        """Control-factor actions ``[..., C]`` → one index per state factor ``[..., F]``:
        u_f = the mixed-radix index of (u_c for c in B_action_dependencies[f]), the last
        control factor fastest (0 for a factor with no control). The identity without
        ``B_action_dependencies``."""
        if not self._multi:
            return actions
        assert self.B_action_dependencies is not None
        out = []
        for deps in self.B_action_dependencies:
            idx = torch.zeros_like(actions[..., 0])
            for c in deps:
                idx = idx * self.num_controls_multi[c] + actions[..., c]
            out.append(idx)
        return torch.stack(out, -1)

    def decode_actions(self, actions: Tensor) -> Tensor:
        """One index per state factor ``[..., F]`` → the control factors' actions
        ``[..., C]`` (the inverse of :meth:`encode_actions`); the identity without
        ``B_action_dependencies``."""
        if not self._multi:
            return actions
        assert self.B_action_dependencies is not None
        out = torch.zeros(
            *actions.shape[:-1],
            len(self.num_controls_multi),
            dtype=actions.dtype,
            device=actions.device,
        )
        for f, deps in enumerate(self.B_action_dependencies):
            idx = actions[..., f]
            for c in reversed(deps):
                out[..., c] = idx % self.num_controls_multi[c]
                idx = idx // self.num_controls_multi[c]
        return out

    # ------------------------------------------------------------------ functional API
    def init_state(
        self, batch_size: int | None = None, params: ModelParams | None = None
    ) -> AgentState:
        """Fresh episodes: uniform q(s), no last action (the next prior is D), q(π) = E.

        Args:
            batch_size: rows (default the agent's ``batch_size``; a batch of models, or
                per-agent γ / α, needs exactly that many).
            params: learned model parameters the state carries (None: the agent's own).
        Returns:
            an :class:`AgentState` of ``batch_size`` rows.
        """
        b = self.batch_size if batch_size is None else int(batch_size)
        dev, dt = self.device, self.dtype
        qs = [torch.full((b, s), 1.0 / s, dtype=dt, device=dev) for s in self.num_states]
        zeros = torch.zeros(b, self.num_policies, dtype=dt, device=dev)
        state = AgentState(
            qs=qs,
            action=torch.zeros(b, self.num_factors, dtype=torch.long, device=dev),
            has_action=torch.zeros(b, dtype=torch.bool, device=dev),
            q_pi=self._policy_prior(b),
            G=zeros,
            F=zeros,
            qs_first=[q.clone() for q in qs],
            has_first=torch.zeros(b, dtype=torch.bool, device=dev),
            t=torch.zeros(b, dtype=torch.long, device=dev),
            params=params,
        )
        if self.inference_algo == "mmp":
            h = self.inference_horizon
            state.lh = torch.ones(b, h, self.prep.sj, dtype=dt, device=dev)
            state.acts = torch.zeros(b, h - 1, self.num_factors, dtype=torch.long, device=dev)
            state.count = torch.zeros(b, dtype=torch.long, device=dev)
            state.latest = [d.expand(b, -1).clone() for d in self._ctx(state).D]
        return state

    def reset_state(self, state: AgentState, episode_start: Any = None) -> AgentState:
        """Start new episodes in the rows where ``episode_start`` is True (all if None).

        Reset rows get uniform q(s), no last action, q(π) = E and an empty MMP window;
        the other rows are returned unchanged, and learned ``params`` are kept.

        Args:
            state: the current state, ``b`` rows.
            episode_start: ``[b]`` bool, or None.
        Returns:
            the new state (``state`` itself is not modified).
        """
        b = state.batch_size
        if episode_start is None:
            return self.init_state(b, state.params)
        m = torch.as_tensor(np.asarray(episode_start), dtype=torch.bool, device=self.device)
        if m.shape != (b,):
            raise ValueError(f"episode_start must have shape [{b}]; got {tuple(m.shape)}")
        if not bool(m.any()):
            return state
        if bool(m.all()):
            return self.init_state(b, state.params)
        fresh = self.init_state(b, state.params)
        return AgentState.select(m, fresh, state)

    def empirical_prior_of(self, state: AgentState) -> list[Tensor]:
        """Prior over the next state of each row: B[u] q(s) where the row has a last
        action, else D (with ``B_dependencies``, B_f[u] applied to the mean-field joint of
        its factors).

        p(s_{t+1,f}) = Σ_{s_deps} B_f[s_{t+1,f}, s_deps, u_f] Π_{d∈deps} q(s_{t,d}).

        Returns:
            F tensors ``[b, S_f]``.
        """
        b = state.batch_size
        c = self._ctx(state)
        d = [x.expand(b, -1) for x in c.D]
        if not bool(state.has_action.any()):
            return [x.clone() for x in d]
        all_acted = bool(state.has_action.all())
        out = []
        for f, deps in enumerate(self.B_dependencies):
            pred = inference._apply(
                control.dependency_joint(state.qs, deps).unsqueeze(1),
                c.prep.fwd[f],
                state.action[:, f : f + 1],
                self.num_controls[f],
            ).squeeze(1)
            out.append(pred if all_acted else torch.where(state.has_action[:, None], pred, d[f]))
        return out

    def infer(self, obs: Any, state: AgentState, mask: Any = None) -> AgentState:
        """State inference: the posterior q(s) after observing ``obs``, returned in a new state.

        fpi: q(s_f) ∝ exp(E_{q(s_¬f)}[ln p(o|s)] + ln p(s_f)) with p(s) the empirical prior
        (:meth:`empirical_prior_of`). MMP: the row's window of the last
        ``inference_horizon`` observations and actions is extended by ``obs`` and
        message passing runs over it for every policy; q(s) = Σ_π q(π) q(s_t | π) with
        the previous q(π).

        Args:
            obs: ``[b, M]`` indices (or a tuple of M indices / an int for one agent).
            state: the state before the observation.
            mask: ``[b, M]`` bool, False where a modality was not observed.
        Returns:
            the new state (``qs``; under MMP also ``qs_seq``, ``F`` and the window).
        """
        c = self._ctx(state)
        if c.use_small and state.batch_size == self.batch_size:
            post = self._small_posterior(obs, state, mask, c)
            return state.replace(**self._small_beliefs(state, post))
        with torch.inference_mode():
            return self._infer_torch(obs, state, mask, c)

    def _infer_torch(self, obs: Any, state: AgentState, mask: Any, c: _Derived) -> AgentState:
        o, m = self._as_obs(obs, mask, state.batch_size)
        if self.inference_algo == "fpi":
            prior = self.empirical_prior_of(state)
            p = self.inference_params
            log_lik = inference.joint_log_likelihood(c.prep.lnA, o, c.prep.obs_offsets, m)
            qs = inference.fpi(log_lik, prior, self.num_states, p["num_iter"], p["dF"], p["dF_tol"])
            new = state.replace(qs=qs)
        else:
            new = self._infer_mmp(o, m, state, c)
        return self._note_first(new)

    def _note_first(self, state: AgentState) -> AgentState:
        """Keep each row's first posterior of the episode (the default for ``update_D``)."""
        if bool(state.has_first.all()):
            return state
        keep = state.has_first[:, None]
        first = [torch.where(keep, a, q) for a, q in zip(state.qs_first, state.qs, strict=True)]
        return state.replace(qs_first=first, has_first=torch.ones_like(state.has_first))

    def _small_posterior(
        self, obs: Any, state: AgentState, mask: Any, c: _Derived
    ) -> list[np.ndarray]:
        """The fpi posterior of the NumPy path, F arrays ``[b, S_f]``."""
        sm = c.small
        o, m = self._as_obs_np(obs, mask)
        has = state.has_action.numpy()
        qs_np = [q.numpy() for q in state.qs]
        if has.any():
            prior = sm.empirical_prior(qs_np, state.action.numpy(), has)
        else:
            prior = [np.broadcast_to(d, q.shape) for d, q in zip(sm.D, qs_np, strict=True)]
        return sm.fpi(sm.log_likelihood(o, m), prior)

    def _small_beliefs(self, state: AgentState, post: list[np.ndarray]) -> dict[str, Any]:
        """State changes for a NumPy posterior: ``qs`` and, in rows without one yet, the
        episode's first posterior."""
        out: dict[str, Any] = {"qs": [small.as_torch(q) for q in post]}
        first_set = state.has_first.numpy()
        if not first_set.all():
            out["qs_first"] = [
                small.as_torch(np.where(first_set[:, None], a.numpy(), q))
                for a, q in zip(state.qs_first, post, strict=True)
            ]
            out["has_first"] = torch.ones_like(state.has_first)
        return out

    def _small_plan(self, qs: list[np.ndarray], c: _Derived) -> tuple[np.ndarray, dict[str, Any]]:
        """q(π) (NumPy) and the state changes of planning on the NumPy path."""
        sm = c.small
        util, sig = sm.evaluate_policies(qs, self.use_utility, self.use_states_info_gain)
        g = -(util + sig)
        gamma = self.gamma if isinstance(self.gamma, float) else self.gamma.cpu().numpy()
        q_pi = sm.posterior_over_policies(g, gamma)
        G = small.as_torch(g)
        terms = {
            "utility": small.as_torch(util),
            "states_info_gain": small.as_torch(sig),
            "param_info_gain": small.as_torch(np.zeros_like(g)),
            "G": G,
        }
        return q_pi, {"q_pi": small.as_torch(q_pi), "G": G, "efe_terms": terms}

    def _act_small(
        self, obs: Any, state: AgentState, mask: Any, c: _Derived
    ) -> tuple[Tensor, AgentState]:
        """:meth:`act` (argmax of the action marginals) on the NumPy path in one pass: the
        beliefs cross into torch once, at the end."""
        post = self._small_posterior(obs, state, mask, c)
        q_pi, changes = self._small_plan(post, c)
        marg = c.small.action_marginals(q_pi)
        action = torch.from_numpy(np.stack([x.argmax(-1) for x in marg], -1))
        has = state.has_action
        changes.update(
            self._small_beliefs(state, post),
            action=action,
            has_action=has if has.numpy().all() else torch.ones_like(has),
            t=small.as_torch(state.t.numpy() + 1),
        )
        return action, state.replace(**changes)

    def _infer_mmp(self, o: Tensor, m: Tensor | None, state: AgentState, c: _Derived) -> AgentState:
        """Marginal message passing over each row's own window.

        Rows whose windows hold the same number of observations run together.
        """
        assert state.lh is not None and state.acts is not None and state.count is not None
        assert state.latest is not None
        n, h, p = o.shape[0], self.inference_horizon, self.num_policies
        dt, dev = self.dtype, self.device
        lik = inference.joint_likelihood(c.prep.A_flat, o, m)  # [b, SJ]
        lh = torch.cat([state.lh[:, 1:], lik.unsqueeze(1)], 1)
        count = (state.count + 1).clamp(max=h)
        qs = [torch.zeros(n, s, dtype=dt, device=dev) for s in self.num_states]
        steps = self.policy_len + 1
        seq = [
            [torch.zeros(n, p, s, dtype=dt, device=dev) for s in self.num_states]
            for _ in range(steps)
        ]
        first = [torch.zeros(n, p, s, dtype=dt, device=dev) for s in self.num_states]
        free = torch.zeros(n, p, dtype=dt, device=dev)
        for k in torch.unique(count).tolist():
            rows = (count == k).nonzero().squeeze(-1)
            every = rows.shape[0] == n
            pol = self.policies.unsqueeze(0).expand(rows.shape[0], p, -1, -1)
            if k > 1:
                acts = state.acts if every else state.acts[rows]
                past = acts[:, acts.shape[1] - (k - 1) :]
                pol = torch.cat([past.unsqueeze(1).expand(-1, p, -1, -1), pol], 2)
            qs_seq, f_k = inference.mmp(
                (lh if every else lh[rows])[:, h - k :],
                c.B if every else [b if b.shape[0] == 1 else b[rows] for b in c.B],
                pol,
                state.latest if every else [x[rows] for x in state.latest],
                self.num_states,
                self.policy_len,
                self.inference_params["num_iter"],
                self.inference_params["tau"],
            )
            q_prev = state.q_pi if every else state.q_pi[rows]
            free[rows] = f_k
            for f in range(self.num_factors):
                qs[f][rows] = (q_prev.unsqueeze(-1) * qs_seq[k - 1][f]).sum(1)
                first[f][rows] = qs_seq[0][f]
                for j, q_t in enumerate(qs_seq[k - 1 :]):
                    seq[j][f][rows] = q_t[f]
        return state.replace(qs=qs, qs_seq=seq, qs_window_first=first, F=free, lh=lh, count=count)

    def plan(self, state: AgentState) -> AgentState:
        """Policy inference: expected free energy G and q(π) = σ(ln E − γ G) (− F(π) under
        MMP) from the state's beliefs, returned in a new state (``q_pi``, ``G``,
        ``efe_terms``: ``[b, P]`` each)."""
        c = self._ctx(state)
        if c.use_small and state.batch_size == self.batch_size:
            _, changes = self._small_plan([q.numpy() for q in state.qs], c)
            return state.replace(**changes)
        with torch.inference_mode():
            return self._plan_torch(state, c.prep)

    def _plan_torch(self, state: AgentState, prep: control.PreparedModel) -> AgentState:
        flags = dict(
            use_utility=self.use_utility,
            use_states_info_gain=self.use_states_info_gain,
        )
        if self.inference_algo == "mmp":
            if state.qs_seq is None:
                raise ValueError("plan (infer_policies) under MMP needs a state inference first")
            terms = control.evaluate_sequences(
                state.qs_seq, prep, use_param_info_gain=self.use_param_info_gain, **flags
            )
            G = terms["G"]
            q_pi = control.posterior_over_policies(G, self.gamma, self.E, state.F)
        elif self.planning == "sophisticated":
            G = control.sophisticated_inference(
                state.qs,
                prep,
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
                state.qs,
                prep,
                self.tree,
                use_param_info_gain=self.use_param_info_gain,
                **flags,
            )
            G = terms["G"]
            q_pi = control.posterior_over_policies(G, self.gamma, self.E)
        return state.replace(q_pi=q_pi, G=G, efe_terms=terms)

    def marginals_of(self, state: AgentState) -> list[Tensor]:
        """q(u_c) = Σ_π q(π) [π_0,c = u] of the state's q(π), one ``[b, U_c]`` tensor per
        control factor (per state factor without ``B_action_dependencies``)."""
        if self._multi:
            return control.action_marginals(
                state.q_pi, self.policies_multi, self.num_controls_multi
            )
        c = self._ctx(state)
        if c.use_small and state.batch_size == self.batch_size:
            return [small.as_torch(x) for x in c.small.action_marginals(state.q_pi.numpy())]
        return control.action_marginals(state.q_pi, self.policies, self.num_controls)

    def choose(
        self, state: AgentState, deterministic: bool | None = None
    ) -> tuple[Tensor, AgentState]:
        """Action selection from the state's q(π); the action becomes the state's last action.

        Marginal sampling: u_f = argmax q(u_f) (deterministic) or u_f ~ σ(α ln q(u_f));
        full: the first action of a policy π = argmax q(π) or π ~ σ(α ln q(π)).

        Args:
            deterministic: True forces the argmax, None uses ``action_selection``.
        Returns:
            (action ``[b, F]`` long, the new state: last action, step count and the MMP
            window moved on).
        """
        mode = "deterministic" if deterministic else self.action_selection
        c = self._ctx(state)
        small_rows = c.use_small and state.batch_size == self.batch_size and not self._multi
        if self.sampling_mode == "marginal" and mode == "deterministic" and small_rows:
            marg = c.small.action_marginals(state.q_pi.numpy())
            action = torch.from_numpy(np.stack([x.argmax(-1) for x in marg], -1))
            has = state.has_action
            new = state.replace(
                action=action,
                has_action=has if has.numpy().all() else torch.ones_like(has),
                t=small.as_torch(state.t.numpy() + 1),
            )
            return action, new
        with torch.inference_mode():
            if self.sampling_mode == "marginal":
                action = control.sample_action(
                    self.marginals_of(state), mode, self.alpha, self.generator
                )
                if self._multi:  # control factors' actions → one index per state factor
                    action = self.encode_actions(action)
            else:
                action = control.sample_policy(
                    state.q_pi, self.policies, mode, self.alpha, self.generator
                )
            new = state.replace(
                action=action, has_action=torch.ones_like(state.has_action), t=state.t + 1
            )
            if self.inference_algo == "mmp":
                new = self._slide(new)
        return action, new

    def _slide(self, state: AgentState) -> AgentState:
        """The MMP window after an action: the action joins the past actions and, once the
        window is full, its first belief (averaged over policies, or the first policy's
        without BMA) becomes the prior of the next window's first step."""
        assert state.acts is not None and state.latest is not None
        acts = state.acts
        if self.inference_horizon > 1:
            acts = torch.cat([acts[:, 1:], state.action.unsqueeze(1)], 1)
        first = state.qs_window_first
        if first is None:
            return state.replace(acts=acts)
        slide = (state.t - self.inference_horizon >= 0)[:, None]
        if self.use_BMA:
            new_first = [(state.q_pi.unsqueeze(-1) * q).sum(1) for q in first]
        else:
            new_first = [q[:, 0] for q in first]
        latest = [torch.where(slide, n, x) for n, x in zip(new_first, state.latest, strict=True)]
        return state.replace(acts=acts, latest=latest)

    def act(
        self,
        obs: Any,
        state: AgentState | None = None,
        episode_start: Any = None,
        deterministic: bool | None = None,
        mask: Any = None,
    ) -> tuple[Tensor, AgentState]:
        """One step of a batch of episodes, functional: ``(action, state) = act(obs, state)``.

        Resets the rows where ``episode_start`` is True, then :meth:`infer`, :meth:`plan`
        and :meth:`choose`. The agent itself is not changed (beyond its random generator),
        so episodes with separate states can be interleaved.

        Args:
            obs: ``[b, M]`` indices; state: the previous state (None: fresh episodes of
                ``batch_size`` rows); episode_start: ``[b]`` bool or None;
            deterministic: True forces argmax actions; mask: as for :meth:`infer`.
        Returns:
            (action ``[b, F]`` long, the new state).
        """
        if state is None:
            state = self.init_state()
        elif episode_start is not None:
            state = self.reset_state(state, episode_start)
        c = self._ctx(state)
        if (
            c.use_small
            and not self._multi
            and self.sampling_mode == "marginal"
            and (deterministic or self.action_selection == "deterministic")
            and state.batch_size == self.batch_size
        ):
            return self._act_small(obs, state, mask, c)
        state = self.plan(self.infer(obs, state, mask))
        return self.choose(state, deterministic)

    # ------------------------------------------------------------------ stateful API
    # pymdp-style calls that thread ``self.state`` through the functional API above
    @property
    def qs(self) -> list[Tensor]:
        """Current posterior q(s), F tensors ``[b, S_f]`` (for MMP: policy-averaged)."""
        return self.state.qs

    @qs.setter
    def qs(self, value: list[Tensor]) -> None:
        self.state = self.state.replace(qs=list(value))

    @property
    def q_pi(self) -> Tensor:
        """q(π), ``[b, P]``."""
        return self.state.q_pi

    @property
    def G(self) -> Tensor:
        """Expected free energy of each policy, ``[b, P]``."""
        return self.state.G

    @property
    def F(self) -> Tensor:
        """Variational free energy of each policy under MMP, ``[b, P]`` (0 under fpi)."""
        return self.state.F

    @property
    def efe_terms(self) -> dict[str, Tensor]:
        """The last :meth:`infer_policies`' EFE terms, ``[b, P]`` each."""
        return self.state.efe_terms

    @property
    def qs_seq(self) -> list[list[Tensor]] | None:
        """MMP: q(s_τ | π) from the current step τ = t to t + policy_len, per step F
        tensors ``[b, P, S_f]``; None under fpi."""
        return self.state.qs_seq

    @property
    def latest_belief(self) -> list[Tensor]:
        """MMP: the prior of the window's first step, F tensors ``[b, S_f]``."""
        return self.state.latest if self.state.latest is not None else self._D_rows(self.batch_size)

    @property
    def action(self) -> Tensor | None:
        """The last action ``[b, F]``, or None when no row has acted since ``reset``."""
        return self.state.action if bool(self.state.has_action.any()) else None

    @property
    def curr_timestep(self) -> int:
        """Steps taken since the last full ``reset`` (the most of any row)."""
        return int(self.state.t.max())

    @torch.inference_mode()
    def reset(self, mask: Any = None) -> list[Tensor]:
        """Start new episodes: uniform beliefs, no last action (next prior is D).

        Args:
            mask: ``[b]`` bool, rows to reset (default all).
        Returns:
            ``qs``.
        """
        self.state = self.reset_state(self.state, mask)
        return self.state.qs

    @torch.inference_mode()
    def empirical_prior(self) -> list[Tensor]:
        """Prior over the next state: :meth:`empirical_prior_of` the agent's state."""
        return self.empirical_prior_of(self.state)

    def infer_states(self, obs: Any, mask: Any = None) -> list[Tensor]:
        """Update beliefs about the current hidden state from an observation.

        Args:
            obs: ``[b, M]`` indices (or a tuple of M indices / an int for one agent).
            mask: ``[b, M]`` bool (or M bools for one agent), False where a modality was
                not observed: it then carries no evidence (its index is ignored). None:
                all observed.
        Returns:
            ``qs``: F tensors ``[b, S_f]`` (for MMP: the policy-averaged current belief;
            the per-policy beliefs are in ``qs_seq``).
        """
        self.state = self.infer(obs, self.state, mask)
        return self.state.qs

    def infer_policies(self) -> tuple[Tensor, Tensor]:
        """Posterior over policies from their expected free energy.

        Returns:
            (q_pi ``[b, P]``, G ``[b, P]``) with G = −(utility + info gains) and
            q_pi = σ(ln E − γ G) (− F(π) under MMP).
        """
        self.state = self.plan(self.state)
        return self.state.q_pi, self.state.G

    @torch.inference_mode()
    def action_marginals(self) -> list[Tensor]:
        """q(u_f) for each factor, ``[b, U_f]``."""
        return self.marginals_of(self.state)

    def sample_action(self) -> Tensor:
        """Choose and remember the next action.

        Returns:
            ``[b, F]`` long (0 for uncontrolled factors).
        """
        action, self.state = self.choose(self.state)
        return action

    def step(self, obs: Any, mask: Any = None) -> Tensor:
        """``infer_states(obs, mask)``, ``infer_policies()``, ``sample_action()`` in one call."""
        action, self.state = self.act(obs, self.state, mask=mask)
        return action

    # ------------------------------------------------------------------ learning
    def _per_agent(self, p: ModelParams, b: int) -> ModelParams:
        """One copy of a shared (leading dim 1) model per agent, before it learns alone."""

        def ex(lst: list[Tensor] | None) -> list[Tensor] | None:
            if lst is None:
                return None
            return [t.expand(b, *t.shape[1:]).clone() if t.shape[0] == 1 else t for t in lst]

        return ModelParams(ex(p.A), ex(p.B), ex(p.D), ex(p.pA), ex(p.pB), ex(p.pD))  # type: ignore[arg-type]

    @torch.inference_mode()
    def learn_A(self, obs: Any, state: AgentState, mask: Any = None) -> AgentState:
        """Dirichlet update of pA from ``obs`` and the state's ``qs``; A ← E[pA]:
        pA_m ← ω pA_m + η o_m ⊗ Π_f q(s_f) where A_m > 0. The counts (one copy per row)
        are returned in the new state's ``params``.

        Args:
            obs, mask: as for :meth:`infer`; unobserved modalities learn nothing.
        """
        p = state.params or self.params
        if p.pA is None:
            raise ValueError("update_A needs Dirichlet counts pA")
        o, m = self._as_obs(obs, mask, state.batch_size)
        p = self._per_agent(p, state.batch_size)
        assert p.pA is not None
        pA = learning.update_obs_likelihood_dirichlet(
            p.pA,
            p.A,
            o,
            state.qs,
            self.lr_pA,
            self.fr_pA,
            self.modalities_to_learn,
            m,
        )
        A = learning.expected_parameters(pA)
        return state.replace(params=p.replace(A=A, pA=pA))

    @torch.inference_mode()
    def learn_B(self, qs_prev: list[Tensor], state: AgentState, pooled: bool = False) -> AgentState:
        """Dirichlet update of pB from the move ``qs_prev`` → the state's ``qs`` under its
        last action; B ← E[pB]. The counts are returned in the new state's ``params``.

        pB_f[:, s_deps, u] ← ω pB_f[:, s_deps, u] + η q(s_f) ⊗ Π_{d∈deps} q_prev(s_d) (per
        row), or with ``pooled`` one model shared by the rows:
        pB ← ω pB + η Σ_rows q(s_f) ⊗ Π_d q_prev(s_d) at each row's action (ω on all of pB).

        Args:
            qs_prev: F tensors ``[b, S_f]``, the belief before the move.
            pooled: add all rows' counts to one shared pB.
        """
        p = state.params or self.params
        if p.pB is None:
            raise ValueError("update_B needs Dirichlet counts pB")
        if not bool(state.has_action.all()):
            raise ValueError("update_B needs an action: call sample_action first")
        b = state.batch_size
        if pooled:
            if any(x.shape[0] != 1 for x in p.pB):
                raise ValueError("update_B(pooled=True) needs pB shared by the batch")
            grown = learning.update_state_likelihood_dirichlet(
                p.pB,
                p.B,
                state.action,
                state.qs,
                qs_prev,
                self.lr_pB,
                1.0,
                self.factors_to_learn,
                self.B_dependencies,
            )
            pB = [
                self.fr_pB * x + (g - x).sum(0, keepdim=True)
                for x, g in zip(p.pB, grown, strict=True)
            ]
        else:
            p = self._per_agent(p, b)
            assert p.pB is not None
            pB = learning.update_state_likelihood_dirichlet(
                p.pB,
                p.B,
                state.action,
                state.qs,
                qs_prev,
                self.lr_pB,
                self.fr_pB,
                self.factors_to_learn,
                self.B_dependencies,
            )
        B = learning.expected_parameters(pB)
        return state.replace(params=p.replace(B=B, pB=pB))

    @torch.inference_mode()
    def learn_D(self, state: AgentState, qs_t0: list[Tensor] | None = None) -> AgentState:
        """Dirichlet update of pD from the belief about the first state; D ← E[pD]:
        pD_f ← ω pD_f + η q(s_f,0) where pD_f > 0. The counts are returned in the new
        state's ``params``.

        Args:
            qs_t0: F tensors ``[b, S_f]``; default each row's first posterior of the
                episode (fpi) or the window's first belief (mmp).
        """
        p = state.params or self.params
        if p.pD is None:
            raise ValueError("update_D needs Dirichlet counts pD")
        if qs_t0 is None:
            if self.inference_algo == "mmp":
                qs_t0 = state.latest
            elif bool(state.has_first.all()):
                qs_t0 = state.qs_first
        if qs_t0 is None:
            raise ValueError("update_D needs qs_t0 (no belief has been inferred since reset)")
        p = self._per_agent(p, state.batch_size)
        assert p.pD is not None
        pD = learning.update_state_prior_dirichlet(
            p.pD,
            qs_t0,
            self.lr_pD,
            self.fr_pD,
            self.factors_to_learn,
        )
        D = [x / x.sum(-1, keepdim=True) for x in pD]
        return state.replace(params=p.replace(D=D, pD=pD))

    def _adopt(self, state: AgentState) -> None:
        """Make a state's learned ``params`` the agent's own model (the stateful API)."""
        assert state.params is not None
        self._params = state.params
        self._refresh()
        self.state = state.replace(params=None)

    def update_A(self, obs: Any, mask: Any = None) -> list[Tensor]:
        """:meth:`learn_A` on the agent's state; the agent keeps the new pA and A."""
        self._adopt(self.learn_A(obs, self.state, mask))
        assert self.pA is not None
        return self.pA

    def update_B(
        self,
        qs_prev: list[Tensor],
        qs: list[Tensor] | None = None,
        action: Tensor | None = None,
        pooled: bool = False,
    ) -> list[Tensor]:
        """:meth:`learn_B` on the agent's state; the agent keeps the new pB and B.

        Args:
            qs_prev: F tensors ``[b, S_f]``, the belief before the move.
            qs, action: the belief after it and the action taken (default the state's
                ``qs`` and last action).
            pooled: add all rows' counts to one shared pB.
        """
        own = state = self.state
        if action is None and self.action is None and self.pB is not None:
            raise ValueError("update_B needs an action: call sample_action first")
        if qs is not None or action is not None:
            state = state.replace(
                qs=state.qs if qs is None else list(qs),
                action=state.action if action is None else action,
                has_action=torch.ones_like(state.has_action),
            )
        learned = self.learn_B(qs_prev, state, pooled)
        # the agent's beliefs stay as they were; only the model changes
        self._adopt(own.replace(params=learned.params))
        assert self.pB is not None
        return self.pB

    def update_D(self, qs_t0: list[Tensor] | None = None) -> list[Tensor]:
        """:meth:`learn_D` on the agent's state; the agent keeps the new pD and D."""
        self._adopt(self.learn_D(self.state, qs_t0))
        assert self.pD is not None
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


@dataclass
class AgentState:
    """Per-episode beliefs of a batch of ``b`` agents, passed to and returned by
    :meth:`Agent.act` (and :meth:`Agent.infer`, :meth:`Agent.plan`, :meth:`Agent.choose`).

    Attributes:
        qs: F tensors ``[b, S_f]``, the posterior q(s_t) (MMP: averaged over policies).
        action: ``[b, F]`` long, the last action (meaningful where ``has_action``).
        has_action: ``[b]`` bool, the row has acted in this episode (else the prior is D).
        q_pi, G: ``[b, P]`` the last q(π) and expected free energy.
        F: ``[b, P]`` the variational free energy of each policy (MMP; 0 under fpi).
        qs_first, has_first: F tensors ``[b, S_f]``, each row's first posterior of the
            episode (``update_D``'s default), and ``[b]`` bool: it has been set.
        t: ``[b]`` long, actions taken in the episode.
        efe_terms: the last plan's EFE terms, ``[b, P]`` each.
        lh: MMP ``[b, H, SJ]`` the window's likelihoods, oldest first (the last
            ``count`` are used).
        acts: MMP ``[b, H − 1, F]`` the window's past actions, oldest first.
        count: MMP ``[b]`` observations in the window.
        latest: MMP F tensors ``[b, S_f]``, the prior of the window's first step.
        qs_seq: MMP q(s_τ | π) from the current step on (policy_len + 1 steps of F
            tensors ``[b, P, S_f]``); qs_window_first: q(s | π) at the window's first step.
        params: the learned model (A, B, D and their Dirichlet counts) this state runs on,
            returned by :meth:`Agent.learn_A` / ``learn_B`` / ``learn_D``; None: the
            agent's own model. Episode resets keep it.
    """

    qs: list[Tensor]
    action: Tensor
    has_action: Tensor
    q_pi: Tensor
    G: Tensor
    F: Tensor
    qs_first: list[Tensor]
    has_first: Tensor
    t: Tensor
    efe_terms: dict[str, Tensor] = field(default_factory=dict)
    lh: Tensor | None = None
    acts: Tensor | None = None
    count: Tensor | None = None
    latest: list[Tensor] | None = None
    qs_seq: list[list[Tensor]] | None = None
    qs_window_first: list[Tensor] | None = None
    params: ModelParams | None = None

    @property
    def batch_size(self) -> int:
        return int(self.has_action.shape[0])

    def replace(self, **changes: Any) -> AgentState:
        """A copy with ``changes`` (tensors are shared, never modified in place)."""
        # a shallow copy of the fields (dataclasses.replace re-runs __init__: slower)
        new = object.__new__(AgentState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @staticmethod
    def select(mask: Tensor, a: AgentState, b: AgentState) -> AgentState:
        """Row-wise ``a`` where ``mask [rows]`` is True, else ``b`` (same sizes)."""

        def pick(x: Any, y: Any) -> Any:
            if x is None or y is None:  # a field only one side has (MMP's last window)
                return x if y is None else y
            if isinstance(x, list):  # per factor (or per step, then per factor)
                return [pick(u, v) for u, v in zip(x, y, strict=True)]
            if isinstance(x, dict):
                return {k: pick(x[k], y[k]) for k in x if k in y}
            m = mask.reshape(-1, *([1] * (x.ndim - 1)))
            return torch.where(m, x, y)

        values = {
            f.name: pick(getattr(a, f.name), getattr(b, f.name))
            for f in fields(a)
            if f.name != "params"
        }
        return AgentState(**values, params=b.params)


@dataclass(frozen=True)
class ModelParams:
    """The learnable part of a generative model: A, B, D (``[bm, …]``, ``bm`` 1 shared or
    one per agent) and their Dirichlet counts pA, pB, pD (or None). Immutable: learning
    returns new ones."""

    A: list[Tensor]
    B: list[Tensor]
    D: list[Tensor]
    pA: list[Tensor] | None = None
    pB: list[Tensor] | None = None
    pD: list[Tensor] | None = None

    def replace(self, **changes: Any) -> ModelParams:
        return replace(self, **changes)


class _Derived:
    """What inference and planning read from one set of model parameters, built once:
    the prepared model, D, B, and (lazily) the NumPy small-model step."""

    def __init__(self, agent: Agent, params: ModelParams) -> None:
        self.D, self.B = params.D, params.B
        use_pig = agent.use_param_info_gain
        self.prep = control.PreparedModel(
            params.A,
            params.B,
            agent.C,
            params.pA if use_pig else None,
            params.pB if use_pig else None,
            info_gain=agent.info_gain,
            param_info_gain=agent.param_info_gain,
            B_dependencies=agent.B_dependencies,
        )
        if agent.planning == "sophisticated" and self.prep.L is None:
            raise ValueError(
                "planning='sophisticated' branches on joint outcomes, and the joint outcome "
                f"space of {agent.num_obs} is too large"
            )
        if agent.planning == "sophisticated" and self.prep.L.shape[0] != 1:
            raise ValueError(
                "planning='sophisticated' needs a model shared by the batch (no learning)"
            )
        self.use_small = agent._small_applies(self.prep)
        self._agent = agent
        self._small: small.SmallModel | None = None

    @property
    def small(self) -> small.SmallModel:
        if self._small is None:
            a, p = self._agent, self._agent.inference_params
            self._small = small.SmallModel(
                self.prep, self.D, a.policies, a.tree, a.E, p["num_iter"], p["dF"], p["dF_tol"]
            )
        return self._small


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
            "B_action_dependencies": m.B_action_dependencies,
            "num_controls_multi": m.num_controls_multi,
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
