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
    sample_with_uniforms,
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


# ---------------------------------------------------------------------------------------------------
# the vectorised top-p sampler against the previous whole-vocabulary sampler


def _whole_vocabulary_sampler(logits: np.ndarray, u: np.ndarray, temperature: float, top_p: float,
                              masked_range: tuple[int, int] | None) -> np.ndarray:
    """The sampler before issue 14: float64 softmax of the whole vocabulary, per-row top-p, an index-order
    CDF over the vocabulary and one uniform per row."""
    z = np.array(logits, dtype=np.float32, copy=True, ndmin=2)
    if masked_range is not None:
        mask_traj_tokens(z, *masked_range)
    p = top_p_probs(z, temperature, top_p)
    cdf = np.cumsum(p, axis=1)
    ids = [np.searchsorted(cdf[r], u[r] * cdf[r, -1], side="right") for r in range(p.shape[0])]
    return np.minimum(np.array(ids, dtype=np.int64), p.shape[1] - 1)


def _logit_families(rng: np.random.Generator, v: int) -> dict[str, np.ndarray]:
    """Flat, peaked, spread and tied rows: each takes a different path through the sampler."""
    flat = rng.standard_normal((4, v)).astype(np.float32)
    peaked = (rng.standard_normal((4, v)) * 2).astype(np.float32)
    peaked[:, rng.integers(0, v, 6)] += 20.0
    dominant = rng.standard_normal((4, v)).astype(np.float32)
    dominant[:, 7] = 40.0  # one token above top_p on its own
    spread = (rng.standard_normal((4, v)) * 3).astype(np.float32)
    ties = np.round(rng.standard_normal((4, v)) * 2).astype(np.float32)  # many exactly equal logits
    return {"flat": flat, "peaked": peaked, "dominant": dominant, "spread": spread, "ties": ties}


@pytest.mark.parametrize("v", [300, 4310, 40_000])
def test_same_tokens_as_the_whole_vocabulary_sampler(v: int) -> None:
    rng = np.random.default_rng(v)
    masked = (v // 10, v // 10 + v // 5)
    for name, logits in _logit_families(rng, v).items():
        logits[:, masked[0]] += 30.0  # a masked token that would dominate
        for temperature, top_p in ((0.6, 0.98), (1.0, 0.5), (0.6, 1.0)):
            for draw in range(25):
                u = np.random.default_rng(draw).random(logits.shape[0])
                want = _whole_vocabulary_sampler(logits, u, temperature, top_p, masked)
                got = sample_with_uniforms(logits, u, temperature, top_p, masked)
                assert np.array_equal(got, want), (name, temperature, top_p, draw)


def test_draws_follow_the_top_p_distribution() -> None:
    """Many draws of one flat row (the histogram path) match `top_p_probs` (a chi-square bound)."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((1, 6000)).astype(np.float32) * 0.5
    logits[0, :40] += 4.0  # 40 likely tokens, a long flat tail cut by top-p
    p = top_p_probs(logits, 0.6, 0.98)[0]
    heavy = np.flatnonzero(p > 1e-3)
    u = np.random.default_rng(4).random(6000)
    ids = np.concatenate([sample_with_uniforms(np.repeat(logits, 200, axis=0), u[i:i + 200], 0.6, 0.98)
                          for i in range(0, u.size, 200)])
    assert p[ids].min() > 0  # nothing top-p removed is ever drawn
    observed = np.array([(ids == h).sum() for h in heavy] + [(~np.isin(ids, heavy)).sum()])
    expected = np.append(p[heavy], 1.0 - p[heavy].sum()) * ids.size
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < heavy.size + 1 + 6 * np.sqrt(2 * (heavy.size + 1))  # mean dof + 6 sigma


def test_sample_tokens_draws_one_uniform_per_row_from_the_generator() -> None:
    logits = np.random.default_rng(0).standard_normal((3, 500)).astype(np.float32)
    a = sample_tokens(logits, np.random.default_rng(9), 0.6, 0.98)
    b = sample_with_uniforms(logits, np.random.default_rng(9).random(3), 0.6, 0.98)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="3 rows of logits but 2 uniforms"):
        sample_with_uniforms(logits, np.zeros(2), 0.6, 0.98)
    with pytest.raises(ValueError, match="no finite entry"):
        sample_with_uniforms(np.full((1, 5), -np.inf, np.float32), np.zeros(1))
