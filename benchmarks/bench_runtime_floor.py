"""ONNX Runtime tick, stage by stage, against the floor this machine allows for the model's dims.

For the tiny and a mid-size random model: one cold tick (16 new frames), then steady ticks where the
frames slide by one (4 new images), K candidates, seeded sampling, 10 Euler steps. Per stage it
prints the median (and min) steady time, the roofline floor max(bytes / copy rate, FLOPs / GEMM rate) computed
from the model dims with runtime/tensorrt/budget.py's formulas (fp32, the prompt length and decode
steps of the run) and this machine's measured rates (fp32 GEMM through ONNX Runtime's MatMul, large-copy bandwidth
counting bytes read + written; best of 25 runs, at the start and at the end), and the ratio median / floor. Also: peak RSS, and digests of
the tokens (seeded and greedy) so two runs (code versions, arena settings) can be checked for
identical tokens (`--baseline`). Each run is a fresh subprocess; the load average is recorded.

    python benchmarks/bench_runtime_floor.py [--quick | --models tiny,mid] [--ticks 4] [--threads 2] [--memory heap,arena,none]
        [--code-root DIR] [--baseline previous.json] [--out artifacts/bench/runtime_floor.json]

`--code-root DIR` runs the workers (export + ticks) on another checkout of the package, e.g. the
previous version (`git archive main | tar -x -C DIR` and `--memory none`: it knows no `retain_heap`),
for before/after pairs on the same models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402
from bench_runtime import MID_OVERRIDES  # noqa: E402

STAGES = ("vision", "prefill", "decode", "expert", "tick")


# --------------------------------------------------------------------------------------------- worker
def _digest(values: list) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


MEMORY = {"heap": {}, "arena": {"cpu_mem_arena": True, "retain_heap": False},
          "none": {"cpu_mem_arena": False, "retain_heap": False},
          "heap-spin": {"spin_threads": True}}  # heap: the default (heap retention, workers blocking)


def worker(model_dir: str, ticks: int, max_gen: int, threads: int, k: int, memory: str) -> dict:
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    if memory == "export":  # a process of its own, so the workers' peak RSS is inference only
        t0 = time.perf_counter()
        export_onnx(model_dir)
        return {"export_s": round(time.perf_counter() - t0, 1)}
    src = SyntheticInputs(model_dir)
    from alpamayo_ros import runtime

    known = getattr(runtime, "_GRAPH_OPTIONS", ())  # an older --code-root may not know every option
    options = {k: v for k, v in MEMORY[memory].items() if k in known}
    backend = create_backend("onnxruntime", model_dir, num_threads=threads, **options)
    seeded = SamplingRequest(num_candidates=k, seed=7, max_generation_length=max_gen)
    greedy = SamplingRequest(num_candidates=k, temperature=0.0, max_generation_length=max_gen)
    runs = []
    for i in range(ticks):
        tick = src.tick(3 + i)
        out = backend.infer(tick.inputs, seeded)
        runs.append({"stages_ms": {s: 1e3 * out.timings_s.get(s, 0.0) for s in STAGES},
                     "decode_calls": out.counters.get("decode_calls", 0),
                     "images_encoded": out.counters.get("images_encoded", 0),
                     "tokens": out.generated_ids, "actions": np.asarray(out.actions).round(7).tolist()})
    greedy_out = backend.infer(src.tick(3 + ticks).inputs, greedy)
    backend.close()
    return {"prompt_tokens": len(src.tick(3).inputs.input_ids), "runs": runs,
            "tokens_digest": _digest([r["tokens"] for r in runs]),
            "greedy_tokens_digest": _digest(greedy_out.generated_ids),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def _run_worker(model_dir: Path, args: argparse.Namespace, memory: str) -> dict:
    env = dict(os.environ)
    if args.code_root:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.code_root).resolve()), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", str(model_dir), "--ticks", str(args.ticks), "--max-gen",
           str(args.max_gen), "--threads", str(args.threads), "--k", str(args.k), "--memory", memory]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- rates
def measure_rates(threads: int) -> dict:
    """fp32 GEMM FLOP/s through ONNX Runtime's MatMul at `threads`, and the copy rate (bytes read + written
    per second) of large numpy copies split over `threads` threads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 1536
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx._serialize(model) if hasattr(onnx, "_serialize") else model.SerializeToString(),
                                opts, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    feeds = {"a": a, "b": a}
    sess.run(None, feeds)
    times = []
    for _ in range(25):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    gemm = 2 * n**3 / min(times)  # the machine's rate: the least disturbed run

    size = 64 * 2**20 // 4  # 64 MiB per thread
    src = [np.ones(size, np.float32) for _ in range(threads)]
    dst = [np.empty_like(x) for x in src]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.copyto, dst, src))
        times = []
        for _ in range(25):
            t = time.perf_counter()
            list(pool.map(np.copyto, dst, src))
            times.append(time.perf_counter() - t)
    copy = 2 * threads * size * 4 / min(times)
    return {"gemm_flops": gemm, "copy_bytes_per_s": copy, "threads": threads}


# --------------------------------------------------------------------------------------------- floors
def floors_ms(model_dir: Path, rates: dict, prompt: int, decode_steps: int, k: int) -> dict:
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.tensorrt.budget import Hardware, TickShape, latency_bounds

    cfg = load_config(model_dir)
    hw = Hardware("this machine", rates["copy_bytes_per_s"], {"fp32": rates["gemm_flops"]})
    shape = TickShape(candidates=k, prompt_tokens=prompt, decode_steps=decode_steps, euler_steps=10, new_images=4)
    lat = latency_bounds(cfg, shape, vlm="fp32", expert="fp32", kv="fp32", hw=hw)
    out = {"vision": lat["vision"], "prefill": lat["prefill"],
           "decode": {"ms": lat["decode_total_ms"], "bound": lat["decode_step"]["bound"]},
           "expert": {"ms": lat["expert_total_ms"], "bound": lat["euler_step"]["bound"]}}
    out["tick"] = {"ms": sum(out[s]["ms"] for s in STAGES[:4]), "bound": "sum"}
    return out


def summarize(name: str, run: dict, floors: dict) -> dict:
    steady = run["runs"][1:] or run["runs"]
    measured = {s: float(np.median([r["stages_ms"][s] for r in steady])) for s in STAGES}
    best = {s: float(np.min([r["stages_ms"][s] for r in steady])) for s in STAGES}
    table = {s: {"measured_ms": round(measured[s], 2), "min_ms": round(best[s], 2), "floor_ms": round(floors[s]["ms"], 2),
                 "ratio": round(measured[s] / floors[s]["ms"], 2) if floors[s]["ms"] else None,
                 "bound": floors[s]["bound"]} for s in STAGES}
    return {"stages": table, "decode_calls": steady[-1]["decode_calls"], "images_encoded": steady[-1]["images_encoded"]}


def print_table(title: str, summary: dict, run: dict) -> None:
    print(f"\n== {title}: prompt {run['prompt_tokens']} tokens, {summary['decode_calls']} decode calls, "
          f"{summary['images_encoded']} new images, peak RSS {run['peak_rss_mb']} MB")
    print(f"{'stage':<10} {'median ms':>10} {'min ms':>9} {'floor ms':>9} {'ratio':>6}  bound")
    for stage, row in summary["stages"].items():
        print(f"{stage:<10} {row['measured_ms']:>10.1f} {row['min_ms']:>9.1f} {row['floor_ms']:>9.1f} "
              f"{row['ratio']:>6.2f}  {row['bound']}")
    print(f"tokens digest {run['tokens_digest']} (seeded), {run['greedy_tokens_digest']} (greedy)")


def compare(results: dict, baseline: dict) -> None:
    for model, entry in results["models"].items():
        for memory, run in entry["runs"].items():
            base = next(iter(baseline.get("models", {}).get(model, {}).get("runs", {}).values()), None)
            if base is None:
                continue
            same = (run["tokens_digest"], run["greedy_tokens_digest"]) == (base["tokens_digest"],
                                                                         base["greedy_tokens_digest"])
            diff = max(float(np.max(np.abs(np.asarray(a["actions"]) - np.asarray(b["actions"]))))
                       for a, b in zip(run["runs"], base["runs"], strict=False))
            print(f"{model} memory={memory}: tokens identical to the baseline: {same}; actions max |diff| {diff:.2e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model only")
    ap.add_argument("--models", default="tiny,mid", help="comma-separated subset of tiny,mid")
    ap.add_argument("--ticks", type=int, default=4)
    ap.add_argument("--max-gen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--memory", default="heap,arena,none",
                    help="comma-separated ONNX Runtime memory settings to run: heap (the default: glibc heap "
                         "retention), arena (ORT's CPU arena), none (neither; what --code-root of an older version gets), "
                         "heap-spin (heap with spinning intra-op worker threads, the default before they blocked)")
    ap.add_argument("--code-root", default=None, help="run the workers on this checkout of the package")
    ap.add_argument("--baseline", default=None, help="a previous JSON output: report whether tokens are identical")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "runtime_floor.json"))
    ap.add_argument("--worker", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.ticks, args.max_gen, args.threads, args.k, args.memory)))
        return 0

    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    load_start = list(os.getloadavg())
    rates = measure_rates(args.threads)  # measured again at the end: the floors use the better of the two
    print(f"load average {load_start}; this machine: fp32 GEMM {rates['gemm_flops'] / 1e9:.0f} GFLOP/s, "
          f"copy {rates['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write), {args.threads} threads")
    results: dict = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                                 "load_avg_at_start": load_start, **rates},
                     "settings": {"k": args.k, "ticks": args.ticks, "max_generation_length": args.max_gen,
                                  "diffusion_steps": 10, "code_root": args.code_root}, "models": {}}
    models = {name: o for name, o in (("tiny", {}), ("mid", MID_OVERRIDES))
              if name in args.models.split(",") and not (args.quick and name != "tiny")}
    memories = [m for m in args.memory.split(",") if m]
    if bad := set(memories) - set(MEMORY):
        raise SystemExit(f"--memory: unknown {sorted(bad)}; choose from {sorted(MEMORY)}")
    model_dirs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in models.items():
            model_dir = model_dirs[name] = make_tiny_model(Path(tmp) / name, seed=0, **overrides)
            n_params = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) // 4
            entry: dict = {"params_millions": round(n_params / 1e6, 2), "runs": {}, "summary": {}}
            entry["export_s"] = _run_worker(model_dir, args, "export")["export_s"]
            for memory in memories:
                run = _run_worker(model_dir, args, memory)
                run["load_avg_after"] = list(os.getloadavg())
                entry["runs"][memory] = run
            results["models"][name] = entry
        end = measure_rates(args.threads)
        rates = {k: max(v, end[k]) for k, v in rates.items()}
        results["machine"].update(rates, load_avg_at_end=list(os.getloadavg()))
        print(f"\nthis machine (best of start and end): fp32 GEMM {rates['gemm_flops'] / 1e9:.0f} GFLOP/s, "
              f"copy {rates['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write), {args.threads} threads")
        for name, entry in results["models"].items():
            for memory, run in entry["runs"].items():
                steady = run["runs"][1:] or run["runs"]
                floors = floors_ms(model_dirs[name], rates, run["prompt_tokens"], steady[-1]["decode_calls"], args.k)
                entry["summary"][memory] = summarize(name, run, floors)
                print_table(f"{name} ({entry['params_millions']} M params), ONNX Runtime, memory={memory}, "
                            f"load {run['load_avg_after'][0]:.1f}", entry["summary"][memory], run)
    if args.baseline:
        compare(results, json.loads(Path(args.baseline).read_text()))
    print()
    write_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
