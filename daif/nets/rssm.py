"""The recurrent state-space core of the recurrent world model (a Dreamer-style RSSM).

The latent state has a deterministic part h_t ∈ R^H (a GRU's memory) and a stochastic part
s_t ∈ R^S (a diagonal Gaussian):

* recurrence  h_t = f(h_{t−1}, s_{t−1}, a_{t−1})      — :meth:`RecurrentStateSpace.step`
* prior       p_k(s_t | h_t), k = 1..K               — :meth:`RecurrentStateSpace.prior`
* posterior   q(s_t | h_t, e_t), e_t = embed(o_t)    — :meth:`RecurrentStateSpace.posterior`

The prior is an ensemble of K heads that differ only by initialisation: their
disagreement about s_t is the information gain about the model's parameters, as for the
feed-forward model's transition ensemble. The network knows nothing of observations or
losses; :mod:`daif.deep.recurrent_model` wires it to the encoder and decoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from daif.nets.mlp import EnsembleLinear, _activation, _check_std_range, bounded_std, mlp
from daif.validation import check_int


class RecurrentStateSpace(nn.Module):
    """GRU memory, an ensemble prior over s_t and a posterior over s_t given e_t.

    Args:
        latent_dim: S, the stochastic state's size.
        num_actions: A, the size of an action's features (one-hot for discrete actions).
        deter_dim: H, the GRU's memory.
        embed_dim: E, the size of the observation embedding the encoder makes.
        hidden: widths of the input, prior and posterior layers.
        num_members: K ≥ 2 prior heads.
        min_std, max_std: clamp of every standard deviation (bounded stds keep the KL finite).
        continuous: accepted for the agent's factory signature; actions enter as features.
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        deter_dim: int = 128,
        embed_dim: int = 64,
        hidden: Sequence[int] = (128,),
        num_members: int = 5,
        activation: str = "silu",
        min_std: float = 0.1,
        max_std: float = 1.0,
        continuous: bool = False,
    ) -> None:
        super().__init__()
        del continuous  # the agent hands in action features, whatever the action space
        check_int("deter_dim", deter_dim, minimum=1)
        check_int("embed_dim", embed_dim, minimum=1)
        check_int("num_members", num_members, minimum=2)
        _check_std_range(min_std, max_std)
        widths = list(hidden)
        if not widths:
            raise ValueError("hidden: the recurrent model needs at least one hidden layer")
        self.latent_dim, self.deter_dim, self.embed_dim = latent_dim, deter_dim, embed_dim
        self.num_actions, self.num_members = num_actions, num_members
        self.min_std, self.max_std = min_std, max_std
        act = _activation(activation)
        self.inp = nn.Sequential(
            nn.Linear(latent_dim + num_actions, widths[0]), nn.LayerNorm(widths[0]), act()
        )
        self.cell = nn.GRUCell(widths[0], deter_dim)
        dims = [deter_dim, *widths]
        self.prior_hidden = nn.ModuleList(
            EnsembleLinear(num_members, i, o) for i, o in itertools.pairwise(dims)
        )
        self.prior_out = EnsembleLinear(num_members, dims[-1], 2 * latent_dim)
        self.act = act()
        self.post = mlp(deter_dim + embed_dim, widths, 2 * latent_dim, activation, True)

    @property
    def feature_dim(self) -> int:
        """H + S, the size of the features (h, s) every head downstream reads."""
        return self.deter_dim + self.latent_dim

    def initial(self, batch: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """(h, s) = (0, 0) for ``batch`` fresh episodes: ``([B, H], [B, S])``."""
        return (
            torch.zeros(batch, self.deter_dim, device=device),
            torch.zeros(batch, self.latent_dim, device=device),
        )

    def step(self, h: Tensor, s: Tensor, action: Tensor) -> Tensor:
        """h_t = GRU(h_{t−1}, φ(s_{t−1}, a_{t−1})): ``[B, H], [B, S], [B, A] → [B, H]``
        (``action`` are features: a one-hot row, a continuous vector, or zeros)."""
        x = self.inp(torch.cat([s, action.to(s.dtype)], -1))
        return self.cell(x, h.to(x.dtype)).float()

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """p_k(s_t | h_t) of every head: ``h[B, H] → (mean[K, B, S], std[K, B, S])``."""
        x = h.unsqueeze(0).expand(self.num_members, -1, -1)
        for layer in self.prior_hidden:
            x = self.act(layer(x))
        mean, raw = self.prior_out(x).chunk(2, -1)
        return mean.float(), bounded_std(raw, self.min_std, self.max_std)

    def posterior(self, h: Tensor, embed: Tensor) -> tuple[Tensor, Tensor]:
        """q(s_t | h_t, e_t): ``[B, H], [B, E] → (mean[B, S], std[B, S])``."""
        mean, raw = self.post(torch.cat([h, embed.to(h.dtype)], -1)).chunk(2, -1)
        return mean.float(), bounded_std(raw, self.min_std, self.max_std)
