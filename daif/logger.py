"""TensorBoard logging: scalars, images and the hparams dashboard, behind one small class.

Tag conventions (see README): ``charts/episodic_return``, ``charts/episodic_length``,
``charts/sps``, ``eval/mean_return``, ``eval/std_return``, and whatever an agent's
``update`` returns (``losses/*``, ``free_energy/*``, ``efe/*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

HPARAM_TYPES = (bool, int, float, str)


def to_float(value: Any) -> float:
    """A Python float from a float, int, numpy scalar or 0-d tensor (syncs a device tensor)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a scalar tensor, got shape {tuple(value.shape)}")
        return float(value.detach().float().cpu().item())
    return float(value)


def flatten_config(
    node: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
    """Nested mapping → ``{"a.b.c": value}`` with values TensorBoard's hparams accept
    (bool/int/float/str; lists and ``None`` become strings)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, HPARAM_TYPES):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class Logger:
    """TensorBoard writer for one run (``backend="none"`` discards everything).

    Args:
        log_dir: folder for the event files.
        backend: ``"tensorboard"`` or ``"none"``.
        purge_step: on resume, the step of the checkpoint: events a crashed run wrote after
            it are hidden by TensorBoard, so curves do not double back.
        flush_secs: how often the writer flushes to disk.
    """

    def __init__(
        self,
        log_dir: str | Path,
        backend: str = "tensorboard",
        purge_step: int | None = None,
        flush_secs: int = 10,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.backend = backend
        self._writer = None
        if backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                str(self.log_dir), purge_step=purge_step, flush_secs=flush_secs
            )
        elif backend != "none":
            raise ValueError(f"logger.backend: unknown backend {backend!r}")

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (float, numpy scalar or 0-d tensor)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, to_float(value), global_step=step)

    def scalars(self, values: Mapping[str, Any], step: int) -> dict[str, float]:
        """Log a ``{tag: value}`` dict; returns the values as floats."""
        floats = {tag: to_float(v) for tag, v in values.items()}
        if self._writer is not None:
            for tag, v in floats.items():
                self._writer.add_scalar(tag, v, global_step=step)
        return floats

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log a ``[3, H, W]`` (or ``[1, H, W]``) uint8 CHW image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"image {tag!r}: expected [C, H, W] with C in (1, 3), got {image.shape}"
            )
        if self._writer is not None:
            self._writer.add_image(tag, image, global_step=step, dataformats="CHW")

    def hparams(self, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Write the flattened config and final metrics to the hparams dashboard of this run
        (same folder as the scalars, so the run is one row). Metric tags are written as
        scalars under ``hparams/`` so the dashboard has a value to show."""
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = flatten_config(config)
        metric_dict = {
            f"hparams/{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))
        }
        exp, ssi, sei = hparams(flat, metric_dict)
        file_writer = self._writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for tag, value in metric_dict.items():
            self._writer.add_scalar(tag, value, global_step=0)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
