"""Per-camera frame buffers and the frame selection of one tick (spec §1.1).

Frame rule (the reference's video decode, ``searchsorted(stamps, target, side="right") - 1``): a tick
at t0 uses, for each camera in model order ([0, 1, 2, 6]), the **latest buffered frame stamped at or
before** each slot target t0 − 0.3, −0.2, −0.1, 0 s (oldest first): 16 frames, camera-major. Real camera
stamps jitter, so a frame up to ``lookahead_s`` (default 2 ms) after a target counts as at it; 0 gives
the reference's rule exactly. A slot fails when its frame is more than ``slot_tolerance_s`` (default
50 ms) older than the target or when no buffered frame is at or before it; a tick fails when one frame
would fill two slots of a camera (a dropped frame, or a camera slower than the slot spacing), or when
the frames of one slot differ across cameras by more than ``max_skew_s`` (default 100 ms).

t0 policy. ``latest_common_t0()`` returns the latest buffered stamp at which every slot of every camera
can be filled: it tries the newest stamp of all cameras first (so the newest frame of every camera is
at or before t0, and hardware-synchronised cameras whose stamps differ by a few ms all use their
newest frame) and walks back through older stamps until ``select_tick`` succeeds. t0 is therefore a
real camera stamp; the planner bounds it by the newest odometry stamp (the history must end at t0).
Frames are kept for ``retention_s`` (default 1 s) behind each camera's newest frame, and at most
``max_frames`` per camera.

Frames are stored already preprocessed (``PreprocessedFrame``, resized once on arrival), so each is
reused by the 4 ticks that include it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .image_preprocess import PreprocessedFrame
from .model_config import InputConfig

NS = 1_000_000_000


class FrameSelectionError(RuntimeError):
    """A tick cannot be formed. ``code`` is machine-readable; the message names camera, slot and offset.

    Codes: ``unknown_camera``, ``no_frames`` (a camera has nothing buffered), ``no_frame_before_slot``
    (every buffered frame of a camera is after a slot target), ``slot_out_of_tolerance`` (the latest frame
    at or before a slot target is more than the tolerance older), ``frame_reused`` (one frame is the latest
    for two slots), ``camera_skew`` (a slot's frames too far apart across cameras), ``no_common_t0``.
    """

    def __init__(self, code: str, message: str, camera_id: int | None = None, slot: int | None = None,
                 offset_s: float | None = None, error_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.camera_id = camera_id
        self.slot = slot
        self.offset_s = offset_s
        self.error_s = error_s


MAX_LOOKAHEAD_S = 0.02  # a lookahead this large would let a 30 Hz camera's next frame fill a slot


@dataclass(frozen=True)
class FrameSelectionConfig:
    slot_tolerance_s: float = 0.05  # how much older than its slot target a frame may be
    max_skew_s: float = 0.1
    retention_s: float = 1.0
    max_frames: int = 64
    lookahead_s: float = 0.002  # a frame this far after a slot target counts as at it (0 = the reference)

    def __post_init__(self) -> None:
        if self.slot_tolerance_s <= 0 or self.max_skew_s <= 0 or self.retention_s <= 0 or self.max_frames < 1:
            raise ValueError(f"frame selection settings must be positive: {self}")
        if not 0.0 <= self.lookahead_s <= MAX_LOOKAHEAD_S:
            raise ValueError(f"lookahead_s must be in [0, {MAX_LOOKAHEAD_S}] s (stamp jitter, a few ms), "
                             f"got {self.lookahead_s}")


@dataclass(frozen=True)
class TickSelection:
    """The 16 frames of one tick, camera-major, oldest first within a camera."""

    t0_ns: int
    camera_ids: tuple[int, ...]
    offsets_s: tuple[float, ...]
    frames: tuple[PreprocessedFrame, ...]

    @property
    def keys(self) -> list[tuple[int, int]]:
        return [f.key for f in self.frames]

    def slot_errors_s(self) -> list[list[float]]:
        """Actual stamp − slot target, per camera and slot."""
        n = len(self.offsets_s)
        return [[(self.frames[c * n + s].stamp_ns - self._target(s)) / NS for s in range(n)]
                for c in range(len(self.camera_ids))]

    def max_skew_s(self) -> float:
        n = len(self.offsets_s)
        skews = []
        for s in range(n):
            stamps = [self.frames[c * n + s].stamp_ns for c in range(len(self.camera_ids))]
            skews.append((max(stamps) - min(stamps)) / NS)
        return max(skews)

    def _target(self, slot: int) -> int:
        return self.t0_ns + round(self.offsets_s[slot] * NS)


class FrameBuffer:
    """Time-ordered frames of one camera."""

    def __init__(self, camera_id: int, cfg: FrameSelectionConfig | None = None) -> None:
        self.camera_id = camera_id
        self.cfg = cfg or FrameSelectionConfig()
        self._stamps: list[int] = []
        self._frames: list[PreprocessedFrame] = []

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def latest_stamp_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    @property
    def stamps_ns(self) -> list[int]:
        return list(self._stamps)

    def add(self, frame: PreprocessedFrame) -> None:
        """Insert in stamp order (late arrivals are fine; a repeated stamp replaces the old frame)."""
        if frame.camera_id != self.camera_id:
            raise ValueError(f"frame of camera {frame.camera_id} added to the buffer of camera {self.camera_id}")
        i = bisect.bisect_left(self._stamps, frame.stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == frame.stamp_ns:
            self._frames[i] = frame
        else:
            self._stamps.insert(i, frame.stamp_ns)
            self._frames.insert(i, frame)
        self._prune()

    def _prune(self) -> None:
        horizon = self._stamps[-1] - round(self.cfg.retention_s * NS)
        drop = max(bisect.bisect_left(self._stamps, horizon), len(self._stamps) - self.cfg.max_frames)
        if drop > 0:
            del self._stamps[:drop]
            del self._frames[:drop]

    def latest_at_or_before(self, target_ns: int) -> PreprocessedFrame | None:
        """The latest frame stamped at or before ``target_ns`` (None if every frame is after it)."""
        i = bisect.bisect_right(self._stamps, target_ns)
        return self._frames[i - 1] if i else None

    def clear(self) -> None:
        self._stamps.clear()
        self._frames.clear()


class FrameStore:
    """One ``FrameBuffer`` per camera, and tick selection over all of them.

    Thread-safe: camera callbacks may add frames while a worker selects a tick.
    """

    def __init__(self, inputs: InputConfig | None = None, cfg: FrameSelectionConfig | None = None) -> None:
        self.inputs = inputs or InputConfig()
        self.cfg = cfg or FrameSelectionConfig()
        self.buffers = {c: FrameBuffer(c, self.cfg) for c in self.inputs.camera_ids}
        self._lock = threading.RLock()

    def add(self, frame: PreprocessedFrame) -> None:
        buf = self.buffers.get(frame.camera_id)
        if buf is None:
            raise FrameSelectionError("unknown_camera", f"camera {frame.camera_id} is not one of the model's "
                                      f"cameras {list(self.inputs.camera_ids)}", camera_id=frame.camera_id)
        with self._lock:
            buf.add(frame)

    def add_all(self, frames: Iterable[PreprocessedFrame]) -> None:
        for f in frames:
            self.add(f)

    def clear(self) -> None:
        with self._lock:
            for b in self.buffers.values():
                b.clear()

    def select_tick(self, t0_ns: int) -> TickSelection:
        """The 16 frames for t0 (camera-major, oldest first), or ``FrameSelectionError``."""
        with self._lock:
            return self._select_tick(t0_ns)

    def _select_tick(self, t0_ns: int) -> TickSelection:
        offsets = self.inputs.frame_offsets_s()
        chosen: list[PreprocessedFrame] = []
        for cam in self.inputs.camera_ids:
            buf = self.buffers[cam]
            if not len(buf):
                raise FrameSelectionError("no_frames", f"camera {cam} has no frames buffered", camera_id=cam)
            prev: PreprocessedFrame | None = None
            for slot, off in enumerate(offsets):
                f = self._slot_frame(buf, slot, off, t0_ns + round(off * NS))
                if prev is not None and f.stamp_ns == prev.stamp_ns:
                    err = (f.stamp_ns - t0_ns - round(off * NS)) / NS
                    raise FrameSelectionError(
                        "frame_reused", f"camera {cam} slot {slot} (t0{off:+.3f} s): the frame at {err * 1e3:+.1f} ms "
                        f"is also the latest for slot {slot - 1}: a dropped frame, or the camera is slower than "
                        f"the slot spacing", camera_id=cam, slot=slot, offset_s=off, error_s=err)
                chosen.append(f)
                prev = f
        sel = TickSelection(t0_ns, tuple(self.inputs.camera_ids), offsets, tuple(chosen))
        self._check_skew(sel)
        return sel

    def _slot_frame(self, buf: FrameBuffer, slot: int, off: float, target: int) -> PreprocessedFrame:
        """The latest frame at or before ``target`` (+ lookahead), at most the tolerance older."""
        cam, cfg = buf.camera_id, self.cfg
        f = buf.latest_at_or_before(target + round(cfg.lookahead_s * NS))
        if f is None:
            first = (buf.stamps_ns[0] - target) / NS
            raise FrameSelectionError(
                "no_frame_before_slot", f"camera {cam} slot {slot} (t0{off:+.3f} s): no frame at or before the slot "
                f"target; the oldest buffered frame is {first * 1e3:+.1f} ms after it",
                camera_id=cam, slot=slot, offset_s=off, error_s=first)
        err = (f.stamp_ns - target) / NS
        if -err > cfg.slot_tolerance_s:
            raise FrameSelectionError(
                "slot_out_of_tolerance",
                f"camera {cam} slot {slot} (t0{off:+.3f} s): the latest frame at or before the target is "
                f"{err * 1e3:+.1f} ms off (tolerance {cfg.slot_tolerance_s * 1e3:.0f} ms older)",
                camera_id=cam, slot=slot, offset_s=off, error_s=err)
        return f

    def _check_skew(self, sel: TickSelection) -> None:
        n = len(sel.offsets_s)
        for slot in range(n):
            frames = [sel.frames[c * n + slot] for c in range(len(sel.camera_ids))]
            lo = min(frames, key=lambda f: f.stamp_ns)
            hi = max(frames, key=lambda f: f.stamp_ns)
            skew = (hi.stamp_ns - lo.stamp_ns) / NS
            if skew > self.cfg.max_skew_s:
                raise FrameSelectionError(
                    "camera_skew", f"slot {slot} (t0{sel.offsets_s[slot]:+.3f} s): camera {hi.camera_id} is "
                    f"{skew * 1e3:.1f} ms after camera {lo.camera_id} (limit {self.cfg.max_skew_s * 1e3:.0f} ms)",
                    camera_id=hi.camera_id, slot=slot, offset_s=sel.offsets_s[slot], error_s=skew)

    def latest_common_t0(self, not_after_ns: int | None = None, max_candidates: int = 64) -> int | None:
        """Latest t0 (a buffered stamp, ≤ ``not_after_ns`` if given) for which ``select_tick`` succeeds.

        The first candidate is the newest stamp of all cameras, so that the newest frame of every camera
        is at or before t0; older stamps are tried until a tick can be formed.
        """
        with self._lock:
            return self._latest_common_t0(not_after_ns, max_candidates)

    def _latest_common_t0(self, not_after_ns: int | None, max_candidates: int) -> int | None:
        latest = [b.latest_stamp_ns for b in self.buffers.values()]
        if any(s is None for s in latest):
            return None
        limit = max(s for s in latest if s is not None)
        if not_after_ns is not None:
            limit = min(limit, not_after_ns)
        candidates = sorted({s for b in self.buffers.values() for s in b.stamps_ns if s <= limit}, reverse=True)
        for t0 in candidates[:max_candidates]:
            try:
                self.select_tick(t0)
            except FrameSelectionError:
                continue
            return t0
        return None

    def select_latest(self, not_after_ns: int | None = None) -> TickSelection:
        """``select_tick(latest_common_t0(not_after_ns))`` atomically, or ``FrameSelectionError``."""
        with self._lock:
            t0 = self._latest_common_t0(not_after_ns, 64)
            if t0 is None:
                raise FrameSelectionError("no_common_t0", "no t0 at which every camera fills every slot: "
                                          + self._explain(not_after_ns))
            return self._select_tick(t0)

    def _explain(self, not_after_ns: int | None) -> str:
        latest = {c: b.latest_stamp_ns for c, b in self.buffers.items()}
        empty = [c for c, s in latest.items() if s is None]
        if empty:
            return f"cameras {empty} have no frames"
        t0 = max(s for s in latest.values() if s is not None)
        if not_after_ns is not None:
            t0 = min(t0, not_after_ns)
        try:
            self.select_tick(t0)
        except FrameSelectionError as exc:
            return f"at t0={t0} ns: {exc}"
        return "no candidate stamps"


def frames_from(selection: TickSelection | Sequence[PreprocessedFrame]) -> tuple[PreprocessedFrame, ...]:
    return selection.frames if isinstance(selection, TickSelection) else tuple(selection)
