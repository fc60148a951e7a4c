"""Odometry pose buffer and the model's egomotion history (spec §3.1).

The history is 16 poses at t0−1.5 … t0 (10 Hz), **interpolated by timestamp** (linear position,
slerp rotation) and expressed in the ego frame at t0, so the odometry rate and its jitter do not
matter. Taking poses by message index (as public integrations do) silently assumes one rate.

Continuity: a pose that lands far from where the motion since the previous pose (its twist, or
the previous step's velocity) puts it is a discontinuity. With a ``ContinuityConfig`` the buffer
holds such a pose back until the next one says what it was: back on the old track → an outlier,
dropped; the jump stays → a relocalisation (or frame switch), and the history restarts at the jump,
because poses on both sides of it do not describe one motion. ``find_discontinuity`` runs the same
test over a whole history window (the input gate's check).

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
    "ContinuityConfig",
    "ContinuityEvent",
    "Discontinuity",
    "EgoHistory",
    "EgomotionError",
    "HistoryUnavailable",
    "Pose",
    "PoseBuffer",
    "PoseRejected",
    "Reason",
    "StepResiduals",
    "find_discontinuity",
    "future_in_ego_frame",
    "rotation_angle",
    "step_residuals",
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
    TWIST_NONFINITE = "twist_nonfinite"
    QUATERNION_NOT_UNIT = "quaternion_not_unit"
    BAD_SHAPE = "bad_shape"
    OUT_OF_ORDER = "odometry_out_of_order"


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
    twist: NDArray[np.float64] | None = None  # (16, 3) body-frame twist.linear at each stamp, NaN where unknown

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


@dataclass(frozen=True)
class ContinuityConfig:
    """When consecutive poses disagree with the motion between them (see ``step_residuals``).

    A step's displacement is predicted from the twist (the mean of the two poses' body-frame
    velocities, rotated into the odometry frame) or, without a twist, from the previous step's
    velocity. It is a discontinuity when the position misses that prediction by more than
    ``max_jump_m`` + ``relative_tolerance`` × the predicted distance (twist noise, acceleration),
    or the heading turns by more than ``max_heading_jump_rad`` + ``max_yaw_rate_rps`` × dt.
    """

    max_jump_m: float = 1.0
    relative_tolerance: float = 0.25
    max_heading_jump_rad: float = 0.3
    max_yaw_rate_rps: float = 1.5  # beyond any car's yaw rate

    def __post_init__(self) -> None:
        for name in ("max_jump_m", "max_heading_jump_rad", "max_yaw_rate_rps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ContinuityConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.relative_tolerance < 0:
            raise ValueError(f"ContinuityConfig.relative_tolerance must be >= 0, got {self.relative_tolerance}")


@dataclass(frozen=True)
class StepResiduals:
    """Per step (pose a → pose b): how far the motion departs from its prediction, and the limits."""

    error: NDArray[np.float64]  # (m, 3) displacement − predicted displacement (0 where nothing predicts it)
    tolerance_m: NDArray[np.float64]  # (m,)
    rotation_rad: NDArray[np.float64]  # (m,) angle between the two orientations
    rotation_tolerance_rad: NDArray[np.float64]  # (m,)

    @property
    def error_m(self) -> NDArray[np.float64]:
        return np.asarray(np.linalg.norm(self.error, axis=-1), dtype=np.float64)

    @property
    def jump(self) -> NDArray[np.bool_]:
        return (self.error_m > self.tolerance_m) | (self.rotation_rad > self.rotation_tolerance_rad)


def rotation_angle(rot_a: ArrayLike, rot_b: ArrayLike) -> NDArray[np.float64]:
    """Angle (rad) of the relative rotation R_aᵀ R_b, for stacks (..., 3, 3)."""
    a = np.asarray(rot_a, dtype=np.float64)
    b = np.asarray(rot_b, dtype=np.float64)
    trace = np.einsum("...ji,...ji->...", a, b)  # trace(R_aᵀ R_b)
    return np.asarray(np.arccos(np.clip(0.5 * (trace - 1.0), -1.0, 1.0)), dtype=np.float64)


def step_residuals(
    dt: ArrayLike,
    position_a: ArrayLike,
    position_b: ArrayLike,
    rot_a: ArrayLike,
    rot_b: ArrayLike,
    twist_a: ArrayLike,
    twist_b: ArrayLike,
    velocity_prior: ArrayLike,
    cfg: ContinuityConfig,
) -> StepResiduals:
    """Residuals of m steps. Positions (m, 3) and rotations (m, 3, 3) in one frame; twists (m, 3)
    in the body frame (NaN = unknown); velocity_prior (m, 3) in the positions' frame is used where
    neither pose has a twist (NaN = no prediction: the position is not judged)."""
    dt_a = np.asarray(dt, dtype=np.float64)
    ra = np.asarray(rot_a, dtype=np.float64)
    rb = np.asarray(rot_b, dtype=np.float64)
    wa = np.einsum("mij,mj->mi", ra, np.asarray(twist_a, dtype=np.float64))
    wb = np.einsum("mij,mj->mi", rb, np.asarray(twist_b, dtype=np.float64))
    fa = np.all(np.isfinite(wa), axis=-1, keepdims=True)
    fb = np.all(np.isfinite(wb), axis=-1, keepdims=True)
    velocity = np.where(fa & fb, 0.5 * (wa + wb), np.where(fa, wa, np.where(fb, wb, velocity_prior)))
    predicted = velocity * dt_a[:, None]
    known = np.all(np.isfinite(predicted), axis=-1, keepdims=True)
    moved = np.asarray(position_b, dtype=np.float64) - np.asarray(position_a, dtype=np.float64)
    error = np.where(known, moved - np.where(known, predicted, 0.0), 0.0)
    tolerance = cfg.max_jump_m + cfg.relative_tolerance * np.linalg.norm(np.where(known, predicted, 0.0), axis=-1)
    return StepResiduals(error, tolerance, rotation_angle(ra, rb), cfg.max_heading_jump_rad + cfg.max_yaw_rate_rps * dt_a)


@dataclass(frozen=True)
class Discontinuity:
    """The worst step of a window that breaks continuity (poses `index` → `index + span`)."""

    index: int
    span: int
    error_m: float
    tolerance_m: float
    rotation_rad: float
    rotation_tolerance_rad: float

    def describe(self) -> str:
        what = (f"position off by {self.error_m:.2f} m (limit {self.tolerance_m:.2f} m)"
                if self.error_m > self.tolerance_m else
                f"heading turned {self.rotation_rad:.2f} rad (limit {self.rotation_tolerance_rad:.2f} rad)")
        return f"poses {self.index}->{self.index + self.span}: {what}"


def find_discontinuity(
    stamps: ArrayLike,
    xyz: ArrayLike,
    rot: ArrayLike,
    twist: ArrayLike | None = None,
    cfg: ContinuityConfig | None = None,
) -> Discontinuity | None:
    """The worst discontinuity of a pose sequence (n ≥ 2), or None when it is one motion.

    Steps and pairs of steps are both checked: an interpolated history puts a jump that falls
    between two of its stamps' neighbours partly into each of two steps.
    """
    cfg = cfg or ContinuityConfig()
    t = np.asarray(stamps, dtype=np.float64)
    p = np.asarray(xyz, dtype=np.float64)
    r = np.asarray(rot, dtype=np.float64)
    n = p.shape[0]
    v = np.full((n, 3), np.nan) if twist is None else np.asarray(twist, dtype=np.float64)
    dt = np.diff(t)
    step_v = np.diff(p, axis=0) / dt[:, None]
    # without a twist a step is predicted by its predecessor (the first by its successor)
    prior = np.concatenate([step_v[1:2], step_v[:-1]]) if n > 2 else np.full((n - 1, 3), np.nan)
    single = step_residuals(dt, p[:-1], p[1:], r[:-1], r[1:], v[:-1], v[1:], prior, cfg)
    candidates = [(single.error_m, single.tolerance_m, single.rotation_rad, single.rotation_tolerance_rad, 1)]
    if n > 2:
        pair_rot = rotation_angle(r[:-2], r[2:])
        pair_rot_tol = cfg.max_heading_jump_rad + cfg.max_yaw_rate_rps * (dt[:-1] + dt[1:])
        pair_err = np.linalg.norm(single.error[:-1] + single.error[1:], axis=-1)
        pair_tol = single.tolerance_m[:-1] + single.tolerance_m[1:] - cfg.max_jump_m
        candidates.append((pair_err, pair_tol, pair_rot, pair_rot_tol, 2))
    worst: Discontinuity | None = None
    worst_ratio = 1.0
    for err, tol, ang, ang_tol, span in candidates:
        ratio = np.maximum(err / tol, ang / ang_tol)
        i = int(np.argmax(ratio))
        if ratio[i] > worst_ratio:
            worst_ratio = float(ratio[i])
            worst = Discontinuity(i, span, float(err[i]), float(tol[i]), float(ang[i]), float(ang_tol[i]))
    return worst


@dataclass(frozen=True)
class ContinuityEvent:
    """What the buffer decided about a pose it held back (``PoseBuffer.pop_events``)."""

    kind: str  # RELOCALISATION: the jump stayed and the history restarted; OUTLIER: the pose was dropped
    stamp: float  # stamp of the pose that jumped
    error_m: float  # how far it landed from the predicted position
    rotation_rad: float
    message: str

    RELOCALISATION = "relocalisation"
    OUTLIER = "outlier"


@dataclass(frozen=True)
class _Sample:
    stamp: float
    position: NDArray[np.float64]
    quaternion: NDArray[np.float64]
    twist: NDArray[np.float64]
    residuals: StepResiduals | None = None  # against the newest stored pose, when it was held back


@dataclass
class PoseBuffer:
    """Bounded, time-ordered odometry poses with timestamp interpolation.

    max_duration_s: poses older than newest − this are dropped.
    max_gap_s: a window whose consecutive poses are further apart than this is refused (a dropped
        odometry stream must not be bridged by a straight line).
    max_extrapolation_s: how far past the newest pose a request may reach (default 0: never).
    reset_on_time_jump: a stamp going backwards clears the buffer (bag loop) instead of raising.
    continuity: when set, a pose that jumps away from the motion is held back until the next pose
        decides (module docstring); what was decided is reported by ``pop_events``.

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
    continuity: ContinuityConfig | None = None
    time_jumps: int = field(default=0, init=False)
    relocalisations: int = field(default=0, init=False)
    outliers: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_poses < 2 or self.max_duration_s <= 0 or self.max_gap_s <= 0:
            raise ValueError("PoseBuffer needs max_poses >= 2, max_duration_s > 0 and max_gap_s > 0")
        if self.max_extrapolation_s < 0:
            raise ValueError("max_extrapolation_s must be >= 0")
        self._alloc(min(2 * self.max_poses, 1024))
        self._lo = 0
        self._hi = 0
        self._jumped_since_reset = False
        self._relocalised_at: float | None = None
        self._pending: _Sample | None = None  # a pose that jumped, waiting for the next one
        self._events: list[ContinuityEvent] = []
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

    @property
    def pending_stamp(self) -> float | None:
        """Stamp of a pose held back after a jump (not in the buffer yet), if any."""
        with self._lock:
            return None if self._pending is None else self._pending.stamp

    def reset(self) -> None:
        with self._lock:
            self._lo = self._hi = 0
            self._jumped_since_reset = False
            self._relocalised_at = None
            self._pending = None

    def relocalise(self, stamp: float) -> None:
        """Start the history over at `stamp` (the odometry switched frames, or jumped and stayed)."""
        with self._lock:
            self.reset()
            self._relocalised_at = float(stamp)
            self.relocalisations += 1

    def pop_events(self) -> list[ContinuityEvent]:
        """Relocalisations and dropped outliers since the last call (oldest first)."""
        with self._lock:
            events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ input
    def add(
        self,
        stamp_s: float,
        position: ArrayLike,
        quaternion: ArrayLike,
        twist_linear: ArrayLike | None = None,
    ) -> bool:
        """Append one pose; returns False for a repeated stamp (kept: the first one).

        Raises PoseRejected with reason_code POSE_NONFINITE, TWIST_NONFINITE (a twist that is given
        must be finite; None means unknown), QUATERNION_NOT_UNIT, BAD_SHAPE, OUT_OF_ORDER (older
        than a held-back pose) or TIME_JUMP (unless reset_on_time_jump, which clears the buffer and
        keeps the new pose). With `continuity`, a pose that jumps is held back (see the class doc).
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
        if twist_linear is not None and not np.all(np.isfinite(v)):
            raise PoseRejected(Reason.TWIST_NONFINITE, f"non-finite twist {v} at stamp {stamp}", {"stamp": stamp})
        q = q / np.linalg.norm(q)
        with self._lock:
            latest = self.latest_stamp
            pending = self._pending
            if pending is not None and latest is not None and stamp > latest + _STAMP_EPS_S:
                if abs(stamp - pending.stamp) <= _STAMP_EPS_S:
                    return False
                if stamp < pending.stamp:
                    raise PoseRejected(Reason.OUT_OF_ORDER, f"stamp {stamp:.6f} is older than the held-back pose "
                                       f"{pending.stamp:.6f}", {"stamp": stamp})
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
            if self.continuity is None or not len(self):
                self._append(stamp, p, q, v)
            else:
                self._add_checked(_Sample(stamp, p, q, v))
        return True

    def _add_checked(self, new: _Sample) -> None:
        """Append `new` unless it jumps; settle a held-back pose with it (caller holds the lock)."""
        last = self._sample(self._hi - 1)
        if new.stamp - last.stamp > self.max_gap_s:  # nothing to predict across a gap (refused anyway)
            self._drop_pending()
            self._append(new.stamp, new.position, new.quaternion, new.twist)
            return
        prior = self._clean_velocity()
        from_last = self._residuals(last, new, prior)
        pending, self._pending = self._pending, None
        if not from_last.jump[0]:  # on the old track (a held-back pose was an outlier)
            if pending is not None:
                self._drop(pending)
            self._append(new.stamp, new.position, new.quaternion, new.twist)
        elif pending is not None and not self._residuals(pending, new, prior).jump[0]:
            self._relocalise(pending, new)
        else:  # a (new) jump: hold it back until the next pose says whether it stays
            if pending is not None:
                self._drop(pending)
            self._pending = _Sample(new.stamp, new.position, new.quaternion, new.twist, from_last)

    def _sample(self, i: int) -> _Sample:
        return _Sample(float(self._t[i]), self._p[i], self._q[i], self._v[i])

    def _clean_velocity(self) -> NDArray[np.float64]:
        """Velocity of the newest stored step (odometry frame), NaN without one."""
        if len(self) < 2:
            return np.full(3, np.nan)
        a, b = self._hi - 2, self._hi - 1
        dt = float(self._t[b] - self._t[a])
        if dt > self.max_gap_s:
            return np.full(3, np.nan)
        return np.asarray((self._p[b] - self._p[a]) / dt, dtype=np.float64)

    def _residuals(self, a: _Sample, b: _Sample, prior: NDArray[np.float64]) -> StepResiduals:
        assert self.continuity is not None
        rot = quat_to_rotmat(np.stack([a.quaternion, b.quaternion]))
        return step_residuals([b.stamp - a.stamp], a.position[None], b.position[None], rot[:1], rot[1:],
                              a.twist[None], b.twist[None], prior[None], self.continuity)

    def _drop(self, pending: _Sample) -> None:
        self.outliers += 1
        err, ang = self._jump_size(pending)
        self._events.append(ContinuityEvent(
            ContinuityEvent.OUTLIER, pending.stamp, err, ang,
            f"odometry pose at {pending.stamp:.3f} jumped {err:.2f} m / {ang:.2f} rad away from the motion and the "
            "next pose came back: dropped as an outlier"))

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._drop(self._pending)
            self._pending = None

    @staticmethod
    def _jump_size(sample: _Sample) -> tuple[float, float]:
        res = sample.residuals
        return (0.0, 0.0) if res is None else (float(res.error_m[0]), float(res.rotation_rad[0]))

    def _relocalise(self, pending: _Sample, new: _Sample) -> None:
        """The jump stayed: poses before it describe another track, so the history restarts at it."""
        err, ang = self._jump_size(pending)
        self.relocalise(pending.stamp)
        self._events.append(ContinuityEvent(
            ContinuityEvent.RELOCALISATION, pending.stamp, err, ang,
            f"odometry jumped {err:.2f} m / {ang:.2f} rad at {pending.stamp:.3f} and stayed there (relocalisation): "
            f"pose history reset; planning resumes once {(self.history_steps - 1) * self.history_dt_s:.1f} s of "
            "history exist after the jump"))
        for s in (pending, new):
            self._append(s.stamp, s.position, s.quaternion, s.twist)

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
            hint = (" after a time jump reset" if self._jumped_since_reset else
                    f" after the relocalisation at {self._relocalised_at:.3f}" if self._relocalised_at is not None else "")
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
        return EgoHistory(xyz, rot, stamps, t0, origin, speed, extra, twist=v)

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
