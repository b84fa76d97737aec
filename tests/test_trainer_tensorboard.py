"""TensorBoard output, read back from the event files with tensorboard's own reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from daif.trainer import train

EVERYTHING = {
    event_accumulator.SCALARS: 0,
    event_accumulator.IMAGES: 0,
    event_accumulator.TENSORS: 0,
}


def load_events(run_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the event files in ``run_dir``."""
    acc = load_events(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_hparams(run_dir: Path) -> dict[str, object]:
    """The hparams dashboard's session-start values (``{key: value}``)."""
    acc = load_events(run_dir)
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    out: dict[str, object] = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind)
    return out


def test_scalars_images_and_hparams(compose_cfg, tmp_path):
    res = train(compose_cfg(run_dir=tmp_path / "tb"))
    s = read_scalars(res.run_dir)
    for tag in (
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/sps",
        "eval/mean_return",
        "eval/std_return",
        "losses/policy",
        "losses/entropy",
    ):
        assert tag in s, f"{tag} missing; have {sorted(s)}"
    # CartPole pays 1 per step: every logged return equals its episode's length
    ret = [v for _, v in s["charts/episodic_return"]]
    length = [v for _, v in s["charts/episodic_length"]]
    assert ret == length and len(ret) == len(res.episode_returns)
    np.testing.assert_allclose(ret, res.episode_returns)
    # update() metrics and sps every log_interval=100 steps; eval every 200 and at the end
    assert [st for st, _ in s["losses/policy"]] == [100, 200, 300, 400]
    assert [st for st, _ in s["charts/sps"]] == [100, 200, 300, 400]
    assert all(v > 0 for _, v in s["charts/sps"])
    evals = [(st, m) for st, m in s["eval/mean_return"]]
    assert evals == [(st, m) for st, m, _ in res.eval_history]
    assert [st for st, _ in evals] == [200, 400]
    assert all(math.isfinite(v) for _, v in s["losses/entropy"])

    acc = load_events(res.run_dir)
    assert "agent/policy_weights" in acc.Tags()["images"]
    img = acc.Images("agent/policy_weights")
    assert [e.step for e in img] == [200, 400]
    assert (img[0].width, img[0].height) == (4, 2)  # CartPole: 2 actions × 4 obs dims

    hp = read_hparams(res.run_dir)
    assert hp["trainer.total_steps"] == 400
    assert hp["env.id"] == "CartPole-v1"
    assert hp["agent.lr"] == 0.01
    final = dict(read_scalars(res.run_dir)["hparams/final_eval_mean"])
    assert final[0] == res.final_eval_mean


def test_logger_none_writes_no_event_files(compose_cfg, tmp_path):
    res = train(compose_cfg("logger=none", run_dir=tmp_path / "quiet"))
    assert not list(Path(res.run_dir).glob("events.out.tfevents.*"))
    assert (Path(res.run_dir) / "checkpoints" / "last.pt").is_file()


def test_overwriting_a_run_replaces_its_curves(compose_cfg, tmp_path):
    """trainer.overwrite=true in a dir that holds an older run removes the old event files,
    so TensorBoard shows one run's points, not two runs interleaved."""
    first = train(compose_cfg("seed=1", run_dir=tmp_path / "same"))
    second = train(compose_cfg("seed=2", "trainer.overwrite=true", run_dir=tmp_path / "same"))
    s = read_scalars(second.run_dir)
    assert [m for _, m in s["eval/mean_return"]] == [m for _, m, _ in second.eval_history]
    assert len(s["charts/episodic_return"]) == len(second.episode_returns)
    assert first.episode_returns != second.episode_returns
