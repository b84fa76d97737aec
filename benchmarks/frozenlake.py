"""FrozenLake 4×4: the active inference planner's success rate beside value iteration's.

Both play the same episodes (same env seeds, the env's 100-step limit) in one run:

* ``daif.pomdp`` agents (model from the env's transition table, C = −steps to goal,
  see :mod:`daif.pomdp.tasks`) with enumerated (open-loop) or sophisticated
  (closed-loop tree search) planning at several horizons, acting greedily;
* the optimal policy from value iteration on the same table (reward 1 at the goal,
  discount 0.999), whose exact infinite-horizon success probability is also printed.

Usage: ``python benchmarks/frozenlake.py [--episodes 1000] [--slippery/--no-slippery]``;
writes ``benchmarks/results/frozenlake.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daif.pomdp import Agent  # noqa: E402
from daif.pomdp.tasks import toy_text_model  # noqa: E402


def _q_values(P: dict, v: np.ndarray, na: int, gamma: float) -> np.ndarray:
    q = np.zeros((len(v), na))
    for s in range(len(v)):
        for a in range(na):
            for prob, nxt, rew, done in P[s][a]:
                q[s, a] += prob * (rew + (0.0 if done else gamma * v[nxt]))
    return q


def value_iteration(
    env: gym.Env, gamma: float = 0.999, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy optimal policy (reward 1 at the goal, discount ``gamma``) and its exact
    undiscounted success probability from every state.

    A discount just below 1 breaks the ties of the undiscounted problem (where every
    safe loop is as good as progress) in favour of reaching the goal sooner.
    """
    P = env.unwrapped.P
    ns, na = env.observation_space.n, env.action_space.n
    v = np.zeros(ns)
    while True:
        new = _q_values(P, v, na, gamma).max(1)
        if np.abs(new - v).max() < tol:
            break
        v = new
    pi = _q_values(P, v, na, gamma).argmax(1)
    success = np.zeros(ns)  # policy evaluation, undiscounted
    while True:
        q = _q_values(P, success, na, 1.0)
        new = q[np.arange(ns), pi]
        if np.abs(new - success).max() < tol:
            return new, pi
        success = new


def play(env_kwargs: dict, episodes: int, seed: int, act) -> float:
    """Success rate of ``act(obs [n], first [n]) -> actions [n]`` over ``episodes`` episodes."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("FrozenLake-v1", **env_kwargs)] * episodes,
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    obs, _ = envs.reset(seed=seed)
    done = np.zeros(episodes, dtype=bool)
    success = np.zeros(episodes, dtype=bool)
    first = True
    while not done.all():
        obs, reward, term, trunc, _ = envs.step(act(obs, first))
        first = False
        new = (term | trunc) & ~done
        success[new] = reward[new] > 0
        done |= term | trunc
    envs.close()
    return float(success.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slippery", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--planners",
        nargs="+",
        default=["enumerate:1", "enumerate:2", "enumerate:3", "sophisticated:2", "sophisticated:3"],
        help="planning:policy_len pairs",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "frozenlake.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = {"is_slippery": args.slippery}
    env = gym.make("FrozenLake-v1", **kw)
    v, pi = value_iteration(env)
    rows = []
    t0 = time.perf_counter()
    vi_rate = play(kw, args.episodes, args.seed, lambda obs, first: pi[obs])
    rows.append(("value iteration (optimal)", vi_rate, time.perf_counter() - t0))
    print(f"value iteration: {vi_rate:.3f} (exact infinite-horizon success {v[0]:.3f})", flush=True)
    for spec in args.planners:
        planning, horizon = spec.split(":")
        agent = Agent(
            model=toy_text_model(env),
            policy_len=int(horizon),
            planning=planning,
            batch_size=args.episodes,
            action_selection="deterministic",
        )

        def act(obs: np.ndarray, first: bool, agent: Agent = agent) -> np.ndarray:
            if first:
                agent.reset()
            return agent.step(torch.as_tensor(obs).reshape(-1, 1))[:, 0].numpy()

        t0 = time.perf_counter()
        rate = play(kw, args.episodes, args.seed, act)
        rows.append(
            (f"daif.pomdp, {planning}, policy_len {horizon}", rate, time.perf_counter() - t0)
        )
        print(f"{planning} policy_len {horizon}: {rate:.3f}", flush=True)

    se = lambda p: np.sqrt(p * (1 - p) / args.episodes)  # noqa: E731
    lines = [
        "| policy | success rate | ± s.e. | wall s |",
        "|---|---:|---:|---:|",
        *[f"| {n} | {r:.3f} | {se(r):.3f} | {t:.1f} |" for n, r, t in rows],
    ]
    table = "\n".join(lines)
    print()
    print(table)
    text = (
        f"# FrozenLake 4×4 ({'slippery' if args.slippery else 'deterministic'})\n\n"
        f"Command: `python benchmarks/frozenlake.py --episodes {args.episodes} --seed {args.seed}"
        f" {'--slippery' if args.slippery else '--no-slippery'}"
        f" --planners {' '.join(args.planners)}`  \n"
        f"{args.episodes} episodes per row, the same env seeds, 100-step limit. Value "
        f"iteration's exact infinite-horizon success probability from the start: {v[0]:.3f}.\n\n"
        f"{table}\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
