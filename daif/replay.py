"""A replay buffer of tensors, laid out by time and environment.

Storage is ``[T, N, ...]``: slot ``t`` holds the N transitions of one vectorised step,
written in a ring over T = capacity // N slots. Because consecutive slots of the same
environment are consecutive steps, short sequences (for n-step targets) are a strided
gather, with no bookkeeping of episode boundaries: the caller masks steps after a
``terminated`` or ``truncated`` flag, which are stored separately (a time limit ends the
episode but must not zero the bootstrap).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from daif.protocol import Transition

_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


class ReplayBuffer:
    """Fixed-capacity ring buffer of vectorised transitions, held on ``device``.

    Args:
        capacity: total transitions kept (rounded down to a multiple of ``num_envs``).
        num_envs: N, the number of environments per :meth:`add`.
        obs_shape: shape of one observation.
        obs_dtype: torch dtype observations are stored in (``uint8`` keeps pixel frames small).
        action_dtype: torch dtype of (discrete) actions.
        device: where the tensors live (sampling then never copies across devices).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.long,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be ≥ 1, got {num_envs}")
        if capacity < num_envs:
            raise ValueError(f"replay capacity {capacity} is smaller than num_envs={num_envs}")
        self.num_envs = num_envs
        self.slots = capacity // num_envs
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        n, t = num_envs, self.slots
        self.data: dict[str, Tensor] = {
            "obs": torch.zeros((t, n, *self.obs_shape), dtype=obs_dtype, device=self.device),
            "action": torch.zeros((t, n), dtype=action_dtype, device=self.device),
            "reward": torch.zeros((t, n), dtype=torch.float32, device=self.device),
            "next_obs": torch.zeros((t, n, *self.obs_shape), dtype=obs_dtype, device=self.device),
            "terminated": torch.zeros((t, n), dtype=torch.bool, device=self.device),
            "truncated": torch.zeros((t, n), dtype=torch.bool, device=self.device),
        }
        self.pos = 0  # next slot to write
        self.filled = 0  # slots holding data

    @property
    def capacity(self) -> int:
        """Transitions the buffer can hold."""
        return self.slots * self.num_envs

    def __len__(self) -> int:
        """Transitions currently held."""
        return self.filled * self.num_envs

    def add(self, transition: Transition) -> None:
        """Write one vectorised step (arrays with a leading ``[N]`` axis)."""
        for name in _FIELDS:
            value = np.asarray(getattr(transition, name))
            if value.shape[:1] != (self.num_envs,):
                raise ValueError(
                    f"transition.{name} has shape {value.shape}; expected leading axis "
                    f"num_envs={self.num_envs}"
                )
            dst = self.data[name]
            dst[self.pos] = torch.as_tensor(value, device=self.device).to(dst.dtype)
        self.pos = (self.pos + 1) % self.slots
        self.filled = min(self.filled + 1, self.slots)

    def sample(self, batch_size: int, seq_len: int = 1) -> dict[str, Tensor]:
        """Draw ``batch_size`` sequences of ``seq_len`` consecutive steps of one env each.

        Start slots are uniform over those whose whole sequence lies in written data
        (sequences never run across the write position, where old and new data meet).
        Uses the global torch RNG, so it is reproducible under ``torch.manual_seed``.

        Returns:
            field → ``[B, L, ...]`` tensors (``L = seq_len``). Steps after a
            ``terminated``/``truncated`` flag belong to the next episode; mask them.
        """
        if seq_len < 1:
            raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
        if self.filled < seq_len:
            raise ValueError(f"buffer holds {self.filled} steps per env, fewer than {seq_len}")
        oldest = (self.pos - self.filled) % self.slots
        starts = torch.randint(0, self.filled - seq_len + 1, (batch_size,), device=self.device)
        env = torch.randint(0, self.num_envs, (batch_size,), device=self.device)
        offsets = torch.arange(seq_len, device=self.device)
        t = (oldest + starts.unsqueeze(1) + offsets) % self.slots  # [B, L]
        e = env.unsqueeze(1).expand(-1, seq_len)
        return {name: self.data[name][t, e] for name in _FIELDS}

    def latest(self, n: int, field: str = "obs", env: int = 0) -> Tensor:
        """The newest ``min(n, filled)`` entries of ``field`` written for ``env``, oldest
        first: ``[n', *shape]``."""
        count = min(n, self.filled)
        slots = (self.pos - count + torch.arange(count, device=self.device)) % self.slots
        return self.data[field][slots, env]

    def state_dict(self) -> dict[str, Any]:
        """The written part of the buffer and the write position (for checkpoints)."""
        return {
            "pos": self.pos,
            "filled": self.filled,
            "data": {k: v[: self.filled].clone() for k, v in self.data.items()}
            if self.filled < self.slots
            else {k: v.clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same capacity and num_envs)."""
        filled = int(state["filled"])
        if filled > self.slots:
            raise ValueError(f"checkpoint holds {filled} slots; this buffer has {self.slots}")
        for k, v in state["data"].items():
            self.data[k][:filled] = v.to(self.device)
        self.pos = int(state["pos"])
        self.filled = filled
