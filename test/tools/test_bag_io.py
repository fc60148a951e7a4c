"""Bag reading: validation messages, damaged bags (truncated, corrupted, empty), decoding errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.tools.bag_io import (
    BagReadError,
    BagSource,
    ImageDecodeError,
    RawMessage,
    decode_image,
    validate_bag,
)
from alpamayo_ros.tools.topics import DEFAULT_CAMERAS, DEFAULT_ODOM_TOPIC

CAMS = [c.topic for c in DEFAULT_CAMERAS]


def damaged_copy(bag: Path, dst: Path, keep_fraction: float | None = None, scribble_at: float | None = None) -> Path:
    shutil.copytree(bag, dst)
    mcap = next(dst.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    if scribble_at is not None:
        i = int(len(data) * scribble_at)  # garbage from here to the end, same file size
        data[i:] = bytes(np.random.default_rng(0).integers(0, 256, len(data) - i, dtype=np.uint8))
    if keep_fraction is not None:
        data = data[: int(len(data) * keep_fraction)]
    mcap.write_bytes(bytes(data))
    return dst


def test_truncated_bag_is_streamed_up_to_the_cut_then_fails_clearly(short_bag, tmp_path: Path) -> None:
    bag = damaged_copy(short_bag.path, tmp_path / "cut", keep_fraction=0.5)
    src = BagSource(bag)
    assert src.info.damaged and "index unusable" in src.info.damaged
    assert 3.0 < src.info.duration_s < 7.0  # roughly half of the 10 s
    got = []
    with pytest.raises(BagReadError, match="truncated or corrupted") as err:
        for m in src.messages():
            got.append(m)
    assert err.value.messages_read == len(got) > 300
    assert err.value.last_time_ns == got[-1].log_time_ns
    report = validate_bag(src, CAMS, DEFAULT_ODOM_TOPIC)
    assert not report.ok and any("damaged" in p for p in report.problems)


def test_corrupted_chunk_is_reported_with_what_was_read(short_bag, tmp_path: Path) -> None:
    bag = damaged_copy(short_bag.path, tmp_path / "scribbled", scribble_at=0.6)
    read = 0
    with pytest.raises(BagReadError) as err:
        src = BagSource(bag)
        for _ in src.messages():
            read += 1
    assert str(bag) in str(err.value)
    assert err.value.messages_read == read


def test_missing_and_empty_bags(tmp_path: Path) -> None:
    with pytest.raises(BagReadError, match="no such file"):
        BagSource(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.mcap").write_bytes(b"")
    src = BagSource(tmp_path / "empty")
    assert src.info.start_ns is None and not src.info.topics


def test_validation_names_missing_topics_and_wrong_types(short_bag) -> None:
    src = BagSource(short_bag.path)
    rep = validate_bag(src, [*CAMS[:3], "/cam/none"], "/alpamayo/demo/segment")
    assert not rep.ok
    text = "\n".join(rep.problems)
    assert "camera topic /cam/none is missing" in text
    assert "odometry topic /alpamayo/demo/segment has type std_msgs/msg/String" in text


def test_image_decode_errors_are_clear(short_bag) -> None:
    msg = next(iter(BagSource(short_bag.path).messages(CAMS[:1])))
    from alpamayo_ros.tools.bag_io import typestore

    ts = typestore()
    m = ts.deserialize_cdr(msg.data, msg.msgtype)
    m.data = m.data[:100]  # a JPEG cut short
    bad = RawMessage(msg.topic, msg.msgtype, msg.log_time_ns, bytes(ts.serialize_cdr(m, msg.msgtype)))
    with pytest.raises(ImageDecodeError, match="cannot decode 'jpeg'"):
        decode_image(bad)
