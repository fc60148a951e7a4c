"""Offline replay: the report files, and a damaged bag (clear error, report of what was evaluated)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from replay_helpers import OraclePlanner, full_ground_truth
from test_bag_io import damaged_copy

from alpamayo_ros.tools.replay import ReplayOptions, run_offline
from alpamayo_ros.tools.report import summary_table, write_report


def test_report_has_json_markdown_plans_and_figures(short_bag, tmp_path: Path) -> None:
    gt = full_ground_truth(short_bag.path)
    result = run_offline(short_bag.path, OraclePlanner(gt, [(0.0, 0.0), (0.0, 1.0)]), ReplayOptions(period_s=0.2))
    paths, report = write_report(result, tmp_path / "rep")
    data = json.loads(paths.json.read_text())
    assert data["complete"] and data["error"] is None
    assert data["summary"]["ticks_scored"] == len(data["ticks"]) == 11
    assert data["ticks"][0]["status"] == "planned" and data["ticks"][0]["min_ade"] == pytest.approx(0.0, abs=1e-5)
    md = paths.markdown.read_text()
    assert "minADE_K" in md and "| curve |" in md and "figures/bev_candidates.png" in md
    assert {p.name for p in paths.figures} == {"bev_candidates.png", "error_vs_horizon.png", "latency_hist.png"}
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths.figures)
    import numpy as np

    plans = np.load(paths.plans)
    assert plans["xyz"].shape == (11, 2, 64, 3)
    table = summary_table(report)
    assert "| minADE_K (best by full ADE) | 0.000 |" in table


def test_truncated_bag_gives_a_clear_error_and_reports_what_was_evaluated(short_bag, tmp_path: Path) -> None:
    bag = damaged_copy(short_bag.path, tmp_path / "cut", keep_fraction=0.9)
    gt = full_ground_truth(short_bag.path)  # the oracle still knows the whole drive
    result = run_offline(bag, OraclePlanner(gt, [(0.0, 0.0)]), ReplayOptions(include_tail=True))
    assert result.error and "truncated or corrupted" in result.error and str(bag) in result.error
    planned = [r for r in result.records if r.xyz is not None]
    assert len(planned) > 10
    paths, report = write_report(result, tmp_path / "rep", figures=False)
    data = json.loads(paths.json.read_text())
    assert data["complete"] is False and "truncated" in data["error"]
    s = data["summary"]
    # Ticks whose future lies past the damage are listed but not scored.
    assert s["ticks_planned"] == len(planned) and 0 < s["ticks_scored"] < s["ticks_planned"]
    assert s["ticks_without_ground_truth"] == s["ticks_planned"] - s["ticks_scored"]
    assert s["t0_range"][1] > s["t0_range"][0]
    md = paths.markdown.read_text()
    assert "could not be read to its end" in md and f"{s['ticks_planned']} plans" in md


def test_corrupted_bag_gives_a_clear_error_and_reports_what_was_evaluated(short_bag, tmp_path: Path) -> None:
    bag = damaged_copy(short_bag.path, tmp_path / "garbage", scribble_at=0.8)  # same size, garbage tail
    gt = full_ground_truth(short_bag.path)
    result = run_offline(bag, OraclePlanner(gt, [(0.0, 0.0)]), ReplayOptions(include_tail=True))
    assert result.error and str(bag) in result.error and "stopped after" in result.error
    paths, _ = write_report(result, tmp_path / "rep", figures=False)
    data = json.loads(paths.json.read_text())
    assert data["complete"] is False and len(data["ticks"]) >= data["summary"]["ticks_planned"] > 10
    assert data["summary"]["t0_range"][1] < short_bag.start_time_s + 10.0
