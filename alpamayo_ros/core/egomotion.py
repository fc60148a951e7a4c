"""Odometry pose buffer and the model's egomotion history (spec §3.1).

The history is 16 poses at t0−1.5 … t0 (10 Hz), **interpolated by timestamp** (linear position,
slerp rotation) and expressed in the ego frame at t0, so the odometry rate and its jitter do not
matter. Taking poses by message index (as public integrations do) silently assumes one rate.

Stamps are float seconds on the node clock. World coordinates can be large (UTM-like odometry),
so everything is float64 until the caller casts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import quat_norm_error, quat_slerp, quat_to_rotmat

__all__ = [
    "HISTORY_DT_S",
    "HISTORY_STEPS",
    "EgoHistory",
    "EgomotionError",
    "HistoryUnavailable",
    "Pose",
    "PoseBuffer",
    "PoseRejected",
    "Reason",
    "future_in_ego_frame",
    "to_ego_frame",
]

HISTORY_STEPS = 16
HISTORY_DT_S = 0.1
# Stamps closer than this are "the same time" (float seconds since epoch carry ~1e-7 s noise).
_STAMP_EPS_S = 1e-6


class Reason:
    """Machine-readable reason codes carried by EgomotionError.reason_code."""

    BUFFER_EMPTY = "buffer_empty"
    NOT_COVERED_PAST = "history_not_covered"  # buffer starts after the oldest needed stamp
    STALE = "odometry_stale"  # the newest pose is older than the requested time
    GAP = "odometry_gap"  # two consecutive poses inside the window are too far apart
    TIME_JUMP = "time_jump"  # a stamp went backwards (clock reset, bag loop)
    POSE_NONFINITE = "pose_nonfinite"
    QUATERNION_NOT_UNIT = "quaternion_not_unit"
    BAD_SHAPE = "bad_shape"


class EgomotionError(Exception):
    """Base class; `reason_code` is one of Reason.*, `details` holds the numbers behind it."""

    def __init__(self, reason_code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{reason_code}] {message}")
        self.reason_code = reason_code
        self.message = message
        self.details = dict(details or {})


class HistoryUnavailable(EgomotionError):
    """The buffer cannot produce poses for the requested times (nothing is extrapolated silently)."""


class PoseRejected(EgomotionError):
    """`PoseBuffer.add` refused a pose (non-finite, non-unit quaternion, stamp going backwards)."""


@dataclass(frozen=True)
class Pose:
    """One world-frame (odometry-frame) pose."""

    stamp: float
    position: NDArray[np.float64]  # (3,)
    quaternion: NDArray[np.float64]  # (4,) x, y, z, w
    rot: NDArray[np.float64]  # (3, 3)


@dataclass(frozen=True)
class EgoHistory:
    """Model input history (spec §3.1): xyz[-1] == 0 and rot[-1] == I exactly."""

    xyz: NDArray[np.float64]  # (16, 3) ego frame at t0
    rot: NDArray[np.float64]  # (16, 3, 3) ego frame at t0
    stamps: NDArray[np.float64]  # (16,) absolute node-clock seconds, stamps[-1] == t0
    t0: float
    origin: Pose  # world pose at t0, to map outputs back to the odometry frame
    speed_from_twist: float | None = None  # twist.linear.x at t0 (body frame, signed) if known
    extrapolated_s: float = 0.0  # how far past the newest pose t0 lies (0 unless allowed)

    def model_inputs(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """float32 `ego_history_xyz` (1, 1, 16, 3) and `ego_history_rot` (1, 1, 16, 3, 3) (spec §3.1)."""
        return self.xyz.astype(np.float32)[None, None], self.rot.astype(np.float32)[None, None]

    def to_world(
        self, xyz: ArrayLike, rot: ArrayLike | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Ego-frame points (..., 3) [and rotations (..., 3, 3)] -> world (odometry) frame."""
        r0 = self.origin.rot
        p = np.asarray(xyz, dtype=np.float64) @ r0.T + self.origin.position
        return p, (None if rot is None else r0 @ np.asarray(rot, dtype=np.float64))


def to_ego_frame(
    xyz: ArrayLike, rot: ArrayLike | None, origin_xyz: ArrayLike, origin_rot: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """World poses -> ego frame of the origin: p' = R0ᵀ (p − p0), R' = R0ᵀ R (spec §3.1)."""
    r0 = np.asarray(origin_rot, dtype=np.float64)
    p = (np.asarray(xyz, dtype=np.float64) - np.asarray(origin_xyz, dtype=np.float64)) @ r0
    if rot is None:
        return p, None
    return p, np.swapaxes(r0, -1, -2) @ np.asarray(rot, dtype=np.float64)


@dataclass
class PoseBuffer:
    """Bounded, time-ordered odometry poses with timestamp interpolation.

    max_duration_s: poses older than newest − this are dropped.
    max_gap_s: a window whose consecutive poses are further apart than this is refused (a dropped
        odometry stream must not be bridged by a straight line).
    max_extrapolation_s: how far past the newest pose a request may reach (default 0: never).
    reset_on_time_jump: a stamp going backwards clears the buffer (bag loop) instead of raising.

    Thread-safe: the odometry callback may add while a worker thread builds histories.
    """

    max_duration_s: float = 10.0
    max_poses: int = 4096
    max_gap_s: float = 0.3
    max_extrapolation_s: float = 0.0
    unit_quaternion_tol: float = 1e-3
    reset_on_time_jump: bool = False
    history_steps: int = HISTORY_STEPS
    history_dt_s: float = HISTORY_DT_S
    time_jumps: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_poses < 2 or self.max_duration_s <= 0 or self.max_gap_s <= 0:
            raise ValueError("PoseBuffer needs max_poses >= 2, max_duration_s > 0 and max_gap_s > 0")
        if self.max_extrapolation_s < 0:
            raise ValueError("max_extrapolation_s must be >= 0")
        self._alloc(min(2 * self.max_poses, 1024))
        self._lo = 0
        self._hi = 0
        self._jumped_since_reset = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def latest_stamp(self) -> float | None:
        with self._lock:
            return float(self._t[self._hi - 1]) if len(self) else None

    @property
    def earliest_stamp(self) -> float | None:
        with self._lock:
            return float(self._t[self._lo]) if len(self) else None

    def reset(self) -> None:
        with self._lock:
            self._lo = self._hi = 0
            self._jumped_since_reset = False

    # ------------------------------------------------------------------ input
    def add(
        self,
        stamp_s: float,
        position: ArrayLike,
        quaternion: ArrayLike,
        twist_linear: ArrayLike | None = None,
    ) -> bool:
        """Append one pose; returns False for a repeated stamp (kept: the first one).

        Raises PoseRejected with reason_code POSE_NONFINITE, QUATERNION_NOT_UNIT, BAD_SHAPE or
        TIME_JUMP (unless reset_on_time_jump, which clears the buffer and keeps the new pose).
        """
        stamp = float(stamp_s)
        p = np.asarray(position, dtype=np.float64)
        q = np.asarray(quaternion, dtype=np.float64)
        if p.shape != (3,) or q.shape != (4,):
            raise PoseRejected(Reason.BAD_SHAPE, f"position must be (3,) and quaternion (4,), got {p.shape}, {q.shape}")
        if not (np.isfinite(stamp) and np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise PoseRejected(Reason.POSE_NONFINITE, f"non-finite pose at stamp {stamp}: p={p}, q={q}",
                               {"stamp": stamp})
        err = float(quat_norm_error(q))
        if err > self.unit_quaternion_tol:
            raise PoseRejected(
                Reason.QUATERNION_NOT_UNIT,
                f"quaternion {q} has norm {np.linalg.norm(q):.6f} (tolerance ±{self.unit_quaternion_tol})",
                {"stamp": stamp, "norm_error": err},
            )
        v = np.full(3, np.nan) if twist_linear is None else np.asarray(twist_linear, dtype=np.float64)
        if v.shape != (3,):
            raise PoseRejected(Reason.BAD_SHAPE, f"twist_linear must be (3,), got {v.shape}")
        q = q / np.linalg.norm(q)
        with self._lock:
            latest = self.latest_stamp
            if latest is not None:
                if abs(stamp - latest) <= _STAMP_EPS_S:
                    return False
                if stamp < latest:
                    if not self.reset_on_time_jump:
                        raise PoseRejected(
                            Reason.TIME_JUMP,
                            f"stamp {stamp:.6f} is {latest - stamp:.3f} s before the newest pose {latest:.6f} "
                            "(clock reset or bag loop); call reset() to start over",
                            {"stamp": stamp, "latest": latest, "jump_s": latest - stamp},
                        )
                    self.reset()
                    self.time_jumps += 1
                    self._jumped_since_reset = True
            if len(self) and float(np.dot(q, self._q[self._hi - 1])) < 0:
                q = -q  # keep one hemisphere so neighbouring quaternions interpolate the short way
            self._append(stamp, p, q, v)
        return True

    def _alloc(self, cap: int) -> None:
        self._t = np.empty(cap)
        self._p = np.empty((cap, 3))
        self._q = np.empty((cap, 4))
        self._v = np.full((cap, 3), np.nan)

    def _append(self, stamp: float, p: NDArray[np.float64], q: NDArray[np.float64], v: NDArray[np.float64]) -> None:
        cap = self._t.shape[0]
        if self._hi == cap:
            # Live rows stay contiguous (searchsorted on a slice). Storage grows by doubling up to
            # 2·max_poses (a long replay buffer costs only what it holds); then compaction
            # moves ≤ max_poses rows once every ≥ max_poses appends: amortized O(1).
            n = len(self)
            old = (self._t, self._p, self._q, self._v)
            if 2 * n > cap and cap < 2 * self.max_poses:
                self._alloc(min(2 * cap, 2 * self.max_poses))
            for src, dst in zip(old, (self._t, self._p, self._q, self._v), strict=True):
                dst[:n] = src[self._lo : self._hi]
            self._lo, self._hi = 0, n
        i = self._hi
        self._t[i], self._p[i], self._q[i], self._v[i] = stamp, p, q, v
        self._hi += 1
        # Keep one pose older than the cutoff so the oldest instant still has a left neighbour.
        cutoff = stamp - self.max_duration_s
        n_old = int(np.searchsorted(self._t[self._lo : self._hi], cutoff, side="left"))
        self._lo += max(n_old - 1, 0)
        self._lo = max(self._lo, self._hi - self.max_poses)

    # ------------------------------------------------------------------ queries
    def _check_window(self, t_first: float, t_last: float, max_extrapolation_s: float | None = None) -> float:
        """Raise HistoryUnavailable unless [t_first, t_last] is covered; return extrapolation (s)."""
        allowed = self.max_extrapolation_s if max_extrapolation_s is None else max_extrapolation_s
        if len(self) == 0:
            raise HistoryUnavailable(Reason.BUFFER_EMPTY, "no odometry received yet")
        t = self._t[self._lo : self._hi]
        details = {"requested": (t_first, t_last), "buffer": (float(t[0]), float(t[-1]))}
        if t_first < t[0] - _STAMP_EPS_S:
            missing = float(t[0] - t_first)
            hint = " after a time jump reset" if self._jumped_since_reset else ""
            raise HistoryUnavailable(
                Reason.NOT_COVERED_PAST,
                f"odometry starts at {t[0]:.3f}{hint}: {missing:.3f} s of history before it is missing",
                {**details, "missing_s": missing},
            )
        extra = float(t_last - t[-1])
        if extra > allowed + _STAMP_EPS_S:
            raise HistoryUnavailable(
                Reason.STALE,
                f"newest odometry {t[-1]:.3f} is {extra:.3f} s older than the requested {t_last:.3f} "
                f"(allowed extrapolation {allowed:.3f} s)",
                {**details, "missing_s": extra},
            )
        lo = max(int(np.searchsorted(t, t_first, side="right")) - 1, 0)
        hi = min(int(np.searchsorted(t, t_last, side="left")) + 1, t.shape[0])
        if hi - lo >= 2:
            gaps = np.diff(t[lo:hi])
            k = int(np.argmax(gaps))
            if gaps[k] > self.max_gap_s:
                raise HistoryUnavailable(
                    Reason.GAP,
                    f"odometry gap of {gaps[k]:.3f} s at {t[lo + k]:.3f} (max {self.max_gap_s:.3f} s)",
                    {**details, "gap_s": float(gaps[k]), "gap_at": float(t[lo + k])},
                )
        return extra if extra > _STAMP_EPS_S else 0.0

    def covers(self, t0: float) -> bool:
        """Whether history(t0) would find the poses it needs."""
        try:
            with self._lock:
                self._check_window(t0 - (self.history_steps - 1) * self.history_dt_s, t0)
        except HistoryUnavailable:
            return False
        return True

    def _interp(self, times: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        """Positions, quaternions and twists at `times` (already checked to be covered)."""
        t = self._t[self._lo : self._hi]
        if t.shape[0] == 1:
            n = times.shape[0]
            i = self._lo
            return (np.repeat(self._p[i][None], n, 0), np.repeat(self._q[i][None], n, 0),
                    np.repeat(self._v[i][None], n, 0))
        k = np.clip(np.searchsorted(t, times, side="right") - 1, 0, t.shape[0] - 2)
        u = (times - t[k]) / (t[k + 1] - t[k])
        a, b = k + self._lo, k + 1 + self._lo
        uu = u[:, None]
        p = self._p[a] + uu * (self._p[b] - self._p[a])
        v = self._v[a] + uu * (self._v[b] - self._v[a])
        q = quat_slerp(self._q[a], self._q[b], u)
        return p, q, v

    def pose_at(self, t: float, max_extrapolation_s: float | None = None) -> Pose:
        """World-frame pose at time t, interpolated; raises HistoryUnavailable outside coverage."""
        with self._lock:
            self._check_window(t, t, max_extrapolation_s)
            p, q, _ = self._interp(np.array([float(t)]))
        return Pose(float(t), p[0], q[0], quat_to_rotmat(q[0]))

    def history(self, t0: float) -> EgoHistory:
        """The 16-pose history ending at t0, in the ego frame at t0 (spec §3.1)."""
        t0 = float(t0)
        n, dt = self.history_steps, self.history_dt_s
        stamps = t0 - (n - 1 - np.arange(n, dtype=np.float64)) * dt
        stamps[-1] = t0
        with self._lock:
            extra = self._check_window(float(stamps[0]), t0)
            p, q, v = self._interp(stamps)
        rot_world = quat_to_rotmat(q)
        origin = Pose(t0, p[-1].copy(), q[-1].copy(), rot_world[-1].copy())
        xyz, rot = to_ego_frame(p, rot_world, origin.position, origin.rot)
        assert rot is not None
        xyz[-1] = 0.0
        rot[-1] = np.eye(3)
        speed = float(v[-1, 0]) if np.isfinite(v[-1, 0]) else None
        return EgoHistory(xyz, rot, stamps, t0, origin, speed, extra)

    def window(self, t_first: float, t_last: float) -> tuple[NDArray[np.float64], ...]:
        """Raw stored stamps, positions, quaternions with t_first <= stamp <= t_last (copies)."""
        with self._lock:
            t = self._t[self._lo : self._hi]
            lo = int(np.searchsorted(t, t_first, side="left")) + self._lo
            hi = int(np.searchsorted(t, t_last, side="right")) + self._lo
            return self._t[lo:hi].copy(), self._p[lo:hi].copy(), self._q[lo:hi].copy()


def future_in_ego_frame(
    buffer: PoseBuffer, t0: float, n: int = 64, dt: float = 0.1
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Ground-truth future at t0+dt … t0+n·dt in the ego frame at t0: (xyz (n, 3), rot (n, 3, 3)).

    Never extrapolates (the buffer's max_extrapolation_s does not apply): a future that the
    buffer does not cover raises HistoryUnavailable.
    """
    times = float(t0) + dt * np.arange(1, n + 1, dtype=np.float64)
    with buffer._lock:
        buffer._check_window(float(t0), float(times[-1]), max_extrapolation_s=0.0)
        origin = buffer.pose_at(t0, max_extrapolation_s=0.0)
        p, q, _ = buffer._interp(times)
    xyz, rot = to_ego_frame(p, quat_to_rotmat(q), origin.position, origin.rot)
    assert rot is not None
    return xyz, rot
