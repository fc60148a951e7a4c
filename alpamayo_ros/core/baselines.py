"""Trivial plans from the ego history alone: what a learned planner has to beat.

Both baselines read the same 16-pose history the model gets (10 Hz, ego frame at t0, the last
pose at the origin with identity rotation) and extrapolate it over the model's horizon:

- **constant velocity (CV)**: straight ahead along the heading at t0, at the current speed;
- **constant turn rate (CTR)**: the current speed and yaw rate held (a circular arc; CV when the
  yaw rate is zero).

Speed and yaw rate come from the last history interval (t0 − dt … t0), the freshest motion the
history holds. The speed is the chord length corrected for the arc (chord = 2·v/ω·sin(ω·dt/2)),
so a vehicle on a constant-speed arc is extrapolated exactly; its sign follows the chord's
projection on the heading (reversing gives a negative speed). Waypoint i is at t0 + (i+1)·dt.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import wrap_angle, yaw_from_rotmat

__all__ = ["BASELINES", "constant_turn_rate", "constant_velocity", "motion_at_t0"]

# A yaw rate below this (rad/s) counts as zero: the arc is then the straight line (its limit).
_STRAIGHT_BELOW_RAD_S = 1e-9


def motion_at_t0(history_xyz: ArrayLike, history_rot: ArrayLike, dt: float = 0.1) -> tuple[float, float]:
    """(speed m/s, yaw rate rad/s) over the last history interval; history in the ego frame at t0."""
    xyz = np.asarray(history_xyz, dtype=np.float64)
    rot = np.asarray(history_rot, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[0] < 2 or xyz.shape[1] < 2 or rot.shape != (xyz.shape[0], 3, 3):
        raise ValueError(f"expected history (T>=2, 3) and rotations (T, 3, 3), got {xyz.shape} and {rot.shape}")
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    step = xyz[-1, :2] - xyz[-2, :2]
    dyaw = float(wrap_angle(yaw_from_rotmat(rot[-1]) - yaw_from_rotmat(rot[-2])))
    yaw_rate = dyaw / dt
    half = 0.5 * dyaw
    arc_over_chord = half / np.sin(half) if abs(half) > 1e-12 else 1.0
    # The chord's direction is the heading halfway through the interval.
    heading_mid = float(yaw_from_rotmat(rot[-1])) - half
    along = step[0] * np.cos(heading_mid) + step[1] * np.sin(heading_mid)
    speed = float(np.copysign(np.linalg.norm(step) * arc_over_chord / dt, along))
    return speed, float(yaw_rate)


def _horizon(n: int, dt: float) -> NDArray[np.float64]:
    if n < 1 or not dt > 0:
        raise ValueError(f"need n >= 1 waypoints and dt > 0, got n={n}, dt={dt}")
    return dt * np.arange(1, n + 1, dtype=np.float64)


def constant_velocity(history_xyz: ArrayLike, history_rot: ArrayLike, n: int = 64, dt: float = 0.1,
                      history_dt: float = 0.1) -> NDArray[np.float64]:
    """(n, 3) waypoints straight along the heading at t0 at the current speed (z = 0)."""
    speed, _ = motion_at_t0(history_xyz, history_rot, history_dt)
    t = _horizon(n, dt)
    return np.stack([speed * t, np.zeros_like(t), np.zeros_like(t)], axis=-1)


def constant_turn_rate(history_xyz: ArrayLike, history_rot: ArrayLike, n: int = 64, dt: float = 0.1,
                       history_dt: float = 0.1) -> NDArray[np.float64]:
    """(n, 3) waypoints on the arc of the current speed and yaw rate (z = 0)."""
    speed, yaw_rate = motion_at_t0(history_xyz, history_rot, history_dt)
    t = _horizon(n, dt)
    if abs(yaw_rate) < _STRAIGHT_BELOW_RAD_S:
        return constant_velocity(history_xyz, history_rot, n, dt, history_dt)
    radius = speed / yaw_rate
    x = radius * np.sin(yaw_rate * t)
    y = radius * (1.0 - np.cos(yaw_rate * t))
    return np.stack([x, y, np.zeros_like(t)], axis=-1)


# Name -> function, in report order.
BASELINES = {"constant_velocity": constant_velocity, "constant_turn_rate": constant_turn_rate}
