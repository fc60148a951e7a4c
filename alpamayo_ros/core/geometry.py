"""Rotation helpers: quaternions (x, y, z, w order, as in ROS), slerp, yaw and angle unwrapping.

Everything is vectorized over leading dimensions and computed in float64 unless the caller
passes float32 on purpose. Conventions follow the reference (spec §6.2): yaw(R) = atan2(R[1,0], R[0,0]).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "quat_conjugate",
    "quat_multiply",
    "quat_norm_error",
    "quat_normalize",
    "quat_slerp",
    "quat_to_rotmat",
    "rot_z",
    "rotmat_to_quat",
    "unwrap_angle",
    "wrap_angle",
    "yaw_from_quat",
    "yaw_from_rotmat",
]

# Below this angle between two quaternions slerp's sin(Ω) is too small to divide by; the
# normalized lerp is then exact to well below float64 noise.
_SLERP_LINEAR_BELOW = 1e-6


def quat_norm_error(q: ArrayLike) -> NDArray[np.float64]:
    """|‖q‖ − 1| per quaternion (..., 4) -> (...)."""
    q = np.asarray(q, dtype=np.float64)
    return np.abs(np.linalg.norm(q, axis=-1) - 1.0)


def quat_normalize(q: ArrayLike) -> NDArray[np.float64]:
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_conjugate(q: ArrayLike) -> NDArray[np.float64]:
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_multiply(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Hamilton product a ⊗ b for (x, y, z, w) quaternions."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_to_rotmat(q: ArrayLike) -> NDArray[np.float64]:
    """Unit quaternion(s) (..., 4) in (x, y, z, w) order -> rotation matrices (..., 3, 3)."""
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        [1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)],
        [2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)],
        [2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotmat_to_quat(rot: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4), (x, y, z, w), w >= 0.

    Picks, per matrix, the largest of (w, x, y, z) to divide by (Shepperd), which stays accurate
    for every rotation including 180° turns.
    """
    r = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    cands = np.stack([1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1)
    k = np.argmax(cands, axis=-1)
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(cands, k[..., None], -1)[..., 0], 1e-300))
    d21, d12 = r[..., 2, 1], r[..., 1, 2]
    d02, d20 = r[..., 0, 2], r[..., 2, 0]
    d10, d01 = r[..., 1, 0], r[..., 0, 1]
    by_k = [
        np.stack([s / 4, (d01 + d10) / s, (d02 + d20) / s, (d21 - d12) / s], -1),
        np.stack([(d01 + d10) / s, s / 4, (d12 + d21) / s, (d02 - d20) / s], -1),
        np.stack([(d02 + d20) / s, (d12 + d21) / s, s / 4, (d10 - d01) / s], -1),
        np.stack([(d21 - d12) / s, (d02 - d20) / s, (d10 - d01) / s, s / 4], -1),
    ]
    q = np.choose(k[..., None], by_k)
    q = np.where(q[..., 3:] < 0, -q, q)
    return quat_normalize(q)


def quat_slerp(q0: ArrayLike, q1: ArrayLike, u: ArrayLike) -> NDArray[np.float64]:
    """Spherical interpolation along the shorter arc; u may lie outside [0, 1] (extrapolation).

    q0, q1: (..., 4) unit quaternions; u: broadcastable to (...).
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # q and −q are the same rotation: take the short way
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    omega = np.arccos(dot)
    sin_omega = np.sin(omega)
    small = omega < _SLERP_LINEAR_BELOW
    safe = np.where(small, 1.0, sin_omega)
    w0 = np.where(small, 1.0 - u, np.sin((1.0 - u) * omega) / safe)
    w1 = np.where(small, u, np.sin(u * omega) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)


def yaw_from_rotmat(rot: ArrayLike) -> NDArray[np.floating]:
    """Heading about z of rotation matrices (..., 3, 3): atan2(R[1,0], R[0,0]) (spec §6.2)."""
    r = np.asarray(rot)
    return np.arctan2(r[..., 1, 0], r[..., 0, 0])


def yaw_from_quat(q: ArrayLike) -> NDArray[np.float64]:
    """Same yaw as yaw_from_rotmat(quat_to_rotmat(q)) without building the matrix."""
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    return np.arctan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z))


def rot_z(yaw: ArrayLike) -> NDArray[np.floating]:
    """Rotation matrices (..., 3, 3) about z by yaw (...); dtype follows a floating input."""
    yaw = np.asarray(yaw)
    if not np.issubdtype(yaw.dtype, np.floating):
        yaw = yaw.astype(np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack(
        [np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], -2
    )


def wrap_angle(x: ArrayLike) -> NDArray[np.floating]:
    """Wrap to [−π, π] via atan2(sin, cos), as the reference does."""
    x = np.asarray(x)
    return np.arctan2(np.sin(x), np.cos(x))


def unwrap_angle(phi: ArrayLike) -> NDArray[np.floating]:
    """Unwrap the last axis: consecutive differences wrapped to [−π, π], cumsum from phi[..., 0]."""
    phi = np.asarray(phi)
    d = wrap_angle(np.diff(phi, axis=-1))
    return np.concatenate([phi[..., :1], phi[..., :1] + np.cumsum(d, axis=-1)], axis=-1)
