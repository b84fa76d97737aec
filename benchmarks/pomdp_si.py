"""Sophisticated inference: daif.pomdp against pymdp 1.0's ``si_policy_search``, same episodes.

On the T-maze and the foraging grid world (start cell unknown to the agent), for search
depths 2–4, both planners act in the same seeded episodes: state inference from the
observation (the empirical prior of the last action), a sophisticated-inference search over
one-step actions, the argmax action. Reported: success rate (T-maze: the rewarded arm;
grid: the food reached before the step limit) and process-CPU time per plan (pymdp jitted,
compile time excluded: the first plan of each depth is a warm-up that is not counted).

daif: ``Agent(planning="sophisticated", policy_len=depth)`` (pruning 1/16 for actions and
outcomes, as SPM). pymdp: ``si_policy_search(horizon=depth, gamma=16)`` with its defaults
(pruning 1/16, at most 5000 nodes). Both at γ = 16, one CPU thread.

Usage: ``python benchmarks/pomdp_si.py [--episodes 10] [--depths 2 3 4]``
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse
import importlib.metadata as md
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import daif.envs  # noqa: E402, F401  (registers the envs)
from daif.pomdp import Agent, GenerativeModel  # noqa: E402
from daif.pomdp.tasks import build_model  # noqa: E402

GAMMA = 16.0
Planner = Callable[[np.ndarray, bool], int]  # (observation, episode start) -> env action


def daif_planner(model: GenerativeModel, depth: int, control: int) -> Planner:
    agent = Agent(model=model, planning="sophisticated", policy_len=depth, gamma=GAMMA)

    def act(obs: np.ndarray, start: bool) -> int:
        if start:
            agent.reset()
        agent.infer_states(torch.as_tensor(obs).reshape(1, -1))
        agent.infer_policies()
        return int(agent.sample_action()[0, control])  # argmax (and the next prior)

    return act


def pymdp_planner(model: GenerativeModel, depth: int, control: int) -> Planner:
    import jax
    import jax.numpy as jnp
    from pymdp.agent import Agent as PymdpAgent
    from pymdp.planning.si import si_policy_search

    def arr(ts: list[torch.Tensor]) -> list[jax.Array]:
        return [jnp.asarray(t.numpy(), dtype=jnp.float32) for t in ts]

    agent = PymdpAgent(
        arr(model.A),
        arr(model.B),
        arr([torch.log_softmax(c, -1) for c in model.C]),  # its C is ln P̃(o)
        arr(model.D),
        policy_len=1,
        gamma=GAMMA,
        sampling_mode="full",
    )
    search = si_policy_search(horizon=depth, gamma=GAMMA)
    infer = jax.jit(lambda ag, o, p: ag.infer_states(o, empirical_prior=p))
    policies = np.asarray(agent.policies.policy_arr)
    state: dict[str, Any] = {"prior": agent.D, "key": jax.random.PRNGKey(0)}

    def act(obs: np.ndarray, start: bool) -> int:
        prior = agent.D if start else state["prior"]
        qs = infer(agent, [jnp.array([int(o)]) for o in np.atleast_1d(obs)], prior)
        state["key"], key = jax.random.split(state["key"])
        q_pi, _ = search(agent, qs=[q[:, -1] for q in qs], rng_key=key)
        best = int(jnp.argmax(q_pi[0]))
        action = jnp.asarray(policies[best, 0])[None]
        state["prior"] = agent.update_empirical_prior(action, qs)
        return int(policies[best, 0, control])

    return act


def run(env: gym.Env, act: Planner, episodes: int) -> tuple[float, float]:
    """(success rate, CPU seconds per plan) over seeded episodes, after one warm-up plan."""
    obs, _ = env.reset(seed=10_000)
    act(obs, True)  # compiles pymdp's search for this depth
    wins, spent, plans = 0, 0.0, 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        start, done, ret = True, False, 0.0
        while not done:
            t0 = time.process_time()
            a = act(obs, start)
            spent += time.process_time() - t0
            plans += 1
            obs, reward, terminated, truncated, info = env.step(a)
            ret += reward
            start, done = False, terminated or truncated
        wins += bool(info.get("success", ret > 0))
    return wins / episodes, spent / plans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--grid-size", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pomdp_si.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    envs = {
        "T-maze": gym.make("daif/TMaze-v0"),
        f"grid {args.grid_size}×{args.grid_size}, unknown start": gym.make(
            "daif/GridWorld-v0", size=args.grid_size
        ),
    }
    lines = [
        "| task | depth | daif success | daif ms/plan | pymdp 1.0 success | pymdp 1.0 ms/plan |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, env in envs.items():
        model = build_model(env)
        control = next(f for f, n in enumerate(model.num_controls) if n > 1)
        for depth in args.depths:
            ours = run(env, daif_planner(model, depth, control), args.episodes)
            theirs = run(env, pymdp_planner(model, depth, control), args.episodes)
            row = (
                f"| {name} | {depth} | {ours[0]:.0%} | {1e3 * ours[1]:.2f} "
                f"| {theirs[0]:.0%} | {1e3 * theirs[1]:.2f} |"
            )
            print(row, flush=True)
            lines.append(row)
    table = "\n".join(lines)
    text = (
        "# Sophisticated inference: daif.pomdp vs pymdp 1.0 `si_policy_search`\n\n"
        f"Command: `python benchmarks/pomdp_si.py --episodes {args.episodes} "
        f"--depths {' '.join(map(str, args.depths))} --grid-size {args.grid_size}`  \n"
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  \n"
        f"Versions: torch {torch.__version__}, inferactively-pymdp "
        f"{md.version('inferactively-pymdp')}, jax {md.version('jax')}; one CPU thread each\n\n"
        f"{args.episodes} seeded episodes per row (the same for both), argmax actions, γ = 16; "
        "time per plan is process CPU time of state inference + search, pymdp jitted (its "
        "compilation excluded).\n\n"
        f"{table}\n"
    )
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
