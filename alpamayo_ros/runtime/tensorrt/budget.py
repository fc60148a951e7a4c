"""Memory budget and latency lower bounds of the TensorRT deployment, computed from the model dims.

Used by docs/deployment/jetson_thor.md; run it for any model directory:

    python -m alpamayo_ros.runtime.tensorrt.budget [MODEL_DIR] [--candidates 6] [--json]

Parameter counts follow the released key layout (runtime/weights.py); memory follows the executor
(runtime/tensorrt/executor.py: one buffer per KV tensor, profile-max I/O buffers) and the engine
arrangement (`merged`, the default: one text engine with a profile per phase, so the text weights are
on the device once; `separate`: prefill and decode engines, each with its own copy); latency is a
roofline bound: each stage takes at least max(bytes / bandwidth, FLOPs / peak). Thor's figures are
from shared/research/perf_anchors.md §2 (Jetson AGX Thor T5000); benchmarks/bench_runtime_floor.py
passes a CPU's measured rates instead.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from alpamayo_ros.runtime.config import RuntimeConfig, TextConfig, VisionConfig

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}


@dataclass(frozen=True)
class Hardware:
    """Roofline rates: memory bandwidth (B/s) and dense matmul FLOP/s per precision."""

    name: str
    bandwidth: float
    flops: dict[str, float]


THOR = Hardware("Jetson AGX Thor T5000", 273e9, {"fp16": 258e12, "bf16": 258e12, "fp8": 517e12})  # perf_anchors §2


def text_layer_params(t: TextConfig) -> int:
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    attn = t.hidden_size * q + 2 * t.hidden_size * kv + q * t.hidden_size + 2 * t.head_dim  # + q/k norms
    return attn + 3 * t.hidden_size * t.intermediate_size + 2 * t.hidden_size


def vision_params(v: VisionConfig) -> int:
    h, i = v.hidden_size, v.intermediate_size
    block = (3 * h * h + 3 * h) + (h * h + h) + (i * h + i) + (h * i + h) + 4 * h
    merged = h * v.spatial_merge_size**2

    def merger(norm: int) -> int:
        return 2 * norm + merged * merged + merged + v.out_hidden_size * merged + v.out_hidden_size

    patch = h * v.patch_dim + h + v.num_position_embeddings * h
    return v.depth * block + patch + merger(h) + len(v.deepstack_visual_indexes) * merger(merged)


@dataclass(frozen=True)
class ParamCounts:
    vision: int
    text_layers: int  # decoder layers + final norm
    embed: int
    lm_head: int
    expert: int  # expert layers + final norm (action projections are < 0.1% and left out)

    @property
    def text_engine(self) -> int:
        """Weights inside one text engine (the merged `text` engine, or each of `prefill` and `decode`)."""
        return self.text_layers + self.embed + self.lm_head


def param_counts(cfg: RuntimeConfig) -> ParamCounts:
    t, e = cfg.text, cfg.expert
    return ParamCounts(
        vision=vision_params(cfg.vision),
        text_layers=t.num_hidden_layers * text_layer_params(t) + t.hidden_size,
        embed=t.vocab_size * t.hidden_size,
        lm_head=t.vocab_size * t.hidden_size,
        expert=e.num_hidden_layers * text_layer_params(e) + e.hidden_size,
    )


def kv_bytes_per_token(cfg: RuntimeConfig, dtype: str = "fp16") -> int:
    t = cfg.text
    return 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * BYTES[dtype]


TEXT_ENGINES = ("merged", "separate")


def memory_budget(
    cfg: RuntimeConfig, weights: str = "fp16", kv: str = "fp16", io: str = "fp32", text_engines: str = "merged"
) -> dict[str, float]:
    """Bytes the deployment holds on Thor's unified memory (engines, KV, I/O buffers + staging).

    `merged`: one text engine (the weights once); `separate`: prefill and decode engines (twice).
    TensorRT's activation memory (one arena shared by every context, the largest need) is not included.
    """
    if text_engines not in TEXT_ENGINES:
        raise ValueError(f"text_engines must be one of {TEXT_ENGINES}, got {text_engines!r}")
    p, wb, ib = param_counts(cfg), BYTES[weights], BYTES[io]
    k, d, v = cfg.max_candidates, cfg.text.hidden_size, cfg.text.vocab_size
    n_img, mv, nds = 16, cfg.tokens_per_image, cfg.num_deepstack
    kv_token = kv_bytes_per_token(cfg, kv)
    io_bytes = ib * (
        n_img * cfg.patches_per_image * cfg.vision.patch_dim  # vision input
        + (1 + nds) * n_img * mv * d * 2  # vision outputs + prefill image inputs
        + k * v * 2  # prefill / decode logits
        + 3 * cfg.prefix_capacity * 2 * 3  # ids + positions (int64 ~ 2 fp32), prefill
    )
    text = (
        {"engine_text": p.text_engine * wb} if text_engines == "merged"
        else {"engine_prefill": p.text_engine * wb, "engine_decode": p.text_engine * wb}
    )
    out: dict[str, float] = {
        "engine_vision": p.vision * wb,
        **text,
        "engine_expert_step": p.expert * wb,
        "kv_prefix": cfg.prefix_buffer_tokens * kv_token,
        "kv_suffix": k * cfg.suffix_capacity * kv_token,
        "io_buffers_and_pinned_staging": 2 * io_bytes,
    }
    if cfg.guidance:  # navigation guidance: the extend engine (one more copy of the decoder weights, without
        # the LM head, in either arrangement), the unguided suffix rows and the expert's gathered 2K-row suffix
        out["engine_extend"] = (p.text_layers + p.embed) * wb
        out["kv_guidance_suffixes"] = 3 * k * cfg.suffix_capacity * kv_token
    out["total"] = sum(out.values())
    return out


def prefill_scores_bytes(cfg: RuntimeConfig, prompt_tokens: int, text_engines: str = "merged", dtype: str = "fp32"
                         ) -> int:
    """The largest attention score tensor of the prefill, per layer (an activation, reused by the layers):
    merged = the whole prompt against itself and the (hidden) suffix slots; separate = one query block
    against the keys up to it. A fused attention kernel never writes it; the unfused graph does."""
    t = cfg.text
    if text_engines == "merged":
        return t.num_attention_heads * prompt_tokens * (prompt_tokens + cfg.suffix_capacity) * BYTES[dtype]
    n = cfg.prefill_query_blocks
    block = -(-prompt_tokens // n)
    return t.num_attention_heads * block * block * n * BYTES[dtype]


@dataclass(frozen=True)
class TickShape:
    candidates: int = 6
    prompt_tokens: int = 3086  # measured Alpamayo prompt (perf_anchors.md §0)
    decode_steps: int = 20  # ~16 CoC tokens + control tokens (perf_anchors.md §0)
    euler_steps: int = 10
    new_images: int = 4  # steady state: one new frame per camera (DESIGN.md §4.1)
    guidance: bool = False  # Alpamayo 1.5 navigation guidance: one extend call, 2K expert rows
    guidance_tail_tokens: int = 26  # the prompt after the route span (instruction + assistant prefix)


def _stage(bytes_moved: float, flops: float, precision: str, hw: Hardware) -> dict[str, Any]:
    t_mem, t_flop = bytes_moved / hw.bandwidth, flops / hw.flops[precision]
    return {
        "bytes": bytes_moved,
        "flops": flops,
        "ms": 1e3 * max(t_mem, t_flop),
        "bound": "memory" if t_mem >= t_flop else "compute",
    }


def latency_bounds(
    cfg: RuntimeConfig, shape: TickShape, vlm: str = "fp16", expert: str = "fp16", kv: str = "fp16",
    hw: Hardware = THOR, text_engines: str = "merged",
) -> dict[str, Any]:
    p, t, e, v = param_counts(cfg), cfg.text, cfg.expert, cfg.vision
    n = cfg.prefill_query_blocks
    text_share = 2.0 if text_engines == "merged" else (n + 1) / n  # of the causal half s²/2
    kv_token = kv_bytes_per_token(cfg, kv)
    wb_vlm, wb_exp = BYTES[vlm], BYTES[expert]
    k, s, w = shape.candidates, shape.prompt_tokens, cfg.n_waypoints
    q_width = t.num_attention_heads * t.head_dim
    # vision: per image, Tv patches through the blocks, Mv tokens through the mergers
    tv, mv = cfg.patches_per_image, cfg.tokens_per_image
    block_params = vision_params(v) - (vision_params(v.__class__(**{**asdict(v), "depth": 0})))
    vis_flops = (
        2 * block_params * tv + 4 * v.depth * tv * tv * v.hidden_size + 2 * (p.vision - block_params) * mv
    )
    vision = _stage(p.vision * wb_vlm, shape.new_images * vis_flops, vlm, hw)
    # prefill: linear layers on every prompt token + causal attention (the merged text engine computes the
    # whole square and masks it: 2x the causal half; the separate prefill engine (n+1)/2n of it)
    pre_flops = 2 * p.text_layers * s + 2 * t.num_hidden_layers * s * s * q_width * text_share + 2 * p.lm_head
    prefill = _stage((p.text_layers + p.lm_head) * wb_vlm + s * kv_token, pre_flops, vlm, hw)
    # decode step: all text weights + the prompt KV, read once for the K rows (shared prefix), + the
    # suffix KV (fixed capacity, read in place; only the new token's K/V is written)
    suffix = k * cfg.suffix_capacity * kv_token
    dec_bytes = (p.text_layers + p.lm_head) * wb_vlm + s * kv_token + suffix
    decode_step = _stage(dec_bytes, 2 * (p.text_layers + p.lm_head) * k, vlm, hw)
    # Euler step: all expert weights + prefix KV once + suffix KV, K x W action tokens
    # (with guidance: 2K rows, both suffixes; the extend call runs the decoder once over K rows of the
    # unguided tail + reasoning, reading the prompt KV once)
    rows = 2 * k if shape.guidance else k
    e_q = e.num_attention_heads * e.head_dim
    exp_flops = 2 * p.expert * rows * w + 4 * e.num_hidden_layers * rows * w * (s + shape.decode_steps + w) * e_q
    euler_step = _stage(p.expert * wb_exp + s * kv_token + suffix * rows // k, exp_flops, expert, hw)
    ext_tokens = k * (shape.guidance_tail_tokens + shape.decode_steps) if shape.guidance else 0
    ext_flops = 2 * p.text_layers * ext_tokens + 4 * t.num_hidden_layers * ext_tokens * s * q_width
    extend = _stage((p.text_layers * wb_vlm + s * kv_token + ext_tokens * kv_token) if ext_tokens else 0.0,
                    ext_flops, vlm, hw)
    total = (
        vision["ms"]
        + prefill["ms"]
        + shape.decode_steps * decode_step["ms"]
        + extend["ms"]
        + shape.euler_steps * euler_step["ms"]
    )
    return {
        "vision": vision, "prefill": prefill, "decode_step": decode_step, "extend": extend, "euler_step": euler_step,
        "decode_total_ms": shape.decode_steps * decode_step["ms"], "expert_total_ms": shape.euler_steps * euler_step["ms"],
        "tick_ms": total, "shape": asdict(shape), "precision": {"vlm": vlm, "expert": expert, "kv": kv},
        "text_engines": text_engines,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tensorrt-budget", description=__doc__.splitlines()[0])
    ap.add_argument(
        "model_dir", nargs="?", default=None, help="default: the released Alpamayo-R1 dims (config defaults)"
    )
    ap.add_argument("--model-type", default=None, help="with no MODEL_DIR: alpamayo1_5 for Alpamayo 1.5's "
                    "capacities and navigation guidance (same dims as R1)")
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--text-engines", choices=TEXT_ENGINES, default="merged",
                    help="the build-engines arrangement (merged: the text weights once)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from alpamayo_ros.runtime.config import config_from_dict, load_config

    cfg = load_config(args.model_dir) if args.model_dir else (
        config_from_dict({"model_type": args.model_type}) if args.model_type else RuntimeConfig())
    p = param_counts(cfg)
    shape = TickShape(candidates=args.candidates)
    arrangement = args.text_engines
    report: dict[str, Any] = {
        "params": {**asdict(p), "text_engine": p.text_engine},
        "text_engines": arrangement,
        # prefill + decode: once merged, twice separate; the extend engine (1.5's guidance) holds one more
        "text_weight_copies": (1 if arrangement == "merged" else 2) + (1 if cfg.guidance else 0),
        "kv_bytes_per_token_fp16": kv_bytes_per_token(cfg),
        "memory_fp16": memory_budget(cfg, text_engines=arrangement),
        "memory_fp8_weights": memory_budget(cfg, weights="fp8", text_engines=arrangement),
        "memory_fp16_other_arrangement": memory_budget(
            cfg, text_engines="separate" if arrangement == "merged" else "merged"),
        "prefill_scores_bytes_per_layer_fp32": prefill_scores_bytes(cfg, shape.prompt_tokens, arrangement),
        "latency_fp16": latency_bounds(cfg, shape, text_engines=arrangement),
        "latency_fp8_vlm_fp16_expert": latency_bounds(cfg, shape, vlm="fp8", text_engines=arrangement),
        "latency_fp8_all": latency_bounds(cfg, shape, vlm="fp8", expert="fp8", text_engines=arrangement),
    }
    if cfg.guidance:
        report["latency_fp16_navigation_guidance"] = latency_bounds(cfg, replace(shape, guidance=True),
                                                                    text_engines=arrangement)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("params (B): " + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in report["params"].items()))
    print(f"KV bytes/token (fp16): {report['kv_bytes_per_token_fp16']}")
    extend = (f"; one of them the extend engine's (navigation guidance, {(p.text_layers + p.embed) / 1e9:.3f} B: "
              f"no LM head)") if cfg.guidance else ""
    print(f"text engines: {arrangement} -> {report['text_weight_copies']} copy(ies) of the text weights "
          f"({p.text_engine / 1e9:.3f} B params each{extend}); prefill score tensor per layer (fp32, if unfused): "
          f"{report['prefill_scores_bytes_per_layer_fp32'] / 1e9:.2f} GB")
    for key in ("memory_fp16", "memory_fp8_weights", "memory_fp16_other_arrangement"):
        print(f"{key}: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in report[key].items()))
    for key in [k for k in report if k.startswith("latency_")]:
        lat = report[key]
        stages = ", ".join(
            f"{s} {lat[s]['ms']:.1f} ms ({lat[s]['bound']})"
            for s in ("vision", "prefill", "decode_step", "extend", "euler_step") if lat[s]["flops"] or s != "extend"
        )
        print(
            f"{key}: {stages}; decode x{shape.decode_steps} {lat['decode_total_ms']:.0f} ms, expert x{shape.euler_steps} {lat['expert_total_ms']:.0f} ms, tick >= {lat['tick_ms']:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
