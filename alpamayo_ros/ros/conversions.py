"""PlanResult -> ROS messages (Path, TrajectoryCandidates, MarkerArray) and time conversions.

Every output is stamped with the tick's input time t0 (never the publish time); waypoint i of a
path is stamped t0 + (i + 1) * dt. Paths are expressed either in the ego frame at t0 (as computed
by the core) or in the odometry frame, using the ego pose at t0 that the core interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_ros.msg import CandidateControls, TrajectoryCandidates

__all__ = [
    "FramedTrajectories",
    "duration_msg",
    "express_in_frame",
    "make_candidates_msg",
    "make_markers",
    "make_path",
    "rotmat_to_quat_xyzw",
    "stamp_to_sec",
    "time_msg",
    "yaw_to_quat_xyzw",
]


def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def time_msg(t_s: float) -> Time:
    """Float seconds -> builtin_interfaces/Time (rounded to the nanosecond, never negative)."""
    ns = max(0, round(t_s * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_msg(d_s: float) -> Duration:
    ns = round(d_s * 1e9)
    sec, nanosec = divmod(ns, 1_000_000_000)  # Duration.nanosec is always in [0, 1e9)
    return Duration(sec=int(sec), nanosec=int(nanosec))


def yaw_to_quat_xyzw(yaw: np.ndarray) -> np.ndarray:
    """Rotation about +z by yaw (radians) -> (..., 4) quaternion x, y, z, w."""
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=-1)


def rotmat_to_quat_xyzw(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions x, y, z, w (w >= 0)."""
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # Magnitudes from the diagonal, signs from the off-diagonal (robust for every rotation).
    w = 0.5 * np.sqrt(np.maximum(0.0, 1.0 + m00 + m11 + m22))
    x = 0.5 * np.sqrt(np.maximum(0.0, 1.0 + m00 - m11 - m22))
    y = 0.5 * np.sqrt(np.maximum(0.0, 1.0 - m00 + m11 - m22))
    z = 0.5 * np.sqrt(np.maximum(0.0, 1.0 - m00 - m11 + m22))
    x = np.copysign(x, r[..., 2, 1] - r[..., 1, 2])
    y = np.copysign(y, r[..., 0, 2] - r[..., 2, 0])
    z = np.copysign(z, r[..., 1, 0] - r[..., 0, 1])
    q = np.stack([x, y, z, w], axis=-1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


@dataclass
class FramedTrajectories:
    """K trajectories ready to become messages: positions and orientations in `frame_id`."""

    frame_id: str
    t0: float
    dt: float
    xyz: np.ndarray  # (K, N, 3) float64
    quat_xyzw: np.ndarray  # (K, N, 4) float64


def express_in_frame(
    xyz_ego: np.ndarray,
    yaw_ego: np.ndarray,
    t0: float,
    dt: float,
    frame_id: str,
    t0_pose_world: tuple[np.ndarray, np.ndarray] | None = None,
) -> FramedTrajectories:
    """Ego-frame-at-t0 trajectories -> `frame_id`; with `t0_pose_world` (p, R) into that world frame.

    Orientation is the waypoint yaw (the planar heading the model predicts), composed with the full
    ego attitude at t0 when the output is in the odometry frame.
    """
    xyz = np.asarray(xyz_ego, dtype=np.float64).reshape(-1, np.shape(xyz_ego)[-2], 3)
    yaw = np.asarray(yaw_ego, dtype=np.float64).reshape(xyz.shape[:2])
    if t0_pose_world is None:
        return FramedTrajectories(frame_id, t0, dt, xyz, yaw_to_quat_xyzw(yaw))
    p0 = np.asarray(t0_pose_world[0], dtype=np.float64).reshape(3)
    r0 = np.asarray(t0_pose_world[1], dtype=np.float64).reshape(3, 3)
    xyz_w = xyz @ r0.T + p0
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.zeros(yaw.shape + (3, 3))
    rz[..., 0, 0], rz[..., 0, 1], rz[..., 1, 0], rz[..., 1, 1], rz[..., 2, 2] = c, -s, s, c, 1.0
    return FramedTrajectories(frame_id, t0, dt, xyz_w, rotmat_to_quat_xyzw(r0 @ rz))


def make_path(traj: FramedTrajectories, k: int) -> Path:
    header = Header(stamp=time_msg(traj.t0), frame_id=traj.frame_id)
    path = Path(header=header)
    xyz, q = traj.xyz[k].tolist(), traj.quat_xyzw[k].tolist()
    poses = []
    for i, (p, o) in enumerate(zip(xyz, q, strict=True)):
        pose = PoseStamped()
        pose.header.stamp = time_msg(traj.t0 + (i + 1) * traj.dt)
        pose.header.frame_id = traj.frame_id
        pos, ori = pose.pose.position, pose.pose.orientation
        pos.x, pos.y, pos.z = p
        ori.x, ori.y, ori.z, ori.w = o
        poses.append(pose)
    path.poses = poses
    return path


@dataclass
class CandidateExtras:
    """Per-tick fields of TrajectoryCandidates besides the paths."""

    scores: list[float]
    selected: int
    reasoning: list[str]
    acceleration: np.ndarray | None  # (K, N)
    curvature: np.ndarray | None  # (K, N)
    v0: float
    model_id: str
    backend: str
    fallback: bool = False
    fallback_reason: str = ""
    inference_time_s: float = 0.0
    input_to_publish_s: float = 0.0


def make_candidates_msg(paths: list[Path], traj: FramedTrajectories, extra: CandidateExtras) -> TrajectoryCandidates:
    msg = TrajectoryCandidates()
    msg.header = Header(stamp=time_msg(traj.t0), frame_id=traj.frame_id)
    msg.candidates = paths
    msg.scores = [float(s) for s in extra.scores]
    msg.selected_index = int(extra.selected)
    msg.reasoning = [str(r) for r in extra.reasoning]
    controls = []
    for k in range(len(paths)):
        acc = [] if extra.acceleration is None else np.asarray(extra.acceleration[k], dtype=np.float32).tolist()
        cur = [] if extra.curvature is None else np.asarray(extra.curvature[k], dtype=np.float32).tolist()
        controls.append(CandidateControls(dt=float(traj.dt), v0=float(extra.v0), acceleration=acc, curvature=cur))
    msg.controls = controls
    msg.model_id = extra.model_id
    msg.backend = extra.backend
    msg.fallback = bool(extra.fallback)
    msg.fallback_reason = extra.fallback_reason
    msg.inference_time = duration_msg(extra.inference_time_s)
    msg.input_to_publish = duration_msg(extra.input_to_publish_s)
    return msg


_GREY = ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.6)
_GREEN = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
_ORANGE = ColorRGBA(r=1.0, g=0.55, b=0.0, a=1.0)
_WHITE = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def _line(traj: FramedTrajectories, k: int, ns: str, mid: int, width: float, color: ColorRGBA) -> Marker:
    m = Marker(ns=ns, id=mid, type=Marker.LINE_STRIP, action=Marker.ADD)
    m.header = Header(stamp=time_msg(traj.t0), frame_id=traj.frame_id)
    m.pose.orientation.w = 1.0
    m.scale.x = width
    m.color = color
    m.points = [Point(x=p[0], y=p[1], z=p[2]) for p in traj.xyz[k].tolist()]
    return m


def make_markers(traj: FramedTrajectories, selected: int, reasoning: str, fallback: bool) -> MarkerArray:
    """Candidates (thin grey), the selected one (green, orange when a fallback) and the reasoning text."""
    markers = [_line(traj, k, "candidates", k, 0.08, _GREY) for k in range(traj.xyz.shape[0])]
    markers.append(_line(traj, selected, "selected", 0, 0.25, _ORANGE if fallback else _GREEN))
    text = Marker(ns="reasoning", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    text.header = Header(stamp=time_msg(traj.t0), frame_id=traj.frame_id)
    first = traj.xyz[selected, 0]
    text.pose.position = Point(x=float(first[0]), y=float(first[1]), z=float(first[2]) + 3.0)
    text.pose.orientation.w = 1.0
    text.scale.z = 0.6
    text.color = _WHITE
    text.text = ("[FALLBACK] " if fallback else "") + (reasoning or "")
    markers.append(text)
    return MarkerArray(markers=markers)
