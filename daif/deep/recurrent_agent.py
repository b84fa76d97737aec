"""The deep active inference agent with a recurrent world model: memory for pixels and for
partially observed tasks.

Acting: the agent carries (h, s, a) of each env through the trainer's per-episode
``state``; at every step it filters the new observation, h_t = f(h_{t−1}, s_{t−1}, a_{t−1})
and s_t ~ q(s_t | h_t, o_t), and picks a ~ softmax(−β·G(h_t, μ_t, ·)) (its mode when
``deterministic``). Rows whose ``episode_start`` is set restart from (0, 0, 0), as the model
does at an episode's first step in training.

Learning, one gradient step on B replayed sequences of T = ``seq_len`` steps:

1. the world model filters each sequence and its free energy is the model's loss
   (:mod:`daif.deep.recurrent_model`);
2. the critic G(h, μ, a), an amortised expected free energy over the model's memory h and
   posterior mean μ, is regressed on n-step targets at every step t ≥ ``burn_in`` whose
   window fits in the sequence (the first steps' memory is still warming up from a zero
   state). The target sums observed risk plus the model's ambiguity and information gain
   at each step (:mod:`daif.deep.efe`, weights as for the feed-forward agent) and
   bootstraps from the target critic at the filtered next state. The critic's features are
   detached unless ``critic_trains_encoder``: then the TD error shapes the filter too.

The critic learns on real replayed outcomes rather than in imagination: on a CPU, the
filtered sequences the model needs anyway give B·(T − burn_in − n + 1) critic samples per
step at no extra recurrent cost (docs/deep_agent.md, "Recurrent world model").
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from daif import maths
from daif.deep import efe
from daif.deep.agent import DeepActiveInferenceAgent, Factory
from daif.deep.epistemic import EpistemicSource
from daif.deep.recurrent_model import Filtered, RecurrentWorldModel, episode_firsts
from daif.utils import NonFiniteLossError, autocast
from daif.validation import ConfigError

RecurrentState = tuple[Tensor, Tensor, Tensor]
"""Per-env memory between steps: ``(h[N, H], s[N, S], a_prev[N, A])``."""


def windows(x: Tensor, n: int, start: int) -> Tensor:
    """The length-``n`` windows of ``x[B, T, ...]`` that begin at steps ``start … T − n``,
    flattened: ``[B·W, n, ...]`` with W = T − n − start + 1 (batch-major)."""
    w = x.unfold(1, n, 1)  # [B, T − n + 1, ..., n]
    w = w.movedim(-1, 2)[:, start:]  # [B, W, n, ...]
    return w.flatten(0, 1)


class RecurrentActiveInferenceAgent(DeepActiveInferenceAgent):
    """:class:`daif.deep.DeepActiveInferenceAgent` with a recurrent (RSSM) world model, for
    discrete actions. The ``transition`` factory builds the recurrent core
    (``transition(latent_dim=S, num_actions=A)``, :class:`daif.nets.rssm.RecurrentStateSpace`);
    ``encoder(obs_shape=, latent_dim=E)`` makes the embedding; the decoder, outcome model and
    critic read the features (h, s) of size H + S. ``agent.seq_len`` and ``agent.burn_in``
    set the replayed sequences.
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, **kwargs: Any
    ) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"env: the recurrent world model supports Discrete actions, got {action_space}"
            )
        super().__init__(observation_space, action_space, **kwargs)
        c = self.config
        if c.epistemic_estimate != "exact":
            raise ConfigError(
                f"agent.epistemic_estimate={c.epistemic_estimate!r}: the recurrent model "
                "evaluates the epistemic terms on the filtered sequence; use 'exact'"
            )
        if c.eval_average_rate != 0:
            raise ConfigError(
                f"agent.eval_average_rate={c.eval_average_rate}: the recurrent agent acts on "
                "its filtered memory, which an average of the weights does not follow; use 0"
            )
        if c.action_persistence != 0:
            raise ConfigError(
                f"agent.action_persistence={c.action_persistence}: the feed-forward agent's "
                "option; the recurrent agent's state holds its memory; use 0"
            )
        if c.model_update_every != 1:
            raise ConfigError(
                f"agent.model_update_every={c.model_update_every}: the recurrent model trains "
                "on every step (its filter runs anyway); use 1"
            )
        if c.burn_in + c.n_step > c.seq_len:
            raise ConfigError(
                f"agent.seq_len={c.seq_len}: must hold agent.burn_in={c.burn_in} warm-up "
                f"steps and one agent.n_step={c.n_step} window"
            )
        if c.seq_len > c.buffer_size // self.num_envs:
            raise ConfigError(
                f"agent.seq_len={c.seq_len}: longer than the buffer holds per env "
                f"(agent.buffer_size={c.buffer_size} / {self.num_envs} envs)"
            )
        self.epistemic = EpistemicSource(
            self.world_model, c.ambiguity_weight, c.info_gain_weight, False
        )
        self._sequence_fn = self.sequence_loss
        if kwargs.get("compile", False):
            self._sequence_fn = torch.compile(self.sequence_loss, dynamic=False)

    def _build_world_model(
        self, nets: dict[str, Factory], observation_space: gym.spaces.Box, acts: dict[str, Any]
    ) -> RecurrentWorldModel:
        rssm = nets["transition"](latent_dim=self.config.latent_dim, **acts)
        obs_shape = tuple(int(d) for d in observation_space.shape)
        f = rssm.feature_dim
        return RecurrentWorldModel(
            nets["encoder"](obs_shape=obs_shape, latent_dim=rssm.embed_dim),
            nets["decoder"](latent_dim=f, obs_shape=obs_shape),
            rssm,
            nets["outcome"](latent_dim=f, **acts),
            observation_space,
            self.num_actions,
            binary_obs=self.config.binary_obs,
        )

    # ------------------------------------------------------------------ acting
    def initial_state(self, num_envs: int) -> RecurrentState:
        """(h, s, a_prev) = 0 for ``num_envs`` fresh episodes."""
        h, s = self.world_model.rssm.initial(num_envs, self.device)
        return h, s, torch.zeros(num_envs, self.num_actions, device=self.device)

    @torch.no_grad()
    def filter_obs(
        self, obs: Tensor, state: RecurrentState, episode_start: np.ndarray
    ) -> tuple[Tensor, RecurrentState]:
        """One filter step on a batch of envs: ``obs[N, ...]`` → (the critic's features
        (h, μ) ``[N, H + S]`` with μ the posterior mean, the state with the new h and sample
        s, the previous action still in place)."""
        h, s, a_prev = state
        first = torch.as_tensor(np.asarray(episode_start, dtype=bool), device=self.device)
        model = self.world_model
        h, s, mean, _ = model.filter_step(h, s, a_prev, first, model.embed(obs))
        return model.features(h, mean), (h, s, a_prev)

    @torch.no_grad()
    def expected_free_energy(self, obs: Tensor, state: RecurrentState | None = None) -> Tensor:
        """G(h, μ, ·) of every action after filtering ``obs[N, ...]`` from ``state`` (fresh
        episodes when None): ``[N, A]``."""
        n = obs.shape[0]
        state = self.initial_state(n) if state is None else state
        feat, _ = self.filter_obs(obs, state, np.zeros(n, dtype=bool))
        return self.critic(feat)

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        state: RecurrentState | None,
        episode_start: np.ndarray,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, RecurrentState]:
        """Filter ``obs`` into the memory, then a ~ softmax(−β·G(h, s, ·)) (its mode when
        ``deterministic``; uniform before ``learning_starts``, while the memory still runs)."""
        obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
        n = obs_t.shape[0]
        if state is None:
            state = self.initial_state(n)
        with autocast(self.device, self.amp):
            feat, (h, s, _) = self.filter_obs(obs_t, state, episode_start)
            if not deterministic and self.env_steps < self.config.learning_starts:
                action = torch.randint(0, self.num_actions, (n,), device=self.device)
            else:
                g = self.critic(feat).float()
                if not bool(torch.isfinite(g).all()):
                    raise NonFiniteLossError("action probabilities softmax(-β·G)", None)
                if deterministic:
                    action = g.argmin(-1)
                else:
                    q = maths.softmax(-g, self.config.precision_at(self.env_steps))
                    action = torch.multinomial(q, 1).squeeze(-1)
        a_feat = self.world_model.action_features(action)
        return action.cpu().numpy(), (h.float(), s.float(), a_feat)

    # ------------------------------------------------------------------ learning
    def check_budget(self, total_steps: int) -> None:
        """Refuse a run too short for a gradient step on full sequences."""
        super().check_budget(total_steps)
        first = self.config.seq_len * self.num_envs
        if first >= total_steps:
            raise ConfigError(
                f"agent.seq_len={self.config.seq_len}: a sequence needs {first} env steps "
                f"with trainer.num_envs={self.num_envs}, but trainer.total_steps={total_steps}"
            )

    def update(self, global_step: int) -> dict[str, Tensor]:
        """As :meth:`DeepActiveInferenceAgent.update`, once replay holds a whole sequence."""
        if self.replay.filled < self.config.seq_len:
            return {}
        return super().update(global_step)

    def _sample(self) -> dict[str, Tensor]:
        """B replayed sequences of ``seq_len`` steps (``terminal_fraction`` of them around
        a stored termination)."""
        c = self.config
        return self.replay.sample(c.batch_size, c.seq_len, c.terminal_fraction)

    def _loss(
        self, batch: dict[str, Tensor], train_model: bool
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        with autocast(self.device, self.amp):
            return self._sequence_fn(batch)

    def sequence_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The world model's free energy plus the critic's loss on ``[B, T]`` sequences:
        ``(loss, metrics, mean raw ambiguity seen)``."""
        model_loss, metrics, post = self.world_model.free_energy(batch, self.config.free_nats)
        critic_loss, critic_metrics, ambiguity_seen = self.critic_loss_on(batch, post)
        return model_loss + critic_loss, {**metrics, **critic_metrics}, ambiguity_seen

    def critic_loss_on(
        self, batch: dict[str, Tensor], post: Filtered
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """Huber loss of G(h_t, μ_t, a_t) against the n-step EFE target at every start
        t ∈ [burn_in, T − n] of the filtered sequences ``post``."""
        c = self.config
        model, n = self.world_model, c.n_step
        b, length = batch["reward"].shape
        h, mu = post.h, post.mean
        if not c.critic_trains_encoder:
            h, mu = h.detach(), mu.detach()
        with torch.no_grad():
            # the step from each (h_t, s_t, a_t): h'_t is h_{t+1} inside an episode, and the
            # true successor memory where the episode ended (its next_obs is the final one)
            a_feat = model.action_features(batch["action"]).flatten(0, 1)
            s = post.s.detach().flatten(0, 1)
            h_next = model.rssm.step(h.flatten(0, 1).detach(), s, a_feat)
            ambiguity, info_gain = model.epistemic_terms(h_next)
            m, _ = model.rssm.posterior(h_next, self._next_embeddings(batch, post).flatten(0, 1))
            feat_next = model.features(h_next, m)
            e = self.epistemic.epistemic_value(ambiguity, info_gain).view(b, length)
            risk = -self.preference(batch["reward"], batch["terminated"].float())  # [B, T]
            term = windows(batch["terminated"], n, c.burn_in)  # [B·W, n]
            trunc = windows(batch["truncated"], n, c.burn_in)
            last = efe.bootstrap_index(term, trunc)
            weights = efe.n_step_weights(term, trunc, c.discount)
            feat_last = windows(feat_next.view(b, length, -1), n, c.burn_in)
            feat_last = feat_last[torch.arange(last.shape[0], device=last.device), last]
            v_last = efe.state_value(
                self.critic(feat_last),
                self.critic_target(feat_last),
                c.precision_at(self.env_steps),
            )
            target = (weights * windows(e, n, c.burn_in)).sum(1) + efe.n_step_efe_target(
                c.risk_weight * windows(risk, n, c.burn_in),
                v_last,
                term,
                trunc,
                c.discount,
                weights,
                last,
            )
        starts = slice(c.burn_in, length - n + 1)
        feat = model.features(h[:, starts], mu[:, starts]).flatten(0, 1)  # [B·W, H + S]
        a0 = batch["action"][:, starts].reshape(1, -1, 1).expand(self.critic.num_heads, -1, -1)
        g_heads = self.critic.heads(feat).gather(2, a0).squeeze(2)  # [K, B·W]
        loss = efe.critic_loss(g_heads, target, c.huber_delta)
        g_taken = g_heads.mean(0)
        ambiguity = ambiguity.view(b, length)
        return (
            loss,
            {
                "losses/critic_td": loss,
                "efe/risk": risk[:, starts].mean(),
                "efe/ambiguity": (ambiguity - self.epistemic.baseline)[:, starts].mean(),
                "efe/info_gain": info_gain.view(b, length)[:, starts].mean(),
                "efe/G": g_taken.mean(),
            },
            ambiguity.mean(),
        )

    def _next_embeddings(self, batch: dict[str, Tensor], post: Filtered) -> Tensor:
        """e(o'_t) for every step of ``[B, T]`` sequences: ``[B, T, E]``.

        Inside an episode o'_t is o_{t+1}, whose embedding the filter already made
        (``post.embed``); the encoder runs again only on the final observations of ended
        episodes and on each sequence's last step, which for pixels saves most of a second
        pass of the convolutions."""
        done = batch["terminated"] | batch["truncated"]
        fresh = done.clone()
        fresh[:, -1] = True
        embed = post.embed.detach()
        out = torch.cat([embed[:, 1:], embed[:, -1:]], 1)
        out[fresh] = self.world_model.embed(batch["next_obs"][fresh]).to(out.dtype)
        return out

    # ------------------------------------------------------------------ pictures
    def images(self, n: int = 16) -> dict[str, np.ndarray]:
        """Env 0's newest ``n`` steps: truth, reconstruction and the model's open-loop
        prediction from the first half (``model/open_loop``)."""
        if self.replay.filled < 4:
            return {}
        data = {k: self.replay.latest(n, k) for k in ("obs", "action", "terminated", "truncated")}
        first = episode_firsts(data["terminated"][None], data["truncated"][None])[0]
        context = max(1, data["obs"].shape[0] // 2)
        image = self.world_model.prediction_image(data["obs"], data["action"], first, context)
        return {"model/open_loop": image}
