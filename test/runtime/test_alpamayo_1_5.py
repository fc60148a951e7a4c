"""Alpamayo 1.5 in the runtime: navigation guidance and questions on the backends, against the reference.

The reference (runtime/reference.py) is NVIDIA's guided sampler written plainly: the prompt without the
route prefilled in full, the sampled reasoning forwarded over it, the expert on both caches, the
velocities blended. The backends instead reuse the prefill's K/V for the prompt head the two prompts
share and run one `extend` call and 2K expert rows; the results must be the same.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.core.backend import SamplingRequest
from alpamayo_ros.core.model_inputs import build_question_inputs
from alpamayo_ros.runtime import create_backend
from alpamayo_ros.runtime.reference import answer_question, sample_trajectories
from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs
from alpamayo_ros.runtime.weights import load_model

ROUTE = "Turn left onto Main St in 40m"
REQUEST = SamplingRequest(num_candidates=2, seed=5, max_generation_length=16, nav_guidance_weight=1.5,
                          noise_temperature=0.6)
FAINT = 1e-6  # almost only the unguided branch


@pytest.fixture(scope="module")
def synthetic_1_5(tiny_1_5_model_dir: Path) -> SyntheticInputs:
    return SyntheticInputs(tiny_1_5_model_dir)


@pytest.fixture(scope="module")
def tick(synthetic_1_5: SyntheticInputs):
    return synthetic_1_5.tick(5, route=ROUTE, unguided=True)


@pytest.fixture(scope="module")
def reference(tiny_1_5_model_dir: Path, synthetic_1_5: SyntheticInputs, tick):
    """The reference's results, computed once: (shared, weight) -> ReferenceResult."""
    model = load_model(tiny_1_5_model_dir)
    cache: dict[tuple[bool, float], object] = {}

    def run(shared: bool, weight: float):
        if (shared, weight) not in cache:
            request = replace(REQUEST, shared_reasoning=shared, nav_guidance_weight=weight)
            cache[(shared, weight)] = sample_trajectories(model, synthetic_1_5.tokenizer, tick.inputs, tick.hist_xyz,
                                                          tick.hist_rot, request)
        return cache[(shared, weight)]

    run.model = model  # type: ignore[attr-defined]
    return run


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "shared"), [("torch", False), ("onnxruntime", True)],
                         ids=["torch-per_candidate", "onnxruntime-shared_reasoning"])
def test_guided_ticks_equal_the_reference(backend: str, shared: bool, tiny_1_5_model_dir: Path, tiny_1_5_onnx_dir: Path,
                                          tick, reference) -> None:
    ref, ref_faint = reference(shared, 1.5), reference(shared, FAINT)
    assert np.abs(ref.actions - reference(shared, 0.0).actions).max() > 1e-3  # guidance changes the trajectories
    be = create_backend(backend, tiny_1_5_model_dir, mode="shared_reasoning" if shared else "per_candidate")
    request = replace(REQUEST, shared_reasoning=shared)
    try:
        out = be.infer(tick.inputs, request)
        out_faint = be.infer(tick.inputs, replace(request, nav_guidance_weight=FAINT))
    finally:
        be.close()
    rows = 1 if shared else 2
    assert [row for row in out.generated_ids[:rows]] == [list(r) for r in ref.token_ids]
    # the unguided branch alone agrees to float32 noise
    np.testing.assert_allclose(out_faint.actions, ref_faint.actions, atol=1e-4)
    # at w = 1.5 the blend extrapolates: the random tiny expert can amplify float32 noise (the reference
    # prefills the unguided head itself) in single elements up to ~4e-4 of actions of magnitude ~2
    np.testing.assert_allclose(out.actions, ref.actions, atol=1e-3)
    assert out.nav_guidance_weight == 1.5
    # one prefill (the unguided prompt's head is the prefill's own), one extend, decode as without guidance
    assert (out.counters["prefill_calls"], out.counters["extend_calls"]) == (1, 1)
    assert out.counters["extend_tokens"] < tick.inputs.unguided.seq_len  # far less than a second prefill


def test_weight_one_is_plain_conditioning_and_no_route_no_guidance(tiny_1_5_model_dir: Path,
                                                                   synthetic_1_5: SyntheticInputs, tick) -> None:
    be = create_backend("torch", tiny_1_5_model_dir)
    try:
        plain = be.infer(tick.inputs, replace(REQUEST, nav_guidance_weight=0.0))
        one = be.infer(tick.inputs, replace(REQUEST, nav_guidance_weight=1.0))
        # (1 - 1)·v_unguided + 1·v_route, computed in the graph: exactly the plain tick's numbers
        np.testing.assert_array_equal(one.actions, plain.actions)
        assert one.generated_ids == plain.generated_ids and "extend_calls" not in plain.counters
        no_route = be.infer(synthetic_1_5.tick(5).inputs, REQUEST)  # nothing to guide by: unguided tick
        assert no_route.nav_guidance_weight == 0.0 and "extend_calls" not in no_route.counters
        # the initial noise temperature scales the starting point (0.6 here): other trajectories than T = 1
        hot = be.infer(tick.inputs, replace(REQUEST, nav_guidance_weight=0.0, noise_temperature=1.0))
        assert hot.generated_ids == plain.generated_ids and np.abs(hot.actions - plain.actions).max() > 1e-4
    finally:
        be.close()


@pytest.mark.slow
def test_answers_equal_the_reference(tiny_1_5_model_dir: Path, tiny_1_5_onnx_dir: Path, synthetic_1_5: SyntheticInputs,
                                     tick, reference) -> None:
    inputs = build_question_inputs(synthetic_1_5.frames(5), "Is the road ahead clear?", synthetic_1_5.tokenizer,
                                   synthetic_1_5.cfg)
    answer_end = synthetic_1_5.tokenizer.layout.special_id("answer_end")
    expected = {}
    for seed, temperature in ((1, 0.6), (3, 0.0)):
        request = replace(REQUEST, seed=seed, temperature=temperature)
        expected[seed] = (request, *answer_question(reference.model, synthetic_1_5.tokenizer, inputs, request, 12))
    for backend in ("torch", "onnxruntime"):
        be = create_backend(backend, tiny_1_5_model_dir)
        try:
            be.infer(tick.inputs, REQUEST)  # a tick first: the question reuses its image embeddings
            for request, tokens, text in expected.values():
                out = be.answer(inputs, request, 12)
                assert (out.num_tokens, out.text) == (len(tokens), text), (backend, request.seed)
                assert out.complete == (tokens[-1] == answer_end)
            assert len(be.orchestrator.vision_cache) == 16  # the question's frames are the tick's: all cached
        finally:
            be.close()
