"""The agent-agnostic training loop: vector envs, evaluation, logging, checkpoints.

``train(cfg)`` is the whole API: it validates the composed Hydra config, builds the
vector envs and the agent (:func:`daif.build.make_agent`), then repeats

    act → step the envs → observe(Transition) → update(global_step)

until ``trainer.total_steps`` environment steps, evaluating deterministically every
``trainer.eval_interval`` steps and checkpointing every ``trainer.checkpoint_interval``.
It talks to the agent only through :class:`daif.protocol.Agent`.

Terminated vs truncated: the Transition carries both flags. Gymnasium's SAME_STEP
autoreset is used; the true final observation of an ended episode is taken from
``infos["final_obs"]`` (see :mod:`daif.envs`), so a time-limit truncation still
has its real next state and the agent can bootstrap from it.
"""

from __future__ import annotations

import collections
import logging
import math
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from daif.build import make_agent
from daif.checkpoint import (
    LAST,
    CheckpointError,
    check_compatible,
    checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from daif.config import EnvConfig, LoggerConfig, TrainerConfig, validate_config
from daif.envs import make_vector_env, true_next_obs
from daif.evaluation import EVAL_SEED_OFFSET, run_episodes
from daif.logger import Logger, to_float
from daif.protocol import AgentContext, Transition
from daif.utils import (
    NonFiniteLossError,
    capture_rng_state,
    pick_device,
    preserved_rng,
    restore_rng_state,
    seed_everything,
)

log = logging.getLogger(__name__)

RECENT_EPISODES = 20  # window of the progress bar's "recent return"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        eval_history: ``(global_step, mean_return, std_return)`` per evaluation.
        final_eval_mean / final_eval_std: the last evaluation (NaN if none ran).
        wall_time: seconds spent in this call (a resumed run counts only its own part).
        sps: environment steps per second over this call.
        run_dir: folder with event files and checkpoints.
        global_step: environment steps done in total.
        episode_returns: returns of the training episodes that ended during this call.
        checkpoint: path of the last checkpoint written (``None`` if none).
    """

    eval_history: list[tuple[int, float, float]]
    final_eval_mean: float
    final_eval_std: float
    wall_time: float
    sps: float
    run_dir: Path
    global_step: int = 0
    episode_returns: list[float] = field(default_factory=list)
    checkpoint: Path | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def resolve_run_dir(cfg: DictConfig, t: TrainerConfig) -> Path:
    """``trainer.run_dir`` if set; else Hydra's job output dir (``runs/<name>/<env>/<agent>/
    <seed or job>`` per ``configs/train.yaml``); else, outside a Hydra app (``hydra.compose``
    users), ``runs/api/<env id>/<agent class>/seed<seed>``."""
    if t.run_dir:
        return Path(t.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        out = HydraConfig.get().runtime.get("output_dir")
        if out:
            return Path(out)
    agent_name = str(cfg.agent._target_).rsplit(".", 1)[-1].lower()
    return Path("runs") / "api" / _slug(str(cfg.env.id)) / _slug(agent_name) / f"seed{cfg.seed}"


def _crossed(prev: int, now: int, interval: int) -> bool:
    """True if a multiple of ``interval`` lies in ``(prev, now]`` (interval 0: never)."""
    return interval > 0 and now // interval > prev // interval


class Trainer:
    """One training run. Most users want :func:`train`; this class exists for tests and for
    callers that want to inspect the agent or envs after ``run()``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.t, self.logger_cfg, self.env_cfg = validate_config(cfg)
        self.cfg = cfg
        self.seed = int(cfg.seed)
        self.device = pick_device(self.t.device)
        if self.t.threads is not None:
            torch.set_num_threads(self.t.threads)
        self.run_dir = resolve_run_dir(cfg, self.t).resolve()
        self.resolved = OmegaConf.to_container(cfg, resolve=True)

        resume_from = None
        if self.t.resume:
            resume_from = load_checkpoint(self.t.resume)  # fail before building anything
            check_compatible(resume_from["config"], self.resolved)
        self.run_dir.mkdir(parents=True, exist_ok=True)

        seed_everything(self.seed)
        n = self.t.num_envs
        self.envs = make_vector_env(self.env_cfg.id, self.env_cfg.kwargs, n)
        try:
            self.agent = make_agent(
                cfg.agent,
                AgentContext(
                    observation_space=self.envs.single_observation_space,
                    action_space=self.envs.single_action_space,
                    num_envs=n,
                    device=self.device,
                    amp=self.t.amp,
                    compile=self.t.compile,
                    env_id=self.env_cfg.id,
                    env_kwargs=self.env_cfg.kwargs,
                ),
            )
        except BaseException:
            self.envs.close()
            raise
        self.eval_envs = None
        if self.t.eval_episodes > 0:
            self.eval_envs = make_vector_env(
                self.env_cfg.id, self.env_cfg.kwargs, min(self.t.eval_episodes, n)
            )

        # loop state (all of it goes into checkpoints)
        self.global_step = 0
        self.episodes = 0
        self.obs, _ = self.envs.reset(seed=self.seed)
        self.agent_state = self.agent.initial_state(n)
        self.episode_start = np.ones(n, dtype=bool)
        self.ep_return = np.zeros(n, dtype=np.float64)
        self.ep_length = np.zeros(n, dtype=np.int64)
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=RECENT_EPISODES)
        self.eval_history: list[tuple[int, float, float]] = []
        self.last_checkpoint: Path | None = None
        self.call_returns: list[float] = []  # training episodes ended during this process
        self.env_restored = True
        if resume_from is not None:
            self._restore(resume_from)

        if resume_from is None and (checkpoint_dir(self.run_dir) / LAST).exists():
            log.warning(
                "%s already holds a run; starting afresh (its curves are hidden from "
                "TensorBoard). Use trainer.resume=%s to continue it instead.",
                self.run_dir,
                self.run_dir,
            )
        # purge_step: events an earlier process wrote at steps >= this one (a run killed
        # after its checkpoint, or an older run in this dir) are hidden by TensorBoard
        self.logger = Logger(
            self.run_dir,
            backend=self.logger_cfg.backend,
            purge_step=self.global_step,
            flush_secs=self.logger_cfg.flush_secs,
        )

    # ------------------------------------------------------------------ checkpoints

    def _payload(self) -> dict[str, Any]:
        try:
            envs_blob: bytes | None = pickle.dumps(self.envs)
        except Exception:  # an env holding a window/renderer handle does not pickle
            envs_blob = None
        return {
            "config": self.resolved,
            "agent": self.agent.state_dict(),
            "rng": capture_rng_state(),
            "envs": envs_blob,
            "loop": {
                "global_step": self.global_step,
                "episodes": self.episodes,
                "obs": self.obs,
                "agent_state": self.agent_state,
                "episode_start": self.episode_start,
                "ep_return": self.ep_return,
                "ep_length": self.ep_length,
                "recent_returns": list(self.recent_returns),
                "eval_history": list(self.eval_history),
            },
        }

    def save(self, name: str = LAST) -> Path:
        """Write ``<run_dir>/checkpoints/<name>`` atomically; returns its path."""
        path = save_checkpoint(checkpoint_dir(self.run_dir) / name, self._payload())
        if name == LAST:
            self.last_checkpoint = path
        return path

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.agent.load_state_dict(ckpt["agent"])
        loop = ckpt["loop"]
        self.global_step = int(loop["global_step"])
        self.episodes = int(loop["episodes"])
        self.ep_return = np.asarray(loop["ep_return"], dtype=np.float64)
        self.ep_length = np.asarray(loop["ep_length"], dtype=np.int64)
        self.recent_returns.extend(loop["recent_returns"])
        self.eval_history = [tuple(x) for x in loop["eval_history"]]  # type: ignore[misc]
        if ckpt["envs"] is not None:
            self.envs.close()
            self.envs = pickle.loads(ckpt["envs"])
            self.obs = loop["obs"]
            self.agent_state = loop["agent_state"]
            self.episode_start = np.asarray(loop["episode_start"], dtype=bool)
        else:
            # Documented fallback: an env that does not pickle restarts its episodes from a
            # reset seeded by (seed, step); the agent, RNGs and counters are still exact.
            self.env_restored = False
            log.warning("vector env was not pickled; resetting it with a step-derived seed")
            self.obs, _ = self.envs.reset(seed=self.seed + self.global_step)
            self.agent_state = self.agent.initial_state(self.t.num_envs)
            self.episode_start = np.ones(self.t.num_envs, dtype=bool)
            self.ep_return[:] = 0.0
            self.ep_length[:] = 0
        restore_rng_state(ckpt["rng"])  # last: building the agent above drew from the RNGs
        log.info("resumed from %s at step %d", ckpt["path"], self.global_step)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> tuple[float, float]:
        """Deterministic episodes on the eval envs; logs ``eval/*`` and agent images.

        The global RNG streams are saved and restored around it, so evaluating (or not)
        does not change the training trajectory.
        """
        assert self.eval_envs is not None
        with preserved_rng():
            returns, lengths = run_episodes(
                self.agent,
                self.eval_envs,
                self.t.eval_episodes,
                seed=self.seed + EVAL_SEED_OFFSET,
                deterministic=True,
            )
            images = {}
            if self.logger_cfg.log_images and hasattr(self.agent, "images"):
                images = self.agent.images()
        mean, std = float(returns.mean()), float(returns.std())
        step = self.global_step
        self.eval_history.append((step, mean, std))
        self.logger.scalar("eval/mean_return", mean, step)
        self.logger.scalar("eval/std_return", std, step)
        self.logger.scalar("eval/mean_length", float(lengths.mean()), step)
        for tag, img in images.items():
            self.logger.image(tag, img, step)
        return mean, std

    # ------------------------------------------------------------------ loop

    def _log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        floats = {tag: to_float(v) for tag, v in metrics.items()}
        for tag, value in floats.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(tag, step, value)
        self.logger.scalars(floats, step)

    def _step(self) -> None:
        actions, self.agent_state = self.agent.act(
            self.obs, self.agent_state, self.episode_start, deterministic=False
        )
        next_obs, reward, terminated, truncated, infos = self.envs.step(actions)
        done = np.logical_or(terminated, truncated)
        self.agent.observe(
            Transition(
                obs=self.obs,
                action=np.asarray(actions),
                reward=np.asarray(reward, dtype=np.float32),
                next_obs=true_next_obs(next_obs, done, infos),
                terminated=np.asarray(terminated, dtype=bool),
                truncated=np.asarray(truncated, dtype=bool),
            )
        )
        self.ep_return += reward
        self.ep_length += 1
        step = self.global_step + self.t.num_envs
        for i in np.flatnonzero(done):
            self.episodes += 1
            self.recent_returns.append(float(self.ep_return[i]))
            self.call_returns.append(float(self.ep_return[i]))
            self.logger.scalar("charts/episodic_return", self.ep_return[i], step)
            self.logger.scalar("charts/episodic_length", self.ep_length[i], step)
        self.ep_return[done] = 0.0
        self.ep_length[done] = 0
        self.obs = next_obs
        self.episode_start = done
        self.global_step = step

    def run(self) -> TrainResult:
        """Train until ``trainer.total_steps``; always closes envs and the logger."""
        from tqdm.auto import tqdm

        t = self.t
        start_step, start_time = self.global_step, time.perf_counter()
        last_log_step, last_log_time = start_step, start_time
        latest: dict[str, Any] = {}
        bar = tqdm(
            total=t.total_steps,
            initial=start_step,
            disable=not t.progress,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:
            while self.global_step < t.total_steps:
                prev = self.global_step
                self._step()
                # keep the newest value of each tag (tensors: no device sync here), so agents
                # that update only now and then (end of episode, every k steps) still get logged
                latest.update(self.agent.update(self.global_step))
                bar.update(self.global_step - prev)
                if _crossed(prev, self.global_step, t.log_interval):
                    if latest:
                        self._log_metrics(latest, self.global_step)
                        latest.clear()
                    now = time.perf_counter()
                    sps = (self.global_step - last_log_step) / max(now - last_log_time, 1e-9)
                    last_log_step, last_log_time = self.global_step, now
                    self.logger.scalar("charts/sps", sps, self.global_step)
                    recent = np.mean(self.recent_returns) if self.recent_returns else float("nan")
                    bar.set_postfix(sps=f"{sps:.0f}", ret=f"{recent:.1f}", refresh=False)
                if self.eval_envs is not None and _crossed(prev, self.global_step, t.eval_interval):
                    self.evaluate()
                if _crossed(prev, self.global_step, t.checkpoint_interval):
                    self.save()
            if self.eval_envs is not None and (
                not self.eval_history or self.eval_history[-1][0] != self.global_step
            ):
                self.evaluate()
            self.save()
        except NonFiniteLossError:
            path = self.save("crash.pt")
            log.error("non-finite loss; state when it happened saved to %s", path)
            self.logger.close()
            raise
        except BaseException:
            self.logger.close()  # flush what was logged up to the error
            raise
        finally:
            bar.close()
            self.envs.close()
            if self.eval_envs is not None:
                self.eval_envs.close()

        wall = time.perf_counter() - start_time
        final_mean, final_std = (
            (self.eval_history[-1][1], self.eval_history[-1][2])
            if self.eval_history
            else (float("nan"), float("nan"))
        )
        if self.logger_cfg.log_hparams:
            self.logger.hparams(
                self.resolved,
                {
                    "final_eval_mean": final_mean,
                    "final_eval_std": final_std,
                    "episodes": float(self.episodes),
                },
            )
        self.logger.close()
        return TrainResult(
            eval_history=list(self.eval_history),
            final_eval_mean=final_mean,
            final_eval_std=final_std,
            wall_time=wall,
            sps=(self.global_step - start_step) / max(wall, 1e-9),
            run_dir=self.run_dir,
            global_step=self.global_step,
            episode_returns=list(self.call_returns),
            checkpoint=self.last_checkpoint,
        )


def train(cfg: DictConfig) -> TrainResult:
    """Train the agent described by ``cfg`` (a composed ``configs/train.yaml``).

    Raises:
        daif.config.ConfigError: a bad config value, before anything is built.
        daif.checkpoint.CheckpointError: ``trainer.resume`` names a missing or mismatched
            checkpoint.
        daif.utils.NonFiniteLossError: a loss went NaN/inf (``checkpoints/crash.pt`` saved).
    """
    return Trainer(cfg).run()


__all__ = [
    "CheckpointError",
    "EnvConfig",
    "LoggerConfig",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "train",
]
