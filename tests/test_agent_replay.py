"""Replay buffer: time-ordered sequences, ring wrap-around, separate end flags, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daif.protocol import Transition
from daif.replay import ReplayBuffer


def step(t: int, num_envs: int = 2) -> Transition:
    """Observation value = 10·t + env, so order and env are readable from the data."""
    obs = (10.0 * t + np.arange(num_envs, dtype=np.float32))[:, None]
    return Transition(
        obs=obs,
        action=np.full(num_envs, t % 3),
        reward=np.full(num_envs, float(t), np.float32),
        next_obs=obs + 10.0,
        terminated=np.array([t == 4, False]),
        truncated=np.array([False, t == 4]),
    )


def test_sequences_are_consecutive_steps_of_one_env() -> None:
    buf = ReplayBuffer(100, 2, (1,))
    for t in range(10):
        buf.add(step(t))
    assert len(buf) == 20
    torch.manual_seed(0)
    batch = buf.sample(64, seq_len=3)
    obs = batch["obs"][..., 0]
    assert obs.shape == (64, 3)
    assert torch.equal(obs[:, 1:] - obs[:, :-1], torch.full((64, 2), 10.0))
    assert torch.equal(batch["next_obs"][..., 0], obs + 10.0)
    assert torch.equal(batch["reward"], torch.div(obs, 10, rounding_mode="floor"))


def test_ring_keeps_newest_and_never_crosses_the_write_position() -> None:
    buf = ReplayBuffer(8, 2, (1,))  # 4 slots per env
    for t in range(10):
        buf.add(step(t))
    assert len(buf) == 8
    torch.manual_seed(1)
    batch = buf.sample(256, seq_len=2)
    steps = torch.div(batch["obs"][..., 0], 10, rounding_mode="floor")
    assert steps.min() >= 6 and steps.max() <= 9  # only the newest four steps survive
    assert torch.equal(steps[:, 1] - steps[:, 0], torch.ones(256))


def test_latest_returns_the_newest_entries_of_one_env_oldest_first() -> None:
    buf = ReplayBuffer(8, 2, (1,))  # 4 slots per env: t = 0..5 wraps the ring
    assert buf.latest(3).shape == (0, 1)
    for t in range(6):
        buf.add(step(t))
    assert buf.latest(3)[:, 0].tolist() == [30.0, 40.0, 50.0]
    assert buf.latest(10, env=1)[:, 0].tolist() == [21.0, 31.0, 41.0, 51.0]  # only 4 held
    assert buf.latest(2, field="reward").tolist() == [4.0, 5.0]


def test_terminated_and_truncated_are_stored_separately() -> None:
    buf = ReplayBuffer(100, 2, (1,))
    for t in range(6):
        buf.add(step(t))
    assert buf.data["terminated"][4].tolist() == [True, False]
    assert buf.data["truncated"][4].tolist() == [False, True]
    assert not buf.data["terminated"][:4].any() and not buf.data["truncated"][5].any()


def test_state_dict_round_trip_gives_identical_samples() -> None:
    a = ReplayBuffer(12, 2, (1,))
    for t in range(9):
        a.add(step(t))
    b = ReplayBuffer(12, 2, (1,))
    b.load_state_dict(a.state_dict())
    torch.manual_seed(2)
    sa = a.sample(16, 2)
    torch.manual_seed(2)
    sb = b.sample(16, 2)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    b.add(step(9))
    a.add(step(9))
    assert a.pos == b.pos and torch.equal(a.data["obs"], b.data["obs"])


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        ReplayBuffer(10, 0, (1,))
    buf = ReplayBuffer(10, 2, (1,))
    with pytest.raises(ValueError, match=r"transition\.obs"):
        buf.add(step(0, num_envs=3))
    with pytest.raises(ValueError, match="fewer than 2"):
        buf.add(step(0))
        buf.sample(4, seq_len=2)


def test_annotations_are_written_back_where_a_sample_came_from() -> None:
    buf = ReplayBuffer(8, 2, (1,), annotations=("note",))  # 4 slots per env
    for t in range(3):
        buf.add(step(t))
    torch.manual_seed(3)
    batch = buf.sample(32, seq_len=2)
    assert torch.equal(batch["note"], torch.zeros(32, 2))
    # the slot/env indices locate each step: write its observation there and read it back
    buf.write("note", batch["slot"], batch["env"], batch["obs"][..., 0])
    again = buf.data["note"][batch["slot"], batch["env"]]
    assert torch.equal(again, batch["obs"][..., 0])
    # a slot that is overwritten by a new step loses its old note
    written = buf.data["note"].clone()
    for t in range(3, 5):
        buf.add(step(t))  # slots 3 and 0
    assert torch.equal(buf.data["note"][0], torch.zeros(2))
    assert torch.equal(buf.data["note"][1:3], written[1:3])
    assert buf.written == 5 and buf.newest_slots(3).tolist() == [2, 3, 0]
    assert buf.newest_slots(10).tolist() == [1, 2, 3, 0]  # only 4 slots held


def test_annotation_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="'reward' clashes"):
        ReplayBuffer(8, 2, (1,), annotations=("reward",))
    buf = ReplayBuffer(8, 2, (1,), annotations=("note",))
    buf.add(step(0))
    with pytest.raises(KeyError, match="'other'"):
        buf.write("other", torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]))


def test_state_dict_keeps_annotations_and_the_write_count() -> None:
    a = ReplayBuffer(12, 2, (1,), annotations=("note",))
    for t in range(9):
        a.add(step(t))
    a.write("note", torch.tensor([2, 4]), torch.tensor([1, 0]), torch.tensor([7.0, -3.0]))
    b = ReplayBuffer(12, 2, (1,), annotations=("note",))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.data["note"], b.data["note"]) and b.written == 9
    c = ReplayBuffer(12, 2, (1,))  # a buffer without the annotation ignores it
    c.load_state_dict(a.state_dict())
    assert "note" not in c.data and c.written == 9


def ends_every_10th(t: int) -> Transition:
    """One env; observation t; the episode terminates at t = 9, 19, 29, ..."""
    return Transition(
        obs=np.array([[float(t)]], np.float32),
        action=np.array([0]),
        reward=np.ones(1, np.float32),
        next_obs=np.array([[t + 1.0]], np.float32),
        terminated=np.array([t % 10 == 9]),
        truncated=np.array([False]),
    )


def test_terminal_fraction_draws_windows_that_hold_a_termination() -> None:
    buf = ReplayBuffer(40, 1, (1,))  # 40 slots: t = 0..59 wraps, t = 20..59 held
    for t in range(60):
        buf.add(ends_every_10th(t))
    torch.manual_seed(4)
    batch = buf.sample(40, seq_len=3, terminal_fraction=0.25)
    steps = batch["obs"][..., 0]
    assert bool(batch["terminated"][:10].any(1).all())  # round(0.25·40) = 10 windows
    # the termination sits anywhere in its window: each of the 3 positions comes up
    many = buf.sample(300, seq_len=3, terminal_fraction=1.0)["terminated"]
    assert bool(many.any(1).all())
    assert set(many.float().argmax(1).tolist()) == {0, 1, 2}
    # every window is consecutive steps of held data, never across the write position
    assert torch.equal(steps[:, 1:] - steps[:, :-1], torch.ones(40, 2))
    assert steps.min() >= 20 and steps.max() <= 59
    # the rest stay uniform: most of those windows hold no termination
    assert batch["terminated"][10:].any(1).float().mean() < 0.5


def test_terminal_windows_at_the_data_edges_are_clamped_inside_it() -> None:
    buf = ReplayBuffer(100, 1, (1,))
    for t in range(10):  # the only termination is the newest step (t = 9)
        buf.add(ends_every_10th(t))
    torch.manual_seed(5)
    batch = buf.sample(64, seq_len=4, terminal_fraction=1.0)
    assert batch["obs"][:, :, 0].tolist() == [[6.0, 7.0, 8.0, 9.0]] * 64


def test_without_terminations_the_terminal_fraction_changes_nothing() -> None:
    buf = ReplayBuffer(100, 2, (1,))
    for t in range(4):  # step() ends env 0 only at t = 4
        buf.add(step(t))
    torch.manual_seed(6)
    plain = buf.sample(16, 2)
    torch.manual_seed(6)
    asked = buf.sample(16, 2, terminal_fraction=0.5)
    for k in plain:
        assert torch.equal(plain[k], asked[k]), k
    with pytest.raises(ValueError, match=r"terminal_fraction must be in \[0, 1\], got 1.5"):
        buf.sample(4, 2, terminal_fraction=1.5)


def test_the_device_path_keeps_its_own_record_of_terminations() -> None:
    # off the CPU, add() writes tensors and mirrors `terminated` on the host, where the
    # terminal windows are found; emulate it on the CPU and compare with the NumPy path
    host, device = ReplayBuffer(40, 1, (1,)), ReplayBuffer(40, 1, (1,))
    device._host, device._terminated_host = None, np.zeros((40, 1), dtype=bool)
    for t in range(60):
        host.add(ends_every_10th(t))
        device.add(ends_every_10th(t))
    restored = ReplayBuffer(40, 1, (1,))
    restored._host, restored._terminated_host = None, np.zeros((40, 1), dtype=bool)
    restored.load_state_dict(device.state_dict())
    batches = []
    for buf in (host, device, restored):
        torch.manual_seed(8)
        batches.append(buf.sample(32, seq_len=3, terminal_fraction=0.5))
    for other in batches[1:]:
        for k in batches[0]:
            assert torch.equal(batches[0][k], other[k]), k
    assert bool(batches[0]["terminated"][:16].any(1).all())
