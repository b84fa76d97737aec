"""Checkpoint files: atomic writes, loading, and a config-compatibility check.

A checkpoint is one ``torch.save`` file (a dict) holding everything to continue a run
bit-for-bit on the CPU: the agent's ``state_dict`` (parameters, optimiser, replay buffer —
the agent's responsibility), every global RNG state, the trainer's counters, episode
accumulators, current observations and per-episode agent state, the pickled vector env
(when it pickles), and the resolved config. Writes go to a temporary file in the same
folder that is then renamed over the target, so a kill mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = "daif-checkpoint"
# 2: the deep agent in daif.deep (a world_model module, renamed hyperparameters). Files of
# version 1 name classes and keys that no longer exist: they are refused, not half-loaded.
VERSION = 2
CHECKPOINT_SUBDIR = "checkpoints"
LAST = "last.pt"

# Config keys that must agree between a checkpoint and the run that resumes it or the
# evaluation that rebuilds it: what the agent is, what env it acts in, how many envs.
COMPATIBLE_KEYS: tuple[str, ...] = ("agent", "env", "seed", "trainer.num_envs")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, not daif's, or does not fit the config."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / CHECKPOINT_SUBDIR


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (plus format/version tags) to ``path`` atomically.

    The bytes go to a temporary file beside ``path``, are fsynced, and the file is renamed
    onto ``path`` (``os.replace`` is atomic on POSIX and Windows within one filesystem).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run dir (``<dir>/checkpoints/last.pt``, or
    ``<dir>/last.pt``).

    Raises:
        CheckpointError: when nothing is there.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in (p / CHECKPOINT_SUBDIR / LAST, p / LAST):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoint in {str(p)!r} (looked for checkpoints/{LAST})")
    raise CheckpointError(f"checkpoint not found: {str(p)!r}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (file or run dir).

    Raises:
        CheckpointError: missing file, unreadable data, or not a daif checkpoint.
    """
    file = resolve_checkpoint(path)
    try:
        # weights_only=False: the file holds numpy RNG states, a pickled env and the config.
        # Only load checkpoints you wrote yourself.
        data = torch.load(file, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt or truncated file, wrong format
        raise CheckpointError(f"cannot read checkpoint {str(file)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(file)!r} is not a daif checkpoint")
    if data.get("version") != VERSION:
        why = (
            " (written before the deep agent moved to daif.deep; retrain, or evaluate it with "
            "daif 0.1)"
            if data.get("version") == 1
            else ""
        )
        raise CheckpointError(
            f"{str(file)!r} has checkpoint version {data.get('version')}, this daif reads "
            f"version {VERSION}{why}"
        )
    data["path"] = str(file)
    return data


def _select(node: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = node
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted keys under ``prefix`` whose values differ between ``a`` and ``b``."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}")
        return out
    return [] if a == b else [prefix]


def config_mismatches(
    stored: Mapping[str, Any], current: Mapping[str, Any], keys: tuple[str, ...] = COMPATIBLE_KEYS
) -> list[str]:
    """Dotted keys among ``keys`` (recursively) whose values differ between two resolved
    configs (plain dicts)."""
    out: list[str] = []
    for key in keys:
        out += _diff(_select(stored, key), _select(current, key), key)
    return out


def check_compatible(
    stored: Mapping[str, Any], current: Mapping[str, Any], keys: tuple[str, ...] = COMPATIBLE_KEYS
) -> None:
    """Raise :class:`CheckpointError` listing the differing keys, if any."""
    bad = config_mismatches(stored, current, keys)
    if bad:
        shown = ", ".join(
            f"{k} (checkpoint {_select(stored, k)!r} vs now {_select(current, k)!r})"
            for k in bad[:5]
        )
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"checkpoint does not match the config: {shown}{more}")
