"""Sampling utilities (spec §4): mask, temperature + top-p (parity with HF warpers), stop rule, CoC."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.model_config import SamplingConfig
from alpamayo_ros.core.sampling import (
    StopRule,
    extract_reasoning,
    make_stop_rule,
    mask_traj_tokens,
    reasoning_from_ids,
    replace_padding_after_eos,
    sample_step,
    sample_tokens,
    top_p_probs,
)


def _hf_kept(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    scores = torch.from_numpy(logits.astype(np.float32))
    scores = lp.TemperatureLogitsWarper(temperature)(None, scores)
    scores = lp.TopPLogitsWarper(top_p)(None, scores)
    return torch.isfinite(scores).numpy() & (scores.softmax(-1).numpy() > 0)


@pytest.mark.parametrize("scale", [0.05, 1.0, 6.0])  # flat (full-sort fallback) … peaked
def test_top_p_matches_transformers_warpers(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 100))
    logits = (rng.standard_normal((3, 5000)) * scale).astype(np.float32)
    logits[:, 100:300] = -np.inf  # a masked range, as for <i*>
    p = top_p_probs(logits, 0.6, 0.98)
    kept = _hf_kept(logits, 0.6, 0.98)
    mine = p > 0
    # Float summation order may flip a token right at the 2% boundary; nothing else may differ.
    assert (mine != kept).sum() <= 2
    assert np.allclose(p.sum(axis=1), 1.0) and not mine[:, 100:300].any()


def test_top_p_by_hand() -> None:
    probs = np.array([0.5, 0.3, 0.15, 0.04, 0.01])
    p = top_p_probs(np.log(probs)[None], temperature=1.0, top_p=0.9)[0]
    # Ascending cumsum 0.01, 0.05, 0.2, …: tokens with cumsum <= 0.1 are removed.
    assert np.allclose(p, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0, 0])
    one = top_p_probs(np.array([[5.0, 0.0, 0.0]]), temperature=0.1, top_p=0.5)[0]
    assert one.tolist() == [1.0, 0.0, 0.0]  # the top token is always kept
    t = top_p_probs(np.array([[1.0, 2.0]]), temperature=0.5, top_p=1.0)[0]
    assert np.allclose(t, np.exp([2, 4]) / np.exp([2, 4]).sum())
    with pytest.raises(ValueError):
        top_p_probs(np.array([[-np.inf, -np.inf]]))


def test_sampling_is_seeded_masked_and_follows_the_distribution() -> None:
    V = 50
    logits = np.zeros((4, V), np.float32)
    logits[:, 10:20] = 8.0  # the masked range would dominate
    a = sample_tokens(logits, np.random.default_rng(7), masked_range=(10, 20))
    b = sample_tokens(logits, np.random.default_rng(7), masked_range=(10, 20))
    assert np.array_equal(a, b) and not np.any((a >= 10) & (a < 20))
    assert logits[0, 10] == 8.0  # the caller's logits are not modified
    probs = np.array([0.6, 0.3, 0.1])
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_tokens(np.tile(np.log(probs), (100, 1)), rng, 1.0, 1.0) for _ in range(100)])
    freq = np.bincount(draws, minlength=3) / draws.size
    assert np.allclose(freq, probs, atol=0.02)
    z = np.zeros((1, 8), np.float32)
    assert np.isneginf(mask_traj_tokens(z, 2, 5)[0, 2:5]).all() and (z[0, 5:] == 0).all()


def test_stop_rule_one_more_token_after_all_rows_emit_eos() -> None:
    E, PAD = 99, 0
    rule = StopRule(batch=2, eos_id=E, max_new_tokens=50, pad_id=PAD)
    steps = [[1, 1], [1, 1], [E, 1], [5, 1], [6, E], [7, 8]]
    out = []
    for i, s in enumerate(steps):
        assert not rule.stopped, i
        out.append(rule.step(np.array(s)))
    assert rule.stopped and rule.stop_reason == "eos+1" and rule.n_generated == 6
    assert np.array_equal(np.array(out), steps)  # rows keep sampling after their EOS (HF does not pad them)
    with pytest.raises(RuntimeError):
        rule.step(np.array([1, 1]))


def test_stop_rule_hf_eos_and_max_length() -> None:
    E, IM_END, PAD = 99, 98, 0
    rule = StopRule(batch=2, eos_id=E, max_new_tokens=50, hf_eos_ids=(IM_END,), pad_id=PAD)
    assert rule.step(np.array([IM_END, 3])).tolist() == [IM_END, 3]
    assert rule.step(np.array([4, E])).tolist() == [PAD, E]  # finished row is padded
    assert not rule.stopped  # row 0 never emits <|traj_future_start|>
    assert rule.step(np.array([4, IM_END])).tolist() == [PAD, IM_END]
    assert rule.stopped and rule.stop_reason == "hf_eos"
    rule = StopRule(batch=1, eos_id=E, max_new_tokens=3)
    for _ in range(3):
        rule.step(np.array([1]))
    assert rule.stopped and rule.stop_reason == "max_length"


def test_replace_padding_after_eos() -> None:
    seqs = np.array([[1, 9, 2, 9, 3], [1, 2, 3, 4, 5]])
    assert replace_padding_after_eos(seqs, 9, 0).tolist() == [[1, 9, 0, 0, 0], [1, 2, 3, 4, 5]]


def test_extract_reasoning() -> None:
    prompt = "<|im_start|>assistant\n<|cot_start|>"
    assert extract_reasoning(prompt + " Slow down for the pedestrian. <|cot_end|><|traj_future_start|>x") == (
        "Slow down for the pedestrian.")
    assert extract_reasoning(prompt + "no end") == ""
    assert extract_reasoning("<|cot_start|>a<|cot_start|> b <|cot_end|> c <|cot_end|>") == "b"


def test_reference_decode_loop_on_synthetic_logits() -> None:
    """sample_step + make_stop_rule + reasoning_from_ids together, with the real token layout."""
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer

    tok = AlpamayoTokenizer.synthetic()
    lay, cfg = tok.layout, SamplingConfig()
    script = [tok.encode(t).tolist() for t in ("Stop for the light.", "Go straight now.")]
    script = [s + [lay.cot_end, lay.traj_future_start, lay.traj_token_start_idx + 5] for s in script]
    rule = make_stop_rule(lay, cfg, batch=2)
    rng = np.random.default_rng(0)
    out: list[np.ndarray] = []
    while not rule.stopped:
        logits = np.zeros((2, lay.vocab_size), np.float32)
        logits[:, lay.traj_token_start_idx:lay.traj_token_end_idx] = 50.0  # must never win: masked
        for r in range(2):
            logits[r, script[r][min(len(out), len(script[r]) - 1)]] = 30.0
        out.append(rule.step(sample_step(logits, rng, lay, cfg)))
    gen = np.stack(out, axis=1)
    assert rule.stop_reason == "eos+1"
    assert gen.shape[1] == max(len(s) for s in script) - 1 + 1  # one token after the last row's EOS
    assert not np.any((gen >= lay.traj_token_start_idx) & (gen < lay.traj_token_end_idx))
    prompt = tok.encode("<|im_start|>assistant\n<|cot_start|>")
    assert reasoning_from_ids(tok, prompt, gen) == ["Stop for the light.", "Go straight now."]
