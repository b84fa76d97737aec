"""Learning curves of ``sample_efficiency.py`` runs: every seed, and the IQM with a 95% CI.

One PNG, two panels, x = env steps, y = evaluation return (mean over the evaluation
episodes), a dashed line at the target:

* left: every seed's evaluation history, thin lines, one colour per algorithm;
* right: per algorithm, the interquartile mean (IQM) over seeds at each step, shaded
  with its 95% stratified bootstrap confidence interval (rliable, Agarwal et al. 2021,
  "Deep RL at the edge of the statistical precipice").

All runs are put on one step grid first (:func:`score_matrices`). A run that ended
before the grid does — with ``--stop-at-target`` it ends at its first evaluation ≥ the
target; a run can also simply be shorter — is carried forward at its last evaluation.
The protocol counts a stopped run as solved from then on (that is why it stopped), so
dropping it would leave only the unsolved seeds in the later part of the curve and drag
the IQM down; the plot says so in its caption.

The IQM is rliable's ``aggregate_iqm``, ``scipy.stats.trim_mean(scores, 0.25)``, which
cuts ⌊0.25·n⌋ seeds from each end: with 4 seeds the mean of the middle 2, with 5 the
middle 3, with 8 the middle 4; with fewer than 4 seeds it is the plain mean.

Usage (one PNG beside each JSON; several JSONs with ``--out`` merge into one plot)::

    python benchmarks/curves.py benchmarks/results/cartpole.json
    python benchmarks/curves.py benchmarks/results/cartpole.json \\
        benchmarks/results/cartpole_seeds5-9.json --out /tmp/cartpole_10seeds.png

``sample_efficiency.py`` draws the same plot beside its report (``<out>.png``).
Needs matplotlib and rliable (the ``bench`` extra); matplotlib runs on its Agg
canvas, no display needed.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent

CARRY_NOTE = (
    "A run that stopped early (at its first evaluation ≥ target with --stop-at-target, or "
    "a shorter run) is carried forward at its last evaluation: the protocol counts a "
    "stopped run as solved."
)


class Run(Protocol):
    """What is read from a run: ``sample_efficiency.RunResult`` has these fields.

    ``evals`` holds ``(step, mean_return, ...)`` per evaluation, in training order.
    """

    algo: str
    seed: int
    evals: Sequence[Sequence[float]]
    error: str | None


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------
def _usable(runs: Sequence[Run]) -> list[Run]:
    """Runs without an error and with at least one evaluation."""
    return [r for r in runs if r.error is None and len(r.evals) > 0]


def infer_interval(runs: Sequence[Run]) -> int:
    """The evaluation interval: the earliest first-evaluation step over the runs.

    The protocol evaluates first once ``interval`` steps are done (an SB3 run with
    vectorised envs may overshoot by a few steps: 2,504 for 2,500), so the earliest
    first evaluation is the interval. Errored runs and runs without evaluations are
    ignored.
    """
    ok = _usable(runs)
    if not ok:
        raise ValueError("no run with evaluations (all errored or empty)")
    return int(min(r.evals[0][0] for r in ok))


def score_matrices(
    runs: Sequence[Run], interval: int | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every algorithm's mean evaluation returns on one common step grid.

    Each evaluation is snapped to the nearest multiple of ``interval``
    (``round(step / interval) · interval``: an SB3 evaluation at 2,504 counts as 2,500).
    The grid runs from the latest first evaluation to the latest last evaluation over
    all runs, so every run has a value at every grid step. A run's value at a grid step
    is its last evaluation at or before it: a run that stopped early is carried forward
    at its last evaluation — with ``--stop-at-target`` that one reached the target, and
    the protocol counts the run as solved from then on. Runs with ``error`` (or without
    evaluations) are skipped; an algorithm left with no run is omitted.

    Args:
        runs: training runs (``algo``, ``seed``, ``evals``, ``error``).
        interval: grid spacing in env steps; default :func:`infer_interval`.

    Returns:
        ``steps`` — int array ``[num_steps]``, the grid; and ``{algo: scores}`` in
        first-seen order, ``scores`` a float array ``[num_seeds, num_steps]`` with
        rows in ascending seed order.
    """
    ok = _usable(runs)
    if not ok:
        raise ValueError("no run with evaluations (all errored or empty)")
    interval = infer_interval(ok) if interval is None else int(interval)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")

    def snapped(step: float) -> int:
        return max(1, round(step / interval))  # grid index counted from 1 · interval

    first = max(snapped(r.evals[0][0]) for r in ok)
    last = max(snapped(r.evals[-1][0]) for r in ok)
    steps = np.arange(first, last + 1, dtype=np.int64) * interval

    by_algo: dict[str, list[Run]] = {}
    for r in ok:
        by_algo.setdefault(r.algo, []).append(r)
    scores: dict[str, np.ndarray] = {}
    for algo, algo_runs in by_algo.items():
        rows = []
        for r in sorted(algo_runs, key=lambda r: r.seed):
            at = {snapped(e[0]): float(e[1]) for e in r.evals}  # a later eval wins a tie
            row, value = [], np.nan
            for k in range(1, last + 1):
                value = at.get(k, value)  # carried forward from the last evaluation
                if k >= first:
                    row.append(value)
            rows.append(row)
        scores[algo] = np.asarray(rows, dtype=np.float64)
    return steps, scores


def iqm_per_step(scores: np.ndarray) -> np.ndarray:
    """IQM over runs (and tasks) at each step: ``aggregate_iqm(scores[..., t])`` for every t.

    rliable's ``metrics.aggregate_iqm`` is ``trim_mean(scores, 0.25, axis=None)``; this is
    the same, vectorised over the last axis (one call per bootstrap replicate instead of
    one per step).

    Args:
        scores: ``[num_seeds, num_tasks, num_steps]`` (or ``[num_seeds, num_steps]``).

    Returns:
        ``[num_steps]``.
    """
    from scipy.stats import trim_mean

    return np.asarray(trim_mean(scores.reshape(-1, scores.shape[-1]), 0.25, axis=0))


def iqm_with_ci(
    scores: Mapping[str, np.ndarray],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """IQM over seeds at each step, with a stratified bootstrap CI (rliable).

    ``rliable.library.get_interval_estimates`` with the IQM of each step
    (:func:`iqm_per_step`, i.e. ``rliable.metrics.aggregate_iqm``), percentile
    intervals, ``reps`` resamples of the seeds, and a fixed ``seed`` so that the same
    runs always give the same plot (NumPy's global RNG is left as it was). With one
    seed, or all seeds equal, the interval collapses to the IQM.

    Args:
        scores: ``{algo: [num_seeds, num_steps]}``, e.g. from :func:`score_matrices`.
        reps: bootstrap replications.
        seed: seed of the bootstrap's ``RandomState``.
        confidence: coverage of the interval.

    Returns:
        ``{algo: (iqm, ci)}`` with ``iqm`` ``[num_steps]`` and ``ci`` ``[2, num_steps]``
        (lower, upper bounds).
    """
    rly, _ = require_rliable()
    data = {algo: np.asarray(m, dtype=np.float64)[:, None, :] for algo, m in scores.items()}
    # rliable 1.2's stratified bootstrap draws its resamples from NumPy's global RNG
    # (``np.random.choice``) whatever ``random_state`` says, so seed that one, and put it
    # back afterwards for the caller.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch 7 deprecates the ``random_state`` keyword that rliable 1.2 passes
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates(
                data, iqm_per_step, reps=reps, confidence_interval_size=confidence
            )
    finally:
        np.random.set_state(saved)
    return {algo: (np.asarray(points[algo]), np.asarray(intervals[algo])) for algo in data}


def seeds_text(seeds: Sequence[int]) -> str:
    """``0–4`` for a contiguous range, else ``0, 2, 5``."""
    s = sorted(seeds)
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}–{s[-1]}"
    return ", ".join(map(str, s))


def default_title(env_id: str, runs: Sequence[Run]) -> str:
    """``"CartPole-v1 learning curves, seeds 0–4"``, or the seeds per algorithm when they differ."""
    seeds: dict[str, list[int]] = {}
    for r in _usable(runs):
        seeds.setdefault(r.algo, []).append(r.seed)
    if not seeds:
        return env_id
    distinct = {tuple(sorted(s)) for s in seeds.values()}
    if len(distinct) == 1:
        return f"{env_id} learning curves, seeds {seeds_text(next(iter(seeds.values())))}"
    return f"{env_id} learning curves, seeds " + "; ".join(
        f"{a} {seeds_text(s)}" for a, s in seeds.items()
    )


# ---------------------------------------------------------------------------
# Optional dependencies and the plot
# ---------------------------------------------------------------------------
def require_rliable() -> tuple[Any, Any]:
    """``(rliable.library, rliable.metrics)``; ImportError with the cause if unusable.

    Any failure while importing is turned into ImportError: rliable 1.2 needs arch < 8,
    and arch 7 fails to import (a TypeError) under pandas 3.
    """
    try:
        from rliable import library, metrics
    except ImportError as exc:
        raise ImportError(f"rliable is not installed ({exc}): pip install -e '.[bench]'") from exc
    except Exception as exc:
        raise ImportError(
            f"rliable failed to import ({type(exc).__name__}: {exc}); rliable 1.2 needs "
            "arch < 8, which needs pandas < 3"
        ) from exc
    return library, metrics


def require_plotting() -> None:
    """Import matplotlib and rliable, or raise ImportError saying what is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"matplotlib is not installed ({exc}): pip install -e '.[bench]'"
        ) from exc
    require_rliable()


def plot_curves(
    runs: Sequence[Run],
    target: float,
    title: str,
    out_png: Path | str,
    interval: int | None = None,
    reps: int = 2000,
    seed: int = 0,
) -> Path:
    """Write the two-panel learning-curve PNG of ``runs`` (see the module docstring).

    Args:
        runs: training runs (errored ones are skipped), any number of algorithms.
        target: eval return drawn as a dashed line.
        title: figure title (e.g. :func:`default_title`).
        out_png: file to write (its folder must exist).
        interval: grid spacing, default the runs' evaluation interval.
        reps, seed: of the bootstrap (:func:`iqm_with_ci`).

    Returns:
        ``out_png`` as a Path.
    """
    require_plotting()
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot and no display
    from matplotlib.ticker import FuncFormatter

    out_png = Path(out_png)
    interval = infer_interval(runs) if interval is None else int(interval)
    steps, scores = score_matrices(runs, interval)
    stats = iqm_with_ci(scores, reps=reps, seed=seed)
    end = round(steps[-1] / interval)
    carried = any(round(r.evals[-1][0] / interval) < end for r in _usable(runs))

    by_algo: dict[str, list[Run]] = {}
    for r in _usable(runs):
        by_algo.setdefault(r.algo, []).append(r)
    first = round(steps[0] / interval)

    fig = Figure(figsize=(10, 4.6), dpi=100)
    left, right = fig.subplots(1, 2, sharey=True)
    handles, labels = [], []
    for i, (algo, m) in enumerate(scores.items()):
        colour = f"C{i % 10}"
        algo_runs = sorted(by_algo[algo], key=lambda r: r.seed)
        for run, row in zip(algo_runs, m, strict=True):
            # solid up to the run's last evaluation, dotted where it is carried forward
            k = max(0, round(run.evals[-1][0] / interval) - first)
            left.plot(steps[: k + 1], row[: k + 1], color=colour, lw=1.0, alpha=0.6)
            if k + 1 < len(steps):
                left.plot(steps[k:], row[k:], color=colour, lw=1.0, alpha=0.6, ls=":")
        iqm, ci = stats[algo]
        (line,) = right.plot(steps, iqm, color=colour, lw=2.0)
        right.fill_between(steps, ci[0], ci[1], color=colour, alpha=0.2, lw=0)
        handles.append(line)
        labels.append(f"{algo} ({len(m)} seeds)")
    for ax in (left, right):
        target_line = ax.axhline(target, color="0.3", ls="--", lw=1.0)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.grid(alpha=0.3)
    handles.append(target_line)
    labels.append(f"target {target:g}")
    if carried:
        (dotted,) = left.plot([], [], color="0.4", lw=1.0, ls=":")
        handles.append(dotted)
        labels.append("carried forward after the run stopped")
    left.set_ylabel("eval return (mean over eval episodes)")
    left.set_title("each seed", fontsize=10)
    right.set_title("IQM over seeds, shaded: 95% stratified bootstrap CI", fontsize=10)
    fig.suptitle(title, fontsize=12, y=0.985)
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.935),
        ncol=len(labels),
        fontsize=9,
        frameon=False,
    )
    if carried:
        note = "\n".join(textwrap.wrap(CARRY_NOTE, 140))
        fig.text(0.5, 0.012, note, ha="center", va="bottom", fontsize=8, color="0.25")
    fig.tight_layout(rect=(0, 0.07 if carried else 0, 1, 0.88))
    fig.savefig(out_png, format="png")
    return out_png


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _load(path: Path) -> tuple[list[Run], dict[str, Any]]:
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    from sample_efficiency import load_runs

    return load_runs(path)  # type: ignore[return-value]


def _env_id(meta: Mapping[str, Any]) -> str:
    from sample_efficiency import ENV_DEFAULTS

    env = str(meta.get("env", "?"))
    return ENV_DEFAULTS[env][0] if env in ENV_DEFAULTS else env


def main(argv: Sequence[str] | None = None) -> int:
    """Render saved runs: one PNG beside each JSON, or all of them into ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", type=Path, help="files written by sample_efficiency.py")
    p.add_argument(
        "--out", type=Path, default=None, help="PNG; with several JSONs, plot them all in it"
    )
    p.add_argument("--title", default=None, help="figure title (default: env id and seeds)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    args = p.parse_args(argv)

    loaded = [(path, *_load(path)) for path in args.json]
    if args.out is not None:
        groups = [(args.out, loaded)]
    else:
        groups = [(path.with_suffix(".png"), [(path, runs, meta)]) for path, runs, meta in loaded]
    for out, group in groups:
        metas = [meta for _, _, meta in group]
        envs = {str(m.get("env")) for m in metas}
        targets = {float(m["target"]) for m in metas if "target" in m}
        if len(envs) > 1 or len(targets) != 1:
            p.error(f"{out}: need one env and one target in the meta, got {envs} / {targets}")
        runs = [r for _, rs, _ in group for r in rs]
        title = args.title or default_title(_env_id(metas[0]), runs)
        interval = next((int(m["eval_interval"]) for m in metas if "eval_interval" in m), None)
        plot_curves(runs, targets.pop(), title, out, interval=interval, reps=args.reps)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
