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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from daif.build import make_agent
from daif.checkpoint import (
    EXPORT,
    LAST,
    CheckpointError,
    check_compatible,
    checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
    sign,
    signed_here,
)
from daif.config import EnvConfig, LoggerConfig, TrainerConfig, validate_config
from daif.envs import frames_taken, make_vector_env, true_next_obs
from daif.evaluation import EVAL_SEED_OFFSET, run_episodes
from daif.logger import Logger, WandbSettings, to_float
from daif.protocol import AgentContext, Transition
from daif.runs import (
    RunLock,
    check_run_dir,
    choose_run_dir,
    clean_stale_temp_files,
    discard_unused,
    run_dir_of_checkpoint,
)
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
        trained_steps: environment steps done in this call (0: a resumed run that had
            already reached ``trainer.total_steps``).
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
    trained_steps: int = 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        out = HydraConfig.get().runtime.get("output_dir")
        if out:
            return Path(out)
    return None


def resolve_run_dir(cfg: DictConfig, t: TrainerConfig) -> Path:
    """``trainer.run_dir`` if set; else Hydra's job output dir (chosen by
    :func:`daif.runs.choose_run_dir` through ``hydra.run.dir``); else, outside a Hydra app
    (``hydra.compose`` users), the same rules under ``runs/api/<env id>/<agent class>/
    seed<seed>``."""
    if t.run_dir:
        return Path(t.run_dir)
    out = _hydra_output_dir()
    if out is not None:
        return out
    agent_name = str(cfg.agent._target_).rsplit(".", 1)[-1].lower()
    default = Path("runs") / "api" / _slug(str(cfg.env.id)) / _slug(agent_name)
    return Path(choose_run_dir(None, t.resume, t.overwrite, str(default / f"seed{cfg.seed}")))


def _crossed(prev: int, now: int, interval: int) -> bool:
    """True if a multiple of ``interval`` lies in ``(prev, now]`` (interval 0: never)."""
    return interval > 0 and now // interval > prev // interval


class Trainer:
    """One training run. Most users want :func:`train`; this class exists for tests and for
    callers that want to inspect the agent or envs after ``run()``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.envs: Any = None
        self.eval_envs: Any = None
        self.lock: RunLock | None = None
        hydra_dir = _hydra_output_dir()
        try:
            self._start(cfg)
        except BaseException:
            # a start that fails leaves nothing behind: no lock, no open envs, no empty dir
            self._close_envs()
            if self.lock is not None:
                self.lock.release()
            discard_unused(getattr(self, "run_dir", None))
            discard_unused(hydra_dir)
            raise

    def _start(self, cfg: DictConfig) -> None:
        self.t, self.logger_cfg, self.env_cfg = validate_config(cfg)
        self.cfg = cfg
        self.seed = int(cfg.seed)
        self.device = pick_device(self.t.device)
        if self.t.threads is not None:
            torch.set_num_threads(self.t.threads)
        self.run_dir = resolve_run_dir(cfg, self.t).resolve()
        self.resolved = OmegaConf.to_container(cfg, resolve=True)

        resume_from = None
        resuming_here = False
        if self.t.resume:
            resume_from = load_checkpoint(self.t.resume)  # fail before building anything
            if resume_from.get("kind") == EXPORT:
                raise CheckpointError(
                    f"{resume_from['path']!r} is an exported agent (weights and config): it "
                    "evaluates and loads, but a resume needs the run's checkpoints/last.pt"
                )
            check_compatible(resume_from["config"], self.resolved)
            blob = resume_from["envs"]
            trusted = self.t.trust_checkpoint or blob is None
            if not (trusted or signed_here(blob, resume_from.get("envs_signature"))):
                raise CheckpointError(
                    f"{resume_from['path']!r} was not written by this user here: resuming "
                    "unpickles the env it holds, which can run code; pass "
                    "trainer.trust_checkpoint=true if you trust the file"
                )
            home = run_dir_of_checkpoint(resume_from["path"])
            resuming_here = home is not None and Path(home).resolve() == self.run_dir
        self.lock = RunLock(self.run_dir).acquire()  # a second process on this dir stops here
        check_run_dir(self.run_dir, resuming_here=resuming_here, overwrite=self.t.overwrite)
        for stale in clean_stale_temp_files(self.run_dir):
            log.info("removed %s, left by a process killed while writing a checkpoint", stale)

        seed_everything(self.seed)
        n = self.t.num_envs
        repeat = self.t.action_repeat
        self.envs = make_vector_env(self.env_cfg.id, self.env_cfg.kwargs, n, action_repeat=repeat)
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
        if hasattr(self.agent, "check_budget"):
            self.agent.check_budget(self.t.total_steps)
        if self.t.eval_episodes > 0 and self.t.eval_interval > self.t.total_steps:
            log.warning(
                "trainer.eval_interval=%d > trainer.total_steps=%d: only the final "
                "evaluation will run",
                self.t.eval_interval,
                self.t.total_steps,
            )
        if self.t.eval_episodes > 0:
            self.eval_envs = make_vector_env(
                self.env_cfg.id,
                self.env_cfg.kwargs,
                min(self.t.eval_episodes, n),
                action_repeat=repeat,
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
        # the last evaluation's episodes, ([E] returns, [E] lengths in frames): a mean
        # alone cannot tell a policy that crashes from one that runs to the time limit
        self.last_eval_episodes: tuple[np.ndarray, np.ndarray] | None = None
        self.last_checkpoint: Path | None = None
        self._saved_state: tuple[int, int] | None = None  # (step, evaluations) of last.pt
        self.call_returns: list[float] = []  # training episodes ended during this process
        self.env_restored = True
        if resume_from is not None:
            self._restore(resume_from)

        self._resumed = resume_from is not None
        self._logger: Logger | None = None

    @property
    def logger(self) -> Logger:
        """The run's TensorBoard writer, opened on first use (a Trainer built and dropped
        without training leaves no event file behind)."""
        if self._logger is None:
            # purge_step: on resume, events a killed process wrote after the checkpoint's
            # step are hidden by TensorBoard (those at the step were written before the save)
            lg = self.logger_cfg
            self._logger = Logger(
                self.run_dir,
                backend=lg.backend,
                purge_step=self.global_step + 1 if self._resumed else None,
                flush_secs=lg.flush_secs,
                wandb=WandbSettings(lg.project, lg.entity, lg.group, lg.mode),
                config=self.resolved,
            )
        return self._logger

    def _close_logger(self) -> None:
        if self._logger is not None:
            self._logger.close()

    def _close_envs(self) -> None:
        for envs in (self.envs, self.eval_envs):
            if envs is not None:
                envs.close()

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
            "envs_signature": None if envs_blob is None else sign(envs_blob),
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
        path = save_checkpoint(
            checkpoint_dir(self.run_dir) / name, self._payload(), keep_previous=name == LAST
        )
        if name == LAST:
            self.last_checkpoint = path
            self._saved_state = (self.global_step, len(self.eval_history))
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
        self.last_eval_episodes = (returns, lengths)
        mean, std = float(returns.mean()), float(returns.std())
        step = self.global_step
        self.eval_history.append((step, mean, std))
        self.logger.scalar("eval/mean_return", mean, step)
        self.logger.scalar("eval/std_return", std, step)
        self.logger.scalar("eval/mean_length", float(lengths.mean()), step)
        for tag, img in images.items():
            self.logger.image(tag, img, step)
        recent = np.mean(self.recent_returns) if self.recent_returns else float("nan")
        log.info(
            "step %d/%d: eval return %.2f ± %.2f over %d episodes (recent training return %.1f)",
            step,
            self.t.total_steps,
            mean,
            std,
            len(returns),
            recent,
        )
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
        frames = frames_taken(infos, self.t.num_envs)  # < action_repeat at an episode's end
        self.ep_return += reward
        self.ep_length += frames
        step = self.global_step + int(frames.sum())
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

    def run(self, callback: Callable[[Trainer], bool | None] | None = None) -> TrainResult:
        """Train until ``trainer.total_steps``; always closes envs, the logger and the lock.

        Args:
            callback: called with this trainer after each periodic evaluation; returning
                ``False`` ends training there (the final evaluation and checkpoint follow).
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        t = self.t
        start_step, start_time = self.global_step, time.perf_counter()
        if start_step >= t.total_steps:
            log.warning(
                "nothing left to train: %s is at step %d and trainer.total_steps=%d; raise "
                "trainer.total_steps to continue it",
                self.run_dir,
                start_step,
                t.total_steps,
            )
            return self._finish(start_step, start_time, log_hparams=False)
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
            with logging_redirect_tqdm():  # log lines above the bar, not through it
                while self.global_step < t.total_steps:
                    prev = self.global_step
                    self._step()
                    # keep the newest value of each tag (tensors: no device sync here), so
                    # agents that update now and then (end of episode, every k steps) are logged
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
                        recent = (
                            np.mean(self.recent_returns) if self.recent_returns else float("nan")
                        )
                        bar.set_postfix(sps=f"{sps:.0f}", ret=f"{recent:.1f}", refresh=False)
                    stop = False
                    if self.eval_envs is not None and _crossed(
                        prev, self.global_step, t.eval_interval
                    ):
                        self.evaluate()
                        stop = callback is not None and callback(self) is False
                    if _crossed(prev, self.global_step, t.checkpoint_interval):
                        self.save()
                    if stop:
                        log.info("callback stopped training at step %d", self.global_step)
                        break
                if self.eval_envs is not None and (
                    not self.eval_history or self.eval_history[-1][0] != self.global_step
                ):
                    self.evaluate()
                if self._saved_state != (self.global_step, len(self.eval_history)):
                    self.save()  # unless the interval's save already holds this state
        except NonFiniteLossError as exc:
            if exc.step is None:  # raised while acting: the agent does not know the step
                exc.set_step(self.global_step)
            exc.checkpoint = self.save("crash.pt")
            log.error("%s; the state when it happened is saved to %s", exc, exc.checkpoint)
            self._abort()
            raise
        except BaseException:
            self._abort()  # flush what was logged up to the error
            raise
        finally:
            bar.close()
        return self._finish(start_step, start_time, log_hparams=self.logger_cfg.log_hparams)

    def _abort(self) -> None:
        self._close_envs()
        self._close_logger()
        if self.lock is not None:
            self.lock.release()

    def _finish(self, start_step: int, start_time: float, *, log_hparams: bool) -> TrainResult:
        self._close_envs()
        wall = time.perf_counter() - start_time
        final_mean, final_std = (
            (self.eval_history[-1][1], self.eval_history[-1][2])
            if self.eval_history
            else (float("nan"), float("nan"))
        )
        if log_hparams:
            self.logger.hparams(
                self.resolved,
                {
                    "final_eval_mean": final_mean,
                    "final_eval_std": final_std,
                    "episodes": float(self.episodes),
                },
            )
        self._close_logger()
        if self.lock is not None:
            self.lock.release()
        trained = self.global_step - start_step
        return TrainResult(
            eval_history=list(self.eval_history),
            final_eval_mean=final_mean,
            final_eval_std=final_std,
            wall_time=wall,
            sps=trained / max(wall, 1e-9),
            run_dir=self.run_dir,
            global_step=self.global_step,
            episode_returns=list(self.call_returns),
            checkpoint=self.last_checkpoint,
            trained_steps=trained,
        )


def train(cfg: DictConfig) -> TrainResult:
    """Train the agent described by ``cfg`` (a composed ``configs/train.yaml``).

    Raises:
        daif.config.ConfigError: a bad config value, before anything is built.
        daif.checkpoint.CheckpointError: ``trainer.resume`` names a missing or mismatched
            checkpoint.
        daif.runs.RunDirError: the run dir holds another run or is in use (a ConfigError).
        daif.utils.NonFiniteLossError: a loss or the action probabilities went NaN/inf
            (``checkpoints/crash.pt`` saved first).
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
