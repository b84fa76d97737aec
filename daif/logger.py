"""Run logging: TensorBoard scalars, images and the hparams dashboard, and optionally the
same tags in Weights & Biases, behind one small class.

Tag conventions (see README): ``charts/episodic_return``, ``charts/episodic_length``,
``charts/sps``, ``eval/mean_return``, ``eval/std_return``, and whatever an agent's
``update`` returns (``losses/*``, ``free_energy/*``, ``efe/*``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class WandbSettings:
    """Where a run goes in Weights & Biases (``logger.project`` / ``entity`` / ``group`` /
    ``mode``)."""

    project: str = "daif"
    entity: str | None = None
    group: str | None = None
    mode: str = "online"  # online | offline


class _WandbRun:
    """The W&B side of a :class:`Logger`: the same tags, against the trainer's step.

    Every value is logged with ``global_step`` as its x-axis (``define_metric``), not as
    W&B's own step, which must only grow: a resumed run re-logs from its checkpoint's
    step. The run id is derived from the run folder, so a resume continues the same W&B
    run; its files go to ``<run dir>/wandb``.
    """

    def __init__(self, log_dir: Path, settings: WandbSettings, config: Mapping[str, Any]) -> None:
        import wandb

        run_id = hashlib.sha1(str(log_dir.resolve()).encode()).hexdigest()[:16]
        self._wandb = wandb
        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group,
            mode=settings.mode,
            dir=str(log_dir),
            name=f"{log_dir.parent.name}/{log_dir.name}",
            id=run_id,
            resume="allow",
            config=dict(config),
            settings=wandb.Settings(console="off", quiet=True),
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def log(self, values: Mapping[str, Any], step: int) -> None:
        self.run.log({**values, "global_step": step})

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.log({tag: self._wandb.Image(np.moveaxis(image, 0, -1))}, step)

    def summary(self, values: Mapping[str, float]) -> None:
        self.run.summary.update(dict(values))

    def close(self) -> None:
        self.run.finish()
        # finish() returns before W&B's service has written the run file to its end;
        # shutting the service down waits for that (a new run starts a new service)
        self._wandb.teardown()


class Logger:
    """TensorBoard writer for one run, and with ``backend="wandb"`` a Weights & Biases run
    that receives the same tags (``backend="none"`` discards everything).

    Args:
        log_dir: folder for the event files (and ``wandb/``).
        backend: ``"tensorboard"``, ``"wandb"`` (TensorBoard and W&B) or ``"none"``.
        purge_step: on resume, the step of the checkpoint: events a crashed run wrote after
            it are hidden by TensorBoard, so curves do not double back.
        flush_secs: how often the writer flushes to disk.
        wandb: the W&B project, entity, group and mode (``backend="wandb"`` only).
        config: the run's resolved config, W&B's run config.
    """

    def __init__(
        self,
        log_dir: str | Path,
        backend: str = "tensorboard",
        purge_step: int | None = None,
        flush_secs: int = 10,
        wandb: WandbSettings | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.backend = backend
        self._writer = None
        self._wandb: _WandbRun | None = None
        if backend not in ("tensorboard", "wandb", "none"):
            raise ValueError(f"logger.backend: unknown backend {backend!r}")
        if backend != "none":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                str(self.log_dir), purge_step=purge_step, flush_secs=flush_secs
            )
        if backend == "wandb":
            self._wandb = _WandbRun(self.log_dir, wandb or WandbSettings(), config or {})

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (float, numpy scalar or 0-d tensor)."""
        self.scalars({tag: value}, step)

    def scalars(self, values: Mapping[str, Any], step: int) -> dict[str, float]:
        """Log a ``{tag: value}`` dict; returns the values as floats."""
        floats = {tag: to_float(v) for tag, v in values.items()}
        if self._writer is not None:
            for tag, v in floats.items():
                self._writer.add_scalar(tag, v, global_step=step)
        if self._wandb is not None and floats:
            self._wandb.log(floats, step)
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
        if self._wandb is not None:
            self._wandb.image(tag, image, step)

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
        if self._wandb is not None:  # the run's config is already W&B's run config
            self._wandb.summary(metric_dict)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None
