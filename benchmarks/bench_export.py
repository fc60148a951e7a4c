"""ONNX export: peak host memory (RSS) and time, and the projection to the 10 B release.

The exporter traces the graphs from a model whose parameters are never read (meta construction,
uninitialised storage), then writes the weights one tensor at a time into one shared external-data
file (runtime/export.py). So its peak RSS is the tracing working set (grows with the graph, not with
the weights) or the writer's (one tensor read + converted + transposed), whichever is larger.

    python benchmarks/bench_export.py [--models tiny,mid] [--dtypes float32,bfloat16] [--full-size]

* tiny / mid: the whole export of a random model (`make_tiny_model`), one fresh subprocess per
  (model, dtype): peak RSS, seconds per graph, bytes of weights.bin vs the checkpoint.
* --full-size: the release's dims (36 layers, 155,697 tokens; config defaults): (1) all six graphs
  traced in bf16 with the weights as graph inputs and parsed by the TensorRT-RTX parser (when
  installed); (2) the weight writer on the release's two largest tensors (embed_tokens and lm_head,
  155,697 x 4096 bf16, in a sparse safetensors file), lm_head transposed as the graphs use it. The
  10 B projection is the larger of the two peaks (the phases run one after the other).
Each measurement runs in its own subprocess; the load average is recorded (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402
from bench_runtime import MID_OVERRIDES  # noqa: E402

FULL_GRAPHS = ("vision", "sample", "text", "expert_step", "decode", "prefill")
RELEASE = {"vlm_name_or_path": "Qwen/Qwen3-VL-8B-Instruct", "traj_vocab_size": 4000}  # default dims = R1's


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def worker_export(model_dir: str, dtype: str) -> dict[str, Any]:
    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.weights import checkpoint_layout

    layout = checkpoint_layout(model_dir)
    numel = {k: math.prod(shape) for k, (shape, _, _) in layout.items()}
    before = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        manifest = export_onnx(model_dir, out, dtype=dtype)
        seconds = time.perf_counter() - t0
    return {"dtype": dtype, "export_s": round(seconds, 1), "graph_s": manifest["export_seconds"],
            "peak_rss_mb": _peak_rss_mb(), "rss_before_export_mb": before,
            "params_millions": round(sum(numel.values()) / 1e6, 2),
            "checkpoint_bytes": sum(Path(p).stat().st_size for p in {v[2] for v in layout.values()}),
            "weights_file_bytes": manifest["weights_bytes"], "largest_tensor_elements": max(numel.values())}


def worker_trace_full(graphs: str) -> dict[str, Any]:
    from alpamayo_ros.runtime.config import config_from_dict
    from alpamayo_ros.runtime.export import trace_graph, traceable_model

    cfg = config_from_dict(RELEASE)
    t0 = time.perf_counter()
    model = traceable_model(cfg, "bfloat16")
    result: dict[str, Any] = {"model_build_s": round(time.perf_counter() - t0, 1), "graphs": {}}
    with tempfile.TemporaryDirectory() as out:
        for name in graphs.split(","):
            t0 = time.perf_counter()
            traced = trace_graph(model, name, "bfloat16")
            entry = {"trace_s": round(time.perf_counter() - t0, 1), "nodes": len(traced.proto.graph.node),
                     "weight_inputs": len(traced.weights), "proto_mb": round(traced.proto.ByteSize() / 2**20, 2),
                     "io": len(traced.proto.graph.input) - len(traced.weights) + len(traced.proto.graph.output),
                     "peak_rss_mb_so_far": _peak_rss_mb()}
            path = Path(out) / f"{name}.onnx"
            path.write_bytes(traced.proto.SerializeToString())
            entry["tensorrt_rtx_parse"] = rtx_parse(path)
            result["graphs"][name] = entry
            print(f"  {name}: {entry}", file=sys.stderr, flush=True)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def rtx_parse(path: Path) -> str:
    """One ONNX file through the TensorRT-RTX parser (strongly typed, on the CPU): 'ok (...)', 'failed: ...'
    or 'not installed'."""
    from alpamayo_ros.runtime.tensorrt.builder import EngineBuildError, parse_onnx
    from alpamayo_ros.runtime.tensorrt.trt_module import RTX_MODULE

    try:
        trt = __import__(RTX_MODULE)
    except ImportError:
        return "not installed"
    try:
        parsed = parse_onnx(trt, path, trt.Logger(trt.Logger.ERROR))
    except EngineBuildError as exc:
        return f"failed: {exc}"
    network = parsed.network
    return f"ok ({network.num_inputs} inputs, {network.num_outputs} outputs, {network.num_layers} layers)"


def worker_write_full() -> dict[str, Any]:
    """The weight writer on the release's largest tensors (zeros from a sparse safetensors file)."""
    from alpamayo_ros.runtime.config import config_from_dict
    from alpamayo_ros.runtime.export import WeightRef, write_weights

    cfg = config_from_dict(RELEASE)
    shape = [cfg.text.vocab_size, cfg.text.hidden_size]
    keys = ("vlm.model.language_model.embed_tokens.weight", "vlm.lm_head.weight")
    nbytes = shape[0] * shape[1] * 2
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        model_dir = Path(tmp)
        (model_dir / "config.json").write_text(json.dumps(RELEASE))
        header = {k: {"dtype": "BF16", "shape": shape, "data_offsets": [i * nbytes, (i + 1) * nbytes]}
                  for i, k in enumerate(keys)}
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (model_dir / "model.safetensors").open("wb") as fh:
            fh.write(len(raw).to_bytes(8, "little") + raw)
            fh.truncate(8 + len(raw) + 2 * nbytes)  # sparse: reads as zeros, takes no disk
        before = _peak_rss_mb()
        t0 = time.perf_counter()
        refs = [WeightRef(keys[0], ()), WeightRef(keys[1], (("transpose", (1, 0)),))]
        offsets = write_weights(model_dir, refs, model_dir / "weights.bin", "bfloat16")
        return {"tensor_bytes": nbytes, "tensors": len(offsets), "write_s": round(time.perf_counter() - t0, 1),
                "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb()}


def _run(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"worker {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_results(results: dict[str, Any], out: Path) -> None:
    """Record the end load average, print both, and write the JSON to `out`."""
    results["load_avg_at_end"] = list(os.getloadavg())
    print(f"load average start {results['load_avg_at_start']}, end {results['load_avg_at_end']}")
    write_json(results, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, float32 only")
    ap.add_argument("--models", default="tiny,mid", help="comma-separated subset of tiny,mid ('' for none)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--full-size", action="store_true", help="trace all six graphs at the release's dims "
                    "(about 5 min per graph on 2 shared cores) and run the writer on its largest tensors")
    ap.add_argument("--graphs", default=",".join(FULL_GRAPHS), help="--full-size: graphs to trace")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "export.json"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        fn = {"export": worker_export, "trace-full": worker_trace_full, "write-full": worker_write_full}[kind]
        print(json.dumps(fn(*rest)))
        return 0

    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    results: dict[str, Any] = {"load_avg_at_start": list(os.getloadavg()), "models": {}}
    models = [m for m in args.models.split(",") if m] if not args.quick else ["tiny"]
    dtypes = [d for d in args.dtypes.split(",") if d] if not args.quick else ["float32"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model_dir = make_tiny_model(Path(tmp) / name, seed=0, **({} if name == "tiny" else MID_OVERRIDES))
            results["models"][name] = {}
            for dtype in dtypes:
                run = results["models"][name][dtype] = _run(["export", str(model_dir), dtype])
                print(f"{name} {dtype}: {run['params_millions']} M params, checkpoint {run['checkpoint_bytes'] / 1e6:.1f} MB, "
                      f"weights.bin {run['weights_file_bytes'] / 1e6:.1f} MB, export {run['export_s']} s, "
                      f"peak RSS {run['peak_rss_mb']} MB (after imports {run['rss_before_export_mb']} MB)")
    if args.full_size:
        full = results["full_size"] = {"trace": _run(["trace-full", args.graphs]), "writer": _run(["write-full"])}
        for name, g in full["trace"]["graphs"].items():
            print(f"release dims, {name}: traced in {g['trace_s']} s, {g['nodes']} nodes, {g['weight_inputs']} weight "
                  f"inputs, {g['proto_mb']} MB graph; TensorRT-RTX parser: {g['tensorrt_rtx_parse']}")
        w = full["writer"]
        projection = max(full["trace"]["peak_rss_mb"], w["peak_rss_mb"])
        full["projected_peak_rss_mb_10b"] = projection
        print(f"release dims: tracing peak RSS {full['trace']['peak_rss_mb']} MB; writer on 2 x {w['tensor_bytes'] / 1e9:.2f} GB "
              f"tensors: peak RSS {w['peak_rss_mb']} MB in {w['write_s']} s; projected export peak for 10 B: {projection} MB")
    write_results(results, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
