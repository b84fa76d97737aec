"""A replay buffer of tensors, laid out by time and environment.

Storage is ``[T, N, ...]``: slot ``t`` holds the N transitions of one vectorised step,
written in a ring over T = capacity // N slots. Because consecutive slots of the same
environment are consecutive steps, short sequences (for n-step targets) are a strided
gather, with no bookkeeping of episode boundaries: the caller masks steps after a
``terminated`` or ``truncated`` flag, which are stored separately (a time limit ends the
episode but must not zero the bootstrap).

Besides the transitions, a buffer may keep *annotations*: float columns that
:meth:`add` does not write and the owner fills in later (the deep agent caches the
epistemic terms of each transition there, see ``epistemic_estimate="cached"``).
"""

from __future__ import annotations

from collections import deque
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
        action_dtype: torch dtype of actions (long: discrete; float32: continuous).
        action_shape: shape of one action (``()`` discrete, ``(A,)`` continuous).
        device: where the tensors live (sampling then never copies across devices).
        annotations: names of extra float32 ``[T, N]`` columns, zero until :meth:`write`.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.long,
        action_shape: tuple[int, ...] = (),
        device: torch.device | str = "cpu",
        annotations: tuple[str, ...] = (),
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
            "action": torch.zeros((t, n, *action_shape), dtype=action_dtype, device=self.device),
            "reward": torch.zeros((t, n), dtype=torch.float32, device=self.device),
            "next_obs": torch.zeros((t, n, *self.obs_shape), dtype=obs_dtype, device=self.device),
            "terminated": torch.zeros((t, n), dtype=torch.bool, device=self.device),
            "truncated": torch.zeros((t, n), dtype=torch.bool, device=self.device),
        }
        for name in annotations:
            if name in self.data:
                raise ValueError(f"annotation {name!r} clashes with a transition field")
            self.data[name] = torch.zeros((t, n), dtype=torch.float32, device=self.device)
        self.annotations = tuple(annotations)
        # on the CPU, add() writes through NumPy views of the same memory: one small
        # write per field instead of a tensor conversion and an indexed copy (~6 µs each)
        self._host = (
            {name: value.numpy() for name, value in self.data.items()}
            if self.device.type == "cpu"
            else None
        )
        # where episodes ended, on the host whatever the device: terminal windows are
        # found there, without a device sync per sampled batch
        self._terminated_host = (
            self._host["terminated"] if self._host is not None else np.zeros((t, n), dtype=bool)
        )
        self.pos = 0  # next slot to write
        self.filled = 0  # slots holding data
        self.written = 0  # slots written since the buffer was made (never wraps)

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
            if self._host is not None:
                self._host[name][self.pos] = value
            else:
                dst = self.data[name]
                dst[self.pos] = torch.as_tensor(value, device=self.device).to(dst.dtype)
                if name == "terminated":
                    self._terminated_host[self.pos] = value
        for name in self.annotations:  # an overwritten slot's old note is void
            if self._host is not None:
                self._host[name][self.pos] = 0.0
            else:
                self.data[name][self.pos] = 0.0
        self.pos = (self.pos + 1) % self.slots
        self.filled = min(self.filled + 1, self.slots)
        self.written += 1

    def newest_slots(self, count: int) -> Tensor:
        """Slot indices of the newest ``min(count, filled)`` vectorised steps, oldest
        first: ``[count']``."""
        count = min(count, self.filled)
        return (self.pos - count + torch.arange(count, device=self.device)) % self.slots

    def write(self, name: str, slot: Tensor, env: Tensor, values: Tensor) -> None:
        """Set annotation ``name`` of the transitions at ``(slot, env)`` (same shapes)."""
        if name not in self.annotations:
            raise KeyError(f"{name!r} is not an annotation of this buffer {self.annotations}")
        self.data[name][slot, env] = values.detach().to(torch.float32)

    def sample(
        self, batch_size: int, seq_len: int = 1, terminal_fraction: float = 0.0
    ) -> dict[str, Tensor]:
        """Draw ``batch_size`` sequences of ``seq_len`` consecutive steps of one env each.

        Start slots are uniform over those whose whole sequence lies in written data
        (sequences never run across the write position, where old and new data meet).
        With ``terminal_fraction`` = f > 0, the first round(f·B) sequences are instead
        drawn around a stored termination: one terminated step uniformly, then a window
        of ``seq_len`` that holds it, its offset uniform (clamped at the data's ends).
        Once a policy is good, terminations are rare in replay, and the values of the
        states that lead to them are what keeps it good. Without any stored termination
        every sequence is uniform. Uses the global torch RNG, so it is reproducible under
        ``torch.manual_seed``.

        Returns:
            field → ``[B, L, ...]`` tensors (``L = seq_len``) for the transition fields
            and the annotations, and ``slot``/``env`` ``[B, L]``: where each step lives
            (to :meth:`write` back). Steps after a ``terminated``/``truncated`` flag
            belong to the next episode; mask them.
        """
        if seq_len < 1:
            raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
        if self.filled < seq_len:
            raise ValueError(f"buffer holds {self.filled} steps per env, fewer than {seq_len}")
        if not 0.0 <= terminal_fraction <= 1.0:
            raise ValueError(f"terminal_fraction must be in [0, 1], got {terminal_fraction}")
        oldest = (self.pos - self.filled) % self.slots
        starts = torch.randint(0, self.filled - seq_len + 1, (batch_size,), device=self.device)
        env = torch.randint(0, self.num_envs, (batch_size,), device=self.device)
        n_terminal = round(terminal_fraction * batch_size)
        if n_terminal > 0:
            # on the host; slots past `filled` are unwritten (a ring that has not wrapped)
            terminal = torch.from_numpy(self._terminated_host[: self.filled])
            slot, env_of = terminal.nonzero(as_tuple=True)
            if slot.numel() > 0:
                age = (slot - oldest) % self.slots  # 0 = the oldest written slot
                pick = torch.randint(0, slot.numel(), (n_terminal,))
                offset = torch.randint(0, seq_len, (n_terminal,))
                window = (age[pick] - offset).clamp(0, self.filled - seq_len)
                starts[:n_terminal] = window.to(self.device)
                env[:n_terminal] = env_of[pick].to(self.device)
        offsets = torch.arange(seq_len, device=self.device)
        t = (oldest + starts.unsqueeze(1) + offsets) % self.slots  # [B, L]
        e = env.unsqueeze(1).expand(-1, seq_len)
        batch = {name: value[t, e] for name, value in self.data.items()}
        batch["slot"], batch["env"] = t, e
        return batch

    def latest(self, n: int, field: str = "obs", env: int = 0) -> Tensor:
        """The newest ``min(n, filled)`` entries of ``field`` written for ``env``, oldest
        first: ``[n', *shape]``."""
        return self.data[field][self.newest_slots(n), env]

    def state_dict(self) -> dict[str, Any]:
        """The written part of the buffer and the write position (for checkpoints)."""
        return {
            "pos": self.pos,
            "filled": self.filled,
            "written": self.written,
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
            if k in self.data:  # annotations the saving run did not keep stay zero
                self.data[k][:filled] = v.to(self.device)
        if self._host is None:
            self._terminated_host[:filled] = state["data"]["terminated"].cpu().numpy()
        self.pos = int(state["pos"])
        self.filled = filled
        self.written = int(state.get("written", filled))


class PreferredOutcomes:
    """The outcomes (next observations) of the agent's best recent episodes.

    Each environment's current episode is collected step by step. When it ends, its
    return R joins a window of the last ``window`` returns, and the episode is
    *preferred* — its outcomes are written to a ring of ``capacity`` — when

        R ≥ quantile_{1 − top_fraction}(window)  and  R > min(window),

    the second condition so that a task in which every episode scores the same (all
    −200 on MountainCar before the first success) prefers nothing.

    Args:
        capacity: preferred outcomes kept (oldest overwritten first).
        num_envs: N, the number of environments per :meth:`add`.
        obs_shape: shape of one observation.
        top_fraction: fraction of recent episodes that count as preferred, in (0, 1].
        window: number of recent returns the quantile is taken over.
        obs_dtype, device: storage of the outcomes (as :class:`ReplayBuffer`).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        top_fraction: float,
        window: int,
        obs_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.capacity = capacity
        self.num_envs = num_envs
        self.top_fraction = top_fraction
        self.device = torch.device(device)
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=self.device)
        self.pos = 0
        self.filled = 0
        self.returns: deque[float] = deque(maxlen=window)
        self.episodes_preferred = 0
        self._steps: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self._return = np.zeros(num_envs, dtype=np.float64)

    def __len__(self) -> int:
        """Preferred outcomes currently held."""
        return self.filled

    def add(self, transition: Transition) -> None:
        """Record one vectorised step; an episode that ends is judged and maybe kept."""
        next_obs = np.asarray(transition.next_obs)
        reward = np.asarray(transition.reward, dtype=np.float64)
        done = np.asarray(transition.terminated) | np.asarray(transition.truncated)
        for i in range(self.num_envs):
            self._steps[i].append(next_obs[i].copy())  # the env may reuse its array
            self._return[i] += reward[i]
            if done[i]:
                self._end_episode(i)

    def is_preferred(self, episode_return: float) -> bool:
        """Whether an episode that just ended with this return (already in the window)
        is preferred."""
        recent = np.fromiter(self.returns, dtype=np.float64)
        threshold = np.quantile(recent, 1.0 - self.top_fraction)
        return bool(episode_return >= threshold and episode_return > recent.min())

    def _end_episode(self, env: int) -> None:
        episode_return = float(self._return[env])
        self.returns.append(episode_return)
        if self.is_preferred(episode_return):
            self._write(np.stack(self._steps[env]))
            self.episodes_preferred += 1
        self._steps[env] = []
        self._return[env] = 0.0

    def _write(self, outcomes: np.ndarray) -> None:
        outcomes = outcomes[-self.capacity :]  # an episode longer than the ring: its end
        n = outcomes.shape[0]
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        self.obs[idx] = torch.as_tensor(outcomes, device=self.device).to(self.obs.dtype)
        self.pos = (self.pos + n) % self.capacity
        self.filled = min(self.filled + n, self.capacity)

    def sample(self, batch_size: int) -> Tensor:
        """``batch_size`` preferred outcomes drawn uniformly (global torch RNG):
        ``[B, *obs_shape]``."""
        if self.filled == 0:
            raise ValueError("no preferred outcomes yet")
        idx = torch.randint(0, self.filled, (batch_size,), device=self.device)
        return self.obs[idx]

    def state_dict(self) -> dict[str, Any]:
        """Kept outcomes, ring position and recent returns; the episodes in progress are
        not saved (a resumed run starts new episodes)."""
        return {
            "obs": self.obs[: self.filled].clone(),
            "pos": self.pos,
            "filled": self.filled,
            "returns": list(self.returns),
            "episodes_preferred": self.episodes_preferred,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same capacity)."""
        filled = int(state["filled"])
        if filled > self.capacity:
            raise ValueError(
                f"checkpoint holds {filled} preferred outcomes; capacity is {self.capacity}"
            )
        self.obs[:filled] = state["obs"].to(self.device)
        self.pos, self.filled = int(state["pos"]), filled
        self.returns.clear()
        self.returns.extend(float(r) for r in state["returns"])
        self.episodes_preferred = int(state["episodes_preferred"])
        self._steps = [[] for _ in range(self.num_envs)]
        self._return[:] = 0.0
