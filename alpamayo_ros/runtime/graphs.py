"""The ONNX graph family (docs/runtime.md §3): vision, prefill, decode, expert_step.

These modules are what `export.py` writes to ONNX and what the torch executor runs, so both
backends execute the same computation. KV buffers come in as inputs and go out as `present_*`
outputs in which only the indexed slots changed (ScatterND); a TensorRT executor binds them to
the same device memory, making the update in place.
"""

from __future__ import annotations

import torch
from torch import nn

from alpamayo_ros.runtime.modeling.attention import causal_mask
from alpamayo_ros.runtime.modeling.model import AlpamayoR1


def _write_slots(cache: torch.Tensor, values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache (..., C, D) with leading dims (L, [B,] H); values (..., T, D); slots (T,) -> ScatterND.

    Index tensors cover every leading dim, so ONNX gets one ScatterND on the cache itself (no
    transposes of the cache, unlike index_copy).
    """
    lead = cache.shape[:-2]
    idx = []
    for i, n in enumerate(lead):
        shape = [1] * (len(lead) + 1)
        shape[i] = n
        idx.append(torch.arange(n, device=cache.device).view(shape))
    shape = [1] * len(lead) + [slots.shape[0]]
    idx.append(slots.view(shape))
    return torch.ops.aten.index_put(cache, idx, values)


class VisionGraph(nn.Module):
    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixel_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual(pixel_rows)


class PrefillGraph(nn.Module):
    """Prompt -> last-position logits; writes prefix KV slots [0, S)."""

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text
        self.lm_head = model.vlm.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,  # (1, S)
        position_ids: torch.Tensor,  # (3, 1, S)
        image_embeds: torch.Tensor,  # (M, D)
        deepstack_embeds: torch.Tensor,  # (n_ds, M, D)
        image_token_index: torch.Tensor,  # (M,)
        prefix_key: torch.Tensor,  # (L, Hkv, Cp, Dh)
        prefix_value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.text.embed_tokens(input_ids)[0]  # (S, D)
        h = h.index_put((image_token_index,), image_embeds).unsqueeze(0)
        cos, sin = self.text.rotary(position_ids)
        s = input_ids.shape[1]
        mask = causal_mask(s, device=h.device)
        slots = torch.arange(s, device=h.device)
        keys, values = [], []
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            h = layer.finish(h, layer.attend(q, [(k, v, mask)]))
            if i < deepstack_embeds.shape[0]:
                # gather + add + plain ScatterND (TensorRT rejects ScatterND with reduction="add")
                added = h[0].index_select(0, image_token_index) + deepstack_embeds[i]
                h = h[0].index_put((image_token_index,), added).unsqueeze(0)
            keys.append(k[0])
            values.append(v[0])
        present_key = _write_slots(prefix_key, torch.stack(keys), slots)
        present_value = _write_slots(prefix_value, torch.stack(values), slots)
        logits = self.lm_head(self.text.norm(h[:, -1:, :]))[:, 0]
        return logits, present_key, present_value


class DecodeGraph(nn.Module):
    """One token for each of B candidates over the shared prefix + per-candidate suffix."""

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text
        self.lm_head = model.vlm.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, 1)
        position_ids: torch.Tensor,  # (3, B, 1)
        write_index: torch.Tensor,  # (1,)
        prefix_key: torch.Tensor,  # (L, Hkv, Cp, Dh)
        prefix_value: torch.Tensor,
        prefix_mask: torch.Tensor,  # (1, Cp)
        suffix_key: torch.Tensor,  # (L, B, Hkv, Cs, Dh)
        suffix_value: torch.Tensor,
        suffix_mask: torch.Tensor,  # (B, Cs)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.text.embed_tokens(input_ids)  # (B, 1, D)
        cos, sin = self.text.rotary(position_ids)
        new_k, new_v = [], []
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            new_k.append(k)
            new_v.append(v)
            # this layer's suffix with the new token written at write_index (not yet the buffer)
            sk = _write_slots(suffix_key[i], k, write_index)
            sv = _write_slots(suffix_value[i], v, write_index)
            parts = [
                (prefix_key[i].unsqueeze(0), prefix_value[i].unsqueeze(0), prefix_mask),
                (sk, sv, suffix_mask),
            ]
            h = layer.finish(h, layer.attend(q, parts))
        present_key = _write_slots(suffix_key, torch.stack(new_k), write_index)
        present_value = _write_slots(suffix_value, torch.stack(new_v), write_index)
        logits = self.lm_head(self.text.norm(h))[:, 0]
        return logits, present_key, present_value


class ExpertStepGraph(nn.Module):
    """x_next = x + dt · v(x, t) for K candidates, reading prefix + suffix KV (read only)."""

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.expert = model.expert
        self.action_in_proj = model.action_in_proj
        self.action_out_proj = model.action_out_proj

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        position_ids: torch.Tensor,
        parts_for_layer,  # callable(layer_index) -> list of (k, v, mask)
    ) -> torch.Tensor:
        h = self.action_in_proj(x, t)  # (K, W, E)
        cos, sin = self.expert.rotary(position_ids)
        for i, layer in enumerate(self.expert.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            h = layer.finish(h, layer.attend(q, [*parts_for_layer(i), (k, v, None)]))
        return self.action_out_proj(self.expert.norm(h))

    def forward(
        self,
        x: torch.Tensor,  # (K, W, 2)
        t: torch.Tensor,  # (1,)
        dt: torch.Tensor,  # (1,)
        position_ids: torch.Tensor,  # (3, K, W)
        prefix_key: torch.Tensor,
        prefix_value: torch.Tensor,
        prefix_mask: torch.Tensor,  # (1, Cp)
        suffix_key: torch.Tensor,  # (L, Bs, Hkv, Cs, Dh)
        suffix_value: torch.Tensor,
        suffix_mask: torch.Tensor,  # (K, Cs)
    ) -> torch.Tensor:
        def parts(i: int):
            return [
                (prefix_key[i].unsqueeze(0), prefix_value[i].unsqueeze(0), prefix_mask),
                (suffix_key[i], suffix_value[i], suffix_mask),
            ]

        v = self.velocity(x, t, position_ids, parts)
        return x + dt * v


GRAPH_CLASSES = {
    "vision": VisionGraph,
    "prefill": PrefillGraph,
    "decode": DecodeGraph,
    "expert_step": ExpertStepGraph,
}
