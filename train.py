"""Train an agent: ``python train.py env=cartpole [key=value ...]`` (see README)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from daif.checkpoint import CheckpointError
from daif.config import ConfigError
from daif.trainer import train
from daif.utils import NonFiniteLossError

CONFIGS = str(Path(__file__).resolve().parent / "configs")  # absolute: works imported too


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one training job; returns the final eval return (the Optuna sweeper's objective)."""
    try:
        result = train(cfg)
    except (ConfigError, CheckpointError) as exc:
        # A user error: one line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError:
        sys.exit(1)  # the trainer logged what diverged, when, and where crash.pt is
    if result.trained_steps == 0:  # a finished run resumed: the trainer said why
        return result.final_eval_mean
    print(
        f"final eval return {result.final_eval_mean:.2f} ± {result.final_eval_std:.2f} "
        f"after {result.global_step} steps ({result.sps:.0f} steps/s); run dir {result.run_dir}"
    )
    return result.final_eval_mean


if __name__ == "__main__":
    main()
