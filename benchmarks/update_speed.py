"""Cost of one gradient step of the deep agent, and of its parts.

Builds the agent of an env preset exactly as the trainer does, fills its replay buffer
with random-policy transitions, and times, after warm-up, CPU seconds of this process on the
CPU, or wall seconds between CUDA synchronisations on a GPU:

* the ensemble information gain on the critic's batch (B·L state-actions), by
  ``maths.gaussian_mixture_info_gain`` and by the direct definition that builds every
  pairwise KL as one ``[K, K, B·L, Z]`` tensor (what it replaced);
* the critic's and the model's loss (forward only), the critic's with its epistemic
  terms evaluated at every step of the n-step target or read from the replay cache
  (``epistemic_estimate``);
* a whole gradient step (sample, losses, backward, clip, Adam, target update), one on
  which the model trains too (with the cache refresh, for ``cached``) and one on which
  only the critic does (``model_update_every`` > 1 alternates the two), per estimate;
* one ``act`` call.

For the recurrent agent (``agent=daif_rssm``) the parts are not separable (the critic reads
the filter's states), so it times the whole gradient step (filter B sequences of T steps,
their free energy, the critic) and one ``act`` call.

Usage: ``python benchmarks/update_speed.py [--env cartpole] [--repeats 200]
[--device cpu|cuda] [--amp off|bf16|fp16] [--compile] [overrides ...]``
"""

from __future__ import annotations

import argparse
import dataclasses
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
from daif.build import make_agent  # noqa: E402
from daif.deep import RecurrentActiveInferenceAgent  # noqa: E402
from daif.deep.epistemic import EPISTEMIC_SOURCES  # noqa: E402
from daif.envs import make_env  # noqa: E402
from daif.protocol import AgentContext, Transition  # noqa: E402
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
    """``fn`` run with the agent's epistemic source replaced by one of kind ``estimate``
    (``exact`` or ``cached``; the same weights and baseline), then restored."""
    c = agent.config
    source = EPISTEMIC_SOURCES[estimate](
        agent.world_model, c.ambiguity_weight, c.info_gain_weight, c.critic_trains_encoder
    )
    source.baseline = agent.epistemic.baseline

    def call() -> object:
        saved, agent.epistemic = agent.epistemic, source
        try:
            return fn()
        finally:
            agent.epistemic = saved

    return call


def with_model_every(agent, every: int, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``agent.model_update_every`` set to ``every`` (then restored)."""

    def call() -> object:
        saved = agent.config
        agent.config = dataclasses.replace(saved, model_update_every=every)
        try:
            return fn()
        finally:
            agent.config = saved

    return call


def model_step(agent) -> Callable[[], object]:
    """A gradient step on which the model trains too (whatever ``model_update_every``)."""
    return with_model_every(agent, 1, agent._gradient_step)


def critic_only_step(agent) -> Callable[[], object]:
    """A gradient step on which only the critic trains (the other ``model_update_every − 1``
    of every ``model_update_every``)."""

    def call() -> object:
        agent.num_updates = 1  # not a multiple of the interval
        return agent._gradient_step()

    return with_model_every(agent, 1 << 30, call)


def build_agent(
    preset: str,
    overrides: list[str],
    device: torch.device | str = "cpu",
    amp: str = "off",
    compile: bool = False,
):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=[f"env={preset}", *overrides])
    env = make_env(cfg.env.id, **cfg.env.kwargs)  # daif/ ids included
    ctx = AgentContext(
        env.observation_space,
        env.action_space,
        device=torch.device(device),
        amp=amp,
        compile=compile,
    )
    return make_agent(cfg.agent, ctx), env


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


def feed_forward_rows(agent, obs: np.ndarray) -> list[tuple[str, Callable[[], object]]]:
    """The feed-forward agent's rows: the information gain both ways, each loss, the
    gradient step per kind and estimate, and ``act``."""
    c = agent.config
    batch = agent.replay.sample(c.batch_size, c.n_step)
    with torch.no_grad():
        z = agent.world_model.encode(batch["obs"].flatten(0, 1))
        means, stds = agent.world_model.transition(z, batch["action"].flatten())
    torch.testing.assert_close(
        maths.gaussian_mixture_info_gain(means, stds),
        pairwise_info_gain(means, stds).clamp(min=0),
        atol=1e-4,
        rtol=1e-4,
    )
    n = means.shape[1]

    def model_loss(b: dict) -> object:
        return agent._model_fn(b, c.free_nats)

    return [
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
            "critic loss (forward), epistemic terms read from the cache",
            with_estimate(agent, "cached", loss_forward(agent, agent._critic_fn, batch)),
        ),
        ("model loss (forward)", loss_forward(agent, model_loss, batch)),
        *(
            (
                f"gradient step, {kind}, epistemic terms {how}",
                with_estimate(agent, estimate, step(agent)),
            )
            for kind, step in (("model + critic", model_step), ("critic only", critic_only_step))
            for estimate, how in (
                ("exact", "at every step"),
                ("cached", "from the cache (model steps refresh it)"),
            )
        ),
        ("act (one observation)", lambda: agent.act(obs[None], None, np.array([False]))),
    ]


def recurrent_act(agent, obs: np.ndarray) -> Callable[[], object]:
    """One ``act`` call of the recurrent agent, its memory carried from call to call."""
    state = [agent.initial_state(1)]

    def call() -> object:
        _, state[0] = agent.act(obs[None], state[0], np.array([False]))
        return state[0]

    return call


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
    c = agent.config
    if isinstance(agent, RecurrentActiveInferenceAgent):
        obs = fill(agent, env, max(2000, c.batch_size * c.seq_len))
        shape = f"{c.batch_size} sequences × {c.seq_len} steps"
        rows = [
            ("gradient step: filter, free energy, critic", agent._gradient_step),
            ("act (one observation, memory carried)", recurrent_act(agent, obs)),
        ]
    else:
        obs = fill(agent, env, max(2000, c.batch_size * c.n_step))
        shape = f"batch {c.batch_size} × n_step {c.n_step}"
        rows = feed_forward_rows(agent, obs)
    if device.type == "cuda":
        where, clock = torch.cuda.get_device_name(device), "wall"
    else:
        where, clock = platform.machine(), "CPU"
    switches = f"amp {args.amp}, compile {'on' if args.compile else 'off'}"
    print(f"# Deep agent update cost: env={args.env} {' '.join(args.overrides)}")
    print(
        f"\n{where}, torch {torch.__version__}, 1 CPU thread, {switches}; {shape}; "
        f"{clock} ms per call, "
        f"mean of {args.repeats}\n"
    )
    print(f"| what | {clock} ms / call |")
    print("|---|---:|")
    for label, fn in rows:
        print(f"| {label} | {ms_per_call(fn, args.repeats, device):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
