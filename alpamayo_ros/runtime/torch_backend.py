"""PyTorch executor: runs the graph modules of `graphs.py` eagerly (the same code the ONNX holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from alpamayo_ros.runtime.executor import GraphExecutor, HostKVCache, ImageFeatures, layer_input_names
from alpamayo_ros.runtime.graphs import DecodeGraph, ExpertStepGraph, ExtendGraph, PrefillGraph, VisionGraph
from alpamayo_ros.runtime.modeling.model import AlpamayoR1


class TorchExecutor(GraphExecutor):
    name = "torch"

    def __init__(self, model: AlpamayoR1, num_threads: int | None = None) -> None:
        super().__init__(model.config)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = model.eval()
        self.vision = VisionGraph(model)
        self.prefill_graph = PrefillGraph(model)
        self.decode_graph = DecodeGraph(model)
        self.expert_graph = ExpertStepGraph(model)
        self.extend_graph = ExtendGraph(model) if self.config.guidance else None
        self.supports_guidance = self.extend_graph is not None
        self.kv = HostKVCache(self.config)

    def _layer_kv(self, k: int | None = None, r: int | None = None) -> list[list[torch.Tensor]]:
        """[prefix_keys, prefix_values, suffix_keys, suffix_values] per layer, sharing the buffers' memory."""
        feeds = self.kv.feeds(k, r)
        names = layer_input_names(self.kv.layers)
        n = self.kv.layers
        return [[torch.from_numpy(feeds[name]) for name in names[j * n:(j + 1) * n]] for j in range(4)]

    @torch.no_grad()
    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        emb, ds = self.vision(torch.from_numpy(pixel_rows))
        emb, ds = emb.numpy(), ds.numpy()
        return [ImageFeatures(emb[i], ds[:, i]) for i in range(emb.shape[0])]

    @torch.no_grad()
    def prefill(self, input_ids, position_ids, features, image_token_index) -> np.ndarray:
        embeds, deepstack = self.stack_features(features)
        logits, keys, values = self.prefill_graph(
            torch.from_numpy(self.padded_ids(input_ids)), torch.from_numpy(np.array(position_ids))[:, None],
            torch.from_numpy(embeds), torch.from_numpy(deepstack), torch.from_numpy(image_token_index),
        )
        self.kv.set_prefix(int(input_ids.shape[0]), [k.numpy() for k in keys], [v.numpy() for v in values])
        return logits[0].numpy()

    def start_decode(self, batch: int) -> None:
        self.kv.batch = batch

    @torch.no_grad()
    def decode(self, token_ids, position_ids, write_index, suffix_mask) -> np.ndarray:
        logits, key, value = self.decode_graph(
            torch.from_numpy(np.asarray(token_ids, dtype=np.int64)).view(-1, 1), torch.from_numpy(position_ids),
            torch.from_numpy(suffix_mask), *self._layer_kv(),
        )
        self.kv.write_suffix(write_index, key.numpy(), value.numpy())
        return logits.numpy()

    @torch.no_grad()
    def extend(self, input_ids, position_ids, prefix_mask, own_mask) -> None:
        if self.extend_graph is None:
            super().extend(input_ids, position_ids, prefix_mask, own_mask)
        keys, values = self.extend_graph(
            torch.from_numpy(np.asarray(input_ids, dtype=np.int64)), torch.from_numpy(position_ids),
            torch.from_numpy(prefix_mask), torch.from_numpy(own_mask), *self._layer_kv()[:2])
        self.kv.write_unguided(keys.numpy(), values.numpy())

    @torch.no_grad()
    def run_expert(self, x0, steps, position_ids, suffix_mask, prefix_mask=None, row_mix=None) -> np.ndarray:
        r = x0.shape[0]
        k, prefix_mask, row_mix = self.expert_extras(r, self.kv.prefix_len, prefix_mask, row_mix)
        if self.kv.batch != k:  # shared reasoning: one suffix row for K candidates (the prefix is never copied)
            self.count("suffix_kv_copies", k - self.kv.batch)
        layer_kv = self._layer_kv(k, r)
        x = torch.from_numpy(x0)
        extras = [torch.from_numpy(a) for a in (row_mix, position_ids, suffix_mask, prefix_mask)]
        for t, dt in steps:
            x = self.expert_graph(x, torch.tensor([t]), torch.tensor([dt]), *extras, *layer_kv)
        return x.numpy()


def build_torch_executor(model_dir: str | Path, **options: Any) -> TorchExecutor:
    from alpamayo_ros.runtime.weights import load_model

    overrides = {k: options[k] for k in ("prefix_capacity", "suffix_capacity", "max_candidates") if k in options}
    model = load_model(model_dir, **overrides)
    return TorchExecutor(model, num_threads=options.get("num_threads"))
