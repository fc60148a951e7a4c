"""`alpamayo-ros quantize` on the tiny model: FP8 Q/DQ graphs from Model Optimizer, calibrated on a
replayed bag, that ONNX Runtime runs and the TensorRT-RTX parser accepts (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("modelopt", reason="requirements/quantize.txt (make setup installs it)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(tiny_model_dir: Path, tiny_onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alpamayo_ros.runtime.quantize import main
    from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag

    tmp = tmp_path_factory.mktemp("quantize")
    make_demo_bag(tmp / "bag", DemoBagConfig(duration_s=10.0))
    out = tmp / "onnx-fp8"
    assert main([str(tiny_model_dir), "--bag", str(tmp / "bag"), "--out", str(out), "--ticks", "1",
                 "--graphs", "decode,text", "--expert"]) == 0
    return out


def test_quantized_graphs_carry_fp8_qdq_and_a_record(quantized: Path, tiny_onnx_dir: Path) -> None:
    import onnx

    from alpamayo_ros.runtime.tensorrt.builder import inspect_onnx

    manifest = json.loads((quantized / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["mode"] == "fp8" and q["graphs"] == ["decode", "expert_step", "text"]
    assert q["calibration"]["ticks"] == 1 and q["calibration"]["samples"]["text"] > q["calibration"]["samples"]["decode"]
    for name in q["graphs"]:
        assert inspect_onnx(quantized / f"{name}.onnx").quantization == "fp8-qdq"
        graph = onnx.load(str(quantized / f"{name}.onnx"), load_external_data=False).graph
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        producers = {o: n.op_type for n in graph.node for o in n.output}
        fed = [m for m in matmuls if any(producers.get(i) == "DequantizeLinear" for i in m.input)]
        assert len(fed) >= len(matmuls) // 2  # the projections (attention score MatMuls may stay high precision)
    for name in ("vision", "prefill", "sample"):  # left as exported
        assert inspect_onnx(quantized / f"{name}.onnx").quantization == "none"
    assert (quantized / "weights.bin").stat().st_size == (tiny_onnx_dir / "weights.bin").stat().st_size


def test_onnxruntime_runs_the_quantized_model_close_to_fp32(quantized: Path, tiny_model_dir: Path, synthetic) -> None:
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.core.flow_matching import make_noise
    from alpamayo_ros.runtime import create_backend

    tick = synthetic.tick(4)
    request = SamplingRequest(num_candidates=2, temperature=0.0, max_generation_length=6)
    runs = []
    for onnx_dir in (None, quantized):
        backend = create_backend("onnxruntime", tiny_model_dir, **({"onnx_dir": onnx_dir} if onnx_dir else {}))
        try:
            runs.append(backend.infer(tick.inputs, request, noise=make_noise(2, 5)))
        finally:
            backend.close()
    fp32, fp8 = runs
    diff = np.abs(fp32.actions - fp8.actions).max()
    assert np.isfinite(fp8.actions).all() and 0.0 < diff < 1.0  # FP8 rounding: different, not broken


def test_tensorrt_parser_accepts_the_qdq_graphs(quantized: Path) -> None:
    from alpamayo_ros.runtime.tensorrt.builder import parse_onnx
    from alpamayo_ros.runtime.tensorrt.trt_module import RTX_MODULE

    trt = pytest.importorskip(RTX_MODULE)
    logger = trt.Logger(trt.Logger.ERROR)
    for name in ("decode", "text", "expert_step"):
        parsed = parse_onnx(trt, quantized / f"{name}.onnx", logger)  # raises naming rejected nodes
        network = parsed.network  # (parsed holds the parser, which owns the weights)
        layers = {network.get_layer(i).type for i in range(network.num_layers)}
        assert {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE} <= layers, name  # the Q/DQ nodes made it in


def test_nvfp4_and_a_bf16_export_are_clear_errors(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime.quantize import quantize_onnx_dir

    with pytest.raises(ValueError, match="NVFP4 is Model Optimizer's PyTorch path"):
        quantize_onnx_dir(tiny_onnx_dir, tmp_path / "q", {"decode": []}, mode="nvfp4")
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    for entry in manifest["graphs"].values():
        (bf16 / entry["file"]).write_bytes(b"")
    (bf16 / "manifest.json").write_text(json.dumps({**manifest, "dtype": "bfloat16"}))
    with pytest.raises(ValueError, match="quantize a float32 export"):
        quantize_onnx_dir(bf16, tmp_path / "q2", {"decode": []})
