"""Scoring against the bag's own future odometry: a perfect model scores zero, a constant offset
scores exactly that offset, at every horizon, through the whole offline replay pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from replay_helpers import OraclePlanner, full_ground_truth

from alpamayo_ros.tools.replay import ReplayOptions, run_offline, tick_schedule
from alpamayo_ros.tools.scoring import GroundTruth, TickRecord, classify_motion, score_tick, summarize


def test_ground_truth_model_scores_zero_and_offset_scores_the_offset(short_bag) -> None:
    gt = full_ground_truth(short_bag.path)
    # K=3: the truth, 0.5 m to the left, 2 m ahead; the planner "selects" the last one.
    planner = OraclePlanner(gt, [(0.0, 0.0), (0.0, 0.5), (2.0, 0.0)])
    result = run_offline(short_bag.path, planner)
    summary, scores = summarize(result.records, result.gt)
    assert result.error is None and summary["ticks_scored"] == summary["ticks_scheduled"] == 21
    o = summary["overall"]
    assert o["min_ade"] == pytest.approx(0.0, abs=1e-5) and o["min_fde"] == pytest.approx(0.0, abs=1e-5)
    for h, v in o["min_ade_at"].items():
        assert v == pytest.approx(0.0, abs=1e-5), h
    # Selected candidate = constant 2 m offset: ADE and FDE are 2 m at every horizon.
    assert o["selected_ade"] == pytest.approx(2.0, abs=1e-4)
    for key in ("selected_ade_at", "selected_fde_at"):
        for h, v in o[key].items():
            assert v == pytest.approx(2.0, abs=1e-4), (key, h)
    assert all(s.best_index == 0 for s in scores)
    # The replay ground truth (built while streaming) equals the one read up front.
    t0 = scores[5].t0
    assert np.allclose(result.gt.future(t0), gt.future(t0))


def test_offset_only_model_and_per_segment_labels(short_bag) -> None:
    gt = full_ground_truth(short_bag.path)
    # Start early (the oracle needs no history) so the ticks span the straight and the curve.
    result = run_offline(short_bag.path, OraclePlanner(gt, [(0.0, -0.75), (0.0, 1.25)]), ReplayOptions(start_offset_s=0.6))
    summary, _ = summarize(result.records, result.gt)
    assert summary["overall"]["min_ade"] == pytest.approx(0.75, abs=1e-4)
    assert summary["overall"]["min_fde"] == pytest.approx(0.75, abs=1e-4)
    assert summary["overall"]["selected_ade"] == pytest.approx(1.25, abs=1e-4)
    # The demo bag's own labels drive the per-segment breakdown.
    assert set(summary["segments"]) == {"straight", "curve"}
    assert summary["segments"]["straight"]["ticks"] == 9  # t0 = 0.6 … 1.4 s, the straight ends at 1.5 s
    assert sum(s["ticks"] for s in summary["segments"].values()) == summary["ticks_scored"]


def test_ticks_without_future_are_not_scored_and_not_ready_ticks_are_drops(short_bag) -> None:
    gt = full_ground_truth(short_bag.path)
    end = gt.end_s
    recs = [
        TickRecord(end - 3.0, "planned", t0=end - 3.0, xyz=np.zeros((1, 64, 3), np.float32), scores=np.zeros(1)),
        TickRecord(end - 8.0, "not_ready", reason="camera_skew: front_wide 80 ms late"),
        TickRecord(end - 7.0, "planned", t0=end - 7.0, xyz=np.zeros((1, 64, 3), np.float32), scores=np.zeros(1),
                   gate_ok=False, latency_s=0.2),
    ]
    assert score_tick(recs[0], gt) is None
    summary, scores = summarize(recs, gt)
    assert summary["ticks_without_ground_truth"] == 1 and len(scores) == 1
    assert summary["drops"] == 1 and summary["drop_reasons"] == {"camera_skew": 1}
    assert summary["gate_trips"] == 1 and summary["latency_s"]["p50"] == pytest.approx(0.2)
    # A zero trajectory against a moving future: ADE equals the mean distance travelled.
    fut = gt.future(end - 7.0)
    assert scores[0].min_ade == pytest.approx(np.linalg.norm(fut[:, :2], axis=1).mean())


def test_schedule_starts_after_history_and_stops_before_the_horizon() -> None:
    ticks = tick_schedule(100.0, 120.0, ReplayOptions(period_s=0.5, cut_margin_s=0.02))
    assert ticks[0] == pytest.approx(101.62) and ticks[-1] <= 120.0 - 6.4 + 0.02 + 1e-9
    assert np.allclose(np.diff(ticks), 0.5)
    tail = tick_schedule(100.0, 120.0, ReplayOptions(period_s=0.5, include_tail=True))
    assert 119.5 < tail[-1] <= 120.02 + 1e-9


def test_kinematic_motion_classes() -> None:
    t = 0.1 * np.arange(1, 65)
    straight = np.stack([10 * t, 0 * t, 0 * t], 1)
    assert classify_motion(straight) == "straight"
    r = 30.0
    arc = np.stack([r * np.sin(10 * t / r), r * (1 - np.cos(10 * t / r)), 0 * t], 1)
    assert classify_motion(arc) == "curve"
    stopping = np.stack([np.minimum(10 * t, 8.0), 0 * t, 0 * t], 1)
    assert classify_motion(stopping) == "stop"
    assert GroundTruth().segment_at(0.0) == "unknown"
