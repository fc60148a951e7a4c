"""Alpamayo-R1 at its real size on a CUDA GPU: stage latencies and peak memory next to the roofline.

A random-weight model at the release's dims (36 layers, 155,697 tokens, 8.2 B VLM + 2.3 B expert) is
made on the GPU directly (runtime.torch_device.random_model: the host never holds the weights) and
run by the shared orchestration on the device torch executor in bf16, K = 6 candidates, on synthetic
ticks whose frames slide by one per tick (so steady ticks encode 4 new images, as on the vehicle).
Printed per stage: vision, prefill, decode per step, Euler step and the tick (median over the steady
ticks), peak device memory, and the roofline lower bound of the same tick shape on that GPU
(runtime/tensorrt/budget.py with the GPU's bandwidth and bf16 peak: known GPUs below, else pass
--bandwidth-gbs / --tflops).

    python benchmarks/bench_gpu.py [--ticks 4] [--candidates 6] [--max-gen 32] [--json PATH]
    python benchmarks/bench_gpu.py --dry-run      # the tiny model on the CPU in fp32: checks the path, no figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402

# memory bandwidth (B/s) and dense bf16 FLOP/s (shared/research/perf_anchors.md §2, datasheet values)
GPUS = {
    "H200": (4.8e12, 989e12), "H100 SXM": (3.35e12, 989e12), "H100 PCIe": (2.0e12, 756e12),
    "H100": (3.35e12, 989e12), "A100": (2.0e12, 312e12), "RTX 4090": (1.01e12, 165e12),
    "RTX PRO 6000": (1.79e12, 0.0), "Thor": (273e9, 258e12),
}


def release_model_dir(out: Path) -> Path:
    """config.json (the release's dims: the runtime defaults) and a synthetic tokenizer with the real
    vocabulary layout (151,643 regular ids + the Qwen and Alpamayo tokens = 155,697)."""
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer, layout_to_dict
    from alpamayo_ros.runtime.tiny_model import tiny_config_dict

    tok = AlpamayoTokenizer.synthetic(pad_regular_to=151_643)
    layout = layout_to_dict(tok.layout)
    raw = tiny_config_dict(layout)
    for key in ("vision_config", "text_config", "tiny_model"):
        raw.pop(key, None)
    raw.update(vlm_name_or_path="Qwen/Qwen3-VL-8B-Instruct (random weights)",
               expert_cfg={"hidden_size": 2048, "intermediate_size": 8256, "num_attention_heads": 16},
               action_in_proj_cfg={"num_enc_layers": 2, "hidden_size": 512, "num_fourier_feats": 20, "max_freq": 100.0},
               runtime={"prefix_capacity": 3200, "suffix_capacity": 256, "max_candidates": 8})
    out.mkdir(parents=True, exist_ok=True)
    tok.tok.save(str(out / "tokenizer.json"))
    (out / "token_layout.json").write_text(json.dumps(layout))
    (out / "config.json").write_text(json.dumps(raw, indent=1))
    return out


def gpu_rates(name: str, bandwidth_gbs: float | None, tflops: float | None) -> tuple[float, float] | None:
    if bandwidth_gbs and tflops:
        return bandwidth_gbs * 1e9, tflops * 1e12
    for key, rates in sorted(GPUS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower() and rates[1]:
            return rates
    return None


def run(model_dir: Path, device: str, dtype_name: str, ticks: int, candidates: int, max_gen: int) -> dict[str, Any]:
    import torch

    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.graph_backend import GraphBackend
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs
    from alpamayo_ros.runtime.torch_device import DeviceTorchExecutor, random_model

    cfg = load_config(model_dir)
    t0 = time.perf_counter()
    model = random_model(cfg, device, getattr(torch, dtype_name))
    build_s = time.perf_counter() - t0
    backend = GraphBackend("torch", model_dir, DeviceTorchExecutor(model, device))
    synthetic = SyntheticInputs(model_dir)
    request = SamplingRequest(num_candidates=candidates, temperature=0.6, top_p=0.98, seed=7,
                              max_generation_length=max_gen)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for index in range(ticks + 1):  # tick 0 encodes 16 new frames; the others 4 (steady state)
        tick = synthetic.tick(index + 3)  # frames reach 3 ticks back
        out = backend.infer(tick.inputs, request)
        c, t = out.counters, out.timings_s
        rows.append({"tick": index, "prompt_tokens": int(tick.inputs.input_ids.shape[0]),
                     "images_encoded": c.get("images_encoded", 0), "decode_steps": c["decode_steps"],
                     "vision_ms": 1e3 * t.get("vision", 0.0), "prefill_ms": 1e3 * t["prefill"],
                     "decode_step_ms": 1e3 * t["decode"] / max(c["decode_calls"], 1),
                     "euler_step_ms": 1e3 * t["expert"] / max(c["expert_steps"], 1), "tick_ms": 1e3 * t["tick"]})
        print("  " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
              flush=True)
    backend.close()
    steady = rows[1:] or rows
    summary = {k: round(statistics.median(r[k] for r in steady), 2) for k in
               ("vision_ms", "prefill_ms", "decode_step_ms", "euler_step_ms", "tick_ms", "decode_steps", "prompt_tokens")}
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {"build_s": round(build_s, 1), "ticks": rows, "steady_median": summary, "peak_device_bytes": peak,
            "params": sum(p.numel() for p in model.parameters())}


def roofline(model_dir: Path, summary: dict[str, Any], candidates: int, rates: tuple[float, float], name: str) -> dict:
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.tensorrt.budget import Hardware, TickShape, latency_bounds

    hw = Hardware(name, rates[0], {"bf16": rates[1], "fp16": rates[1], "fp8": 2 * rates[1]})
    shape = TickShape(candidates=candidates, prompt_tokens=int(summary["prompt_tokens"]),
                      decode_steps=int(summary["decode_steps"]), euler_steps=10, new_images=4)
    lat = latency_bounds(load_config(model_dir), shape, vlm="bf16", expert="bf16", kv="bf16", hw=hw,
                         text_engines="separate")  # the torch graphs: blocked causal prefill, as `prefill`
    return {"vision_ms": lat["vision"]["ms"], "prefill_ms": lat["prefill"]["ms"], "decode_step_ms": lat["decode_step"]["ms"],
            "euler_step_ms": lat["euler_step"]["ms"], "tick_ms": lat["tick_ms"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on the CPU in fp32 (checks the path)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ticks", type=int, default=4, help="steady ticks after the first")
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--max-gen", type=int, default=32, help="reasoning token budget (random weights rarely stop)")
    ap.add_argument("--bandwidth-gbs", type=float, default=None)
    ap.add_argument("--tflops", type=float, default=None, help="dense bf16 peak")
    ap.add_argument("--json", default=str(ROOT / "artifacts" / "bench" / "gpu.json"))
    args = ap.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        if args.dry_run:
            from alpamayo_ros.runtime.tiny_model import make_tiny_model

            model_dir, device, dtype, ticks = make_tiny_model(Path(tmp) / "tiny"), "cpu", "float32", min(args.ticks, 1)
            name, rates = "CPU (dry run)", None
        else:
            if not torch.cuda.is_available():
                print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); --dry-run checks the path "
                      "on the CPU", file=sys.stderr)
                return 2
            model_dir, device, dtype, ticks = release_model_dir(Path(tmp) / "r1"), args.device, "bfloat16", args.ticks
            name = torch.cuda.get_device_name(torch.device(device))
            rates = gpu_rates(name, args.bandwidth_gbs, args.tflops)
        print(f"{name}: {'tiny' if args.dry_run else 'release-size'} random model, {dtype}, K={args.candidates}")
        result = run(model_dir, device, dtype, ticks, args.candidates, args.max_gen)
        result.update(device=name, dtype=dtype, candidates=args.candidates)
        if rates is not None:
            result["roofline_ms"] = roofline(model_dir, result["steady_median"], args.candidates, rates, name)
    s, r = result["steady_median"], result.get("roofline_ms", {})
    print(f"{'stage':14s}{'measured ms':>14s}{'roofline ms':>14s}")
    for key in ("vision_ms", "prefill_ms", "decode_step_ms", "euler_step_ms", "tick_ms"):
        bound = f"{r[key]:14.1f}" if key in r else f"{'-':>14s}"
        print(f"{key[:-3]:14s}{s[key]:14.1f}{bound}")
    peak = result["peak_device_bytes"]
    print(f"prompt {s['prompt_tokens']} tokens, {s['decode_steps']} decode steps; params {result['params'] / 1e9:.2f} B; "
          f"peak device memory {'-' if peak is None else f'{peak / 2**30:.1f} GiB'}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
