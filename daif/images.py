"""Small numpy pictures for TensorBoard (no plotting library): heatmaps and image tiles.

Every function returns a ``[3, H, W]`` uint8 array (CHW), the layout ``Logger.image``
takes.
"""

from __future__ import annotations

import numpy as np

# three anchors of a perceptually ordered colour map: navy, teal, yellow
_ANCHORS = np.array([[20, 20, 90], [30, 150, 140], [250, 230, 40]], dtype=np.float64)


def heatmap(values: np.ndarray, cell: int = 8, vmax: float | None = None) -> np.ndarray:
    """A ``[3, H·cell, W·cell]`` uint8 picture of a 2-D array (0 navy → vmax yellow).

    Args:
        values: ``[H, W]`` non-negative numbers.
        cell: pixels per entry.
        vmax: value drawn yellow; by default the array's maximum (all-zero stays navy).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array; got shape {v.shape}")
    top = v.max() if vmax is None else vmax
    v = v / top if top > 0 else v
    x = np.clip(v, 0.0, 1.0) * 2.0
    lo = np.minimum(x.astype(int), 1)
    frac = (x - lo)[..., None]
    rgb = _ANCHORS[lo] * (1.0 - frac) + _ANCHORS[lo + 1] * frac  # [H, W, 3]
    rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    return rgb.round().astype(np.uint8).transpose(2, 0, 1)


def tile_grey(rows: list[np.ndarray]) -> np.ndarray:
    """Grey frames in a grid: ``rows[r]`` is ``[n, H, W]`` in [0, 1] → ``[3, R·H, n·W]`` uint8."""
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grey = (np.clip(grid, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.repeat(grey[None], 3, axis=0)
