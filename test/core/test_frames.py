"""Frame buffers and tick frame selection (spec §1.1)."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.frames import (
    FrameBuffer,
    FrameSelectionConfig,
    FrameSelectionError,
    FrameStore,
    TickSelection,
)
from alpamayo_ros.core.image_preprocess import PreprocessedFrame

MS = 1_000_000
CAMS = (0, 1, 2, 6)
_IMG = np.zeros((32, 32, 3), np.uint8)


def frame(cam: int, stamp_ns: int) -> PreprocessedFrame:
    return PreprocessedFrame(cam, int(stamp_ns), _IMG, (32, 32))


def fill(store: FrameStore, rate_hz: float, start_ns: int, end_ns: int, phase_ns: dict[int, int] | None = None,
         jitter_ms: float = 0.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    period = 1e9 / rate_hz
    for cam in CAMS:
        t = start_ns + (phase_ns or {}).get(cam, 0)
        while t <= end_ns:
            store.add(frame(cam, round(t + rng.uniform(-jitter_ms, jitter_ms) * MS)))
            t += period


@pytest.mark.parametrize("rate", [10, 15, 20, 30])
def test_any_camera_rate_gives_a_valid_tick(rate: int) -> None:
    store = FrameStore()
    phases = {0: 0, 1: 13 * MS, 2: 31 * MS, 6: 47 * MS}
    fill(store, rate, 0, 2000 * MS, phases, jitter_ms=3, seed=rate)
    t0 = store.latest_common_t0()
    assert t0 is not None and t0 >= 2000 * MS - 150 * MS
    sel = store.select_tick(t0)
    assert isinstance(sel, TickSelection) and len(sel.frames) == 16
    assert [f.camera_id for f in sel.frames] == [c for c in CAMS for _ in range(4)]  # camera-major
    for c in range(4):
        stamps = [f.stamp_ns for f in sel.frames[4 * c:4 * c + 4]]
        assert stamps == sorted(set(stamps))  # oldest first, no reuse
    errs = np.abs(np.array(sel.slot_errors_s()))
    assert errs.max() <= 0.05 and errs.max() <= 0.5 / rate + 0.0031
    assert sel.max_skew_s() <= 0.1
    assert sel.keys[0] == (0, sel.frames[0].stamp_ns)


def test_nearest_frame_per_slot_by_hand() -> None:
    store = FrameStore()
    for cam in CAMS:
        for t in (690, 705, 795, 880, 910, 1004):
            store.add(frame(cam, t * MS))
    sel = store.select_tick(1000 * MS)
    assert [f.stamp_ns // MS for f in sel.frames[:4]] == [705, 795, 910, 1004]
    # Exactly between two frames: the older one wins.
    buf = FrameBuffer(0)
    buf.add(frame(0, 100))
    buf.add(frame(0, 200))
    assert buf.nearest(150).stamp_ns == 100 and buf.nearest(151).stamp_ns == 200


def test_slot_out_of_tolerance_names_camera_slot_and_offset() -> None:
    store = FrameStore()
    fill(store, 10, 0, 1000 * MS)
    # Camera 2 loses its frame at t0 - 0.2 s.
    store.buffers[2].clear()
    for t in (0, 100, 200, 300, 400, 500, 600, 700, 900, 1000):
        store.add(frame(2, t * MS))
    with pytest.raises(FrameSelectionError) as ei:
        store.select_tick(1000 * MS)
    e = ei.value
    assert (e.code, e.camera_id, e.slot) == ("slot_out_of_tolerance", 2, 1)
    assert e.offset_s == pytest.approx(-0.2) and e.error_s == pytest.approx(-0.1)  # tie: the older frame
    assert "camera 2 slot 1 (t0-0.200 s)" in str(e) and "-100.0 ms off" in str(e)
    # With a looser tolerance the 700 ms frame would fill slots 0 and 1: refused too.
    loose = FrameStore(cfg=FrameSelectionConfig(slot_tolerance_s=0.11))
    loose.add_all(f for b in store.buffers.values() for f in b._frames)
    with pytest.raises(FrameSelectionError) as ei:
        loose.select_tick(1000 * MS)
    assert (ei.value.code, ei.value.camera_id, ei.value.slot) == ("frame_reused", 2, 1)


def test_other_failures() -> None:
    store = FrameStore()
    with pytest.raises(FrameSelectionError) as ei:
        store.select_tick(0)
    assert ei.value.code == "no_frames" and ei.value.camera_id == 0
    assert store.latest_common_t0() is None
    with pytest.raises(FrameSelectionError) as ei:
        store.select_latest()
    assert ei.value.code == "no_common_t0" and "no frames" in str(ei.value)
    with pytest.raises(FrameSelectionError) as ei:
        store.add(frame(3, 0))
    assert ei.value.code == "unknown_camera"
    # A 4 Hz camera cannot fill 100 ms slots without reusing a frame.
    slow = FrameStore(cfg=FrameSelectionConfig(slot_tolerance_s=0.15, max_skew_s=1.0))
    fill(slow, 4, 0, 1000 * MS)
    with pytest.raises(FrameSelectionError) as ei:
        slow.select_tick(1000 * MS)
    assert ei.value.code == "frame_reused"
    # Cross-camera skew.
    skewed = FrameStore(cfg=FrameSelectionConfig(max_skew_s=0.02))
    fill(skewed, 10, 0, 1100 * MS, {6: 30 * MS})
    with pytest.raises(FrameSelectionError) as ei:
        skewed.select_tick(1000 * MS)
    assert ei.value.code == "camera_skew" and ei.value.camera_id == 6 and ei.value.slot == 0


def test_buffer_order_duplicates_and_retention() -> None:
    buf = FrameBuffer(1, FrameSelectionConfig(retention_s=0.5, max_frames=8))
    for t in (300, 100, 200):
        buf.add(frame(1, t * MS))
    assert buf.stamps_ns == [100 * MS, 200 * MS, 300 * MS]
    replacement = frame(1, 200 * MS)
    buf.add(replacement)
    assert len(buf) == 3 and buf.nearest(200 * MS) is replacement
    buf.add(frame(1, 700 * MS))
    assert buf.stamps_ns == [200 * MS, 300 * MS, 700 * MS]  # older than 0.5 s behind the newest dropped
    for t in range(701, 720):
        buf.add(frame(1, t * MS))
    assert len(buf) == 8
    with pytest.raises(ValueError):
        buf.add(frame(2, 0))


def test_latest_common_t0_policy() -> None:
    store = FrameStore()
    fill(store, 10, 0, 1000 * MS, {0: 0, 1: 20 * MS, 2: 40 * MS, 6: 60 * MS})
    # Newest stamps are 1000, 920, 940, 960 ms: the oldest of them (camera 1) is t0.
    assert store.latest_common_t0() == 920 * MS
    assert store.latest_common_t0(not_after_ns=915 * MS) == 900 * MS  # e.g. clamped to the newest odometry
    assert store.select_latest().t0_ns == 920 * MS
    # Camera 6 falls behind: t0 follows it.
    store.buffers[6].clear()
    fill_cam = [frame(6, t * MS) for t in (360, 460, 560, 660)]
    store.add_all(fill_cam)
    assert store.latest_common_t0() == 660 * MS


def test_concurrent_adds_and_selection() -> None:
    import threading
    import time

    store = FrameStore()
    fill(store, 10, 0, 1000 * MS)
    errors: list[BaseException] = []

    def producer(cam: int) -> None:
        try:
            for k in range(11, 300):
                store.add(frame(cam, k * 100 * MS + cam * MS))
                time.sleep(0.0002)  # interleave with the selecting thread
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(c,)) for c in CAMS]
    for t in threads:
        t.start()
    ticks = 0
    while any(t.is_alive() for t in threads):
        time.sleep(0.0005)
        try:
            sel = store.select_latest()
        except FrameSelectionError:
            continue
        assert len(sel.frames) == 16 and np.abs(np.array(sel.slot_errors_s())).max() <= 0.05
        ticks += 1
    for t in threads:
        t.join()
    assert not errors and ticks > 0
    assert store.latest_common_t0() == 299 * 100 * MS
