"""MRoPE positions (spec §1.3, §5.3), with parity against transformers' Qwen3-VL get_rope_index."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.prompt import PromptSpec, build_prompt_template
from alpamayo_ros.core.rope import (
    RopeError,
    decode_positions,
    expert_offsets,
    expert_positions_and_mask,
    rope_index,
)
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer


@pytest.fixture(scope="module")
def tok() -> AlpamayoTokenizer:
    return AlpamayoTokenizer.synthetic()


@pytest.fixture(scope="module")
def hf_model(tok: AlpamayoTokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    lay = tok.layout
    cfg = transformers.Qwen3VLConfig(
        text_config=dict(vocab_size=lay.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=256, deepstack_visual_indexes=[0]),
        image_token_id=lay.image_pad, video_token_id=lay.qwen_ids["image_pad"] + 1,
        vision_start_token_id=lay.vision_start, vision_end_token_id=lay.vision_end,
    )
    torch.manual_seed(0)
    return torch, transformers.Qwen3VLModel(cfg).eval()


def _hf_rope(hf_model, ids: np.ndarray, grids: np.ndarray, image_pad: int) -> tuple[np.ndarray, int]:
    torch, model = hf_model
    t_ids = torch.from_numpy(ids.copy())[None]
    pos, delta = model.get_rope_index(t_ids, mm_token_type_ids=(t_ids == image_pad).int(),
                                      image_grid_thw=torch.from_numpy(grids))
    return pos[:, 0].numpy(), int(delta[0, 0])


@pytest.mark.parametrize("text", [False, True])
def test_reference_prompt_positions_match_transformers(tok, hf_model, text: bool) -> None:
    spec = PromptSpec(camera_text=text, frame_text=text)
    t = build_prompt_template(tok, spec)
    grids = np.array([[1, 20, 36]] * 16)
    pos, delta = rope_index(t.ids, grids, tok.layout.image_pad)
    ref_pos, ref_delta = _hf_rope(hf_model, t.ids, grids, tok.layout.image_pad)
    assert np.array_equal(pos, ref_pos)
    assert delta == ref_delta == 16 * (18 - 180)  # -2592, spec §1.3


def test_mixed_grids_match_transformers(tok, hf_model) -> None:
    rng = np.random.default_rng(0)
    grids = np.array([[1, 2 * int(rng.integers(1, 12)), 2 * int(rng.integers(1, 12))] for _ in range(4)])
    spec = PromptSpec(camera_ids=(0, 1), num_frames=2, image_tokens=tuple(int(h * w) // 4 for _, h, w in grids))
    t = build_prompt_template(tok, spec)
    pos, delta = rope_index(t.ids, grids, tok.layout.image_pad)
    ref_pos, ref_delta = _hf_rope(hf_model, t.ids, grids, tok.layout.image_pad)
    assert np.array_equal(pos, ref_pos) and delta == ref_delta


def test_image_block_positions_by_hand() -> None:
    P = 9
    ids = np.array([1, 2, P, P, P, P, P, P, 3, 4])  # one image, llm grid 2x3 (grid_thw 1x4x6)
    pos, delta = rope_index(ids, [[1, 4, 6]], image_token_id=P)
    assert pos[:, :2].tolist() == [[0, 1]] * 3
    assert pos[0, 2:8].tolist() == [2] * 6
    assert pos[1, 2:8].tolist() == [2, 2, 2, 3, 3, 3]
    assert pos[2, 2:8].tolist() == [2, 3, 4, 2, 3, 4]
    assert pos[:, 8:].tolist() == [[5, 6]] * 3  # next text starts at start + max(h, w)
    assert delta == 7 - 10
    with pytest.raises(RopeError, match="runs"):
        rope_index(ids, [[1, 4, 6], [1, 2, 2]], image_token_id=P)
    with pytest.raises(RopeError, match="needs"):
        rope_index(ids, [[1, 4, 4]], image_token_id=P)


def test_decode_positions() -> None:
    p = decode_positions(3000, -2592)
    assert p.shape == (3, 1, 1) and p[:, 0, 0].tolist() == [408] * 3
    p = decode_positions(np.array([10, 20]), np.array([-1, -2]), n=3)
    assert p[0].tolist() == [[9, 10, 11], [18, 19, 20]] and np.array_equal(p[0], p[2])


def test_expert_offsets_and_mask() -> None:
    E = 7
    seqs = np.array([[1, 2, E, 5, 6, 6], [1, 2, 3, 4, E, 9], [1, 2, 3, 4, 5, 6]])
    off, found = expert_offsets(seqs, E)
    assert off.tolist() == [3, 5, 6] and found.tolist() == [True, True, False]
    lc = seqs.shape[1] - 1  # the last sampled token is never fed (spec §4)
    pos, mask = expert_positions_and_mask(off, lc, rope_delta=-100, n_tokens=4)
    assert pos.shape == (3, 3, 4) and pos[0, 0].tolist() == [-97, -96, -95, -94]
    assert np.array_equal(pos[0], pos[1]) and np.array_equal(pos[1], pos[2])
    assert mask.shape == (3, 1, 4, lc + 4) and mask.dtype == np.float32
    neg = np.finfo(np.float32).min
    # Row 0: cache columns 3, 4 (after its <|traj_future_start|>) are masked; expert columns never are.
    assert mask[0, 0, 0].tolist() == [0, 0, 0, neg, neg, 0, 0, 0, 0]
    assert mask[1, 0, 2].tolist() == [0] * 9
    assert mask[2, 0, 0].tolist() == [0] * 9 and pos[0, 2].tolist() == [-94, -93, -92, -91]  # fallback row
    assert np.all(mask[:, :, 0] == mask[:, :, 3])  # non-causal: every expert token sees the same columns
    with pytest.raises(ValueError):
        expert_positions_and_mask([lc + 2], lc, 0)
