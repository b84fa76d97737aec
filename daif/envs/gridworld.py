"""Grid-world foraging from an unknown start.

An N×N grid whose floor cells have one of K colours (a fixed layout drawn from
``layout_seed``) holds food in one cell. The agent starts in a random cell other
than the food's and does not know where it is: it observes the colour of its cell and
the *scent* of the food, the Manhattan distance to it. It must work out where it is
and walk to the food.

Actions (``Discrete(5)``): 0 stay, 1 up, 2 down, 3 left, 4 right (walls block).
Observations (``MultiDiscrete([K, 2N − 1])``): colour of the cell, scent distance.
Reward: +1 on reaching the food (the episode terminates), 0 otherwise.
``info["success"]`` is set at the end of an episode. Cells are numbered row-major,
``cell = row · N + col``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # stay, up, down, left, right


class GridWorldEnv(gym.Env):
    """N×N foraging grid with unknown start.

    Args:
        size: N ≥ 2.
        num_colours: K ≥ 1 floor colours.
        food: food cell index (default: the last cell, bottom-right).
        layout_seed: seed of the colour layout (the environment's fixed map).
        max_steps: truncation limit (default 4N).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        size: int = 5,
        num_colours: int = 4,
        food: int | None = None,
        layout_seed: int = 0,
        max_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if size < 2:
            raise ValueError(f"size must be >= 2; got {size}")
        if num_colours < 1:
            raise ValueError(f"num_colours must be >= 1; got {num_colours}")
        n_cells = size * size
        food = n_cells - 1 if food is None else int(food)
        if not 0 <= food < n_cells:
            raise ValueError(f"food must be a cell in 0..{n_cells - 1}; got {food}")
        self.size = int(size)
        self.num_colours = int(num_colours)
        self.food = food
        self.max_steps = 4 * size if max_steps is None else int(max_steps)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {max_steps}")
        self.colours = np.random.default_rng(layout_seed).integers(num_colours, size=n_cells)
        self.render_mode = render_mode
        self.observation_space = spaces.MultiDiscrete([num_colours, 2 * size - 1])
        self.action_space = spaces.Discrete(5)
        self.cell = 0
        self.steps = 0

    @property
    def num_cells(self) -> int:
        return self.size * self.size

    def next_cell(self, cell: int, action: int) -> int:
        """Deterministic move (walls block)."""
        r, c = divmod(cell, self.size)
        dr, dc = MOVES[action]
        r = min(max(r + dr, 0), self.size - 1)
        c = min(max(c + dc, 0), self.size - 1)
        return r * self.size + c

    def scent(self, cell: int) -> int:
        """Manhattan distance from ``cell`` to the food."""
        r, c = divmod(cell, self.size)
        fr, fc = divmod(self.food, self.size)
        return abs(r - fr) + abs(c - fc)

    def _obs(self) -> np.ndarray:
        return np.array([self.colours[self.cell], self.scent(self.cell)], dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = int(self.np_random.integers(self.num_cells - 1))
        self.cell = start if start < self.food else start + 1
        self.steps = 0
        return self._obs(), {"cell": self.cell}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not self.action_space.contains(a):
            raise ValueError(f"action must be in 0..4; got {action!r}")
        self.cell = self.next_cell(self.cell, a)
        self.steps += 1
        terminated = self.cell == self.food
        truncated = not terminated and self.steps >= self.max_steps
        info: dict[str, Any] = {"cell": self.cell}
        if terminated or truncated:
            info["success"] = terminated
        return self._obs(), float(terminated), terminated, truncated, info

    def render(self) -> str:
        rows = []
        for r in range(self.size):
            row = ""
            for c in range(self.size):
                i = r * self.size + c
                row += "A" if i == self.cell else ("F" if i == self.food else str(self.colours[i]))
            rows.append(row)
        return "\n".join(rows)
