"""Norms, rotary embeddings and the one attention function every graph uses.

`multi_part_attention` scores queries against several K/V *parts* (the shared prompt prefix stored
once with batch 1, the per-candidate suffix, the expert's own tokens) and takes one softmax over
the concatenated scores. Caches are never concatenated or repeated: a part whose batch is 1 is
broadcast by MatMul, and grouped-query heads are broadcast the same way (no repeat_kv copy).
"""

from __future__ import annotations

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
    """x (B, H, T, D); cos/sin (B, T, D)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def multi_part_attention(
    q: torch.Tensor,
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    scaling: float,
) -> torch.Tensor:
    """Attention of q over the union of K/V parts.

    q: (B, Hq, T, D). Each part: k, v (Bp, Hkv, C, D) with Bp in {1, B}, and an additive mask
    broadcastable to (B, T, C) given as (Bm, C) or (Bm, T, C), or None. Returns (B, T, Hq*D).
    """
    b, hq, t, d = q.shape
    hkv = parts[0][0].shape[1]
    g = hq // hkv
    qg = q.reshape(b, hkv, g, t, d)
    scores = []
    for k, _v, mask in parts:
        s = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)) * scaling  # (B, Hkv, g, T, C)
        if mask is not None:
            m = mask if mask.dim() == 3 else mask.unsqueeze(1)  # (Bm, T|1, C)
            s = s + m[:, None, None, :, :]
        scores.append(s)
    sizes = [k.shape[2] for k, _v, _m in parts]  # symbolic: keeps S dynamic in export
    probs = torch.softmax(torch.cat(scores, dim=-1).float(), dim=-1).to(q.dtype)
    out = None
    for p, (_k, v, _m) in zip(torch.split(probs, sizes, dim=-1), parts, strict=True):
        o = torch.matmul(p, v.unsqueeze(2))  # (B, Hkv, g, T, D)
        out = o if out is None else out + o
    assert out is not None
    return out.reshape(b, hq, t, d).transpose(1, 2).reshape(b, t, hq * d)


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, T, T) additive causal mask."""
    idx = torch.arange(t, device=device)
    return torch.where(idx[None, :] <= idx[:, None], 0.0, MASK_VALUE).unsqueeze(0)
