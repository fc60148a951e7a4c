"""Trajectory metrics (spec §7): ADE/FDE per candidate, minADE_K/minFDE_K and horizon prefixes.

Prefix rule of the reference (`compute_minade`): pick the candidate with the lowest full-horizon
ADE, then report that same candidate's ADE over the first 0.5/1/3/5/6.4 s. Distances are in the
xy plane unless use_3d is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["PREFIX_HORIZONS_S", "TrajectoryMetrics", "ade_fde", "trajectory_metrics"]

PREFIX_HORIZONS_S: tuple[float, ...] = (0.5, 1.0, 3.0, 5.0, 6.4)


def _point_errors(pred: ArrayLike, gt: ArrayLike, use_3d: bool) -> NDArray[np.float64]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape[-1] < 2 or g.shape[-1] < 2 or (use_3d and (p.shape[-1] < 3 or g.shape[-1] < 3)):
        raise ValueError(f"need (..., T, 2|3) arrays, got {p.shape} and {g.shape}")
    d = 3 if use_3d else 2
    if p.shape[-2] != g.shape[-2]:
        raise ValueError(f"prediction has {p.shape[-2]} waypoints, ground truth {g.shape[-2]}")
    return np.linalg.norm(p[..., :d] - g[..., :d], axis=-1)


def ade_fde(pred: ArrayLike, gt: ArrayLike, use_3d: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and final L2 error over the waypoints: pred (..., T, D), gt broadcastable -> (...), (...)."""
    err = _point_errors(pred, gt, use_3d)
    return err.mean(axis=-1), err[..., -1]


@dataclass(frozen=True)
class TrajectoryMetrics:
    """Metrics of K candidates against one ground truth (all in metres)."""

    ade: NDArray[np.float64]  # (K,)
    fde: NDArray[np.float64]  # (K,)
    min_ade: float
    min_fde: float  # independent argmin over FDE, as minFDE_K is usually defined
    best_index: int  # argmin of full-horizon ADE
    prefix_ade: dict[float, float] = field(default_factory=dict)  # of best_index, per horizon (s)
    prefix_fde: dict[float, float] = field(default_factory=dict)  # of best_index, per horizon (s)
    use_3d: bool = False

    @property
    def k(self) -> int:
        return int(self.ade.shape[0])

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-friendly dict (keys like `min_ade`, `ade@1.0s`)."""
        out: dict[str, Any] = {
            "k": self.k,
            "min_ade": self.min_ade,
            "min_fde": self.min_fde,
            "best_index": self.best_index,
            "ade": [float(x) for x in self.ade],
            "fde": [float(x) for x in self.fde],
            "use_3d": self.use_3d,
        }
        for h, v in self.prefix_ade.items():
            out[f"ade@{h:.1f}s"] = v
        for h, v in self.prefix_fde.items():
            out[f"fde@{h:.1f}s"] = v
        return out


def trajectory_metrics(
    pred_xyz: ArrayLike,
    gt_xyz: ArrayLike,
    *,
    dt: float = 0.1,
    horizons_s: tuple[float, ...] = PREFIX_HORIZONS_S,
    use_3d: bool = False,
) -> TrajectoryMetrics:
    """pred (K, T, D) or (T, D) against gt (T, D); waypoint i is at t0 + (i+1)·dt.

    A horizon needing more waypoints than T is skipped (as the reference does).
    """
    p = np.asarray(pred_xyz, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"pred_xyz must be (K, T, D) or (T, D), got {np.shape(pred_xyz)}")
    g = np.asarray(gt_xyz, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"gt_xyz must be (T, D), got {g.shape}")
    err = _point_errors(p, g[None], use_3d)  # (K, T)
    if not np.all(np.isfinite(err)):
        raise ValueError("non-finite trajectory values")
    ade, fde = err.mean(axis=-1), err[:, -1]
    best = int(np.argmin(ade))
    t_len = err.shape[1]
    prefix_ade: dict[float, float] = {}
    prefix_fde: dict[float, float] = {}
    for h in horizons_s:
        n = int(round(h / dt))
        if 1 <= n <= t_len:
            prefix_ade[float(h)] = float(err[best, :n].mean())
            prefix_fde[float(h)] = float(err[best, n - 1])
    return TrajectoryMetrics(ade, fde, float(ade[best]), float(fde.min()), best, prefix_ade, prefix_fde, use_3d)
