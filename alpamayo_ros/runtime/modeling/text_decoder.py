"""Qwen3-VL text decoder: embeddings, pre-norm layers with q/k-norm and MRoPE, final norm, lm_head.

Layers expose `project_qkv` and `finish` around attention so that the graphs (prefill, decode,
expert) can decide where K/V are read from and written to; `layer.forward` is the plain version.
"""

from __future__ import annotations

import torch
from torch import nn

from alpamayo_ros.runtime.config import TextConfig
from alpamayo_ros.runtime.modeling.attention import (
    RMSNorm,
    apply_rope,
    attention,
    mrope_axis_selector,
    mrope_cos_sin,
    text_inv_freq,
)


class TextAttention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scaling = cfg.head_dim**-0.5
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)  # per head, before RoPE
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)


class TextMLP(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm Qwen3 layer: h += o(attn(norm(h))); h += mlp(norm(h))."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = TextAttention(cfg)
        self.mlp = TextMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def project_qkv(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, T, hidden) -> q (B, Hq, T, D), k, v (B, Hkv, T, D); q/k normed and rotated."""
        a = self.self_attn
        x = self.input_layernorm(h)
        b, t, _ = x.shape
        q = a.q_norm(a.q_proj(x).view(b, t, a.num_heads, a.head_dim)).transpose(1, 2)
        k = a.k_norm(a.k_proj(x).view(b, t, a.num_kv_heads, a.head_dim)).transpose(1, 2)
        v = a.v_proj(x).view(b, t, a.num_kv_heads, a.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual + o_proj, then the MLP block."""
        h = h + self.self_attn.o_proj(attn)
        return h + self.mlp(self.post_attention_layernorm(h))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Plain attention over one K/V (the reference path); graphs use modeling.attention directly."""
        return attention(q, k, v, mask, self.self_attn.scaling)


class RotaryMRoPE(nn.Module):
    """Interleaved MRoPE tables (spec §1.3); equal axes reduce to plain 1-D RoPE."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if not cfg.mrope_interleaved:
            raise ValueError("only interleaved MRoPE (Qwen3-VL) is implemented")
        self.register_buffer("inv_freq", text_inv_freq(cfg.head_dim, cfg.rope_theta), persistent=False)
        self.register_buffer("axis_onehot", mrope_axis_selector(cfg.head_dim, cfg.mrope_section), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mrope_cos_sin(position_ids, self.inv_freq, self.axis_onehot)


class TextModel(nn.Module):
    """`vlm.model.language_model.*`: embed_tokens, layers, norm."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryMRoPE(cfg)
