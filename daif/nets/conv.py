"""Convolutional encoder/decoder pair for stacked grey frames (pixel observations).

Same signatures as the MLP pair in :mod:`daif.nets.mlp`, so one config override
(``agent/encoder=conv agent/decoder=conv``) swaps them:

* :class:`ConvEncoder` — q(s|o) = N(μ(o), diag σ(o)²) from ``[B, k, H, W]`` frames.
* :class:`ConvDecoder` — p(o|s) = N(μ(s), diag σ(s)²) over every pixel of every frame.

Frames are treated as ``k`` input channels (the stack is what makes velocities
visible). Each of ``num_layers`` stride-2 convolutions (kernel 4, padding 1) halves the
height and width, so ``H`` and ``W`` must be divisible by ``2**num_layers``; channel
widths double from ``depth`` at every layer, as in the World Models / Dreamer image
networks. ``depth=16`` on 64×64×4 frames is about 0.7 M parameters per network, small
enough to train on a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from daif.nets.mlp import _activation, _check_std_range, bounded_std
from daif.validation import check_int


def _check_image_shape(obs_shape: tuple[int, ...], num_layers: int, depth: int) -> tuple[int, int]:
    """Validate ``(k, H, W)`` against the network depth; return the bottleneck ``(H', W')``."""
    if len(obs_shape) != 3:
        raise ValueError(f"conv networks need obs_shape (frames, H, W), got {tuple(obs_shape)}")
    check_int("num_layers", num_layers, minimum=1)
    check_int("depth", depth, minimum=1)
    _, h, w = obs_shape
    factor = 2**num_layers
    if h % factor or w % factor:
        raise ValueError(
            f"frame size {h}x{w} is not divisible by 2**num_layers = {factor} "
            f"(num_layers={num_layers}); change the frame size or num_layers"
        )
    return h // factor, w // factor


class ConvEncoder(nn.Module):
    """q(s|o) for ``[B, k, H, W]`` frames scaled to [0, 1] (uint8 frames are scaled here).

    Args:
        obs_shape: ``(k, H, W)``.
        latent_dim: Z.
        depth: channels of the first convolution (doubling at every layer).
        num_layers: stride-2 convolutions; the bottleneck is ``H / 2**num_layers``.
        activation: ``relu`` | ``silu`` | ``elu`` | ``tanh``.
        min_std, max_std: clamp of the posterior standard deviation.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        latent_dim: int,
        depth: int = 16,
        num_layers: int = 4,
        activation: str = "silu",
        min_std: float = 0.01,
        max_std: float = 1.0,
    ) -> None:
        super().__init__()
        _check_std_range(min_std, max_std)
        bh, bw = _check_image_shape(obs_shape, num_layers, depth)
        self.obs_shape = tuple(obs_shape)
        self.latent_dim = latent_dim
        self.min_std, self.max_std = min_std, max_std
        act = _activation(activation)
        layers: list[nn.Module] = []
        channels = self.obs_shape[0]
        for i in range(num_layers):
            out = depth * 2**i
            layers += [nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1), act()]
            channels = out
        layers.append(nn.Flatten())
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(channels * bh * bw, 2 * latent_dim)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs[B, k, H, W]`` (float in [0, 1], or uint8) → ``(mean[B, Z], std[B, Z])``."""
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(f"ConvEncoder expects [B, *{self.obs_shape}], got {tuple(obs.shape)}")
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs
        # centring the pixels keeps the first layer's pre-activations around zero
        mean, raw = self.head(self.conv(x - 0.5)).chunk(2, dim=-1)
        return mean.float(), bounded_std(raw, self.min_std, self.max_std)


class ConvDecoder(nn.Module):
    """p(o|s): a mean and a clamped std for every pixel, in the encoder's [0, 1] units.

    Mirror of :class:`ConvEncoder`: a linear layer to the ``H/2**L × W/2**L`` bottleneck,
    then ``num_layers`` stride-2 transposed convolutions; the last one emits ``2k``
    channels (mean and std of each frame). The mean is offset by 0.5 so that an
    untrained decoder predicts mid-grey rather than black.

    Args:
        latent_dim: Z.
        obs_shape: ``(k, H, W)``.
        depth, num_layers, activation: as :class:`ConvEncoder`.
        min_std, max_std: clamp of the per-pixel likelihood standard deviation.
    """

    def __init__(
        self,
        latent_dim: int,
        obs_shape: tuple[int, ...],
        depth: int = 16,
        num_layers: int = 4,
        activation: str = "silu",
        min_std: float = 0.01,
        max_std: float = 1.0,
    ) -> None:
        super().__init__()
        _check_std_range(min_std, max_std)
        bh, bw = _check_image_shape(obs_shape, num_layers, depth)
        self.obs_shape = tuple(obs_shape)
        self.min_std, self.max_std = min_std, max_std
        act = _activation(activation)
        top = depth * 2 ** (num_layers - 1)
        self.bottleneck = (top, bh, bw)
        self.head = nn.Linear(latent_dim, math.prod(self.bottleneck))
        layers: list[nn.Module] = [act()]
        channels = top
        for i in reversed(range(num_layers)):
            last = i == 0
            out = 2 * self.obs_shape[0] if last else depth * 2 ** (i - 1)
            layers.append(nn.ConvTranspose2d(channels, out, kernel_size=4, stride=2, padding=1))
            if not last:
                layers.append(act())
            channels = out
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``z[B, Z]`` → ``(mean[B, k, H, W], std[B, k, H, W])``."""
        x = self.head(z).reshape(z.shape[0], *self.bottleneck)
        mean, raw = self.deconv(x).chunk(2, dim=1)
        return mean.float() + 0.5, bounded_std(raw, self.min_std, self.max_std)


__all__ = ["ConvDecoder", "ConvEncoder"]
