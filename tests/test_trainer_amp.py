"""AMP and torch.compile plumbing: flags are validated, reach the agent, and a bf16 run of
the deep agent and a compiled run take steps with finite losses (read back from TB)."""

from __future__ import annotations

import math

import pytest

from daif.trainer import Trainer, train
from daif.validation import ConfigError
from tests.test_trainer_tensorboard import read_scalars


@pytest.mark.parametrize("amp", ["fp8", "BF16", "true", ""])
def test_unknown_amp_mode_rejected(compose_cfg, amp):
    with pytest.raises(ConfigError, match=r"trainer\.amp"):
        Trainer(compose_cfg(f"trainer.amp='{amp}'"))


@pytest.mark.parametrize(("amp", "compile_"), [("bf16", False), ("fp16", True), ("off", True)])
def test_flags_reach_the_agent(compose_cfg, amp, compile_):
    trainer = Trainer(compose_cfg(f"trainer.amp={amp}", f"trainer.compile={compile_}"))
    assert (trainer.agent.amp, trainer.agent.compiled) == (amp, compile_)


def _finite_losses(run_dir, prefixes=("losses/",)) -> dict[str, list[float]]:
    scalars = read_scalars(run_dir)
    losses = {t: [v for _, v in pts] for t, pts in scalars.items() if t.startswith(prefixes)}
    assert losses, f"no loss scalars logged; have {sorted(scalars)}"
    for tag, values in losses.items():
        assert all(math.isfinite(v) for v in values), f"{tag}: {values}"
    return losses


def test_bf16_deep_agent_trains_without_nan(compose_deep, tmp_path):
    res = train(
        compose_deep("trainer.amp=bf16", "trainer.total_steps=200", run_dir=tmp_path / "bf16")
    )
    assert res.global_step == 200
    losses = _finite_losses(res.run_dir, ("losses/", "free_energy/", "efe/"))
    # updates started after learning_starts=64: several logging points carry losses
    assert max(len(v) for v in losses.values()) >= 2


def test_compiled_agent_run_completes_with_finite_losses(compose_cfg, tmp_path):
    res = train(compose_cfg("trainer.compile=true", run_dir=tmp_path / "compiled"))
    assert res.global_step == 400
    assert len(_finite_losses(res.run_dir)["losses/policy"]) == 4
