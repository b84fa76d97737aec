"""CartPole seen through its pixels: rendered, grey, cropped, resized and frame-stacked.

The agent never sees the 4-vector state, only ``[k, H, W]`` uint8 images of the last
``k`` rendered frames, so velocities have to be inferred from the stack — a partially
observed version of CartPole-v1 with the same reward, termination and 500-step limit.

Pipeline (Gymnasium wrappers, outermost last)::

    CartPole-v1(render_mode="rgb_array")          [400, 600, 3] rendered frame
    -> AddRenderObservation(render_only=True)     observation := rendered frame
    -> _GreyCropResize(frame_size, crop)          [H, W] uint8: crop, area-average, grey
    -> FrameStackObservation(frame_stack)         [k, H, W] uint8

Gymnasium's ``GrayscaleObservation`` + ``ResizeObservation`` would do the middle step,
but the first converts the whole 400×600 frame in float64 (≈8 ms a step, more than the
physics and the rendering together) and the second needs OpenCV. Cropping first, then
averaging with ``numpy.add.reduceat`` and weighting the channels of the small result,
gives the same image (grey and area averaging are both linear, so they commute) in
well under a millisecond, without the extra dependency.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import AddRenderObservation, FrameStackObservation

# pygame renders into an off-screen surface for "rgb_array"; the dummy driver keeps it
# from looking for a display on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# SDL otherwise installs its own SIGINT/SIGTERM handlers, so Ctrl+C would not stop training.
os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")

CARTPOLE_ROWS: tuple[int, int] = (160, 320)
"""Rows of the 400×600 CartPole render that can contain the cart or the pole.

The track is drawn 100 px above the bottom and the pole is 125 px long, so everything
that moves lies in rows ≈172–314 (measured over random episodes); the rest is blank sky.
"""


GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
"""Luminance weights of R, G, B (ITU-R BT.709), as Gymnasium's ``GrayscaleObservation``."""


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downsample an image by averaging the source pixels that fall in each target cell.

    Target cell ``(i, j)`` is the mean of rows ``[⌊i·H/h⌋, ⌊(i+1)·H/h⌋)`` and columns
    ``[⌊j·W/w⌋, ⌊(j+1)·W/w⌋)`` of the source (channels, if any, averaged separately).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` image, any real dtype.
        size: ``(h, w)`` with ``1 ≤ h ≤ H`` and ``1 ≤ w ≤ W``.
    Returns:
        ``[h, w]`` or ``[h, w, C]`` float32 means (not rounded).
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"area_resize expects an [H, W] or [H, W, C] image, got {image.shape}")
    in_h, in_w = image.shape[:2]
    out_h, out_w = size
    if not (1 <= out_h <= in_h and 1 <= out_w <= in_w):
        raise ValueError(f"cannot area-resize a {image.shape} image to {size}: only downsampling")
    row_edges = (np.arange(out_h) * in_h) // out_h
    col_edges = (np.arange(out_w) * in_w) // out_w
    sums = np.add.reduceat(image.astype(np.float32), row_edges, axis=0)
    sums = np.add.reduceat(sums, col_edges, axis=1)
    counts = np.outer(np.diff(np.append(row_edges, in_h)), np.diff(np.append(col_edges, in_w)))
    if image.ndim == 3:
        counts = counts[:, :, None]
    return sums / counts.astype(np.float32)


class _GreyCropResize(gym.ObservationWrapper):
    """RGB ``[H, W, 3]`` uint8 render → cropped, area-resized grey ``[h, w]`` uint8."""

    def __init__(self, env: gym.Env, size: tuple[int, int], rows: tuple[int, int] | None):
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"_GreyCropResize expects an RGB [H, W, 3] render, got {shape}")
        self._rows = rows if rows is not None else (0, shape[0])
        self._size = size
        self.observation_space = spaces.Box(0, 255, shape=size, dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        top, bottom = self._rows
        grey = area_resize(observation[top:bottom], self._size) @ GREY_WEIGHTS
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def make_cartpole_pixels(
    frame_size: int | tuple[int, int] | list[int] = 64,
    frame_stack: int = 4,
    crop: bool = True,
    render_mode: str | None = None,
    **cartpole_kwargs: Any,
) -> gym.Env:
    """CartPole-v1 whose observations are the last ``frame_stack`` grey rendered frames.

    Args:
        frame_size: ``H`` (square) or ``(H, W)`` of each frame after resizing.
        frame_stack: ``k ≥ 1`` frames per observation (≥ 2 to make velocities observable).
        crop: keep only :data:`CARTPOLE_ROWS` of the render (where cart and pole move)
            before resizing, which spends the pixels on the moving parts.
        render_mode: accepted for ``gymnasium.make`` compatibility; must be ``None`` or
            ``"rgb_array"`` because the observation *is* the render.
        **cartpole_kwargs: passed to ``gymnasium.make("CartPole-v1", ...)``
            (e.g. ``max_episode_steps``).
    Returns:
        an env with ``observation_space = Box(0, 255, [k, H, W], uint8)`` and CartPole's
        ``Discrete(2)`` actions, rewards and termination.
    """
    if render_mode not in (None, "rgb_array"):
        raise ValueError(
            f"CartPolePixels renders to rgb_array only, got render_mode={render_mode!r}"
        )
    size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"frame_size must be a positive int or (H, W), got {frame_size!r}")
    rows = CARTPOLE_ROWS if crop else None
    max_h = (rows[1] - rows[0]) if rows else 400
    if size[0] > max_h or size[1] > 600:
        raise ValueError(f"frame_size {size} is larger than the {max_h}x600 source frame")
    if not isinstance(frame_stack, int) or frame_stack < 1:
        raise ValueError(f"frame_stack must be an int >= 1, got {frame_stack!r}")

    env = gym.make("CartPole-v1", render_mode="rgb_array", **cartpole_kwargs)
    env = AddRenderObservation(env, render_only=True)
    env = _GreyCropResize(env, size=size, rows=rows)
    # "reset" padding repeats the first frame, so a fresh episode starts with zero motion.
    return FrameStackObservation(env, stack_size=frame_stack, padding_type="reset")
