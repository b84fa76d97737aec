"""Evaluate a checkpoint: ``python evaluate.py checkpoint=<path> episodes=20 [video=true]``.

Prints ``mean ± std`` and writes a JSON summary (see ``daif.evaluation.evaluate_checkpoint``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from daif.checkpoint import CheckpointError
from daif.config import ConfigError
from daif.evaluation import evaluate_checkpoint

CONFIGS = str(Path(__file__).resolve().parent / "configs")  # absolute: works imported too


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Evaluate ``cfg.checkpoint``; a missing or mismatched checkpoint is a one-line error."""
    if not cfg.checkpoint:
        print(
            "error: give a checkpoint: python evaluate.py checkpoint=<file or run dir>",
            file=sys.stderr,
        )
        sys.exit(2)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        s = evaluate_checkpoint(
            cfg.checkpoint,
            episodes=cfg.episodes,
            seed=cfg.seed,
            deterministic=cfg.deterministic,
            video=cfg.video,
            video_dir=cfg.video_dir,
            device=cfg.device,
            output=cfg.output,
        )
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{s['env']} @ step {s['global_step']}: return {s['mean']:.2f} ± {s['std']:.2f} "
        f"over {s['episodes']} episodes (min {s['min']:.1f}, max {s['max']:.1f})"
    )
    print(f"summary: {s['output']}")
    if s["video_dir"]:
        print(f"videos: {s['video_dir']}")


if __name__ == "__main__":
    main()
