"""Unicycle (acceleration, curvature) action space of Alpamayo-R1 (spec §6).

The expert outputs x (..., 64, 2) = normalized [acceleration, curvature]. `action_to_traj` turns
it into waypoints with a unicycle rollout from the speed v0 that `estimate_v0` fits to the
history; `traj_to_action` is the inverse (training, tokenizers, tests).

All solves are the reference's regularized least squares: (AᵀA + λ/dt^{2k}·DₖᵀDₖ + ridge·I) z = Aᵀb.
They run in float64 (the reference runs float32 Cholesky); results are cast back to the
input dtype, so parity with PyTorch is at float32 rounding level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import rot_z, unwrap_angle, yaw_from_rotmat

__all__ = [
    "NORMALIZATION_KEYS",
    "ActionSpaceConfig",
    "Normalization",
    "action_to_traj",
    "bf16_round",
    "denormalize_action",
    "estimate_v0",
    "estimate_v_history",
    "is_within_bounds",
    "normalize_action",
    "rollout",
    "traj_to_action",
]

F64 = NDArray[np.float64]


def bf16_round(x: float) -> float:
    """Value as stored in a bf16 tensor: float64 -> float32 -> bf16 (round to nearest even)."""
    b = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return float(np.array([b], dtype=np.uint32).view(np.float32)[0])


NORMALIZATION_KEYS = ("accel_mean", "accel_std", "curvature_mean", "curvature_std")


@dataclass(frozen=True)
class Normalization:
    """The four de-normalisation constants of the action space and where they came from (spec §6.1).

    source: ``checkpoint`` (the weights' ``action_space.*`` buffers, as the reference loads them),
    ``config_bf16`` (config.json rounded to bf16 as the released checkpoint stores them, for weights
    without the buffers) or ``config`` (the nominal config.json values). ``recorded_in`` names the ONNX
    or engine manifest they were read from when the model directory has no weights (recorded at
    export/build time from the weights then at hand).
    """

    accel_mean: float
    accel_std: float
    curvature_mean: float
    curvature_std: float
    source: str
    recorded_in: str = ""

    def values(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in NORMALIZATION_KEYS}

    def to_record(self) -> dict[str, Any]:
        """What an ONNX / engine manifest stores: the values and their source."""
        return {**self.values(), "source": self.source}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], recorded_in: str) -> Normalization:
        missing = [k for k in (*NORMALIZATION_KEYS, "source") if k not in record]
        if missing:
            raise ValueError(f"{recorded_in}: the normalization record lacks {missing}; re-export")
        return cls(**{k: float(record[k]) for k in NORMALIZATION_KEYS}, source=str(record["source"]),
                   recorded_in=recorded_in)

    def describe(self) -> str:
        """One line for logs and /diagnostics: source and values."""
        where = f" (recorded in {self.recorded_in})" if self.recorded_in else ""
        return (f"{self.source}{where}: accel {self.accel_mean:.9g} ± {self.accel_std:.9g} m/s², "
                f"curvature {self.curvature_mean:.9g} ± {self.curvature_std:.9g} 1/m")


@dataclass(frozen=True)
class ActionSpaceConfig:
    """Spec §6.1 constants; defaults are the released checkpoint's nominal (config.json) values."""

    accel_mean: float = 0.02902694707164455
    accel_std: float = 0.6810426736454882
    curvature_mean: float = 0.0002692167976330542
    curvature_std: float = 0.026148280660833106
    accel_bounds: tuple[float, float] = (-9.8, 9.8)
    curvature_bounds: tuple[float, float] = (-0.33, 0.33)
    dt: float = 0.1
    n_waypoints: int = 64
    theta_lambda: float = 1e-6
    theta_ridge: float = 1e-8
    v_lambda: float = 1e-6
    v_ridge: float = 1e-4
    a_lambda: float = 1e-4
    a_ridge: float = 1e-4
    kappa_lambda: float = 1e-4
    kappa_ridge: float = 1e-4

    def __post_init__(self) -> None:
        if self.accel_std <= 0 or self.curvature_std <= 0:
            raise ValueError("accel_std and curvature_std must be > 0")
        if self.dt <= 0 or self.n_waypoints < 1:
            raise ValueError("dt must be > 0 and n_waypoints >= 1")
        for name in ("accel_bounds", "curvature_bounds"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be (min, max) with min < max")

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], *, bf16_constants: bool = False) -> ActionSpaceConfig:
        """From config.json (key `action_space_cfg`) or that sub-dict; missing keys -> defaults.

        bf16_constants: round the four normalization constants as the released AR1 checkpoint
        holds them at run time (persistent bf16 buffers, spec §6.1).
        """
        sub = config.get("action_space_cfg", config)
        sub = dict(sub or {})
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in sub.items():
            if k not in names:
                continue  # e.g. hydra's _target_
            if k in ("accel_bounds", "curvature_bounds"):
                kw[k] = (float(v[0]), float(v[1]))
            elif k == "n_waypoints":
                kw[k] = int(v)
            else:
                kw[k] = float(v)
        out = cls(**kw)
        return out.bf16_rounded() if bf16_constants else out

    @classmethod
    def released_bf16(cls) -> ActionSpaceConfig:
        """The released checkpoint's constants as its bf16 buffers hold them (spec §6.1)."""
        return cls().bf16_rounded()

    def bf16_rounded(self) -> ActionSpaceConfig:
        return self.with_normalization(Normalization(
            bf16_round(self.accel_mean), bf16_round(self.accel_std), bf16_round(self.curvature_mean),
            bf16_round(self.curvature_std), source="config_bf16"))

    def normalization(self, source: str) -> Normalization:
        """This config's four constants, labelled with where they came from."""
        return Normalization(self.accel_mean, self.accel_std, self.curvature_mean, self.curvature_std, source)

    def with_normalization(self, constants: Normalization) -> ActionSpaceConfig:
        """The same action space de-normalised with ``constants`` (e.g. the checkpoint's buffers)."""
        return dataclasses.replace(
            self,
            accel_mean=float(constants.accel_mean),
            accel_std=float(constants.accel_std),
            curvature_mean=float(constants.curvature_mean),
            curvature_std=float(constants.curvature_std),
        )


_DEFAULT = ActionSpaceConfig()


# ---------------------------------------------------------------------------- solvers
@lru_cache(maxsize=32)
def _dtd(n: int, order: int) -> F64:
    """DₖᵀDₖ for the k-th finite difference on n variables (rows [−1,1], [−1,2,−1], [−1,3,−3,1])."""
    stencil = {1: [-1.0, 1.0], 2: [-1.0, 2.0, -1.0], 3: [-1.0, 3.0, -3.0, 1.0]}[order]
    rows = max(n - order, 0)
    d = np.zeros((rows, n))
    for j, c in enumerate(stencil):
        d[np.arange(rows), np.arange(rows) + j] = c
    out = d.T @ d
    out.flags.writeable = False
    return out


def _penalty(n: int, order: int, lam: float, dt: float) -> F64:
    return (lam / dt ** (2 * order)) * _dtd(n, order)


def _solve_spd(lhs: F64, rhs: F64, ridge: float) -> F64:
    """Solve lhs·z = rhs (batched); like the reference, raise the ridge ×10 until it is solvable."""
    n = lhs.shape[-1]
    extra = 0.0
    for _ in range(12):
        try:
            m = lhs if extra == 0.0 else lhs + extra * np.eye(n)
            np.linalg.cholesky(m)  # the reference's positive-definiteness test
            return np.asarray(np.linalg.solve(m, rhs[..., None])[..., 0], dtype=np.float64)
        except np.linalg.LinAlgError:
            extra = max(ridge, 1e-12) * 9.0 if extra == 0.0 else (extra + ridge) * 10.0 - ridge
    raise np.linalg.LinAlgError("regularized least squares stayed singular after raising the ridge")


def _trapezoid_normal_eq(dxy: F64, theta: F64, dt: float) -> tuple[F64, F64]:
    """AᵀA and Aᵀb of the trapezoid model v_k·u_k + v_{k+1}·u_{k+1} = 2·Δp_k/dt (spec §6.3).

    dxy (..., N, 2), theta (..., N+1). Rows 2k / 2k+1 of A hold cos / sin of θ_k, θ_{k+1} at
    columns k, k+1, so AᵀA is tridiagonal: diagonal [1, 2, …, 2, 1], off-diagonal cos(θ_k − θ_{k+1}).
    """
    n = theta.shape[-1]
    c, s = np.cos(theta), np.sin(theta)
    g = (2.0 / dt) * dxy
    ata = np.zeros((*theta.shape[:-1], n, n))
    diag = np.full(n, 2.0)
    diag[0] = diag[-1] = 1.0
    i = np.arange(n)
    ata[..., i, i] = diag
    off = c[..., :-1] * c[..., 1:] + s[..., :-1] * s[..., 1:]
    ata[..., i[:-1], i[1:]] = off
    ata[..., i[1:], i[:-1]] = off
    atb = np.zeros(theta.shape)
    atb[..., :-1] += c[..., :-1] * g[..., 0] + s[..., :-1] * g[..., 1]
    atb[..., 1:] += c[..., 1:] * g[..., 0] + s[..., 1:] * g[..., 1]
    return ata, atb


def _as_float(a: ArrayLike) -> NDArray[np.floating]:
    arr = np.asarray(a)
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


def estimate_v_history(hist_xyz: ArrayLike, hist_rot: ArrayLike, cfg: ActionSpaceConfig | None = None) -> F64:
    """Smoothed speed at every history step (..., T) by the regularized trapezoid fit (spec §6.3)."""
    cfg = cfg or _DEFAULT
    xyz = np.asarray(hist_xyz, dtype=np.float64)
    rot = np.asarray(hist_rot, dtype=np.float64)
    if xyz.shape[-1] != 3 or rot.shape[-2:] != (3, 3) or xyz.shape[-2] != rot.shape[-3] or xyz.shape[-2] < 2:
        raise ValueError(f"expected hist_xyz (..., T, 3) and hist_rot (..., T, 3, 3), got {xyz.shape}, {rot.shape}")
    theta = np.asarray(unwrap_angle(yaw_from_rotmat(rot)), dtype=np.float64)
    dxy = np.diff(xyz[..., :2], axis=-2)
    theta = np.broadcast_to(theta, (*np.broadcast_shapes(theta.shape[:-1], dxy.shape[:-2]), theta.shape[-1]))
    dxy = np.broadcast_to(dxy, (*theta.shape[:-1], *dxy.shape[-2:]))
    n = theta.shape[-1]
    ata, atb = _trapezoid_normal_eq(dxy, theta, cfg.dt)
    lhs = ata + _penalty(n, 3, cfg.v_lambda, cfg.dt) + cfg.v_ridge * np.eye(n)
    return _solve_spd(lhs, atb, cfg.v_ridge)


def estimate_v0(hist_xyz: ArrayLike, hist_rot: ArrayLike, cfg: ActionSpaceConfig | None = None) -> F64:
    """Speed at t0 (...,) = last entry of the smoothed history speed; its sign is not constrained."""
    return estimate_v_history(hist_xyz, hist_rot, cfg)[..., -1]


def denormalize_action(action: ArrayLike, cfg: ActionSpaceConfig | None = None) -> tuple[F64, F64]:
    """Normalized (..., N, 2) -> physical (accel m/s², curvature 1/m), each (..., N). No clipping."""
    cfg = cfg or _DEFAULT
    a = np.asarray(action, dtype=np.float64)
    if a.shape[-1] != 2:
        raise ValueError(f"action must be (..., N, 2), got {a.shape}")
    return a[..., 0] * cfg.accel_std + cfg.accel_mean, a[..., 1] * cfg.curvature_std + cfg.curvature_mean


def normalize_action(accel: ArrayLike, curvature: ArrayLike, cfg: ActionSpaceConfig | None = None) -> F64:
    """Physical accel, curvature (..., N) -> normalized action (..., N, 2)."""
    cfg = cfg or _DEFAULT
    a = (np.asarray(accel, dtype=np.float64) - cfg.accel_mean) / cfg.accel_std
    k = (np.asarray(curvature, dtype=np.float64) - cfg.curvature_mean) / cfg.curvature_std
    return np.stack(np.broadcast_arrays(a, k), axis=-1)


def rollout(accel: ArrayLike, curvature: ArrayLike, v0: ArrayLike, dt: float) -> tuple[F64, F64, F64, F64]:
    """Unicycle rollout (spec §6.4 steps 2-4). accel, curvature (..., N); v0 broadcastable to (...).

    Returns x, y (..., N) of waypoints 1..N and v, θ (..., N+1) including the t0 state.
    """
    a = np.asarray(accel, dtype=np.float64)
    k = np.asarray(curvature, dtype=np.float64)
    v0 = np.asarray(v0, dtype=np.float64)[..., None]
    a, k, v0 = np.broadcast_arrays(a, k, v0)
    v0 = v0[..., :1]
    v = np.concatenate([v0, v0 + np.cumsum(a * dt, axis=-1)], axis=-1)
    dtheta = k * v[..., :-1] * dt + k * a * (0.5 * dt * dt)
    theta = np.concatenate([np.zeros_like(v0), np.cumsum(dtheta, axis=-1)], axis=-1)
    vc, vs = v * np.cos(theta), v * np.sin(theta)
    x = np.cumsum((0.5 * dt) * (vc[..., :-1] + vc[..., 1:]), axis=-1)
    y = np.cumsum((0.5 * dt) * (vs[..., :-1] + vs[..., 1:]), axis=-1)
    return x, y, v, theta


def action_to_traj(
    action: ArrayLike,
    hist_xyz: ArrayLike,
    hist_rot: ArrayLike,
    cfg: ActionSpaceConfig | None = None,
    *,
    v0: ArrayLike | None = None,
) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Normalized action (..., N, 2) -> ego-frame xyz (..., N, 3) and rot (..., N, 3, 3) (spec §6.4).

    Leading dims of action and history broadcast (e.g. action (K, 64, 2) with one history
    (16, 3)). Pass a precomputed v0 to skip the history fit. Output dtype follows hist_xyz.
    """
    cfg = cfg or _DEFAULT
    hx = _as_float(hist_xyz)
    act = np.asarray(action)
    if act.shape[-2:] != (cfg.n_waypoints, 2):
        raise ValueError(f"action must be (..., {cfg.n_waypoints}, 2), got {act.shape}")
    if v0 is None:
        v0 = estimate_v0(hx, hist_rot, cfg)
    accel, kappa = denormalize_action(act, cfg)
    x, y, _, theta = rollout(accel, kappa, v0, cfg.dt)
    z = np.broadcast_to(hx[..., -1:, 2].astype(np.float64), x.shape)
    xyz = np.stack([x, y, z], axis=-1).astype(hx.dtype)
    return xyz, rot_z(theta[..., 1:]).astype(hx.dtype)


def _theta_smooth(fut_rot: F64, cfg: ActionSpaceConfig) -> F64:
    """Smoothed heading (..., N+1), θ_0 = 0 fixed, fitted to the unwrapped future yaw (spec §6.5.3)."""
    target = np.asarray(unwrap_angle(yaw_from_rotmat(fut_rot)), dtype=np.float64)
    n = target.shape[-1]
    pen = _penalty(n + 1, 3, cfg.theta_lambda, cfg.dt)[1:, 1:]  # θ_0 = 0: its column drops out
    lhs = np.eye(n) + pen + cfg.theta_ridge * np.eye(n)
    sol = _solve_spd(np.broadcast_to(lhs, (*target.shape[:-1], n, n)), target, cfg.theta_ridge)
    return np.concatenate([np.zeros_like(sol[..., :1]), sol], axis=-1)


def _v_with_v0(dxy: F64, theta: F64, v0: F64, cfg: ActionSpaceConfig) -> F64:
    """Speeds (..., N+1) with v[0] = v0 fixed (spec §6.5.4)."""
    n = theta.shape[-1]
    ata, atb = _trapezoid_normal_eq(dxy, theta, cfg.dt)
    pen = _penalty(n, 3, cfg.v_lambda, cfg.dt)
    v0e = v0[..., None]
    lhs = ata[..., 1:, 1:] + pen[1:, 1:] + cfg.v_ridge * np.eye(n - 1)
    rhs = atb[..., 1:] - ata[..., 1:, 0] * v0e - pen[1:, 0] * v0e
    return np.concatenate([v0e, _solve_spd(lhs, rhs, cfg.v_ridge)], axis=-1)


def _solve_xs_eq_y(s: F64, y: F64, lam: float, ridge: float, dt: float) -> F64:
    """argmin Σ(x_i s_i − y_i)² + λ/dt⁴‖D2 x‖² + ridge‖x‖² (the reference's solve_xs_eq_y)."""
    n = y.shape[-1]
    lhs = np.zeros((*y.shape[:-1], n, n))
    i = np.arange(n)
    lhs[..., i, i] = s * s
    lhs += _penalty(n, 2, lam, dt) + ridge * np.eye(n)
    return _solve_spd(lhs, s * y, ridge)


def traj_to_action(
    hist_xyz: ArrayLike,
    hist_rot: ArrayLike,
    fut_xyz: ArrayLike,
    fut_rot: ArrayLike,
    cfg: ActionSpaceConfig | None = None,
    *,
    v0: ArrayLike | None = None,
) -> NDArray[np.floating]:
    """Ego-frame future (..., N, 3), (..., N, 3, 3) -> normalized action (..., N, 2) (spec §6.5).

    Assumes hist_xyz[..., -1, :] is the t0 origin (true for EgoHistory).
    """
    cfg = cfg or _DEFAULT
    hx = _as_float(hist_xyz)
    fx = np.asarray(fut_xyz, dtype=np.float64)
    fr = np.asarray(fut_rot, dtype=np.float64)
    if fx.shape[-2:] != (cfg.n_waypoints, 3) or fr.shape[-3:] != (cfg.n_waypoints, 3, 3):
        raise ValueError(f"future must be (..., {cfg.n_waypoints}, 3) and (..., {cfg.n_waypoints}, 3, 3)")
    v0a = estimate_v0(hx, hist_rot, cfg) if v0 is None else np.asarray(v0, dtype=np.float64)
    start = np.broadcast_to(hx[..., -1:, :2].astype(np.float64), (*fx.shape[:-2], 1, 2))
    dxy = np.diff(np.concatenate([start, fx[..., :2]], axis=-2), axis=-2)
    theta = _theta_smooth(fr, cfg)
    shape = np.broadcast_shapes(dxy.shape[:-2], theta.shape[:-1], v0a.shape)
    dxy = np.broadcast_to(dxy, (*shape, *dxy.shape[-2:]))
    theta = np.broadcast_to(theta, (*shape, theta.shape[-1]))
    v = _v_with_v0(dxy, theta, np.broadcast_to(v0a, shape), cfg)
    accel = _solve_xs_eq_y(np.ones(v.shape[:-1] + (v.shape[-1] - 1,)), np.diff(v, axis=-1) / cfg.dt,
                           cfg.a_lambda, cfg.a_ridge, cfg.dt)
    s = cfg.dt * v[..., :-1] + (0.5 * cfg.dt * cfg.dt) * accel
    kappa = _solve_xs_eq_y(s, np.diff(theta, axis=-1), cfg.kappa_lambda, cfg.kappa_ridge, cfg.dt)
    return normalize_action(accel, kappa, cfg).astype(hx.dtype)


def is_within_bounds(action: ArrayLike, cfg: ActionSpaceConfig | None = None) -> NDArray[np.bool_]:
    """Normalized action (..., N, 2) -> (...) whether every step's accel/curvature is in bounds."""
    cfg = cfg or _DEFAULT
    a, k = denormalize_action(action, cfg)
    ok = (a >= cfg.accel_bounds[0]) & (a <= cfg.accel_bounds[1])
    ok &= (k >= cfg.curvature_bounds[0]) & (k <= cfg.curvature_bounds[1])
    return np.all(ok, axis=-1)
