#!/usr/bin/env python3
"""Replay tooling throughput (issue #8): prints a table and one JSON line (also artifacts/bench/replay.json).

Measured on a synthetic demo bag (kinematic backend, so the planner's compute is small and the
tooling's own cost shows):
- demo bag generation (render + JPEG + MCAP write), seconds per second of drive;
- bag read + decode (JPEG -> RGB, odometry), messages per second;
- offline replay: ticks per second and the per-tick overhead outside Planner.plan();
- scoring + report: seconds for the JSON/Markdown and for the figures;
- with --online: lockstep replay into the node subprocess, wall seconds per tick beyond the
  node's own tick latency (publish slices, settle, clock, DDS round trip).

    .venv/bin/python benchmarks/bench_replay.py [--duration 20] [--online]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alpamayo_ros.tools.bag_io import BagSource, decode_image, decode_odometry
from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag
from alpamayo_ros.tools.planner_setup import (
    DEFAULT_PARAMS_FILE,
    build_planner_from_params,
    camera_topics,
    node_params,
)
from alpamayo_ros.tools.replay import ReplayOptions, run_offline
from alpamayo_ros.tools.report import write_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0, help="demo drive seconds")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--online", action="store_true", help="also measure the online lockstep replay")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    res: dict[str, float] = {}

    t = time.perf_counter()
    info = make_demo_bag(tmp / "bag", DemoBagConfig(duration_s=args.duration))
    res["bag_make_s"] = time.perf_counter() - t
    res["bag_make_s_per_drive_s"] = res["bag_make_s"] / args.duration
    res["bag_mb"] = info.size_bytes / 1e6

    t = time.perf_counter()
    n_img = n_odo = 0
    for msg in BagSource(info.path).messages():
        if msg.msgtype.endswith("Image"):
            decode_image(msg)
            n_img += 1
        elif msg.msgtype.endswith("Odometry"):
            decode_odometry(msg)
            n_odo += 1
    dt = time.perf_counter() - t
    res["read_decode_images_per_s"] = n_img / dt
    res["read_decode_msgs_per_s"] = (n_img + n_odo) / dt

    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    model = make_tiny_model(tmp / "tiny")
    overrides = {"backend": "kinematic", "model_dir": str(model), "num_candidates": args.k}
    params = node_params(DEFAULT_PARAMS_FILE, overrides)
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic)
    backend, planner = build_planner_from_params(params)
    result = run_offline(info.path, planner, opts)
    backend.close()
    ticks = len(result.records)
    plan_s = sum(r.latency_s or 0.0 for r in result.records)
    res["offline_ticks"] = ticks
    res["offline_planned"] = sum(r.status == "planned" for r in result.records)
    res["offline_ticks_per_s"] = ticks / result.wall_s
    res["offline_plan_ms_per_tick"] = 1e3 * plan_s / ticks
    res["offline_overhead_ms_per_tick"] = 1e3 * (result.wall_s - plan_s) / ticks

    t = time.perf_counter()
    write_report(result, tmp / "rep_nofig", figures=False)
    res["report_json_md_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_report(result, tmp / "rep", figures=True)
    res["report_with_figures_s"] = time.perf_counter() - t

    if args.online:
        from alpamayo_ros.tools.replay_online import OnlineOptions, lockstep_overrides, run_online

        _, shadow = build_planner_from_params(params)
        online = OnlineOptions(params_file=DEFAULT_PARAMS_FILE, param_overrides=lockstep_overrides(params) | overrides,
                               log_path=tmp / "node.log")
        t = time.perf_counter()
        on = run_online(info.path, opts, online, shadow=shadow)
        total = time.perf_counter() - t
        lat = [r.latency_s for r in on.records if r.latency_s is not None]
        res["online_ticks"] = len(on.records)
        res["online_planned"] = sum(r.status == "planned" for r in on.records)
        res["online_statuses_equal_offline"] = float([r.status for r in on.records] == [r.status for r in result.records])
        res["online_wall_s"] = total
        res["online_node_tick_ms_p50"] = 1e3 * float(np.median(lat)) if lat else float("nan")
        res["online_wall_ms_per_tick"] = 1e3 * total / max(1, len(on.records))

    print(f"replay tooling on {platform.machine()} / Python {platform.python_version()}, "
          f"{args.duration:.0f} s demo drive, K={args.k}, kinematic backend")
    for k, v in res.items():
        print(f"  {k:34s} {v:12.3f}")
    line = {"benchmark": "replay", "duration_s": args.duration, "k": args.k, "results": res}
    print(json.dumps(line))
    write_json(line, Path("artifacts/bench") / "replay.json")


if __name__ == "__main__":
    main()
