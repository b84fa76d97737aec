"""Sample efficiency of daif against Stable-Baselines3 PPO and DQN, under one protocol.

Every run — daif seed, ablation seed or baseline seed — is trained for ``--steps``
environment steps and evaluated every 2,500 steps with 10 deterministic episodes on a
separate evaluation environment. From each run's evaluation history we report:

* steps to target — the first evaluation step whose mean return is ≥ ``--target``;
* time to target — training seconds up to that evaluation, time spent evaluating
  excluded (daif and baselines alike), as wall-clock time and as the process's CPU time.
  The machine is shared and every run uses one thread, so CPU time is the fairer
  comparison between runs that overlapped with different loads;
* final eval — mean ± std of the last evaluation;
* 2nd-half evals ≥ target — of the evaluations in the run's second half, how many
  reached the target (pooled over seeds in the summary): whether a run holds it;
* wall time and env steps/s of the whole run.

A summary row per algorithm gives medians over seeds, counting a seed that never
reached the target as +∞ (so a median is only finite when more than half the seeds
solved the task), and the ratio baseline / daif of the medians (> 1: daif is better).

Baselines use the RL Baselines3 Zoo hyperparameters (``ZOO_HYPERPARAMS`` below) with the
zoo's schedule length (``n_timesteps``), stopped early at ``--steps``, so each baseline
follows exactly the zoo's learning-rate / exploration schedule up to the budget.

Usage::

    python benchmarks/sample_efficiency.py --env cartpole --seeds 5 --steps 50000 \\
        --target 475 --baselines ppo,dqn --workers 2 [hydra overrides for daif ...]
    python benchmarks/sample_efficiency.py --env mountaincar --baselines none \\
        --ablate agent.info_gain_weight=0

Runs execute in parallel worker processes (one torch thread each). The markdown table
is written to ``benchmarks/results/<env>.md`` (``--out`` to change) and every run's
evaluation history, each evaluation's episode returns and lengths included, to the
``.json`` beside it; ``--load FILE.json`` adds the runs of an
earlier invocation to the table (e.g. baselines run once, daif rerun after tuning).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import shlex
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
# daif (and curves.py) import from a bare checkout too: spawned workers re-import this
# module first
for _path in (REPO, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
CONFIG_DIR = REPO / "configs"
RESULTS_DIR = BENCH_DIR / "results"

EVAL_INTERVAL = 2500
EVAL_EPISODES = 10

# preset → (Gymnasium id, default target, default budget). The id is only used by the
# baselines; daif reads it from the preset.
ENV_DEFAULTS: dict[str, tuple[str, float, int]] = {
    "cartpole": ("CartPole-v1", 475.0, 50_000),
    "acrobot": ("Acrobot-v1", -100.0, 100_000),
    "mountaincar": ("MountainCar-v0", -130.0, 100_000),
    "lunarlander": ("LunarLander-v3", 200.0, 200_000),
    "cartpole_pixels": ("daif/CartPolePixels-v0", 475.0, 100_000),
    "cartpole_masked": ("daif/CartPoleMasked-v0", 475.0, 50_000),
    "pendulum": ("Pendulum-v1", -200.0, 15_000),
    "mountaincar_continuous": ("MountainCarContinuous-v0", 90.0, 50_000),
    "lunarlander_continuous": ("LunarLanderContinuous-v3", 200.0, 300_000),
}

# The zoo gives DQN the same settings on Acrobot-v1 and LunarLander-v3 (build_sb3 copies an
# entry before changing it, so both may share one dict).
_ZOO_DQN_ACROBOT_LUNARLANDER: dict[str, Any] = {
    "n_timesteps": 100_000,
    "learning_rate": 6.3e-4,
    "batch_size": 128,
    "buffer_size": 50_000,
    "learning_starts": 0,
    "gamma": 0.99,
    "target_update_interval": 250,
    "train_freq": 4,
    "gradient_steps": -1,
    "exploration_fraction": 0.12,
    "exploration_final_eps": 0.1,
    "policy_kwargs": {"net_arch": [256, 256]},
}


# Hyperparameters of the RL Baselines3 Zoo (github.com/DLR-RM/rl-baselines3-zoo,
# hyperparams/{ppo,dqn,sac,td3}.yml), transcribed; keys the zoo leaves out are SB3's
# defaults. "lin_x" is the zoo's linear
# schedule x·(1 − progress); "normalize" wraps the env in VecNormalize (observations and
# rewards), as the zoo does; "n_timesteps" is the zoo's training length, which sets
# the length of every schedule.
ZOO_HYPERPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    # sb3-contrib's RecurrentPPO (the zoo's ppo_lstm.yml); daif/CartPoleMasked-v0 is the
    # zoo's CartPoleNoVel-v1 (the same [x, θ] observation and bounds)
    "recurrent_ppo": {
        "daif/CartPoleMasked-v0": {
            "n_envs": 8,
            "n_timesteps": 100_000,
            "normalize": {"norm_obs": True, "norm_reward": False},
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": "lin_0.001",
            "clip_range": "lin_0.2",
            "policy_kwargs": {
                "ortho_init": False,
                "activation_fn": "ReLU",
                "lstm_hidden_size": 64,
                "enable_critic_lstm": True,
                "net_arch": {"pi": [64], "vf": [64]},
            },
        },
    },
    "sac": {
        "Pendulum-v1": {"n_timesteps": 20_000, "learning_rate": 1e-3},
        "MountainCarContinuous-v0": {
            "n_timesteps": 50_000,
            "learning_rate": 3e-4,
            "buffer_size": 50_000,
            "batch_size": 512,
            "ent_coef": 0.1,
            "train_freq": 32,
            "gradient_steps": 32,
            "gamma": 0.9999,
            "tau": 0.01,
            "learning_starts": 0,
            "use_sde": True,
            "policy_kwargs": {"log_std_init": -3.67, "net_arch": [64, 64]},
        },
        "LunarLanderContinuous-v3": {
            "n_timesteps": 500_000,
            "batch_size": 256,
            "learning_rate": "lin_0.00073",
            "buffer_size": 1_000_000,
            "ent_coef": "auto",
            "gamma": 0.99,
            "tau": 0.01,
            "train_freq": 1,
            "gradient_steps": 1,
            "learning_starts": 10_000,
            "policy_kwargs": {"net_arch": [400, 300]},
        },
    },
    "td3": {
        "Pendulum-v1": {
            "n_timesteps": 20_000,
            "gamma": 0.98,
            "buffer_size": 200_000,
            "learning_starts": 10_000,
            "noise_type": "normal",
            "noise_std": 0.1,
            "gradient_steps": -1,
            "train_freq": (1, "episode"),
            "learning_rate": 1e-3,
            "policy_kwargs": {"net_arch": [400, 300]},
        },
        "MountainCarContinuous-v0": {
            "n_timesteps": 300_000,
            "noise_type": "ornstein-uhlenbeck",
            "noise_std": 0.5,
        },
        "LunarLanderContinuous-v3": {
            "n_timesteps": 300_000,
            "gamma": 0.98,
            "buffer_size": 200_000,
            "learning_starts": 10_000,
            "noise_type": "normal",
            "noise_std": 0.1,
            "gradient_steps": 1,
            "train_freq": 1,
            "learning_rate": 1e-3,
            "policy_kwargs": {"net_arch": [400, 300]},
        },
    },
    "ppo": {
        "CartPole-v1": {
            "n_envs": 8,
            "n_timesteps": 100_000,
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": "lin_0.001",
            "clip_range": "lin_0.2",
        },
        "Acrobot-v1": {
            "normalize": True,
            "n_envs": 16,
            "n_timesteps": 1_000_000,
            "n_steps": 256,
            "gae_lambda": 0.94,
            "gamma": 0.99,
            "n_epochs": 4,
            "ent_coef": 0.0,
        },
        "MountainCar-v0": {
            "normalize": True,
            "n_envs": 16,
            "n_timesteps": 1_000_000,
            "n_steps": 16,
            "gae_lambda": 0.98,
            "gamma": 0.99,
            "n_epochs": 4,
            "ent_coef": 0.0,
        },
        "LunarLander-v3": {
            "n_envs": 16,
            "n_timesteps": 1_000_000,
            "n_steps": 1024,
            "batch_size": 64,
            "gae_lambda": 0.98,
            "gamma": 0.999,
            "n_epochs": 4,
            "ent_coef": 0.01,
        },
    },
    "dqn": {
        "CartPole-v1": {
            "n_timesteps": 50_000,
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
        "Acrobot-v1": _ZOO_DQN_ACROBOT_LUNARLANDER,
        "MountainCar-v0": {
            "n_timesteps": 120_000,
            "learning_rate": 4e-3,
            "batch_size": 128,
            "buffer_size": 10_000,
            "learning_starts": 1000,
            "gamma": 0.98,
            "target_update_interval": 600,
            "train_freq": 16,
            "gradient_steps": 8,
            "exploration_fraction": 0.2,
            "exploration_final_eps": 0.07,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
        "LunarLander-v3": _ZOO_DQN_ACROBOT_LUNARLANDER,
    },
}


# ---------------------------------------------------------------------------
# Results and their summaries (pure functions, unit-tested)
# ---------------------------------------------------------------------------
@dataclass
class RunResult:
    """One training run.

    ``evals`` holds ``(step, mean, std, train_wall_s, train_cpu_s)`` per evaluation:
    the wall-clock and CPU seconds spent training (not evaluating) up to it. ``episodes``
    holds, per evaluation, its episodes' returns and lengths in frames (empty in files
    written before it was kept): whether a low mean is crashes or time-outs.
    """

    algo: str
    seed: int
    evals: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    wall_time: float = math.nan
    cpu_time: float = math.nan
    steps: int = 0
    error: str | None = None
    episodes: list[tuple[list[float], list[int]]] = field(default_factory=list)

    @property
    def final(self) -> tuple[float, float]:
        """(mean, std) of the last evaluation, NaN if there was none."""
        return (self.evals[-1][1], self.evals[-1][2]) if self.evals else (math.nan, math.nan)

    @property
    def sps(self) -> float:
        """Environment steps per second of wall time over the whole run."""
        return self.steps / self.wall_time if self.wall_time > 0 else math.nan


def steps_to_target(evals: Sequence[Sequence[float]], target: float) -> int | None:
    """Step of the first evaluation whose mean return is ≥ ``target`` (None if never).

    Args:
        evals: ``(step, mean, ...)`` tuples in training order.
    """
    for entry in evals:
        if entry[1] >= target:
            return int(entry[0])
    return None


def time_to_target(
    evals: Sequence[Sequence[float]], target: float, cpu: bool = False
) -> float | None:
    """Training seconds at the first evaluation with mean ≥ ``target`` (None if never).

    Args:
        evals: ``(step, mean, std, train_wall_s, train_cpu_s)`` tuples in training order.
        cpu: take the CPU seconds (5th field) instead of the wall-clock ones (4th).
    """
    for entry in evals:
        if entry[1] >= target:
            return float(entry[4] if cpu else entry[3])
    return None


def late_evals_at_target(evals: Sequence[Sequence[float]], target: float) -> tuple[int, int]:
    """``(k, n)``: of the n evaluations in the second half of a run (step ≥ half the last
    evaluation's step), k have mean ≥ ``target``. One final evaluation can be a lucky or
    an unlucky draw; this says whether a run *holds* the target.

    Args:
        evals: ``(step, mean, ...)`` tuples in training order.
    """
    if not evals:
        return 0, 0
    late = [e for e in evals if 2 * e[0] >= evals[-1][0]]
    return sum(e[1] >= target for e in late), len(late)


def median_with_failures(values: Sequence[float | None]) -> float:
    """Median where ``None`` (target never reached) counts as +∞.

    The result is finite only if more than half of the values are; NaN for no values.
    """
    if not values:
        return math.nan
    return float(statistics.median(math.inf if v is None else v for v in values))


def ratio(baseline: float, daif: float) -> float:
    """``baseline / daif`` with ∞/finite = ∞, finite/∞ = 0 and ∞/∞ (or any NaN) = NaN."""
    if math.isnan(baseline) or math.isnan(daif) or (math.isinf(baseline) and math.isinf(daif)):
        return math.nan
    if math.isinf(daif):
        return 0.0
    if daif == 0:
        return math.inf
    return baseline / daif


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "not reached"
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return f"{x:,.{digits}f}"


def summarise(results: Sequence[RunResult], target: float) -> list[dict[str, Any]]:
    """One summary dict per algorithm (in first-seen order), medians over its seeds."""
    by_algo: dict[str, list[RunResult]] = {}
    for r in results:
        by_algo.setdefault(r.algo, []).append(r)
    rows = []
    for algo, runs in by_algo.items():
        ok = [r for r in runs if r.error is None]
        steps = [steps_to_target(r.evals, target) for r in ok]
        times = [time_to_target(r.evals, target) for r in ok]
        cpu_times = [time_to_target(r.evals, target, cpu=True) for r in ok]
        finals = [r.final[0] for r in ok]
        late = [late_evals_at_target(r.evals, target) for r in ok]
        rows.append(
            {
                "algo": algo,
                "seeds": len(runs),
                "errors": len(runs) - len(ok),
                "solved": sum(s is not None for s in steps),
                "median_steps": median_with_failures(steps) if ok else math.nan,
                "median_time": median_with_failures(times) if ok else math.nan,
                "median_cpu_time": median_with_failures(cpu_times) if ok else math.nan,
                "median_final": statistics.median(finals) if finals else math.nan,
                "final_at_target": sum(f >= target for f in finals),
                "late_at_target": (sum(k for k, _ in late), sum(n for _, n in late)),
                "median_wall": statistics.median(r.wall_time for r in ok) if ok else math.nan,
                "median_sps": statistics.median(r.sps for r in ok) if ok else math.nan,
            }
        )
    return rows


def markdown_tables(results: Sequence[RunResult], target: float) -> str:
    """Per-run table, then the per-algorithm summary with ratios against ``daif``."""
    lines = [
        "| algo | seed | steps to target | time to target (s, wall / CPU) | final eval "
        "| 2nd-half evals ≥ target | wall time (s) | env steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r.algo, r.seed)):
        if r.error is not None:
            lines.append(f"| {r.algo} | {r.seed} | error: {r.error.splitlines()[-1][:80]} ||||||")
            continue
        mean, std = r.final
        k, n = late_evals_at_target(r.evals, target)
        lines.append(
            f"| {r.algo} | {r.seed} | {_fmt(steps_to_target(r.evals, target))} "
            f"| {_fmt(time_to_target(r.evals, target), 1)} / "
            f"{_fmt(time_to_target(r.evals, target, cpu=True), 1)} | {mean:.1f} ± {std:.1f} "
            f"| {k}/{n} | {r.wall_time:.0f} | {r.sps:.0f} |"
        )
    rows = summarise(results, target)
    ref = next((row for row in rows if row["algo"] == "daif"), None)
    lines += [
        "",
        "| algo (median over seeds) | solved | steps to target "
        "| time to target (s, wall / CPU) | final eval | final ≥ target "
        "| 2nd-half evals ≥ target | wall time (s) | env steps/s "
        "| ratio vs daif: steps | wall time | CPU time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if ref is None or row is ref:
            rs = rt = rc = "–"
        else:
            rs = _fmt(ratio(row["median_steps"], ref["median_steps"]), 2)
            rt = _fmt(ratio(row["median_time"], ref["median_time"]), 2)
            rc = _fmt(ratio(row["median_cpu_time"], ref["median_cpu_time"]), 2)
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        lines.append(
            f"| **{row['algo']}** | {row['solved']}/{row['seeds']}{errors} "
            f"| {_fmt(row['median_steps'])} | {_fmt(row['median_time'], 1)} / "
            f"{_fmt(row['median_cpu_time'], 1)} | {_fmt(row['median_final'], 1)} "
            f"| {row['final_at_target']}/{row['seeds']} "
            f"| {row['late_at_target'][0]}/{row['late_at_target'][1]} | {_fmt(row['median_wall'])} "
            f"| {_fmt(row['median_sps'])} | {rs} | {rt} | {rc} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Workers (run in child processes)
# ---------------------------------------------------------------------------
class TrainClock:
    """Wall-clock and CPU seconds of a run, with evaluation periods taken out."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.eval_wall = self.eval_cpu = 0.0

    def total(self) -> tuple[float, float]:
        """(wall, CPU) seconds since :meth:`start`, evaluations included."""
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0

    def training(self) -> tuple[float, float]:
        """(wall, CPU) seconds since :meth:`start`, evaluations excluded."""
        wall, cpu = self.total()
        return wall - self.eval_wall, cpu - self.eval_cpu

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time spent inside this block is not training time."""
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.eval_wall += time.perf_counter() - w0
            self.eval_cpu += time.process_time() - c0


def report_eval(label: str, seed: int, entry: Sequence[float]) -> None:
    """One progress line per evaluation, so a long run can be watched (and stopped early)."""
    step, mean, std, wall, _ = entry
    print(
        f"[{label} seed {seed}] {int(step):,} steps: eval {mean:.1f} ± {std:.1f}, "
        f"{wall:.0f} s training",
        flush=True,
    )


def _worker_setup() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def preset_trainer_overrides(preset: str) -> list[str]:
    """``trainer.<key>=<value>`` for every trainer key the env preset file sets.

    Restating them as command-line overrides makes the preset's budgets (``num_envs``
    above all) win whatever the order of the defaults list in ``configs/train.yaml``
    (a ``trainer`` group merged after ``env`` would otherwise silently replace them).
    """
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").get("trainer") or {}
    return [f"trainer.{key}={value}" for key, value in node.items()]


def run_daif(
    label: str,
    preset: str,
    seed: int,
    steps: int,
    overrides: Sequence[str],
    stop_at: float | None = None,
    eval_interval: int = EVAL_INTERVAL,
) -> RunResult:
    """Train daif on an env preset (``hydra.compose`` + ``daif.trainer.Trainer``).

    The trainer's ``evaluate`` is wrapped with a timer so that each evaluation records
    the training seconds before it, evaluation time excluded (as for the baselines).
    With ``stop_at`` the run ends at its first evaluation whose mean is ≥ ``stop_at``.
    """
    _worker_setup()
    out = RunResult(algo=label, seed=seed)
    try:
        from hydra import compose, initialize_config_dir

        from daif.trainer import Trainer

        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
        run_overrides = [
            f"env={preset}",
            *preset_trainer_overrides(preset),
            f"seed={seed}",
            f"trainer.total_steps={steps}",
            f"trainer.eval_interval={eval_interval}",
            f"trainer.eval_episodes={EVAL_EPISODES}",
            "trainer.progress=false",
            "trainer.checkpoint_interval=0",
            f"trainer.run_dir={REPO / 'runs' / 'bench' / preset / slug / f'seed{seed}'}",
            "trainer.overwrite=true",  # a benchmark re-measures: its folder is its own
            "logger=none",
            *overrides,
        ]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name="train", overrides=run_overrides)
        trainer = Trainer(cfg)
        evaluate = trainer.evaluate
        clock = TrainClock()

        def timed_evaluate() -> tuple[float, float]:
            wall, cpu = clock.training()
            with clock.evaluating():
                mean, std = evaluate()
            returns, lengths = trainer.last_eval_episodes
            out.episodes.append((returns.tolist(), lengths.tolist()))
            out.evals.append((trainer.global_step, float(mean), float(std), wall, cpu))
            report_eval(label, seed, out.evals[-1])
            if stop_at is not None and mean >= stop_at:
                trainer.t.total_steps = trainer.global_step  # the loop ends after this step
            return mean, std

        trainer.evaluate = timed_evaluate  # type: ignore[method-assign]
        clock.start()
        result = trainer.run()
        out.wall_time, out.cpu_time = clock.total()
        out.steps = int(result.global_step)
    except Exception:
        out.error = traceback.format_exc()
    return out


def _zoo_schedule(value: Any, scale: float) -> Any:
    """The zoo's ``lin_x`` as an SB3 schedule that runs over the zoo's length.

    SB3 passes progress_remaining p = 1 − t / T_learn. With ``scale`` = T_learn / T_zoo
    the zoo's own progress is 1 − t / T_zoo = 1 − (1 − p)·scale, and the zoo's linear
    schedule is x·max(0, 1 − (1 − p)·scale). Other values pass through unchanged.
    """
    if isinstance(value, str) and value.startswith("lin_"):
        initial = float(value[4:])

        def schedule(progress_remaining: float) -> float:
            return initial * max(0.0, 1.0 - (1.0 - progress_remaining) * scale)

        return schedule
    return value


def build_sb3(algo: str, env_id: str, seed: int, steps: int) -> tuple[Any, Any, Any, bool, int]:
    """The SB3 model of ``algo`` on ``env_id`` with the zoo's hyperparameters, its training
    and evaluation envs, whether they are VecNormalize-wrapped, and the steps ``learn`` runs
    (at least the zoo's length, whose schedules are rescaled to run over ``steps``)."""
    from stable_baselines3 import DQN, PPO, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import daif.envs  # noqa: F401  (registers daif/ ids for the baselines' gym.make)

    if env_id not in ZOO_HYPERPARAMS[algo]:
        raise ValueError(f"no RL Zoo hyperparameters for {algo} on {env_id}")
    hp = dict(ZOO_HYPERPARAMS[algo][env_id])
    if isinstance(hp.get("policy_kwargs", {}).get("activation_fn"), str):
        import torch

        kwargs = dict(hp["policy_kwargs"])
        kwargs["activation_fn"] = getattr(torch.nn, kwargs["activation_fn"])
        hp["policy_kwargs"] = kwargs
    n_envs = hp.pop("n_envs", 1)
    zoo_steps = hp.pop("n_timesteps")
    normalize = hp.pop("normalize", False)
    learn_steps = max(zoo_steps, steps)
    scale = learn_steps / zoo_steps
    for key in ("learning_rate", "clip_range"):
        if key in hp:
            hp[key] = _zoo_schedule(hp[key], scale)
    if algo == "dqn" and scale != 1.0:
        hp["exploration_fraction"] /= scale  # keep the zoo's exploration length in steps
    if "noise_type" in hp:
        import gymnasium as gym
        import numpy as np
        from stable_baselines3.common.noise import (
            NormalActionNoise,
            OrnsteinUhlenbeckActionNoise,
        )

        dims = gym.make(env_id).action_space.shape[0]
        noise = {
            "normal": NormalActionNoise,
            "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise,
        }
        cls_noise = noise[hp.pop("noise_type")]
        std = hp.pop("noise_std")
        hp["action_noise"] = cls_noise(np.zeros(dims), std * np.ones(dims))

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if normalize:
        norm = normalize if isinstance(normalize, dict) else {}
        env = VecNormalize(env, gamma=hp["gamma"], **norm)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", env, seed=seed, device="cpu", verbose=0, **hp)
    else:
        cls = {"ppo": PPO, "dqn": DQN, "sac": SAC, "td3": TD3}[algo]
        model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hp)
    return model, env, eval_env, bool(normalize), learn_steps


def run_sb3(
    algo: str,
    env_id: str,
    seed: int,
    steps: int,
    stop_at: float | None = None,
    eval_interval: int = EVAL_INTERVAL,
) -> RunResult:
    """Train SB3 ``ppo``, ``dqn``, ``sac`` or ``td3`` (or sb3-contrib's ``recurrent_ppo``)
    with the zoo's hyperparameters, same eval protocol (``stop_at`` as in :func:`run_daif`)."""
    _worker_setup()
    out = RunResult(algo=algo, seed=seed)
    try:
        import numpy as np
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.vec_env import sync_envs_normalization

        model, env, eval_env, normalize, learn_steps = build_sb3(algo, env_id, seed, steps)

        class EvalEvery(BaseCallback):
            """Evaluate every ``eval_interval`` steps; stop at the budget; time only training."""

            def __init__(self) -> None:
                super().__init__()
                self.next_eval = eval_interval

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next_eval:
                    wall, cpu = clock.training()
                    with clock.evaluating():
                        if normalize:
                            sync_envs_normalization(env, eval_env)
                        returns, lengths = evaluate_policy(
                            self.model,
                            eval_env,
                            n_eval_episodes=EVAL_EPISODES,
                            deterministic=True,
                            return_episode_rewards=True,
                        )
                    mean, std = np.mean(returns), np.std(returns)  # as evaluate_policy's own
                    out.episodes.append(([float(r) for r in returns], [int(n) for n in lengths]))
                    out.evals.append((self.num_timesteps, float(mean), float(std), wall, cpu))
                    report_eval(algo, seed, out.evals[-1])
                    while self.next_eval <= self.num_timesteps:
                        self.next_eval += eval_interval
                    if stop_at is not None and mean >= stop_at:
                        return False
                return self.num_timesteps < steps

        clock = TrainClock()
        model.learn(total_timesteps=learn_steps, callback=EvalEvery())
        out.wall_time, out.cpu_time = clock.total()
        out.steps = int(model.num_timesteps)
    except Exception:
        out.error = traceback.format_exc()
    return out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _sb3_available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="cartpole", help=f"env preset: {', '.join(ENV_DEFAULTS)}")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (S..S+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="S, the first seed")
    p.add_argument("--steps", type=int, default=None, help="env steps per run")
    p.add_argument("--target", type=float, default=None, help="eval mean return to reach")
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of ppo,dqn,sac,td3,recurrent_ppo or 'none' (default: the zoo's for "
        "the env, if stable-baselines3 is installed)",
    )
    p.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="OVERRIDES",
        help="extra daif variant with these space-separated Hydra overrides (repeatable)",
    )
    p.add_argument(
        "--no-daif",
        action="store_true",
        help="skip the plain daif runs (its --ablate variants and the baselines still run)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write")
    p.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        help="add the runs saved in this .json by an earlier invocation (repeatable)",
    )
    p.add_argument(
        "--load-only",
        default=None,
        metavar="ALGOS",
        help="comma list: keep only these algorithms from the --load files",
    )
    p.add_argument(
        "--stop-at-target",
        action="store_true",
        help="end each run at its first evaluation >= target (final eval = that evaluation)",
    )
    p.add_argument(
        "--eval-interval",
        type=int,
        default=EVAL_INTERVAL,
        help=f"env steps between evaluations (default {EVAL_INTERVAL}, the protocol's)",
    )
    p.add_argument("--nice", type=int, default=0, help="niceness of the worker processes")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every daif run")
    args = p.parse_args(argv)
    if args.env not in ENV_DEFAULTS:
        p.error(f"unknown --env {args.env!r}; choose from {', '.join(ENV_DEFAULTS)}")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    env_id, target, steps = ENV_DEFAULTS[args.env]
    args.env_id = env_id
    args.target = target if args.target is None else args.target
    args.steps = steps if args.steps is None else args.steps
    if args.eval_interval < 1:
        p.error(f"--eval-interval must be >= 1, got {args.eval_interval}")
    if args.steps < args.eval_interval:
        p.error(f"--steps must be >= the eval interval {args.eval_interval}, got {args.steps}")
    if args.baselines is None:
        args.baselines = (
            [a for a, hp in ZOO_HYPERPARAMS.items() if env_id in hp] if _sb3_available() else []
        )
    elif args.baselines.strip().lower() in ("", "none"):
        args.baselines = []
    else:
        args.baselines = [b.strip().lower() for b in args.baselines.split(",") if b.strip()]
        bad = [b for b in args.baselines if b not in ZOO_HYPERPARAMS]
        if bad:
            p.error(f"unknown baseline(s) {bad}; choose from {sorted(ZOO_HYPERPARAMS)}")
        missing = [b for b in args.baselines if env_id not in ZOO_HYPERPARAMS[b]]
        if missing:
            have = [a for a, hp in ZOO_HYPERPARAMS.items() if env_id in hp]
            p.error(
                f"no RL Zoo hyperparameters for {missing} on {env_id}; "
                f"baselines for it: {', '.join(have) or 'none'}"
            )
        if not _sb3_available():
            p.error("baselines need stable-baselines3: pip install -e '.[bench]'")
    return args


def build_jobs(args: argparse.Namespace) -> list[tuple[Callable[..., RunResult], tuple]]:
    """(function, arguments) per run: daif, its ablations, then the baselines."""
    jobs: list[tuple[Callable[..., RunResult], tuple]] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    stop_at = args.target if getattr(args, "stop_at_target", False) else None
    every = args.eval_interval
    variants = [] if args.no_daif else [("daif", list(args.overrides))]
    variants += [(f"daif [{a}]", [*args.overrides, *a.split()]) for a in args.ablate]
    for label, overrides in variants:
        jobs += [
            (run_daif, (label, args.env, s, args.steps, overrides, stop_at, every)) for s in seeds
        ]
    for algo in args.baselines:  # parse_args checked that the zoo has settings for each
        jobs += [(run_sb3, (algo, args.env_id, s, args.steps, stop_at, every)) for s in seeds]
    return jobs


def save_runs(path: Path, results: Sequence[RunResult], meta: dict[str, Any]) -> None:
    """Write runs (and how they were made) as JSON, for ``--load``."""
    payload = {"meta": meta, "runs": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def load_runs(path: Path) -> tuple[list[RunResult], dict[str, Any]]:
    """Runs and metadata written by :func:`save_runs`.

    Raises:
        ValueError: naming ``path``, if it cannot be read or is not such a file.
    """
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        runs = []
        for d in payload["runs"]:
            d["evals"] = [tuple(e) for e in d["evals"]]
            d["episodes"] = [tuple(e) for e in d.get("episodes", [])]
            runs.append(RunResult(**d))
        return runs, dict(payload.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"--load {path}: not a run file written by this benchmark ({type(e).__name__}: {e})"
        ) from None


def _worker_init(nice: int) -> None:
    """Set up a worker: lower its priority by ``nice``, and end it when the parent ends.

    A ``kill`` of the benchmark reaches only the parent; without the watch its workers ran
    on to the end of their runs, holding the cores and their run dirs' locks."""
    if nice:
        os.nice(nice)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def end_with_parent() -> None:
        multiprocessing.connection.wait([parent.sentinel])  # ready once the parent is gone
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=end_with_parent, name="parent-watch", daemon=True).start()


def _run_jobs(jobs: list[tuple[Callable[..., Any], tuple]], args: argparse.Namespace):
    """Run the jobs in ``args.workers`` spawned processes; yield results as they finish."""
    # one thread per run, BLAS included (children inherit the environment)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    with ProcessPoolExecutor(
        max_workers=args.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(args.nice,),
    ) as pool:
        futures = [pool.submit(fn, *fargs) for fn, fargs in jobs]
        for fut in as_completed(futures):
            yield fut.result()


def _cpu() -> str:
    """The CPU's model and the kernels torch picks on it, so that a table says which
    machine's float arithmetic produced its numbers (a seed repeats them on one machine)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{model}, torch CPU kernels {torch.backends.cpu.get_cpu_capability()}"


def _versions() -> str:
    """Installed versions of daif's and the baselines' libraries, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "gymnasium", "stable-baselines3", "sb3-contrib"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def write_report(
    out: Path,
    args: argparse.Namespace,
    meta: dict[str, Any],
    results: Sequence[RunResult],
    loaded: Sequence[tuple[Path, list[RunResult], dict[str, Any]]],
    elapsed: float,
    pending: int,
) -> str:
    """Write ``out`` (markdown) and its ``.json``, both holding this invocation's and the
    loaded runs, so a merged report can be re-rendered or loaded again from its own
    ``.json``; return the tables."""
    sources = [
        src
        for path, _, old in loaded
        for src in [
            {"file": path.name, "command": old.get("command"), "date": old.get("date")},
            *old.get("loaded", []),  # a merged file passes on where its runs came from
        ]
    ]
    everything = [*results, *(r for _, runs, _ in loaded for r in runs)]
    save_runs(out.with_suffix(".json"), everything, {**meta, "loaded": sources})
    loaded_notes = [
        f"- {len(runs)} runs ({', '.join(sorted({r.algo for r in runs}))}) loaded from "
        f"`{path.name}`: `{old.get('command', '?')}` at {old.get('date', '?')}"
        for path, runs, old in loaded
    ]
    tables = markdown_tables(everything, args.target)
    status = f"**partial: {pending} runs still going**" if pending else "complete"
    text = "\n".join(
        [
            f"# Sample efficiency: {args.env} ({args.env_id})",
            "",
            f"- command: `{meta['command']}`",
            f"- date: {meta['date']}; {status}; wall time so far {elapsed / 60:.1f} min",
            *loaded_notes,
            f"- machine: {platform.machine()} ({_cpu()}), {os.cpu_count()} CPU cores shared "
            f"with other work, {args.workers} parallel runs, 1 thread each; Python "
            f"{platform.python_version()}",
            f"- protocol: {args.steps:,} env steps per run; every {args.eval_interval} steps, "
            f"{EVAL_EPISODES} deterministic episodes on a separate env; target "
            f"{args.target:g}; unsolved seeds count as ∞ in medians"
            + ("; each run stops at its first evaluation ≥ target" if args.stop_at_target else ""),
            "- time to target: training seconds up to the first evaluation ≥ target, "
            "evaluation time excluded (wall-clock / CPU of the run's process); wall time "
            "and env steps/s: the whole run, evaluations included",
            f"- versions: {_versions()}; baselines use the RL Baselines3 Zoo hyperparameters",
            "",
            tables,
            "",
            f"![learning curves]({out.with_suffix('.png').name})",
            "",
        ]
    )
    out.write_text(text, encoding="utf-8")
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = build_jobs(args)
    if not jobs and not args.load:
        print(
            "error: nothing to run: --no-daif without --ablate, and no baseline for "
            f"{args.env_id} (--baselines {','.join(args.baselines) or 'none'}); "
            "or pass --load to re-render saved runs",
            file=sys.stderr,
        )
        return 2
    keep = None if args.load_only is None else {a.strip() for a in args.load_only.split(",")}
    loaded = []
    for path in args.load:
        try:
            runs, old = load_runs(path)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        loaded.append((path, [r for r in runs if keep is None or r.algo in keep], old))
    print(
        f"{len(jobs)} runs of {args.env} ({args.env_id}), {args.steps:,} steps each, "
        f"target {args.target:g}, eval every {args.eval_interval} steps x {EVAL_EPISODES} "
        f"deterministic episodes, {args.workers} workers",
        flush=True,
    )
    meta = {
        "command": shlex.join(["python", "benchmarks/sample_efficiency.py", *sys.argv[1:]]),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "env": args.env,
        "steps": args.steps,
        "target": args.target,
        "eval_interval": args.eval_interval,
        "workers": args.workers,
    }
    out = args.out or RESULTS_DIR / f"{args.env}.md"
    out.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    results: list[RunResult] = []
    tables = ""
    for r in _run_jobs(jobs, args):
        results.append(r)
        if r.error:
            print(f"  done {r.algo:>24} seed {r.seed}: error (traceback below)", flush=True)
            print(r.error, file=sys.stderr)
        else:
            print(
                f"  done {r.algo:>24} seed {r.seed}: final {r.final[0]:.1f}, steps to target "
                f"{_fmt(steps_to_target(r.evals, args.target))}, {r.wall_time:.0f}s",
                flush=True,
            )
        # rewritten after every run, so an interrupted benchmark keeps what it finished
        elapsed = time.perf_counter() - start
        tables = write_report(out, args, meta, results, loaded, elapsed, len(jobs) - len(results))
    if not jobs:
        tables = write_report(out, args, meta, results, loaded, 0.0, 0)
    print()
    print(tables)
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    write_curves(out, args, [*results, *(r for _, runs, _ in loaded for r in runs)])
    return 0


def write_curves(out: Path, args: argparse.Namespace, runs: Sequence[RunResult]) -> Path | None:
    """The learning-curve PNG beside the report (``curves.py``: every seed, and the IQM
    over seeds with a 95% bootstrap CI, daif and the baselines on one plot). Without the
    ``bench`` extra's plotting packages the tables still stand, so this only warns."""
    from curves import default_title, plot_curves, require_plotting

    png = out.with_suffix(".png")
    try:
        require_plotting()
    except ImportError as exc:
        print(f"warning: no learning curves: {exc}", file=sys.stderr)
        return None
    if not any(r.error is None and r.evals for r in runs):
        return None
    plot_curves(runs, args.target, default_title(args.env_id, runs), png, args.eval_interval)
    print(f"wrote {png}")
    return png


if __name__ == "__main__":
    sys.exit(main())
