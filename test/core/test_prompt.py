"""Prompt rendering and tokenization (spec §2.1)."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.prompt import PromptError, PromptSpec, build_prompt_template, render_prompt
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer


@pytest.fixture(scope="module")
def tok() -> AlpamayoTokenizer:
    return AlpamayoTokenizer.synthetic()


def test_render_small_prompt_exactly() -> None:
    spec = PromptSpec(camera_ids=(0, 6), num_frames=1, image_tokens=(2, 3), tokens_per_history=2)
    want = (
        "<|im_start|>system\nYou are a driving assistant that generates safe and accurate actions.<|im_end|>\n"
        "<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>"
        "<|traj_history_start|><|traj_history|><|traj_history|><|traj_history_end|>"
        "output the chain-of-thought reasoning of the driving process, then output the future trajectory."
        "<|im_end|>\n<|im_start|>assistant\n<|cot_start|>"
    )
    assert render_prompt(spec) == want


def test_render_alpamayo_1_5_variant() -> None:
    spec = PromptSpec(camera_ids=(1, 6), num_frames=2, image_tokens=(1,) * 4, tokens_per_history=1,
                      camera_text=True, frame_text=True, route_text="turn left")
    s = render_prompt(spec)
    assert ("user\nFront camera: frame 0 <|vision_start|><|image_pad|><|vision_end|>frame 1 <|vision_start|>"
            "<|image_pad|><|vision_end|>Front telephoto camera: frame 0 ") in s
    assert "<|traj_history_end|><|route_start|>turn left<|route_end|>output the" in s
    with pytest.raises(PromptError):
        PromptSpec(route_text="x", question="y")


def test_reference_prompt_token_layout(tok: AlpamayoTokenizer) -> None:
    lay = tok.layout
    t = build_prompt_template(tok, PromptSpec())
    ids = t.ids
    count = {k: int((ids == getattr(lay, k)).sum()) for k in
             ("image_pad", "vision_start", "vision_end", "traj_history", "traj_history_start", "traj_history_end",
              "cot_start", "cot_end", "im_start", "im_end", "traj_future_start")}
    assert count == {"image_pad": 2880, "vision_start": 16, "vision_end": 16, "traj_history": 48,
                     "traj_history_start": 1, "traj_history_end": 1, "cot_start": 1, "cot_end": 0,
                     "im_start": 3, "im_end": 2, "traj_future_start": 0}
    assert ids[-1] == lay.cot_start and ids[0] == lay.im_start
    assert len(t.image_token_spans) == 16
    for s, e in t.image_token_spans:
        assert e - s == 180 and ids[s - 1] == lay.vision_start and ids[e] == lay.vision_end
    # Images are back to back, then the history block.
    assert t.image_token_spans[1][0] - t.image_token_spans[0][1] == 2
    hist_start = int(np.flatnonzero(ids == lay.traj_history_start)[0])
    assert hist_start == t.image_token_spans[-1][1] + 1
    assert t.history_positions.tolist() == list(range(hist_start + 1, hist_start + 49))
    # The template is what tokenizing the rendered string gives, and it is cached.
    assert np.array_equal(ids, tok.encode(render_prompt(PromptSpec())))
    assert build_prompt_template(tok, PromptSpec()) is t


def test_fill_replaces_only_the_placeholders(tok: AlpamayoTokenizer) -> None:
    t = build_prompt_template(tok, PromptSpec())
    hist = tok.layout.hist_token_start_idx + np.arange(48) * 7 % 1000
    ids = t.fill(hist)
    assert np.array_equal(ids[t.history_positions], hist)
    other = np.ones(ids.shape, bool)
    other[t.history_positions] = False
    assert np.array_equal(ids[other], t.ids[other])
    assert not np.any(ids == tok.layout.traj_history)
    with pytest.raises(PromptError, match="48"):
        t.fill(hist[:47])
    assert not t.ids.flags.writeable


def test_spec_validation() -> None:
    with pytest.raises(PromptError, match="images"):
        PromptSpec(image_tokens=(180,) * 15)
