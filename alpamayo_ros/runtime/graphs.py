"""The ONNX graph family (docs/runtime.md §3): vision, prefill, decode, expert_step, sample, text
(prefill and decode in one graph), and for models with navigation guidance (Alpamayo 1.5) extend.

These modules are what `export.py` writes to ONNX and what the torch executor runs, so both
backends execute the same computation. KV caches cross the graph boundary one layer at a time and
read-only: every layer's prefix and suffix K/V is its own input (a contiguous slice of a buffer the
executor preallocated), and a call returns only the K/V of the tokens it added (prefill: the prompt's,
per layer; decode: one token per row), which the executor writes into its buffers or has written
there directly. No graph copies, scatters or returns a whole cache.
"""

from __future__ import annotations

import torch
from torch import nn

from alpamayo_ros.runtime.modeling.attention import (
    KVPart,
    cached_attention,
    causal_attention,
    causal_block_masks,
    head_major,
)
from alpamayo_ros.runtime.modeling.model import AlpamayoR1


class VisionGraph(nn.Module):
    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixel_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.visual(pixel_rows)


class PrefillGraph(nn.Module):
    """Prompt -> its last token's logits and its K/V, one (Hkv, P, Dh) output per layer and kind (the
    prefix cache itself: executors bind them to their KV buffers).

    `input_ids` (1, S) is the prompt padded at its end to a multiple of `config.prefill_query_blocks`
    (the causal mask hides the padding from the prompt); `position_ids` (3, 1, P) are the prompt's own,
    so P is the prompt length. The padding's K/V are not returned: decode and the expert see exactly
    the P prompt tokens, without a mask.
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text
        self.lm_head = model.vlm.lm_head
        self.blocks = model.config.prefill_query_blocks

    def forward(
        self,
        input_ids: torch.Tensor,  # (1, S), S = n·block ≥ P
        position_ids: torch.Tensor,  # (3, 1, P)
        image_embeds: torch.Tensor,  # (M, D)
        deepstack_embeds: torch.Tensor,  # (n_ds, M, D)
        image_token_index: torch.Tensor,  # (M,)
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        s, prompt = input_ids.shape[1], torch.arange(position_ids.shape[2], device=input_ids.device)
        h = self.text.embed_tokens(input_ids)[0]  # (S, D)
        h = h.index_put((image_token_index,), image_embeds.to(h.dtype)).unsqueeze(0)
        # the padding repeats the last position (gather with clamped indices: no size relation to export)
        padded = torch.arange(s, device=input_ids.device).clamp(max=position_ids.shape[2] - 1)
        cos, sin = self.text.rotary(position_ids.index_select(2, padded))
        masks = causal_block_masks(s // self.blocks, self.blocks, h.dtype, h.device)
        keys, values = [], []
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            h = layer.finish(h, causal_attention(q, k, v, layer.self_attn.scaling, masks))
            if i < deepstack_embeds.shape[0]:
                # gather + add + plain ScatterND (TensorRT rejects ScatterND with reduction="add")
                added = h[0].index_select(0, image_token_index) + deepstack_embeds[i].to(h.dtype)
                h = h[0].index_put((image_token_index,), added).unsqueeze(0)
            keys.append(k[0].index_select(1, prompt))
            values.append(v[0].index_select(1, prompt))
        logits = self.lm_head(self.text.norm(h.index_select(1, prompt[-1:])))[:, 0].float()
        return logits, keys, values


def _cache_parts(
    prefix_key: torch.Tensor,  # (Hkv, P, Dh), shared by all rows
    prefix_value: torch.Tensor,
    suffix_key: torch.Tensor,  # (Hkv, B, Cs, Dh)
    suffix_value: torch.Tensor,
    suffix_mask: torch.Tensor,  # (B, Cs)
    own_key: torch.Tensor,  # (B, Hkv, T, Dh) as projected
    own_value: torch.Tensor,
    prefix_mask: torch.Tensor | None = None,  # (B, P): the expert's unguided rows hide the route span
) -> list[KVPart]:
    return [
        KVPart(prefix_key, prefix_value, prefix_mask),  # decode: the whole prompt is visible, no mask
        KVPart(suffix_key, suffix_value, suffix_mask),
        KVPart(head_major(own_key), head_major(own_value)),
    ]


class DecodeGraph(nn.Module):
    """One token for each of B candidates over the shared prefix + per-candidate suffix + itself.

    Returns the logits and the new token's K/V (L, Hkv, B, 1, Dh); the executor writes them at suffix
    slot `write_index` after the call (the suffix inputs hold the slots before it, masked after).
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text
        self.lm_head = model.vlm.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, 1)
        position_ids: torch.Tensor,  # (3, B, 1)
        suffix_mask: torch.Tensor,  # (B, Cs)
        prefix_keys: list[torch.Tensor],  # L × (Hkv, P, Dh)
        prefix_values: list[torch.Tensor],
        suffix_keys: list[torch.Tensor],  # L × (Hkv, B, Cs, Dh)
        suffix_values: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.text.embed_tokens(input_ids)  # (B, 1, D)
        cos, sin = self.text.rotary(position_ids)
        new_k, new_v = [], []
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            parts = _cache_parts(prefix_keys[i], prefix_values[i], suffix_keys[i], suffix_values[i], suffix_mask, k, v)
            h = layer.finish(h, cached_attention(q, parts, layer.self_attn.scaling))
            new_k.append(parts[2].key)
            new_v.append(parts[2].value)
        logits = self.lm_head(self.text.norm(h))[:, 0].float()
        return logits, torch.stack(new_k), torch.stack(new_v)


SCORE_BLOCK_BYTES = 16 << 20  # fp32 score tensor of one expert query block at full capacity and batch


def expert_query_block(cfg) -> int:
    """Expert tokens per attention block: the largest power-of-two divisor of W whose score tensor
    (Hq × K_max × block × (Cp + Cs + W) fp32) stays under SCORE_BLOCK_BYTES. Bounded temporaries are
    reused by the allocator instead of mapped fresh (page faults) every call."""
    e, w = cfg.expert, cfg.n_waypoints
    per_token = 4 * e.num_attention_heads * cfg.max_expert_rows * (cfg.prefix_capacity + cfg.suffix_capacity + w)
    block = w
    while block > 1 and (block * per_token > SCORE_BLOCK_BYTES or w % block):
        block //= 2
    return block


class ExpertStepGraph(nn.Module):
    """x_next = x + dt · M·v(x, t) for R rows, reading prefix + suffix KV (read only).

    R = K candidates, or 2K with navigation guidance (Alpamayo 1.5): rows [0, K) read the prompt with the
    route instruction and their reasoning, rows [K, 2K) the same x over the prompt without it (the
    route span hidden by `prefix_mask`, their own suffix). `row_mix` M (R, R) blends the velocities:
    the identity without guidance (exactly v), [[w·I, (1 − w)·I], [w·I, (1 − w)·I]] with guidance, so both
    halves stay equal to x + dt·((1 − w)·v_unguided + w·v_route). Elementwise (no MatMul: no TF32).
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.expert = model.expert
        self.action_in_proj = model.action_in_proj
        self.action_out_proj = model.action_out_proj
        self.query_block = expert_query_block(model.config)

    def forward(
        self,
        x: torch.Tensor,  # (R, W, 2)
        t: torch.Tensor,  # (1,)
        dt: torch.Tensor,  # (1,)
        row_mix: torch.Tensor,  # (R, R)
        position_ids: torch.Tensor,  # (3, R, W)
        suffix_mask: torch.Tensor,  # (R, Cs)
        prefix_mask: torch.Tensor,  # (R, P)
        prefix_keys: list[torch.Tensor],  # L × (Hkv, P, Dh)
        prefix_values: list[torch.Tensor],
        suffix_keys: list[torch.Tensor],  # L × (Hkv, R, Cs, Dh)
        suffix_values: list[torch.Tensor],
    ) -> torch.Tensor:
        h = self.action_in_proj(x, t)  # (R, W, E)
        cos, sin = self.expert.rotary(position_ids)
        for i, layer in enumerate(self.expert.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            parts = _cache_parts(prefix_keys[i], prefix_values[i], suffix_keys[i], suffix_values[i], suffix_mask, k, v,
                                 prefix_mask)
            blocks = [cached_attention(q[:, :, j:j + self.query_block], parts, layer.self_attn.scaling)
                      for j in range(0, q.shape[2], self.query_block)]  # rows are independent: W/block blocks
            h = layer.finish(h, blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1))
        v = self.action_out_proj(self.expert.norm(h)).float()  # (R, W, 2)
        return x + dt * (row_mix[:, :, None, None] * v[None]).sum(1)


class ExtendGraph(nn.Module):
    """K/V of T new tokens per row over the shared prompt prefix, causal among themselves (navigation
    guidance: the unguided prompt's tail and each candidate's sampled reasoning, one call).

    `prefix_mask` (1, P) hides prefix columns (the route span and what follows it), `own_mask` (B, T, T)
    is causal and hides padding tokens (a row that finished early), as the reference's attention mask.
    Returns the new tokens' K/V (L, Hkv, B, T, Dh); no logits.
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        position_ids: torch.Tensor,  # (3, B, T)
        prefix_mask: torch.Tensor,  # (1, P)
        own_mask: torch.Tensor,  # (B, T, T)
        prefix_keys: list[torch.Tensor],  # L × (Hkv, P, Dh)
        prefix_values: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.text.embed_tokens(input_ids)  # (B, T, D)
        cos, sin = self.text.rotary(position_ids)
        new_k, new_v = [], []
        last = len(self.text.layers) - 1
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            parts = [KVPart(prefix_keys[i], prefix_values[i], prefix_mask),
                     KVPart(head_major(k), head_major(v), own_mask)]
            if i < last:  # the last layer's output feeds nothing: only its K/V are wanted
                h = layer.finish(h, cached_attention(q, parts, layer.self_attn.scaling))
            new_k.append(parts[1].key)
            new_v.append(parts[1].value)
        return torch.stack(new_k), torch.stack(new_v)


SAMPLE_WINDOW = 2048  # top-k window of the sampling graph (TensorRT's TopK allows k ≤ 3840)


class SampleGraph(nn.Module):
    """Token ids from decode logits on the device (docs/runtime.md §4.1): the host sampler's distribution.

    `<i*>` masked, temperature, top-p over the `SAMPLE_WINDOW` most likely tokens, then the inverse-CDF
    draw in token-id order with the host's uniform u (pre-drawn from the same PCG64 stream), so tokens
    match the host sampler (float32 here, float64 sums there: up to draws within rounding of a
    boundary). `covered` is False for a row whose window holds less than top_p of the mass (flat logits):
    its token is not valid and the executor samples that row on the host from its logits. Temperature 0
    is greedy (argmax).
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        cfg = model.config
        vocab = cfg.text.vocab_size
        hidden = torch.zeros(vocab, dtype=torch.bool)
        hidden[cfg.layout.traj_token_start_idx : cfg.layout.traj_token_end_idx] = True
        self.register_buffer("hidden", hidden, persistent=False)
        self.window = min(vocab, SAMPLE_WINDOW)
        self.whole_vocabulary = self.window == vocab

    def forward(
        self,
        logits: torch.Tensor,  # (B, V)
        uniforms: torch.Tensor,  # (B,)
        temperature: torch.Tensor,  # (1,)
        top_p: torch.Tensor,  # (1,)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masked = torch.where(self.hidden, float("-inf"), logits)
        z = masked / torch.clamp(temperature, min=1e-6)
        top = z.amax(-1, keepdim=True)
        total = torch.exp(z - top).sum(-1, keepdim=True)
        values, index = z.topk(self.window, dim=-1)  # descending, ties by lower id (ONNX TopK)
        p = torch.exp(values - top) / total
        before = torch.cumsum(p, dim=-1) - p  # mass strictly above each window token
        weight = torch.where(before < top_p, p, 0.0)
        covered = (before[:, -1] >= top_p) | (temperature <= 0)  # the window's last token is removed
        if self.whole_vocabulary:
            covered = covered | True
        _, by_id = (-index.to(torch.float32)).topk(self.window, dim=-1)  # window positions by token id
        ids = index.gather(-1, by_id)
        cdf = torch.cumsum(weight.gather(-1, by_id), dim=-1)
        first = (cdf > uniforms[:, None] * cdf[:, -1:]).to(torch.float32).argmax(-1, keepdim=True)
        sampled = ids.gather(-1, first)[:, 0]
        return torch.where(temperature > 0, sampled, masked.argmax(-1)), covered





class TextGraph(nn.Module):
    """Prefill and decode in one graph (TensorRT: one engine, one copy of the text weights, an
    optimization profile per phase; docs/runtime.md §3.6).

    B rows of T new tokens each attend to the shared prefix (P), their suffix slots (masked) and, causally,
    to themselves. Prefill: B = 1, T = the prompt, P = 0, every suffix slot masked, M image rows. Decode:
    T = 1, P = the prompt, M = 0. Returns the last token's logits per row and the new tokens' K/V per
    layer, (Hkv, B, T, Dh): the prefill's are the prefix cache itself (bound to it), decode's go to the
    suffix slot.
    """

    def __init__(self, model: AlpamayoR1) -> None:
        super().__init__()
        self.text = model.text
        self.lm_head = model.vlm.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        position_ids: torch.Tensor,  # (3, B, T)
        image_embeds: torch.Tensor,  # (M, D)
        deepstack_embeds: torch.Tensor,  # (n_ds, M, D)
        image_token_index: torch.Tensor,  # (M,) indices into the B·T new tokens
        suffix_mask: torch.Tensor,  # (B, Cs)
        prefix_keys: list[torch.Tensor],  # L × (Hkv, P, Dh)
        prefix_values: list[torch.Tensor],
        suffix_keys: list[torch.Tensor],  # L × (Hkv, B, Cs, Dh)
        suffix_values: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        b, t = input_ids.shape
        h = self.text.embed_tokens(input_ids).reshape(b * t, -1)
        h = h.index_put((image_token_index,), image_embeds.to(h.dtype)).reshape(b, t, -1)
        cos, sin = self.text.rotary(position_ids)
        keys, values = [], []
        for i, layer in enumerate(self.text.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            parts = _cache_parts(prefix_keys[i], prefix_values[i], suffix_keys[i], suffix_values[i], suffix_mask, k, v)
            parts[2] = parts[2]._replace(causal=True)
            h = layer.finish(h, cached_attention(q, parts, layer.self_attn.scaling))
            if i < deepstack_embeds.shape[0]:
                flat = h.reshape(b * t, -1)
                added = flat.index_select(0, image_token_index) + deepstack_embeds[i].to(h.dtype)
                h = flat.index_put((image_token_index,), added).reshape(b, t, -1)
            keys.append(parts[2].key)
            values.append(parts[2].value)
        logits = self.lm_head(self.text.norm(h[:, -1:]))[:, 0].float()
        return logits, keys, values


GRAPH_CLASSES = {
    "vision": VisionGraph,
    "prefill": PrefillGraph,
    "decode": DecodeGraph,
    "expert_step": ExpertStepGraph,
    "sample": SampleGraph,
    "text": TextGraph,
    "extend": ExtendGraph,
}
