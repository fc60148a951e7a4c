"""Cost properties of a tick, asserted by counting (DESIGN.md §4): vision once per frame, one prefill,
K candidates as one batch over a prefix stored once."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.backend import SamplingRequest

pytestmark = pytest.mark.slow


class Spy:
    """Records the calls an orchestrator makes on an executor and the prefix buffers it feeds."""

    def __init__(self, executor) -> None:
        self.ex, self.calls = executor, []
        self.prefix_ids: set[int] = set()
        for name in ("encode_images", "prefill", "start_decode", "decode", "run_expert"):
            setattr(self, name, self._wrap(name))

    def _wrap(self, name):
        fn = getattr(self.ex, name)

        def call(*args, **kwargs):
            if name == "encode_images":
                self.calls.append((name, args[0].shape[0]))
            elif name == "decode":
                self.calls.append((name, len(args[0])))
            else:
                self.calls.append((name, None))
            if name in ("decode", "run_expert"):
                pk = self.ex.kv.prefix_view("key")
                assert pk.ndim == 4, pk.shape  # (L, Hkv, P, Dh): batch 1, never K rows
                self.prefix_ids.add(pk.__array_interface__["data"][0])
            return fn(*args, **kwargs)

        return call

    def __getattr__(self, item):
        return getattr(self.ex, item)


@pytest.mark.parametrize("backend_fixture", ["ort_backend"])  # torch counters: test_backend_parity
def test_tick_counts(backend_fixture, request, synthetic) -> None:
    backend = request.getfixturevalue(backend_fixture)
    orch = backend.orchestrator
    orch.vision_cache.clear()
    spy = Spy(orch.executor)
    orch.executor = spy
    try:
        req = SamplingRequest(num_candidates=6, seed=2, max_generation_length=12)
        first = backend.infer(synthetic.tick(10).inputs, req)
        assert first.counters["images_encoded"] == 16 and first.counters["vision_calls"] == 1
        assert first.counters["prefill_calls"] == 1
        assert first.counters["prefix_kv_copies"] == 0
        assert [c for c in spy.calls if c[0] == "prefill"] == [("prefill", None)]
        decodes = [c for c in spy.calls if c[0] == "decode"]
        assert decodes and all(b == 6 for _, b in decodes)  # K candidates as one batch
        assert first.counters["decode_calls"] == len(decodes)
        assert [c for c in spy.calls if c[0] == "run_expert"] == [("run_expert", None)]
        assert first.counters["expert_steps"] == 10
        spy.calls.clear()
        second = backend.infer(synthetic.tick(11).inputs, req)  # frames slide by one per camera
        assert second.counters["images_encoded"] == 4 and second.counters["vision_cache_hits"] == 12
        assert [c for c in spy.calls if c[0] == "encode_images"] == [("encode_images", 4)]
        assert second.counters["prefill_calls"] == 1 and second.counters["prefix_kv_copies"] == 0
        same = backend.infer(synthetic.tick(11).inputs, req)  # same frames: nothing to encode
        assert same.counters["images_encoded"] == 0 and same.counters.get("vision_calls", 0) == 0
        assert len(orch.vision_cache) == 16
        assert len(spy.prefix_ids) == 1  # decode/expert read the one buffer prefill wrote, never a copy
        assert np.asarray(same.actions).shape == (6, 64, 2)
    finally:
        orch.executor = spy.ex


def test_wrong_grid_is_a_clear_error(ort_backend, synthetic) -> None:
    from alpamayo_ros.core.image_preprocess import PreprocessedFrame
    from alpamayo_ros.core.model_inputs import ImageInput
    from alpamayo_ros.runtime.orchestrator import InputError

    tick = synthetic.tick(20)
    small = PreprocessedFrame(0, 1, np.zeros((64, 64, 3), np.uint8), (64, 64))
    images = [ImageInput(small)] + list(tick.inputs.images[1:])
    import dataclasses

    bad = dataclasses.replace(tick.inputs, images=images)
    with pytest.raises(InputError, match=r"grid \[1, 4, 4\].*\[1, 20, 36\]"):
        ort_backend.infer(bad, SamplingRequest(num_candidates=2, max_generation_length=4))


@pytest.mark.parametrize("backend_fixture", ["ort_backend", "torch_backend"])
def test_no_whole_cache_copies_on_the_host(backend_fixture, request, synthetic) -> None:
    """Host allocations (numpy, traced) of a prefill and a decode step stay far below the prompt's K/V: the
    prefill writes it into the prefix buffer in place and hands back only the logits, a decode step only
    the logits and the new token's K/V."""
    import tracemalloc

    from alpamayo_ros.runtime.orchestrator import TickStats

    backend = request.getfixturevalue(backend_fixture)
    orch, ex = backend.orchestrator, backend.orchestrator.executor
    inputs = synthetic.tick(30).inputs
    feats = orch.vision_cache.features(inputs.images, ex, TickStats())
    ids = np.asarray(inputs.input_ids, dtype=np.int64)
    args = (ids, np.asarray(inputs.position_ids, dtype=np.int64), feats,
            np.flatnonzero(ids == ex.config.layout.image_pad).astype(np.int64))
    embeds, deepstack = ex.stack_features(feats)
    ex.prefill(*args)  # warm-up
    cache = 2 * ex.kv.prefix_view("key", ids.shape[0]).nbytes  # the prompt's K and V
    batch, vocab = 6, ex.config.text.vocab_size
    ex.start_decode(batch)
    mask = np.zeros((batch, ex.config.suffix_capacity), np.float32)
    positions = np.broadcast_to(ids.shape[0], (3, batch, 1)).astype(np.int64)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        logits = ex.prefill(*args)
        prefill_peak = tracemalloc.get_traced_memory()[1] - start
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        step = ex.decode(np.zeros(batch, np.int64), positions, 0, mask)
        decode_peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert logits.shape == (vocab,) and step.shape == (batch, vocab)
    assert prefill_peak < embeds.nbytes + deepstack.nbytes + cache / 4, (prefill_peak, cache)  # features + small
    assert decode_peak < 4 * step.nbytes + cache / 4, (decode_peak, cache)
