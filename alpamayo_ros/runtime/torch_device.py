"""PyTorch executor on any torch device and dtype (a CUDA GPU in bf16: benchmarks/bench_gpu.py).

The same graph modules as the host torch executor (`torch_backend.TorchExecutor`) and the same KV
layout (docs/runtime.md §2), with the buffers as device tensors in the model's dtype: the prompt's
K/V are written into the prefix buffer once, every layer's slice goes to decode and the expert as a
view, a decode step's new K/V go into their suffix slot. Only logits, image features and the final
actions cross to the host (as float32 numpy), which is where the shared orchestrator samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alpamayo_ros.runtime.config import RuntimeConfig
from alpamayo_ros.runtime.executor import KV_NAMES, GraphExecutor, ImageFeatures
from alpamayo_ros.runtime.graphs import DecodeGraph, ExpertStepGraph, PrefillGraph, VisionGraph
from alpamayo_ros.runtime.modeling.model import AlpamayoR1


class DeviceKVCache:
    """HostKVCache's layout in device tensors: flat buffers, per-length views, every layer contiguous."""

    def __init__(self, config: RuntimeConfig, device: torch.device, dtype: torch.dtype) -> None:
        t = config.text
        self.layers, self.heads, self.head_dim = t.num_hidden_layers, t.num_key_value_heads, t.head_dim
        self.suffix_capacity, self.max_batch = config.suffix_capacity, config.max_candidates
        prefix = self.layers * self.heads * config.prefix_buffer_tokens * self.head_dim
        suffix = self.layers * self.heads * self.max_batch * self.suffix_capacity * self.head_dim
        self._prefix = {k: torch.zeros(prefix, device=device, dtype=dtype) for k in KV_NAMES}
        self._suffix = {k: torch.zeros(suffix, device=device, dtype=dtype) for k in KV_NAMES}
        self.prefix_len = self.batch = 0

    def prefix_view(self, kind: str, length: int | None = None) -> torch.Tensor:
        p = self.prefix_len if length is None else length
        return self._prefix[kind][: self.layers * self.heads * p * self.head_dim].view(
            self.layers, self.heads, p, self.head_dim)

    def suffix_view(self, kind: str, batch: int | None = None) -> torch.Tensor:
        b = self.batch if batch is None else batch
        n = self.layers * self.heads * b * self.suffix_capacity * self.head_dim
        return self._suffix[kind][:n].view(self.layers, self.heads, b, self.suffix_capacity, self.head_dim)

    def layer_inputs(self, rows: int | None = None) -> list[list[torch.Tensor]]:
        """[prefix keys, prefix values, suffix keys, suffix values], one view per layer; `rows` > batch
        (shared reasoning) repeats the suffix rows as the graphs expect."""
        out = [list(self.prefix_view(k).unbind(0)) for k in KV_NAMES]
        for kind in KV_NAMES:
            suffix = self.suffix_view(kind)
            if rows is not None and rows != self.batch:
                suffix = suffix.repeat_interleave(rows, dim=2)
            out.append(list(suffix.unbind(0)))
        return out


class DeviceTorchExecutor(GraphExecutor):
    name = "torch"

    def __init__(self, model: AlpamayoR1, device: str | torch.device = "cpu") -> None:
        super().__init__(model.config)
        self.device = torch.device(device)
        self.model = model.eval()
        self.dtype = next(model.parameters()).dtype
        self.vision, self.prefill_graph = VisionGraph(model), PrefillGraph(model)
        self.decode_graph, self.expert_graph = DecodeGraph(model), ExpertStepGraph(model)
        self.kv = DeviceKVCache(self.config, self.device, self.dtype)

    def _to(self, array: Any, float_dtype: torch.dtype | None = None) -> torch.Tensor:
        tensor = torch.as_tensor(np.ascontiguousarray(array)).to(self.device)
        return tensor.to(float_dtype) if float_dtype is not None and tensor.is_floating_point() else tensor

    @torch.no_grad()
    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        emb, ds = self.vision(self._to(pixel_rows, torch.float32))
        emb, ds = emb.float().cpu().numpy(), ds.float().cpu().numpy()
        return [ImageFeatures(emb[i], ds[:, i]) for i in range(emb.shape[0])]

    @torch.no_grad()
    def prefill(self, input_ids: Any, position_ids: Any, features: Any, image_token_index: Any) -> np.ndarray:
        embeds, deepstack = self.stack_features(features)
        p = int(input_ids.shape[0])
        logits, keys, values = self.prefill_graph(
            self._to(self.padded_ids(input_ids)), self._to(np.asarray(position_ids))[:, None],
            self._to(embeds, self.dtype), self._to(deepstack, self.dtype), self._to(image_token_index))
        self.kv.prefix_len = p
        for kind, new in zip(KV_NAMES, (keys, values), strict=True):
            self.kv.prefix_view(kind).copy_(torch.stack(new))
        return logits[0].float().cpu().numpy()

    def start_decode(self, batch: int) -> None:
        self.kv.batch = batch

    @torch.no_grad()
    def decode(self, token_ids: Any, position_ids: Any, write_index: int, suffix_mask: Any) -> np.ndarray:
        logits, key, value = self.decode_graph(
            self._to(np.asarray(token_ids, np.int64)).view(-1, 1), self._to(position_ids),
            self._to(suffix_mask, torch.float32), *self.kv.layer_inputs())
        for kind, new in zip(KV_NAMES, (key, value), strict=True):
            self.kv.suffix_view(kind)[:, :, :, write_index] = new[:, :, :, 0]
        return logits.float().cpu().numpy()

    @torch.no_grad()
    def run_expert(self, x0: Any, steps: Any, position_ids: Any, suffix_mask: Any, prefix_mask: Any = None,
                   row_mix: Any = None) -> np.ndarray:
        """K candidate rows (no `extend` here: navigation guidance runs on the host torch, ONNX Runtime and
        TensorRT executors)."""
        r = int(x0.shape[0])
        k, prefix_mask, row_mix = self.expert_extras(r, self.kv.prefix_len, prefix_mask, row_mix)
        if r != k:
            raise NotImplementedError(f"{self.name} (device): no extend graph, so no navigation guidance rows")
        if self.kv.batch != k:
            self.count("suffix_kv_copies", k - self.kv.batch)
        layers = self.kv.layer_inputs(k)
        x, pos, mask = self._to(x0, torch.float32), self._to(position_ids), self._to(suffix_mask, torch.float32)
        mix, seen = self._to(row_mix, torch.float32), self._to(prefix_mask, torch.float32)
        for t, dt in steps:
            x = self.expert_graph(x, torch.tensor([t], device=self.device), torch.tensor([dt], device=self.device),
                                  mix, pos, mask, seen, *layers)
        return x.float().cpu().numpy()


def random_model(cfg: RuntimeConfig, device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> AlpamayoR1:
    """The model with random weights made on `device` directly (the host never holds them): linear and
    embedding weights N(0, 0.02), norm gains 1, biases 0; the Fourier and action-space buffers as built."""
    from alpamayo_ros.runtime.modeling.model import empty_model, materialize

    model = empty_model(cfg)
    gen = torch.Generator(device=device).manual_seed(seed)

    def make(key: str, current: torch.Tensor) -> torch.Tensor:
        if not current.is_meta:
            return current.to(device=device, dtype=dtype)
        if key.endswith("bias"):
            return torch.zeros(current.shape, device=device, dtype=dtype)
        if current.dim() == 1:
            return torch.ones(current.shape, device=device, dtype=dtype)
        return (torch.randn(current.shape, device=device, generator=gen) * 0.02).to(dtype)

    materialize(model, make)
    return model.to(device)
