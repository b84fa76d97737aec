"""Small runtime helpers shared by the trainer and the agents.

Seeding, device choice, capture/restore of every global RNG (so that a resumed run
continues the exact random stream), the autocast context for ``trainer.amp``, gradient-norm
clipping, and the error an agent raises when a loss is not finite.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daif.validation import ConfigError

AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")


class NonFiniteLossError(FloatingPointError):
    """A loss, or the action probabilities, came out NaN or ±inf. Raised by an agent's
    ``update`` or ``act``; the trainer saves ``checkpoints/crash.pt`` before letting it
    propagate.

    Args:
        loss: what went non-finite (a TensorBoard tag such as ``losses/reconstruction``, or
            ``action probabilities``).
        step: global environment step at which it happened (``None``: the trainer fills it
            in, for errors raised where the step is not known).
        value: the offending value, if known.
    """

    def __init__(self, loss: str, step: int | None, value: float | None = None) -> None:
        self.loss = loss
        self.value = value
        self.checkpoint: Path | None = None  # crash.pt, once the trainer has written it
        self.set_step(step)

    def set_step(self, step: int | None) -> None:
        self.step = step
        shown = "" if self.value is None else f" = {self.value}"
        where = "" if step is None else f" at step {step}"
        self.args = (f"non-finite {self.loss!r}{shown}{where}",)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch's CPU (and CUDA) RNGs."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(spec: str = "auto") -> torch.device:
    """Resolve ``trainer.device``: ``auto`` → CUDA when available, else CPU.

    Raises:
        ConfigError: for a malformed spec or a device that is not there.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"trainer.device: cannot parse {spec!r} as a torch device") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={spec!r} but CUDA is not available on this machine "
                "(use trainer.device=cpu or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={spec!r} but this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device={spec!r} but MPS is not available on this machine")
    return device


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG the trainer and agents draw from (picklable)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a snapshot taken by :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global RNG streams (used around evaluation, so
    that when and how often one evaluates does not change the training trajectory)."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def check_amp(amp: str) -> str:
    """Return ``amp`` if it is one of :data:`AMP_MODES`, else raise ``ValueError``."""
    if amp not in AMP_MODES:
        raise ValueError(f"trainer.amp: unknown AMP mode {amp!r}; choose one of {AMP_MODES}")
    return amp


def amp_dtype(amp: str) -> torch.dtype | None:
    """``bf16`` → ``torch.bfloat16``, ``fp16`` → ``torch.float16``, ``off`` → ``None``."""
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[check_amp(amp)]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for ``trainer.amp`` on ``device`` (a no-op context for ``off``).

    bf16 works on CPU and CUDA. fp16 on CUDA should be paired with :func:`grad_scaler`;
    on CPU torch's fp16 autocast runs but is slow and mostly useful for testing.
    """
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 on CUDA (the one case that needs it:
    fp16's narrow exponent range underflows small gradients; bf16 has fp32's range)."""
    enabled = check_amp(amp) == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def clip_grad_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` in place by min(1, max_norm / (‖g‖₂ + 1e-6)), ‖g‖₂ the 2-norm of all of
    them as one vector; returns ‖g‖₂ (0-d).

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (bit for bit, tested), for
    gradients that share one device and dtype: it skips that function's regrouping of the
    tensors by device and dtype, half its cost on a small model's few dozen tensors.
    """
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total
