"""Speed of daif.pomdp against pymdp 0.0.7.1 (numpy) on the same models, same run.

Times ``infer_states`` + ``infer_policies`` per agent step, after warm-up, for

    (a) the T-maze (policy_len 2),
    (b) a 10×10 foraging grid world with policy_len 3 (125 policies),
    (c) a batch of 256 agents on that grid (steps/s counts agent-steps),
    (d) 64 states, 100 observations, 1000 one-step policies (and the EFE alone),

and prints a table with the ratio to pymdp (when ``inferactively-pymdp`` is
installed). pymdp runs one agent at a time, so its batch-of-256 rate is its
single-agent rate (timing 256 of its agents would take minutes and give the same
number). Results go to ``benchmarks/results/pomdp_speed.md``.

Usage: ``python benchmarks/pomdp_speed.py [--device cpu|cuda] [--threads 1] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daif.envs.gridworld import GridWorldEnv  # noqa: E402
from daif.pomdp import Agent, GenerativeModel, control  # noqa: E402
from daif.pomdp.tasks import gridworld_model, tmaze_model  # noqa: E402

try:
    from pymdp import utils as pu
    from pymdp.agent import Agent as PymdpAgent

    HAVE_PYMDP = True
except ImportError:  # the `bench` extra is not installed
    HAVE_PYMDP = False


def timeit(
    fn: Callable[[], object], min_time: float, warmup: int, sync: Callable[[], None]
) -> tuple[float, float]:
    """(wall, process-CPU) seconds per call: warm up, then repeat until ``min_time`` (≥ 3 calls).

    On a shared machine the wall clock includes time the process waited for a core;
    with one thread the process CPU time is the cost of the call itself.
    """
    for _ in range(warmup):
        fn()
    sync()
    n, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        sync()
        elapsed = time.perf_counter() - start
        if n >= 3 and elapsed >= min_time:
            return elapsed / n, (time.process_time() - cpu0) / n


def random_model(seed: int, num_states: int, num_obs: int, num_actions: int) -> GenerativeModel:
    """One factor, one modality, Dirichlet(1) columns; C standard normal."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(num_obs), size=num_states).T
    B = rng.dirichlet(np.ones(num_states), size=(num_states, num_actions)).transpose(2, 0, 1)
    C = rng.normal(size=num_obs)
    return GenerativeModel(A, B, C)


def to_pymdp(model: GenerativeModel, policy_len: int) -> PymdpAgent:
    A = pu.obj_array(model.num_modalities)
    for m, a in enumerate(model.A):
        A[m] = a.numpy()
    B = pu.obj_array(model.num_factors)
    for f, b in enumerate(model.B):
        B[f] = b.numpy()
    C = pu.obj_array(model.num_modalities)
    for m, c in enumerate(model.C):
        C[m] = c.numpy()
    D = pu.obj_array(model.num_factors)
    for f, d in enumerate(model.D):
        D[f] = d.numpy()
    return PymdpAgent(A=A, B=B, C=C, D=D, policy_len=policy_len)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    ap.add_argument("--quick", action="store_true", help="shorter timing windows")
    ap.add_argument("--no-pymdp", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pomdp_speed.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    min_time = 0.5 if args.quick else 2.0
    use_pymdp = HAVE_PYMDP and not args.no_pymdp

    def pick(times: tuple[float, float]) -> float:
        """CPU time on the CPU (immune to other jobs on a shared box), wall time on a GPU."""
        return times[1] if device.type == "cpu" else times[0]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    grid_env = GridWorldEnv(size=10, num_colours=4, layout_seed=0)
    grid = gridworld_model(grid_env)
    grid_obs = tuple(int(x) for x in grid_env.reset(seed=0)[0])
    cases = [
        ("(a) T-maze, policy_len 2", tmaze_model(), 2, 1, (0, 0, 0)),
        ("(b) grid 10×10, policy_len 3", grid, 3, 1, grid_obs),
        ("(c) grid 10×10, policy_len 3, batch 256", grid, 3, 256, grid_obs),
        ("(d) 64 states, 100 obs, 1000 policies", random_model(0, 64, 100, 1000), 1, 1, (7,)),
    ]
    rows = []
    pymdp_single: dict[int, float] = {}
    efe_ms = g_only_ms = float("nan")
    for name, model, policy_len, batch, obs in cases:
        agent = Agent(model=model, policy_len=policy_len, batch_size=batch, device=device)
        obs_t = torch.tensor([list(obs)] * batch, device=device)

        def ours(agent: Agent = agent, obs_t: torch.Tensor = obs_t) -> None:
            agent.infer_states(obs_t)
            agent.infer_policies()

        wall, cpu = timeit(ours, min_time, 5, sync)
        sec = cpu if device.type == "cpu" else wall
        sps = batch / sec
        if name.startswith("(d)"):
            agent.infer_states(obs_t)
            efe_ms = 1e3 * pick(timeit(agent.infer_policies, min_time, 5, sync))
            # G from the 1000 predicted state distributions q(s|π) alone (no B products)
            pred = torch.softmax(torch.randn(1, len(agent.policies), 64, device=device), -1)

            def g_only(pred: torch.Tensor = pred, agent: Agent = agent) -> torch.Tensor:
                util, sig, _ = control.state_efe_terms(pred, agent.prep)
                return control.posterior_over_policies(-(util + sig), agent.gamma)

            g_only_ms = 1e3 * pick(timeit(g_only, min_time, 5, sync))
        ref_sps = float("nan")
        if use_pymdp:
            key = id(model) * 10 + policy_len
            if key not in pymdp_single:
                ref = to_pymdp(model, policy_len)

                def theirs(ref: PymdpAgent = ref, obs: tuple = obs) -> None:
                    ref.infer_states(list(obs))
                    ref.infer_policies()

                pymdp_single[key] = 1.0 / pick(timeit(theirs, min_time, 1, lambda: None))
            ref_sps = pymdp_single[key]
        rows.append((name, len(agent.policies), wall * 1e3, sec * 1e3, sps, ref_sps))
        print(f"{name}: {wall * 1e3:.3f} ms wall, {cpu * 1e3:.3f} ms CPU per call", flush=True)

    clock = "CPU" if device.type == "cpu" else "wall"
    header = (
        f"| case | policies | wall ms / call | {clock} ms / call | daif agent-steps/s "
        "| pymdp agent-steps/s | ratio |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, npol, wall_ms, ms, sps, ref in rows:
        ratio = f"{sps / ref:,.1f}×" if np.isfinite(ref) else "n/a"
        ref_s = f"{ref:,.1f}" if np.isfinite(ref) else "not installed"
        lines.append(
            f"| {name} | {npol} | {wall_ms:.3f} | {ms:.3f} | {sps:,.1f} | {ref_s} | {ratio} |"
        )
    lines.append("")
    lines.append(
        "EFE for 1000 one-step policies, 64 states, 100 outcomes (target < 1 ms): "
        f"full `infer_policies` (B·q for 1000 actions, then G and q(π)) **{efe_ms:.3f} ms**; "
        f"G and q(π) from the 1000 predicted state distributions **{g_only_ms:.3f} ms**"
    )
    table = "\n".join(lines)
    print()
    print(table)
    env_line = (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"device {device}, {args.threads} thread(s), python {platform.python_version()}"
    )
    text = (
        "# daif.pomdp speed vs pymdp\n\n"
        "Command: `python benchmarks/pomdp_speed.py "
        f"--device {args.device} --threads {args.threads}"
        f"{' --quick' if args.quick else ''}`  \n"
        f"Machine: {env_line}  \n"
        f"pymdp: {'inferactively-pymdp 0.0.7.1 (numpy)' if use_pymdp else 'not run'}\n\n"
        "One call = `infer_states(obs)` + `infer_policies()` for the whole batch, after warm-up. "
        "pymdp runs one agent per call, so its batch rate equals its single-agent rate. "
        f"Rates and ratios use {clock} time per call (both libraries single-threaded, same "
        f"process; the CPU box is shared, load average {os.getloadavg()[0]:.1f} at the end).\n\n"
        f"{table}\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
