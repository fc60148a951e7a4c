"""Which TensorRT Python module to use, and the dtype tables every other module shares.

Production code uses `tensorrt` (TensorRT 10.13+ or 11 on Jetson Thor). The builder can also run
on `tensorrt_rtx_bindings` (TensorRT-RTX from PyPI), which parses and builds ONNX on a CPU-only
machine; that is the stand-in check used in CI. Nothing here imports TensorRT at module load.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorrt

DEFAULT_MODULE = "tensorrt"
RTX_MODULE = "tensorrt_rtx_bindings"

# TensorRT DataType member name -> (bytes per element, numpy dtype used on the host or None)
# bf16/fp8 have no numpy dtype: the executor converts at the host boundary (see host_codec).
DTYPE_TABLE: dict[str, tuple[int, str | None]] = {
    "FLOAT": (4, "float32"),
    "HALF": (2, "float16"),
    "BF16": (2, None),
    "INT8": (1, "int8"),
    "INT32": (4, "int32"),
    "INT64": (8, "int64"),
    "BOOL": (1, "bool"),
    "UINT8": (1, "uint8"),
    "FP8": (1, None),
}


class TensorRTUnavailableError(ImportError):
    pass


def load_tensorrt(name: str = DEFAULT_MODULE) -> ModuleType:
    """Import the TensorRT Python module `name` with an actionable error when it is missing."""
    try:
        module = importlib.import_module(name)
        if not hasattr(
            module, "__version__"
        ):  # e.g. only tensorrt-stubs' `tensorrt/*.pyi`: a namespace package
            raise ImportError(
                f"{name!r} resolves to {list(getattr(module, '__path__', []))}, which holds no TensorRT"
            )
        return module
    except ImportError as exc:
        hint = (
            "On Jetson Thor (JetPack 7) TensorRT comes with JetPack: `sudo apt install python3-libnvinfer` "
            "(or use the system Python / a venv created with --system-site-packages). On x86 use the "
            "`tensorrt-cu13` wheel from pypi.nvidia.com. See docs/deployment/jetson_thor.md."
        )
        raise TensorRTUnavailableError(f"cannot import TensorRT module {name!r}: {exc}. {hint}") from exc


def dims_tuple(dims: tensorrt.Dims | Sequence[int]) -> tuple[int, ...]:
    """`trt.Dims` (indexable, not iterable in the stubs) -> tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def dtype_name(dtype: object) -> str:
    """`trt.DataType.HALF` -> "HALF" (works for tensorrt and tensorrt_rtx enums alike)."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).rsplit(".", 1)[-1]


def itemsize(dtype: object) -> int:
    name = dtype_name(dtype)
    if name not in DTYPE_TABLE:
        raise ValueError(f"unsupported TensorRT dtype {name} for an I/O tensor")
    return DTYPE_TABLE[name][0]


def host_dtype(dtype: object) -> np.dtype | None:
    """The numpy dtype a host array of this TensorRT dtype uses, None for bf16/fp8."""
    name = DTYPE_TABLE[dtype_name(dtype)][1]
    return None if name is None else np.dtype(name)


def to_bf16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round-to-nearest-even, as TensorRT expects."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode_host(array: np.ndarray, dtype: object) -> np.ndarray:
    """Convert a host array to the bytes layout of a TensorRT tensor of `dtype` (C-contiguous)."""
    name = dtype_name(dtype)
    if name == "BF16":
        return to_bf16_bits(array)
    target = host_dtype(dtype)
    if target is None:
        raise ValueError(f"cannot feed a host array to a {name} tensor; keep it on the device")
    return np.ascontiguousarray(array, dtype=target)


def decode_host(raw: np.ndarray, dtype: object) -> np.ndarray:
    """Inverse of encode_host for outputs: float tensors come back as float32."""
    if dtype_name(dtype) == "BF16":
        return from_bf16_bits(raw)
    if dtype_name(dtype) == "HALF":
        return raw.astype(np.float32)
    return raw


def raw_host_dtype(dtype: object) -> np.dtype:
    """The numpy dtype of a staging buffer holding this tensor's raw bytes."""
    name = dtype_name(dtype)
    if name == "BF16":
        return np.dtype(np.uint16)
    target = host_dtype(dtype)
    if target is None:
        return np.dtype(np.uint8)
    return target
