"""The reference path: spec appendix written plainly with the PyTorch modules (the oracle).

No shared-prefix tricks here: the prompt cache is repeated per candidate and grows by
concatenation, the expert attends over `[cache ; own tokens]` with the spec's additive mask
(`core.rope.expert_positions_and_mask`), and the result goes through `action_to_traj`. Sampling,
the stop rule and the noise are the same numpy code the orchestrator uses, so every backend can
be compared with this token for token.

Alpamayo 1.5's navigation guidance is NVIDIA's `sample_trajectories_from_data_with_vlm_rollout_cfg_nav`
written out: the prompt without the route span prefilled in full, the sampled reasoning forwarded over
it (padding masked), the expert on both caches, velocities blended; `answer` is its `generate_text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from alpamayo_ros.core.action_space import (
    NORMALIZATION_KEYS,
    ActionSpaceConfig,
    Normalization,
    action_to_traj,
)
from alpamayo_ros.core.backend import SamplingRequest
from alpamayo_ros.core.flow_matching import FlowMatchingSampler, initial_noise
from alpamayo_ros.core.rope import decode_positions, expert_offsets, expert_positions_and_mask
from alpamayo_ros.core.sampling import extract_reasoning, replace_padding_after_eos, sample_tokens
from alpamayo_ros.runtime.modeling.attention import MASK_VALUE, causal_mask
from alpamayo_ros.runtime.orchestrator import make_stop_rule, sample_next, sampling_rng

if TYPE_CHECKING:
    from alpamayo_ros.core.model_inputs import ModelInputs
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer
    from alpamayo_ros.runtime.modeling.model import AlpamayoR1

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, Hkv, L, D)


@dataclass
class ReferenceResult:
    reasoning: list[str]  # K texts
    token_ids: np.ndarray  # (rows, n) generated ids, pad after the first <|traj_future_start|>; rows = K or 1
    actions: np.ndarray  # (K, W, 2) normalized
    xyz: np.ndarray  # (K, W, 3) ego frame at t0
    rot: np.ndarray  # (K, W, 3, 3)


def _prefill(model: AlpamayoR1, inputs: ModelInputs) -> tuple[torch.Tensor, Cache]:
    text = model.text
    ids = torch.from_numpy(np.array(inputs.input_ids, dtype=np.int64))
    pixels = torch.from_numpy(np.stack([np.asarray(im.pixel_rows, dtype=np.float32) for im in inputs.images]))
    embeds, deepstack = model.visual(pixels)
    embeds, deepstack = embeds.reshape(-1, embeds.shape[-1]), deepstack.flatten(1, 2)
    img = ids == model.config.layout.image_pad
    h = text.embed_tokens(ids)
    h[img] = embeds
    h = h[None]
    cos, sin = text.rotary(torch.from_numpy(np.array(inputs.position_ids, dtype=np.int64))[:, None])
    mask = causal_mask(ids.shape[0])
    cache: Cache = []
    for i, layer in enumerate(text.layers):
        q, k, v = layer.project_qkv(h, cos, sin)
        h = layer.finish(h, layer.attend(q, k, v, mask))
        if i < deepstack.shape[0]:
            h[0, img] = h[0, img] + deepstack[i]
        cache.append((k, v))
    return model.vlm.lm_head(text.norm(h[:, -1]))[0], cache


def _decode_step(model: AlpamayoR1, tokens: np.ndarray, position: int, cache: Cache) -> tuple[torch.Tensor, Cache]:
    text = model.text
    h = text.embed_tokens(torch.from_numpy(tokens).view(-1, 1))
    pos = torch.from_numpy(decode_positions(position, 0)).expand(3, h.shape[0], 1)
    cos, sin = text.rotary(pos)
    new: Cache = []
    for layer, (ck, cv) in zip(text.layers, cache, strict=True):
        q, k, v = layer.project_qkv(h, cos, sin)
        ck, cv = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)  # the cache grows (reference semantics)
        h = layer.finish(h, layer.attend(q, ck, cv, None))
        new.append((ck, cv))
    return model.vlm.lm_head(text.norm(h[:, -1])), new


def _expert(model: AlpamayoR1, cache: Cache, x: torch.Tensor, t: float, positions: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    exp = model.expert
    h = model.action_in_proj(x, torch.tensor([t]))
    cos, sin = exp.rotary(positions)
    for layer, (ck, cv) in zip(exp.layers, cache, strict=True):
        q, k, v = layer.project_qkv(h, cos, sin)
        keys, values = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
        h = layer.finish(h, layer.attend(q, keys, values, mask[:, 0]))
    return model.action_out_proj(exp.norm(h))


@torch.no_grad()
def sample_trajectories(
    model: AlpamayoR1,
    tokenizer: AlpamayoTokenizer,
    inputs: ModelInputs,
    hist_xyz: np.ndarray,
    hist_rot: np.ndarray,
    request: SamplingRequest | None = None,
    noise: np.ndarray | None = None,
    action_space: ActionSpaceConfig | None = None,
) -> ReferenceResult:
    """Spec appendix: prefill, K sampled reasonings, 10 Euler steps of the expert, action_to_traj.

    The actions are de-normalised with ``action_space``, by default with the model's ``action_space.*``
    buffers, as the reference does.
    """
    request = request or SamplingRequest()
    cfg, lay = model.config, model.config.layout
    k = request.num_candidates
    rows = 1 if request.shared_reasoning else k
    prompt = np.asarray(inputs.input_ids, dtype=np.int64)
    p, delta = prompt.shape[0], int(inputs.rope_delta)
    logits, cache = _prefill(model, inputs)
    cache = [(ck.repeat(rows, 1, 1, 1), cv.repeat(rows, 1, 1, 1)) for ck, cv in cache]  # repeat-interleave per sample
    rule, rng = make_stop_rule(rows, request, lay), sampling_rng(request)
    out = [rule.step(sample_next(np.broadcast_to(logits.numpy(), (rows, logits.shape[-1])), request, lay, rng))]
    while not rule.stopped:
        step_logits, cache = _decode_step(model, out[-1], p + len(out) - 1 + delta, cache)
        out.append(rule.step(sample_next(step_logits.numpy(), request, lay, rng)))
    tokens = np.stack(out, axis=1)  # fed to the decoder: the cache holds them
    seqs = replace_padding_after_eos(np.concatenate([np.broadcast_to(prompt, (rows, p)), tokens], axis=1),
                                     lay.traj_future_start, lay.pad)  # the reference's returned sequences
    offsets, _ = expert_offsets(seqs, lay.traj_future_start)
    cache_len = seqs.shape[1] - 1
    # rows without <|traj_future_start|> get offset len(seq) = cache_len + 1: nothing is masked
    positions3, mask = expert_positions_and_mask(offsets, cache_len, delta, cfg.n_waypoints)
    positions = positions3[0]  # (rows, W); the 3 MRoPE axes are equal for expert tokens
    if rows != k:  # shared reasoning: one cache row read by all K candidates
        cache = [(ck.expand(k, -1, -1, -1), cv.expand(k, -1, -1, -1)) for ck, cv in cache]
        positions, mask = np.repeat(positions, k, axis=0), np.repeat(mask, k, axis=0)
    pos_t = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(positions, (3, *positions.shape))))
    mask_t = torch.from_numpy(mask)
    shape = (cfg.n_waypoints, cfg.action_dim)
    x0 = initial_noise(k, request.seed, shape, request.noise_temperature) if noise is None else noise
    x = torch.from_numpy(np.asarray(x0, dtype=np.float32))
    guided = request.nav_guidance_weight > 0.0 and inputs.unguided is not None
    if guided:
        assert inputs.unguided is not None
        cache_b, pos_b, mask_b = _unguided_branch(model, inputs.unguided, seqs[:, p:], k)
        w = request.nav_guidance_weight
    for t, dt in FlowMatchingSampler(request.num_diffusion_steps).steps():
        v = _expert(model, cache, x, t, pos_t, mask_t)
        if guided:
            v = (1.0 - w) * _expert(model, cache_b, x, t, pos_b, mask_b) + w * v
        x = x + dt * v
    actions = x.numpy()
    xyz, rot = action_to_traj(actions, hist_xyz, hist_rot, action_space or buffer_action_space(model))
    head = tokenizer.decode(prompt[-64:])
    generated = seqs[:, p:]
    texts = [extract_reasoning(head + tokenizer.decode(row)) for row in generated]
    if rows != k:
        texts = texts * k
    return ReferenceResult(texts, generated, actions, np.asarray(xyz), np.asarray(rot))


def _unguided_branch(model: AlpamayoR1, inputs: ModelInputs, generated: np.ndarray, k: int
                     ) -> tuple[Cache, torch.Tensor, torch.Tensor]:
    """The unguided cache (the prompt without the route, prefilled, then the sampled tokens forwarded over
    it with padding masked), its expert positions and mask, repeated to K rows."""
    lay, text = model.config.layout, model.text
    ids = np.asarray(inputs.input_ids, dtype=np.int64)
    p, delta = ids.shape[0], int(inputs.rope_delta)
    rows, n = generated.shape
    _, cache = _prefill(model, inputs)
    cache = [(ck.repeat(rows, 1, 1, 1), cv.repeat(rows, 1, 1, 1)) for ck, cv in cache]
    h = text.embed_tokens(torch.from_numpy(np.ascontiguousarray(generated)))
    cos, sin = text.rotary(torch.from_numpy(np.broadcast_to(decode_positions(p, delta, n), (3, rows, n)).copy()))
    visible = np.concatenate([np.ones((rows, p), bool), generated != lay.pad], axis=1)  # the attention mask
    causal = np.arange(p + n)[None, :] <= (p + np.arange(n))[:, None]
    mask = torch.from_numpy(np.where(causal[None] & visible[:, None, :], 0.0, MASK_VALUE).astype(np.float32))
    grown: Cache = []
    for layer, (ck, cv) in zip(text.layers, cache, strict=True):
        q, kk, vv = layer.project_qkv(h, cos, sin)
        ck, cv = torch.cat([ck, kk], dim=2), torch.cat([cv, vv], dim=2)
        h = layer.finish(h, layer.attend(q, ck, cv, mask))
        grown.append((ck, cv))
    offsets, _ = expert_offsets(np.concatenate([np.broadcast_to(ids, (rows, p)), generated], 1), lay.traj_future_start)
    positions3, emask = expert_positions_and_mask(offsets, p + n, delta, model.config.n_waypoints)
    positions, emask = positions3[0], emask
    if rows != k:
        grown = [(ck.expand(k, -1, -1, -1), cv.expand(k, -1, -1, -1)) for ck, cv in grown]
        positions, emask = np.repeat(positions, k, axis=0), np.repeat(emask, k, axis=0)
    pos_t = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(positions, (3, *positions.shape))))
    return grown, pos_t, torch.from_numpy(emask)


@torch.no_grad()
def answer_question(model: AlpamayoR1, tokenizer: AlpamayoTokenizer, inputs: ModelInputs, request: SamplingRequest,
                    max_new_tokens: int) -> tuple[list[int], str]:
    """`generate_text` on a question prompt, plainly: prefill, then one sampled token at a time (no `<i*>`
    mask) until `<|answer_end|>`, an end of turn or `max_new_tokens`; (tokens, text before <|answer_end|>)."""
    lay = model.config.layout
    p, delta = len(inputs.input_ids), int(inputs.rope_delta)
    logits, cache = _prefill(model, inputs)
    rng = sampling_rng(request)
    stops = {lay.special_id("answer_end"), lay.im_end, lay.pad}

    def draw(z: torch.Tensor) -> int:
        if request.temperature == 0.0:
            return int(z.numpy().reshape(-1).argmax())
        return int(sample_tokens(z.numpy().reshape(1, -1), rng, request.temperature, request.top_p)[0])

    tokens = [draw(logits)]
    while tokens[-1] not in stops and len(tokens) < max_new_tokens:
        logits, cache = _decode_step(model, np.array(tokens[-1:]), p + len(tokens) - 1 + delta, cache)
        tokens.append(draw(logits))
    end = next((j for j, tok in enumerate(tokens) if tok in stops), len(tokens))
    return tokens, tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()


def buffer_action_space(model: AlpamayoR1) -> ActionSpaceConfig:
    """The action space de-normalised with the model's ``action_space.*`` buffers (loaded from the checkpoint)."""
    values = [float(getattr(model.action_space, k)) for k in NORMALIZATION_KEYS]
    return ActionSpaceConfig(n_waypoints=model.config.n_waypoints).with_normalization(
        Normalization(*values, source="checkpoint"))
