"""Fallback trajectories, pure NumPy (unit-tested without ROS).

- `stop_trajectory`: straight ahead in the ego frame, braking from v0 at a constant deceleration
  and then holding position. Never a teleport to zero speed: a controller can track it.
- `reexpress_plan`: the last valid plan, made at t0_old, re-expressed at a newer t0 in the ego frame
  at that t0: each waypoint time t0_new + (i+1)·dt is looked up on the old trajectory (linear in
  position, shortest-arc in yaw; the old ego origin is the sample at t0_old), waypoints beyond the
  old horizon hold the last pose, and the result is moved from the old ego frame to the new one
  through the odometry frame (the two ego poses at t0_old and t0_new).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LastPlan", "heading_of", "reexpress_plan", "stop_trajectory"]


@dataclass
class LastPlan:
    """What the node keeps of the last valid plan."""

    t0: float
    dt: float
    xyz: np.ndarray  # (K, N, 3) ego frame at t0
    yaw: np.ndarray  # (K, N)
    pose_world: tuple[np.ndarray, np.ndarray]  # ego (position (3,), rotation (3, 3)) at t0, odometry frame
    scores: list[float]
    selected: int
    reasoning: list[str]


def heading_of(rot: np.ndarray) -> float:
    """Planar heading (yaw about +z) of a rotation matrix."""
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def stop_trajectory(v0: float, n: int, dt: float, decel: float) -> tuple[np.ndarray, np.ndarray]:
    """(1, n, 3) xyz and (1, n) yaw: brake from max(v0, 0) at `decel` m/s² along +x, then hold."""
    v0 = max(0.0, float(v0)) if np.isfinite(v0) else 0.0
    t = dt * np.arange(1, n + 1, dtype=np.float64)
    t_stop = v0 / decel
    tc = np.minimum(t, t_stop)
    s = v0 * tc - 0.5 * decel * tc**2
    xyz = np.zeros((1, n, 3))
    xyz[0, :, 0] = s
    return xyz, np.zeros((1, n))


def reexpress_plan(last: LastPlan, t0_new: float,
                   pose_new: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(K, N, 3) xyz and (K, N) yaw of `last` at `t0_new`, in the ego frame at t0_new."""
    k, n = last.yaw.shape
    t_old = last.dt * np.arange(0, n + 1, dtype=np.float64)  # 0 = the old ego origin at t0_old
    t_query = np.clip((t0_new - last.t0) + last.dt * np.arange(1, n + 1), 0.0, t_old[-1])
    xyz_old = np.concatenate([np.zeros((k, 1, 3)), np.asarray(last.xyz, dtype=np.float64)], axis=1)
    yaw_old = np.unwrap(np.concatenate([np.zeros((k, 1)), np.asarray(last.yaw, dtype=np.float64)], axis=1), axis=1)
    xyz_q = np.stack([np.stack([np.interp(t_query, t_old, xyz_old[c, :, d]) for d in range(3)], axis=-1)
                      for c in range(k)])
    yaw_q = np.stack([np.interp(t_query, t_old, yaw_old[c]) for c in range(k)])
    p_old, r_old = (np.asarray(a, dtype=np.float64) for a in last.pose_world)
    p_new, r_new = (np.asarray(a, dtype=np.float64) for a in pose_new)
    world = xyz_q @ r_old.T + p_old
    xyz_new = (world - p_new) @ r_new  # R_newᵀ (p_w − p_new), row-vector form
    yaw_new = yaw_q + heading_of(r_old) - heading_of(r_new)
    yaw_new = (yaw_new + np.pi) % (2 * np.pi) - np.pi
    return xyz_new, yaw_new
