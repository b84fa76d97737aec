"""The discrete planner behind the common trainer (``python train.py agent=pomdp env=tmaze``).

:class:`POMDPAgent` implements :class:`daif.protocol.Agent`. It builds the generative
model from the environment the trainer passes (:func:`daif.pomdp.tasks.build_model`),
keeps per-episode beliefs (q(s), last action) in the ``state`` threaded through
``act`` (an :class:`~daif.pomdp.agent.AgentState`), and is a thin call sequence over the
functional API of :class:`daif.pomdp.Agent` (fixed-point state inference or marginal
message passing over each env's own window; enumerated or sophisticated planning); it
optionally learns B from experience with Dirichlet counts shared by all environments
(``Agent.update_B(..., pooled=True)``).

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
from daif.pomdp.agent import Agent, AgentState
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
    def initial_state(self, num_envs: int) -> AgentState:
        """Uniform beliefs, no previous action and an empty MMP window for ``num_envs``
        fresh episodes (:meth:`daif.pomdp.Agent.init_state`)."""
        return self.core.init_state(num_envs)

    def _obs_tensor(self, obs: np.ndarray) -> Tensor:
        o = torch.as_tensor(np.asarray(obs), device=self.device).long()
        return o.reshape(o.shape[0], -1)

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        state: AgentState | None,
        episode_start: np.ndarray,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, AgentState]:
        """Infer states, score policies, pick actions for a batch of environments
        (:meth:`daif.pomdp.Agent.act`: fresh beliefs where ``episode_start``)."""
        o = self._obs_tensor(obs)
        if state is None or state.batch_size != o.shape[0]:
            state = self.initial_state(o.shape[0])
        action, state = self.core.act(o, state, episode_start, deterministic=deterministic)
        record = {"q_pi": state.q_pi, **state.efe_terms}
        for f, q in enumerate(state.qs):
            record[f"qs{f}"] = q
        if deterministic:
            self._last_eval = record
        else:
            self._last_train = record
            self._pending = (state.qs, action)
        return action[:, self.control_factor].cpu().numpy(), state

    @torch.no_grad()
    def observe(self, transition: Any) -> None:
        """With ``learn_B``: add the transition's expected counts to pB (shared by all envs)."""
        if not self.learn_B or self._pending is None:
            return
        c = self.core
        qs_prev, action = self._pending
        self._pending = None
        o = self._obs_tensor(transition.next_obs)
        # the posterior after the move: B[u] q_prev as the prior, then the next observation
        moved = c.init_state(o.shape[0]).replace(
            qs=qs_prev, action=action, has_action=torch.ones_like(action[:, 0], dtype=torch.bool)
        )
        qs_next = c.infer(o, moved).qs
        c.update_B(qs_prev, qs_next, action, pooled=True)

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
