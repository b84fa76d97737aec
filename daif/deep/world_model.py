"""The deep agent's generative model and the free energy it is trained by.

All Gaussians are diagonal; s ∈ R^Z is the latent state, a a discrete action:

* recognition  q(s|o)        — encoder
* likelihood   p(o|s)        — decoder, with a learned std (its entropy is the ambiguity);
                               Bernoulli on entries that are 0/1 flags
* transitions  p_k(s'|s, a)  — an ensemble of K Gaussian heads (their disagreement is the
                               information gain about the model's parameters)
* outcomes     p(r, d|s, a)  — reward and termination

Learning minimises the variational free energy of a replayed transition (o, a, r, d, o'):

    F = −ln p(o|s) − ln p(o'|s') + max(KL[q(s'|o') ‖ p(s'|s, a)], free nats)
        − Σ_k ln p_k(s'|s, a) − ln p(r, d|s, a),       s ~ q(s|o), s' ~ q(s'|o').

The KL pulls the posterior towards the (fixed) prediction while the ensemble fits the
posterior by its own likelihood, a KL-balancing split that keeps either from chasing the
other into collapse. Networks are plain modules given by the agent's config.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daif import maths
from daif.images import heatmap, tile_grey
from daif.validation import ConfigError

MODEL_LOSS_TAGS: tuple[str, ...] = (
    "losses/reconstruction",
    "free_energy/kl",
    "losses/transition_nll",
    "losses/outcome_nll",
)


def observation_scaling(space: gym.spaces.Box) -> tuple[Tensor, Tensor]:
    """Centre and half-width per observation entry (0 and 1 where a bound is infinite;
    0 and 255 for uint8 pixels).

    Classic-control observations have wildly different units (MountainCar's velocity spans
    ±0.07); mapping finite boxes to [−1, 1] lets one network config fit all.
    """
    if space.dtype == np.uint8:
        return torch.zeros(()), torch.full((), 255.0)
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    finite = torch.isfinite(low) & torch.isfinite(high) & (high > low)
    center = torch.where(finite, (high + low) / 2, torch.zeros_like(low))
    scale = torch.where(finite, (high - low) / 2, torch.ones_like(low))
    return center, scale


class ObservationScaling(nn.Module):
    """What both world models do with raw observations: ``pixels`` (uint8 frames), the
    per-entry centre and half-width of :func:`observation_scaling` as buffers,
    :meth:`preprocess`, and the likelihood p(o|s) that the decoder's outputs parameterise.

    The likelihood is a diagonal Gaussian, except on the entries listed in ``binary_obs``:
    0/1 flags (LunarLander's leg contacts) get a Bernoulli whose logit is the decoder's
    mean. A Gaussian on a flickering flag pays for its jumps with a std that swings from
    its floor to its ceiling, so its entropy (the ambiguity) spans several nats; a
    Bernoulli's lies in [0, ln 2].
    """

    def __init__(self, observation_space: gym.spaces.Box, binary_obs: Sequence[int] = ()) -> None:
        super().__init__()
        self.pixels = observation_space.dtype == np.uint8
        center, scale = observation_scaling(observation_space)
        self.register_buffer("obs_center", center, persistent=False)
        self.register_buffer("obs_scale", scale, persistent=False)
        self.binary_obs = tuple(sorted({int(i) for i in binary_obs}))
        if self.binary_obs:
            flags, rest = _flag_entries(observation_space, [int(i) for i in binary_obs])
            self.register_buffer("flag_index", flags, persistent=False)
            self.register_buffer("gauss_index", rest, persistent=False)

    def preprocess(self, obs: Tensor) -> Tensor:
        """Raw observations ``[..., *obs_shape]`` → network inputs (float32, scaled)."""
        return (obs.float() - self.obs_center) / self.obs_scale

    def observation_log_prob(self, target: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """ln p(o|s) of decoder targets ``target[B, D]`` under the decoder's ``mean[B, D]``
        and ``std[B, D]`` (flattened); a flag's target is ±1 (set where > 0). → ``[B]``."""
        if not self.binary_obs:
            return maths.gaussian_log_prob(target, mean, std)
        g, f = self.gauss_index, self.flag_index
        gauss = maths.gaussian_log_prob(target[:, g], mean[:, g], std[:, g])
        return gauss + maths.bernoulli_log_prob((target[:, f] > 0).float(), mean[:, f])

    def observation_entropy(self, mean: Tensor, std: Tensor) -> Tensor:
        """H[p(o|s)] in nats from the decoder's ``mean[B, D]`` and ``std[B, D]`` → ``[B]``."""
        if not self.binary_obs:
            return maths.gaussian_entropy(std)
        g, f = self.gauss_index, self.flag_index
        return maths.gaussian_entropy(std[:, g]) + maths.bernoulli_entropy(mean[:, f])

    def observation_mean(self, mean: Tensor) -> Tensor:
        """E[p(o|s)] in target units from the decoder's ``mean[B, D]`` (a flag's logit l
        becomes 2σ(l) − 1 ∈ [−1, 1]), for pictures. → ``[B, D]``."""
        if not self.binary_obs:
            return mean
        f = self.flag_index
        return mean.index_copy(1, f, torch.tanh(mean[:, f] / 2))  # 2σ(l) − 1 = tanh(l/2)


def _flag_entries(space: gym.spaces.Box, listed: list[int]) -> tuple[Tensor, Tensor]:
    """Index tensors of the flag entries (sorted) and of the others; refuses flags that the
    space cannot hold (pixels, matrices, an index out of range, bounds other than [0, 1])."""
    flags = sorted(set(listed))
    if space.dtype == np.uint8 or len(space.shape) != 1:
        raise ConfigError(
            f"agent.binary_obs={listed}: flags are entries of a vector observation, and this "
            f"env observes {space.shape} {space.dtype}"
        )
    d = int(space.shape[0])
    for i in flags:
        if not 0 <= i < d:
            raise ConfigError(
                f"agent.binary_obs={listed}: entry {i} is out of range; the observation has {d}"
            )
        low, high = float(space.low[i]), float(space.high[i])
        if (low, high) != (0.0, 1.0):
            raise ConfigError(
                f"agent.binary_obs={listed}: entry {i} is bounded [{low:g}, {high:g}]; a flag's "
                "bounds are [0, 1]"
            )
    rest = [i for i in range(d) if i not in flags]
    return torch.tensor(flags, dtype=torch.long), torch.tensor(rest, dtype=torch.long)


class WorldModel(ObservationScaling):
    """Encoder, decoder, transition ensemble and outcome model, with the observation scaling.

    Args:
        encoder: q(s|o), ``obs[B, ...] → (mean[B, Z], std[B, Z])``.
        decoder: p(o|s), ``z[B, Z] → (mean[B, ...], std[B, ...])`` in scaled units.
        transition: p_k(s'|s, a), ``(z[B, Z], a[B]) → (mean[K, B, Z], std[K, B, Z])``.
        outcome: p(r, d|s, a), ``(z, a) → (symlog reward mean[B], termination logit[B])``.
        observation_space: the env's Box (uint8 observations are pixels).
        binary_obs: entries that are 0/1 flags (Bernoulli likelihood, :class:`ObservationScaling`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        transition: nn.Module,
        outcome: nn.Module,
        observation_space: gym.spaces.Box,
        binary_obs: Sequence[int] = (),
    ) -> None:
        super().__init__(observation_space, binary_obs)
        self.encoder, self.decoder = encoder, decoder
        self.transition, self.outcome = transition, outcome

    @property
    def feature_dim(self) -> int:
        """Z, the size of the latent the critic reads."""
        return int(self.encoder.latent_dim)

    def encode(self, obs: Tensor) -> Tensor:
        """The posterior mean ŝ of raw observations: ``[B, *obs_shape] → [B, Z]``."""
        return self.encoder(self.preprocess(obs))[0]

    def epistemic_terms(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Ambiguity and information gain of taking ``action[B]`` in ``z[B, Z]``.

        ambiguity = H[p(o|ŝ')] at the ensemble's mean prediction ŝ' (nats);
        info_gain = I(s'; k), the ensemble's disagreement about s'
        (:func:`daif.maths.gaussian_mixture_info_gain`). Returns ``([B], [B])``.
        """
        means, stds = self.transition(z, action)  # [K, B, Z]
        info_gain = maths.gaussian_mixture_info_gain(means, stds)
        obs_mean, obs_std = self.decoder(means.mean(0))
        return self.observation_entropy(obs_mean.flatten(1), obs_std.flatten(1)), info_gain

    def free_energy(self, batch: dict[str, Tensor], free_nats: float) -> tuple[Tensor, dict]:
        """F of the first transition of each ``[B, L]`` replayed sequence (module docstring).

        Returns the loss (0-d) and its terms as 0-d tensors keyed by TensorBoard tag.
        """
        b = batch["action"].shape[0]
        action = batch["action"][:, 0]
        o_pair = self.preprocess(torch.cat([batch["obs"][:, 0], batch["next_obs"][:, 0]]))
        mean, std = self.encoder(o_pair)  # [2B, Z]: q(s|o) and q(s'|o')
        z_sample = mean + std * torch.randn_like(std)
        rec_mean, rec_std = self.decoder(z_sample)
        reconstruction = -self.observation_log_prob(
            o_pair.flatten(1), rec_mean.flatten(1), rec_std.flatten(1)
        ).mean()
        z0, z1 = z_sample[:b], z_sample[b:]
        p_mean, p_std = self.transition(z0, action)  # [K, B, Z]
        kl = maths.gaussian_kl(mean[b:], std[b:], p_mean.detach(), p_std.detach()).mean(0)
        complexity = maths.free_bits(kl, free_nats).mean()
        transition_nll = -maths.gaussian_log_prob(z1.detach(), p_mean, p_std).mean()
        r_hat, term_logit = self.outcome(z0, action)
        outcome_nll = 0.5 * (r_hat - maths.symlog(batch["reward"][:, 0])).pow(2).mean()
        outcome_nll = outcome_nll + F.binary_cross_entropy_with_logits(
            term_logit, batch["terminated"][:, 0].float()
        )
        total = reconstruction + complexity + transition_nll + outcome_nll
        return total, {
            "losses/reconstruction": reconstruction,
            "free_energy/kl": kl.mean(),
            "losses/transition_nll": transition_nll,
            "losses/outcome_nll": outcome_nll,
            "free_energy/total": reconstruction + kl.mean(),
        }

    @torch.no_grad()
    def reconstruction_image(self, obs: Tensor) -> np.ndarray:
        """Raw observations ``obs[n, ...]`` above their reconstructions E[p(o|ŝ)]:
        a ``[3, H, W]`` uint8 picture (pixels: the newest frame of each stack, grey;
        vectors: a heatmap of the scaled entries, one row per step)."""
        x = self.preprocess(obs)
        recon, _ = self.decoder(self.encoder(x)[0])
        if self.pixels:
            return tile_grey([x[:, -1].cpu().numpy(), recon[:, -1].float().cpu().numpy()])
        rows = torch.cat([x.flatten(1), self.observation_mean(recon.flatten(1).float())], 0)
        return heatmap(((rows.clamp(-1, 1) + 1) / 2).cpu().numpy(), cell=8, vmax=1.0)
