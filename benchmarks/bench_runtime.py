"""Runtime tick latency: ONNX Runtime vs the torch paths, on the tiny model and a mid-size random model.

For each model and backend a fresh subprocess (so peak RSS is per backend) runs:
  * `reference`: runtime.reference.sample_trajectories — the plain torch path of the spec appendix
    (all 16 images re-encoded, cache repeated per candidate and concatenated as it grows);
  * `torch`: the shared orchestrator on the torch graph modules;
  * `onnxruntime`: the shared orchestrator on the exported ONNX graphs.
Ticks: one cold tick (16 new frames), then steady ticks where frames slide by one (4 new images).
K = 6 candidates, 10 Euler steps, the same seed on every backend (identical tokens, so equal work).
Prints a table and writes artifacts/bench/runtime.json.

    python benchmarks/bench_runtime.py [--quick] [--ticks N] [--max-gen N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402

MID_OVERRIDES = {
    "vision_config": {"depth": 6, "hidden_size": 256, "intermediate_size": 1024, "num_heads": 4,
                      "out_hidden_size": 512, "num_position_embeddings": 2304, "deepstack_visual_indexes": [1, 3, 5]},
    "text_config": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "head_dim": 64,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [12, 10, 10],
                                        "mrope_interleaved": True}},
    "expert_cfg": {"hidden_size": 384, "num_attention_heads": 8, "head_dim": 64, "intermediate_size": 1024},
    "action_in_proj_cfg": {"hidden_size": 256},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(model_dir: str, backend: str, ticks: int, max_gen: int, threads: int, k: int) -> dict:
    import torch

    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    torch.set_num_threads(threads)
    src = SyntheticInputs(model_dir)
    req = SamplingRequest(num_candidates=k, seed=7, max_generation_length=max_gen)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if backend == "reference":
        from alpamayo_ros.runtime.reference import sample_trajectories
        from alpamayo_ros.runtime.weights import load_model

        model = load_model(model_dir)

        def run(i: int) -> dict:
            tick = src.tick(i)
            t = time.perf_counter()
            with torch.no_grad():
                res = sample_trajectories(model, src.tokenizer, tick.inputs, tick.hist_xyz, tick.hist_rot, req)
            return {"tick_s": time.perf_counter() - t, "tokens": int(res.token_ids.shape[1])}
    else:
        b = create_backend(backend, model_dir, num_threads=threads)

        def run(i: int) -> dict:
            tick = src.tick(i)
            t = time.perf_counter()
            out = b.infer(tick.inputs, req)
            return {"tick_s": time.perf_counter() - t, "tokens": len(out.generated_ids[0]),
                    "stages_s": {k2: round(v, 4) for k2, v in out.timings_s.items()},
                    "images_encoded": out.counters.get("images_encoded", 0)}
    load_s = time.perf_counter() - t0
    runs = [run(3 + i) for i in range(ticks)]
    steady = [r["tick_s"] for r in runs[1:]] or [runs[0]["tick_s"]]
    return {"backend": backend, "load_s": round(load_s, 3), "cold_tick_s": round(runs[0]["tick_s"], 4),
            "steady_tick_s": round(sorted(steady)[len(steady) // 2], 4), "steady_tick_min_s": round(min(steady), 4),
            "runs": runs,
            "peak_rss_mb": round(_rss_mb(), 1), "rss_before_load_mb": round(rss0, 1)}


def _run_worker(model_dir: Path, backend: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(model_dir), backend, "--ticks", str(args.ticks),
           "--max-gen", str(args.max_gen), "--threads", str(args.threads), "--k", str(args.k)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"worker {backend} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model only")
    ap.add_argument("--ticks", type=int, default=4)
    ap.add_argument("--max-gen", type=int, default=32, help="max_generation_length (same tokens on every backend)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "runtime.json"))
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.ticks, args.max_gen, args.threads, args.k)))
        return 0

    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    results: dict = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                                 "threads": args.threads, "load_avg_at_start": list(os.getloadavg())},
                     "settings": {"k": args.k, "ticks": args.ticks, "max_generation_length": args.max_gen,
                                  "diffusion_steps": 10}, "models": {}}
    models = {"tiny": {}} if args.quick else {"tiny": {}, "mid": MID_OVERRIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in models.items():
            model_dir = make_tiny_model(Path(tmp) / name, seed=0, **overrides)
            t = time.perf_counter()
            export_onnx(model_dir)
            export_s = time.perf_counter() - t
            n_params = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) // 4
            entry = {"params_millions": round(n_params / 1e6, 2), "export_s": round(export_s, 1), "backends": {}}
            for backend in ("reference", "torch", "onnxruntime"):
                entry["backends"][backend] = _run_worker(model_dir, backend, args)
            b = entry["backends"]
            entry["ratio_reference_over_ort_steady"] = round(b["reference"]["steady_tick_s"] / b["onnxruntime"]["steady_tick_s"], 2)
            entry["ratio_torch_over_ort_steady"] = round(b["torch"]["steady_tick_s"] / b["onnxruntime"]["steady_tick_s"], 2)
            results["models"][name] = entry
            print(f"\n== {name} model: {entry['params_millions']} M params, ONNX export {entry['export_s']} s, "
                  f"K={args.k}, max_gen={args.max_gen}")
            print(f"{'backend':<12} {'cold tick s':>11} {'steady median s':>15} {'steady min s':>12} {'tokens':>6} "
                  f"{'peak RSS MB':>11}")
            for bk, r in b.items():
                print(f"{bk:<12} {r['cold_tick_s']:>11.3f} {r['steady_tick_s']:>15.3f} {r['steady_tick_min_s']:>12.3f} "
                      f"{r['runs'][-1]['tokens']:>6} {r['peak_rss_mb']:>11.1f}")
            print(f"steady-tick ratio reference/ORT = {entry['ratio_reference_over_ort_steady']}, "
                  f"torch-graphs/ORT = {entry['ratio_torch_over_ort_steady']}")
            ort = b["onnxruntime"]["runs"][-1].get("stages_s", {})
            print("ORT steady-tick stages (s):", ort)
    print()
    write_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
