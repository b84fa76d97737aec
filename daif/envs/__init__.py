"""Environments: Gymnasium's own plus daif's tasks, single and vectorised, built here only.

daif's tasks are registered with Gymnasium under the ``daif/`` namespace (lazy string
entry points, so importing this module imports no task code).

Autoreset: vector envs use Gymnasium's ``SAME_STEP`` mode. When a sub-env's episode ends,
``step`` returns the *first observation of the next episode* in ``obs`` and the true final
observation in ``infos["final_obs"][i]``; :func:`true_next_obs` puts the latter back so that
a transition's ``next_obs`` is always the observation the action produced.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from daif.validation import ConfigError

_DAIF_ENVS: dict[str, str] = {
    # deep agent, pixel observations (rendered CartPole frames, grey, stacked)
    "daif/CartPolePixels-v0": "daif.envs.pixels:make_cartpole_pixels",
    # deep agent, partial observations (CartPole without its velocities)
    "daif/CartPoleMasked-v0": "daif.envs.masked:make_cartpole_masked",
    # discrete-POMDP tasks
    "daif/TMaze-v0": "daif.envs.tmaze:TMazeEnv",
    "daif/GridWorld-v0": "daif.envs.gridworld:GridWorldEnv",
}

for _id, _entry in _DAIF_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry)


class UnknownEnvError(ValueError):
    """Raised for an env id that neither Gymnasium nor daif knows."""


class ActionRepeat(gym.Wrapper):
    """Hold each action for ``repeat`` frames, summing their rewards; a frame that ends the
    episode ends the repeat. ``info["frames"]`` is how many frames the step took."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total, frames = 0.0, 0
        while True:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            frames += 1
            if terminated or truncated or frames == self.repeat:
                return obs, total, terminated, truncated, {**info, "frames": frames}


def available_envs() -> list[str]:
    """Sorted ids that :func:`make_env` accepts (Gymnasium's registry, daif's included)."""
    return sorted(gym.registry.keys())


def check_env_id(env_id: str) -> None:
    """Raise :class:`UnknownEnvError` naming ``env_id`` and listing the known ids."""
    if env_id not in gym.registry:
        known = ", ".join(i for i in available_envs() if "/" not in i or i.startswith("daif/"))
        raise UnknownEnvError(f"unknown env id {env_id!r}; available: {known}")


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` after checking that the id exists.

    Raises:
        UnknownEnvError: an id nobody registered.
        ConfigError: a missing optional dependency (naming daif's extra that installs it)
            or keyword arguments the env does not take.
    """
    check_env_id(env_id)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # headless: pygame's renderer draws offscreen instead of printing SDL's
        # "XDG_RUNTIME_DIR is invalid" while it looks for a display
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        extra = "box2d" if "box2d" in str(exc).lower() else None
        how = f"pip install -e '.[{extra}]'" if extra else f"install what it names ({exc})"
        raise ConfigError(
            f"env.id={env_id!r} needs a package that is not installed: {how}"
        ) from None
    except TypeError as exc:
        raise ConfigError(f"env.kwargs: {env_id} refused {dict(kwargs)}: {exc}") from None


def _make_wrapped(
    env_id: str,
    kwargs: Mapping[str, Any],
    wrapper: Callable[[gym.Env], gym.Env] | None,
    action_repeat: int,
) -> gym.Env:
    env = make_env(env_id, **dict(kwargs))
    if wrapper is not None:  # inside the repeat, so that a video records every frame
        env = wrapper(env)
    return ActionRepeat(env, action_repeat) if action_repeat > 1 else env


def make_vector_env(
    env_id: str,
    kwargs: Mapping[str, Any],
    num_envs: int,
    wrapper: Callable[[gym.Env], gym.Env] | None = None,
    action_repeat: int = 1,
) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` in a ``SyncVectorEnv`` with SAME_STEP autoreset.

    Args:
        env_id: Gymnasium id (daif's ``daif/...`` ids included).
        kwargs: keyword arguments for ``gymnasium.make``.
        num_envs: number of sub-envs (≥ 1).
        wrapper: optional function applied to each sub-env (e.g. ``RecordVideo``).
        action_repeat: frames each action is held for (:class:`ActionRepeat`; 1: none).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    fn = functools.partial(_make_wrapped, env_id, dict(kwargs), wrapper, action_repeat)
    return gym.vector.SyncVectorEnv(
        [fn] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def frames_taken(infos: Mapping[str, Any], num_envs: int) -> np.ndarray:
    """``[N]`` frames each sub-env's last step took: :class:`ActionRepeat`'s
    ``info["frames"]``, else 1. A sub-env that just ended reports its reset's info, so its
    count is read from ``final_info``."""
    frames = np.ones(num_envs, dtype=np.int64)
    for source in (infos, infos.get("final_info", {})):
        if "frames" in source:
            has = np.asarray(source.get("_frames", np.ones(num_envs, dtype=bool)))
            frames[has] = np.asarray(source["frames"])[has]
    return frames


def true_next_obs(next_obs: np.ndarray, done: np.ndarray, infos: Mapping[str, Any]) -> np.ndarray:
    """``next_obs`` with rows of finished sub-envs replaced by their final observation.

    Args:
        next_obs: ``[N, *obs_shape]`` from ``step`` (reset obs where ``done``).
        done: ``[N]`` bool, ``terminated | truncated``.
        infos: the step's info dict (``final_obs`` is an object array in SAME_STEP mode).
    """
    if not done.any():
        return next_obs
    out = np.array(next_obs, copy=True)
    final = infos["final_obs"]
    for i in np.flatnonzero(done):
        out[i] = final[i]
    return out
