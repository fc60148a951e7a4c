"""Alpamayo 1.5's costs on ONNX Runtime: prompt lengths, navigation guidance and questions.

On the tiny Alpamayo 1.5 (and optionally a mid-size one of the same shape as bench_runtime.py's), one
backend, the same seed and inputs for every variant (so the same reasoning tokens, equal work):
  * `r1_prompt`: the model's own tiny R1 twin (no camera/frame text), for the prompt-length cost;
  * `plain`: Alpamayo 1.5's prompt, no route instruction;
  * `route`: with a route instruction, guidance off;
  * `guided`: with the route and nav_guidance_weight = 1.5 (NVIDIA's demo): one `extend` call and the
    expert over 2K rows;
  * `answer`: a question about the same frames (prefill + up to --answer-tokens decode steps).
Steady ticks (frames slide by one: 4 new images). Prints a table and writes artifacts/bench/alpamayo_1_5.json.
The Thor roofline of the same comparison: `python -m alpamayo_ros.runtime.tensorrt.budget --model-type alpamayo1_5`.

    python benchmarks/bench_alpamayo_1_5.py [--mid] [--ticks N] [--k K] [--max-gen N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402

ROUTE = "Turn left onto Main St in 40m"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure(model_dir: Path, args: argparse.Namespace) -> dict:
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.core.model_inputs import build_question_inputs
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    src = SyntheticInputs(model_dir)
    backend = create_backend("onnxruntime", model_dir, num_threads=args.threads)
    req = SamplingRequest(num_candidates=args.k, seed=7, max_generation_length=args.max_gen, noise_temperature=0.6)
    variants = {"plain": (None, 0.0), "route": (ROUTE, 0.0), "guided": (ROUTE, 1.5)}
    out: dict = {"prompt_tokens": {}, "variants": {}}
    try:
        backend.infer(src.tick(3).inputs, req)  # cold tick: all 16 images, graphs warmed up
        for name, (route, weight) in variants.items():
            ticks, stages = [], []
            for i in range(args.ticks):
                tick = src.tick(4 + i, route=route, unguided=weight > 0)
                t = time.perf_counter()
                res = backend.infer(tick.inputs, replace(req, nav_guidance_weight=weight))
                ticks.append(time.perf_counter() - t)
                stages.append(res.timings_s)
            out["prompt_tokens"][name] = tick.inputs.seq_len
            keys = sorted({k for s in stages for k in s})
            out["variants"][name] = {"tick_s": round(_median(ticks), 4),
                                     "stages_s": {k: round(_median([s.get(k, 0.0) for s in stages]), 4) for k in keys},
                                     "tokens": len(res.generated_ids[0]), "counters": res.counters}
        question = build_question_inputs(src.frames(4 + args.ticks - 1), "Is the road ahead clear?", src.tokenizer,
                                         src.cfg)
        times, tokens = [], 0
        for seed in range(args.ticks):
            t = time.perf_counter()
            ans = backend.answer(question, replace(req, seed=seed), args.answer_tokens)
            times.append(time.perf_counter() - t)
            tokens = max(tokens, ans.num_tokens)
        out["prompt_tokens"]["question"] = question.seq_len
        out["variants"]["answer"] = {"tick_s": round(_median(times), 4), "tokens": tokens}
    finally:
        backend.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mid", action="store_true", help="also a mid-size model (bench_runtime.py's dims)")
    ap.add_argument("--ticks", type=int, default=3)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--max-gen", type=int, default=32)
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "alpamayo_1_5.json"))
    args = ap.parse_args()

    from bench_runtime import MID_OVERRIDES

    from alpamayo_ros.runtime.export import export_onnx
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    results: dict = {"machine": {"python": platform.python_version(), "threads": args.threads,
                                 "load_avg_at_start": list(os.getloadavg())},
                     "settings": {"k": args.k, "ticks": args.ticks, "max_generation_length": args.max_gen,
                                  "answer_tokens": args.answer_tokens, "noise_temperature": 0.6,
                                  "nav_guidance_weight": 1.5}, "models": {}}
    models = {"tiny": {}, **({"mid": MID_OVERRIDES} if args.mid else {})}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in models.items():
            model_dir = make_tiny_model(Path(tmp) / name, seed=0, variant="alpamayo1_5", **overrides)
            r1_dir = make_tiny_model(Path(tmp) / f"{name}_r1", seed=0, **overrides)
            export_onnx(model_dir)
            entry = measure(model_dir, args)
            from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

            entry["prompt_tokens"]["r1"] = SyntheticInputs(r1_dir).tick(4).inputs.seq_len
            results["models"][name] = entry
            v = entry["variants"]
            print(f"\n== {name} Alpamayo 1.5, ONNX Runtime, K={args.k}, max_gen={args.max_gen}, load at start "
                  f"{results['machine']['load_avg_at_start'][0]:.1f}")
            print("prompt tokens:", entry["prompt_tokens"])
            print(f"{'variant':<8} {'tick s':>8} {'prefill s':>9} {'decode s':>8} {'extend s':>8} {'expert s':>8} "
                  f"{'tokens':>6}")
            for key in ("plain", "route", "guided"):
                s = v[key]["stages_s"]
                print(f"{key:<8} {v[key]['tick_s']:>8.3f} {s.get('prefill', 0):>9.3f} {s.get('decode', 0):>8.3f} "
                      f"{s.get('guidance_extend', 0):>8.3f} {s.get('expert', 0):>8.3f} {v[key]['tokens']:>6}")
            extra = v["guided"]["tick_s"] - v["route"]["tick_s"]
            entry["guidance_extra_s"] = round(extra, 4)
            entry["guidance_extra_fraction"] = round(extra / v["route"]["tick_s"], 3)
            print(f"navigation guidance adds {extra:.3f} s ({100 * entry['guidance_extra_fraction']:.0f} % of the "
                  f"unguided tick); a question ({v['answer']['tokens']} tokens) takes {v['answer']['tick_s']:.3f} s")
    print()
    write_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
