"""Environment registry: Gymnasium's own envs plus daif's tasks, made by one function.

daif's tasks are registered with Gymnasium under the ``daif/`` namespace (lazy string
entry points, so importing this module imports no task code).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

_DAIF_ENVS: dict[str, str] = {
    # deep agent, pixel observations (rendered CartPole frames, grey, stacked)
    "daif/CartPolePixels-v0": "daif.envs.pixels:make_cartpole_pixels",
    # discrete-POMDP tasks
    "daif/TMaze-v0": "daif.envs.tmaze:TMazeEnv",
    "daif/GridWorld-v0": "daif.envs.gridworld:GridWorldEnv",
}

for _id, _entry in _DAIF_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry)


class UnknownEnvError(ValueError):
    """Raised for an env id that neither Gymnasium nor daif knows."""


def available_envs() -> list[str]:
    """Sorted ids that :func:`make_env` accepts (Gymnasium's registry, daif's included)."""
    return sorted(gym.registry.keys())


def check_env_id(env_id: str) -> None:
    """Raise :class:`UnknownEnvError` naming ``env_id`` and listing the known ids."""
    if env_id not in gym.registry:
        known = ", ".join(i for i in available_envs() if "/" not in i or i.startswith("daif/"))
        raise UnknownEnvError(f"unknown env id {env_id!r}; available: {known}")


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` after checking that the id exists."""
    check_env_id(env_id)
    return gym.make(env_id, **kwargs)
