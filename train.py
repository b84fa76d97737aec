"""Train an agent: ``python train.py env=cartpole [key=value ...]`` (see README)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from daif.checkpoint import CheckpointError
from daif.config import ConfigError
from daif.trainer import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one training job; returns the final eval return (the Optuna sweeper's objective)."""
    try:
        result = train(cfg)
    except (ConfigError, CheckpointError) as exc:
        # A user error: one line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(
        f"final eval return {result.final_eval_mean:.2f} ± {result.final_eval_std:.2f} "
        f"after {result.global_step} steps ({result.sps:.0f} steps/s); run dir {result.run_dir}"
    )
    return result.final_eval_mean


if __name__ == "__main__":
    main()
