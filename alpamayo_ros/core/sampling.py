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
    token). Only the head is sorted when it already holds ≥ top_p of the mass.
    """
    n = p.shape[0]
    m = min(n, 256)
    while True:
        head = np.argpartition(-p, m - 1)[:m] if m < n else np.arange(n)
        head = head[np.argsort(-p[head], kind="stable")]
        before = np.concatenate([[0.0], np.cumsum(p[head])[:-1]])
        if m == n or before[-1] + p[head[-1]] >= top_p:
            keep = head[before < top_p]
            return keep if keep.size else head[:1]
        m = min(n, m * 8)


def sample_tokens(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.6, top_p: float = 0.98,
                  masked_range: tuple[int, int] | None = None) -> np.ndarray:
    """One token per row of ``logits`` (K, V); ``masked_range`` = (start, end) of the ``<i*>`` ids."""
    z = np.array(logits, dtype=np.float32, copy=True, ndmin=2)
    if masked_range is not None:
        mask_traj_tokens(z, *masked_range)
    p = top_p_probs(z, temperature, top_p)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cdf[:, -1]
    ids = np.array([np.searchsorted(cdf[r], u[r], side="right") for r in range(p.shape[0])], dtype=np.int64)
    return np.minimum(ids, p.shape[1] - 1)


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
