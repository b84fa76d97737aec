"""The T-maze with a cue: the classic epistemic active inference task.

The agent starts at the centre of a T. A reward sits in the left or the right arm
(the *context*, drawn at reset). At the bottom of the T a cue shows which arm is
rewarded. Entering an arm ends the episode. An agent that only seeks reward guesses
(50%); one that also values information visits the cue first.

Locations: 0 centre, 1 left arm, 2 right arm, 3 cue. Actions: move to location 0–3.
Observations (``MultiDiscrete([4, 3, 2])``):
    location, reward outcome (0 none, 1 reward, 2 loss), cue (0 "left", 1 "right").
Away from the cue location the cue modality is a fair coin (uninformative).
Reward: +1 for the reward outcome, −1 for a loss. ``info["success"]`` is True when
the episode ended in the rewarded arm; ``info["context"]`` is the rewarded arm's
context index (0 left, 1 right).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CENTRE, LEFT, RIGHT, CUE = 0, 1, 2, 3
NO_REWARD, REWARD, LOSS = 0, 1, 2


class TMazeEnv(gym.Env):
    """T-maze with a cue.

    Args:
        cue_validity: probability that the cue shows the true context (0.5–1).
        reward_prob: probability that the rewarded arm pays (and the other one
            punishes) rather than the opposite (0.5–1).
        max_steps: episode length limit (truncation).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        cue_validity: float = 1.0,
        reward_prob: float = 1.0,
        max_steps: int = 4,
        render_mode: str | None = None,
    ) -> None:
        if not 0.5 <= cue_validity <= 1.0:
            raise ValueError(f"cue_validity must be in [0.5, 1]; got {cue_validity}")
        if not 0.5 <= reward_prob <= 1.0:
            raise ValueError(f"reward_prob must be in [0.5, 1]; got {reward_prob}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {max_steps}")
        self.cue_validity = float(cue_validity)
        self.reward_prob = float(reward_prob)
        self.max_steps = int(max_steps)
        self.render_mode = render_mode
        self.observation_space = spaces.MultiDiscrete([4, 3, 2])
        self.action_space = spaces.Discrete(4)
        self.location = CENTRE
        self.context = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        reward_obs = NO_REWARD
        if self.location in (LEFT, RIGHT):
            correct = (self.location == LEFT) == (self.context == 0)
            paid = self.np_random.random() < self.reward_prob
            reward_obs = REWARD if correct == paid else LOSS
        if self.location == CUE:
            valid = self.np_random.random() < self.cue_validity
            cue = self.context if valid else 1 - self.context
        else:
            cue = int(self.np_random.integers(2))
        return np.array([self.location, reward_obs, cue], dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.context = int(self.np_random.integers(2))
        self.location = CENTRE
        self.steps = 0
        return self._obs(), {"context": self.context}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not self.action_space.contains(a):
            raise ValueError(f"action must be in 0..3; got {action!r}")
        self.location = a
        self.steps += 1
        obs = self._obs()
        terminated = a in (LEFT, RIGHT)
        reward = {NO_REWARD: 0.0, REWARD: 1.0, LOSS: -1.0}[int(obs[1])]
        truncated = not terminated and self.steps >= self.max_steps
        info: dict[str, Any] = {"context": self.context}
        if terminated:
            info["success"] = (a == LEFT) == (self.context == 0)
        elif truncated:
            info["success"] = False
        return obs, reward, terminated, truncated, info

    def render(self) -> str:
        names = ["centre", "left", "right", "cue"]
        return f"at {names[self.location]}, reward {'left' if self.context == 0 else 'right'}"
