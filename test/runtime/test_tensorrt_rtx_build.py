"""The ONNX graph family parses and builds with a TensorRT builder (TensorRT-RTX stands in on a CPU machine).

TensorRT-RTX engines are not Jetson engines; this checks that the graphs use only ops and attributes
TensorRT's ONNX parser accepts (e.g. ScatterND without reduction) and build with dynamic profiles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_all_graphs_parse_and_build(tiny_onnx_dir: Path) -> None:
    trt = pytest.importorskip("tensorrt_rtx_bindings")
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    # (min, opt, max) per symbolic dim; S/M cover the real 16-image prompt of the tiny model
    ranges = {"N": (1, 4, 16), "S": (2, 3157, manifest["prefix_capacity"]), "M": (1, 2880, 2880),
              "B": (1, 6, 8), "K": (1, 6, 8)}
    logger = trt.Logger(trt.Logger.ERROR)
    for name, graph in manifest["graphs"].items():
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse_from_file(str(tiny_onnx_dir / graph["file"]))
        assert ok, (name, [str(parser.get_error(i)) for i in range(parser.num_errors)])
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for tensor in graph["inputs"]:
            shape = tensor["shape"]
            if any(isinstance(d, str) for d in shape):
                lo, opt, hi = ([ranges[d][j] if isinstance(d, str) else d for d in shape] for j in range(3))
                profile.set_shape(tensor["name"], lo, opt, hi)
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        assert engine is not None and engine.nbytes > 0, name
