"""`create_backend("tensorrt", model_dir, ...)`: the shared orchestrator over TensorRT engines.

Only execution differs from the ONNX Runtime backend: `build_tensorrt_executor` makes the
executor, and `runtime.graph_backend.GraphBackend` (the same class every graph backend uses)
wraps it with the tokenizer and the orchestrator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alpamayo_ros.runtime.graph_backend import GraphBackend
from alpamayo_ros.runtime.tensorrt.executor import MAX_EULER_STEPS, TensorRTExecutor
from alpamayo_ros.runtime.tensorrt.trt_module import DEFAULT_MODULE

_CAPACITY_OPTIONS = ("prefix_capacity", "suffix_capacity", "max_candidates")
OPTIONS = (
    *_CAPACITY_OPTIONS,
    "engine_dir",
    "use_cuda_graphs",
    "tensorrt_module",
    "verify_checksums",
    "max_steps",
)


def default_engine_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / "engines"


def build_tensorrt_executor(model_dir: str | Path, **options: Any) -> TensorRTExecutor:
    """options: engine_dir (default MODEL_DIR/engines), use_cuda_graphs (True), tensorrt_module,
    verify_checksums (sha256 of every engine at load; slow for 10+ GB), max_steps, capacities."""
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.weights import optional_weights_fingerprint

    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown options for backend 'tensorrt': {sorted(unknown)}; known: {OPTIONS}")
    config = load_config(model_dir, **{k: options[k] for k in _CAPACITY_OPTIONS if k in options})
    engine_dir = Path(options.get("engine_dir") or default_engine_dir(model_dir))
    return TensorRTExecutor(
        config,
        engine_dir,
        tensorrt_module=options.get("tensorrt_module", DEFAULT_MODULE),
        use_cuda_graphs=bool(options.get("use_cuda_graphs", True)),
        verify_checksums=bool(options.get("verify_checksums", False)),
        max_steps=int(options.get("max_steps", MAX_EULER_STEPS)),
        weights_hash=optional_weights_fingerprint(model_dir),  # on Thor the engines may travel without weights
    )


class TensorRTBackend(GraphBackend):
    """`TrajectoryBackend`: the shared GraphBackend over a TensorRTExecutor."""

    def __init__(self, model_dir: str | Path, mode: str = "per_candidate", **options: Any) -> None:
        super().__init__("tensorrt", model_dir, build_tensorrt_executor(model_dir, **options), mode=mode)
