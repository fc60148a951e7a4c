"""Device memory, one stream, copies and CUDA graphs through cuda-python (`cuda.bindings.runtime`).

`CudaApi` is the boundary the TensorRT executor depends on: `CudaRuntime` implements it with
cuda-python (imported lazily, in the constructor); tests implement it with host memory. Pointers,
streams and graph handles cross the boundary as plain ints, which is what TensorRT's
`set_tensor_address` / `execute_async_v3` take.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

TENSOR_ALIGNMENT = 256  # TensorRT wants every bound tensor address 256-byte aligned


class CudaError(RuntimeError):
    pass


class CudaApi(Protocol):
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def malloc_host(self, nbytes: int) -> int: ...  # pinned: async copies and graph capture need it
    def free_host(self, ptr: int) -> None: ...
    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None: ...
    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...
    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...
    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...
    def memcpy2d_dtod_async(
        self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, stream: int
    ) -> None: ...  # `height` rows of `width` bytes, row starts `dpitch` / `spitch` bytes apart
    def stream_create(self) -> int: ...
    def stream_destroy(self, stream: int) -> None: ...
    def stream_synchronize(self, stream: int) -> None: ...
    def begin_capture(self, stream: int) -> None: ...
    def end_capture(self, stream: int) -> int: ...  # returns an instantiated graph (exec) handle
    def graph_launch(self, graph_exec: int, stream: int) -> None: ...
    def graph_destroy(self, graph_exec: int) -> None: ...


def host_view(ptr: int, nbytes: int) -> np.ndarray:
    """A uint8 numpy view of `nbytes` of host memory at `ptr` (pinned staging buffers)."""
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))


class CudaRuntime:
    """`CudaApi` over cuda-python's runtime API (cuda-bindings 12.x and 13.x)."""

    def __init__(self, device: int = 0) -> None:
        try:
            from cuda.bindings import runtime
        except ImportError as exc:  # cuda-python < 12.6 exposes `from cuda import cudart`
            try:
                from cuda import cudart as runtime  # type: ignore[no-redef]
            except ImportError:
                raise CudaError(f"cuda-python is not installed ({exc}); `pip install cuda-python`") from exc
        self.rt: Any = runtime
        self._check(runtime.cudaSetDevice(device), "cudaSetDevice")
        self._handles: dict[int, Any] = {}  # int handle -> cuda-python object (streams, graphs)

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, text = self.rt.cudaGetErrorString(err)
            raise CudaError(f"{what} failed: {err} {text.decode() if isinstance(text, bytes) else text}")
        return rest[0] if len(rest) == 1 else tuple(rest)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def malloc_host(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMallocHost(max(nbytes, 1)), f"cudaMallocHost({nbytes})"))

    def free_host(self, ptr: int) -> None:
        self._check(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        self._check(self.rt.cudaMemsetAsync(ptr, value, nbytes, self._handles[stream]), "cudaMemsetAsync")

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any, stream: int) -> None:
        if nbytes:
            self._check(
                self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._handles[stream]), "cudaMemcpyAsync"
            )

    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)

    def memcpy2d_dtod_async(
        self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, stream: int
    ) -> None:
        if width and height:
            kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            self._check(
                self.rt.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, self._handles[stream]),
                "cudaMemcpy2DAsync",
            )

    def stream_create(self) -> int:
        stream = self._check(
            self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate"
        )
        self._handles[int(stream)] = stream
        return int(stream)

    def stream_destroy(self, stream: int) -> None:
        self._check(self.rt.cudaStreamDestroy(self._handles.pop(stream)), "cudaStreamDestroy")

    def stream_synchronize(self, stream: int) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._handles[stream]), "cudaStreamSynchronize")

    def begin_capture(self, stream: int) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(self.rt.cudaStreamBeginCapture(self._handles[stream], mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: int) -> int:
        graph = self._check(self.rt.cudaStreamEndCapture(self._handles[stream]), "cudaStreamEndCapture")
        graph_exec = self._check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._check(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")  # the exec keeps its own copy
        self._handles[int(graph_exec)] = graph_exec
        return int(graph_exec)

    def graph_launch(self, graph_exec: int, stream: int) -> None:
        self._check(
            self.rt.cudaGraphLaunch(self._handles[graph_exec], self._handles[stream]), "cudaGraphLaunch"
        )

    def graph_destroy(self, graph_exec: int) -> None:
        self._check(self.rt.cudaGraphExecDestroy(self._handles.pop(graph_exec)), "cudaGraphExecDestroy")


def device_info(device: int = 0) -> dict[str, Any] | None:
    """Name, compute capability and memory of a GPU, or None where no CUDA driver is present."""
    try:
        from cuda.bindings import runtime

        err, props = runtime.cudaGetDeviceProperties(device)
        if int(err) != 0:
            return None
        name = (
            props.name.decode(errors="replace").rstrip("\x00")
            if isinstance(props.name, bytes)
            else str(props.name)
        )
        return {
            "name": name,
            "compute_capability": f"{props.major}.{props.minor}",
            "total_bytes": int(props.totalGlobalMem),
        }
    except Exception:  # no cuda-python, no driver (DynamicLibNotFoundError), ...: not a GPU host
        return None
