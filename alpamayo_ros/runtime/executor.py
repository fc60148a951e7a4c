"""The executor interface (docs/runtime.md §5): executes graphs and owns buffers, decides nothing.

The orchestrator (backend-agnostic) calls these methods; torch and ONNX Runtime implement them
here, TensorRT in `tensorrt/`. Arrays crossing this interface are numpy on the host, except
`ImageFeatures`, which an executor may keep wherever it likes (e.g. device memory). `HostKVCache`
is the KV layout of docs/runtime.md §2 in host memory, shared by the torch and ONNX Runtime executors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.core.action_space import Normalization
from alpamayo_ros.runtime.config import RuntimeConfig

MASK_VALUE = -1.0e9  # additive mask for hidden keys, = modeling.attention.MASK_VALUE (no torch import here)


@dataclass
class ImageFeatures:
    """Vision output of one image: (Mv, D) merged embeddings and (n_ds, Mv, D) deepstack features."""

    embeds: np.ndarray
    deepstack: np.ndarray


class GraphExecutor(ABC):
    """One instance per backend; buffers are sized from `config` at construction."""

    name = "abstract"
    # Normalisation constants its ONNX / engine manifest recorded at export (None: not recorded); the
    # backend uses them when the model directory has no weights to read them from.
    recorded_normalization: Normalization | None = None

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config

    @abstractmethod
    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        """`vision` graph on (N, Tv, patch_dim) rows -> N ImageFeatures."""

    @abstractmethod
    def prefill(
        self,
        input_ids: np.ndarray,  # (S,) int64
        position_ids: np.ndarray,  # (3, S) int64
        features: list[ImageFeatures],
        image_token_index: np.ndarray,  # (M,) int64
    ) -> np.ndarray:
        """`prefill` graph; writes prefix KV slots [0, S) in place; returns (V,) last logits."""

    @abstractmethod
    def start_decode(self, batch: int) -> None:
        """Select a suffix KV of `batch` rows for this tick (preallocated; no zeroing needed)."""

    @abstractmethod
    def decode(
        self,
        token_ids: np.ndarray,  # (B,) int64
        position_ids: np.ndarray,  # (3, B, 1) int64
        write_index: int,
        suffix_mask: np.ndarray,  # (B, Cs) f32: 0 on the slots [0, write_index) already written
    ) -> np.ndarray:
        """`decode` graph over the prompt + suffix slots [0, write_index) + the fed token; writes the fed
        token's K/V at suffix slot `write_index`; returns (B, V) logits."""

    @abstractmethod
    def run_expert(
        self,
        x0: np.ndarray,  # (R, W, 2) f32
        steps: list[tuple[float, float]],  # (t_i, dt_i)
        position_ids: np.ndarray,  # (3, R, W) int64
        suffix_mask: np.ndarray,  # (R, Cs)
        prefix_mask: np.ndarray | None = None,  # (R, P); None: the whole prompt for every row
        row_mix: np.ndarray | None = None,  # (R, R); None: the identity
    ) -> np.ndarray:
        """`expert_step` graph len(steps) times over the read-only KV (the prompt + the suffix slots
        `suffix_mask` shows); returns x at t = 1. R = K rows, or 2K with navigation guidance: rows [K, 2K)
        read the unguided suffix rows `extend` wrote (see expert_rows)."""

    # navigation guidance (Alpamayo 1.5): executors with an `extend` graph set this
    supports_guidance = False

    def extend(
        self,
        input_ids: np.ndarray,  # (B, T) int64, B = the decode batch
        position_ids: np.ndarray,  # (3, B, T) int64
        prefix_mask: np.ndarray,  # (1, P) f32: 0 on the prompt columns these tokens see
        own_mask: np.ndarray,  # (B, T, T) f32: causal, padding hidden
    ) -> None:
        """`extend` graph: the K/V of T tokens per row over the prompt, kept as the unguided suffix rows
        (slots [0, T)) that run_expert's rows [K, 2K) read."""
        raise NotImplementedError(f"{self.name}: no extend graph (navigation guidance needs an Alpamayo 1.5 export)")

    # device sampling (docs/runtime.md §4.1): executors with a `sample` graph on the device set this
    device_sampling = False

    def decode_sampled(
        self,
        token_ids: np.ndarray,
        position_ids: np.ndarray,
        write_index: int,
        suffix_mask: np.ndarray,
        uniforms: np.ndarray,  # (B,) the host's draws for this step
        temperature: float,
        top_p: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`decode` + `sample` on the device: (B,) token ids and (B,) `covered`; a row not covered needs
        the host sampler on `last_logits()`. Only where `device_sampling` is True."""
        raise NotImplementedError(f"{self.name} samples on the host")

    def last_logits(self) -> np.ndarray:
        """(B, V) logits of the last `decode_sampled` step (downloaded only when a row needs them)."""
        raise NotImplementedError(f"{self.name} samples on the host")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release buffers/sessions."""

    @staticmethod
    def expert_extras(r: int, prefix_len: int, prefix_mask: np.ndarray | None, row_mix: np.ndarray | None
                      ) -> tuple[int, np.ndarray, np.ndarray]:
        """(K candidates, prefix mask (R, P), row mix (R, R)) of an expert call of R rows: guidance (a row
        mix given) means R = 2K; without it the whole prompt is visible and the mix is the identity."""
        if row_mix is not None and (r % 2 or row_mix.shape != (r, r)):
            raise ValueError(f"navigation guidance needs 2K expert rows and a (2K, 2K) row mix, got {r} rows and "
                             f"{row_mix.shape}")
        k = r // 2 if row_mix is not None else r
        mix = np.eye(r, dtype=np.float32) if row_mix is None else np.asarray(row_mix, dtype=np.float32)
        mask = np.zeros((r, prefix_len), np.float32) if prefix_mask is None else np.asarray(prefix_mask, np.float32)
        return k, np.ascontiguousarray(mask), np.ascontiguousarray(mix)

    @staticmethod
    def expert_rows(k: int, r: int, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Which decoded suffix row and which unguided row each of R expert rows reads: (K,) indices into
        the `batch` decoded rows (one row for K candidates in shared reasoning), then for R = 2K the
        same indices into the rows `extend` wrote."""
        if r not in (k, 2 * k):
            raise ValueError(f"{r} expert rows for {k} candidates: expected K, or 2K with navigation guidance")
        rows = np.arange(k) % batch
        return rows, (rows if r == 2 * k else None)

    def take_counters(self) -> dict[str, int]:
        """Executor-side counters of the tick so far (reset on read), e.g. suffix_kv_copies."""
        out, self._counters = getattr(self, "_counters", {}), {}
        return out

    def count(self, name: str, n: int = 1) -> None:
        counters = self.__dict__.setdefault("_counters", {})
        counters[name] = counters.get(name, 0) + n

    # shared helpers -------------------------------------------------------------------------
    def padded_ids(self, input_ids: np.ndarray) -> np.ndarray:
        """Prefill `input_ids` (1, S): the prompt padded at its end to a multiple of the prefill's query
        blocks (the causal mask hides the padding from the prompt; its K/V are not kept)."""
        p, n = int(input_ids.shape[0]), self.config.prefill_query_blocks
        ids = np.full((1, -(-p // n) * n), self.config.layout.pad, dtype=np.int64)
        ids[0, :p] = input_ids
        return ids

    @staticmethod
    def stack_features(features: list[ImageFeatures]) -> tuple[np.ndarray, np.ndarray]:
        """(M, D) embeds and (n_ds, M, D) deepstack for the prompt's images, in prompt order."""
        embeds = np.concatenate([f.embeds for f in features], axis=0)
        deepstack = np.concatenate([f.deepstack for f in features], axis=1)
        return embeds, deepstack


KV_NAMES = ("key", "value")
KV_TENSOR_PREFIXES = ("prefix_key", "prefix_value", "suffix_key", "suffix_value", "new_key", "new_value")


def layer_input_names(layers: int) -> list[str]:
    """Per-layer KV inputs of decode / expert_step, in graph input order."""
    return [f"{part}_{kind}_{i}" for part in ("prefix", "suffix") for kind in KV_NAMES for i in range(layers)]


def prefill_kv_output_names(layers: int) -> list[str]:
    """Per-layer K/V outputs of the prefill, in graph output order (after `logits`)."""
    return [f"new_{kind}_{i}" for kind in KV_NAMES for i in range(layers)]


def is_kv_tensor(name: str) -> bool:
    """A graph tensor holding KV cache entries (their dtype is the KV precision of an engine build)."""
    return name.startswith(KV_TENSOR_PREFIXES)


class HostKVCache:
    """KV buffers of docs/runtime.md §2 in host memory, allocated once at full capacity.

    Each buffer is one zeroed flat allocation; the current (padded) prompt length P or decode batch B
    selects a view of its head in the graph layout, (L, Hkv, P, Dh) / (L, Hkv, B, Cs, Dh), so every
    layer's slice `view[i]` is contiguous and goes to a graph as it is (no copy). Masked suffix slots
    keep finite values (zeros or earlier tokens), so a masked score is finite too. Models with navigation
    guidance also get the unguided suffix rows `extend` writes, in the suffix layout.
    """

    def __init__(self, config: RuntimeConfig) -> None:
        t = config.text
        self.layers, self.heads, self.head_dim = t.num_hidden_layers, t.num_key_value_heads, t.head_dim
        self.prefix_tokens, self.suffix_capacity, self.max_batch = (
            config.prefix_buffer_tokens, config.suffix_capacity, config.max_candidates)
        per_prefix = self.layers * self.heads * self.prefix_tokens * self.head_dim
        per_suffix = self.layers * self.heads * self.max_batch * self.suffix_capacity * self.head_dim
        self._prefix = {kind: np.zeros(per_prefix, dtype=np.float32) for kind in KV_NAMES}
        self._suffix = {kind: np.zeros(per_suffix, dtype=np.float32) for kind in KV_NAMES}
        self._unguided = {kind: np.zeros(per_suffix if config.guidance else 0, dtype=np.float32) for kind in KV_NAMES}
        self.prefix_len = 0
        self.batch = 0
        self.unguided_batch = 0

    def prefix_view(self, kind: str, length: int | None = None) -> np.ndarray:
        p = self.prefix_len if length is None else length
        if not 0 <= p <= self.prefix_tokens:
            raise ValueError(f"prompt of {p} tokens exceeds the prefix buffer ({self.prefix_tokens})")
        n = self.layers * self.heads * p * self.head_dim
        return self._prefix[kind][:n].reshape(self.layers, self.heads, p, self.head_dim)

    def suffix_view(self, kind: str, batch: int | None = None, unguided: bool = False) -> np.ndarray:
        b = (self.unguided_batch if unguided else self.batch) if batch is None else batch
        if not 0 <= b <= self.max_batch:
            raise ValueError(f"batch {b} exceeds max_candidates {self.max_batch}")
        n = self.layers * self.heads * b * self.suffix_capacity * self.head_dim
        flat = (self._unguided if unguided else self._suffix)[kind]
        if flat.size < n:
            raise ValueError("no unguided suffix rows: this model has no navigation guidance")
        return flat[:n].reshape(self.layers, self.heads, b, self.suffix_capacity, self.head_dim)

    def set_prefix(self, length: int, keys: list[np.ndarray] | None = None,
                   values: list[np.ndarray] | None = None) -> None:
        """A new prompt of `length` tokens: its per-layer K/V (Hkv, length, Dh), or None when the graph wrote
        them into `prefix_view(kind, length)` itself."""
        self.prefix_len = length
        for kind, new in zip(KV_NAMES, (keys, values), strict=True):
            if new is not None:
                for layer, part in zip(self.prefix_view(kind), new, strict=True):  # no stacked temporary
                    layer[...] = part

    def write_suffix(self, slot: int, key: np.ndarray, value: np.ndarray) -> None:
        """New tokens' K/V (L, Hkv, B, 1, Dh) into suffix slot `slot` of every row."""
        if not 0 <= slot < self.suffix_capacity:
            raise ValueError(f"suffix slot {slot} outside [0, {self.suffix_capacity})")
        for kind, new in zip(KV_NAMES, (key, value), strict=True):
            self.suffix_view(kind)[:, :, :, slot] = new[:, :, :, 0]

    def write_unguided(self, key: np.ndarray, value: np.ndarray) -> None:
        """`extend`'s K/V (L, Hkv, B, T, Dh) into slots [0, T) of B unguided rows."""
        b, t = key.shape[2], key.shape[3]
        if t > self.suffix_capacity:
            raise ValueError(f"{t} unguided tokens exceed the suffix capacity {self.suffix_capacity}")
        self.unguided_batch = b
        for kind, new in zip(KV_NAMES, (key, value), strict=True):
            self.suffix_view(kind, unguided=True)[:, :, :, :t] = new

    def feeds(self, k: int | None = None, r: int | None = None) -> dict[str, np.ndarray]:
        """Per-layer KV inputs of decode (no arguments) or of an expert_step of `r` rows for `k` candidates
        (GraphExecutor.expert_rows): the decoded suffix rows, repeated when one row serves K candidates
        (shared reasoning), then the unguided rows with navigation guidance; a copy only then."""
        out: dict[str, np.ndarray] = {}
        rows_a, rows_b = GraphExecutor.expert_rows(k, r or k, self.batch) if k is not None else (None, None)
        for kind in KV_NAMES:
            prefix, suffix = self.prefix_view(kind), self.suffix_view(kind)
            if rows_a is not None and (rows_b is not None or len(rows_a) != self.batch):
                suffix = suffix[:, :, rows_a]
                if rows_b is not None:
                    suffix = np.concatenate([suffix, self.suffix_view(kind, unguided=True)[:, :, rows_b]], axis=2)
            for i in range(self.layers):
                out[f"prefix_{kind}_{i}"] = prefix[i]
                out[f"suffix_{kind}_{i}"] = suffix[i]
        return out
