"""Norms, rotary embeddings and the one attention function every graph uses.

Three attention forms, one computation: `attention` (plain, the reference path), `causal_attention`
(the prefill: causal, in query blocks so the score tensor stays a fraction of S × S) and
`cached_attention` (decode, expert: queries against several K/V *parts* — the shared prompt prefix
stored once, the per-candidate suffix, the own new tokens — with one softmax over the concatenated
scores). Caches are never concatenated or repeated; softmax runs in the compute dtype, as the
reference's SDPA does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

# Large negative additive mask value; finite so that fp16 engines do not produce NaN.
MASK_VALUE = -1.0e9


class RMSNorm(nn.Module):
    """x · rsqrt(mean(x²) + eps) · w, computed in fp32 (Qwen3 / spec §5.2)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def mrope_axis_selector(head_dim: int, mrope_section: tuple[int, int, int]) -> torch.Tensor:
    """(3, head_dim/2) one-hot: which MRoPE axis (t, h, w) drives each frequency (interleaved layout)."""
    half = head_dim // 2
    axis = torch.zeros(half, dtype=torch.long)
    for dim in (1, 2):
        axis[dim : mrope_section[dim] * 3 : 3] = dim
    return torch.nn.functional.one_hot(axis, 3).T.float()


def text_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def mrope_cos_sin(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, axis_onehot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids (3, B, T) int64 -> cos, sin (B, T, head_dim), fp32 (spec §1.3)."""
    freqs = position_ids[..., None].float() * inv_freq  # (3, B, T, half)
    freqs = (freqs * axis_onehot[:, None, None, :]).sum(0)  # pick the axis per frequency
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D); cos/sin (B, T, D), fp32 tables applied in x's dtype (as transformers' Qwen3)."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return x * cos + rotate_half(x) * sin


def _to_heads(out: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, g, T, D) -> (B, T, Hq·D), query head h = kv head · g + group (Qwen3 GQA order)."""
    b, hkv, g, t, d = out.shape
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, hkv * g * d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scaling: float
              ) -> torch.Tensor:
    """Plain attention: QKᵀ → (+ mask) → softmax → V, in the compute dtype (the reference's SDPA).

    q (B, Hq, T, D); k, v (Bk, Hkv, C, D) with Bk in {1, B}, grouped-query heads broadcast by MatMul
    (no repeat_kv copy); mask additive, broadcastable to (B, T, C) as (Bm, C) or (Bm, T, C). Returns
    (B, T, Hq·D).
    """
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    qg = q.reshape(b, hkv, hq // hkv, t, d)
    s = torch.matmul(qg * scaling, k.unsqueeze(2).transpose(-1, -2))  # (B, Hkv, g, T, C)
    if mask is not None:
        m = mask if mask.dim() == 3 else mask.unsqueeze(1)
        s = s + m[:, None, None].to(s.dtype)
    return _to_heads(torch.matmul(softmax(s), v.unsqueeze(2)))


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis accumulated in fp32, returned in the scores' dtype (transformers' eager
    attention; fused SDPA kernels also accumulate in fp32). A no-op cast for fp32 graphs."""
    return torch.softmax(scores.float(), dim=-1).to(scores.dtype)


def causal_block_masks(block: int, blocks: int, dtype: torch.dtype, device: torch.device | None = None
                       ) -> list[torch.Tensor]:
    """Additive masks of `causal_attention`: block j's queries see all earlier blocks and, causally, their own.

    (block, (j+1)·block) each; built once per prefill and shared by its layers.
    """
    idx = torch.arange(block, device=device)
    own = torch.where(idx[None, :] <= idx[:, None], 0.0, MASK_VALUE).to(dtype)  # (block, block)
    return [own if j == 0 else torch.cat([torch.zeros(block, j * block, dtype=dtype, device=device), own], dim=1)
            for j in range(blocks)]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, masks: list[torch.Tensor]
                     ) -> torch.Tensor:
    """Causal self-attention of a prompt in query blocks (prefill).

    S = n·block (the executor pads the prompt to a multiple of n = len(masks)). Query block j scores only
    the keys of blocks 0…j, so one block's score tensor is block × (j+1)·block per head (at most a 1/n
    slice of S × S) and the work is (n+1)/2n of the square. q (1, Hq, S, D), k, v (1, Hkv, S, D) ->
    (1, S, Hq·D).
    """
    block = q.shape[2] // len(masks)
    outs = []
    for j, mask in enumerate(masks):
        lo, hi = j * block, (j + 1) * block
        outs.append(attention(q[:, :, lo:hi], k[:, :, :hi], v[:, :, :hi], mask[None], scaling))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class KVPart(NamedTuple):
    """Keys/values one query batch attends to, head-major: `shared` parts are (Hkv, C, D) for all B rows
    (the prompt prefix, stored once), batched parts (Hkv, B, C, D). `mask` is additive, (B, C) or (1, C)
    for every query, (B, T, C) per query (a causal chunk), or None; `causal`: the part is the queries' own
    T tokens (C = T), query i sees keys 0…i."""

    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None = None
    causal: bool = False

    @property
    def shared(self) -> bool:
        return self.key.dim() == 3


def head_major(x: torch.Tensor) -> torch.Tensor:
    """(B, Hkv, T, D) as projected -> (Hkv, B, T, D), the layout of the KV buffers and batched parts."""
    return x.transpose(0, 1)


def cached_attention(q: torch.Tensor, parts: list[KVPart], scaling: float) -> torch.Tensor:
    """Attention of q (B, Hq, T, D) over the union of `parts` (decode, expert); returns (B, T, Hq·D).

    Every MatMul is a plain batched GEMM that reads each cache once: queries are laid out (Hkv, B·g·T, D)
    against a shared part and (Hkv, B, g·T, D) against a batched one, so the prefix is neither repeated
    per candidate nor broadcast per query group. One softmax over the concatenated *scores* (TensorRT-RTX
    builds this Concat → Softmax → Split; a shared-max variant without them failed in its Myelin compiler).
    """
    b, hq, t, d = q.shape
    hkv = parts[0].key.shape[0]
    g = hq // hkv
    qh = (q * scaling).reshape(b, hkv, g * t, d).transpose(0, 1)  # (Hkv, B, g·T, D)
    scores = []
    for part in parts:
        if part.shared:
            sc = torch.matmul(qh.reshape(hkv, b * g * t, d), part.key.transpose(-1, -2))
        else:
            sc = torch.matmul(qh, part.key.transpose(-1, -2))
        sc = sc.reshape(hkv, b, g, t, -1)
        if part.mask is not None:
            mask = part.mask[None, :, None] if part.mask.dim() == 3 else part.mask[None, :, None, None, :]
            sc = sc + mask.to(sc.dtype)
        if part.causal:  # (T, T): the own tokens see themselves and their predecessors
            sc = sc + causal_mask(t, sc.device).to(sc.dtype)[0]
        scores.append(sc)
    if len(parts) == 1:
        probs = [softmax(scores[0])]
    else:
        sizes = [part.key.shape[-2] for part in parts]  # symbolic: keeps the prefix length dynamic in export
        probs = list(torch.split(softmax(torch.cat(scores, dim=-1)), sizes, dim=-1))
    out = None
    for p, part in zip(probs, parts, strict=True):
        if part.shared:
            o = torch.matmul(p.reshape(hkv, b * g * t, -1), part.value)
        else:
            o = torch.matmul(p.reshape(hkv, b, g * t, -1), part.value)
        o = o.reshape(hkv, b, g, t, d)
        out = o if out is None else out + o
    assert out is not None
    return _to_heads(out.transpose(0, 1))


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, T, T) additive causal mask."""
    idx = torch.arange(t, device=device)
    return torch.where(idx[None, :] <= idx[:, None], 0.0, MASK_VALUE).unsqueeze(0)
