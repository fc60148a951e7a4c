#!/usr/bin/env python3
"""Evaluation throughput (issue #16): bags per minute for 1 worker (in-process), 2 workers (process
pool) and Ray with 2 workers (a local cluster on loopback), on the kinematic backend and the tiny
model (ONNX Runtime). Prints a table, the load average around each run, and one JSON line (also
artifacts/bench/evaluate.json).

Each run is a whole `evaluate` (tools/evaluate.py evaluate_bags): workers start and load the model,
bags are replayed on the node's schedule (a tick every --period s), every result is written to its
results file and read back for the report. Ray's cluster start is measured apart (a fleet's cluster
is up before an evaluation starts). Every run of a backend must give the same numbers; the script
checks it. Demo bags and the tiny model's ONNX export are made first, outside the timings.

    .venv/bin/python benchmarks/bench_evaluate.py [--bags 6] [--duration 10] [--period 0.1] [--k 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag
from alpamayo_ros.tools.evaluate import EvalSpec, Evaluation, evaluate_bags, run_settings
from alpamayo_ros.tools.executors import InProcessExecutor, PoolExecutor, RayExecutor, init_ray
from alpamayo_ros.tools.planner_setup import camera_topics, node_params
from alpamayo_ros.tools.replay import ReplayOptions
from alpamayo_ros.tools.report import build_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_json

EXECUTORS = ("1 worker (in-process)", "2 workers (process pool)", "Ray, 2 workers")


def make_bags(root: Path, n: int, duration: float) -> list[Path]:
    return [make_demo_bag(root / f"drive{i}", DemoBagConfig(duration_s=duration, cruise_speed_mps=8.0 + i,
                                                            curve_radius_m=40.0 + 5 * i, start_yaw=0.3 * i)).path
            for i in range(n)]


def tiny_model_with_onnx(root: Path) -> Path:
    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    model = root / "tiny_model"
    shutil.copytree(default_tiny_model_dir(), model)
    export_onnx(model)
    return model


def executor(kind: str, spec: EvalSpec) -> Any:
    if kind.startswith("1 worker"):
        return InProcessExecutor(spec)
    if kind.startswith("2 workers"):
        return PoolExecutor(spec, workers=2)
    return RayExecutor(spec, workers=2)


def measure(kind: str, spec: EvalSpec, bags: list[Path], out: Path) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    run = evaluate_bags(bags, executor(kind, spec), Evaluation(out, run_settings(spec.params, spec.options)))
    wall = time.perf_counter() - t
    report, _ = build_report(run.results)
    s = report["summary"]
    return {"executor": kind, "bags": len(bags), "wall_s": wall, "bags_per_min": 60 * len(bags) / wall,
            "ticks": s["ticks_scheduled"], "ticks_per_s": s["ticks_scheduled"] / wall,
            "plan_ms_p50": 1e3 * (s["latency_s"]["p50"] or 0.0), "failed": sum(r.status != "ok" for r in run.results),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "numbers": json.dumps([report["ticks"][i] | {"latency_s": None} for i in range(len(report["ticks"]))])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bags", type=int, default=6)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per demo bag")
    ap.add_argument("--period", type=float, default=0.1, help="seconds of bag time between ticks")
    ap.add_argument("--k", type=int, default=6, help="candidates per tick")
    ap.add_argument("--threads", type=int, default=1, help="backend threads per worker (0: the backend's default)")
    ap.add_argument("--backends", default="kinematic,onnxruntime")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    t = time.perf_counter()
    bags = make_bags(tmp / "bags", args.bags, args.duration)
    setup = {"bags_make_s": time.perf_counter() - t}
    models = {"kinematic": None, "onnxruntime": None}
    if "onnxruntime" in args.backends:
        t = time.perf_counter()
        models["onnxruntime"] = tiny_model_with_onnx(tmp)
        setup["onnx_export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ray = init_ray(num_cpus=os.cpu_count(), temp_dir=str(tmp / "ray"))
    setup["ray_start_s"] = time.perf_counter() - t
    rows = []
    try:
        for backend in args.backends.split(","):
            from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

            model = models.get(backend) or default_tiny_model_dir()
            params = node_params(None, {"backend": backend, "model_dir": str(model), "num_candidates": args.k,
                                        "backend_threads": args.threads})
            opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=args.period)
            spec = EvalSpec(params, opts)
            for i, kind in enumerate(EXECUTORS):
                row = measure(kind, spec, bags, tmp / "out" / f"{backend}{i}")
                rows.append({"backend": backend} | row)
    finally:
        ray.shutdown()
    same = {b: len({r.pop("numbers") for r in rows if r["backend"] == b}) == 1 for b in args.backends.split(",")}
    print(f"evaluate throughput on {platform.machine()} / Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{args.bags} demo bags of {args.duration:.0f} s, a tick every {args.period} s, K={args.k}, "
          f"{args.threads or 'default'} backend thread(s) per worker")
    print("setup: " + ", ".join(f"{k} {v:.1f}" for k, v in setup.items()))
    print(f"{'backend':12s} {'executor':26s} {'wall s':>7s} {'bags/min':>9s} {'ticks/s':>8s} {'plan p50 ms':>12s} "
          f"{'load before/after':>18s}")
    for r in rows:
        print(f"{r['backend']:12s} {r['executor']:26s} {r['wall_s']:7.1f} {r['bags_per_min']:9.1f} {r['ticks_per_s']:8.1f} "
              f"{r['plan_ms_p50']:12.1f} {r['load_before']:8.2f} / {r['load_after']:.2f}")
    print("same numbers on every executor: " + ", ".join(f"{b} {'yes' if ok else 'NO'}" for b, ok in same.items()))
    line = {"benchmark": "evaluate", "bags": args.bags, "duration_s": args.duration, "period_s": args.period,
            "k": args.k, "threads": args.threads, "cpus": os.cpu_count(), "setup": setup, "results": rows,
            "same_numbers": same}
    print(json.dumps(line))
    write_json(line, Path("artifacts/bench") / "evaluate.json")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
