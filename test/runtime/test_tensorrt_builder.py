"""Engine builder decisions (typing mode, profiles, Q/DQ detection) and the CUDA/TensorRT import errors.

Real TensorRT-RTX builds where a build is the point (FP8 Q/DQ); a fake TensorRT module only where
the code path needs TensorRT 10's weak typing, which RTX does not have (the API boundary).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from alpamayo_ros.runtime.tensorrt.builder import (
    BuildOptions,
    EngineBuildError,
    OnnxInfo,
    _configure_precision,
    build_graph,
    choose_typing,
    inspect_onnx,
    profile_shapes,
)
from alpamayo_ros.runtime.tensorrt.manifest import (
    DimRange,
    GraphDecl,
    TensorDecl,
    default_dim_ranges,
    load_onnx_manifest,
)
from alpamayo_ros.runtime.tensorrt.trt_module import RTX_MODULE, TensorRTUnavailableError, load_tensorrt


def qdq_onnx(path: Path, zero_point_type: int) -> Path:
    """x (B, 16) -> Q/DQ -> MatMul with a Q/DQ weight -> y (B, 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("QuantizeLinear", ["w", "sw", "zw"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(0.05, np.float32), "sx"),
        numpy_helper.from_array(np.array(0.02, np.float32), "sw"),
        helper.make_tensor("zx", zero_point_type, [], [0]),
        helper.make_tensor("zw", zero_point_type, [], [0]),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


QDQ_DECL = GraphDecl(
    "expert_step",
    "qdq.onnx",
    (TensorDecl("x", "float32", ("B", 16)),),
    (TensorDecl("y", "float32", ("B", 8)),),
)


def test_fp8_qdq_graph_builds_strongly_typed_and_is_recorded(tmp_path: Path) -> None:
    pytest.importorskip(RTX_MODULE)
    from onnx import TensorProto

    qdq_onnx(tmp_path / "qdq.onnx", TensorProto.FLOAT8E4M3FN)
    options = BuildOptions(precision="fp32", tensorrt_module=RTX_MODULE)
    entry, _ = build_graph(QDQ_DECL, tmp_path, tmp_path, {"B": DimRange(1, 4, 8)}, options, b"")
    assert entry.quantization == "fp8-qdq" and entry.strongly_typed
    assert entry.tensors[0].profile == {"min": [1, 16], "opt": [4, 16], "max": [8, 16]}
    assert (tmp_path / entry.file).stat().st_size == entry.bytes > 0


def test_onnx_inspection_tells_int8_from_fp8(tmp_path: Path) -> None:
    from onnx import TensorProto

    assert inspect_onnx(qdq_onnx(tmp_path / "a.onnx", TensorProto.INT8)) == OnnxInfo("fp32", "int8-qdq")
    assert inspect_onnx(qdq_onnx(tmp_path / "b.onnx", TensorProto.FLOAT8E4M3FN)) == OnnxInfo(
        "fp32", "fp8-qdq"
    )


def test_typing_mode_follows_onnx_dtype_and_tensorrt_generation() -> None:
    assert choose_typing("fp32", "fp32", weak_typing_available=True) is True
    assert choose_typing("fp16", "fp16", weak_typing_available=False) is True
    assert choose_typing("fp16", "fp32", weak_typing_available=True) is False  # TensorRT 10: FP16 flag
    with pytest.raises(EngineBuildError, match="strongly typed networks only"):
        choose_typing("bf16", "fp32", weak_typing_available=False)  # TensorRT 11 / RTX
    with pytest.raises(EngineBuildError, match="the ONNX graph is fp16; it cannot be built as bf16"):
        choose_typing("bf16", "fp16", weak_typing_available=True)
    with pytest.raises(EngineBuildError, match="precision must be one of"):
        choose_typing("int4", "fp32", weak_typing_available=True)


def test_profile_shapes_name_the_missing_dim_and_catch_manifest_drift() -> None:
    decl = GraphDecl("prefill", "p.onnx", (TensorDecl("input_ids", "int64", (1, "S")),), ())
    ranges = {"S": DimRange(1, 3000, 3200)}
    assert profile_shapes(decl, "input_ids", (1, -1), ranges) == ((1, 1), (1, 3000), (1, 3200))
    assert profile_shapes(decl, "input_ids", (1, 7), ranges) is None  # static in the ONNX: no profile
    with pytest.raises(EngineBuildError, match=r"pass --dim S=MIN:OPT:MAX"):
        profile_shapes(decl, "input_ids", (1, -1), {})
    with pytest.raises(EngineBuildError, match="has rank 3, manifest says"):
        profile_shapes(decl, "input_ids", (1, -1, 2), ranges)
    with pytest.raises(EngineBuildError, match="not in the ONNX manifest"):
        profile_shapes(decl, "position_ids", (3, 1, -1), ranges)


def test_dim_ranges_from_the_onnx_manifest(tmp_path: Path) -> None:
    graphs = {
        "vision": {"file": "v.onnx", "inputs": [{"name": "pixel_rows", "dtype": "float32", "shape": ["N", 720, 1536]}],
                   "outputs": [{"name": "image_embeds", "dtype": "float32", "shape": ["N", 180, 4096]}]},
    }  # fmt: skip
    (tmp_path / "v.onnx").write_bytes(b"")
    raw = {"format": "alpamayo_ros.onnx/4", "config_hash": "h", "prefix_capacity": 3200, "suffix_capacity": 256,
           "max_batch": 6, "prefill_query_blocks": 7, "graphs": graphs}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    ranges = default_dim_ranges(load_onnx_manifest(tmp_path))
    assert ranges["B"] == ranges["K"] == DimRange(1, 6, 6)
    assert ranges["T"] == DimRange(1, 64, 256)  # extend tokens per row: up to the suffix capacity
    assert ranges["N"] == DimRange(1, 4, 16)
    assert ranges["M"] == DimRange(1, 2880, 2880)  # 16 images x 180 tokens, from the vision output
    assert ranges["P"] == DimRange(1, 3200, 3200)  # the prompt
    assert ranges["S"] == DimRange(7, 3206, 3206)  # the prefill's padded prompt: whole query blocks
    raw["dims"] = {"S": [14, 3101, 3206]}
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert default_dim_ranges(load_onnx_manifest(tmp_path))["S"] == DimRange(14, 3101, 3206)  # explicit dims win
    raw["navigation_guidance"], raw["model_type"] = True, "alpamayo1_5"  # Alpamayo 1.5: 2K expert rows
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    guided = load_onnx_manifest(tmp_path)
    assert guided.model_type == "alpamayo1_5" and guided.max_expert_rows == 12
    assert default_dim_ranges(guided)["K"] == DimRange(1, 6, 12) and default_dim_ranges(guided)["B"] == DimRange(1, 6, 6)
    assert DimRange.parse("1:4:16") == DimRange(1, 4, 16) and DimRange.parse("8") == DimRange(8, 8, 8)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DimRange.parse("4:2:8")


class _Tensor:
    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, "FLOAT"


def test_weakly_typed_fp16_sets_flags_and_kv_io_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT 10 path (FP16 flag, fp16 KV I/O) through a fake TensorRT module: RTX has no weak typing."""
    fake = SimpleNamespace(
        __version__="10.13.0.35",
        BuilderFlag=SimpleNamespace(FP16="FP16", BF16="BF16", FP8="FP8", INT8="INT8"),
        DataType=SimpleNamespace(HALF="HALF", BF16="BF16"),
    )
    monkeypatch.setitem(sys.modules, "fake_tensorrt", fake)
    inputs = [_Tensor(n) for n in ("input_ids", "prefix_key_0", "prefix_value_1", "suffix_key_0", "suffix_mask")]
    outputs = [_Tensor(n) for n in ("logits", "new_key", "new_value_3")]
    network = SimpleNamespace(num_inputs=len(inputs), num_outputs=len(outputs),
                              get_input=inputs.__getitem__, get_output=outputs.__getitem__)  # fmt: skip
    flags: list[str] = []
    config: Any = SimpleNamespace(set_flag=flags.append)
    options = BuildOptions(precision="fp16", tensorrt_module="fake_tensorrt")
    _configure_precision(config, network, options, OnnxInfo("fp32", "fp8-qdq"), strongly_typed=False)  # type: ignore[arg-type]
    assert flags == ["FP16", "FP8"]
    halves = {t.name for t in inputs + outputs if t.dtype == "HALF"}
    assert halves == {"prefix_key_0", "prefix_value_1", "suffix_key_0", "new_key", "new_value_3"}
    flags.clear()
    _configure_precision(config, network, options, OnnxInfo("fp16", "none"), strongly_typed=True)  # type: ignore[arg-type]
    assert flags == []  # strongly typed: the ONNX decides


def test_missing_tensorrt_and_missing_driver_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TensorRTUnavailableError, match="python3-libnvinfer"):
        load_tensorrt("tensorrt_not_installed_here")
    (tmp_path / "stub_only_trt").mkdir()  # what tensorrt-stubs leaves: `tensorrt/__init__.pyi`, no module
    (tmp_path / "stub_only_trt" / "__init__.pyi").write_text("__version__: str\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TensorRTUnavailableError, match="holds no TensorRT"):
        load_tensorrt("stub_only_trt")
    pytest.importorskip("cuda.bindings")
    from alpamayo_ros.runtime.tensorrt.cuda_memory import CudaError, CudaRuntime, device_info

    if device_info() is not None:
        pytest.skip("a GPU is present; this checks the driverless error path")
    with pytest.raises(CudaError, match="cudaSetDevice failed"):
        CudaRuntime()


def test_a_reduced_precision_graph_with_fp32_masks_is_that_precision(tmp_path: Path) -> None:
    """A bf16 export keeps masks and pixels fp32 (graph_io): the graph's dtype is bf16; bf16 next to fp16 is an error."""
    import onnx
    from onnx import TensorProto, helper

    def graph(path: Path, *dtypes: int) -> Path:
        inputs = [helper.make_tensor_value_info(f"x{i}", d, [2]) for i, d in enumerate(dtypes)]
        nodes = [helper.make_node("Identity", [f"x{i}"], [f"y{i}"]) for i in range(len(dtypes))]
        outputs = [helper.make_tensor_value_info(f"y{i}", d, [2]) for i, d in enumerate(dtypes)]
        onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs)), path)
        return path

    assert inspect_onnx(graph(tmp_path / "a.onnx", TensorProto.FLOAT, TensorProto.BFLOAT16)).float_dtype == "bf16"
    assert inspect_onnx(graph(tmp_path / "b.onnx", TensorProto.FLOAT)).float_dtype == "fp32"
    with pytest.raises(EngineBuildError, match="mixed float input dtypes"):
        inspect_onnx(graph(tmp_path / "c.onnx", TensorProto.FLOAT16, TensorProto.BFLOAT16))
