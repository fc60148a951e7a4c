"""runtime layer of alpamayo_ros: inference backends (torch, onnxruntime, tensorrt, kinematic).

`create_backend(name, model_dir, **options)` builds a `core.backend.TrajectoryBackend`. Heavy
modules (torch, onnxruntime, tensorrt) are imported only by the backend that needs them.
See docs/runtime.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BACKENDS = ("torch", "onnxruntime", "tensorrt", "kinematic")
_GRAPH_OPTIONS = ("prefix_capacity", "suffix_capacity", "max_candidates", "num_threads", "onnx_dir", "auto_export",
                  "cpu_mem_arena", "retain_heap", "spin_threads")


def create_backend(name: str, model_dir: str | Path, **options: Any) -> Any:
    """Build a backend by name.

    options: mode ("per_candidate" | "shared_reasoning"), num_threads, prefix_capacity,
    suffix_capacity, max_candidates, onnx_dir (onnxruntime; default MODEL_DIR/onnx), auto_export
    (onnxruntime: export once into ~/.cache/alpamayo_ros/onnx when MODEL_DIR/onnx is missing),
    cpu_mem_arena (onnxruntime; default False: its chunk doubling costs ~40 % peak RSS on a mid-size model),
    retain_heap (onnxruntime; default True: glibc keeps the per-call temporaries on the heap instead of mapping
    them fresh every call; see onnx_backend.retain_freed_memory and docs/benchmarks.md for the measurements),
    spin_threads (onnxruntime; default False: intra-op workers block between kernels instead of busy-waiting on
    a core the rest of the node needs).
    """
    mode = options.pop("mode", "per_candidate")
    if name == "kinematic":
        from alpamayo_ros.runtime.kinematic import KinematicBackend

        return KinematicBackend(model_dir, **options)
    if not Path(model_dir, "config.json").is_file():
        raise FileNotFoundError(
            f"{Path(model_dir) / 'config.json'} not found: `model_dir` must be a model directory "
            f"(make a tiny one with `alpamayo-ros make-tiny-model DIR`)"
        )
    if name in ("torch", "onnxruntime"):
        unknown = set(options) - set(_GRAPH_OPTIONS)
        if unknown:
            raise TypeError(f"unknown options for backend {name!r}: {sorted(unknown)}; known: {_GRAPH_OPTIONS}")
    if name == "torch":
        try:
            from alpamayo_ros.runtime.torch_backend import build_torch_executor
        except ImportError as exc:
            raise ImportError(f"backend 'torch' needs PyTorch: pip install 'alpamayo_ros[torch]' ({exc})") from exc
        executor: Any = build_torch_executor(model_dir, **options)
    elif name == "onnxruntime":
        try:
            from alpamayo_ros.runtime.onnx_backend import build_onnx_executor
        except ImportError as exc:
            raise ImportError(f"backend 'onnxruntime' needs onnxruntime: pip install 'alpamayo_ros[onnx]' ({exc})") from exc
        executor = build_onnx_executor(model_dir, **options)
    elif name == "tensorrt":
        try:
            from alpamayo_ros.runtime.tensorrt import backend as trt_backend  # type: ignore[attr-defined]
        except ImportError as exc:
            raise ImportError(
                "backend 'tensorrt' is not available here: it needs alpamayo_ros/runtime/tensorrt/backend.py, "
                f"TensorRT and cuda-python (pip install 'alpamayo_ros[tensorrt]' on a Jetson/GPU host) ({exc})"
            ) from exc
        if not hasattr(trt_backend, "build_tensorrt_executor"):
            return trt_backend.TensorRTBackend(model_dir, mode=mode, **options)
        executor = trt_backend.build_tensorrt_executor(model_dir, **options)
    else:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    from alpamayo_ros.runtime.graph_backend import GraphBackend

    return GraphBackend(name, model_dir, executor, mode=mode)
