"""Analytic ego motions for the core-math tests (closed forms, so expected values are exact)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from alpamayo_ros.core.geometry import quat_multiply, rot_z, rotmat_to_quat


@dataclass(frozen=True)
class Motion:
    """Planar motion: speed v(t) = v0 + a·t, yaw rate ω (constant), starting at the origin at t=0.

    With a = 0 the path is a circle (or a line when ω = 0) with closed-form positions.
    """

    v0: float = 10.0
    accel: float = 0.0
    yaw_rate: float = 0.0

    def yaw(self, t: np.ndarray) -> np.ndarray:
        return self.yaw_rate * t

    def position(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.accel != 0.0 and self.yaw_rate != 0.0:
            return self._integrate(t)
        if self.yaw_rate == 0.0:
            x = self.v0 * t + 0.5 * self.accel * t * t
            return np.stack([x, np.zeros_like(t), np.zeros_like(t)], -1)
        r = self.v0 / self.yaw_rate
        th = self.yaw(t)
        return np.stack([r * np.sin(th), r * (1 - np.cos(th)), np.zeros_like(t)], -1)

    def _integrate(self, t: np.ndarray) -> np.ndarray:
        fine, x, y = _integrated_path(self.v0, self.accel, self.yaw_rate)
        return np.stack([np.interp(t, fine, x), np.interp(t, fine, y), np.zeros_like(t)], -1)

    def rot(self, t: np.ndarray) -> np.ndarray:
        return rot_z(self.yaw(np.asarray(t, dtype=np.float64)))


    def ego_history(self) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(-15, 1) * 0.1
        return self.position(t), self.rot(t)

    def ego_future(self, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(1, n + 1) * 0.1
        return self.position(t), self.rot(t)


@lru_cache(maxsize=16)
def _integrated_path(v0: float, accel: float, yaw_rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine trapezoid integration of the unicycle over −20…20 s (error ~1e-8 m)."""
    fine = np.linspace(-20.0, 20.0, 400_001)
    v = v0 + accel * fine
    th = yaw_rate * fine
    dx, dy = v * np.cos(th), v * np.sin(th)
    h = fine[1] - fine[0]
    x = np.concatenate([[0], np.cumsum(0.5 * h * (dx[1:] + dx[:-1]))])
    y = np.concatenate([[0], np.cumsum(0.5 * h * (dy[1:] + dy[:-1]))])
    i0 = int(np.searchsorted(fine, 0.0))
    return fine, x - x[i0], y - y[i0]


def world_poses(motion: Motion, stamps: np.ndarray, t0: float, world_rot: np.ndarray,
                world_offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poses of `motion` (ego frame at t0 = its origin) seen from a world frame: (p (n,3), q (n,4))."""
    local_t = stamps - t0
    p = motion.position(local_t) @ world_rot.T + world_offset
    q_local = rotmat_to_quat(motion.rot(local_t))
    q = quat_multiply(rotmat_to_quat(world_rot)[None], q_local)
    return p, q
