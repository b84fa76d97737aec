"""Multi-layer-perceptron networks for vector observations (one concern per class).

* :class:`MLPEncoder` — q(s|o), diagonal Gaussian latent.
* :class:`MLPDecoder` — p(o|s), diagonal Gaussian likelihood with a learned std (its
  entropy is the ambiguity term of the expected free energy).
* :class:`TransitionEnsemble` — K Gaussian heads p_k(s'|s, a), evaluated in one batched
  matrix product per layer (no python loop over members).
* :class:`OutcomeModel` — p(r, d | s, a): predicted reward and termination, the outcomes
  the agent holds preferences over (the preferences are in :mod:`daif.nets.preference`).
* :class:`EFECritic` — the amortised expected free energy G(s, ·) of every discrete action.
* :class:`ActionCritic` — G(s, a) of a continuous action, C independent heads.
* :class:`GaussianActor` — q(a|s), a tanh-squashed Gaussian over continuous actions.

Networks that take an action take ``num_actions`` and ``continuous``: a discrete action
(an index) enters one-hot, a continuous one (``num_actions`` entries in [−1, 1]) as is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daif.validation import ConfigError, check_int

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _check_std_range(min_std: float, max_std: float) -> None:
    if not 0.0 < min_std < max_std:
        raise ValueError(f"need 0 < min_std < max_std, got min_std={min_std}, max_std={max_std}")


def check_widths(hidden: Sequence[int]) -> list[int]:
    """Hidden layer widths as a list of ints ≥ 1 (``hidden[i]: ...`` names a bad one)."""
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise ConfigError(f"hidden: expected a list of layer widths, got {hidden!r}")
    return [check_int(f"hidden[{i}]", h, minimum=1) for i, h in enumerate(hidden)]


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: str = "silu",
    layer_norm: bool = False,
) -> nn.Sequential:
    """Linear → [LayerNorm] → activation, repeated, then a linear output layer."""
    act = _activation(activation)
    layers: list[nn.Module] = []
    d = in_dim
    for h in check_widths(hidden):
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(act())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def action_features(
    action: Tensor, num_actions: int, continuous: bool, dtype: torch.dtype
) -> Tensor:
    """The network input of an action: ``[...]`` indices → one-hot ``[..., A]``, or a
    continuous ``[..., A]`` as is."""
    if continuous:
        return action.to(dtype)
    return F.one_hot(action.long(), num_actions).to(dtype)


def bounded_std(raw: Tensor, min_std: float, max_std: float) -> Tensor:
    """σ = σ_min + (σ_max − σ_min)·sigmoid(raw): a smooth clamp, never 0 nor huge.

    The sigmoid is evaluated in float32 so that bf16 autocast cannot round σ to 0.
    """
    return min_std + (max_std - min_std) * torch.sigmoid(raw.float())


class MLPEncoder(nn.Module):
    """q(s|o) = N(μ(o), diag σ(o)²) for flat (or flattened) observations.

    Args:
        obs_shape: observation shape; flattened to ``prod(obs_shape)`` inputs.
        latent_dim: Z.
        hidden: hidden layer widths.
        min_std, max_std: clamp of the posterior standard deviation.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        latent_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        layer_norm: bool = False,
        min_std: float = 0.01,
        max_std: float = 1.0,
    ) -> None:
        super().__init__()
        _check_std_range(min_std, max_std)
        self.obs_shape = tuple(obs_shape)
        self.latent_dim = latent_dim
        self.min_std, self.max_std = min_std, max_std
        self.net = mlp(math.prod(self.obs_shape), hidden, 2 * latent_dim, activation, layer_norm)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs[B, *obs_shape]`` → ``(mean[B, Z], std[B, Z])``."""
        out = self.net(obs.flatten(1))
        mean, raw = out.chunk(2, dim=-1)
        return mean.float(), bounded_std(raw, self.min_std, self.max_std)


class MLPDecoder(nn.Module):
    """p(o|s) = N(μ(s), diag σ(s)²) with a state-dependent, clamped σ.

    Args:
        latent_dim: Z.
        obs_shape: observation shape the output is reshaped to.
        min_std, max_std: clamp of the likelihood standard deviation.
    """

    def __init__(
        self,
        latent_dim: int,
        obs_shape: tuple[int, ...],
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        layer_norm: bool = False,
        min_std: float = 0.01,
        max_std: float = 1.0,
    ) -> None:
        super().__init__()
        _check_std_range(min_std, max_std)
        self.obs_shape = tuple(obs_shape)
        self.min_std, self.max_std = min_std, max_std
        self.net = mlp(latent_dim, hidden, 2 * math.prod(self.obs_shape), activation, layer_norm)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z[B, Z]`` → ``(mean[B, *obs_shape], std[B, *obs_shape])``."""
        out = self.net(z)
        mean, raw = out.chunk(2, dim=-1)
        shape = (z.shape[0], *self.obs_shape)
        std = bounded_std(raw, self.min_std, self.max_std)
        return mean.float().reshape(shape), std.reshape(shape)


class EnsembleLinear(nn.Module):
    """K independent affine maps applied in one batched product: ``[K, B, i] → [K, B, o]``."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(
            torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        """``x[K, B, in]`` → ``[K, B, out]``."""
        return torch.baddbmm(self.bias.to(x.dtype), x, self.weight.to(x.dtype))


class TransitionEnsemble(nn.Module):
    """K Gaussian heads p_k(s'|s, a) = N(s + Δμ_k(s, a), diag σ_k(s, a)²).

    Members differ only by initialisation (and hence by what they extrapolate); their
    disagreement on (s, a) is the information gain about the model's parameters.

    Args:
        latent_dim: Z.
        num_actions: size of the discrete action set (actions enter one-hot), or of the
            action vector when ``continuous``.
        num_members: K ≥ 2.
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        num_members: int = 5,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        min_std: float = 0.01,
        max_std: float = 1.0,
        continuous: bool = False,
    ) -> None:
        super().__init__()
        self.continuous = continuous
        if num_members < 2:
            raise ValueError(f"num_members must be ≥ 2 for disagreement, got {num_members}")
        _check_std_range(min_std, max_std)
        self.latent_dim, self.num_actions, self.num_members = latent_dim, num_actions, num_members
        self.min_std, self.max_std = min_std, max_std
        dims = [latent_dim + num_actions, *check_widths(hidden)]
        self.hidden = nn.ModuleList(
            EnsembleLinear(num_members, i, o) for i, o in itertools.pairwise(dims)
        )
        self.act = _activation(activation)()
        self.out = EnsembleLinear(num_members, dims[-1], 2 * latent_dim)

    def forward(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Predict the next latent under every member.

        Args:
            z: ``[B, Z]`` (shared by all members) or ``[K, B, Z]`` (one input per member).
            action: ``[B]`` integer actions, or ``[B, A]`` continuous ones.
        Returns:
            ``(mean[K, B, Z], std[K, B, Z])``.
        """
        a = action_features(action, self.num_actions, self.continuous, z.dtype)
        if z.dim() == 2:
            z = z.unsqueeze(0).expand(self.num_members, -1, -1)
        x = torch.cat([z, a.unsqueeze(0).expand(self.num_members, -1, -1)], dim=-1)
        for layer in self.hidden:
            x = self.act(layer(x))
        delta, raw = self.out(x).chunk(2, dim=-1)
        return z.float() + delta.float(), bounded_std(raw, self.min_std, self.max_std)


class OutcomeModel(nn.Module):
    """p(r, d | s, a): reward ~ N(r̂(s, a), 1) and termination ~ Bernoulli(sigmoid(ℓ(s, a))).

    Reward and termination are the outcomes over which the agent holds preferences; the
    world model learns to predict them from the latent state.
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        continuous: bool = False,
    ) -> None:
        super().__init__()
        self.num_actions, self.continuous = num_actions, continuous
        self.net = mlp(latent_dim + num_actions, hidden, 2, activation)

    def forward(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """``z[..., Z]``, ``action[...]`` (or ``[..., A]`` continuous) →
        ``(reward_mean[...], termination_logit[...])``."""
        a = action_features(action, self.num_actions, self.continuous, z.dtype)
        out = self.net(torch.cat([z, a], dim=-1)).float()
        return out[..., 0], out[..., 1]


class EFECritic(nn.Module):
    """Amortised expected free energy G(s, a) for every discrete action: ``z[B, Z] → [B, A]``.

    With ``num_heads`` K > 1 the critic is K independently initialised MLPs whose mean is G.
    The agent regresses every head on the same target (:meth:`heads`), so their errors are
    partly independent and the mean's error, and its step-to-step jitter, is smaller than one
    head's: this matters where the action gaps are as small as the errors (LunarLander).
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.num_heads = check_int("num_heads", num_heads, minimum=1)
        # Separate MLPs, not one batched EnsembleLinear stack: with one head this is the
        # critic (initialisation and numbers) that every other preset's results were run on.
        self.nets = nn.ModuleList(
            mlp(latent_dim, hidden, num_actions, activation, layer_norm) for _ in range(num_heads)
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before the critic had heads name its one MLP `net`.
        for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
            state_dict[prefix + "nets.0." + key[len(prefix) + 4 :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def heads(self, z: Tensor) -> Tensor:
        """``z[B, Z]`` → ``G_k[K, B, A]``, one row per head (nats; lower is better)."""
        return torch.stack([net(z) for net in self.nets]).float()

    def forward(self, z: Tensor) -> Tensor:
        """``z[B, Z]`` → ``G[B, A]``, the mean of the heads (nats; lower is better)."""
        return self.heads(z).mean(0)


class ActionCritic(nn.Module):
    """G(s, a) of a continuous action under C independently initialised heads:
    ``(z[B, Z], a[B, A]) → [C, B]``.

    The agent regresses every head on one target and uses the largest G, the pessimistic
    estimate, where it picks actions (two heads: the clipped double estimator of TD3/SAC,
    for a cost instead of a reward).
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        num_heads: int = 2,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        layer_norm: bool = False,
        continuous: bool = True,
    ) -> None:
        super().__init__()
        if not continuous:
            raise ConfigError("agent.critic: ActionCritic is for continuous actions; use mlp")
        check_int("num_heads", num_heads, minimum=1)
        self.num_heads = num_heads
        dims = [latent_dim + num_actions, *check_widths(hidden)]
        self.hidden = nn.ModuleList(
            EnsembleLinear(num_heads, i, o) for i, o in itertools.pairwise(dims)
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(o) if layer_norm else nn.Identity() for o in dims[1:]
        )
        self.act = _activation(activation)()
        self.out = EnsembleLinear(num_heads, dims[-1], 1)

    def forward(self, z: Tensor, action: Tensor) -> Tensor:
        """``z[B, Z]``, ``action[B, A]`` in [−1, 1] → ``G[C, B]`` (nats; lower is better)."""
        x = torch.cat([z, action.to(z.dtype)], -1).unsqueeze(0).expand(self.num_heads, -1, -1)
        for layer, norm in zip(self.hidden, self.norms, strict=True):
            x = self.act(norm(layer(x)))
        return self.out(x).squeeze(-1).float()


class GaussianActor(nn.Module):
    """q(a|s): a = tanh(u), u ~ N(μ(s), diag σ(s)²); ``z[B, Z] → (μ[B, A], σ[B, A])``.

    σ is bounded (:func:`bounded_std`) so the policy neither collapses to a point nor
    spreads past the action box; the squashing keeps every sample inside [−1, 1].
    """

    def __init__(
        self,
        latent_dim: int,
        num_actions: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_std: float = 0.01,
        max_std: float = 2.0,
    ) -> None:
        super().__init__()
        _check_std_range(min_std, max_std)
        self.min_std, self.max_std = min_std, max_std
        self.net = mlp(latent_dim, hidden, 2 * num_actions, activation)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.net(z).float().chunk(2, -1)
        return mean, bounded_std(raw, self.min_std, self.max_std)


__all__ = [
    "ActionCritic",
    "EFECritic",
    "EnsembleLinear",
    "GaussianActor",
    "MLPDecoder",
    "MLPEncoder",
    "OutcomeModel",
    "TransitionEnsemble",
    "action_features",
    "bounded_std",
    "mlp",
]
