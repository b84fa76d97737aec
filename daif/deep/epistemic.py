"""The epistemic part of the critic's target: where ambiguity and information gain come from.

The n-step target (:mod:`daif.deep.efe`) needs, at every step k of a replayed sequence,

    e_k = w_a·(ambiguity_k − ā) − w_i·info_gain_k,

the world model's ambiguity and information gain at (s_k, a_k). ā is a running mean of
the ambiguity: in an episodic task a constant per-step ambiguity would otherwise reward or
punish survival itself. Evaluating the model at every step is most of an update's
arithmetic, so there are two sources, one class each, each owning its state:

* :class:`ExactEpistemic` evaluates the model now, at every step of every sequence;
* :class:`CachedEpistemic` reads values from replay annotations, which it writes whenever
  the world model trains on a transition (and for every new one): a critic-only step then
  runs no ensemble or decoder, at the price of values that lag the model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from daif import maths
from daif.deep.world_model import WorldModel
from daif.replay import ReplayBuffer

_REFRESH_CHUNK = 8192  # transitions per no-grad pass of a refresh: bounded memory on a resume
BASELINE_RATE = 0.01  # ā ← ā + rate·(mean ambiguity − ā)
ANNOTATIONS: tuple[str, ...] = ("ambiguity", "info_gain")  # replay columns of the cache


class EpistemicEstimate(NamedTuple):
    """What a source gives the critic loss for a batch of B sequences."""

    z_first: Tensor
    """``[B, Z]`` latent of s_0 (with gradient when the critic trains the encoder)."""
    z_last: Tensor
    """``[B, Z]`` latent of s'_m, the bootstrap state (no gradient)."""
    weighted_sum: Tensor
    """``[B]`` Σ_k w_k e_k over the steps the target sums."""
    ambiguity: Tensor
    """``[B]`` ambiguity − ā at the first step (for logging)."""
    info_gain: Tensor
    """``[B]`` information gain at the first step (for logging)."""
    ambiguity_seen: Tensor | None
    """0-d mean raw ambiguity this estimate evaluated (for ā), or None."""


class EpistemicSource:
    """Base: the weights, the ambiguity baseline ā and the latents of a batch."""

    def __init__(
        self,
        model: WorldModel,
        ambiguity_weight: float,
        info_gain_weight: float,
        critic_trains_encoder: bool,
    ) -> None:
        self.model = model
        self.ambiguity_weight, self.info_gain_weight = ambiguity_weight, info_gain_weight
        self.critic_trains_encoder = critic_trains_encoder
        device = model.obs_scale.device
        self.baseline = torch.zeros((), device=device)  # ā
        self.baseline_ready = False

    def epistemic_value(self, ambiguity: Tensor, info_gain: Tensor) -> Tensor:
        """e = w_a·(ambiguity − ā) − w_i·info_gain (any shape; raw ambiguity in nats)."""
        return maths.expected_free_energy(
            0.0,
            ambiguity - self.baseline,
            info_gain,
            ambiguity_weight=self.ambiguity_weight,
            info_gain_weight=self.info_gain_weight,
        )

    def estimate(
        self, batch: dict[str, Tensor], weights: Tensor, o_last: Tensor
    ) -> EpistemicEstimate:
        """The epistemic inputs of the target for ``batch`` (``weights[B, L]`` = w_k,
        ``o_last[B, ...]`` the raw bootstrap observations)."""
        raise NotImplementedError

    def refresh(self, replay: ReplayBuffer, batch: dict[str, Tensor]) -> None:
        """Called before a gradient step that trains the world model on ``batch``."""

    def end_step(self, ambiguity_seen: Tensor | None) -> None:
        """After a gradient step: move ā towards the mean ambiguity that step saw."""
        if ambiguity_seen is None:
            return
        raw = ambiguity_seen.detach().float()
        if self.baseline_ready:
            self.baseline.lerp_(raw, BASELINE_RATE)
        else:
            self.baseline.copy_(raw)
            self.baseline_ready = True

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.clone(), "baseline_ready": self.baseline_ready}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline.copy_(state["baseline"])
        self.baseline_ready = bool(state["baseline_ready"])


class ExactEpistemic(EpistemicSource):
    """e_k evaluated by the world model now, at every step of every sequence."""

    def estimate(
        self, batch: dict[str, Tensor], weights: Tensor, o_last: Tensor
    ) -> EpistemicEstimate:
        b, length = batch["action"].shape
        model = self.model
        if self.critic_trains_encoder:
            z_first = model.encode(batch["obs"][:, 0])
        with torch.no_grad():
            # one encoder pass for all B·L + B states (on small batches a call's fixed
            # cost outweighs its arithmetic)
            z_all = model.encode(torch.cat([batch["obs"].flatten(0, 1), o_last]))
            z_steps, z_last = z_all[: b * length], z_all[b * length :]
            ambiguity, info_gain = model.epistemic_terms(z_steps, batch["action"].flatten(0, 1))
            ambiguity, info_gain = ambiguity.view(b, length), info_gain.view(b, length)
            weighted_sum = (weights * self.epistemic_value(ambiguity, info_gain)).sum(1)
            if not self.critic_trains_encoder:
                z_first = z_steps.view(b, length, -1)[:, 0]
        return EpistemicEstimate(
            z_first,
            z_last,
            weighted_sum,
            ambiguity[:, 0] - self.baseline,
            info_gain[:, 0],
            ambiguity[:, 0].mean(),
        )


class CachedEpistemic(EpistemicSource):
    """e_k from replay annotations that the world model wrote when it last saw (s_k, a_k)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refreshed_upto = 0  # replay.written when the cache last took new transitions
        self._seen: Tensor | None = None

    def refresh(self, replay: ReplayBuffer, batch: dict[str, Tensor]) -> None:
        """Evaluate the model on the batch's first steps and on every transition stored
        since the last refresh; write the values into replay and back into ``batch``."""
        new = replay.newest_slots(replay.written - self.refreshed_upto)
        self.refreshed_upto = replay.written
        n = replay.num_envs
        envs = torch.arange(n, device=new.device)
        slot = torch.cat([batch["slot"][:, 0], new.repeat_interleave(n)])
        env = torch.cat([batch["env"][:, 0], envs.repeat(new.shape[0])])
        obs, action = replay.data["obs"][slot, env], replay.data["action"][slot, env]
        ambiguity = torch.empty(slot.shape[0], device=obs.device)
        info_gain = torch.empty_like(ambiguity)
        with torch.no_grad():
            for i in range(0, slot.shape[0], _REFRESH_CHUNK):
                part = slice(i, i + _REFRESH_CHUNK)
                z = self.model.encode(obs[part])
                ambiguity[part], info_gain[part] = self.model.epistemic_terms(z, action[part])
        replay.write("ambiguity", slot, env, ambiguity)
        replay.write("info_gain", slot, env, info_gain)
        for name in ANNOTATIONS:
            batch[name] = replay.data[name][batch["slot"], batch["env"]]
        self._seen = ambiguity.mean()

    def estimate(
        self, batch: dict[str, Tensor], weights: Tensor, o_last: Tensor
    ) -> EpistemicEstimate:
        b = o_last.shape[0]
        with torch.set_grad_enabled(self.critic_trains_encoder):
            z = self.model.encode(torch.cat([batch["obs"][:, 0], o_last]))
        with torch.no_grad():
            ambiguity, info_gain = batch["ambiguity"], batch["info_gain"]  # [B, L]
            weighted_sum = (weights * self.epistemic_value(ambiguity, info_gain)).sum(1)
        return EpistemicEstimate(
            z[:b],
            z[b:].detach(),
            weighted_sum,
            ambiguity[:, 0] - self.baseline,
            info_gain[:, 0],
            None,
        )

    def end_step(self, ambiguity_seen: Tensor | None) -> None:
        super().end_step(self._seen)  # the refresh's view of the model, not the stale cache
        self._seen = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "refreshed_upto": self.refreshed_upto}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.refreshed_upto = int(state["refreshed_upto"])


EPISTEMIC_SOURCES: dict[str, type[EpistemicSource]] = {
    "exact": ExactEpistemic,
    "cached": CachedEpistemic,
}
