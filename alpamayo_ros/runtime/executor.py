"""The executor interface (docs/runtime.md §5): executes graphs and owns buffers, decides nothing.

The orchestrator (backend-agnostic) calls these methods; torch and ONNX Runtime implement them
here, TensorRT in `tensorrt*.py`. Arrays crossing this interface are numpy on the host, except
`ImageFeatures`, which an executor may keep wherever it likes (e.g. device memory).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.core.action_space import Normalization
from alpamayo_ros.runtime.config import RuntimeConfig


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
        prefix_mask: np.ndarray,  # (1, Cp) f32
        suffix_mask: np.ndarray,  # (B, Cs) f32
    ) -> np.ndarray:
        """`decode` graph; writes suffix slot `write_index`; returns (B, V) logits."""

    @abstractmethod
    def run_expert(
        self,
        x0: np.ndarray,  # (K, W, 2) f32
        steps: list[tuple[float, float]],  # (t_i, dt_i)
        position_ids: np.ndarray,  # (3, K, W) int64
        prefix_mask: np.ndarray,  # (1, Cp)
        suffix_mask: np.ndarray,  # (K, Cs)
    ) -> np.ndarray:
        """`expert_step` graph len(steps) times over the read-only KV; returns x at t = 1."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release buffers/sessions."""

    def take_counters(self) -> dict[str, int]:
        """Executor-side counters of the tick so far (reset on read), e.g. suffix_kv_copies."""
        out, self._counters = getattr(self, "_counters", {}), {}
        return out

    def count(self, name: str, n: int = 1) -> None:
        counters = self.__dict__.setdefault("_counters", {})
        counters[name] = counters.get(name, 0) + n

    # shared helpers -------------------------------------------------------------------------
    def kv_shapes(self, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        t = self.config.text
        prefix = (t.num_hidden_layers, t.num_key_value_heads, self.config.prefix_capacity, t.head_dim)
        suffix = (t.num_hidden_layers, batch, t.num_key_value_heads, self.config.suffix_capacity, t.head_dim)
        return prefix, suffix

    @staticmethod
    def stack_features(features: list[ImageFeatures]) -> tuple[np.ndarray, np.ndarray]:
        """(M, D) embeds and (n_ds, M, D) deepstack for the prompt's images, in prompt order."""
        embeds = np.concatenate([f.embeds for f in features], axis=0)
        deepstack = np.concatenate([f.deepstack for f in features], axis=1)
        return embeds, deepstack
