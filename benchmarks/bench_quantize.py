"""Accuracy of the FP8-quantized model against fp32 on the demo bag (ONNX Runtime, CPU).

For the tiny and the mid random model: export fp32, `alpamayo-ros quantize` (FP8 Q/DQ by NVIDIA Model
Optimizer, calibrated on ticks of the demo bag) of the VLM text stack, and of the text stack + the
expert; then replay the same demo-bag ticks offline through the planner on ONNX Runtime over each
ONNX directory (greedy reasoning, the node's seeded diffusion noise) and compare every candidate
trajectory with fp32's: ADE / FDE between the two (m), the share of ticks whose reasoning tokens are
identical, and each run's minADE against the bag's own future odometry. ONNX Runtime runs the Q/DQ
nodes as FP8 rounding of the weights and activations, so this is the numerical effect of FP8 scales,
not TensorRT's FP8 kernels. Each quantized graph is also parsed by the TensorRT-RTX ONNX parser on the CPU
(strongly typed, as the engine build parses it) where that parser is installed.

    python benchmarks/bench_quantize.py [--quick] [--models tiny,mid] [--ticks 6] [--calibration-ticks 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_export import rtx_parse, write_results  # noqa: E402
from bench_runtime import MID_OVERRIDES  # noqa: E402

VARIANTS = {"fp8_text": ("prefill", "decode", "text"), "fp8_text_expert": ("prefill", "decode", "text", "expert_step")}


def replay(model_dir: Path, onnx_dir: Path, bag: Path, ticks: int, candidates: int) -> Any:
    from alpamayo_ros.tools.planner_setup import build_planner_from_params, camera_topics, node_params
    from alpamayo_ros.tools.replay import ReplayOptions, run_offline

    params = node_params(None, {"model_dir": str(model_dir), "backend": "onnxruntime", "engine_dir": str(onnx_dir),
                                "num_candidates": candidates, "temperature": 0.0, "max_generation_length": 32})
    backend, planner = build_planner_from_params(params)
    try:
        opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=0.5,
                             max_ticks=ticks)
        return run_offline(bag, planner, opts)
    finally:
        backend.close()


def compare(base: Any, other: Any) -> dict[str, Any]:
    """ADE / FDE between the two runs' candidates, tick by tick (same t0, same candidate index)."""
    from alpamayo_ros.tools.scoring import score_records

    ref = {r.t0: r for r in base.records if r.status == "planned"}
    ade, fde, same_text = [], [], 0
    pairs = [(ref[r.t0], r) for r in other.records if r.status == "planned" and r.t0 in ref]
    for a, b in pairs:
        dist = np.linalg.norm(a.xyz[..., :2] - b.xyz[..., :2], axis=-1)  # (K, T)
        ade.append(float(dist.mean()))
        fde.append(float(dist[:, -1].mean()))
        same_text += a.reasoning == b.reasoning
    scores = {name: score_records(run.records, run.gt) for name, run in (("fp32", base), ("quantized", other))}
    return {"ticks_compared": len(pairs), "ade_vs_fp32_m": round(float(np.mean(ade)), 4) if ade else None,
            "max_tick_ade_vs_fp32_m": round(float(np.max(ade)), 4) if ade else None,
            "fde_vs_fp32_m": round(float(np.mean(fde)), 4) if fde else None,
            "reasoning_identical_share": round(same_text / max(len(pairs), 1), 3),
            "min_ade_m": {k: round(float(np.mean([s.min_ade for s in v])), 3) if v else None for k, v in scores.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model only, 3 ticks")
    ap.add_argument("--models", default="tiny,mid")
    ap.add_argument("--ticks", type=int, default=6, help="replay ticks compared")
    ap.add_argument("--calibration-ticks", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "quantize.json"))
    args = ap.parse_args()
    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.quantize import quantize_model
    from alpamayo_ros.runtime.tiny_model import make_tiny_model
    from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag

    models = ["tiny"] if args.quick else [m for m in args.models.split(",") if m]
    ticks = 3 if args.quick else args.ticks
    results: dict[str, Any] = {"load_avg_at_start": list(os.getloadavg()), "ticks": ticks, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "demo_bag"
        make_demo_bag(bag, DemoBagConfig(duration_s=16.0))
        for name in models:
            model_dir = make_tiny_model(Path(tmp) / name, seed=0, **({} if name == "tiny" else MID_OVERRIDES))
            export_onnx(model_dir)
            base = replay(model_dir, model_dir / "onnx", bag, ticks, args.candidates)
            entry: dict[str, Any] = {}
            for variant, graphs in VARIANTS.items():
                t0 = time.perf_counter()
                manifest = quantize_model(model_dir, bag, model_dir / variant, "fp8", graphs, args.calibration_ticks,
                                          args.candidates)
                quantize_s = round(time.perf_counter() - t0, 1)
                parsed = {g: rtx_parse(model_dir / variant / f"{g}.onnx") for g in graphs
                          if (model_dir / variant / f"{g}.onnx").is_file()}  # prefill beside text: either may be absent
                run = replay(model_dir, model_dir / variant, bag, ticks, args.candidates)
                entry[variant] = {"quantize_s": quantize_s, "graphs": list(graphs), "tensorrt_rtx_parse": parsed,
                                  "calibration": manifest["quantization"]["calibration"], **compare(base, run)}
                e = entry[variant]
                print(f"{name} {variant}: ADE vs fp32 {e['ade_vs_fp32_m']} m (max tick {e['max_tick_ade_vs_fp32_m']} m), "
                      f"FDE {e['fde_vs_fp32_m']} m over {e['ticks_compared']} ticks; reasoning identical on "
                      f"{e['reasoning_identical_share']:.0%}; minADE fp32 {e['min_ade_m']['fp32']} m, "
                      f"quantized {e['min_ade_m']['quantized']} m; quantize {quantize_s} s; TensorRT-RTX parse "
                      f"{'; '.join(f'{g}: {v}' for g, v in parsed.items())}", flush=True)
            results["models"][name] = entry
    write_results(results, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
