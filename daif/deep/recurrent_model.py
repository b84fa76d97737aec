"""The recurrent world model: a generative model over observation sequences, with memory.

With h_t the GRU memory and s_t the stochastic state (:mod:`daif.nets.rssm`), the model of
an episode is

    h_t = f(h_{t−1}, s_{t−1}, a_{t−1}),  s_t ~ p_k(s_t | h_t),  o_t ~ p(o_t | h_t, s_t),
    (r_t, d_t) ~ p(r, d | h_t, s_t, a_t),

and it is inverted by filtering: q(s_t | h_t, o_t) at every step, (h, s, a) reset to zero
at the first step of an episode. Learning minimises the variational free energy of a
replayed sequence of T steps, each term averaged over the B·T steps:

    F = −ln p(õ_t | h_t, s_t) − ln p(r_t, d_t | h_t, s_t, a_t)
        + β_dyn·max(KL[sg q ‖ p_k], free nats) + β_rep·max(KL[q ‖ sg p_k], free nats),

with õ = symlog(o) for vector observations (pixels are already in [0, 1]), sg the stop
gradient, the KLs averaged over the K prior heads, and KL balancing (β_dyn > β_rep): the
prior moves towards the posterior faster than the posterior gives up information for the
prior, which keeps either from collapsing onto the other. The scales are
:data:`KL_DYNAMICS_SCALE` and :data:`KL_REPRESENTATION_SCALE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daif import maths
from daif.deep.world_model import ObservationScaling
from daif.images import heatmap, tile_grey
from daif.nets.mlp import action_features
from daif.nets.rssm import RecurrentStateSpace

KL_DYNAMICS_SCALE = 0.5  # β_dyn: trains the prior heads towards the posterior
KL_REPRESENTATION_SCALE = 0.1  # β_rep: pulls the posterior towards the prior
RECURRENT_LOSS_TAGS: tuple[str, ...] = (
    "losses/reconstruction",
    "free_energy/kl",
    "losses/outcome_nll",
)


class Filtered(NamedTuple):
    """The filter's output for B sequences of T steps."""

    h: Tensor
    """``[B, T, H]`` memory h_t."""
    s: Tensor
    """``[B, T, S]`` posterior samples s_t."""
    mean: Tensor
    """``[B, T, S]`` posterior means."""
    std: Tensor
    """``[B, T, S]`` posterior standard deviations."""
    embed: Tensor
    """``[B, T, E]`` the observation embeddings e_t that the filter read."""


def episode_firsts(terminated: Tensor, truncated: Tensor) -> Tensor:
    """first_t: True where step t starts an episode inside a replayed sequence, and at
    t = 0 (a sequence drawn from mid-episode starts from a zero state, as an episode
    does). ``[B, T]`` bool → ``[B, T]`` bool."""
    done = terminated | truncated
    return torch.cat([torch.ones_like(done[:, :1]), done[:, :-1]], 1)


class RecurrentWorldModel(ObservationScaling):
    """Encoder, RSSM core, decoder and outcome model, with the observation scaling.

    Args:
        encoder: ``obs[B, ...] → (mean[B, E], std)``; the mean is the embedding e_t.
        decoder: p(o|h, s), ``feature[B, H+S] → (mean[B, ...], std[B, ...])``.
        rssm: the recurrent core (:class:`daif.nets.rssm.RecurrentStateSpace`).
        outcome: p(r, d | h, s, a), ``(feature, a) → (symlog reward[B], termination logit[B])``.
        observation_space: the env's Box (uint8 observations are pixels).
        num_actions, continuous: how actions become features (one-hot when discrete).
        binary_obs: entries that are 0/1 flags (Bernoulli likelihood, :class:`ObservationScaling`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        rssm: RecurrentStateSpace,
        outcome: nn.Module,
        observation_space: gym.spaces.Box,
        num_actions: int,
        continuous: bool = False,
        binary_obs: Sequence[int] = (),
    ) -> None:
        super().__init__(observation_space, binary_obs)
        self.encoder, self.decoder, self.rssm, self.outcome = encoder, decoder, rssm, outcome
        self.num_actions, self.continuous = num_actions, continuous

    @property
    def feature_dim(self) -> int:
        """H + S."""
        return self.rssm.feature_dim

    # ------------------------------------------------------------------ pieces
    def target(self, x: Tensor) -> Tensor:
        """The decoder's target õ of preprocessed observations: symlog for vectors (an
        unbounded velocity cannot dominate the likelihood) except on flags, unchanged for
        pixels."""
        if self.pixels:
            return x
        target = maths.symlog(x)
        if self.binary_obs:  # a flag's target stays ±1
            f, last = self.flag_index, x.dim() - 1
            target = target.index_copy(last, f, x.index_select(last, f))
        return target

    def embed(self, obs: Tensor) -> Tensor:
        """e = embed(o): ``[B, *obs_shape] → [B, E]``."""
        return self.encoder(self.preprocess(obs))[0]

    def action_features(self, action: Tensor) -> Tensor:
        """``[...]`` indices → one-hot ``[..., A]`` float; continuous ``[..., A]`` as is."""
        return action_features(action, self.num_actions, self.continuous, torch.float32)

    def filter_step(
        self, h: Tensor, s: Tensor, a_prev: Tensor, first: Tensor, embed: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of the filter: reset where ``first``, h_t = f(h, s, a_prev), then
        s_t ~ q(s_t | h_t, e_t) (reparameterised).

        Args:
            h, s, a_prev: ``[B, H], [B, S], [B, A]`` the previous step's state and action.
            first: ``[B]`` bool, the step starts an episode.
            embed: ``[B, E]`` e_t.
        Returns:
            ``(h_t, s_t, mean, std)``, ``[B, H], [B, S], [B, S], [B, S]``.
        """
        keep = (~first).unsqueeze(-1).to(h.dtype)
        h = self.rssm.step(h * keep, s * keep, a_prev * keep)
        mean, std = self.rssm.posterior(h, embed)
        return h, mean + std * torch.randn_like(std), mean, std

    def filter(self, embed: Tensor, action: Tensor, first: Tensor) -> Filtered:
        """Filter B sequences: ``embed[B, T, E]``, ``action[B, T]`` (or ``[B, T, A]``) the
        action taken at each step, ``first[B, T]`` → :class:`Filtered`."""
        b, length = first.shape
        a_feat = self.action_features(action)
        a_prev = torch.cat([torch.zeros_like(a_feat[:, :1]), a_feat[:, :-1]], 1)
        h, s = self.rssm.initial(b, embed.device)
        hs, ss, means, stds = [], [], [], []
        for t in range(length):
            h, s, mean, std = self.filter_step(h, s, a_prev[:, t], first[:, t], embed[:, t])
            hs.append(h)
            ss.append(s)
            means.append(mean)
            stds.append(std)
        return Filtered(*(torch.stack(xs, 1) for xs in (hs, ss, means, stds)), embed)

    def features(self, h: Tensor, s: Tensor) -> Tensor:
        """(h, s) → ``[..., H + S]``, what the decoder, outcome model and critic read."""
        return torch.cat([h, s], -1)

    def epistemic_terms(self, h_next: Tensor) -> tuple[Tensor, Tensor]:
        """Ambiguity and information gain of the step that led to memory ``h_next[B, H]``.

        info_gain = I(s'; k), the prior heads' disagreement about s' given h'
        (:func:`daif.maths.gaussian_mixture_info_gain`); ambiguity = H[p(o'|h', ŝ')] at the
        heads' mean prediction ŝ' (nats). Returns ``([B], [B])``.
        """
        means, stds = self.rssm.prior(h_next)
        info_gain = maths.gaussian_mixture_info_gain(means, stds)
        obs_mean, obs_std = self.decoder(self.features(h_next, means.mean(0)))
        return self.observation_entropy(obs_mean.flatten(1), obs_std.flatten(1)), info_gain

    # ------------------------------------------------------------------ learning
    def free_energy(
        self, batch: dict[str, Tensor], free_nats: float
    ) -> tuple[Tensor, dict[str, Tensor], Filtered]:
        """F of B replayed sequences of T steps (module docstring).

        Returns the loss (0-d), its terms keyed by TensorBoard tag, and the filtered states
        (with gradient) for the critic to read.
        """
        obs = batch["obs"]
        b, length = obs.shape[:2]
        x = self.preprocess(obs.flatten(0, 1))  # [B·T, ...]
        embed = self.encoder(x)[0].view(b, length, -1)
        first = episode_firsts(batch["terminated"], batch["truncated"])
        post = self.filter(embed, batch["action"], first)
        h, s = post.h.flatten(0, 1), post.s.flatten(0, 1)
        feat = self.features(h, s)
        rec_mean, rec_std = self.decoder(feat)
        reconstruction = -self.observation_log_prob(
            self.target(x).flatten(1), rec_mean.flatten(1), rec_std.flatten(1)
        ).mean()
        p_mean, p_std = self.rssm.prior(h)  # [K, B·T, S]
        q_mean, q_std = post.mean.flatten(0, 1), post.std.flatten(0, 1)
        kl_dyn = maths.gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std).mean(0)
        kl_rep = maths.gaussian_kl(q_mean, q_std, p_mean.detach(), p_std.detach()).mean(0)
        complexity = (
            KL_DYNAMICS_SCALE * maths.free_bits(kl_dyn, free_nats).mean()
            + KL_REPRESENTATION_SCALE * maths.free_bits(kl_rep, free_nats).mean()
        )
        action = batch["action"].flatten(0, 1)
        r_hat, term_logit = self.outcome(feat, action)
        outcome_nll = 0.5 * (r_hat - maths.symlog(batch["reward"].flatten())).pow(2).mean()
        outcome_nll = outcome_nll + F.binary_cross_entropy_with_logits(
            term_logit, batch["terminated"].flatten().float()
        )
        kl = kl_rep.mean()
        return (
            reconstruction + complexity + outcome_nll,
            {
                "losses/reconstruction": reconstruction,
                "free_energy/kl": kl,
                "losses/outcome_nll": outcome_nll,
                "free_energy/total": reconstruction + kl,
            },
            post,
        )

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def prediction_image(
        self, obs: Tensor, action: Tensor, first: Tensor, context: int
    ) -> np.ndarray:
        """Truth, reconstruction and open-loop prediction of one sequence, one column per
        step: the model filters the first ``context`` steps, then imagines the rest from
        the real actions alone (prior head means, no observations).

        ``obs[T, ...]``, ``action[T]``, ``first[T]`` (one env's newest steps) →
        ``[3, H, W]`` uint8 (pixels: the newest frame of each stack, grey; vectors: rows
        of a heatmap of the decoder's targets).
        """
        x = self.preprocess(obs)
        embed = self.encoder(x)[0].unsqueeze(0)
        post = self.filter(embed, action.unsqueeze(0), first.unsqueeze(0))
        feat = self.features(post.h[0], post.mean[0])
        recon = self.decoder(feat)[0].float()
        a_feat = self.action_features(action)
        h, s = post.h[0, context - 1 : context], post.mean[0, context - 1 : context]
        imagined = [recon[:context]]
        for t in range(context, obs.shape[0]):
            h = self.rssm.step(h, s, a_feat[t - 1 : t])
            s = self.rssm.prior(h)[0].mean(0)
            imagined.append(self.decoder(self.features(h, s))[0].float())
        imagined_t = torch.cat(imagined)
        recon, imagined_t = self.observation_mean(recon), self.observation_mean(imagined_t)
        truth = self.target(x)
        if self.pixels:
            rows = [truth[:, -1], recon[:, -1], imagined_t[:, -1]]
            return tile_grey([r.cpu().numpy() for r in rows])
        # vectors: one heatmap row per step and quantity, truth | reconstruction | imagined
        rows = torch.cat([truth.flatten(1), recon.flatten(1), imagined_t.flatten(1)], 1)
        return heatmap(((rows.clamp(-1, 1) + 1) / 2).cpu().numpy(), cell=8, vmax=1.0)
