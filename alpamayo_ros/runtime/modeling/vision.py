"""Qwen3-VL vision tower for one image per batch row at a fixed patch grid.

Rows arrive in the processor's order (t, h_block, w_block, merge_y, merge_x), so every 4
consecutive rows form one 2×2 merge group. Because each batch row is one image at a known grid,
the learned position-embedding interpolation and the 2-D rotary tables are constants, and the
attention is plain full attention per row: no `cu_seqlens`, no data-dependent splits (the
reason transformers' version does not export with dynamo, feasibility §8).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from alpamayo_ros.runtime.config import VisionConfig
from alpamayo_ros.runtime.modeling.attention import rotate_half, softmax


def merge_order_hw(h: int, w: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each patch in merge-block order (block_row, block_col, in_row, in_col)."""
    rows = np.arange(h).reshape(h // merge, merge, 1, 1)
    cols = np.arange(w).reshape(1, 1, w // merge, merge)
    rr = np.broadcast_to(rows, (h // merge, merge, w // merge, merge)).transpose(0, 2, 1, 3)
    cc = np.broadcast_to(cols, (h // merge, merge, w // merge, merge)).transpose(0, 2, 1, 3)
    return rr.reshape(-1), cc.reshape(-1)


def bilinear_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear, align_corners=True resampling of a `side`-long table to `size` points."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    taps = floor.astype(np.int64)[:, None] + np.arange(2)
    weights = np.clip(1.0 - np.abs(src[:, None] - floor[:, None] - np.arange(2)), 0.0, None)
    return np.clip(taps, 0, side - 1), weights.astype(np.float32)


def position_interpolation(grid_thw: tuple[int, int, int], num_pos: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(Tv, 4) indices into the square learned table and their weights."""
    t, h, w = grid_thw
    side = int(round(num_pos**0.5))
    row, col = merge_order_hw(h, w, merge)
    ht, hw_ = bilinear_taps(row, h, side)
    wt, ww = bilinear_taps(col, w, side)
    idx = (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4)
    wts = (hw_[:, :, None] * ww[:, None, :]).reshape(-1, 4)
    return np.tile(idx, (t, 1)), np.tile(wts, (t, 1))


def vision_rope_tables(grid_thw: tuple[int, int, int], head_dim: int, merge: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial 2-D RoPE: frequencies of (row, col), each over head_dim/4, repeated to head_dim."""
    t, h, w = grid_thw
    row, col = merge_order_hw(h, w, merge)
    pos = torch.from_numpy(np.stack([row, col], axis=-1)).repeat(t, 1)  # (Tv, 2)
    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial))
    freqs = pos[..., None].float() * inv_freq  # (Tv, 2, head_dim/4)
    freqs = torch.cat((freqs[:, 0], freqs[:, 1]), dim=-1)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = (tp, p, p) on one patch row == a Linear over the flat row."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=k, stride=k, bias=True)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight.reshape(self.proj.weight.shape[0], -1)
        return torch.matmul(rows.to(w.dtype), w.t()) + self.proj.bias


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, cfg.hidden_size * 3, bias=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n, tv, e = x.shape
        qkv = self.qkv(x).reshape(n, tv, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (N, Tv, H, hd)
        c, s = cos[:, None, :], sin[:, None, :]  # rotated in fp32, back in the compute dtype (transformers)
        q = (q.float() * c + rotate_half(q.float()) * s).to(x.dtype).transpose(1, 2)
        k = (k.float() * c + rotate_half(k.float()) * s).to(x.dtype).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim**-0.5)
        out = torch.matmul(softmax(scores), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(n, tv, e))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.linear_fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.approximate = "tanh" if cfg.hidden_act == "gelu_pytorch_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(nn.functional.gelu(self.linear_fc1(x), approximate=self.approximate))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """2×2 patches -> one LLM token; the deepstack mergers normalize after the shuffle."""

    def __init__(self, cfg: VisionConfig, postshuffle_norm: bool) -> None:
        super().__init__()
        self.merged = cfg.hidden_size * cfg.spatial_merge_size**2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.merged if postshuffle_norm else cfg.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.merged, self.merged)
        self.linear_fc2 = nn.Linear(self.merged, cfg.out_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tv, e = x.shape
        if self.postshuffle_norm:
            x = self.norm(x.reshape(n, -1, self.merged))
        else:
            x = self.norm(x).reshape(n, -1, self.merged)
        return self.linear_fc2(nn.functional.gelu(self.linear_fc1(x)))


class VisionTower(nn.Module):
    """`vlm.model.visual.*`. forward: pixel rows (N, Tv, patch_dim) -> (N, Mv, D), (n_ds, N, Mv, D)."""

    def __init__(self, cfg: VisionConfig, grid_thw: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = cfg
        self.grid_thw = tuple(grid_thw)
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.hidden_size)
        self.blocks = nn.ModuleList([VisionBlock(cfg) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(
            [PatchMerger(cfg, postshuffle_norm=True) for _ in cfg.deepstack_visual_indexes]
        )
        idx, wts = position_interpolation(self.grid_thw, cfg.num_position_embeddings, cfg.spatial_merge_size)
        self.register_buffer("pos_index", torch.from_numpy(idx), persistent=False)
        self.register_buffer("pos_weight", torch.from_numpy(wts), persistent=False)
        cos, sin = vision_rope_tables(self.grid_thw, cfg.head_dim, cfg.spatial_merge_size, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, pixel_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(pixel_rows)
        pos = (self.pos_embed(self.pos_index) * self.pos_weight[:, :, None].to(x.dtype)).sum(1)
        x = x + pos
        deepstack = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, self.rope_cos, self.rope_sin)
            if i in self.config.deepstack_visual_indexes:
                j = self.config.deepstack_visual_indexes.index(i)
                deepstack.append(self.deepstack_merger_list[j](x))
        return self.merger(x), torch.stack(deepstack, dim=0)
