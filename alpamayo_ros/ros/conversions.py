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
    "CandidateExtras",
    "FramedTrajectories",
    "PathCache",
    "duration_msg",
    "express_in_frame",
    "make_candidates_msg",
    "make_markers",
    "make_path",
    "rotmat_to_quat_xyzw",
    "serialized_header_stamp",
    "stamp_to_sec",
    "time_msg",
    "yaw_to_quat_xyzw",
]


def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def serialized_header_stamp(data: bytes) -> float | None:
    """header.stamp (s) of a serialized message whose first field is a std_msgs/Header, read from the
    CDR bytes without deserializing: the 4-byte encapsulation, then int32 sec and uint32 nanosec.
    None for an encapsulation other than plain CDR (little or big endian)."""
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1):
        return None
    order = "little" if data[1] == 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    return float(sec) + float(int.from_bytes(data[8:12], order)) * 1e-9


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


def _fill_path(path: Path, traj: FramedTrajectories, k: int) -> Path:
    path.header.stamp = time_msg(traj.t0)
    path.header.frame_id = traj.frame_id
    t0_ns = round(traj.t0 * 1e9)
    n = traj.xyz.shape[1]
    poses = path.poses
    if len(poses) != n:
        poses = [PoseStamped() for _ in range(n)]
    frame = traj.frame_id
    for i, (pose, p, o) in enumerate(zip(poses, traj.xyz[k].tolist(), traj.quat_xyzw[k].tolist(), strict=True)):
        header = pose.header
        header.stamp.sec, header.stamp.nanosec = divmod(t0_ns + round((i + 1) * traj.dt * 1e9), 1_000_000_000)
        header.frame_id = frame
        pos, ori = pose.pose.position, pose.pose.orientation
        pos.x, pos.y, pos.z = p
        ori.x, ori.y, ori.z, ori.w = o
    path.poses = poses
    return path


def make_path(traj: FramedTrajectories, k: int) -> Path:
    """A fresh Path for candidate k (fields set one by one: keyword construction of rclpy messages
    costs ~8x more because of per-field checks, and a tick builds K x 64 poses)."""
    return _fill_path(Path(), traj, k)


class PathCache:
    """Reuses K Path messages from tick to tick: only field values change, no object churn.

    Safe because rclpy serializes a message inside publish(); the owner must not publish from two
    threads with the same cache.
    """

    def __init__(self) -> None:
        self._paths: list[Path] = []

    def paths(self, traj: FramedTrajectories) -> list[Path]:
        k = traj.xyz.shape[0]
        while len(self._paths) < k:
            self._paths.append(Path())
        return [_fill_path(self._paths[i], traj, i) for i in range(k)]


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
    route_instruction: str = ""  # the navigation instruction the tick's prompt carried (Alpamayo 1.5)
    nav_guidance_weight: float = 0.0  # the navigation guidance weight the expert applied


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
    msg.route_instruction = extra.route_instruction
    msg.nav_guidance_weight = float(extra.nav_guidance_weight)
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


def _line(traj: FramedTrajectories, k: int, ns: str, mid: int, width: float, color: ColorRGBA,
          path: Path | None = None) -> Marker:
    m = Marker(ns=ns, id=mid, type=Marker.LINE_STRIP, action=Marker.ADD)
    m.header = Header(stamp=time_msg(traj.t0), frame_id=traj.frame_id)
    m.pose.orientation.w = 1.0
    m.scale.x = width
    m.color = color
    if path is not None:  # the paths' own position objects: nothing new to build
        m.points = [ps.pose.position for ps in path.poses]
        return m
    points = []
    for x, y, z in traj.xyz[k].tolist():
        pt = Point()
        pt.x, pt.y, pt.z = x, y, z
        points.append(pt)
    m.points = points
    return m


def make_markers(traj: FramedTrajectories, selected: int, reasoning: str, fallback: bool,
                 paths: list[Path] | None = None) -> MarkerArray:
    """Candidates (thin grey), the selected one (green, orange when a fallback) and the reasoning text."""
    def path(k: int) -> Path | None:
        return paths[k] if paths is not None else None

    markers = [_line(traj, k, "candidates", k, 0.08, _GREY, path(k)) for k in range(traj.xyz.shape[0])]
    markers.append(_line(traj, selected, "selected", 0, 0.25, _ORANGE if fallback else _GREEN, path(selected)))
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
