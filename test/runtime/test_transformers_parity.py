"""Parity of the VLM parts with transformers' Qwen3-VL classes on shared random weights (offline).

Same state-dict keys on both sides: the transformers modules' weights are loaded into ours
unchanged, so these tests also pin the released key layout of the vision tower and text decoder.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

qwen3_vl = pytest.importorskip("transformers.models.qwen3_vl.modeling_qwen3_vl")
from transformers import Qwen3VLConfig  # noqa: E402

from alpamayo_ros.core.rope import rope_index  # noqa: E402
from alpamayo_ros.runtime.config import config_from_dict  # noqa: E402
from alpamayo_ros.runtime.modeling.attention import causal_mask  # noqa: E402
from alpamayo_ros.runtime.modeling.text_decoder import TextModel  # noqa: E402
from alpamayo_ros.runtime.modeling.vision import VisionTower  # noqa: E402
from alpamayo_ros.runtime.tiny_model import TINY_EXPERT, TINY_TEXT, TINY_VISION  # noqa: E402

IMAGE_PAD = 90


def _hf_config() -> Qwen3VLConfig:
    text = dict(TINY_TEXT, vocab_size=128, max_position_embeddings=4096)
    return Qwen3VLConfig(text_config=text, vision_config=dict(TINY_VISION), image_token_id=IMAGE_PAD,
                         video_token_id=93, vision_start_token_id=91, vision_end_token_id=92)


def _ours(grid: tuple[int, int, int]):
    raw = {"vision_config": dict(TINY_VISION), "text_config": dict(TINY_TEXT), "image_grid_thw": list(grid),
           "expert_cfg": dict(TINY_EXPERT)}
    return config_from_dict(raw)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.1) + (1.0 if p.dim() == 1 else 0.0))


@pytest.mark.parametrize("grid", [(1, 20, 36), (1, 8, 12)])
def test_vision_tower_matches_transformers(grid: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    hf = qwen3_vl.Qwen3VLVisionModel._from_config(_hf_config().vision_config).eval()
    _randomize(hf, 1)
    ours = VisionTower(_ours(grid).vision, grid).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    n = 3
    tv = grid[0] * grid[1] * grid[2]
    pixels = torch.randn(n * tv, 1536, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixels, grid_thw=torch.tensor([list(grid)] * n))
        emb, ds = ours(pixels.view(n, tv, 1536))
    merged = tv // 4
    np.testing.assert_allclose(emb.reshape(n * merged, -1).numpy(), ref.pooler_output.numpy(), atol=1e-4, rtol=1e-3)
    assert len(ref.deepstack_features) == ds.shape[0] == 2
    for j, feat in enumerate(ref.deepstack_features):
        np.testing.assert_allclose(ds[j].reshape(n * merged, -1).numpy(), feat.numpy(), atol=1e-4, rtol=1e-3)


def test_text_decoder_matches_transformers_with_mrope_and_deepstack() -> None:
    torch.manual_seed(0)
    hf = qwen3_vl.Qwen3VLTextModel._from_config(_hf_config().text_config).eval()
    _randomize(hf, 3)
    ours = TextModel(dataclasses.replace(_ours((1, 4, 4)).text, vocab_size=128)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    # text, two 2x2-merged images of grid (1, 4, 6) -> 6 tokens each, text
    ids = np.array([5, 6, 91] + [IMAGE_PAD] * 6 + [92, 7, 91] + [IMAGE_PAD] * 6 + [92, 8, 9, 10], dtype=np.int64)
    pos, _delta = rope_index(ids, [[1, 4, 6], [1, 4, 6]], IMAGE_PAD, 2)
    assert not np.array_equal(pos[0], pos[1])  # real MRoPE, not 1-D
    visual = torch.from_numpy(ids == IMAGE_PAD)
    deepstack = [torch.randn(12, 64, generator=torch.Generator().manual_seed(4 + i)) for i in range(2)]
    ids_t, pos_t = torch.from_numpy(ids)[None], torch.from_numpy(pos)[:, None]
    with torch.no_grad():
        ref = hf(input_ids=ids_t, position_ids=pos_t, visual_pos_masks=visual[None], deepstack_visual_embeds=deepstack,
                 use_cache=True)
        h = ours.embed_tokens(ids_t)
        cos, sin = ours.rotary(pos_t)
        mask = causal_mask(len(ids))
        keys = []
        for i, layer in enumerate(ours.layers):
            q, k, v = layer.project_qkv(h, cos, sin)
            h = layer.finish(h, layer.attend(q, k, v, mask))
            h[0, visual] = h[0, visual] + deepstack[i]
            keys.append(k)
        h = ours.norm(h)
    np.testing.assert_allclose(h.numpy(), ref.last_hidden_state.numpy(), atol=3e-5, rtol=1e-4)
    hf_keys = ref.past_key_values.layers[0].keys
    np.testing.assert_allclose(keys[0].numpy(), hf_keys.numpy(), atol=1e-5, rtol=1e-4)  # cached K: normed + rotated
