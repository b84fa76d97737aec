"""Reproducibility: same seed, same CPU, same config ⇒ identical returns and losses."""

from __future__ import annotations

from daif.trainer import train
from tests.test_trainer_tensorboard import read_scalars

TAGS = ("charts/episodic_return", "eval/mean_return", "losses/", "free_energy/", "efe/")


def _curves(run_dir) -> dict[str, list[tuple[int, float]]]:
    return {t: v for t, v in read_scalars(run_dir).items() if t.startswith(TAGS)}


def test_same_seed_same_returns_and_losses_deep_agent(compose_deep, tmp_path):
    runs = [train(compose_deep(run_dir=tmp_path / f"r{i}")) for i in range(2)]
    a, b = (_curves(r.run_dir) for r in runs)
    assert any(t.startswith("losses/") for t in a)
    assert a == b  # exact equality, every tag, every step
    assert runs[0].episode_returns == runs[1].episode_returns
    assert runs[0].eval_history == runs[1].eval_history
    other = train(compose_deep("seed=1", run_dir=tmp_path / "seed1"))
    assert other.episode_returns != runs[0].episode_returns  # the seed does matter


def test_same_seed_same_returns_test_agent(compose_cfg, tmp_path):
    a = train(compose_cfg(run_dir=tmp_path / "a"))
    b = train(compose_cfg(run_dir=tmp_path / "b"))
    assert _curves(a.run_dir) == _curves(b.run_dir)
    assert a.episode_returns == b.episode_returns and len(a.episode_returns) >= 5
