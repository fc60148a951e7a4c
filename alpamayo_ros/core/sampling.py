"""Reasoning sampling (spec §4): ``<i*>`` mask, temperature + top-p, the stop rule, CoC extraction.

Semantics follow HF ``generate`` as configured by the reference: the ``<i*>`` logits are set to −inf,
then scores are divided by the temperature, then top-p removes the low tail whose ascending
cumulative probability is ≤ 1 − top_p (always keeping the most likely token), then one token is
drawn per row. Randomness comes from a ``numpy.random.Generator``, so a seed reproduces a run
(torch's RNG stream is not reproduced: sampled texts differ from PyTorch's for the same seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .model_config import SamplingConfig, TokenLayout


class AlpamayoTokenizerLike(Protocol):
    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str: ...


def mask_traj_tokens(logits: np.ndarray, start: int, end: int) -> np.ndarray:
    """Set the scores of ids [start, end) (all ``<i*>``) to −inf, in place; returns ``logits``."""
    logits[..., start:end] = -np.inf
    return logits


def top_p_probs(logits: np.ndarray, temperature: float = 0.6, top_p: float = 0.98) -> np.ndarray:
    """Sampling distribution (K, V) float64 after temperature and top-p, each row summing to 1."""
    z = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (greedy decoding is argmax of the logits)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    z = z / np.float32(temperature)
    m = z.max(axis=1, keepdims=True)
    if not np.all(np.isfinite(m)):
        raise ValueError("a row of logits has no finite entry")
    p = np.exp((z - m).astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    if top_p >= 1.0:
        return p
    out = np.zeros_like(p)
    for r in range(p.shape[0]):
        keep = _top_p_keep(p[r], top_p)
        out[r, keep] = p[r, keep] / p[r, keep].sum()
    return out


def _top_p_keep(p: np.ndarray, top_p: float) -> np.ndarray:
    """Indices kept by top-p: token i stays if the mass strictly above it (descending) is < top_p.

    That equals HF's rule (remove where the ascending inclusive cumsum ≤ 1 − top_p, keep the top
    token); equal probabilities are ordered by token id. Only the head is sorted when it already
    holds ≥ top_p of the mass.
    """
    n = p.shape[0]
    m = min(n, 256)
    while True:
        head = np.argpartition(-p, m - 1)[:m] if m < n else np.arange(n)
        head = head[np.lexsort((head, -p[head]))]
        before = np.concatenate([[0.0], np.cumsum(p[head])[:-1]])
        if m == n or before[-1] + p[head[-1]] >= top_p:
            keep = head[before < top_p]
            return keep if keep.size else head[:1]
        m = min(n, m * 8)


def sample_tokens(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.6, top_p: float = 0.98,
                  masked_range: tuple[int, int] | None = None) -> np.ndarray:
    """One token per row of ``logits`` (K, V); ``masked_range`` = (start, end) of the ``<i*>`` ids.

    Draws one uniform per row from ``rng`` (``rng.random(K)``), then ``sample_with_uniforms``.
    """
    z = np.atleast_2d(np.asarray(logits))
    return sample_with_uniforms(z, np.asarray(rng.random(z.shape[0])), temperature, top_p, masked_range)


# Top-p over a 155k vocabulary without sorting it (docs/runtime.md §4.1).
#
# Candidates: tokens with d = z/T − max(z/T) ≥ ln((1 − top_p)/V). The others weigh less than
# (1 − top_p)·Z/V each (Z ≥ 1 is the sum of all weights exp(d)), so together at most (1 − top_p) of
# the mass: top-p removes every one of them. Peaked rows have few candidates: their weights are
# computed in float64 (as `top_p_probs` does), sorted, and the draw walks them in index order. The
# rest of the mass only enters through Z, bounded by a count below a cut and computed exactly (float32
# exp, float64 sum) only when the bound leaves a keep/remove decision open. Flat rows (many
# candidates): float32 weights of the whole row; the boundary weight is bracketed from a sorted 1/32
# sample, checked exactly against the row's mass, and only the bracket is sorted; the draw walks
# 1024-token block sums (float64) in index order.
_CANDIDATES_MAX = 4096
_BLOCK = 1024
_SAMPLE_STRIDE = 32
_TIER_STEP = 9.2  # each tier lowers the cut by a factor 1e4 in weight


def sample_with_uniforms(logits: np.ndarray, uniforms: np.ndarray, temperature: float = 0.6, top_p: float = 0.98,
                         masked_range: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse-CDF draw per row: the first token, in index order, whose cumulative top-p probability exceeds u.

    The same distribution, and the same token for the same uniform, as ``top_p_probs`` + ``np.cumsum``
    + ``np.searchsorted`` over the vocabulary (float rounding aside: flat rows use float32 weights summed
    in float64), in O(V) float32 passes instead of a softmax and sort of the whole vocabulary.
    """
    _check_sampling_args(temperature, top_p)
    z = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    u = np.asarray(uniforms, dtype=np.float64).reshape(-1)
    if u.shape[0] != z.shape[0]:
        raise ValueError(f"{z.shape[0]} rows of logits but {u.shape[0]} uniforms")
    rows = _ScaledRows(z, np.float32(temperature), masked_range)
    out = np.empty(z.shape[0], dtype=np.int64)
    if top_p >= 1.0:
        for r in range(z.shape[0]):
            out[r] = _draw_in_blocks(rows.weights(r), u[r])
        return out
    cut = np.log((1.0 - top_p) / z.shape[1])
    candidates = rows.at_least(cut)
    for r in range(z.shape[0]):
        if np.count_nonzero(candidates[r]) <= _CANDIDATES_MAX:
            out[r] = _draw_peaked(rows, r, np.flatnonzero(candidates[r]), cut, top_p, u[r])
        else:
            out[r] = _draw_flat(rows.weights(r), top_p, u[r])
    return out


def _check_sampling_args(temperature: float, top_p: float) -> None:
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (greedy decoding is argmax of the logits)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


class _ScaledRows:
    """d = z/T − max(z/T) of each row, computed lazily (float32, the `<i*>` range at −inf)."""

    def __init__(self, z: np.ndarray, t: np.float32, masked_range: tuple[int, int] | None) -> None:
        self.z, self.t = z, t
        self.lo, self.hi = masked_range if masked_range is not None else (0, 0)
        m = np.full(z.shape[0], -np.inf, dtype=np.float32)
        for part in (z[:, : self.lo], z[:, self.hi:]) if self.hi > self.lo else (z,):
            if part.shape[1]:
                m = np.maximum(m, part.max(axis=1))
        if not np.all(np.isfinite(m)):
            raise ValueError("a row of logits has no finite entry")
        self.m_t = (m / t).astype(np.float32)  # = max(z/T): division by T > 0 is monotone

    @property
    def unmasked(self) -> int:
        return self.z.shape[1] - (self.hi - self.lo)

    def at_least(self, d_min: float, r: int | slice = slice(None)) -> np.ndarray:
        """Bool mask of rows `r`: d ≥ d_min, compared on z with a small slack (a superset; exact d decides)."""
        m_t = np.asarray(self.m_t[r], dtype=np.float64)
        z_min = ((m_t + d_min - 1e-4 * (1.0 + np.abs(m_t))) * float(self.t)).astype(np.float32)
        mask = self.z[r] >= (z_min[..., None] if z_min.ndim else z_min)
        mask[..., self.lo:self.hi] = False
        return mask

    def d(self, r: int, idx: np.ndarray) -> np.ndarray:
        """float32 d of row r at idx, bit-identical to the whole-row computation."""
        return (self.z[r, idx] / self.t) - self.m_t[r]

    def weights(self, r: int) -> np.ndarray:
        """float32 exp(d) of row r, 0 on the masked range."""
        w = self.z[r] / self.t
        w -= self.m_t[r]
        w[self.lo:self.hi] = -np.inf
        return np.exp(w, out=w)


def _draw_peaked(rows: _ScaledRows, r: int, idx: np.ndarray, cut: float, top_p: float, u: float) -> int:
    """Token of row r, whose top-p set lies within the few candidates `idx` (d ≥ cut)."""
    d = rows.d(r, idx)
    order = _descending(np.abs(d), idx, ascending_values=True)  # small |d| = large weight; ties by index
    w = np.exp(d.astype(np.float64))  # float64 weights, as in top_p_probs
    above = np.cumsum(w[order]) - w[order]
    known, outside = w.sum(), rows.unmasked - idx.size
    # Z lies in [known, known + outside·e^cut]: lower the cut (exact weights of a larger set) until every
    # keep/remove decision is the same at both ends, or sum the rest of the row exactly.
    while True:
        keep = above < top_p * known
        if np.array_equal(keep, above < top_p * (known + outside * np.exp(cut))):
            break
        cut -= _TIER_STEP
        tier = np.flatnonzero(rows.at_least(cut, r)) if cut > -100.0 else None
        if tier is None or tier.size > 4 * _CANDIDATES_MAX:
            full = rows.weights(r)
            keep = above < top_p * (w.sum() + full.sum(dtype=np.float64) - full[idx].sum(dtype=np.float64))
            break
        known, outside = np.exp(rows.d(r, tier).astype(np.float64)).sum(), rows.unmasked - tier.size
    kept = np.sort(order[keep])  # the most likely token is always kept (nothing lies above it)
    cdf = np.cumsum(w[kept])
    return int(idx[kept][min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), kept.size - 1)])


def _draw_flat(w: np.ndarray, top_p: float, u: float) -> int:
    """Token of a row with many candidates, from its float32 weights: the top-p boundary is bracketed
    from a sample, checked against the row's exact masses (else the bracket is the whole row)."""
    total = _block_sums(w).sum()
    threshold = top_p * total
    floor = float((1.0 - top_p) * total / w.shape[0] * (1.0 - 1e-6))  # every token below is removed
    guess_hi, guess_lo = _bracket(w, total - threshold)
    for hi, lo in ((guess_hi, max(guess_lo, floor)), (np.inf, floor)):
        above = w > np.float32(hi)
        kept = w * above
        kept_blocks = _block_sums(kept)
        mass_above = kept_blocks.sum()
        members = np.flatnonzero((w >= np.float32(lo)) ^ above)
        member_w = w[members].astype(np.float64)
        if mass_above < threshold <= mass_above + member_w.sum():
            break
    order = _descending(w[members], members)
    before = mass_above + np.cumsum(member_w[order]) - member_w[order]
    chosen = np.sort(order[before < threshold])
    kept[members[chosen]] = w[members[chosen]]
    np.add.at(kept_blocks, members[chosen] // _BLOCK, member_w[chosen])
    return _draw_in_blocks(kept, u, kept_blocks)


def _descending(values: np.ndarray, idx: np.ndarray, ascending_values: bool = False) -> np.ndarray:
    """Positions of non-negative float32 `values` by decreasing value (increasing if `ascending_values`),
    ties by increasing `idx`: one int64 sort of (float bits, index) keys."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32).astype(np.int64)
    if not ascending_values:
        bits = 0x7F800000 - bits  # float32 bit patterns of values >= 0 are monotone
    pos = np.arange(idx.size, dtype=np.int64)
    shift = max(int(idx.size).bit_length(), 1)
    return np.sort((bits << shift) | pos) & ((1 << shift) - 1)


def _bracket(w: np.ndarray, removed_mass: float) -> tuple[float, float]:
    """(hi, lo) weights around the top-p boundary, from a sorted strided sample of the row: where the
    sample's estimate of the light tail's mass crosses `removed_mass` ± 4 standard errors."""
    sample = np.sort(w[::_SAMPLE_STRIDE]).astype(np.float64)
    tail = np.cumsum(sample) * _SAMPLE_STRIDE
    k = int(np.searchsorted(tail, removed_mass))
    spread = 4.0 * _SAMPLE_STRIDE * np.sqrt(np.sum(sample[:k] ** 2))
    k_lo = int(np.searchsorted(tail, removed_mass - spread))
    k_hi = int(np.searchsorted(tail, removed_mass + spread, side="right"))
    return (float(sample[k_hi]) if k_hi < sample.size else np.inf), float(sample[max(k_lo - 1, 0)])


def _block_sums(w: np.ndarray) -> np.ndarray:
    return np.add.reduceat(w, np.arange(0, w.shape[0], _BLOCK), dtype=np.float64)


def _draw_in_blocks(w: np.ndarray, u: float, blocks: np.ndarray | None = None) -> int:
    """First index whose cumulative weight (index order, float64) exceeds u·Σw, via block sums."""
    cum = np.cumsum(_block_sums(w) if blocks is None else blocks)
    target = u * cum[-1]
    b = min(int(np.searchsorted(cum, target, side="right")), cum.size - 1)
    seg = w[b * _BLOCK: (b + 1) * _BLOCK]
    c = (cum[b - 1] if b else 0.0) + np.cumsum(seg, dtype=np.float64)
    j = int(np.searchsorted(c, target, side="right"))
    if j < seg.size and seg[j] > 0:
        return b * _BLOCK + j
    nonzero = np.flatnonzero(w[: b * _BLOCK + min(j, seg.size - 1) + 1])  # rounding at the block's end
    return int(nonzero[-1])


@dataclass
class StopRule:
    """When a batch of K rows stops generating (spec §4).

    * ``eos_id`` (``<|traj_future_start|>``): once every row has emitted it, one more token is generated
      and then the whole batch stops (so the KV cache holds ``<|traj_future_start|>``).
    * ``hf_eos_ids`` (HF's default EOS ``<|im_end|>``): a row that emits one is finished; its later
      tokens become ``pad_id``; the batch stops when every row is finished.
    * ``max_new_tokens``: the batch stops after that many tokens.
    """

    batch: int
    eos_id: int
    max_new_tokens: int = 256
    hf_eos_ids: Sequence[int] = ()
    pad_id: int = 151643
    n_generated: int = 0
    stopped: bool = False
    stop_reason: str = ""
    eos_seen: np.ndarray = field(init=False)
    finished: np.ndarray = field(init=False)
    _armed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_new_tokens < 1:
            raise ValueError("batch and max_new_tokens must be >= 1")
        self.eos_seen = np.zeros(self.batch, dtype=bool)
        self.finished = np.zeros(self.batch, dtype=bool)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Register one sampled token per row; returns the tokens to append (pad for finished rows)."""
        if self.stopped:
            raise RuntimeError("StopRule.step called after the batch stopped")
        tok = np.asarray(tokens, dtype=np.int64).reshape(-1).copy()
        if tok.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} tokens, got {tok.shape[0]}")
        tok[self.finished] = self.pad_id
        self.n_generated += 1
        if len(self.hf_eos_ids):
            self.finished |= np.isin(tok, np.asarray(self.hf_eos_ids, dtype=np.int64))
        self.eos_seen |= tok == self.eos_id
        if self._armed:
            self._stop("eos+1")
        elif self.eos_seen.all():
            self._armed = True
        if not self.stopped and self.finished.all():
            self._stop("hf_eos")
        if not self.stopped and self.n_generated >= self.max_new_tokens:
            self._stop("max_length")
        return tok

    def _stop(self, reason: str) -> None:
        self.stopped = True
        self.stop_reason = reason


def make_stop_rule(layout: TokenLayout, cfg: SamplingConfig, batch: int) -> StopRule:
    """The reference stop rule for K rows: EOS ``<|traj_future_start|>``, HF EOS from ``cfg.hf_eos_keys``."""
    return StopRule(batch=batch, eos_id=layout.traj_future_start, max_new_tokens=cfg.max_generation_length,
                    hf_eos_ids=tuple(layout.special_id(k) for k in cfg.hf_eos_keys), pad_id=layout.pad)


def sample_step(logits: np.ndarray, rng: np.random.Generator, layout: TokenLayout, cfg: SamplingConfig) -> np.ndarray:
    """One decode step of the reference sampler: ``<i*>`` masked, temperature, top-p."""
    return sample_tokens(logits, rng, cfg.temperature, cfg.top_p,
                         masked_range=(layout.traj_token_start_idx, layout.traj_token_end_idx))


def replace_padding_after_eos(sequences: np.ndarray, eos_id: int, pad_id: int) -> np.ndarray:
    """Copy of ``sequences`` (B, L) where every token after a row's first ``eos_id`` is ``pad_id``."""
    seqs = np.array(sequences, dtype=np.int64, copy=True, ndmin=2)
    hit = seqs == eos_id
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), seqs.shape[1])
    seqs[np.arange(seqs.shape[1])[None, :] > first[:, None]] = pad_id
    return seqs


def reasoning_from_ids(tokenizer: AlpamayoTokenizerLike, prompt_ids: np.ndarray, generated: np.ndarray) -> list[str]:
    """CoC text per row from the prompt ids (S,) and generated ids (K, G), as the reference extracts it."""
    gen = np.atleast_2d(np.asarray(generated, dtype=np.int64))
    prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    return [extract_reasoning(tokenizer.decode(np.concatenate([prompt, row]))) for row in gen]


def extract_reasoning(text: str, start: str = "<|cot_start|>", end: str = "<|cot_end|>") -> str:
    """Text between the last ``start`` before the first ``end`` and that ``end``, stripped; "" if no ``end``.

    ``text`` is the decoded full sequence (prompt included, special tokens kept), as in the reference.
    """
    if end not in text:
        return ""
    prefix = text.split(end, 1)[0]
    return prefix.split(start)[-1].strip()
