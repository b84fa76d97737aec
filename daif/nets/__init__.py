"""Neural networks of the deep active inference agent.

Every network is a plain ``torch.nn.Module`` that knows nothing of Hydra; the agent
builds them from ``_partial_`` config nodes, passing the sizes it knows. Encoders and
decoders follow the two signatures below exactly, so that an MLP pair (vector
observations, :mod:`daif.nets.mlp`) and a convolutional pair (pixel observations,
:mod:`daif.nets.conv`) are swapped by one config override (``agent/encoder=conv``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Encoder(Protocol):
    """Recognition model q(s|o): a diagonal Gaussian over a ``latent_dim`` latent.

    ``__init__(obs_shape: tuple[int, ...], latent_dim: int, **hparams)``

    ``forward(obs[B, *obs_shape]) -> (mean[B, Z], std[B, Z])`` with ``std > 0``
    (clamped). ``obs`` arrives already scaled by the agent (vector observations
    divided by their finite bounds; pixel frames as float in [0, 1]).
    """

    def __init__(self, obs_shape: tuple[int, ...], latent_dim: int, **hparams: Any) -> None: ...

    def __call__(self, obs: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Decoder(Protocol):
    """Likelihood p(o|s): a diagonal Gaussian over observations.

    ``__init__(latent_dim: int, obs_shape: tuple[int, ...], **hparams)``

    ``forward(z[B, Z]) -> (mean[B, *obs_shape], std[B, *obs_shape])`` with ``std > 0``
    (clamped); the mean is in the same scaled units the encoder receives.
    """

    def __init__(self, latent_dim: int, obs_shape: tuple[int, ...], **hparams: Any) -> None: ...

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]: ...


__all__ = ["Decoder", "Encoder"]
