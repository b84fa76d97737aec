"""The deep active inference agent: a world model, an expected-free-energy critic, replay.

Acting: q(a|s) = softmax(−β·G(s, ·)) at the posterior mean s = ŝ(o), its mode when
``deterministic``; with continuous actions q(a|s) is a tanh-squashed Gaussian actor that
minimises E_q[G] − α·H[q] (:mod:`daif.deep.efe`), its mean when ``deterministic``.
Learning, one gradient step (:meth:`DeepActiveInferenceAgent.update`):

1. sample B sequences of n steps from replay;
2. the critic's n-step target (:mod:`daif.deep.efe`): the observed risk of each step plus
   its epistemic part from the configured source (:mod:`daif.deep.epistemic`), bootstrapped
   by the target critic;
3. on every ``model_update_every``-th step, the world model's free energy
   (:mod:`daif.deep.world_model`) is added to the loss;
4. one Adam step on all (with the actor and its temperature when actions are continuous),
   gradient norms clipped per group, then the Polyak update of the target critic.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from daif import maths
from daif.deep import efe
from daif.deep.config import DeepAgentConfig
from daif.deep.epistemic import ANNOTATIONS, EPISTEMIC_SOURCES
from daif.deep.planner import CEMPlanner
from daif.deep.world_model import MODEL_LOSS_TAGS, WorldModel
from daif.protocol import AgentContext, Transition
from daif.replay import ReplayBuffer
from daif.utils import NonFiniteLossError, autocast, check_amp, clip_grad_norm_, grad_scaler
from daif.validation import ConfigError

LOSS_TAGS: tuple[str, ...] = (*MODEL_LOSS_TAGS, "losses/critic_td", "losses/actor")
Factory = Callable[..., nn.Module]


class Temperature(nn.Module):
    """α = 1/β, the weight of the actor's entropy, learned as ln α."""

    def __init__(self, initial: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))


class DeepActiveInferenceAgent:
    """Deep active inference for Box observations (vectors or uint8 pixels) and discrete
    or continuous (1-D Box) actions.

    Networks are factories that the agent calls with the sizes it knows:
    ``encoder(obs_shape=, latent_dim=)``, ``decoder(latent_dim=, obs_shape=)``,
    ``transition(latent_dim=, num_actions=)``, ``outcome(latent_dim=, num_actions=)``,
    ``critic(latent_dim=, num_actions=)`` and ``preference()`` (ln P̃ of outcomes); with
    continuous actions the action-conditioned ones also get ``continuous=True`` and
    ``actor(latent_dim=, num_actions=)`` is required.
    Hyperparameters: :class:`daif.deep.config.DeepAgentConfig`.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        encoder: Factory,
        decoder: Factory,
        transition: Factory,
        outcome: Factory,
        critic: Factory,
        preference: Factory,
        actor: Factory | None = None,
        config: DeepAgentConfig | None = None,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        amp: str = "off",
        compile: bool = False,
    ) -> None:
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if self.continuous:
            bounded = np.all(np.isfinite(action_space.low) & np.isfinite(action_space.high))
            if len(action_space.shape) != 1 or not bounded:
                raise ConfigError(
                    f"env: continuous actions must be a 1-D Box with finite bounds, got "
                    f"{action_space}"
                )
            if actor is None:
                raise ConfigError(
                    f"agent.actor: the env's actions are continuous ({action_space}); use "
                    "agent=daif_continuous, which adds an actor"
                )
        elif not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"env: the deep agent needs a Discrete or Box action space, got {action_space}"
            )
        elif actor is not None:
            raise ConfigError(
                f"agent.actor: the env's actions are discrete ({action_space}) and its critic "
                "scores every action; use agent=daif (env=<name> picks the preset's agent)"
            )
        if not isinstance(observation_space, gym.spaces.Box):
            raise ConfigError(
                f"env: the deep agent needs a Box observation space, got {observation_space}"
            )
        self.config = c = config or DeepAgentConfig()
        if self.continuous and c.action_persistence != 0:
            raise ConfigError(
                f"agent.action_persistence={c.action_persistence}: discrete actions only; the "
                "actor's q(a|s) sets the exploration of continuous actions; use 0"
            )
        if c.buffer_size < num_envs or c.batch_size > c.buffer_size:
            raise ConfigError(
                f"agent.batch_size={c.batch_size} / agent.buffer_size={c.buffer_size}: the buffer "
                f"must hold a batch and one step of trainer.num_envs={num_envs} envs"
            )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.amp = check_amp(amp)
        if self.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"trainer.amp='fp16' needs a CUDA device, not {self.device}; use bf16"
            )
        self.num_actions = int(action_space.shape[0]) if self.continuous else int(action_space.n)
        obs_shape = tuple(int(d) for d in observation_space.shape)
        na = self.num_actions
        acts = {"num_actions": na, **({"continuous": True} if self.continuous else {})}
        self.world_model = self._build_world_model(
            {"encoder": encoder, "decoder": decoder, "transition": transition, "outcome": outcome},
            observation_space,
            acts,
        ).to(self.device)
        z = self.world_model.feature_dim
        self.critic = critic(latent_dim=z, **acts).to(self.device)
        self.preference = preference().to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._model_params = list(self.world_model.parameters())
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._params = self._model_params + self._critic_params
        self._build_eval_average()
        model_lr = c.lr if c.model_lr is None else c.model_lr
        groups = [{"params": self._model_params, "lr": model_lr}, {"params": self._critic_params}]
        self._base_lrs: tuple[float, ...] = (model_lr, c.lr)
        if self.continuous:
            self.actor = actor(latent_dim=z, num_actions=na).to(self.device)
            self.temperature = Temperature(1.0 / max(c.precision, 1e-6)).to(self.device)
            self._actor_params = [*self.actor.parameters(), *self.temperature.parameters()]
            self._params = self._params + self._actor_params
            groups.append({"params": self._actor_params})
            self._base_lrs = (*self._base_lrs, c.lr)
            self.target_entropy = -float(na) if c.target_entropy is None else c.target_entropy
            low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            self._action_center, self._action_scale = (high + low) / 2, (high - low) / 2
        self.optimizer = torch.optim.Adam(
            groups,
            lr=c.lr,
            fused=self.device.type in ("cpu", "cuda"),  # one kernel, not a loop over tensors
        )
        self.scaler = grad_scaler(self.device, self.amp)
        self.replay = ReplayBuffer(
            c.buffer_size,
            num_envs,
            obs_shape,
            obs_dtype=torch.uint8 if self.world_model.pixels else torch.float32,
            action_dtype=torch.float32 if self.continuous else torch.long,
            action_shape=(na,) if self.continuous else (),
            device=self.device,
            annotations=ANNOTATIONS,  # kept whatever the source, so it can change on resume
        )
        self.epistemic = EPISTEMIC_SOURCES[c.epistemic_estimate](
            self.world_model, c.ambiguity_weight, c.info_gain_weight, c.critic_trains_encoder
        )
        self.planner: CEMPlanner | None = None
        if c.planner == "cem":
            if not self.continuous:
                raise ConfigError("agent.planner='cem' plans continuous actions; use 'actor'")
            self.planner = CEMPlanner(
                self.world_model, self.critic, self.actor, self.preference, self.epistemic,
                horizon=c.plan_horizon, candidates=c.plan_candidates, elites=c.plan_elites,
                iterations=c.plan_iterations, discount=c.discount, risk_weight=c.risk_weight,
            )  # fmt: skip
        self.env_steps = 0
        self.num_updates = 0
        self._update_credit = 0.0
        self._all_finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._last_model_metrics: dict[str, Tensor] = {}
        self._critic_fn = self.critic_loss
        self._model_fn = self.world_model.free_energy
        if compile:
            self._critic_fn = torch.compile(self.critic_loss, dynamic=False)
            self._model_fn = torch.compile(self.world_model.free_energy, dynamic=False)

    def _build_eval_average(self) -> None:
        """``self.eval_average``: copies of the encoder and critic that deterministic acting
        reads, Polyak-averaged after every step (``None`` when ``agent.eval_average_rate``
        is 0)."""
        rate = self.config.eval_average_rate
        self.eval_average: nn.ModuleDict | None = None
        if rate == 0:
            return
        if self.continuous:
            raise ConfigError(
                f"agent.eval_average_rate={rate}: averages the critic that a discrete agent's "
                "greedy action reads; continuous actions come from the actor, so leave it 0"
            )
        live = nn.ModuleDict({"encoder": self.world_model.encoder, "critic": self.critic})
        self.eval_average = copy.deepcopy(live).requires_grad_(False)
        self._average_pairs = (list(self.eval_average.parameters()), list(live.parameters()))

    def _build_world_model(
        self, nets: dict[str, Factory], observation_space: gym.spaces.Box, acts: dict[str, Any]
    ) -> nn.Module:
        """The generative model from its network factories (``acts``: the action keywords
        the action-conditioned networks take)."""
        z = self.config.latent_dim
        obs_shape = tuple(int(d) for d in observation_space.shape)
        return WorldModel(
            nets["encoder"](obs_shape=obs_shape, latent_dim=z),
            nets["decoder"](latent_dim=z, obs_shape=obs_shape),
            nets["transition"](latent_dim=z, **acts),
            nets["outcome"](latent_dim=z, **acts),
            observation_space,
            binary_obs=self.config.binary_obs,
        )

    @classmethod
    def from_context(cls, ctx: AgentContext, **hparams: Any) -> DeepActiveInferenceAgent:
        """Build from the trainer's context and the ``agent`` config (networks + fields)."""
        names = ("encoder", "decoder", "transition", "outcome", "critic", "preference", "actor")
        nets = {k: hparams.pop(k) for k in names if k in hparams}
        return cls(
            ctx.observation_space,
            ctx.action_space,
            **nets,
            config=DeepAgentConfig.from_mapping(hparams),
            num_envs=ctx.num_envs,
            device=ctx.device,
            amp=ctx.amp,
            compile=ctx.compile,
        )

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> Tensor | None:
        """s is inferred from the current observation alone; the only per-episode memory is
        the previous action ``[N]`` (−1: none yet) when ``agent.action_persistence`` > 0."""
        if self.config.action_persistence == 0.0:  # (refused for continuous actions)
            return None
        return torch.full((num_envs,), -1, dtype=torch.long)

    @torch.no_grad()
    def expected_free_energy(self, obs: Tensor, average: bool = False) -> Tensor:
        """G(s, a) of every action at s = ŝ(o): ``obs[N, ...] → [N, A]``; with continuous
        actions, the pessimistic G of the actor's mean action, ``[N, 1]``. ``average``:
        read the Polyak averages of the encoder and critic (``agent.eval_average_rate``)."""
        if average and self.eval_average is not None:
            z = self.eval_average["encoder"](self.world_model.preprocess(obs))[0]
            return self.eval_average["critic"](z)
        z = self.world_model.encode(obs)
        if self.continuous:
            return self.critic(z, torch.tanh(self.actor(z)[0])).amax(0).unsqueeze(-1)
        return self.critic(z)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, state: Any, episode_start: np.ndarray, deterministic: bool = False
    ) -> tuple[np.ndarray, Tensor | None]:
        """a ~ softmax(−β·G(s, ·)), or its mode when ``deterministic``; uniform before
        ``learning_starts`` (G is noise then). In training, with ``agent.action_persistence``
        κ > 0, each env repeats its previous action (``state``, ``[N]``) with probability κ."""
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
        if self.continuous:
            return self._act_continuous(obs_t, deterministic), None
        if not deterministic and self.env_steps < self.config.learning_starts:
            a = torch.randint(0, self.num_actions, (obs_t.shape[0],))
            return self._persist(a, state, episode_start)
        with autocast(self.device, self.amp):
            g = self.expected_free_energy(obs_t, average=deterministic).float()
        if not bool(torch.isfinite(g).all()):  # act syncs anyway: this check is ~free
            raise NonFiniteLossError("action probabilities softmax(-β·G)", None)
        if deterministic:
            return g.argmin(-1).cpu().numpy(), state
        q = maths.softmax(-g, self.config.precision_at(self.env_steps))
        a = torch.multinomial(q, 1).squeeze(-1).cpu()
        return self._persist(a, state, episode_start)

    def _persist(
        self, a: Tensor, state: Tensor | None, episode_start: np.ndarray
    ) -> tuple[np.ndarray, Tensor | None]:
        """The sampled ``a[N]`` with each env's previous action (``state``) kept instead with
        probability κ where its episode goes on: (actions, the next step's ``state``)."""
        if self.config.action_persistence == 0.0:
            return a.numpy(), None
        if state is not None:  # None: a caller without the trainer's loop state
            keep = torch.rand(a.shape[0]) < self.config.action_persistence
            keep &= (state >= 0) & ~torch.as_tensor(np.asarray(episode_start, dtype=bool))
            a = torch.where(keep, state, a)
        return a.numpy(), a.clone()  # the state must not alias the actions handed out

    def _act_continuous(self, obs: Tensor, deterministic: bool) -> np.ndarray:
        """a = tanh(u), u ~ q(u|s) (tanh of the mean when ``deterministic``; uniform over
        the box before ``learning_starts``), or the CEM plan's first action with
        ``planner=cem``, rescaled to the env's bounds: ``[N, A]``."""
        if not deterministic and self.env_steps < self.config.learning_starts:
            a = torch.rand(obs.shape[0], self.num_actions) * 2.0 - 1.0
        elif self.planner is not None:  # CEM over plans in the world model (daif.deep.planner)
            with autocast(self.device, self.amp):
                a = self.planner.act(self.world_model.encode(obs), deterministic)
            if not bool(torch.isfinite(a).all()):
                raise NonFiniteLossError("agent.planner='cem': the planned action", None)
        else:
            with autocast(self.device, self.amp):
                mean, std = self.actor(self.world_model.encode(obs))
            if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all()):
                raise NonFiniteLossError("actor q(a|s)", None)
            a = torch.tanh(mean) if deterministic else maths.squashed_gaussian_sample(mean, std)[0]
        return self._action_center + self._action_scale * a.float().cpu().numpy()

    # ------------------------------------------------------------------ learning
    def check_budget(self, total_steps: int) -> None:
        """Refuse a run too short for a single gradient step (see :meth:`update`).

        Raises:
            ConfigError: naming ``agent.learning_starts`` / ``agent.batch_size``.
        """
        c = self.config
        first = max(c.learning_starts, c.batch_size)
        if first >= total_steps:
            raise ConfigError(
                f"agent.learning_starts={c.learning_starts} and agent.batch_size="
                f"{c.batch_size}: the first gradient step comes after {first} env steps, but "
                f"trainer.total_steps={total_steps}; the agent would never learn"
            )

    def observe(self, transition: Transition) -> None:
        """Store one vectorised step in replay (continuous actions in [−1, 1] units)."""
        if self.continuous:
            scaled = (np.asarray(transition.action) - self._action_center) / self._action_scale
            transition = dataclasses.replace(transition, action=np.clip(scaled, -1.0, 1.0))
        self.replay.add(transition)
        self.env_steps += self.num_envs

    def critic_loss(
        self, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Huber loss of G(s_0, a_0) against the n-step EFE target (:mod:`daif.deep.efe`) of
        a replayed ``[B, L]`` batch: ``(loss, metrics, mean raw ambiguity seen or None)``."""
        c = self.config
        terminated, truncated = batch["terminated"], batch["truncated"]
        last = efe.bootstrap_index(terminated, truncated)
        weights = efe.n_step_weights(terminated, truncated, c.discount)  # [B, L]
        o_last = batch["next_obs"][torch.arange(last.shape[0], device=last.device), last]
        est = self.epistemic.estimate(batch, weights, o_last)
        with torch.no_grad():
            risk = -self.preference(batch["reward"], terminated.float())  # [B, L]
            if self.continuous:
                alpha = self.temperature.log_alpha.exp()
                a_next, log_q_next = maths.squashed_gaussian_sample(*self.actor(est.z_last))
                g_next = self.critic_target(est.z_last, a_next).amax(0)  # pessimistic
                v_last = efe.soft_state_value(g_next, log_q_next, alpha)
            else:
                precision = c.precision_at(self.env_steps)
                v_last = efe.state_value(
                    self.critic(est.z_last), self.critic_target(est.z_last), precision
                )
            target = est.weighted_sum + efe.n_step_efe_target(
                c.risk_weight * risk, v_last, terminated, truncated, c.discount, weights, last
            )
        if self.continuous:
            g_heads = self.critic(est.z_first, batch["action"][:, 0])  # [C, B]
            loss = efe.critic_loss(g_heads, target, c.huber_delta)
            g_taken = g_heads.amax(0)
        else:
            a0 = batch["action"][:, :1].expand(self.critic.num_heads, -1, -1)  # [K, B, 1]
            g_heads = self.critic.heads(est.z_first).gather(2, a0).squeeze(2)  # [K, B]
            loss = efe.critic_loss(g_heads, target, c.huber_delta)
            g_taken = g_heads.mean(0)
        metrics = {
            "losses/critic_td": loss,
            "efe/risk": risk[:, 0].mean(),
            "efe/ambiguity": est.ambiguity.mean(),
            "efe/info_gain": est.info_gain.mean(),
            "efe/G": g_taken.mean(),
        }
        if self.continuous:
            actor_loss, actor_metrics = self.actor_loss(est.z_first.detach())
            loss = loss + actor_loss
            metrics.update(actor_metrics)
        return loss, metrics, est.ambiguity_seen

    def actor_loss(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The actor's free energy E_q[G(s, a) + α ln q(a|s)] at latents ``z[B, Z]``, and
        the temperature's loss; the critic is read with its parameters detached, so this
        loss trains the actor (and α) only."""
        a, log_q = maths.squashed_gaussian_sample(*self.actor(z))
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        g_pi = torch.func.functional_call(self.critic, frozen, (z, a)).amax(0)
        log_alpha = self.temperature.log_alpha
        alpha = log_alpha.exp()
        actor = efe.policy_free_energy(g_pi, log_q, alpha.detach())
        loss = actor + efe.temperature_loss(log_alpha, log_q, self.target_entropy)
        return loss, {
            "losses/actor": actor,
            "policy/entropy": -log_q.mean(),
            "policy/precision": 1.0 / alpha.detach(),
        }

    def _sample(self) -> dict[str, Tensor]:
        """A replayed batch of ``[B, n_step]`` sequences."""
        c = self.config
        return self.replay.sample(c.batch_size, c.n_step, c.terminal_fraction)

    def _loss(
        self, batch: dict[str, Tensor], train_model: bool
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """The step's loss: the critic's (and actor's), plus the world model's free energy
        when ``train_model``; ``(loss, metrics, mean raw ambiguity seen or None)``."""
        if train_model:
            self.epistemic.refresh(self.replay, batch)
        with autocast(self.device, self.amp):
            loss, metrics, ambiguity_seen = self._critic_fn(batch)
            if train_model:
                model_loss, model_metrics = self._model_fn(batch, self.config.free_nats)
                loss = loss + model_loss
                self._last_model_metrics = {k: v.detach() for k, v in model_metrics.items()}
        return loss, metrics, ambiguity_seen

    def _gradient_step(self) -> dict[str, Tensor]:
        c = self.config
        batch = self._sample()
        scale = c.lr_scale_at(self.env_steps)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * scale
        train_model = self.num_updates % c.model_update_every == 0
        loss, metrics, ambiguity_seen = self._loss(batch, train_model)
        for p in self._params:
            p.grad = None  # zero_grad(set_to_none=True) without its overhead
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if train_model or c.critic_trains_encoder:
            clip_grad_norm_([p.grad for p in self._model_params if p.grad is not None], c.grad_clip)
        clip_grad_norm_([p.grad for p in self._critic_params if p.grad is not None], c.grad_clip)
        if self.continuous:
            clip_grad_norm_([p.grad for p in self._actor_params if p.grad is not None], c.grad_clip)
        self.scaler.step(self.optimizer)  # parameters without a gradient are skipped
        self.scaler.update()
        self.num_updates += 1
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, c.target_update_rate)
            if self.eval_average is not None:
                torch._foreach_lerp_(*self._average_pairs, c.eval_average_rate)
        self.epistemic.end_step(ambiguity_seen)
        return {**metrics, **self._last_model_metrics}

    def update(self, global_step: int) -> dict[str, Tensor]:
        """Take ``updates_per_step`` gradient steps (fractions accumulate) once replay
        holds ``learning_starts`` steps and a batch.

        Raises:
            NonFiniteLossError: a loss was NaN/inf (checked every ``nan_check_interval``
                steps with one fused ``isfinite``; names the loss and the step).
        """
        c = self.config
        if self.env_steps < c.learning_starts or len(self.replay) < c.batch_size:
            return {}
        if self.replay.filled < c.n_step:
            return {}
        self._update_credit += c.updates_per_step
        metrics: dict[str, Tensor] = {}
        while self._update_credit >= 1.0:
            self._update_credit -= 1.0
            metrics = self._gradient_step()
            tags = [k for k in LOSS_TAGS if k in metrics]  # no model losses yet after a resume
            losses = torch.stack([metrics[k].detach().float() for k in tags])
            self._all_finite &= torch.isfinite(losses).all()
            if self.num_updates % c.nan_check_interval == 0 and not bool(self._all_finite):
                bad = [
                    (t, v)
                    for t, v in zip(tags, losses.tolist(), strict=True)
                    if not math.isfinite(v)
                ]
                tag, value = bad[0] if bad else (tags[0], None)
                raise NonFiniteLossError(tag, global_step, value)
        return metrics

    # ------------------------------------------------------------------ pictures, checkpoints
    def images(self, n: int = 8) -> dict[str, np.ndarray]:
        """The newest ``n`` observations of env 0 above their reconstructions."""
        obs = self.replay.latest(n)
        if obs.shape[0] == 0:
            return {}
        return {"model/reconstruction": self.world_model.reconstruction_image(obs)}

    def _modules(self) -> dict[str, nn.Module]:
        modules = {
            "world_model": self.world_model,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "preference": self.preference,
        }
        if self.continuous:
            modules.update(actor=self.actor, temperature=self.temperature)
        if self.eval_average is not None:
            modules["eval_average"] = self.eval_average
        return modules

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimiser, scaler, replay, the epistemic source and counters."""
        return {
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "replay": self.replay.state_dict(),
            "epistemic": self.epistemic.state_dict(),
            "env_steps": self.env_steps,
            "num_updates": self.num_updates,
            "update_credit": self._update_credit,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.replay.load_state_dict(state["replay"])
        self.epistemic.load_state_dict(state["epistemic"])
        self.env_steps = int(state["env_steps"])
        self.num_updates = int(state["num_updates"])
        self._update_credit = float(state["update_credit"])
