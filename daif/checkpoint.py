"""Checkpoint files: atomic writes, safe loading, the previous file kept, a signature on the
pickled env, and a config-compatibility check.

A checkpoint is one ``torch.save`` file (a dict) holding everything to continue a run
bit-for-bit on the CPU: the agent's ``state_dict`` (parameters, optimiser, replay buffer —
the agent's responsibility), every global RNG state, the trainer's counters, episode
accumulators, current observations and per-episode agent state, the pickled vector env
(when it pickles), and the resolved config.

Safety: files are read with ``torch.load(weights_only=True)``, which rebuilds tensors, numpy
arrays and plain containers and refuses anything else, so opening a checkpoint cannot run
code. The one pickle inside, the vector env (bytes), is signed with an HMAC under a key
private to this user (:func:`signing_key`); a resume unpickles it only when the signature
holds, i.e. the file was written here, unless the caller says it trusts the file.

Writes go to a temporary file in the same folder that is then renamed over the target, so a
kill mid-write leaves the previous checkpoint intact; the file ``last.pt`` replaces is kept
as ``previous.pt``, and a ``last.pt`` that cannot be read (a full disk, half a copy) is
replaced on loading by the one before it, with a warning.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = "daif-checkpoint"
# 2: the deep agent in daif.deep (a world_model module, renamed hyperparameters). Files of
# version 1 name classes and keys that no longer exist: they are refused, not half-loaded.
VERSION = 2
CHECKPOINT_SUBDIR = "checkpoints"
LAST = "last.pt"
PREVIOUS = "previous.pt"  # the last.pt before the newest
EXPORT = "export"  # `kind` of an exported agent (daif.api.Learner.save): nothing to resume
# What weights_only loading may rebuild besides tensors and plain containers: numpy arrays
# of plain dtypes (RNG states, observations); object arrays still need refused globals.
_PLAIN_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
SAFE_GLOBALS: list[Any] = [
    np._core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    *(type(np.dtype(t)) for t in (*_PLAIN_DTYPES, "float16", "float32", "float64")),
]
KEY_ENV = "DAIF_CHECKPOINT_KEY"  # path of the signing key (default ~/.config/daif/...)

# Config keys that must agree between a checkpoint and the run that resumes it or the
# evaluation that rebuilds it: what the agent is, what env it acts in, how many envs.
COMPATIBLE_KEYS: tuple[str, ...] = ("agent", "env", "seed", "trainer.num_envs")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, not daif's, or does not fit the config."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / CHECKPOINT_SUBDIR


def signing_key() -> bytes:
    """This user's key for signing pickles in checkpoints: the file named by
    ``$DAIF_CHECKPOINT_KEY``, else ``~/.config/daif/checkpoint.key``; made (mode 0600) on
    first use."""
    path = Path(os.environ.get(KEY_ENV) or Path.home() / ".config" / "daif" / "checkpoint.key")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def sign(blob: bytes) -> str:
    """HMAC-SHA256 of ``blob`` under :func:`signing_key` (hex)."""
    return hmac.new(signing_key(), blob, hashlib.sha256).hexdigest()


def signed_here(blob: bytes, signature: str | None) -> bool:
    """True if ``signature`` is this user's signature of ``blob``."""
    return signature is not None and hmac.compare_digest(sign(blob), str(signature))


def save_checkpoint(
    path: str | Path, payload: Mapping[str, Any], *, keep_previous: bool = False
) -> Path:
    """Write ``payload`` (plus format/version tags) to ``path`` atomically.

    The bytes go to a temporary file beside ``path``, are fsynced, and the file is renamed
    onto ``path`` (``os.replace`` is atomic on POSIX and Windows within one filesystem).
    With ``keep_previous`` the file it replaces becomes ``previous.pt``.
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
        if keep_previous and path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run dir (``<dir>/checkpoints/last.pt``, or
    ``<dir>/last.pt``, or ``previous.pt`` beside them when a kill left no ``last.pt``).

    Raises:
        CheckpointError: when nothing is there.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for folder in (p / CHECKPOINT_SUBDIR, p):
            for name in (LAST, PREVIOUS):
                if (folder / name).is_file():
                    return folder / name
        raise CheckpointError(f"no checkpoint in {str(p)!r} (looked for checkpoints/{LAST})")
    raise CheckpointError(f"checkpoint not found: {str(p)!r}")


def _read(file: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            data = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "Unsupported global" in text or "allowlisted" in text:  # torch's refusal
            raise CheckpointError(
                f"refused {str(file)!r}: it holds objects other than weights and plain data, "
                "and loading them could run code"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {str(file)!r}: {text[:200]}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(file)!r} is not a daif checkpoint")
    return data


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (file or run dir), safely
    (``weights_only``). An unreadable ``last.pt`` falls back to ``previous.pt`` beside it.

    Raises:
        CheckpointError: missing file, unreadable data, objects that are not plain data,
            or not a daif checkpoint (of this version).
    """
    file = resolve_checkpoint(path)
    if file.name == PREVIOUS and Path(path).is_dir():
        log.warning("%s has no %s; using %s", file.parent, LAST, file)
    try:
        data = _read(file, map_location)
    except CheckpointError as exc:
        previous = file.with_name(PREVIOUS)
        if file.name != LAST or not previous.is_file() or "refused" in str(exc):
            raise
        log.warning("%s; using %s, the checkpoint before it", exc, previous)
        file, data = previous, _read(previous, map_location)
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
