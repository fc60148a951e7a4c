"""Input and output gates the planner runs around the model (see research/ros_anchors.md §A1).

Each gate returns a GateResult with machine-readable reason codes; it never raises on bad data,
so the node can log, publish diagnostics and keep running. Thresholds are dataclass fields.

Besides the reference integration's checks (t0 at the origin, last-step speed vs twist, first
waypoint vs v0·dt, reversal), both gates apply absolute plausibility limits for a car
(``PlausibilityLimits``): a history that jumps anywhere in its window or moves faster than a car
can, a v0 or a planned speed beyond the car's top speed, or a lateral acceleration beyond what
tyres hold, never becomes a normal plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .action_space import ActionSpaceConfig, denormalize_action
from .egomotion import ContinuityConfig, EgoHistory, find_discontinuity
from .geometry import yaw_from_rotmat

__all__ = [
    "GateResult",
    "InputGateConfig",
    "InputReason",
    "OutputGateConfig",
    "OutputReason",
    "PlausibilityLimits",
    "check_input",
    "check_output",
]


class InputReason:
    BAD_SHAPE = "history_bad_shape"
    NONFINITE = "history_nonfinite"
    T0_NOT_ORIGIN = "t0_not_origin"
    T0_NOT_IDENTITY = "t0_not_identity"
    ROT_NOT_ORTHONORMAL = "rotation_not_orthonormal"
    STAMPS_NOT_MONOTONIC = "stamps_not_monotonic"
    STAMPS_NOT_UNIFORM = "stamps_not_uniform"
    SPEED_MISMATCH = "speed_mismatch"  # history's last-step speed vs the odometry twist
    DISCONTINUITY = "history_discontinuity"  # a step anywhere in the window jumps away from the motion
    SPEED_LIMIT = "history_speed_out_of_limits"  # a step or the twist faster than PlausibilityLimits.max_speed_mps
    STANDING_START = "standing_start_in_window"  # warning only


class OutputReason:
    BAD_SHAPE = "output_bad_shape"
    NONFINITE = "output_nonfinite"
    FIRST_WAYPOINT = "first_waypoint_inconsistent"
    REVERSAL = "large_reversal"
    ACCEL_BOUNDS = "accel_out_of_bounds"
    CURVATURE_BOUNDS = "curvature_out_of_bounds"
    V0_LIMIT = "v0_out_of_limits"  # |v0| beyond PlausibilityLimits.max_speed_mps: every candidate fails
    SPEED_LIMIT = "speed_out_of_limits"  # a waypoint faster than max_speed_mps
    LATERAL_ACCEL_LIMIT = "lateral_accel_out_of_limits"  # v²·|curvature| beyond max_lateral_accel_mps2


@dataclass(frozen=True)
class PlausibilityLimits:
    """Absolute limits for a road car, whatever the model or the odometry say."""

    max_speed_mps: float = 70.0  # ≈ 250 km/h, above a road car's governed top speed
    max_lateral_accel_mps2: float = 8.0  # ≈ 0.8 g, about the grip limit of road tyres

    def __post_init__(self) -> None:
        if not (self.max_speed_mps > 0 and self.max_lateral_accel_mps2 > 0):
            raise ValueError(f"plausibility limits must be > 0: {self}")


@dataclass
class GateResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # failures, in check order, no duplicates
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # noteworthy but not failing

    def _fail(self, code: str, **info: Any) -> None:
        if code not in self.reasons:
            self.reasons.append(code)
        self.ok = False
        self.details.update(info)


@dataclass(frozen=True)
class InputGateConfig:
    dt_s: float = 0.1
    origin_tol_m: float = 1e-3
    identity_tol: float = 1e-3  # max |R_t0 − I| entry
    orthonormal_tol: float = 1e-3  # max |RᵀR − I| entry
    stamp_tol_s: float = 1e-3
    speed_abs_tol_mps: float = 0.5  # A1's check_ego_history: 0.5 m/s + 10 %
    speed_rel_tol: float = 0.1
    standing_speed_mps: float = 0.2
    moving_speed_mps: float = 1.0
    continuity: ContinuityConfig = field(default_factory=ContinuityConfig)
    limits: PlausibilityLimits = field(default_factory=PlausibilityLimits)


def check_input(
    history: EgoHistory | tuple[ArrayLike, ArrayLike],
    speed_from_twist: float | None = None,
    stamps: ArrayLike | None = None,
    cfg: InputGateConfig | None = None,
    twist: ArrayLike | None = None,
) -> GateResult:
    """Validate the model's history: (16, 3) xyz and (16, 3, 3) rot in the ego frame at t0.

    twist: (16, 3) body-frame linear velocity at each pose (NaN where unknown): the continuity
    check predicts each step from it, else from the neighbouring steps. An EgoHistory brings its
    own stamps, twist and twist speed; explicit arguments override them.
    """
    cfg = cfg or InputGateConfig()
    if isinstance(history, EgoHistory):
        xyz_in, rot_in = history.xyz, history.rot  # type: ArrayLike, ArrayLike
        stamps = history.stamps if stamps is None else stamps
        speed_from_twist = history.speed_from_twist if speed_from_twist is None else speed_from_twist
        twist = history.twist if twist is None else twist
    else:
        xyz_in, rot_in = history
    res = GateResult(ok=True)
    xyz = np.asarray(xyz_in, dtype=np.float64)
    rot = np.asarray(rot_in, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.shape[0] < 2 or rot.shape != (xyz.shape[0], 3, 3):
        res._fail(InputReason.BAD_SHAPE, shapes=(xyz.shape, rot.shape))
        return res
    if not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(rot))):
        res._fail(InputReason.NONFINITE)
        return res
    origin_err = float(np.linalg.norm(xyz[-1]))
    res.details["t0_offset_m"] = origin_err
    if origin_err > cfg.origin_tol_m:
        res._fail(InputReason.T0_NOT_ORIGIN)
    ident_err = float(np.abs(rot[-1] - np.eye(3)).max())
    if ident_err > cfg.identity_tol:
        res._fail(InputReason.T0_NOT_IDENTITY, t0_rotation_error=ident_err)
    ortho_err = float(np.abs(np.swapaxes(rot, -1, -2) @ rot - np.eye(3)).max())
    if ortho_err > cfg.orthonormal_tol or np.any(np.linalg.det(rot) < 0):
        res._fail(InputReason.ROT_NOT_ORTHONORMAL, orthonormal_error=ortho_err)
    if stamps is not None:
        _check_stamps(np.asarray(stamps, dtype=np.float64), xyz.shape[0], cfg, res)
    step = np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=-1) / cfg.dt_s
    forward = -xyz[-2, 0]  # last step's displacement along the t0 heading gives the sign
    implied = float(np.copysign(step[-1], forward))
    res.details["speed_implied_mps"] = implied
    if speed_from_twist is not None and np.isfinite(speed_from_twist):
        tol = cfg.speed_abs_tol_mps + cfg.speed_rel_tol * abs(speed_from_twist)
        res.details.update(speed_twist_mps=float(speed_from_twist), speed_tolerance_mps=tol)
        if abs(implied - speed_from_twist) > tol:
            res._fail(InputReason.SPEED_MISMATCH)
    _check_history_motion(xyz, rot, step, stamps, speed_from_twist, twist, cfg, res)
    if step[-1] > cfg.moving_speed_mps and step.min() < cfg.standing_speed_mps:
        res.warnings.append(InputReason.STANDING_START)
    return res


def _check_history_motion(xyz: NDArray[np.float64], rot: NDArray[np.float64], step_speed: NDArray[np.float64],
                          stamps: ArrayLike | None, speed_from_twist: float | None, twist: ArrayLike | None,
                          cfg: InputGateConfig, res: GateResult) -> None:
    """Continuity over the whole window and the absolute speed limit."""
    n = xyz.shape[0]
    t = np.asarray(stamps, dtype=np.float64) if stamps is not None else cfg.dt_s * np.arange(n, dtype=np.float64)
    if t.shape != (n,) or not np.all(np.diff(t) > 0):  # already reported by the stamp check
        t = cfg.dt_s * np.arange(n, dtype=np.float64)
    v = None if twist is None else np.asarray(twist, dtype=np.float64)
    jump = find_discontinuity(t, xyz, rot, v if v is not None and v.shape == (n, 3) else None, cfg.continuity)
    if jump is not None:
        res._fail(InputReason.DISCONTINUITY, discontinuity=jump.describe())
    fastest = float(step_speed.max())
    if speed_from_twist is not None and np.isfinite(speed_from_twist):
        fastest = max(fastest, abs(float(speed_from_twist)))
    res.details["max_history_speed_mps"] = fastest
    if fastest > cfg.limits.max_speed_mps:
        res._fail(InputReason.SPEED_LIMIT, speed_limit_mps=cfg.limits.max_speed_mps)


def _check_stamps(stamps: NDArray[np.float64], n: int, cfg: InputGateConfig, res: GateResult) -> None:
    if stamps.shape != (n,) or not np.all(np.isfinite(stamps)):
        res._fail(InputReason.STAMPS_NOT_MONOTONIC, stamps_shape=stamps.shape)
        return
    d = np.diff(stamps)
    if np.any(d <= 0):
        res._fail(InputReason.STAMPS_NOT_MONOTONIC, min_stamp_step_s=float(d.min()))
    elif np.abs(d - cfg.dt_s).max() > cfg.stamp_tol_s:
        res._fail(InputReason.STAMPS_NOT_UNIFORM, max_stamp_step_error_s=float(np.abs(d - cfg.dt_s).max()))


@dataclass(frozen=True)
class OutputGateConfig:
    dt_s: float = 0.1
    first_waypoint_tol_m: float = 2.0  # A1's check_trajectory: first waypoint vs v0·dt
    max_reverse_m: float = 2.0  # A1: reject rollouts that back up more than 2 m
    check_bounds: bool = True
    limits: PlausibilityLimits = field(default_factory=PlausibilityLimits)


def _reverse_distance(xyz: NDArray[np.float64], rot: NDArray[np.float64] | None,
                      v: NDArray[np.float64] | None, dt: float) -> NDArray[np.float64]:
    """Distance travelled backwards per candidate (K,), from every source available.

    With rotations: steps against the heading. With a speed profile: time spent at negative
    speed. Without either: how far the path backs up along the t0 heading (x).
    """
    steps = np.diff(np.concatenate([np.zeros_like(xyz[:, :1, :2]), xyz[:, :, :2]], axis=1), axis=1)
    if rot is not None:
        yaw = yaw_from_rotmat(rot)
        yaw_prev = np.concatenate([np.zeros_like(yaw[:, :1]), yaw[:, :-1]], axis=1)
        # heading at the step's midpoint (unit vector average) is robust to turning steps
        hx, hy = np.cos(yaw) + np.cos(yaw_prev), np.sin(yaw) + np.sin(yaw_prev)
        along = (steps[..., 0] * hx + steps[..., 1] * hy) / np.maximum(np.hypot(hx, hy), 1e-9)
        geo = np.maximum(-along, 0.0).sum(axis=1)
    else:
        x = np.concatenate([np.zeros_like(xyz[:, :1, 0]), xyz[:, :, 0]], axis=1)
        geo = (np.maximum.accumulate(x, axis=1) - x).max(axis=1)
    if v is None:
        return geo
    kin = (np.maximum(-0.5 * (v[:, :-1] + v[:, 1:]), 0.0) * dt).sum(axis=1)
    return np.maximum(geo, kin)


def _check_plan_limits(p: NDArray[np.float64], controls: NDArray[np.float64] | None,
                       speed: NDArray[np.float64] | None, cfg: OutputGateConfig, res: GateResult,
                       bad: dict[str, NDArray[np.bool_]]) -> None:
    """Top speed along the plan (from the speed profile, and from the waypoint spacing, which does
    not trust the controls) and lateral acceleration v²·|κ| where the controls give curvature."""
    origin = np.zeros_like(p[:, :1, :2])
    geometric = np.linalg.norm(np.diff(np.concatenate([origin, p[:, :, :2]], axis=1), axis=1), axis=-1) / cfg.dt_s
    top = geometric.max(axis=1)
    if speed is not None:
        top = np.maximum(top, np.abs(speed).max(axis=1))
    res.details["max_speed_mps"] = top.tolist()
    bad[OutputReason.SPEED_LIMIT] = top > cfg.limits.max_speed_mps
    if speed is not None and controls is not None:
        lateral = (speed[:, 1:] ** 2 * np.abs(controls[..., 1])).max(axis=1)
        res.details["max_lateral_accel_mps2"] = lateral.tolist()
        bad[OutputReason.LATERAL_ACCEL_LIMIT] = lateral > cfg.limits.max_lateral_accel_mps2


def check_output(
    xyz: ArrayLike,
    controls: ArrayLike | None = None,
    v0: ArrayLike | None = None,
    *,
    rot: ArrayLike | None = None,
    controls_normalized: bool = False,
    cfg: OutputGateConfig | None = None,
    action_cfg: ActionSpaceConfig | None = None,
) -> GateResult:
    """Validate K candidate rollouts (K, N, 3) (or one (N, 3)) in the ego frame at t0.

    controls: (K, N, 2) accel (m/s²) and curvature (1/m), or the model's normalized action with
    controls_normalized=True. details["candidate_ok"] lists which candidates pass, and
    details["failed"] maps each reason to the candidate indices that triggered it.
    """
    cfg = cfg or OutputGateConfig()
    acfg = action_cfg or ActionSpaceConfig()
    res = GateResult(ok=True)
    p = np.asarray(xyz, dtype=np.float64)
    p = p[None] if p.ndim == 2 else p
    if p.ndim != 3 or p.shape[-1] != 3 or p.shape[1] < 1:
        res._fail(OutputReason.BAD_SHAPE, shape=np.shape(xyz))
        return res
    k, n = p.shape[:2]
    r = None if rot is None else np.asarray(rot, dtype=np.float64).reshape(k, n, 3, 3)
    c = None if controls is None else np.asarray(controls, dtype=np.float64).reshape(k, n, 2)
    if c is not None and controls_normalized:
        c = np.stack(denormalize_action(c, acfg), axis=-1)
    v0a = None if v0 is None else np.broadcast_to(np.asarray(v0, dtype=np.float64), (k,))
    bad: dict[str, NDArray[np.bool_]] = {}

    finite = np.all(np.isfinite(p), axis=(1, 2))
    if r is not None:
        finite &= np.all(np.isfinite(r), axis=(1, 2, 3))
    if c is not None:
        finite &= np.all(np.isfinite(c), axis=(1, 2))
    if v0a is not None:
        finite &= np.isfinite(v0a)
    bad[OutputReason.NONFINITE] = ~finite
    # Later checks run on sanitized copies; non-finite candidates are already marked bad.
    p = np.where(finite[:, None, None], p, 0.0)
    if v0a is not None:
        v0a = np.where(finite, v0a, 0.0)
        first_err = np.hypot(p[:, 0, 0] - v0a * cfg.dt_s, p[:, 0, 1])
        res.details["first_waypoint_error_m"] = first_err.tolist()
        bad[OutputReason.FIRST_WAYPOINT] = first_err > cfg.first_waypoint_tol_m
        bad[OutputReason.V0_LIMIT] = np.abs(v0a) > cfg.limits.max_speed_mps
    speed = None
    if c is not None:
        c = np.where(finite[:, None, None], c, 0.0)
        if v0a is not None:
            speed = np.concatenate([v0a[:, None], v0a[:, None] + np.cumsum(c[..., 0] * cfg.dt_s, axis=1)], 1)
        if cfg.check_bounds:
            a, kap = c[..., 0], c[..., 1]
            bad[OutputReason.ACCEL_BOUNDS] = np.any((a < acfg.accel_bounds[0]) | (a > acfg.accel_bounds[1]), 1)
            bad[OutputReason.CURVATURE_BOUNDS] = np.any(
                (kap < acfg.curvature_bounds[0]) | (kap > acfg.curvature_bounds[1]), 1
            )
    _check_plan_limits(p, c, speed, cfg, res, bad)
    if r is not None:
        r = np.where(finite[:, None, None, None], r, np.eye(3))
    reverse = _reverse_distance(p, r, speed, cfg.dt_s)
    res.details["reverse_m"] = reverse.tolist()
    bad[OutputReason.REVERSAL] = reverse > cfg.max_reverse_m

    failed = {code: np.flatnonzero(mask).tolist() for code, mask in bad.items() if mask.any()}
    for code in failed:
        res._fail(code)
    any_bad = np.zeros(k, dtype=bool)
    for mask in bad.values():
        any_bad |= mask
    res.details["failed"] = failed
    res.details["candidate_ok"] = (~any_bad).tolist()
    return res
