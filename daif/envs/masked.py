"""CartPole without velocities: a partially observed task where memory is required.

``daif/CartPoleMasked-v0`` is CartPole-v1 observing only the cart position x and the pole
angle θ (entries 0 and 2 of the state); the velocities ẋ and θ̇ must be inferred from how
these change over steps. Reward, termination and the 500-step limit are CartPole-v1's. It
is the "no velocity" CartPole used to test recurrent agents (sb3-contrib's
``CartPoleNoVel``, the RL Zoo's recurrent PPO benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CARTPOLE_POSITION_AND_ANGLE: tuple[int, ...] = (0, 2)
"""Entries of CartPole's state [x, ẋ, θ, θ̇] that stay observed."""


class KeepEntries(gym.ObservationWrapper):
    """A Box observation reduced to the entries ``keep`` (the Box bounds follow)."""

    def __init__(self, env: gym.Env, keep: Sequence[int]) -> None:
        super().__init__(env)
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"KeepEntries needs a 1-D Box observation space, got {box}")
        idx = np.asarray(keep, dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= box.shape[0]:
            raise ValueError(f"keep={list(keep)}: entries must lie in [0, {box.shape[0]})")
        self._keep = idx
        self.observation_space = spaces.Box(box.low[idx], box.high[idx], dtype=box.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self._keep]


def make_cartpole_masked(**kwargs: Any) -> gym.Env:
    """CartPole-v1 observing ``[x, θ]`` only (``kwargs`` go to CartPole, e.g. ``render_mode``)."""
    return KeepEntries(gym.make("CartPole-v1", **kwargs), CARTPOLE_POSITION_AND_ANGLE)
