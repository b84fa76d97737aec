"""Deterministic evaluation episodes, shared by the trainer and ``evaluate.py``, and the
evaluation of a saved checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from daif.build import make_agent
from daif.checkpoint import CheckpointError, load_checkpoint
from daif.config import env_settings, trainer_settings
from daif.envs import frames_taken, make_vector_env
from daif.protocol import AgentContext
from daif.utils import pick_device, seed_everything
from daif.validation import check_int

EVAL_SEED_OFFSET = 1_000_003  # eval envs get reset seeds disjoint from the training envs'


def run_episodes(
    agent: Any,
    envs: gym.vector.VectorEnv,
    episodes: int,
    seed: int | None,
    deterministic: bool = True,
    max_steps: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Play ``episodes`` complete episodes and return their returns and lengths.

    Episodes are split evenly over the sub-envs up front (sub-env ``i`` plays
    ``episodes // N`` plus one for ``i < episodes % N``), so short episodes are not
    over-counted as they would be by taking the first ``episodes`` to finish.

    Args:
        agent: object with ``initial_state`` and ``act`` (see :mod:`daif.protocol`).
        envs: a SAME_STEP-autoreset vector env.
        episodes: number of episodes (≥ 1).
        seed: seed for ``envs.reset`` and for torch's global RNG (``None``: continue both),
            so that an agent that samples while acting (the recurrent model's latent) draws
            the same numbers in the trainer's evaluation and in ``evaluate.py``.
        deterministic: act with the mode of q(a).
        max_steps: give up (``RuntimeError``) after this many vector steps.
    Returns:
        ``([episodes] returns, [episodes] lengths in frames)`` as float64 / int64 arrays,
        ordered by sub-env then by episode.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = envs.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    results: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    if seed is not None:
        torch.manual_seed(seed)  # the trainer calls this inside preserved_rng()
    state = agent.initial_state(n)
    episode_start = np.ones(n, dtype=bool)
    ep_ret = np.zeros(n)
    ep_len = np.zeros(n, dtype=np.int64)
    for _ in range(max_steps):
        actions, state = agent.act(obs, state, episode_start, deterministic=deterministic)
        obs, reward, terminated, truncated, infos = envs.step(actions)
        ep_ret += reward
        ep_len += frames_taken(infos, n)
        done = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(done):
            if len(results[i]) < quota[i]:
                results[i].append((float(ep_ret[i]), int(ep_len[i])))
        ep_ret[done] = 0.0
        ep_len[done] = 0
        episode_start = done
        if all(len(r) >= q for r, q in zip(results, quota, strict=True)):
            flat = [x for r in results for x in r]
            return np.array([x[0] for x in flat]), np.array([x[1] for x in flat], dtype=np.int64)
    raise RuntimeError(f"evaluation did not finish {episodes} episodes in {max_steps} steps")


def evaluate_checkpoint(
    checkpoint: str | Path,
    episodes: int = 10,
    seed: int | None = None,
    deterministic: bool = True,
    video: bool = False,
    video_dir: str | Path | None = None,
    device: str = "cpu",
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Rebuild the agent from the config stored in ``checkpoint``, load its weights, play
    ``episodes`` episodes and write a JSON summary.

    Args:
        checkpoint: a checkpoint file or a run dir.
        episodes: number of episodes (≥ 1).
        seed: env reset seed; ``None`` → the trainer's eval seed (``seed + EVAL_SEED_OFFSET``),
            so evaluating the final checkpoint with ``trainer.eval_episodes`` episodes repeats
            the trainer's last evaluation.
        deterministic: mode of q(a) (the default) or sampled actions.
        video: record every episode with Gymnasium's ``RecordVideo`` (one env, rgb_array).
        video_dir: where videos go; ``None`` → ``<run_dir>/videos``.
        device: torch device for the agent.
        output: JSON path; ``None`` → ``<run_dir>/eval.json``.
    Returns:
        The summary dict (also written to ``output``): mean, std, min, max, returns, lengths,
        episodes, env id, global step, seed, checkpoint, video dir.
    Raises:
        CheckpointError: missing/unreadable checkpoint, or weights that do not fit the agent
            its config builds.
    """
    check_int("episodes", episodes, minimum=1)
    ckpt = load_checkpoint(checkpoint)
    ckpt_path = Path(ckpt["path"])
    run_dir = (
        ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    )
    cfg = OmegaConf.create(ckpt["config"])
    try:
        t = trainer_settings(cfg)
        env = env_settings(cfg)
    except ValueError as exc:
        raise CheckpointError(f"config stored in the checkpoint is invalid: {exc}") from exc
    base_seed = int(cfg.get("seed", 0))
    reset_seed = base_seed + EVAL_SEED_OFFSET if seed is None else int(seed)
    seed_everything(base_seed)

    wrapper = None
    kwargs = dict(env.kwargs)
    out_videos = None
    if video:
        from gymnasium.wrappers import RecordVideo

        kwargs.setdefault("render_mode", "rgb_array")
        out_videos = Path(video_dir) if video_dir is not None else run_dir / "videos"
        n_videos = episodes

        def wrapper(e: gym.Env) -> gym.Env:
            return RecordVideo(
                e,
                str(out_videos),
                episode_trigger=lambda i: i < n_videos,
                name_prefix="eval",
                disable_logger=True,
            )

    n_envs = 1 if video else min(episodes, t.num_envs)
    envs = make_vector_env(env.id, kwargs, n_envs, wrapper=wrapper, action_repeat=t.action_repeat)
    torch_device = pick_device(device)
    try:
        agent = make_agent(
            cfg.agent,
            AgentContext(
                observation_space=envs.single_observation_space,
                action_space=envs.single_action_space,
                num_envs=t.num_envs,
                device=torch_device,
                amp=t.amp,
                env_id=env.id,
                env_kwargs=env.kwargs,
            ),
        )
        agent.load_state_dict(ckpt["agent"])
    except Exception as exc:
        envs.close()
        one_line = " ".join(str(exc).split())
        raise CheckpointError(
            f"checkpoint {str(ckpt_path)!r} does not fit the agent its config builds: {one_line}"
        ) from exc
    try:
        with torch.inference_mode():
            returns, lengths = run_episodes(agent, envs, episodes, reset_seed, deterministic)
    finally:
        envs.close()  # RecordVideo writes its last file on close

    summary: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "env": env.id,
        "global_step": int(ckpt["loop"]["global_step"]),
        "episodes": int(episodes),
        "deterministic": bool(deterministic),
        "seed": reset_seed,
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "video_dir": None if out_videos is None else str(out_videos),
    }
    out = Path(output) if output is not None else run_dir / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    summary["output"] = str(out)
    return summary
