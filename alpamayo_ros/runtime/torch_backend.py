"""PyTorch executor: runs the graph modules of `graphs.py` eagerly (the same code the ONNX holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from alpamayo_ros.runtime.executor import GraphExecutor, ImageFeatures
from alpamayo_ros.runtime.graphs import DecodeGraph, ExpertStepGraph, PrefillGraph, VisionGraph
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
        pshape, _ = self.kv_shapes(1)
        self.prefix_key = torch.zeros(pshape)
        self.prefix_value = torch.zeros(pshape)
        self.suffix_key = torch.zeros(0)
        self.suffix_value = torch.zeros(0)

    @torch.no_grad()
    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        emb, ds = self.vision(torch.from_numpy(pixel_rows))
        emb, ds = emb.numpy(), ds.numpy()
        return [ImageFeatures(emb[i], ds[:, i]) for i in range(emb.shape[0])]

    @torch.no_grad()
    def prefill(self, input_ids, position_ids, features, image_token_index) -> np.ndarray:
        embeds, deepstack = self.stack_features(features)
        logits, self.prefix_key, self.prefix_value = self.prefill_graph(
            torch.from_numpy(np.array(input_ids, dtype=np.int64))[None], torch.from_numpy(np.array(position_ids))[:, None],
            torch.from_numpy(embeds), torch.from_numpy(deepstack), torch.from_numpy(image_token_index),
            self.prefix_key, self.prefix_value,
        )
        return logits[0].numpy()

    def start_decode(self, batch: int) -> None:
        _, sshape = self.kv_shapes(batch)
        if tuple(self.suffix_key.shape) != sshape:  # allocate once per batch size
            self.suffix_key = torch.zeros(sshape)
            self.suffix_value = torch.zeros(sshape)

    @torch.no_grad()
    def decode(self, token_ids, position_ids, write_index, prefix_mask, suffix_mask) -> np.ndarray:
        logits, self.suffix_key, self.suffix_value = self.decode_graph(
            torch.from_numpy(np.asarray(token_ids, dtype=np.int64)).view(-1, 1), torch.from_numpy(position_ids),
            torch.tensor([write_index]), self.prefix_key, self.prefix_value, torch.from_numpy(prefix_mask),
            self.suffix_key, self.suffix_value, torch.from_numpy(suffix_mask),
        )
        return logits.numpy()

    @torch.no_grad()
    def run_expert(self, x0, steps, position_ids, prefix_mask, suffix_mask) -> np.ndarray:
        k = x0.shape[0]
        sk, sv = self.suffix_key, self.suffix_value
        if sk.shape[1] != k:  # shared reasoning: one suffix row for K candidates (the prefix is never copied)
            sk, sv = sk.expand(-1, k, -1, -1, -1).contiguous(), sv.expand(-1, k, -1, -1, -1).contiguous()
            self.count("suffix_kv_copies", k - 1)
        x = torch.from_numpy(x0)
        pos, pm, sm = torch.from_numpy(position_ids), torch.from_numpy(prefix_mask), torch.from_numpy(suffix_mask)
        for t, dt in steps:
            x = self.expert_graph(x, torch.tensor([t]), torch.tensor([dt]), pos, self.prefix_key, self.prefix_value,
                                  pm, sk, sv, sm)
        return x.numpy()


def build_torch_executor(model_dir: str | Path, **options: Any) -> TorchExecutor:
    from alpamayo_ros.runtime.weights import load_model

    overrides = {k: options[k] for k in ("prefix_capacity", "suffix_capacity", "max_candidates") if k in options}
    model = load_model(model_dir, **overrides)
    return TorchExecutor(model, num_threads=options.get("num_threads"))
