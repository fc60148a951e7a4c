"""Scoring replayed plans against the bag's own future odometry.

Ground truth for a tick at t0 is the recorded odometry at t0+0.1 … t0+6.4 s, interpolated by
timestamp and expressed in the ego frame at t0 (core.egomotion.future_in_ego_frame) — the frame
the planner's candidates are in. Metrics are core.metrics.trajectory_metrics (spec §7 prefix
rule: the candidate with the lowest full-horizon ADE is the one whose prefixes are reported).
Both minimum-over-K and the *selected* candidate (what the vehicle would drive) are scored, and
so are the trivial plans of core.baselines (constant velocity, constant turn rate) made from the
same ego history at the same t0, so a report shows at once whether the model beats them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from alpamayo_ros.core.baselines import BASELINES
from alpamayo_ros.core.egomotion import EgoHistory, EgomotionError, PoseBuffer, future_in_ego_frame
from alpamayo_ros.core.metrics import PREFIX_HORIZONS_S, TrajectoryMetrics, trajectory_metrics

HORIZON_STEPS = 64
HORIZON_DT_S = 0.1
STOP_SPEED_MPS = 0.5
CURVE_YAW_RAD = 0.15  # heading change over the horizon that makes a tick a "curve"


@dataclass
class TickRecord:
    """One scheduled planner tick as the replay saw it (offline or online)."""

    tick_time: float  # the schedule time (bag clock) at which the plan was requested
    status: str  # planned | not_ready | no_new_input | gate_rejected | fallback | timeout | error
    t0: float | None = None  # the plan's input time (header stamp)
    xyz: np.ndarray | None = None  # (K, T, 3) ego frame at t0
    scores: np.ndarray | None = None
    selected: int = 0
    gate_ok: bool = True
    fallback: bool = False
    reason: str = ""  # TickNotReady code, fallback reason, error text
    latency_s: float | None = None  # planner compute (offline) or request → plan received (online)
    timings_s: dict[str, float] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    route_instruction: str = ""  # the navigation instruction the tick's prompt carried (Alpamayo 1.5)


@dataclass
class TickScore:
    t0: float
    segment: str
    min_ade: float
    min_fde: float
    best_index: int
    prefix_min_ade: dict[float, float]  # of the best (lowest full ADE) candidate
    selected_ade: float
    selected_fde: float
    prefix_selected_ade: dict[float, float]
    prefix_selected_fde: dict[float, float]
    # core.baselines name -> its metrics (K = 1) on the same tick; empty without a full history
    baselines: dict[str, TrajectoryMetrics] = field(default_factory=dict)
    bag: str = ""  # which bag (clip) the tick belongs to, in multi-bag reports
    # What the tick was scored against, kept so a report (figures) needs no bag: the ground-truth
    # future (T, 3) and each baseline's plan (T, 3), ego frame at t0.
    ground_truth: np.ndarray | None = None
    baseline_xyz: dict[str, np.ndarray] = field(default_factory=dict)


class GroundTruth:
    """All odometry of a bag (or of its readable part) plus optional segment labels."""

    def __init__(self, max_gap_s: float = 0.3) -> None:
        # Unbounded in practice: a bag hour at 50 Hz fits; replay needs the whole future.
        self.poses = PoseBuffer(max_duration_s=1e9, max_poses=1_000_000, max_gap_s=max_gap_s)
        self.labels: list[tuple[float, str]] = []  # (stamp, label), time-ordered
        self.rejected = 0

    def add_odometry(self, stamp: float, position: ArrayLike, quat_xyzw: ArrayLike) -> None:
        try:
            self.poses.add(stamp, position, quat_xyzw)
        except EgomotionError:
            self.rejected += 1

    def add_label(self, stamp: float, label: str) -> None:
        self.labels.append((stamp, label))

    @property
    def end_s(self) -> float | None:
        return self.poses.latest_stamp

    def future(self, t0: float) -> np.ndarray | None:
        """(64, 3) ego-frame future at t0, or None when the odometry does not cover it."""
        try:
            xyz, _ = future_in_ego_frame(self.poses, t0, HORIZON_STEPS, HORIZON_DT_S)
        except EgomotionError:
            return None
        return xyz

    def history(self, t0: float) -> EgoHistory | None:
        """The model's 16-pose ego history at t0 (ego frame at t0), or None when not covered."""
        try:
            return self.poses.history(t0)
        except EgomotionError:
            return None

    def baselines(self, t0: float, n: int = HORIZON_STEPS) -> dict[str, np.ndarray]:
        """core.baselines' plans (n, 3) at t0 from the recorded ego history; {} without one."""
        hist = self.history(t0)
        if hist is None:
            return {}
        return {name: fn(hist.xyz, hist.rot, n, HORIZON_DT_S, self.poses.history_dt_s)
                for name, fn in BASELINES.items()}

    def segment_at(self, t0: float, future_xyz: np.ndarray | None = None) -> str:
        """The bag's own label if it has a segment topic, else a kinematic class of the future."""
        if self.labels:
            stamps = [s for s, _ in self.labels]
            i = int(np.searchsorted(stamps, t0 + 1e-6, side="right")) - 1
            return self.labels[max(i, 0)][1]
        if future_xyz is None:
            return "unknown"
        return classify_motion(future_xyz)


def classify_motion(future_xyz: np.ndarray, dt: float = HORIZON_DT_S) -> str:
    """stop | curve | straight from the ground-truth future alone (no map: a lane change reads as
    a gentle curve or as straight)."""
    pts = np.vstack([[0.0, 0.0], future_xyz[:, :2]])
    speeds = np.linalg.norm(np.diff(pts, axis=0), axis=1) / dt
    if speeds.min() < STOP_SPEED_MPS:
        return "stop"
    heading = np.arctan2(np.diff(pts[:, 1]), np.diff(pts[:, 0]))
    if abs(heading[-1]) > CURVE_YAW_RAD:
        return "curve"
    return "straight"


def score_tick(record: TickRecord, gt: GroundTruth, bag: str = "") -> TickScore | None:
    """Metrics of one planned tick (and of the baselines at its t0), or None without a plan or
    without ground truth."""
    if record.xyz is None or record.t0 is None:
        return None
    future = gt.future(record.t0)
    if future is None:
        return None
    pred = np.asarray(record.xyz, dtype=np.float64)
    n = min(pred.shape[1], future.shape[0])
    pred, future = pred[:, :n], future[:n]
    allk = trajectory_metrics(pred, future, dt=HORIZON_DT_S)
    sel = trajectory_metrics(pred[record.selected], future, dt=HORIZON_DT_S)
    baseline_xyz = gt.baselines(record.t0, n)
    baselines = {name: trajectory_metrics(traj, future, dt=HORIZON_DT_S) for name, traj in baseline_xyz.items()}
    return TickScore(
        t0=record.t0,
        segment=gt.segment_at(record.t0, future),
        min_ade=allk.min_ade,
        min_fde=allk.min_fde,
        best_index=allk.best_index,
        prefix_min_ade=dict(allk.prefix_ade),
        selected_ade=sel.min_ade,
        selected_fde=sel.min_fde,
        prefix_selected_ade=dict(sel.prefix_ade),
        prefix_selected_fde=dict(sel.prefix_fde),
        baselines=baselines,
        bag=bag,
        ground_truth=future,
        baseline_xyz=baseline_xyz,
    )


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float | None]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {f"p{int(q)}": None for q in qs}
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}


def spread(per_bag: dict[str, float | None]) -> dict[str, Any]:
    """The spread of one number across bags (each bag's own mean over its ticks): how many bags
    have it, their unweighted mean and standard deviation, quantiles, and the best and worst bag."""
    vals = {k: float(v) for k, v in per_bag.items() if v is not None and math.isfinite(v)}
    if not vals:
        return {"bags": 0}
    arr = np.asarray(list(vals.values()))
    q = np.percentile(arr, [10, 50, 90])
    return {"bags": len(vals), "mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()),
            "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(arr.max()),
            "best": min(vals, key=vals.__getitem__), "worst": max(vals, key=vals.__getitem__)}


def _mean(values: Iterable[float]) -> float | None:
    arr = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(arr)) if arr else None


def aggregate(scores: Sequence[TickScore]) -> dict[str, Any]:
    """Means over ticks: minADE_K/minFDE_K, selected ADE/FDE, the per-horizon prefixes, and the
    baselines' ADE/FDE (K = 1) over the ticks that have them."""
    out: dict[str, Any] = {
        "ticks": len(scores),
        "min_ade": _mean(s.min_ade for s in scores),
        "min_fde": _mean(s.min_fde for s in scores),
        "selected_ade": _mean(s.selected_ade for s in scores),
        "selected_fde": _mean(s.selected_fde for s in scores),
        "min_ade_at": {},
        "selected_ade_at": {},
        "selected_fde_at": {},
        "baselines": {},
    }
    for h in PREFIX_HORIZONS_S:
        key = f"{h:.1f}"
        out["min_ade_at"][key] = _mean(s.prefix_min_ade.get(h, math.nan) for s in scores)
        out["selected_ade_at"][key] = _mean(s.prefix_selected_ade.get(h, math.nan) for s in scores)
        out["selected_fde_at"][key] = _mean(s.prefix_selected_fde.get(h, math.nan) for s in scores)
    for name in BASELINES:
        ms = [s.baselines[name] for s in scores if name in s.baselines]
        out["baselines"][name] = {
            "ticks": len(ms),
            "ade": _mean(m.min_ade for m in ms),
            "fde": _mean(m.min_fde for m in ms),
            "ade_at": {f"{h:.1f}": _mean(m.prefix_ade.get(h, math.nan) for m in ms) for h in PREFIX_HORIZONS_S},
            "fde_at": {f"{h:.1f}": _mean(m.prefix_fde.get(h, math.nan) for m in ms) for h in PREFIX_HORIZONS_S},
        }
    return out


def score_records(records: Sequence[TickRecord], gt: GroundTruth, bag: str = "") -> list[TickScore]:
    """TickScores of the planned ticks that have ground truth, in record order."""
    return [s for s in (score_tick(r, gt, bag) for r in records) if s is not None]


def summarize(records: Sequence[TickRecord], gt: GroundTruth) -> tuple[dict[str, Any], list[TickScore]]:
    """The report's numbers of one bag: see summary_of."""
    scores = score_records(records, gt)
    return summary_of(records, scores), scores


def summary_of(records: Sequence[TickRecord], scores: Sequence[TickScore]) -> dict[str, Any]:
    """Overall and per-segment metrics, latency, drops and gate trips from the ticks' records and
    scores, of one bag or of many (records and scores concatenated): everything is a plain mean
    or count over ticks, so per-bag results reduce into one summary."""
    planned = [r for r in records if r.xyz is not None]
    status = Counter(r.status for r in records)
    segments = sorted({s.segment for s in scores})
    summary: dict[str, Any] = {
        "ticks_scheduled": len(records),
        "ticks_planned": len(planned),
        "ticks_scored": len(scores),
        "ticks_without_ground_truth": len(planned) - len(scores),
        "status": dict(status),
        "drops": sum(n for s, n in status.items() if s in ("not_ready", "timeout", "error")),
        "drop_reasons": dict(Counter(r.reason.split(":")[0] for r in records if r.status != "planned" and r.reason)),
        "gate_trips": sum(1 for r in records if not r.gate_ok),
        "fallbacks": sum(1 for r in records if r.fallback),
        "latency_s": percentiles(r.latency_s for r in records if r.latency_s is not None)
        | {"mean": _mean(r.latency_s for r in records if r.latency_s is not None)},
        "overall": aggregate(scores),
        "segments": {seg: aggregate([s for s in scores if s.segment == seg]) for seg in segments},
    }
    if records:
        t0s = [r.t0 for r in planned if r.t0 is not None]
        summary["t0_range"] = [min(t0s), max(t0s)] if t0s else None
    return summary
