"""MRoPE position ids for the prompt, decode steps and the expert tokens (spec §1.3, §5.3).

Prompt (Qwen3-VL ``get_rope_index``): text tokens advance all three axes by one; an image's
``<|image_pad|>`` run with LLM grid (t, h, w) = grid_thw / (1, merge, merge) gets
(start + t_i, start + h_i, start + w_i), and the next token starts at start + max(h, w).
``rope_delta = max_position + 1 − seq_len`` (−2592 for the reference prompt).

Decode: the token at cache index i sits at position i + rope_delta on all axes.

Expert: token j of row b sits at ``j + offset_b + rope_delta`` on all axes, where offset_b is one past
the row's first ``<|traj_future_start|>`` (or the row length when it is missing). Its additive mask
(B, 1, 64, L_cache + 64) is 0 except ``finfo(float32).min`` on cache columns [offset_b, L_cache):
the tokens a row sampled after it had finished. Attention among the 64 expert tokens is non-causal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


class RopeError(ValueError):
    """input_ids and image grids disagree."""


def rope_index(input_ids: np.ndarray | Sequence[int], image_grid_thw: np.ndarray | Sequence[Sequence[int]],
               image_token_id: int = 151655, spatial_merge_size: int = 2) -> tuple[np.ndarray, int]:
    """Positions (3, S) int64 and ``rope_delta`` for one sequence (no padding)."""
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    grids = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    is_img = ids == image_token_id
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_img.astype(np.int8), [0]])))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) != len(grids):
        raise RopeError(f"{len(starts)} image token runs in input_ids but {len(grids)} image grids")
    pos = np.empty((3, ids.shape[0]), dtype=np.int64)
    cur = 0  # next position
    prev = 0  # next sequence index
    for (s, e), (t, h, w) in zip(zip(starts, ends, strict=True), grids, strict=True):
        lt, lh, lw = int(t), int(h) // spatial_merge_size, int(w) // spatial_merge_size
        if e - s != lt * lh * lw:
            raise RopeError(f"image run [{s}, {e}) has {e - s} tokens, grid {[int(t), int(h), int(w)]} needs "
                            f"{lt * lh * lw}")
        pos[:, prev:s] = np.arange(s - prev, dtype=np.int64) + cur
        cur += s - prev
        tt, hh, ww = np.meshgrid(np.arange(lt), np.arange(lh), np.arange(lw), indexing="ij")
        pos[0, s:e] = tt.reshape(-1) + cur
        pos[1, s:e] = hh.reshape(-1) + cur
        pos[2, s:e] = ww.reshape(-1) + cur
        cur += max(lh, lw)
        prev = int(e)
    pos[:, prev:] = np.arange(ids.shape[0] - prev, dtype=np.int64) + cur
    delta = int(pos.max()) + 1 - ids.shape[0] if ids.shape[0] else 0
    return pos, delta


def decode_positions(cache_index: int | np.ndarray, rope_delta: int | np.ndarray, n: int = 1) -> np.ndarray:
    """Positions (3, B, n) of n tokens starting at ``cache_index`` (scalar or (B,)), equal on all axes."""
    start = np.atleast_1d(np.asarray(cache_index, dtype=np.int64) + np.asarray(rope_delta, dtype=np.int64))
    p = start[:, None] + np.arange(n, dtype=np.int64)[None, :]
    return np.broadcast_to(p, (3, *p.shape)).copy()


def expert_offsets(sequences: np.ndarray, traj_future_start_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, one past the first ``<|traj_future_start|>`` in the full sequence (prompt + generated).

    Rows without it get ``len(row)`` (last index + 1), as the reference does (with a warning).
    Returns (offsets int64 (B,), found bool (B,)).
    """
    seqs = np.atleast_2d(np.asarray(sequences, dtype=np.int64))
    hit = seqs == traj_future_start_id
    found = hit.any(axis=1)
    offsets = np.where(found, hit.argmax(axis=1) + 1, seqs.shape[1]).astype(np.int64)
    if not found.all():
        log.warning("%d of %d rows have no <|traj_future_start|>; the expert reads their whole sequence",
                    int((~found).sum()), len(found))
    return offsets, found


def expert_positions_and_mask(offsets: np.ndarray | Sequence[int], cache_len: int, rope_delta: int | np.ndarray,
                              n_tokens: int = 64, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Expert position ids (3, B, n_tokens) int64 and additive mask (B, 1, n_tokens, cache_len + n_tokens)."""
    off = np.asarray(offsets, dtype=np.int64).reshape(-1)
    # A row without <|traj_future_start|> gets offset = len(sequence) = cache_len + 1 (reference
    # fallback): its expert tokens sit one position past the unfed last token and see the whole cache.
    if np.any(off < 0) or np.any(off > cache_len + 1):
        raise ValueError(f"expert offsets {off.tolist()} must lie in [0, cache_len + 1 = {cache_len + 1}]")
    delta = np.broadcast_to(np.asarray(rope_delta, dtype=np.int64).reshape(-1), off.shape)
    p = np.arange(n_tokens, dtype=np.int64)[None, :] + (off + delta)[:, None]
    positions = np.broadcast_to(p, (3, *p.shape)).copy()
    cols = np.arange(cache_len + n_tokens)[None, :]
    masked = (cols >= off[:, None]) & (cols < cache_len)  # (B, C)
    row: np.ndarray = np.where(masked, np.finfo(dtype).min, 0).astype(dtype)
    mask = np.ascontiguousarray(np.broadcast_to(row[:, None, None, :], (off.shape[0], 1, n_tokens, row.shape[1])))
    return positions, mask
