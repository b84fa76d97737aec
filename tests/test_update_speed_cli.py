"""benchmarks/update_speed.py: its clock and its device check."""

from __future__ import annotations

import time

import pytest
import torch

from tests.conftest import load_benchmark

speed = load_benchmark("update_speed")


def test_cpu_rows_count_cpu_time_not_waiting():
    # sleeping costs wall time but no CPU time: the CPU clock must not see it
    idle = speed.ms_per_call(lambda: time.sleep(0.005), 3, torch.device("cpu"))
    assert idle < 1.0

    def busy() -> None:
        end = time.process_time() + 0.005
        while time.process_time() < end:
            pass

    assert speed.ms_per_call(busy, 3, torch.device("cpu")) >= 4.5


def test_cuda_without_cuda_is_refused_naming_the_device(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        speed.main(["--device", "cuda:1"])
    assert exc.value.code == 2
    assert "--device cuda:1: CUDA is not available" in capsys.readouterr().err


def test_unknown_amp_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        speed.main(["--amp", "fp8"])
    assert "fp8" in capsys.readouterr().err


@pytest.mark.parametrize(("amp", "expected"), [("off", False), ("bf16", True)])
def test_loss_rows_run_under_the_agents_autocast(amp, expected):
    seen = []
    agent = type("A", (), {"device": torch.device("cpu"), "amp": amp})()
    call = speed.loss_forward(agent, lambda b: seen.append(torch.is_autocast_enabled("cpu")), {})
    call()
    assert seen == [expected]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "gpu0"], "--device 'gpu0': not a torch device"),
        (["--amp", "fp16"], "--amp fp16 needs a CUDA device, got --device cpu"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        speed.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_step_rows_train_the_model_only_when_they_say():
    agent, env = speed.build_agent("cartpole", [])
    speed.fill(agent, env, 300)
    every = agent.config.model_update_every

    def same(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
        return all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))

    decoder = [p.clone() for p in agent.world_model.decoder.parameters()]
    critic = [p.clone() for p in agent.critic.parameters()]
    speed.critic_only_step(agent)()
    assert same(decoder, agent.world_model.decoder) and not same(critic, agent.critic)
    speed.model_step(agent)()
    assert not same(decoder, agent.world_model.decoder)
    assert agent.config.model_update_every == every  # restored
