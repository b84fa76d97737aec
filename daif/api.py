"""The Python API: ``daif.make`` a preset, ``learn``, ``predict``, ``save``, ``daif.load``.

It is ``train.py`` without the command line: :func:`make` composes the same
``configs/train.yaml`` (an env preset, its experiment, any overrides), :meth:`Learner.learn`
runs the same :class:`daif.trainer.Trainer` into the same ``runs/<name>/<env>/<agent>/
seed<seed>`` folder layout, with the same TensorBoard logs and checkpoints; a second
``learn`` resumes that run for more steps. :meth:`Learner.save` exports the agent as a file
that loads without unpickling code (weights, the config as YAML, the step), which
``daif.load`` and ``evaluate.py`` read.

Example::

    import daif
    learner = daif.make("cartpole", seed=1)
    result = learner.learn(total_steps=15_000)
    learner.save("cartpole.pt")
    agent = daif.load("cartpole.pt")
    action, state = agent.predict(obs)            # one observation, or a batch [N, ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from daif.build import make_agent
from daif.checkpoint import (
    EXPORT,
    LAST,
    CheckpointError,
    checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from daif.config import env_settings, trainer_settings
from daif.envs import make_env, make_vector_env
from daif.evaluation import EVAL_SEED_OFFSET, run_episodes
from daif.protocol import Agent, AgentContext
from daif.runs import choose_run_dir
from daif.trainer import Trainer, TrainResult
from daif.utils import pick_device, preserved_rng, seed_everything

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(env: str = "cartpole", overrides: Sequence[str] = ()) -> DictConfig:
    """``configs/train.yaml`` composed as ``python train.py env=<env> <overrides>`` would,
    with the run folder ``trainer.run_dir`` filled in from the same layout."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("train", overrides=[f"env={env}", *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    choices = cfg.hydra.runtime.choices
    with open_dict(cfg):
        del cfg["hydra"]
    if not cfg.trainer.run_dir:
        default = f"runs/{cfg.name}/{choices.env}/{choices.agent}/seed{cfg.seed}"
        cfg.trainer.run_dir = choose_run_dir(
            None, cfg.trainer.resume, cfg.trainer.overwrite, default
        )
    return cfg


class Learner:
    """An agent with the config that made it: train it, act with it, save it.

    Build one with :func:`make` (to train) or :func:`load` (a saved agent or a run).

    Attributes:
        cfg: the composed config (what ``train.py`` would run).
        agent: the agent (``None`` until :meth:`learn` or :func:`load` builds it).
        result: the last :class:`~daif.trainer.TrainResult` of :meth:`learn`.
    """

    def __init__(
        self,
        cfg: DictConfig,
        agent: Agent | None = None,
        step: int = 0,
        observation_space: Any = None,
    ) -> None:
        self.cfg = cfg
        self.agent = agent
        self.num_timesteps = step
        self.observation_space = observation_space
        self.result: TrainResult | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.trainer.run_dir)

    # ------------------------------------------------------------------ training
    def learn(
        self,
        total_steps: int | None = None,
        callback: Callable[[Trainer], bool | None] | None = None,
    ) -> TrainResult:
        """Train for ``total_steps`` more env steps (default: the preset's budget), exactly as
        ``train.py`` would; a second call resumes the run from its last checkpoint.

        Args:
            total_steps: env steps to add (summed over the vector envs).
            callback: called with the trainer after every evaluation (``trainer.eval_history``,
                ``trainer.agent``, ``trainer.global_step``); returning ``False`` stops training.
        Returns:
            The run's :class:`~daif.trainer.TrainResult` (also ``self.result``).
        """
        cfg = self.cfg.copy()
        steps = int(total_steps) if total_steps is not None else int(cfg.trainer.total_steps)
        cfg.trainer.total_steps = self.num_timesteps + steps
        if self.num_timesteps > 0:
            cfg.trainer.resume = str(checkpoint_dir(self.run_dir) / LAST)
        trainer = Trainer(cfg)
        self.result = trainer.run(callback=callback)
        self.agent, self.num_timesteps = trainer.agent, trainer.global_step
        self.observation_space = trainer.envs.single_observation_space
        self.cfg = cfg
        return self.result

    # ------------------------------------------------------------------ acting
    def _require_agent(self) -> Agent:
        if self.agent is None:
            raise RuntimeError("no agent yet: call learn() first, or daif.load() a saved one")
        return self.agent

    def initial_state(self, n: int = 1) -> Any:
        """The per-episode state (beliefs, recurrent state; ``None`` if stateless) of ``n``
        new episodes."""
        return self._require_agent().initial_state(n)

    def predict(
        self,
        obs: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray | int, Any]:
        """Actions for one observation or a batch ``[N, *obs_shape]``.

        An agent trained with ``trainer.action_repeat=k`` decides every k frames: play it in
        ``daif.envs.ActionRepeat(env, k)``, as :meth:`evaluate` does.

        Args:
            obs: an observation of the env's space, or a batch of them.
            state: what the previous call returned (``None``: a new episode).
            episode_start: ``[N]`` bools, True where an episode starts (default: True when
                ``state`` is None, else False).
            deterministic: the most probable action (the mode of q(a)) or a sample.
        Returns:
            ``(actions, state)``; a single observation gives a single action (an int, or
            for continuous actions an ``[A]`` array).
        """
        agent = self._require_agent()
        space = self.observation_space
        x = np.asarray(obs)
        single = space is not None and x.shape == tuple(space.shape)
        batch = x[None] if single else x
        n = batch.shape[0]
        if state is None:
            state = agent.initial_state(n)
            start = np.ones(n, dtype=bool) if episode_start is None else episode_start
        else:
            start = np.zeros(n, dtype=bool) if episode_start is None else episode_start
        with torch.inference_mode():
            actions, state = agent.act(batch, state, np.asarray(start, dtype=bool), deterministic)
        actions = np.asarray(actions)
        if not single:
            return actions, state
        # one observation: an int for a discrete space, the action vector ``[A]`` for a Box
        return (actions[0].item() if actions[0].ndim == 0 else actions[0]), state

    def evaluate(self, episodes: int = 10, seed: int | None = None) -> tuple[float, float]:
        """Mean and std return of ``episodes`` deterministic episodes, on the trainer's eval
        seeds by default (so a trained agent scores what its run's last evaluation said)."""
        agent = self._require_agent()
        t, env = trainer_settings(self.cfg), env_settings(self.cfg)
        envs = make_vector_env(
            env.id, env.kwargs, min(episodes, t.num_envs), action_repeat=t.action_repeat
        )
        reset_seed = int(self.cfg.seed) + EVAL_SEED_OFFSET if seed is None else seed
        try:
            with (
                torch.inference_mode(),
                preserved_rng(),
            ):  # the caller's RNG streams stay as they were
                returns, _ = run_episodes(agent, envs, episodes, reset_seed, deterministic=True)
        finally:
            envs.close()
        return float(returns.mean()), float(returns.std())

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Export the agent: weights and state (tensors and plain data only, readable with
        ``torch.load(weights_only=True)``), the config as YAML and the env-step count. It
        loads with :func:`load` and ``evaluate.py``, but cannot resume a run (it holds no RNG
        states or envs: resume from the run's ``checkpoints/last.pt`` for that)."""
        agent = self._require_agent()
        config = OmegaConf.to_container(self.cfg, resolve=True)
        payload = {
            "kind": EXPORT,
            "config": config,
            "config_yaml": OmegaConf.to_yaml(self.cfg, resolve=True),
            "agent": agent.state_dict(),
            "loop": {"global_step": self.num_timesteps},
        }
        return save_checkpoint(path, payload)


def make(env: str = "cartpole", overrides: Sequence[str] = (), **settings: Any) -> Learner:
    """A :class:`Learner` for ``python train.py env=<env> <overrides>``.

    Args:
        env: an env preset (``configs/env/<env>.yaml``; its experiment chooses the agent).
        overrides: Hydra overrides, as on the command line (``"agent.lr=1e-3"``).
        **settings: shorthand for top-level and trainer keys: ``seed=1``, ``name="mine"``,
            ``run_dir=...``, ``device="cpu"``, ``progress=False`` (any ``trainer.*`` key).
    Raises:
        daif.validation.ConfigError: an unknown preset or a bad value, naming the key.
    """
    extra = []
    for key, value in settings.items():
        full = key if key in ("seed", "name") else f"trainer.{key}"
        extra.append(f"{full}={'null' if value is None else value}")
    cfg = compose_config(env, [*overrides, *extra])
    trainer_settings(cfg)  # refuse bad trainer values now, not at learn()
    return Learner(cfg)


def load(path: str | Path, device: str = "cpu") -> Learner:
    """A :class:`Learner` from a file :meth:`Learner.save` wrote, or from a run (its dir or
    a checkpoint), loaded without unpickling code; ready to ``predict`` and ``evaluate``.

    Raises:
        daif.checkpoint.CheckpointError: a missing, unsafe, foreign or mismatched file.
    """
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["config"])
    env = env_settings(cfg)
    t = trainer_settings(cfg)
    seed_everything(int(cfg.get("seed", 0)))
    probe = make_env(env.id, **env.kwargs)
    try:
        ctx = AgentContext(
            observation_space=probe.observation_space,
            action_space=probe.action_space,
            num_envs=t.num_envs,
            device=pick_device(device),
            amp=t.amp,
            env_id=env.id,
            env_kwargs=env.kwargs,
        )
    finally:
        probe.close()
    agent = make_agent(cfg.agent, ctx)
    try:
        agent.load_state_dict(ckpt["agent"])
    except Exception as exc:
        raise CheckpointError(
            f"{ckpt['path']!r} does not fit the agent its config builds: {exc}"
        ) from exc
    return Learner(cfg, agent, int(ckpt["loop"]["global_step"]), ctx.observation_space)
