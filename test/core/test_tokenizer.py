"""Alpamayo tokenizer extension (spec §2.2): ids derived from the base vocabulary size."""

from __future__ import annotations

import json

import pytest

from alpamayo_ros.core.model_config import (
    SPECIAL_TOKEN_KEYS,
    SPECIAL_TOKEN_KEYS_1_5,
    TokenLayout,
    load_model_dir_config,
)
from alpamayo_ros.core.tokenizer import (
    AlpamayoTokenizer,
    TokenizerError,
    build_synthetic_base_tokenizer,
    extend_tokenizer,
    layout_from_tokenizer,
    main,
    prepare_tokenizer,
)

# Spec §2.2 table, written out (not derived) so the derivation is checked against it.
SPEC_IDS = {
    "<i0>": 151669, "<i2999>": 154668, "<i3000>": 154669, "<i3999>": 155668,
    "<|prompt_start|>": 155669, "<|prompt_end|>": 155670, "<|image_start|>": 155671, "<|image_pre_tkn|>": 155672,
    "<|image_end|>": 155673, "<|traj_history_start|>": 155674, "<|traj_history_pre_tkn|>": 155675,
    "<|traj_history_end|>": 155676, "<|cot_start|>": 155677, "<|cot_end|>": 155678,
    "<|meta_action_start|>": 155679, "<|meta_action_end|>": 155680, "<|traj_future_start|>": 155681,
    "<|traj_future_pre_tkn|>": 155682, "<|traj_future_end|>": 155683, "<|traj_history|>": 155684,
    "<|traj_future|>": 155685, "<|vectorized_wm|>": 155686, "<|vectorized_wm_start|>": 155687,
    "<|vectorized_wm_end|>": 155688, "<|vectorized_wm_pre_tkn|>": 155689, "<|route_start|>": 155690,
    "<|route_pad|>": 155691, "<|route_end|>": 155692, "<|question_start|>": 155693, "<|question_end|>": 155694,
    "<|answer_start|>": 155695, "<|answer_end|>": 155696, "<|image_pad|>": 151655, "<|vision_start|>": 151652,
    "<|vision_end|>": 151653, "<|im_end|>": 151645, "<|endoftext|>": 151643,
}  # fmt: skip


@pytest.fixture(scope="module")
def full_size() -> AlpamayoTokenizer:
    # A base with the real Qwen3-VL size (151643 regular + 26 added tokens = 151669).
    return AlpamayoTokenizer.synthetic(pad_regular_to=151643)


def test_real_size_base_gives_every_spec_id(full_size: AlpamayoTokenizer) -> None:
    for text, want in SPEC_IDS.items():
        assert full_size.tok.token_to_id(text) == want, text
    lay = full_size.layout
    assert lay == TokenLayout()  # the reference defaults
    assert lay.vocab_size == 155697 == full_size.tok.get_vocab_size(with_added_tokens=True)
    assert (lay.traj_token_start_idx, lay.hist_token_start_idx, lay.traj_token_end_idx) == (151669, 154669, 155669)
    assert (lay.cot_start, lay.cot_end, lay.traj_future_start, lay.traj_history) == (155677, 155678, 155681, 155684)


def test_small_base_layout_is_shifted_not_hardcoded() -> None:
    tok = AlpamayoTokenizer.synthetic()
    base = build_synthetic_base_tokenizer().get_vocab_size(with_added_tokens=True)
    lay = tok.layout
    assert lay.traj_token_start_idx == base == 256 + 26
    assert lay.cot_start == base + 4000 + SPECIAL_TOKEN_KEYS.index("cot_start")
    assert lay.vocab_size == base + 4000 + 28
    assert tok.token_to_id("<|image_pad|>") == lay.image_pad < base
    # A smaller trajectory vocabulary moves every special id.
    small = AlpamayoTokenizer.synthetic(traj_vocab_size=100, future_bins=75)
    assert small.token_to_id("<|prompt_start|>") == base + 100


def test_special_tokens_are_single_tokens_and_round_trip() -> None:
    tok = AlpamayoTokenizer.synthetic()
    text = "<|im_start|>user\nhé 1<|traj_history_start|><|traj_history|><|cot_start|>go<|cot_end|><i3><|traj_future_start|>"
    ids = tok.encode(text).tolist()
    lay = tok.layout
    for key in ("traj_history_start", "traj_history", "cot_start", "cot_end", "traj_future_start"):
        assert ids.count(lay.special_id(key)) == 1
    assert ids.count(lay.traj_token_start_idx + 3) == 1
    assert tok.decode(ids) == text
    assert "cot_start" not in tok.decode(ids, skip_special_tokens=True)


def test_errors() -> None:
    ext = extend_tokenizer(build_synthetic_base_tokenizer())
    with pytest.raises(TokenizerError, match="already extended"):
        extend_tokenizer(ext)
    with pytest.raises(TokenizerError, match="<i0>"):
        layout_from_tokenizer(build_synthetic_base_tokenizer())
    with pytest.raises(TokenizerError, match="differ"):
        layout_from_tokenizer(ext, future_bins=3000, traj_vocab_size=4001)


def test_prepare_tokenizer_cli(tmp_path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    build_synthetic_base_tokenizer().save(str(base / "tokenizer.json"))
    out = tmp_path / "out"
    assert main([str(base), str(out)]) == 0
    loaded = AlpamayoTokenizer.from_file(out)
    assert loaded.layout.traj_token_start_idx == 282
    meta = json.loads((out / "token_layout.json").read_text())
    assert meta["cot_start_id"] == loaded.layout.cot_start and meta["vocab_size"] == loaded.layout.vocab_size
    assert main([str(tmp_path / "missing"), str(out)]) == 2
    assert prepare_tokenizer(base, tmp_path / "o2").vocab_size == loaded.layout.vocab_size


def test_layout_from_model_config(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"traj_vocab_size": 4000, "traj_token_start_idx": 151669, "vocab_size": 155697, "min_pixels": 163840}))
    cfg = load_model_dir_config(tmp_path)
    assert TokenLayout.from_config(cfg) == TokenLayout()
    with pytest.raises(ValueError, match="vocab_size"):
        TokenLayout.from_config({"traj_token_start_idx": 151669, "vocab_size": 155000})
    with pytest.raises(FileNotFoundError):
        load_model_dir_config(tmp_path / "nope")


def test_alpamayo_1_5_names_its_unused_tokens_padding_with_the_same_ids(full_size: AlpamayoTokenizer) -> None:
    tok15 = AlpamayoTokenizer.synthetic(pad_regular_to=151643, special_keys=SPECIAL_TOKEN_KEYS_1_5)
    renamed = {"<|image_pre_tkn|>": "<|_padding_0|>", "<|traj_history_pre_tkn|>": "<|_padding_1|>",
               "<|meta_action_start|>": "<|_padding_2|>", "<|meta_action_end|>": "<|_padding_3|>",
               "<|traj_future_pre_tkn|>": "<|_padding_4|>", "<|vectorized_wm|>": "<|_padding_5|>",
               "<|vectorized_wm_start|>": "<|_padding_6|>", "<|vectorized_wm_end|>": "<|_padding_7|>",
               "<|vectorized_wm_pre_tkn|>": "<|_padding_8|>"}
    for text, want in SPEC_IDS.items():
        assert tok15.tok.token_to_id(renamed.get(text, text)) == want, text
        if text in renamed:
            assert tok15.tok.token_to_id(text) is None
    lay = tok15.layout  # the names are detected from the tokenizer itself
    assert lay.special_keys == SPECIAL_TOKEN_KEYS_1_5 and lay != full_size.layout
    assert (lay.vocab_size, lay.special_id("route_start"), lay.special_id("answer_start")) == (155697, 155690, 155695)
    assert lay == TokenLayout.from_config({"model_type": "alpamayo1_5"})
    assert full_size.layout == TokenLayout.from_config({"model_type": "alpamayo_r1"}) == TokenLayout.from_config({})


def test_prepare_tokenizer_for_alpamayo_1_5(tmp_path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    build_synthetic_base_tokenizer().save(str(base / "tokenizer.json"))
    assert main([str(base), str(tmp_path / "out"), "--variant", "alpamayo1_5"]) == 0
    loaded = AlpamayoTokenizer.from_file(tmp_path / "out")
    assert loaded.layout.special_keys == SPECIAL_TOKEN_KEYS_1_5
    assert json.loads((tmp_path / "out" / "token_layout.json").read_text())["_padding_0_id"] == 282 + 4000 + 3
    with pytest.raises(TokenizerError, match="unknown variant"):
        prepare_tokenizer(base, tmp_path / "o2", variant="alpamayo2")
