"""The discrete planner behind the common trainer (``python train.py agent=pomdp env=tmaze``).

:class:`POMDPAgent` implements :class:`daif.protocol.Agent`. It builds the generative
model from the environment the trainer passes (:func:`daif.pomdp.tasks.build_model`),
keeps per-episode beliefs (q(s), last action) in the ``state`` threaded through
``act``, plans with the same batched functions as :class:`daif.pomdp.Agent` (fixed-point
state inference or marginal message passing over each env's own window; enumerated or
sophisticated planning), and optionally learns B from experience with Dirichlet counts
shared by all environments.

``update`` returns the q(π)-weighted expected free energy terms of the last training
step (``efe/G``, ``efe/utility``, ``efe/states_info_gain``, ``efe/param_info_gain``),
the policy entropy ``policy/q_pi_entropy`` and the belief entropy
``beliefs/qs_entropy``; ``images`` draws belief heatmaps (no matplotlib).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from daif.images import heatmap
from daif.maths import entropy
from daif.pomdp import control, inference, learning
from daif.pomdp.agent import Agent, check_obs
from daif.pomdp.tasks import build_model
from daif.protocol import AgentContext

__all__ = ["POMDPAgent"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class POMDPAgent:
    """Active inference on a discrete model of the environment, for the trainer.

    Args:
        observation_space, action_space: one sub-env's spaces.
        env: an instance of the environment, from which the generative model is built
            (:func:`daif.pomdp.tasks.build_model`).
        num_envs, device: the vector envs' width and the torch device.
        policy_len: planning horizon.
        inference_algo: "fpi" (fixed-point iteration at the current step) or "mmp"
            (marginal message passing over the last ``inference_horizon`` steps).
        inference_horizon, tau: MMP window length and gradient step.
        planning: "enumerate" (all policies of length ``policy_len``) or
            "sophisticated" (tree search to depth ``policy_len``).
        gamma, alpha: policy and action precisions.
        action_selection: how training actions are chosen ("stochastic" samples
            σ(α ln q(u)); evaluation always takes the argmax).
        use_utility, use_states_info_gain, use_param_info_gain: EFE terms.
        info_gain, param_info_gain: "joint" / "approx" (SPM, pymdp 0.0.7.1) or
            "per_modality" / "exact" (pymdp 1.0); see :mod:`daif.pomdp.control`.
        learn_B: learn transitions with Dirichlet counts, starting from uniform B.
        pB_scale: prior count per entry when ``learn_B``.
        lr_pB, fr_pB: learning rate and forgetting factor of pB.
        num_iter, dF_tol: fixed-point iteration settings.
        si_action_threshold, si_obs_threshold: sophisticated-inference pruning.
        dtype: "float32" or "float64".
        model_kwargs: extra arguments for the task's model builder (e.g. preferences).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env: gym.Env,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        *,
        policy_len: int = 1,
        inference_algo: str = "fpi",
        inference_horizon: int = 2,
        tau: float = 0.25,
        planning: str = "enumerate",
        gamma: float = 16.0,
        alpha: float = 16.0,
        action_selection: str = "stochastic",
        use_utility: bool = True,
        use_states_info_gain: bool = True,
        use_param_info_gain: bool = False,
        info_gain: str = "joint",
        param_info_gain: str = "approx",
        learn_B: bool = False,
        pB_scale: float = 1.0,
        lr_pB: float = 1.0,
        fr_pB: float = 1.0,
        num_iter: int = 10,
        dF_tol: float = 1e-3,
        si_action_threshold: float = 1.0 / 16.0,
        si_obs_threshold: float = 1.0 / 16.0,
        dtype: str = "float32",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        algo = str(inference_algo).lower()
        if algo not in ("fpi", "vanilla", "mmp"):
            raise ValueError(f"agent.inference_algo must be 'fpi' or 'mmp'; got {inference_algo!r}")
        if algo == "mmp" and (learn_B or planning != "enumerate"):
            raise ValueError(
                "agent.inference_algo='mmp' runs with planning='enumerate' and learn_B=false"
            )
        if dtype not in _DTYPES:
            raise ValueError(f"agent.dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        if pB_scale <= 0:
            raise ValueError(f"agent.pB_scale must be > 0; got {pB_scale}")
        if num_iter < 1:
            raise ValueError(f"agent.num_iter must be >= 1; got {num_iter}")
        try:
            model = build_model(env, **dict(model_kwargs or {}))
        except TypeError as err:
            raise ValueError(f"agent.model_kwargs={dict(model_kwargs or {})!r}: {err}") from err
        if isinstance(observation_space, gym.spaces.Discrete):
            obs_sizes = [int(observation_space.n)]
        elif isinstance(observation_space, gym.spaces.MultiDiscrete):
            obs_sizes = [int(n) for n in np.asarray(observation_space.nvec).ravel()]
        else:
            raise ValueError(
                f"observation_space {observation_space}: "
                "the pomdp agent needs Discrete or MultiDiscrete"
            )
        if obs_sizes != model.num_obs:
            raise ValueError(
                f"observation_space sizes {obs_sizes} differ from the model's {model.num_obs}"
            )
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"action_space {action_space}: the pomdp agent needs Discrete actions")
        controlled = [f for f, n in enumerate(model.num_controls) if n > 1]
        if len(controlled) != 1 or model.num_controls[controlled[0]] != int(action_space.n):
            raise ValueError(
                f"the model's controllable factors {controlled} with actions {model.num_controls} "
                f"do not match Discrete({int(action_space.n)})"
            )
        self.control_factor = controlled[0]
        if learn_B:
            model.pB = [torch.full_like(b, pB_scale) for b in model.B]
            model.B = [p / p.sum(0, keepdim=True) for p in model.pB]
        # keyword errors from the core agent name the same keys under agent.*
        try:
            self.core = Agent(
                model=model,
                policy_len=policy_len,
                planning=planning,
                gamma=gamma,
                alpha=alpha,
                action_selection=action_selection,
                use_utility=use_utility,
                use_states_info_gain=use_states_info_gain,
                use_param_info_gain=use_param_info_gain,
                info_gain=info_gain,
                param_info_gain=param_info_gain,
                lr_pB=lr_pB,
                fr_pB=fr_pB,
                inference_algo="mmp" if algo == "mmp" else "fpi",
                inference_horizon=inference_horizon,
                inference_params=(
                    {"num_iter": num_iter, "tau": tau}
                    if algo == "mmp"
                    else {"num_iter": num_iter, "dF_tol": dF_tol}
                ),
                si_action_threshold=si_action_threshold,
                si_obs_threshold=si_obs_threshold,
                batch_size=num_envs,
                device=device,
                dtype=_DTYPES[dtype],
            )
        except ValueError as err:
            raise ValueError(f"agent.{err}") from err
        self.learn_B = learn_B
        self.device = self.core.device
        self.num_envs = num_envs
        self._last_train: dict[str, Tensor] = {}
        self._last_eval: dict[str, Tensor] = {}
        self._pending: tuple[list[Tensor], Tensor] | None = None
        self._grid = (
            getattr(env.unwrapped, "size", None) if hasattr(env.unwrapped, "colours") else None
        )

    @classmethod
    def from_context(cls, ctx: AgentContext, **hparams: Any) -> POMDPAgent:
        """Build the model from one instance of the trainer's env (tabular planning has no
        use for ``ctx.amp`` or ``ctx.compile``)."""
        env = ctx.make_env()
        try:
            return cls(
                ctx.observation_space,
                ctx.action_space,
                env,
                num_envs=ctx.num_envs,
                device=ctx.device,
                **hparams,
            )
        finally:
            env.close()

    # ------------------------------------------------------------------ protocol
    def initial_state(self, num_envs: int) -> dict[str, Tensor]:
        """Uniform beliefs and no previous action for ``num_envs`` fresh episodes."""
        c = self.core
        dev, n = self.device, num_envs
        state = {
            "qs": [torch.full((n, s), 1.0 / s, dtype=c.dtype, device=dev) for s in c.num_states],
            "action": torch.zeros(n, c.num_factors, dtype=torch.long, device=dev),
            "has_action": torch.zeros(n, dtype=torch.bool, device=dev),
        }
        if c.inference_algo == "mmp":
            h = c.inference_horizon
            state.update(
                lh=torch.ones(n, h, c.prep.sj, dtype=c.dtype, device=dev),
                acts=torch.zeros(n, h - 1, c.num_factors, dtype=torch.long, device=dev),
                count=torch.zeros(n, dtype=torch.long, device=dev),
                steps=torch.zeros(n, dtype=torch.long, device=dev),
                latest=[d.expand(n, -1).clone() for d in c.D],
                q_pi=c._policy_prior()[:1].expand(n, -1).clone(),
            )
        return state

    def _obs_tensor(self, obs: np.ndarray) -> Tensor:
        o = torch.as_tensor(np.asarray(obs), device=self.device).long()
        return o.reshape(o.shape[0], -1)

    def _prior(self, state: dict[str, Tensor]) -> list[Tensor]:
        """B[u] q(s) where the episode has a previous action, else D."""
        c = self.core
        n = state["has_action"].shape[0]
        out = []
        for f in range(c.num_factors):
            d = c.D[f].expand(n, -1)
            pred = inference._apply(
                state["qs"][f].unsqueeze(1),
                c.prep.fwd[f],
                state["action"][:, f : f + 1],
                c.num_controls[f],
            ).squeeze(1)
            out.append(torch.where(state["has_action"][:, None], pred, d))
        return out

    def _posterior(self, o: Tensor, prior: list[Tensor]) -> list[Tensor]:
        c = self.core
        log_lik = inference.joint_log_likelihood(c.prep.lnA, o, c.prep.obs_offsets)
        p = c.inference_params
        return inference.fpi(log_lik, prior, c.num_states, p["num_iter"], p["dF"], p["dF_tol"])

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        state: dict[str, Tensor] | None,
        episode_start: np.ndarray,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, dict[str, Tensor]]:
        """Infer states, score policies, pick actions for a batch of environments."""
        c = self.core
        o = self._obs_tensor(obs)
        n = o.shape[0]
        check_obs(o, c.num_obs)
        if state is None or state["has_action"].shape[0] != n:
            state = self.initial_state(n)
        start = torch.as_tensor(np.asarray(episode_start, dtype=bool), device=self.device)
        state = {**state, "has_action": state["has_action"] & ~start}
        flags = {"use_utility": c.use_utility, "use_states_info_gain": c.use_states_info_gain}
        if c.inference_algo == "mmp":
            return self._act_mmp(o, state, start, deterministic)
        qs = self._posterior(o, self._prior(state))
        if c.planning == "sophisticated":
            G = control.sophisticated_inference(
                qs,
                c.prep,
                c.policies[:, 0, :],
                c.policy_len,
                c.gamma,
                action_threshold=c.si_action_threshold,
                obs_threshold=c.si_obs_threshold,
                **flags,
            )
            terms = {"G": G}
        else:
            terms = control.evaluate_policies(
                qs, c.prep, c.tree, use_param_info_gain=c.use_param_info_gain, **flags
            )
            G = terms["G"]
        q_pi = control.posterior_over_policies(G, c.gamma, c.E)
        marg = control.action_marginals(q_pi, c.policies, c.num_controls)
        mode = "deterministic" if deterministic else c.action_selection
        action = control.sample_action(marg, mode, c.alpha)
        self._record(q_pi, terms, qs, action, deterministic)
        new_state = {"qs": qs, "action": action, "has_action": torch.ones_like(start)}
        return action[:, self.control_factor].cpu().numpy(), new_state

    def _record(
        self, q_pi: Tensor, terms: dict[str, Tensor], qs: list[Tensor], action: Tensor, det: bool
    ) -> None:
        """Keep the last step's q(π), EFE terms and beliefs for ``update`` and ``images``."""
        record = {"q_pi": q_pi, **terms}
        for f, q in enumerate(qs):
            record[f"qs{f}"] = q
        if det:
            self._last_eval = record
        else:
            self._last_train = record
            self._pending = (qs, action)

    def _act_mmp(
        self, o: Tensor, state: dict[str, Any], start: Tensor, deterministic: bool
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Marginal message passing over each env's own window (as :class:`Agent` does).

        Envs whose windows hold the same number of observations are batched together.
        """
        c = self.core
        n, h, p = o.shape[0], c.inference_horizon, c.num_policies
        keep = ~start
        prior_pi = c._policy_prior()[:1].expand(n, -1)
        count = torch.where(keep, state["count"], 0)
        steps = torch.where(keep, state["steps"], 0)
        latest = [
            torch.where(keep[:, None], x, d.expand(n, -1))
            for x, d in zip(state["latest"], c.D, strict=True)
        ]
        q_prev = torch.where(keep[:, None], state["q_pi"], prior_pi)
        lik = inference.joint_likelihood(c.prep.A_flat, o)
        lh = torch.cat([state["lh"][:, 1:], lik.unsqueeze(1)], 1)
        count = (count + 1).clamp(max=h)
        acts = state["acts"]
        qs = [torch.zeros(n, s, dtype=c.dtype, device=self.device) for s in c.num_states]
        first = [torch.zeros(n, p, s, dtype=c.dtype, device=self.device) for s in c.num_states]
        q_pi = torch.zeros(n, p, dtype=c.dtype, device=self.device)
        terms: dict[str, Tensor] = {}
        for k in torch.unique(count).tolist():
            rows = (count == k).nonzero().squeeze(-1)
            pol = c.policies.unsqueeze(0).expand(rows.shape[0], p, -1, -1)
            if k > 1:
                past = acts[rows][:, acts.shape[1] - (k - 1) :]
                pol = torch.cat([past.unsqueeze(1).expand(-1, p, -1, -1), pol], 2)
            qs_seq, free = inference.mmp(
                lh[rows][:, h - k :],
                c.B,
                pol,
                [x[rows] for x in latest],
                c.num_states,
                c.policy_len,
                c.inference_params["num_iter"],
                c.inference_params["tau"],
            )
            t_g = control.evaluate_sequences(
                qs_seq[-(c.policy_len + 1) :],
                c.prep,
                use_utility=c.use_utility,
                use_states_info_gain=c.use_states_info_gain,
                use_param_info_gain=c.use_param_info_gain,
            )
            q_pi[rows] = control.posterior_over_policies(t_g["G"], c.gamma, c.E, free)
            for key, val in t_g.items():
                terms.setdefault(key, torch.zeros(n, p, dtype=c.dtype, device=self.device))
                terms[key][rows] = val
            for f in range(c.num_factors):
                qs[f][rows] = (q_prev[rows].unsqueeze(-1) * qs_seq[k - 1][f]).sum(1)
                first[f][rows] = qs_seq[0][f]
        marg = control.action_marginals(q_pi, c.policies, c.num_controls)
        action = control.sample_action(
            marg, "deterministic" if deterministic else c.action_selection, c.alpha
        )
        steps = steps + 1
        if h > 1:
            acts = torch.cat([acts[:, 1:], action.unsqueeze(1)], 1)
        # the window's first belief, averaged over policies, becomes its prior once it slides
        slide = (steps - h >= 0)[:, None]
        latest = [
            torch.where(slide, (q_pi.unsqueeze(-1) * fq).sum(1), x)
            for fq, x in zip(first, latest, strict=True)
        ]
        self._record(q_pi, terms, qs, action, deterministic)
        new_state = {
            "qs": qs,
            "action": action,
            "has_action": torch.ones_like(start),
            "lh": lh,
            "acts": acts,
            "count": count,
            "steps": steps,
            "latest": latest,
            "q_pi": q_pi,
        }
        return action[:, self.control_factor].cpu().numpy(), new_state

    @torch.no_grad()
    def observe(self, transition: Any) -> None:
        """With ``learn_B``: add the transition's expected counts to pB (shared by all envs)."""
        if not self.learn_B or self._pending is None:
            return
        c = self.core
        qs_prev, action = self._pending
        self._pending = None
        o = self._obs_tensor(transition.next_obs)
        state = {
            "qs": qs_prev,
            "action": action,
            "has_action": torch.ones(o.shape[0], dtype=torch.bool, device=self.device),
        }
        qs_next = self._posterior(o, self._prior(state))
        assert c.pB is not None
        grown = learning.update_state_likelihood_dirichlet(
            c.pB, c.B, action, qs_next, qs_prev, c.lr_pB, 1.0
        )
        c.pB = [
            c.fr_pB * p + (g - p).sum(0, keepdim=True) for p, g in zip(c.pB, grown, strict=True)
        ]
        c.B = learning.expected_parameters(c.pB)
        c._refresh()

    def update(self, global_step: int) -> dict[str, Any]:
        """Expected free energy terms and entropies of the last training step (0-d tensors)."""
        rec = self._last_train
        if not rec:
            return {}
        q_pi = rec["q_pi"]
        out: dict[str, Any] = {"policy/q_pi_entropy": entropy(q_pi).mean()}
        for key in ("G", "utility", "states_info_gain", "param_info_gain"):
            if key in rec:
                out[f"efe/{key}"] = (q_pi * rec[key]).sum(-1).mean()
        qs = [rec[k] for k in rec if k.startswith("qs")]
        out["beliefs/qs_entropy"] = sum(entropy(q).mean() for q in qs)
        if self.learn_B and self.core.pB is not None:
            out["learning/pB_total"] = sum(p.sum() for p in self.core.pB)
        return out

    def images(self) -> dict[str, np.ndarray]:
        """Belief heatmaps of the last evaluation step: q(s_f) per env, q(π), a grid map."""
        rec = self._last_eval or self._last_train
        if not rec:
            return {}
        out = {}
        for k, v in rec.items():
            if k.startswith("qs"):
                out[f"beliefs/q_s_factor{k[2:]}"] = heatmap(v.float().cpu().numpy(), cell=12)
        out["beliefs/q_pi"] = heatmap(rec["q_pi"].float().cpu().numpy(), cell=6)
        if self._grid is not None:
            size = int(self._grid)
            out["beliefs/location_env0"] = heatmap(
                rec["qs0"][0].float().cpu().numpy().reshape(size, size), cell=16
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Model tensors and counts (all that learning changes)."""
        return self.core.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.core.load_state_dict(state)
