"""Speed of daif.pomdp against pymdp 1.0 (JAX, jitted) on the same models, in one run.

One agent step is, for the whole batch of agents:

* daif: ``Agent.step(obs)`` = ``infer_states`` (empirical prior of the last action, then
  fixed-point iteration) + ``infer_policies`` + ``sample_action``;
* pymdp 1.0: one ``equinox.filter_jit``-compiled function of ``infer_states`` +
  ``infer_policies`` + ``sample_action`` + ``update_empirical_prior``, after warm-up
  (compilation excluded), results blocked on.

Observations come from the model itself acting as the environment (hidden states sampled
from D, A and B under the daif agent's actions, episodes of 5 steps), recorded once and
replayed to both agents (converted to each library's arrays beforehand); only the step
calls are timed (between episodes: daif ``reset()``, pymdp the prior D). Both compute the
same expected free energy (daif with ``info_gain="per_modality"``, pymdp 1.0's definition),
choose actions from the action marginals, deterministic, γ = α = 16, and run their default
state inference (daif: fixed-point iteration stopped once the free
energy settles, at most 10 sweeps; pymdp: 16 sweeps). Both run on one CPU thread: torch
``set_num_threads(1)``, XLA ``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` (set before JAX loads), ``OPENBLAS_NUM_THREADS=1`` (daif
runs small models in NumPy: the T-maze and the single grid). Cases:

    (a) the T-maze (policy_len 2),
    (b) a 10×10 foraging grid world with policy_len 3 (125 policies),
    (c) a batch of 256 agents on that grid (rate in agent-steps/s),
    (d) 64 states, 100 observations, 1000 one-step policies.

Rates use process CPU time per step (the box may be shared; with one thread CPU time is the
cost of the call): after one warm-up pass, the median of five rounds, each library in its
own block. Results go to ``benchmarks/results/pomdp_speed.md``.

Usage: ``python benchmarks/pomdp_speed.py [--quick] [--no-pymdp] [--cases abcd]``
"""

from __future__ import annotations

import os

# before JAX and NumPy are imported: one XLA CPU thread, one OpenBLAS thread (daif's
# small-model path runs in NumPy), like torch below
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib.metadata as md
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daif.envs.gridworld import GridWorldEnv  # noqa: E402
from daif.pomdp import Agent, GenerativeModel  # noqa: E402
from daif.pomdp.tasks import gridworld_model, tmaze_model  # noqa: E402

GAMMA = ALPHA = 16.0


EPISODE_LEN = 5


def generative_process(
    model: GenerativeModel, agent: Agent, steps: int, seed: int
) -> list[tuple[torch.Tensor, bool]]:
    """Observations of ``steps`` agent steps, sampled from the model itself acting as the
    environment (true states s ~ D, o ~ A[:, s], s' ~ B[:, s, a]) under ``agent``'s own
    actions, episodes of ``EPISODE_LEN`` steps: [(obs ``[batch, M]``, episode start)]."""
    rng = np.random.default_rng(seed)
    A = [a.reshape(a.shape[0], -1).numpy() for a in model.A]
    B = [b.numpy() for b in model.B]
    D = [d.numpy() for d in model.D]
    n = agent.batch_size

    def draw(p: np.ndarray) -> np.ndarray:  # one sample per column of p [K, n]
        return (rng.random(n)[None] > np.cumsum(p, 0)).sum(0).clip(max=p.shape[0] - 1)

    out = []
    for t in range(steps):
        if t % EPISODE_LEN == 0:
            s = [draw(np.repeat(d[:, None], n, 1)) for d in D]
            agent.reset()
        joint = np.ravel_multi_index(s, model.num_states)
        obs = torch.tensor(np.stack([draw(a[:, joint]) for a in A], 1))
        out.append((obs, t % EPISODE_LEN == 0))
        act = agent.step(obs).numpy()
        s = [draw(b[:, s[f], act[:, f]]) for f, b in enumerate(B)]
    return out


ROUNDS = 5


def time_steps(step: Callable[[Any, bool], object], seq: list, min_time: float) -> float:
    """Process-CPU seconds per ``step(obs, start)`` call, cycling through the sequence
    (which opens with an episode start) until ``min_time`` has been spent (≥ 3 calls)."""
    spent, n = 0.0, 0
    while spent < min_time or n < 3:
        obs, start = seq[n % len(seq)]
        t0 = time.process_time()
        step(obs, start)
        spent += time.process_time() - t0
        n += 1
    return spent / n


def median_time(step: Callable[[Any, bool], object], seq: list, min_time: float) -> float:
    """Median per-step time of ``ROUNDS`` rounds of ``min_time / ROUNDS`` each, after one
    warm-up pass (the median is robust to load spikes on a shared machine). Each library
    is timed in its own block: XLA's worker threads can stay busy for a moment after a
    large jitted call, which would count against whatever process-CPU timing ran next."""
    for obs, start in seq:
        step(obs, start)
    return float(np.median([time_steps(step, seq, min_time / ROUNDS) for _ in range(ROUNDS)]))


def random_model(seed: int, num_states: int, num_obs: int, num_actions: int) -> GenerativeModel:
    """One factor, one modality, Dirichlet(1) columns; C standard normal."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(num_obs), size=num_states).T
    B = rng.dirichlet(np.ones(num_states), size=(num_states, num_actions)).transpose(2, 0, 1)
    C = rng.normal(size=num_obs)
    return GenerativeModel(A, B, C)


def pymdp_stepper(
    model: GenerativeModel, policy_len: int, batch: int, seq: list
) -> tuple[Callable[[Any, bool], object], list]:
    """A jitted pymdp 1.0 agent step on ``model``, threading the empirical prior, and
    ``seq`` with its observations as JAX arrays (one ``[batch]`` array per modality)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from pymdp.agent import Agent as PymdpAgent

    def arr(ts: list[torch.Tensor]) -> list[jax.Array]:
        return [jnp.asarray(t.numpy(), dtype=jnp.float32) for t in ts]

    # pymdp 1.0 uses C as the log-preference; daif uses ln σ(C): give it the same numbers
    lnC = [torch.log_softmax(c, -1) for c in model.C]
    agent = PymdpAgent(
        arr(model.A),
        arr(model.B),
        arr(lnC),
        arr(model.D),
        policy_len=policy_len,
        gamma=GAMMA,
        alpha=ALPHA,
        sampling_mode="marginal",
        action_selection="deterministic",
        batch_size=batch,
    )

    @eqx.filter_jit
    def step(
        agent: PymdpAgent, obs: list[jax.Array], prior: list[jax.Array]
    ) -> tuple[list[jax.Array], jax.Array]:
        qs = agent.infer_states(obs, empirical_prior=prior)
        q_pi, _ = agent.infer_policies(qs)
        action = agent.sample_action(q_pi)
        return agent.update_empirical_prior(action, qs), action

    state = {"prior": agent.D}

    def run(obs: list[jax.Array], start: bool) -> None:
        prior = agent.D if start else state["prior"]
        prior, action = step(agent, obs, prior)
        action.block_until_ready()
        state["prior"] = prior

    return run, [([jnp.asarray(o) for o in obs.T.numpy()], start) for obs, start in seq]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing windows")
    ap.add_argument("--no-pymdp", action="store_true", help="time daif only")
    ap.add_argument(
        "--cases", default="abcd", help="which cases to run, e.g. 'a' (default all: abcd)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pomdp_speed.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    min_time = 0.5 if args.quick else 2.0
    use_pymdp = not args.no_pymdp
    if use_pymdp:
        try:
            import pymdp.agent  # noqa: F401
        except ImportError:
            sys.exit("pymdp 1.0 is not installed: pip install -e '.[bench]' (or --no-pymdp)")

    grid_env = GridWorldEnv(size=10, num_colours=4, layout_seed=0)
    grid = gridworld_model(grid_env)
    cases = [
        ("(a) T-maze, policy_len 2", tmaze_model(), 2, 1),
        ("(b) grid 10×10, policy_len 3", grid, 3, 1),
        ("(c) grid 10×10, policy_len 3, batch 256", grid, 3, 256),
        ("(d) 64 states, 100 obs, 1000 policies", random_model(0, 64, 100, 1000), 1, 1),
    ]
    cases = [c for c in cases if c[0][1] in args.cases]
    rows = []
    for name, model, policy_len, batch in cases:
        agent = Agent(
            model=model,
            policy_len=policy_len,
            batch_size=batch,
            gamma=GAMMA,
            alpha=ALPHA,
            info_gain="per_modality",
        )
        seq = generative_process(model, agent, 4 * EPISODE_LEN, seed=0)

        def ours(obs: torch.Tensor, start: bool, agent: Agent = agent) -> None:
            if start:
                agent.reset()
            agent.step(obs)

        ours_ms = 1e3 * median_time(ours, seq, min_time)
        theirs_ms = float("nan")
        if use_pymdp:
            theirs, seq_jax = pymdp_stepper(model, policy_len, batch, seq)
            theirs_ms = 1e3 * median_time(theirs, seq_jax, min_time)
        rows.append((name, agent.num_policies, batch, ours_ms, theirs_ms))
        print(f"{name}: daif {ours_ms:.3f} ms, pymdp {theirs_ms:.3f} ms per step", flush=True)

    lines = [
        "| case | policies | pymdp 1.0 ms/step | daif ms/step | daif agent-steps/s "
        "| daif speed / pymdp |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, npol, batch, ours, theirs in rows:
        ratio = f"{theirs / ours:.2f}×" if np.isfinite(theirs) else "n/a"
        lines.append(
            f"| {name} | {npol} | {theirs:.3f} | {ours:.3f} | {1e3 * batch / ours:,.0f} | {ratio} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    versions = f"torch {torch.__version__}"
    if use_pymdp:
        versions += (
            f", inferactively-pymdp {md.version('inferactively-pymdp')}, "
            f"jax {md.version('jax')}, jaxlib {md.version('jaxlib')}"
        )
    text = (
        "# daif.pomdp speed vs pymdp 1.0\n\n"
        f"Command: `python benchmarks/pomdp_speed.py{' --quick' if args.quick else ''}`  \n"
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), one thread each, "
        f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at the end  \n"
        f"Versions: {versions}\n\n"
        "One step = state inference + policy inference + action (+ the next empirical prior) "
        "for the whole batch, after warm-up; pymdp 1.0 jitted with `equinox.filter_jit` "
        "(compile time excluded). Process CPU time per step, median of 5 rounds per library; "
        "same models, same observations, same expected free energy (per-modality "
        "information gain), both single-threaded, same process.\n\n"
        f"{table}\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
