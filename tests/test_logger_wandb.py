"""``logger=wandb``: the same tags as TensorBoard, written by W&B in offline mode and read
back from its run file."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from daif.trainer import train
from tests.test_trainer_tensorboard import load_events, read_scalars

wandb_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2")

BLOCK = 32768  # the run file is a LevelDB-style log: 32 KiB blocks of chunked records


def wandb_records(path: Path) -> Iterator[object]:
    """The protobuf records of a ``.wandb`` run file (7-byte file header ``:W&B``, then
    chunks of ``crc u32, length u16, type u8`` + data; type 1 whole, 2/3/4 first/middle/
    last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, record = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        record += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            parsed = wandb_pb2.Record()
            parsed.ParseFromString(record)
            record = b""
            yield parsed


def test_wandb_offline_gets_the_tensorboard_tags(compose_cfg, tmp_path):
    res = train(compose_cfg("logger=wandb", "logger.mode=offline", run_dir=tmp_path / "wb"))
    (run_file,) = (res.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    summary: dict[str, float] = {}
    config: dict[str, object] = {}
    for rec in wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item
            }
            for key, value in row.items():
                if not key.startswith("_") and key != "global_step":
                    history.setdefault(key, []).append((row["global_step"], value))
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})

    tb = read_scalars(res.run_dir)
    hparams = {tag for tag in tb if tag.startswith("hparams/")}
    # an image arrives as a nested value (``<tag>/_type``, ``<tag>/path``, ...)
    images = {key.rsplit("/", 1)[0] for key in history if key.endswith("/_type")}
    scalars = {tag: v for tag, v in history.items() if tag.rsplit("/", 1)[0] not in images}
    # every TensorBoard scalar, at the same steps with the same values (float32 there)
    assert set(scalars) == set(tb) - hparams
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [s for s, _ in tb[tag]], tag
        assert [v for _, v in points] == pytest.approx([v for _, v in tb[tag]], rel=1e-6), tag
    # the evaluation images, and the final metrics of TensorBoard's hparams dashboard
    assert images == set(load_events(res.run_dir).Tags()["images"]) != set()
    for tag in hparams:
        assert summary[tag] == pytest.approx(tb[tag][0][1], rel=1e-6)
    # the resolved config is the W&B run config
    assert config["trainer"]["run_dir"] == str(tmp_path / "wb")
