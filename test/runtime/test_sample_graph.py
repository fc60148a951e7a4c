"""The device sampling graph (graphs.SampleGraph, run here by ONNX Runtime) against the host sampler."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.sampling import sample_with_uniforms

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sampler(tiny_model_dir, tmp_path_factory: pytest.TempPathFactory):
    """The exported `sample` graph of the tiny model's token layout in a 20k-token vocabulary (wider
    than the device window)."""
    import dataclasses

    import onnxruntime as ort
    import torch

    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.export import _example_inputs, check_standard_ops, graph_io
    from alpamayo_ros.runtime.graphs import SAMPLE_WINDOW, SampleGraph

    tiny = load_config(tiny_model_dir)
    cfg = dataclasses.replace(tiny, text=dataclasses.replace(tiny.text, vocab_size=20_000))
    model = type("Model", (), {"config": cfg})()
    module = SampleGraph(model).eval()  # type: ignore[arg-type]
    assert module.window == SAMPLE_WINDOW < 20_000
    io = graph_io(cfg)["sample"]
    path = tmp_path_factory.mktemp("sample") / "sample.onnx"
    b = torch.export.Dim("B", min=1, max=64)
    program = torch.onnx.export(module, _example_inputs("sample", cfg), dynamo=True, opset_version=18,
                                dynamic_shapes={"logits": {0: b}, "uniforms": {0: b}, "temperature": None,
                                                "top_p": None},
                                input_names=[i["name"] for i in io["inputs"]],
                                output_names=[o["name"] for o in io["outputs"]])
    program.save(str(path))
    assert check_standard_ops(path) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    masked = (cfg.layout.traj_token_start_idx, cfg.layout.traj_token_end_idx)
    return session, masked


def _run(session, logits: np.ndarray, u: np.ndarray, temperature: float, top_p: float):
    return session.run(None, {"logits": logits, "uniforms": u.astype(np.float32),
                              "temperature": np.array([temperature], np.float32),
                              "top_p": np.array([top_p], np.float32)})


def test_device_sampler_draws_the_host_samplers_tokens(sampler) -> None:
    session, masked = sampler
    rng = np.random.default_rng(0)
    covered_rows = flat_rows = 0
    for case in range(40):
        logits = (rng.standard_normal((6, 20_000)) * (0.5, 2.0, 4.0, 8.0)[case % 4]).astype(np.float32)
        logits[:, rng.integers(0, 20_000, 4)] += 12.0 if case % 2 else 0.0
        logits[:, masked[0] + 1] += 60.0  # a masked token that would win
        for temperature, top_p in ((0.6, 0.98), (1.0, 0.8)):
            u = rng.random(6)
            ids, covered = _run(session, logits, u, temperature, top_p)
            want = sample_with_uniforms(logits, u, temperature, top_p, masked)
            assert np.array_equal(ids[covered], want[covered]), case
            covered_rows += int(covered.sum())
            flat_rows += int((~covered).sum())
    assert covered_rows > 200 and flat_rows > 20  # both the window and the host fallback were exercised


def test_flat_rows_are_flagged_and_greedy_is_the_masked_argmax(sampler) -> None:
    session, masked = sampler
    flat = np.random.default_rng(1).standard_normal((3, 20_000)).astype(np.float32) * 0.1
    _, covered = _run(session, flat, np.full(3, 0.5), 0.6, 0.98)
    assert not covered.any()  # 2048 of 20,000 near-equal tokens hold far less than 98 %
    flat[:, masked[0] + 1] = 100.0
    ids, covered = _run(session, flat, np.full(3, 0.5), 0.0, 0.98)
    masked_logits = flat.copy()
    masked_logits[:, masked[0]:masked[1]] = -np.inf
    assert covered.all() and np.array_equal(ids, masked_logits.argmax(axis=1))
