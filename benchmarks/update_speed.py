"""Cost of one gradient step of the deep agent, and of its parts.

Builds the agent of an env preset exactly as the trainer does, fills its replay buffer
with random-policy transitions, and times, after warm-up, CPU seconds of this process on the
CPU, or wall seconds between CUDA synchronisations on a GPU:

* the ensemble information gain on the critic's batch (B·L state-actions), by
  ``maths.gaussian_mixture_info_gain`` and by the direct definition that builds every
  pairwise KL as one ``[K, K, B·L, Z]`` tensor (what it replaced);
* the critic's and the model's loss (forward only), the critic's with its epistemic
  terms at every step of the n-step target, at one sampled step and read from the replay
  cache (``epistemic_estimate``);
* a whole gradient step (sample, losses, backward, clip, Adam, target update), one on
  which the model trains too (with the cache refresh, for ``cached``) and one on which
  only the critic does (``model_update_every`` > 1 alternates the two), per estimate;
* one ``act`` call.

Usage: ``python benchmarks/update_speed.py [--env cartpole] [--repeats 200]
[--device cpu|cuda] [--amp off|bf16|fp16] [--compile] [overrides ...]``
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daif import maths  # noqa: E402
from daif.protocol import Transition  # noqa: E402
from daif.utils import autocast  # noqa: E402


def pairwise_info_gain(means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """−(1/K) Σ_i ln (1/K) Σ_j exp(−KL[N_i ‖ N_j]) with the full [K, K, ..., D] KL tensor."""
    k = means.shape[0]
    kl = maths.gaussian_kl(means[:, None], stds[:, None], means[None], stds[None])
    return -(torch.logsumexp(-kl, dim=1) - math.log(k)).mean(0)


def ms_per_call(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Mean milliseconds per call after 10 warm-up calls: CPU time of this process on the
    CPU (robust to the other core's load), wall time between synchronisations on a GPU
    (its kernels run asynchronously, so CPU time would miss them)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(10):
        fn()
    sync()
    start = clock()
    for _ in range(repeats):
        fn()
    sync()
    return (clock() - start) / repeats * 1e3


def loss_forward(agent, loss_fn: Callable[[dict], object], batch: dict) -> Callable[[], object]:
    """One loss's forward pass as the gradient step runs it: ``loss_fn`` is the agent's
    (compiled with --compile) and runs under the agent's autocast (--amp)."""

    def call() -> object:
        with autocast(agent.device, agent.amp):
            return loss_fn(batch)

    return call


def with_estimate(agent, estimate: str, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``agent.epistemic_estimate`` set to ``estimate`` (then restored)."""

    def call() -> object:
        saved, agent.epistemic_estimate = agent.epistemic_estimate, estimate
        try:
            return fn()
        finally:
            agent.epistemic_estimate = saved

    return call


def model_step(agent) -> Callable[[], object]:
    """A gradient step on which the model trains too (whatever ``model_update_every``)."""

    def call() -> object:
        saved, agent.model_update_every = agent.model_update_every, 1
        try:
            return agent._gradient_step()
        finally:
            agent.model_update_every = saved

    return call


def critic_only_step(agent) -> Callable[[], object]:
    """A gradient step on which only the critic trains (the other ``model_update_every − 1``
    of every ``model_update_every``)."""

    def call() -> object:
        saved, agent.model_update_every = agent.model_update_every, 1 << 30
        agent.num_updates = 1  # not a multiple of the interval
        try:
            return agent._gradient_step()
        finally:
            agent.model_update_every = saved

    return call


def build_agent(
    preset: str,
    overrides: list[str],
    device: torch.device | str = "cpu",
    amp: str = "off",
    compile: bool = False,
):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=[f"env={preset}", *overrides])
    env = gym.make(cfg.env.id, **cfg.env.kwargs)
    agent = instantiate(
        cfg.agent,
        observation_space=env.observation_space,
        action_space=env.action_space,
        num_envs=1,
        env=env,
        device=device,
        amp=amp,
        compile=compile,
    )
    return agent, env


def fill(agent, env: gym.Env, steps: int, seed: int = 0) -> np.ndarray:
    """Random-policy transitions into the agent's buffer; returns the last observation."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        action = env.action_space.sample()
        nxt, reward, term, trunc, _ = env.step(action)
        agent.observe(
            Transition(
                obs=obs[None],
                action=np.array([action]),
                reward=np.array([reward], np.float32),
                next_obs=nxt[None],
                terminated=np.array([term]),
                truncated=np.array([trunc]),
            )
        )
        obs = env.reset()[0] if term or trunc else nxt
    return obs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="cartpole", help="env preset of the deep agent")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per row")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the losses")
    p.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    if args.amp == "fp16" and device.type != "cuda":
        p.error(f"--amp fp16 needs a CUDA device, got --device {args.device}; use bf16")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    agent, env = build_agent(args.env, args.overrides, device, args.amp, args.compile)
    obs = fill(agent, env, max(2000, agent.batch_size * agent.n_step))

    batch = agent.replay.sample(agent.batch_size, agent.n_step)
    with torch.no_grad():
        z, _ = agent.encoder(agent.preprocess(batch["obs"]).flatten(0, 1))
        means, stds = agent.transition(z, batch["action"].flatten())
    torch.testing.assert_close(
        maths.gaussian_mixture_info_gain(means, stds),
        pairwise_info_gain(means, stds).clamp(min=0),
        atol=1e-4,
        rtol=1e-4,
    )
    n = means.shape[1]

    rows = [
        (
            f"info gain, einsum ({n} state-actions)",
            lambda: maths.gaussian_mixture_info_gain(means, stds),
        ),
        (f"info gain, pairwise KL tensor ({n})", lambda: pairwise_info_gain(means, stds)),
        (
            "critic loss (forward), epistemic terms at every step",
            with_estimate(agent, "exact", loss_forward(agent, agent._critic_fn, batch)),
        ),
        (
            "critic loss (forward), epistemic terms at one sampled step",
            with_estimate(agent, "sampled", loss_forward(agent, agent._critic_fn, batch)),
        ),
        (
            "critic loss (forward), epistemic terms read from the cache",
            with_estimate(agent, "cached", loss_forward(agent, agent._critic_fn, batch)),
        ),
        ("model loss (forward)", loss_forward(agent, agent._model_fn, batch)),
        *(
            (
                f"gradient step, {kind}, epistemic terms {how}",
                with_estimate(agent, estimate, step(agent)),
            )
            for kind, step in (("model + critic", model_step), ("critic only", critic_only_step))
            for estimate, how in (
                ("exact", "at every step"),
                ("sampled", "at one sampled step"),
                ("cached", "from the cache (model steps refresh it)"),
            )
        ),
        ("act (one observation)", lambda: agent.act(obs[None], None, np.array([False]))),
    ]
    if device.type == "cuda":
        where, clock = torch.cuda.get_device_name(device), "wall"
    else:
        where, clock = platform.machine(), "CPU"
    switches = f"amp {args.amp}, compile {'on' if args.compile else 'off'}"
    print(f"# Deep agent update cost: env={args.env} {' '.join(args.overrides)}")
    print(
        f"\n{where}, torch {torch.__version__}, 1 CPU thread, {switches}; batch "
        f"{agent.batch_size} × n_step {agent.n_step}; {clock} ms per call, "
        f"mean of {args.repeats}\n"
    )
    print(f"| what | {clock} ms / call |")
    print("|---|---:|")
    for label, fn in rows:
        print(f"| {label} | {ms_per_call(fn, args.repeats, device):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
