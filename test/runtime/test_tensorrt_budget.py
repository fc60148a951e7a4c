"""The deployment doc's memory and latency arithmetic (runtime/tensorrt/budget.py).

Parameter formulas are checked against the tensors of a real checkpoint of the same architecture
(the tiny model), and at the released dims against the independently derived figures of
shared/research/perf_anchors.md §0/§2 (6.95B decoder + 0.64B lm_head, 2.28B expert, 147,456 KV
bytes per token, ~57 ms BF16 decode step and ~184 ms expert on Thor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.runtime.config import RuntimeConfig, load_config
from alpamayo_ros.runtime.tensorrt.budget import (
    TickShape,
    kv_bytes_per_token,
    latency_bounds,
    memory_budget,
    param_counts,
)


def test_param_formulas_match_a_real_checkpoint(tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    sizes: dict[str, int] = {}
    with safe_open(str(tiny_model_dir / "model.safetensors"), "np") as f:
        for key in f.keys():
            sizes[key] = int(np.prod(f.get_slice(key).get_shape()))

    def total(prefix: str, exclude: str = "\0") -> int:
        return sum(n for k, n in sizes.items() if k.startswith(prefix) and not k.startswith(exclude))

    p = param_counts(load_config(tiny_model_dir))
    text = "vlm.model.language_model."
    assert p.vision == total("vlm.model.visual.")
    assert p.embed == total(text + "embed_tokens.")
    assert p.text_layers == total(text, exclude=text + "embed_tokens.")
    assert p.lm_head == total("vlm.lm_head.")
    assert p.expert == total("expert.")


def test_released_dims_match_the_research_anchors() -> None:
    cfg = RuntimeConfig()  # defaults = Qwen3-VL-8B text stack + Alpamayo expert (spec §8)
    p = param_counts(cfg)
    assert round(p.text_layers / 1e9, 2) == 6.95 and round(p.lm_head / 1e9, 2) == 0.64
    assert round(p.expert / 1e9, 2) == 2.28
    assert kv_bytes_per_token(cfg) == 147_456
    memory = memory_budget(cfg)
    assert memory["kv_prefix"] == cfg.prefix_buffer_tokens * 147_456 >= cfg.prefix_capacity * 147_456
    lat = latency_bounds(cfg, TickShape(candidates=6), text_engines="separate")
    assert lat["decode_step"]["bound"] == "memory" and lat["euler_step"]["bound"] == "memory"
    assert lat["prefill"]["bound"] == "compute"
    assert lat["decode_step"]["ms"] == pytest.approx(57, rel=0.05)  # perf_anchors: Thor BF16 57 ms/token
    assert lat["euler_step"]["ms"] * 10 == pytest.approx(184, rel=0.06)  # perf_anchors: 184 ms
    assert lat["prefill"]["flops"] == pytest.approx(45.7e12, rel=0.01)  # perf_anchors: ~45.7 TFLOP


def test_merged_text_engine_holds_one_copy_of_the_text_weights() -> None:
    cfg = RuntimeConfig()
    p = param_counts(cfg)
    merged, separate = memory_budget(cfg), memory_budget(cfg, text_engines="separate")
    assert merged["engine_text"] == p.text_engine * 2 and "engine_prefill" not in merged  # fp16: 16.44 GB once
    assert separate["engine_prefill"] == separate["engine_decode"] == merged["engine_text"]  # twice
    assert separate["total"] - merged["total"] == pytest.approx(16.44e9, rel=1e-3)
    assert round(merged["total"] / 1e9, 2) == 23.85 and round(separate["total"] / 1e9, 2) == 40.29
    # the merged prefill computes the whole causal square (masked): 2x the causal half of the attention
    lat_m = latency_bounds(cfg, TickShape(candidates=6))
    lat_s = latency_bounds(cfg, TickShape(candidates=6), text_engines="separate")
    attention_half = 2 * 36 * 3086**2 * 4096
    assert lat_m["prefill"]["flops"] - lat_s["prefill"]["flops"] == pytest.approx(attention_half * (2 - 8 / 7))
    assert lat_m["decode_step"] == lat_s["decode_step"]  # decode is the same computation either way
