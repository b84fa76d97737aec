"""The deep active inference agent.

Generative model (all Gaussians diagonal, latent s ∈ R^Z, discrete actions a):

* recognition  q(s|o)            — encoder
* likelihood   p(o|s)            — decoder (learned std: its entropy is the ambiguity)
* transitions  p_k(s'|s, a)      — an ensemble of K Gaussian heads
* outcomes     p(r, d|s, a)      — reward and termination, the outcomes the agent has
                                   preferences over: ln P̃(r, d) = r/T + c·d (+ const),
                                   optionally + a preference over observations learned
                                   from its best episodes (daif.nets.preference)

Learning minimises the variational free energy of replayed transitions,

    F = E_q[−ln p(o|s)] + E_q[−ln p(o'|s')] + KL[q(s'|o') ‖ p(s'|s, a)]  (free bits)
        + transition NLL + outcome NLL,

and trains an amortised expected-free-energy critic G(s, a) on bootstrapped targets

    G(s_t, a_t) ← Σ_{k<n} γ^k g_{t+k} + γ^n (1 − terminated) E_{a'~q(a'|s')}[G_target(s', a')],
    g = w_r·risk + w_a·ambiguity − β·info_gain,

where risk = −ln P̃(o) of the observed outcome (the KL of a point-mass outcome
prediction from the preferences, up to a constant), ambiguity = H[p(o|ŝ')] at the
predicted next state (relative to its running mean, so it carries no per-step offset),
and info_gain = the ensemble's disagreement about s' (mutual information between s' and
the model's parameters). Truncation by a time limit never zeroes the bootstrap.

Actions are drawn from q(a|s) = softmax(−γ·G(s, ·)) with precision γ; ``deterministic``
takes the mode. With ``planner="mpc"`` G is instead evaluated by rolling action sequences
of horizon H through the ensemble (exhaustively, or by the cross-entropy method when the
sequence set is large), with the critic bootstrapping the tail.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daif import maths
from daif.config import check_choice, check_int, check_positive, check_range
from daif.images import heatmap, tile_grey
from daif.protocol import Transition
from daif.replay import PreferredOutcomes, ReplayBuffer
from daif.utils import NonFiniteLossError, autocast, check_amp, clip_grad_norm_, grad_scaler

_REFRESH_CHUNK = 8192  # transitions per no-grad pass when refreshing cached epistemic terms

_LOSS_TAGS = (
    "losses/reconstruction",
    "free_energy/kl",
    "losses/transition_nll",
    "losses/outcome_nll",
    "losses/critic_td",
    "losses/preference",
)


def bootstrap_index(terminated: Tensor, truncated: Tensor) -> Tensor:
    """Index m of the last step an n-step target uses: the first step whose episode
    ended (terminated or truncated), else L − 1. ``[B, L]`` bool → ``[B]`` long."""
    done = terminated | truncated
    length = done.shape[1]
    return torch.where(
        done.any(1),
        done.to(torch.uint8).argmax(1),  # argmax returns the first maximal index
        torch.full_like(done[:, 0], length - 1, dtype=torch.long),
    )


def n_step_weights(terminated: Tensor, truncated: Tensor, gamma: float) -> Tensor:
    """Weight w_k = γ^k of step k in an n-step sum, 0 once the episode has ended.

    w_k = γ^k while no step before k ended its episode (terminated or truncated), so
    step m = :func:`bootstrap_index` is the last one with weight. ``[B, L]`` bool →
    ``[B, L]`` float.
    """
    done = terminated | truncated
    length = done.shape[1]
    # alive[k] = 1 while no episode has ended strictly before step k
    ended_before = torch.cat([torch.zeros_like(done[:, :1]), done[:, :-1]], 1).cumsum(1) > 0
    discount = gamma ** torch.arange(length, device=done.device, dtype=torch.float32)
    return (~ended_before).float() * discount


def sample_sequence_step(last: Tensor, u: Tensor) -> Tensor:
    """One step k ~ U{0, …, m} per sequence from uniforms u ∈ [0, 1): k = ⌊u·(m + 1)⌋.

    With weight (m + 1)·w_k, the term x_k of that step is an unbiased one-sample estimate
    of Σ_{k≤m} w_k x_k: E = Σ_k (1/(m + 1))·(m + 1)·w_k x_k. ``last[B]`` (m) and
    ``u[B]`` → ``[B]`` long.
    """
    return torch.minimum((u * (last + 1)).long(), last)  # min: u·(m+1) may round up to m+1


def n_step_efe_target(
    g_step: Tensor,
    v_last: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    weights: Tensor | None = None,
    last: Tensor | None = None,
) -> Tensor:
    """Bootstrapped n-step expected-free-energy target of the first step of each sequence.

    With m = :func:`bootstrap_index` (the first step whose episode ended, else L − 1):

        target = Σ_{k≤m} γ^k g_k + γ^{m+1} (1 − terminated_m) V(s'_m).

    A time-limit truncation stops the sum but keeps the bootstrap (the state is not
    terminal); only termination zeroes it.

    Args:
        g_step: ``[B, L]`` per-step EFE g_k = w_r·risk + w_a·ambiguity − β·info_gain.
        v_last: ``[B]`` E_q[G_target(s'_m, ·)] at the next state of step m.
        terminated, truncated: ``[B, L]`` bool.
        gamma: discount γ ∈ [0, 1].
        weights, last: :func:`n_step_weights` ``[B, L]`` and :func:`bootstrap_index` ``[B]``
            of these flags, when the caller already has them.
    Returns:
        ``[B]`` targets.
    """
    if weights is None:
        weights = n_step_weights(terminated, truncated, gamma)
    if last is None:
        last = bootstrap_index(terminated, truncated)
    ret = (g_step * weights.to(g_step.dtype)).sum(1)
    rows = torch.arange(last.shape[0], device=last.device)
    keep = 1.0 - terminated[rows, last].to(v_last.dtype)
    return ret + gamma ** (last.to(v_last.dtype) + 1.0) * keep * v_last


def action_gap_target(target: Tensor, g_s: Tensor, action: Tensor, alpha: float) -> Tensor:
    """Advantage-learning target (Bellemare et al. 2016, "Increasing the action gap"):

        T_AL G(s, a) = T G(s, a) + α·(G(s, a) − min_b G(s, b)),   0 ≤ α < 1.

    The greedy action keeps its target; every other action's target rises by α times its
    gap, so the learned gaps widen and a deterministic argmin is no longer flipped by
    small errors in nearly equal G values. With the greedy backup the operator keeps the
    optimal policy (Bellemare et al. 2016).

    Args:
        target: ``[B]`` the TD target T G(s, a).
        g_s: ``[B, A]`` G(s, ·) of the target critic.
        action: ``[B]`` the actions taken.
        alpha: α.
    Returns:
        ``[B]``.
    """
    gap = g_s.gather(1, action.long().unsqueeze(1)).squeeze(1) - g_s.min(1).values
    return target + alpha * gap


def _grads(params: list[nn.Parameter]) -> list[Tensor]:
    """The gradients of those ``params`` that have one."""
    return [p.grad for p in params if p.grad is not None]


class DeepActiveInferenceAgent:
    """Deep active inference agent for vector or pixel observations and discrete actions.

    Networks are given as factories (Hydra ``_partial_`` nodes) that the agent calls with
    the sizes it knows: ``encoder(obs_shape=, latent_dim=)``, ``decoder(latent_dim=,
    obs_shape=)``, ``transition(latent_dim=, num_actions=)``, ``outcome(latent_dim=,
    num_actions=)``, ``value(latent_dim=, num_actions=)``, ``preference(obs_shape=)``.

    Key hyperparameters (see ``configs/agent/daif.yaml`` for all):
        gamma: discount of future expected free energy.
        precision: γ of q(a) = softmax(−γ·G), annealed linearly to ``precision_final``
            over ``precision_anneal_steps`` environment steps.
        risk_weight, ambiguity_weight, info_gain_weight: the weights of the EFE terms.
        n_step: length of the bootstrapped target.
        updates_per_step: gradient steps per vectorised environment step (may be < 1).
        model_update_every: train the generative model on every k-th gradient step only
            (the critic trains on all of them).
        critic_trains_encoder: let the TD loss shape the encoder too (stops the latent
            drifting under the critic).
        action_gap: α of the advantage-learning target (:func:`action_gap_target`; 0: the
            plain TD target).
        lr_final_fraction, lr_decay_steps: linear decay of both learning rates.
        terminal_fraction: share of each batch's sequences drawn around a stored
            termination (:meth:`ReplayBuffer.sample`; 0: all uniform).
        epistemic_estimate: ``"exact"`` (ambiguity and information gain at every step
            of the n-step target), ``"sampled"`` (at one random step per sequence,
            reweighted: unbiased, 1/n_step of the model evaluations) or ``"cached"``
            (every step, read from replay where the model last evaluated them).
        planner: ``"amortised"`` (critic only) or ``"mpc"`` (imagined rollouts).
    """

    def __init__(
        self,
        *,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int = 1,
        env: gym.Env | None = None,
        device: torch.device | str = "cpu",
        amp: str = "off",
        compile: bool = False,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        transition: Callable[..., nn.Module],
        outcome: Callable[..., nn.Module],
        value: Callable[..., nn.Module],
        preference: Callable[..., nn.Module],
        latent_dim: int = 16,
        gamma: float = 0.99,
        n_step: int = 3,
        precision: float = 1.0,
        precision_final: float | None = None,
        precision_anneal_steps: int = 0,
        target_precision: float | None = None,
        risk_weight: float = 1.0,
        ambiguity_weight: float = 0.01,
        info_gain_weight: float = 0.1,
        kl_weight: float = 1.0,
        free_nats: float = 1.0,
        batch_size: int = 128,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        random_steps: int | None = None,
        updates_per_step: float = 1.0,
        model_update_every: int = 1,
        lr: float = 1e-3,
        model_lr: float | None = None,
        critic_lr: float | None = None,
        lr_final_fraction: float = 1.0,
        lr_decay_steps: int = 0,
        grad_clip: float = 10.0,
        target_tau: float = 0.005,
        target_update_interval: int = 1,
        huber_delta: float = 1.0,
        critic_trains_encoder: bool = False,
        epistemic_estimate: str = "exact",
        action_gap: float = 0.0,
        terminal_fraction: float = 0.0,
        planner: str = "amortised",
        horizon: int = 3,
        max_sequences: int = 256,
        cem_samples: int = 128,
        cem_elites: int = 16,
        cem_iterations: int = 3,
        nan_check_interval: int = 100,
    ) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"DeepActiveInferenceAgent needs a Discrete action space, got {action_space}"
            )
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(
                f"DeepActiveInferenceAgent needs a Box observation space, got {observation_space}"
            )
        self.num_envs = check_int("agent.num_envs", num_envs, minimum=1)
        self.latent_dim = check_int("agent.latent_dim", latent_dim, minimum=1)
        self.gamma = check_range("agent.gamma", gamma, 0.0, 1.0)
        self.n_step = check_int("agent.n_step", n_step, minimum=1)
        self.precision = check_positive("agent.precision", precision, allow_zero=True)
        self.precision_final = (
            self.precision
            if precision_final is None
            else check_positive("agent.precision_final", precision_final, allow_zero=True)
        )
        self.precision_anneal_steps = check_int(
            "agent.precision_anneal_steps", precision_anneal_steps, minimum=0
        )
        self.target_precision = (
            None
            if target_precision is None
            else check_positive("agent.target_precision", target_precision, allow_zero=True)
        )
        self.risk_weight = check_positive("agent.risk_weight", risk_weight, allow_zero=True)
        self.ambiguity_weight = check_positive(
            "agent.ambiguity_weight", ambiguity_weight, allow_zero=True
        )
        self.info_gain_weight = check_positive(
            "agent.info_gain_weight", info_gain_weight, allow_zero=True
        )
        self.kl_weight = check_positive("agent.kl_weight", kl_weight, allow_zero=True)
        self.free_nats = check_positive("agent.free_nats", free_nats, allow_zero=True)
        self.batch_size = check_int("agent.batch_size", batch_size, minimum=1)
        buffer_size = check_int("agent.buffer_size", buffer_size, minimum=self.num_envs)
        self.learning_starts = check_int("agent.learning_starts", learning_starts, minimum=0)
        self.random_steps = (
            self.learning_starts
            if random_steps is None
            else check_int("agent.random_steps", random_steps, minimum=0)
        )
        self.updates_per_step = check_positive("agent.updates_per_step", updates_per_step)
        self.model_update_every = check_int(
            "agent.model_update_every", model_update_every, minimum=1
        )
        # one learning rate for both optimisers unless a specific one is given
        lr = check_positive("agent.lr", lr)
        model_lr = lr if model_lr is None else check_positive("agent.model_lr", model_lr)
        critic_lr = lr if critic_lr is None else check_positive("agent.critic_lr", critic_lr)
        self.lr_final_fraction = check_range("agent.lr_final_fraction", lr_final_fraction, 0.0, 1.0)
        self.lr_decay_steps = check_int("agent.lr_decay_steps", lr_decay_steps, minimum=0)
        self.grad_clip = check_positive("agent.grad_clip", grad_clip)
        self.target_tau = check_range("agent.target_tau", target_tau, 0.0, 1.0)
        if self.target_tau == 0.0:
            raise ValueError("agent.target_tau: must be > 0 (0 would freeze the target), got 0")
        self.target_update_interval = check_int(
            "agent.target_update_interval", target_update_interval, minimum=1
        )
        self.huber_delta = check_positive("agent.huber_delta", huber_delta)
        self.critic_trains_encoder = bool(
            check_choice("agent.critic_trains_encoder", critic_trains_encoder, (True, False))
        )
        self.epistemic_estimate = check_choice(
            "agent.epistemic_estimate", epistemic_estimate, ("exact", "sampled", "cached")
        )
        self.action_gap = check_range("agent.action_gap", action_gap, 0.0, 1.0)
        if self.action_gap == 1.0:
            raise ValueError(
                "agent.action_gap: must be < 1 (advantage learning needs α < 1), got 1"
            )
        self.terminal_fraction = check_range("agent.terminal_fraction", terminal_fraction, 0.0, 1.0)
        self.planner = check_choice("agent.planner", planner, ("amortised", "mpc"))
        self.horizon = check_int("agent.horizon", horizon, minimum=1)
        self.max_sequences = check_int("agent.max_sequences", max_sequences, minimum=1)
        self.cem_samples = check_int("agent.cem_samples", cem_samples, minimum=2)
        self.cem_elites = check_int("agent.cem_elites", cem_elites, minimum=1)
        if self.cem_elites > self.cem_samples:
            raise ValueError(
                f"agent.cem_elites: must be <= agent.cem_samples={cem_samples}, got {cem_elites}"
            )
        self.cem_iterations = check_int("agent.cem_iterations", cem_iterations, minimum=1)
        self.nan_check_interval = check_int(
            "agent.nan_check_interval", nan_check_interval, minimum=1
        )
        self.amp = check_amp(amp)
        self.device = torch.device(device)
        if self.amp == "fp16" and self.device.type != "cuda":
            raise ValueError(
                f"trainer.amp='fp16' needs a CUDA device (got device={self.device}); "
                "use 'bf16' on CPU"
            )

        self.num_actions = int(action_space.n)
        self.obs_shape = tuple(int(d) for d in observation_space.shape)
        self._pixels = observation_space.dtype == np.uint8
        self._obs_center, self._obs_scale = self._observation_scaling(observation_space)

        z, na = self.latent_dim, self.num_actions
        self.encoder = encoder(obs_shape=self.obs_shape, latent_dim=z).to(self.device)
        self.decoder = decoder(latent_dim=z, obs_shape=self.obs_shape).to(self.device)
        self.transition = transition(latent_dim=z, num_actions=na).to(self.device)
        self.outcome = outcome(latent_dim=z, num_actions=na).to(self.device)
        self.critic = value(latent_dim=z, num_actions=na).to(self.device)
        self.preference = preference(obs_shape=self.obs_shape).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.model_params = [
            *self.encoder.parameters(),
            *self.decoder.parameters(),
            *self.transition.parameters(),
            *self.outcome.parameters(),
            *self.preference.parameters(),  # a learned preference trains with the model
        ]
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.model_params, "lr": model_lr},
                {"params": self._critic_params, "lr": critic_lr},
            ],
            # one fused kernel per step instead of a python loop over parameters
            fused=self.device.type in ("cpu", "cuda"),
        )
        self._base_lrs = [model_lr, critic_lr]
        self._params = [*self.model_params, *self._critic_params]
        self.scaler = grad_scaler(self.device, self.amp)
        self.replay = ReplayBuffer(
            buffer_size,
            self.num_envs,
            self.obs_shape,
            obs_dtype=torch.uint8 if self._pixels else torch.float32,
            device=self.device,
            # each transition's ambiguity and information gain, for the cached estimate
            # (kept whatever the estimate, so that it can be switched on a resumed run)
            annotations=("ambiguity", "info_gain"),
        )
        self._refreshed_upto = 0  # replay.written when the cache last took new transitions
        # outcomes of the best recent episodes, for a preference learned from them
        self.preferred: PreferredOutcomes | None = None
        self._learned_preference = bool(getattr(self.preference, "learns_from_episodes", False))
        if self._learned_preference:
            self.preferred = PreferredOutcomes(
                self.preference.capacity,
                self.num_envs,
                self.obs_shape,
                top_fraction=self.preference.top_fraction,
                window=self.preference.window,
                obs_dtype=torch.uint8 if self._pixels else torch.float32,
                device=self.device,
            )
        self.env_steps = 0
        self.num_updates = 0
        self._update_credit = 0.0
        # Running mean of the ambiguity, the baseline it is measured against (see _efe_terms).
        self._ambiguity_baseline = torch.zeros((), device=self.device)
        self._ambiguity_baseline_ready = False
        self._all_finite = torch.ones((), dtype=torch.bool, device=self.device)

        self._last_model_metrics: dict[str, Tensor] = {}
        losses_fn = Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]
        self._model_fn: losses_fn = self._model_losses
        self._critic_fn: losses_fn = self._critic_losses
        if compile:
            self._model_fn = torch.compile(self._model_losses, dynamic=False)
            self._critic_fn = torch.compile(self._critic_losses, dynamic=False)

    # ------------------------------------------------------------------ helpers
    def _observation_scaling(self, space: gym.spaces.Box) -> tuple[Tensor, Tensor]:
        """Centre and half-width per observation entry (1 where a bound is infinite).

        Classic-control observations have wildly different units (MountainCar's velocity
        spans ±0.07); mapping finite boxes to [−1, 1] lets one network config fit all.
        """
        if self._pixels:
            return (torch.zeros((), device=self.device), torch.full((), 255.0, device=self.device))
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        finite = torch.isfinite(low) & torch.isfinite(high) & (high > low)
        center = torch.where(finite, (high + low) / 2, torch.zeros_like(low))
        scale = torch.where(finite, (high - low) / 2, torch.ones_like(low))
        return center.to(self.device), scale.to(self.device)

    def preprocess(self, obs: Tensor) -> Tensor:
        """Raw observations ``[..., *obs_shape]`` → network inputs (float32, scaled)."""
        return (obs.float() - self._obs_center) / self._obs_scale

    def current_precision(self) -> float:
        """γ of q(a), linearly annealed from ``precision`` to ``precision_final``."""
        if self.precision_anneal_steps == 0:
            return self.precision_final
        frac = min(1.0, self.env_steps / self.precision_anneal_steps)
        return self.precision + frac * (self.precision_final - self.precision)

    def lr_scale(self) -> float:
        """Factor on both learning rates: 1 → ``lr_final_fraction`` linearly over
        ``lr_decay_steps`` environment steps (0: constant). A decaying step size lets the
        critic settle once the task is solved instead of drifting between policies."""
        if self.lr_decay_steps == 0:
            return 1.0
        frac = min(1.0, self.env_steps / self.lr_decay_steps)
        return 1.0 - frac * (1.0 - self.lr_final_fraction)

    def _state_value(self, z: Tensor, precision: float) -> Tensor:
        """E_{a~q(a|s)}[G_target(s, a)] with q = softmax(−γ·G_online(s)): ``z[B, Z] → [B]``.

        The online critic picks the action distribution and the target critic scores it
        (the double-estimator trick, which curbs the optimism of minimising over noise).
        """
        q = maths.softmax(-self.critic(z), precision)
        return (q * self.critic_target(z)).sum(-1)

    def _epistemic_terms(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Ambiguity and parameter information gain of taking ``action`` in ``z``, with the
        predicted next state and outcome they are computed from.

        Args:
            z: ``[B, Z]`` latent states; action: ``[B]``.
        Returns:
            ``(ambiguity[B], info_gain[B], ŝ'[B, Z], ô'[B, *obs_shape])``: ŝ' is the
            ensemble's mean prediction, ô' = E[p(o|ŝ')] (scaled units) and the
            ambiguity H[p(o|ŝ')] in nats.
        """
        means, stds = self.transition(z, action)  # [K, B, Z]
        info_gain = maths.gaussian_mixture_info_gain(means, stds)
        z_next = means.mean(0)
        obs_mean, obs_std = self.decoder(z_next)
        return maths.gaussian_entropy(obs_std.flatten(1)), info_gain, z_next, obs_mean

    def _efe_terms(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`_epistemic_terms` with the ambiguity *minus its running mean*: in an
        episodic task a constant per-step ambiguity would reward or punish survival."""
        ambiguity, info_gain, z_next, obs_mean = self._epistemic_terms(z, action)
        return ambiguity - self._ambiguity_baseline, info_gain, z_next, obs_mean

    def _log_preference(self, reward: Tensor, termination: Tensor, next_obs: Tensor) -> Tensor:
        """E_q[ln P̃] of outcomes: ``reward[...]``, ``termination[...]`` (probability or
        0/1) and the raw observation ``next_obs[..., *obs_shape]`` it came with. The
        observation is scaled only for a preference that reads it."""
        if not self._learned_preference:
            return self.preference(reward, termination)
        return self.preference(reward, termination, self.preprocess(next_obs))

    def _weighted_efe(self, risk: Tensor, ambiguity: Tensor, info_gain: Tensor) -> Tensor:
        """g = w_r·risk + w_a·ambiguity − β·info_gain with this agent's weights (any shape)."""
        return maths.expected_free_energy(
            risk,
            ambiguity,
            info_gain,
            risk_weight=self.risk_weight,
            ambiguity_weight=self.ambiguity_weight,
            info_gain_weight=self.info_gain_weight,
        )

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> None:
        """The agent infers s from the current observation alone: no per-episode memory."""
        return None

    @torch.no_grad()
    def expected_free_energy(self, obs: Tensor) -> Tensor:
        """G(s, a) for every action under the configured planner: ``obs[N, ...] → [N, A]``."""
        z, _ = self.encoder(self.preprocess(obs))
        if self.planner == "mpc":
            return self._plan(z)
        return self.critic(z)

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        state: Any,
        episode_start: np.ndarray,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Sample a ~ q(a) = softmax(−γ·G) (or its mode when ``deterministic``)."""
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
        n = obs_t.shape[0]
        if not deterministic and self.env_steps < self.random_steps:
            # Before learning starts G is noise; q(a) is taken uniform (γ = 0).
            actions = torch.randint(0, self.num_actions, (n,))
            return actions.numpy(), None
        with autocast(self.device, self.amp):
            g = self.expected_free_energy(obs_t).float()
        if deterministic:
            actions = g.argmin(-1)
        else:
            q = maths.softmax(-g, self.current_precision())
            actions = torch.multinomial(q, 1).squeeze(-1)
        return actions.cpu().numpy(), None

    def _plan(self, z0: Tensor) -> Tensor:
        """Model-predictive G(s, a): best imagined H-step sequence starting with each a.

        Sequences are all A^H when that is ≤ ``max_sequences``, else drawn by the
        cross-entropy method. Returns ``[N, A]`` (inf for a first action never sampled).
        """
        n, a, h = z0.shape[0], self.num_actions, self.horizon
        if a**h <= self.max_sequences:
            seqs = torch.tensor(list(itertools.product(range(a), repeat=h)), device=self.device)
            seqs = seqs.unsqueeze(0).expand(n, -1, -1)  # [N, S, H]
            g = self._rollout(z0, seqs)
        else:
            probs = torch.full((n, h, a), 1.0 / a, device=self.device)
            for _ in range(self.cem_iterations):
                flat = probs.unsqueeze(1).expand(-1, self.cem_samples, -1, -1).reshape(-1, a)
                seqs = torch.multinomial(flat, 1).view(n, self.cem_samples, h)
                g = self._rollout(z0, seqs)
                elite = g.topk(self.cem_elites, dim=1, largest=False).indices  # [N, E]
                elite_seqs = seqs.gather(1, elite.unsqueeze(-1).expand(-1, -1, h))
                counts = F.one_hot(elite_seqs, a).float().mean(1)  # [N, H, A]
                probs = 0.9 * counts + 0.1 / a  # keep every action possible
        first = F.one_hot(seqs[..., 0], a).bool()  # [N, S, A]
        scores = torch.where(first, g.unsqueeze(-1), torch.full_like(g.unsqueeze(-1), math.inf))
        return scores.min(1).values

    def _rollout(self, z0: Tensor, seqs: Tensor) -> Tensor:
        """Expected free energy of action sequences ``seqs[N, S, H]`` from ``z0[N, Z]``.

        Each step adds w_r·risk + w_a·ambiguity − β·info_gain for the predicted outcome,
        weighted by the discount and the predicted probability of not having terminated;
        the critic's E_q[G] bootstraps the tail. Returns ``[N, S]``.
        """
        n, s, h = seqs.shape
        z = z0.unsqueeze(1).expand(-1, s, -1).reshape(n * s, -1)
        alive = torch.ones(n * s, device=z.device)
        total = torch.zeros(n * s, device=z.device)
        precision = self._target_precision()
        for t in range(h):
            act = seqs[..., t].reshape(-1)
            reward, term_logit = self.outcome(z, act)
            p_term = torch.sigmoid(term_logit)
            ambiguity, info_gain, z_next, o_next = self._efe_terms(z, act)
            # the predicted outcome: reward, termination and the likelihood's mean at ŝ'
            risk = -self.preference(maths.symexp(reward), p_term, o_next)
            g = self._weighted_efe(risk, ambiguity, info_gain)
            total = total + (self.gamma**t) * alive * g
            alive = alive * (1.0 - p_term)
            z = z_next
        total = total + (self.gamma**h) * alive * self._state_value(z, precision)
        return total.view(n, s)

    def _target_precision(self) -> float:
        return self.current_precision() if self.target_precision is None else self.target_precision

    # ------------------------------------------------------------------ learning
    def observe(self, transition: Transition) -> None:
        """Store one vectorised step in the replay buffer."""
        self.replay.add(transition)
        if self.preferred is not None:
            self.preferred.add(transition)
        self.env_steps += self.num_envs

    def _model_losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Variational free energy of the first transition of each ``[B, L]`` sequence.

        F = −ln p(o|s) − ln p(o'|s') + KL[q(s'|o') ‖ p(s'|s, a)] (free bits), plus the
        ensemble's transition NLL and the outcome model's NLL. Returns the total and a
        dict of 0-d tensors.
        """
        b = batch["action"].shape[0]
        obs = self.preprocess(batch["obs"][:, 0])
        next_obs = self.preprocess(batch["next_obs"][:, 0])
        action = batch["action"][:, 0]
        o_pair = torch.cat([obs, next_obs], 0)  # [2B, ...]
        mean, std = self.encoder(o_pair)
        z_sample = mean + std * torch.randn_like(std)
        rec_mean, rec_std = self.decoder(z_sample)
        reconstruction = -maths.gaussian_log_prob(
            o_pair.flatten(1), rec_mean.flatten(1), rec_std.flatten(1)
        ).mean()
        z0, z1 = z_sample[:b], z_sample[b:]
        p_mean, p_std = self.transition(z0, action)  # [K, B, Z]
        # Complexity: the posterior is pulled towards the (fixed) prediction; the ensemble
        # learns the posterior by its own NLL (a KL-balancing split, so neither chases
        # the other into collapse).
        kl = maths.gaussian_kl(mean[b:], std[b:], p_mean.detach(), p_std.detach()).mean(0)
        kl_loss = maths.free_bits(kl, self.free_nats).mean()
        transition_nll = -maths.gaussian_log_prob(z1.detach(), p_mean, p_std).mean()
        r_hat, term_logit = self.outcome(z0, action)
        outcome_nll = 0.5 * (r_hat - maths.symlog(batch["reward"][:, 0])).pow(2).mean()
        outcome_nll = outcome_nll + F.binary_cross_entropy_with_logits(
            term_logit, batch["terminated"][:, 0].float()
        )
        total = reconstruction + self.kl_weight * kl_loss + transition_nll + outcome_nll
        metrics = {
            "losses/reconstruction": reconstruction,
            "free_energy/kl": kl.mean(),
            "losses/transition_nll": transition_nll,
            "losses/outcome_nll": outcome_nll,
            "free_energy/total": reconstruction + kl.mean(),
        }
        return total, metrics

    def _critic_losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """TD loss of G(s, a) against the n-step expected-free-energy target.

        The target is split by linearity into the observed part and the epistemic part,

            Σ_k w_k g_k = Σ_k w_k w_r·risk_k + Σ_k w_k (w_a·ambiguity_k − β·info_gain_k),

        with w_k = γ^k while the episode runs (:func:`n_step_weights`). Risk needs only
        the observed outcomes; the epistemic terms need the model at (s_k, a_k), which
        is most of an update's arithmetic. ``epistemic_estimate`` says where they come from:

        * ``"exact"``: evaluated at every step;
        * ``"sampled"``: at one step k ~ U{0..m} per sequence (m = the last step the
          target sums), weighted by (m + 1)·w_k: an unbiased estimate of the same sum
          for 1/L of the model evaluations;
        * ``"cached"``: read from the replay buffer's annotations, which
          :meth:`_refresh_epistemic` writes whenever the model trains on a transition
          (and for every new one). Every step counts, as with ``exact``, at the cost of
          a lookup; the values lag the model by the time since that transition was last
          in a model batch.

        Returns the Huber loss and a dict of 0-d tensors: the first step's risk, and the
        ambiguity and information gain of the first (exact, cached) or the sampled step.
        """
        b = batch["action"].shape[0]
        action = batch["action"]
        rows = torch.arange(b, device=action.device)
        last = bootstrap_index(batch["terminated"], batch["truncated"])
        o_last = batch["next_obs"][rows, last]
        weights = n_step_weights(batch["terminated"], batch["truncated"], self.gamma)  # [B, L]
        metrics: dict[str, Tensor] = {}
        if self.epistemic_estimate == "cached":
            z0, z_last = self._encode_first_and_last(batch["obs"][:, 0], o_last)
            epistemic_sum, ambiguity, info_gain = self._cached_epistemic(batch, weights)
        else:
            z0, z_last, epistemic_sum, ambiguity, info_gain = self._model_epistemic(
                batch, weights, last, o_last
            )
            metrics["_ambiguity_raw"] = (ambiguity + self._ambiguity_baseline).mean()
        with torch.no_grad():
            # −ln P̃(o) of the observed outcome (reward, termination; next observation)
            risk = -self._log_preference(
                batch["reward"], batch["terminated"].float(), batch["next_obs"]
            )
            v_last = self._state_value(z_last, self._target_precision())
            target = epistemic_sum + n_step_efe_target(
                self.risk_weight * risk,
                v_last,
                batch["terminated"],
                batch["truncated"],
                self.gamma,
                weights=weights,
                last=last,
            )
            if self.action_gap > 0.0:
                g_s = self.critic_target(z0.detach())
                target = action_gap_target(target, g_s, action[:, 0], self.action_gap)
        # every member of a critic ensemble regresses on the same target; a value network
        # without members (any G(s, ·) module) counts as one
        members = getattr(self.critic, "members", None)
        g_members = members(z0) if members is not None else self.critic(z0).unsqueeze(0)
        index = action[:, :1].unsqueeze(0).expand(g_members.shape[0], -1, -1)  # [K, B, 1]
        g_members = g_members.gather(2, index).squeeze(2)  # [K, B]
        critic_td = F.huber_loss(g_members, target.expand_as(g_members), delta=self.huber_delta)
        g_pred = g_members.mean(0)
        metrics.update(
            {
                "losses/critic_td": critic_td,
                "efe/risk": risk[:, 0].mean(),
                "efe/ambiguity": ambiguity.mean(),
                "efe/info_gain": info_gain.mean(),
                "efe/G": g_pred.mean(),
            }
        )
        return critic_td, metrics

    @torch.no_grad()
    def _cached_epistemic(
        self, batch: dict[str, Tensor], weights: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Σ_k w_k (w_a·ambiguity_k − β·info_gain_k) from the batch's annotations
        (``weights[B, L]``): ``(sum[B], ambiguity[B], info_gain[B])``, the last two of the
        first step, the ambiguity relative to its running mean."""
        ambiguity = batch["ambiguity"] - self._ambiguity_baseline  # [B, L]
        info_gain = batch["info_gain"]
        epistemic = self._weighted_efe(torch.zeros_like(ambiguity), ambiguity, info_gain)
        return (weights * epistemic).sum(1), ambiguity[:, 0], info_gain[:, 0]

    def _model_epistemic(
        self, batch: dict[str, Tensor], weights: Tensor, last: Tensor, o_last: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The epistemic part of the target evaluated by the model now, at every step
        (``exact``) or at one sampled step (``sampled``), with the latents the critic reads.

        Returns ``(z0[B, Z], z_last[B, Z], sum[B], ambiguity[B], info_gain[B])``: z0 with
        gradient when the critic trains the encoder; the ambiguity (relative to its running
        mean) and information gain of the first or the sampled step.
        """
        b, length = batch["action"].shape
        action = batch["action"]
        rows = torch.arange(b, device=action.device)
        exact = self.epistemic_estimate == "exact"
        if exact:
            epi_obs, epi_action = batch["obs"].flatten(0, 1), action.flatten()  # [B·L]
        else:
            k = sample_sequence_step(last, torch.rand(b, device=last.device))
            epi_obs, epi_action = batch["obs"][rows, k], action[rows, k]  # [B]
            epi_weight = (last + 1).to(weights.dtype) * weights[rows, k]
        if self.critic_trains_encoder:
            # the TD error also shapes the representation (as in SAC-AE), so the latent
            # the critic reads does not drift away under it as the model learns
            z0, _ = self.encoder(self.preprocess(batch["obs"][:, 0]))
        with torch.no_grad():
            # one encoder pass for every state the target reads (few calls: on small
            # batches each call's fixed cost outweighs its arithmetic)
            parts = [epi_obs, o_last]
            if not (self.critic_trains_encoder or exact):
                parts.append(batch["obs"][:, 0])
            z_all, _ = self.encoder(self.preprocess(torch.cat(parts)))
            n_epi = epi_obs.shape[0]
            z_epi, z_last = z_all[:n_epi], z_all[n_epi : n_epi + b]
            ambiguity, info_gain, _, _ = self._efe_terms(z_epi, epi_action)
            epistemic = self._weighted_efe(torch.zeros_like(ambiguity), ambiguity, info_gain)
            if exact:
                epistemic_sum = (weights * epistemic.view(b, length)).sum(1)
                # log the first step's terms (the sampled estimate logs the sampled step's)
                ambiguity = ambiguity.view(b, length)[:, 0]
                info_gain = info_gain.view(b, length)[:, 0]
            else:
                epistemic_sum = epi_weight * epistemic
            if not self.critic_trains_encoder:
                z0 = z_epi.view(b, length, -1)[:, 0] if exact else z_all[n_epi + b :]
        return z0, z_last, epistemic_sum, ambiguity, info_gain

    def _encode_first_and_last(self, obs0: Tensor, o_last: Tensor) -> tuple[Tensor, Tensor]:
        """Latent means of the first observations ``obs0[B, ...]`` (with gradient when the
        critic trains the encoder) and of the bootstrap observations ``o_last[B, ...]``
        (without): ``([B, Z], [B, Z])``, from one encoder pass."""
        with torch.set_grad_enabled(self.critic_trains_encoder):
            z, _ = self.encoder(self.preprocess(torch.cat([obs0, o_last])))
        return z[: obs0.shape[0]], z[obs0.shape[0] :].detach()

    @torch.no_grad()
    def _refresh_epistemic(self, slot: Tensor, env: Tensor) -> Tensor:
        """Evaluate the epistemic terms of the stored transitions at ``(slot[M], env[M])``
        with the current model and write them into the replay annotations ``ambiguity``
        (raw nats) and ``info_gain``. Returns the mean raw ambiguity (0-d)."""
        replay = self.replay
        obs, action = replay.data["obs"][slot, env], replay.data["action"][slot, env]
        ambiguity = torch.empty(slot.shape[0], device=self.device)
        info_gain = torch.empty_like(ambiguity)
        for i in range(0, slot.shape[0], _REFRESH_CHUNK):  # bounded memory on a resume
            part = slice(i, i + _REFRESH_CHUNK)
            z, _ = self.encoder(self.preprocess(obs[part]))
            ambiguity[part], info_gain[part], _, _ = self._epistemic_terms(z, action[part])
        replay.write("ambiguity", slot, env, ambiguity)
        replay.write("info_gain", slot, env, info_gain)
        return ambiguity.mean()

    def _cache_rows(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Where :meth:`_refresh_epistemic` writes on a model step: the first step of
        each sequence of ``batch`` and every transition stored since the last refresh."""
        replay = self.replay
        new = replay.newest_slots(replay.written - self._refreshed_upto)
        self._refreshed_upto = replay.written
        n = replay.num_envs
        envs = torch.arange(n, device=self.device)
        slot = torch.cat([batch["slot"][:, 0], new.repeat_interleave(n)])
        env = torch.cat([batch["env"][:, 0], envs.repeat(new.shape[0])])
        return slot, env

    def _gradient_step(self) -> dict[str, Tensor]:
        batch = self.replay.sample(self.batch_size, self.n_step, self.terminal_fraction)
        scale = self.lr_scale()
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * scale
        train_model = self.num_updates % self.model_update_every == 0
        train_preference = train_model and self.preferred is not None and len(self.preferred) > 0
        ambiguity_raw: Tensor | None = None
        if self.epistemic_estimate == "cached" and train_model:
            # the model is about to learn from these transitions: note what it expects
            # of them now, and read the batch's (partly fresh) notes back
            slot, env = self._cache_rows(batch)
            ambiguity_raw = self._refresh_epistemic(slot, env)
            for name in ("ambiguity", "info_gain"):
                batch[name] = self.replay.data[name][batch["slot"], batch["env"]]
        with autocast(self.device, self.amp):
            total, metrics = self._critic_fn(batch)
            if train_model:
                model_total, model_metrics = self._model_fn(batch)
                total = total + model_total
                if train_preference:
                    # preferred outcomes against as many experienced ones (from replay)
                    preference_loss, experienced_mean = self.preference.loss(
                        self.preprocess(self.preferred.sample(self.batch_size)),
                        self.preprocess(batch["next_obs"][:, 0]),
                    )
                    total = total + preference_loss
                    model_metrics["losses/preference"] = preference_loss
                metrics.update(model_metrics)
        for p in self._params:  # what zero_grad(set_to_none=True) does, minus its overhead
            p.grad = None
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if train_model or self.critic_trains_encoder:
            clip_grad_norm_(_grads(self.model_params), self.grad_clip)
        clip_grad_norm_(_grads(self._critic_params), self.grad_clip)
        self.scaler.step(self.optimizer)  # parameters without a gradient are skipped
        self.scaler.update()
        self.num_updates += 1
        if self.num_updates % self.target_update_interval == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, self.target_tau)
        if train_preference:
            self.preference.track_baseline(experienced_mean)
        raw = metrics.pop("_ambiguity_raw", ambiguity_raw)
        if raw is not None:
            raw = raw.detach().float()
            if self._ambiguity_baseline_ready:
                self._ambiguity_baseline.lerp_(raw, 0.01)
            else:
                self._ambiguity_baseline.copy_(raw)
                self._ambiguity_baseline_ready = True
        if train_model:
            self._last_model_metrics = {k: v.detach() for k, v in model_metrics.items()}
        else:
            metrics.update(self._last_model_metrics)
        return metrics

    def update(self, global_step: int) -> dict[str, Tensor]:
        """Take ``updates_per_step`` gradient steps (fractional values accumulate).

        Raises:
            NonFiniteLossError: a loss was NaN/inf (checked every ``nan_check_interval``
                updates with one fused ``isfinite``; names the loss and the step).
        """
        if self.env_steps < self.learning_starts or len(self.replay) < self.batch_size:
            return {}
        if self.replay.filled < self.n_step:
            return {}
        self._update_credit += self.updates_per_step
        metrics: dict[str, Tensor] = {}
        while self._update_credit >= 1.0:
            self._update_credit -= 1.0
            metrics = self._gradient_step()
            # a critic-only step right after a resume has no model losses yet
            tags = [k for k in _LOSS_TAGS if k in metrics]
            losses = torch.stack([metrics[k].detach().float() for k in tags])
            self._all_finite &= torch.isfinite(losses).all()
            if self.num_updates % self.nan_check_interval == 0:
                self._raise_if_non_finite(tags, losses, global_step)
        return metrics

    def _raise_if_non_finite(self, tags: list[str], losses: Tensor, global_step: int) -> None:
        if bool(self._all_finite):
            return
        bad = [
            (tag, float(v))
            for tag, v in zip(tags, losses.tolist(), strict=True)
            if not math.isfinite(v)
        ]
        tag, value = bad[0] if bad else (tags[0], None)
        raise NonFiniteLossError(tag, global_step, value)

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def images(self, n: int = 8) -> dict[str, np.ndarray]:
        """The newest ``n`` observations of env 0 above their reconstructions E[p(o|ŝ)],
        ŝ = the posterior mean: ``{"model/reconstruction": [3, H, W] uint8}``.

        Pixel observations show the newest frame of each stack (grey); vector
        observations a heatmap of the entries scaled to [−1, 1] (rows: steps).
        """
        obs = self.replay.latest(n)  # oldest first
        if obs.shape[0] == 0:
            return {}
        x = self.preprocess(obs)
        mean, _ = self.encoder(x)
        recon, _ = self.decoder(mean)
        if self._pixels:
            frames = [x[:, -1].cpu().numpy(), recon[:, -1].float().cpu().numpy()]
            return {"model/reconstruction": tile_grey(frames)}
        rows = torch.cat([x.flatten(1), recon.flatten(1).float()], 0)  # [2n, D]
        picture = heatmap(((rows.clamp(-1, 1) + 1) / 2).cpu().numpy(), cell=8, vmax=1.0)
        return {"model/reconstruction": picture}

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "transition": self.transition,
            "outcome": self.outcome,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "preference": self.preference,
        }

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, scaler, replay buffer and counters."""
        return {
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "replay": self.replay.state_dict(),
            "env_steps": self.env_steps,
            "num_updates": self.num_updates,
            "update_credit": self._update_credit,
            "refreshed_upto": self._refreshed_upto,
            "ambiguity_baseline": self._ambiguity_baseline.clone(),
            "ambiguity_baseline_ready": self._ambiguity_baseline_ready,
            "preferred": None if self.preferred is None else self.preferred.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.replay.load_state_dict(state["replay"])
        self.env_steps = int(state["env_steps"])
        self.num_updates = int(state["num_updates"])
        self._update_credit = float(state["update_credit"])
        # a checkpoint without cached epistemic terms: evaluate them all on the next model step
        self._refreshed_upto = int(state.get("refreshed_upto", 0))
        self._ambiguity_baseline.copy_(state["ambiguity_baseline"])
        self._ambiguity_baseline_ready = bool(state["ambiguity_baseline_ready"])
        if self.preferred is not None:
            self.preferred.load_state_dict(state["preferred"])
