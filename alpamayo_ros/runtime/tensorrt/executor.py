"""TensorRT executor: the `GraphExecutor` of docs/runtime.md §5 over TensorRT engines.

A thin adapter: the orchestrator (sampling, stop rule, masks, positions, Euler schedule) is the
shared one; this class only moves arrays to and from the device and enqueues engines.

Bookkeeping, all decided at configure (construction):

* one CUDA stream; the engines of the manifest's arrangement (`text_engines`): **merged** — one `text`
  engine (one copy of the text weights) run by two execution contexts, the prefill on optimization
  profile 0 and decode on profile 1; **separate** — `prefill` and `decode` engines, profile 0 each.
  Either way the executor calls its runners "prefill" and "decode";
* every context gets its activation memory from one arena (user-managed, the largest need of any
  context and profile): the engines run one after another on the stream, never at the same time;
* every I/O tensor gets a device buffer sized from the engine itself (profile max shapes for
  inputs, the context's inferred shapes at those maxima for outputs, engine dtypes), and every
  host-visible tensor a pinned staging buffer of the same size; nothing is allocated per tick;
* KV state lives in one device buffer per kind and part (prefix / suffix × key / value), in the
  graph layout of docs/runtime.md §2, each layer's slice starting on a 256-byte boundary. The
  per-layer KV inputs of decode and expert_step are bound to those slices (no copy). The prefill's
  per-layer K/V outputs are bound to the very addresses decode and expert_step read (the prompt is
  written in place, aliased); a decode step's new K/V (one token per row) goes to a small buffer
  and one 2-D device copy per kind puts it into suffix slot `write_index`. No call reads or writes a
  whole cache besides attending to it, so there is no ping-pong and no whole-KV traffic;
* sampling on the device: `decode_sampled` enqueues the `sample` engine on decode's logits buffer
  (no copy) with the host's pre-drawn uniforms, and downloads only the token ids (and a `covered`
  flag per row; an uncovered row's logits are downloaded for the host sampler);
* CUDA graphs: `decode` and `decode_sampled` (per batch size, write slot and prompt length: the slot
  copy and the per-layer addresses are baked in) and the whole Euler loop of `expert_step` (per K, rows,
  step count and prompt length) are captured after their first eager run and replayed afterwards, uploads
  from pinned staging and the logits/x download included. `vision`, `prefill` and `extend` change shape
  every tick and run once per tick, so they run eagerly;
* navigation guidance (Alpamayo 1.5): `extend` is an engine of its own in either arrangement (its own
  copy of the decoder weights, without the LM head; optional at build), profile 0, sharing the arena. It
  writes the unguided tokens' K/V to its own output and
  2-D copies put them into the unguided suffix rows (`kv.unguided_*`, suffix layout); the expert's 2K
  rows then read one gathered suffix buffer (`kv.expert_suffix_*`: the decoded rows, then the unguided
  ones), as shared reasoning's repeated row does.

Image features stay on the host (the orchestrator caches them): a tick moves at most 4 new
images down and 16 up, ~0.24 GB at the Alpamayo dims, about 1 ms of a multi-second tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from alpamayo_ros.runtime.config import RuntimeConfig
from alpamayo_ros.runtime.executor import KV_NAMES, MASK_VALUE, GraphExecutor, ImageFeatures, is_kv_tensor
from alpamayo_ros.runtime.tensorrt.cuda_memory import TENSOR_ALIGNMENT, CudaApi, host_view
from alpamayo_ros.runtime.tensorrt.manifest import (
    ENGINE_GRAPHS,
    TEXT_PHASES,
    EngineManifest,
    ManifestError,
    check_engine_manifest,
    engine_graphs,
    load_engine_manifest,
)
from alpamayo_ros.runtime.tensorrt.trt_module import (
    DEFAULT_MODULE,
    decode_host,
    dims_tuple,
    dtype_name,
    encode_host,
    itemsize,
    load_tensorrt,
    raw_host_dtype,
)

if TYPE_CHECKING:
    import tensorrt

LOG = logging.getLogger(__name__)
KV_PARTS = ("prefix", "suffix")
CAPTURABLE_GRAPHS = ("decode", "expert_step")
MAX_EULER_STEPS = 64  # size of the preallocated (t, dt) step table


class TensorRTExecutorError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# engine inspection


@dataclass(frozen=True)
class TensorInfo:
    name: str
    is_input: bool
    dtype: str  # TensorRT DataType name
    itemsize: int
    shape: tuple[int, ...]  # engine shape, -1 for dynamic axes
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None  # inputs with dynamic axes

    @property
    def is_static(self) -> bool:
        return all(d >= 0 for d in self.shape)


def inspect_engine(engine: tensorrt.ICudaEngine, profile_index: int = 0) -> dict[str, TensorInfo]:
    """I/O tensors of an engine: mode, dtype, shape and profile range (enums compared by name, so
    the same code reads tensorrt and tensorrt_rtx engines)."""
    infos: dict[str, TensorInfo] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.is_shape_inference_io(name):  # would need host memory and re-capture per value
            raise TensorRTExecutorError(
                f"engine tensor {name!r} is a shape tensor; the graph family has none, re-export"
            )
        is_input = dtype_name(engine.get_tensor_mode(name)) == "INPUT"
        shape = dims_tuple(engine.get_tensor_shape(name))
        profile = None
        if is_input and any(d < 0 for d in shape):
            lo, opt, hi = engine.get_tensor_profile_shape(name, profile_index)
            profile = (dims_tuple(lo), dims_tuple(opt), dims_tuple(hi))
        dtype = engine.get_tensor_dtype(name)
        infos[name] = TensorInfo(name, is_input, dtype_name(dtype), itemsize(dtype), shape, profile)
    return infos


class GraphRunner:
    """One engine's execution context on one optimization profile, and shape/binding bookkeeping.

    The context's activation memory is user-managed (`use_memory`): `memory_need` bytes from the
    executor's arena. `graph` is the runner's role ("prefill", "decode", ...), `engine_graph` the graph
    the engine was built from ("text" for both phases of the merged arrangement)."""

    def __init__(self, graph: str, engine: tensorrt.ICudaEngine, profile: int = 0, strategy: Any = None,
                 engine_graph: str | None = None) -> None:
        self.graph = graph
        self.engine_graph = engine_graph or graph
        self.engine = engine
        self.profile = profile
        self.tensors = inspect_engine(engine, profile)
        self.context = engine.create_execution_context() if strategy is None else engine.create_execution_context(strategy)
        if self.context is None:
            raise TensorRTExecutorError(f"{graph}: create_execution_context failed (out of device memory?)")
        self.memory_need = int(engine.get_device_memory_size_for_profile_v2(profile))
        self.max_shapes: dict[str, tuple[int, ...]] = {}

    def activate(self, stream: int, memory: int, size: int) -> None:
        """Give the context its activation memory and profile (before any shape is set)."""
        self.context.set_device_memory(memory, size)
        if not self.context.set_optimization_profile_async(self.profile, stream):
            raise TensorRTExecutorError(f"{self.graph}: cannot select optimization profile {self.profile}")
        self.max_shapes = self._max_shapes()

    @property
    def inputs(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.is_input]

    @property
    def outputs(self) -> list[str]:
        return [n for n, t in self.tensors.items() if not t.is_input]

    def _max_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {n: (t.profile[2] if t.profile else t.shape) for n, t in self.tensors.items() if t.is_input}
        return {**shapes, **self.set_input_shapes(shapes)}

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Set every input's shape (checked against the profile); returns the inferred output shapes."""
        missing = set(self.inputs) - set(shapes)
        if missing:
            raise TensorRTExecutorError(f"{self.graph}: no shape for inputs {sorted(missing)}")
        for name, shape in shapes.items():
            info = self.tensors[name]
            _check_in_profile(self.graph, info, shape)
            if not self.context.set_input_shape(name, tuple(shape)):
                raise TensorRTExecutorError(
                    f"{self.graph}: TensorRT rejected shape {tuple(shape)} for {name}"
                )
        outputs: dict[str, tuple[int, ...]] = {}
        for name in self.outputs:
            shape = dims_tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TensorRTExecutorError(
                    f"{self.graph}: output {name} has a data-dependent shape {shape}; not supported"
                )
            outputs[name] = shape
        return outputs

    def bind(self, addresses: dict[str, int]) -> None:
        if set(addresses) != set(self.tensors):
            raise TensorRTExecutorError(
                f"{self.graph}: bindings {sorted(addresses)} do not cover the engine I/O {sorted(self.tensors)}"
            )
        for name, ptr in addresses.items():
            if ptr % TENSOR_ALIGNMENT:
                raise TensorRTExecutorError(
                    f"{self.graph}: address of {name} is not {TENSOR_ALIGNMENT}-byte aligned"
                )
            if not self.context.set_tensor_address(name, ptr):
                raise TensorRTExecutorError(f"{self.graph}: set_tensor_address({name}) failed")

    def enqueue(self, stream: int) -> None:
        if not self.context.execute_async_v3(stream):
            raise TensorRTExecutorError(f"{self.graph}: execute_async_v3 failed (see the TensorRT log)")


def _check_in_profile(graph: str, info: TensorInfo, shape: Sequence[int]) -> None:
    if len(shape) != len(info.shape):
        raise TensorRTExecutorError(
            f"{graph}: {info.name} has rank {len(info.shape)}, got shape {tuple(shape)}"
        )
    lo, hi = (info.profile[0], info.profile[2]) if info.profile else (info.shape, info.shape)
    for axis, (d, a, b) in enumerate(zip(shape, lo, hi, strict=True)):
        if not a <= d <= b:
            raise TensorRTExecutorError(
                f"{graph}: {info.name} axis {axis} = {d} is outside the engine profile [{a}, {b}]; "
                f"rebuild the engines with a larger range (build-engines --dim)"
            )


# ---------------------------------------------------------------------------------------------
# buffer plan


@dataclass(frozen=True)
class BufferSpec:
    key: str  # "kv.prefix_key", "decode.logits", "expert_step.x.1", ...
    nbytes: int
    staged: bool  # has a pinned host staging buffer of the same size
    dtype: str


def _aligned(nbytes: int) -> int:
    return -(-nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT


@dataclass(frozen=True)
class KVGeometry:
    """Static KV dims read off the decode engine: layers, KV heads, head dim, suffix capacity, itemsize."""

    layers: int
    heads: int
    head_dim: int
    suffix_capacity: int
    itemsize: int

    @classmethod
    def from_engine(cls, runner: GraphRunner) -> KVGeometry:
        layers = sum(1 for n in runner.inputs if n.startswith("prefix_key_"))
        info = runner.tensors.get("suffix_key_0")
        if not layers or info is None or len(info.shape) != 4:
            raise TensorRTExecutorError(
                "decode engine has no per-layer KV inputs (prefix_key_0, suffix_key_0, ...): it was built from "
                "an ONNX export of an older format; re-export and rebuild"
            )
        heads, _, capacity, head_dim = info.shape
        return cls(layers, heads, head_dim, capacity, info.itemsize)

    def prefix_layer_bytes(self, tokens: int) -> int:
        return self.heads * tokens * self.head_dim * self.itemsize

    def suffix_layer_bytes(self, rows: int) -> int:
        return self.heads * rows * self.suffix_capacity * self.head_dim * self.itemsize


def plan_buffers(runners: dict[str, GraphRunner], max_steps: int = MAX_EULER_STEPS) -> dict[str, BufferSpec]:
    """Every device buffer the executor allocates at configure, sized from the engines."""
    specs: dict[str, BufferSpec] = {}
    kv_dtype: dict[str, tuple[str, str]] = {}  # kind -> (dtype, first tensor seen)
    layer_bytes = {"prefix": 0, "suffix": 0}
    for graph, runner in runners.items():
        for name, info in runner.tensors.items():
            nbytes = int(np.prod(runner.max_shapes[name], dtype=np.int64)) * info.itemsize
            if is_kv_tensor(name):
                kind = "key" if "_key" in name else "value"
                seen = kv_dtype.setdefault(kind, (info.dtype, f"{graph}.{name}"))
                if seen[0] != info.dtype:
                    raise TensorRTExecutorError(
                        f"KV dtype mismatch: {seen[1]} is {seen[0]} but {graph}.{name} is {info.dtype}; "
                        f"build all engines with the same precision options"
                    )
                if name.startswith("suffix_"):
                    layer_bytes["suffix"] = max(layer_bytes["suffix"], nbytes)
                elif name.startswith("prefix_") or graph == "prefill":  # prefill's new_* are the prefix
                    layer_bytes["prefix"] = max(layer_bytes["prefix"], nbytes)
                else:  # decode's new_key / new_value: one token per row, copied into the suffix slot
                    specs[f"{graph}.{name}"] = BufferSpec(f"{graph}.{name}", nbytes, False, info.dtype)
            elif graph == "sample" and name == "logits":  # reads decode's logits where they are
                if info.dtype != runners["decode"].tensors["logits"].dtype:
                    raise TensorRTExecutorError(
                        f"sample.logits is {info.dtype} but decode.logits is {runners['decode'].tensors['logits'].dtype}"
                    )
            elif graph == "expert_step" and name in ("x", "x_next"):
                for parity in (0, 1):
                    key = f"expert_step.x.{parity}"
                    prev = specs.get(key)
                    specs[key] = BufferSpec(key, max(nbytes, prev.nbytes if prev else 0), True, info.dtype)
            elif graph == "expert_step" and name in ("t", "dt"):
                specs[f"expert_step.{name}"] = BufferSpec(
                    f"expert_step.{name}", max_steps * TENSOR_ALIGNMENT, True, info.dtype
                )
            else:
                specs[f"{graph}.{name}"] = BufferSpec(f"{graph}.{name}", nbytes, True, info.dtype)
    layers = KVGeometry.from_engine(runners["decode"]).layers
    for part in KV_PARTS:
        for kind in KV_NAMES:
            key = f"kv.{part}_{kind}"
            specs[key] = BufferSpec(key, layers * _aligned(layer_bytes[part]), False, kv_dtype[kind][0])
    if "extend" in runners:  # the unguided rows, in the suffix layout (at most the decode batch)
        for kind in KV_NAMES:
            key, like = f"kv.unguided_{kind}", specs[f"kv.suffix_{kind}"]
            specs[key] = BufferSpec(key, like.nbytes, False, like.dtype)
    return specs


@dataclass
class Allocation:
    spec: BufferSpec
    device: int
    host: int = 0  # pinned staging, 0 if none

    def host_array(self, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        raw = host_view(self.host, self.spec.nbytes)
        return raw[: count * dtype.itemsize].view(dtype).reshape(tuple(shape))


# ---------------------------------------------------------------------------------------------
# CUDA-graph capture policy


@dataclass(frozen=True)
class CaptureDecision:
    capture: bool
    reason: str


def capture_decision(graph: str, runner: GraphRunner, enabled: bool) -> CaptureDecision:
    if not enabled:
        return CaptureDecision(False, "CUDA graphs disabled")
    if graph == "sample":
        return CaptureDecision(False, "enqueued inside decode's CUDA graph (decode_sampled)")
    if graph not in CAPTURABLE_GRAPHS:
        return CaptureDecision(False, "shapes change every tick and it runs once per tick")
    dynamic_outputs = [n for n in runner.outputs if any(d < 0 for d in runner.max_shapes[n])]
    if dynamic_outputs:
        return CaptureDecision(False, f"data-dependent output shapes {dynamic_outputs}")
    return CaptureDecision(True, "static shapes per (batch, write slot, prompt length); replayed every step")


# ---------------------------------------------------------------------------------------------
# engine loading


class EngineSource(Protocol):
    """Where engines come from: TensorRT's Runtime in production, a fake in unit tests."""

    version: str
    user_managed: Any  # trt.ExecutionContextAllocationStrategy.USER_MANAGED

    def deserialize(self, data: bytes) -> tensorrt.ICudaEngine: ...


class TensorRTEngineSource:
    def __init__(self, module: str = DEFAULT_MODULE) -> None:
        if TYPE_CHECKING:
            import tensorrt as trt
        else:
            trt = load_tensorrt(module)
        self.version = str(trt.__version__)
        self.user_managed = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)

    def deserialize(self, data: bytes) -> tensorrt.ICudaEngine:
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise TensorRTExecutorError("deserialize_cuda_engine failed (see the TensorRT log above)")
        return engine


# ---------------------------------------------------------------------------------------------
# the executor


@dataclass
class ExecutorStats:
    enqueues: dict[str, int] = field(default_factory=dict)
    graph_captures: dict[str, int] = field(default_factory=dict)
    graph_launches: dict[str, int] = field(default_factory=dict)

    def bump(self, table: dict[str, int], graph: str, n: int = 1) -> None:
        table[graph] = table.get(graph, 0) + n


class TensorRTExecutor(GraphExecutor):
    name = "tensorrt"

    def __init__(
        self,
        config: RuntimeConfig,
        engine_dir: str | Path,
        *,
        cuda: CudaApi | None = None,
        engine_source: EngineSource | None = None,
        tensorrt_module: str = DEFAULT_MODULE,
        use_cuda_graphs: bool = True,
        verify_checksums: bool = False,
        max_steps: int = MAX_EULER_STEPS,
        weights_hash: str | None = None,
    ) -> None:
        super().__init__(config)
        self.engine_dir = Path(engine_dir)
        self.source: EngineSource = engine_source or TensorRTEngineSource(tensorrt_module)
        if cuda is None:
            from alpamayo_ros.runtime.tensorrt.cuda_memory import CudaRuntime, device_info

            cuda = CudaRuntime()
            compute_capability = (device_info() or {}).get("compute_capability")
        else:
            compute_capability = None
        self.cuda: CudaApi = cuda
        self.manifest = self._check_manifest(compute_capability, verify_checksums, weights_hash)
        self.recorded_normalization = self.manifest.recorded_normalization(self.engine_dir)
        self.use_cuda_graphs = use_cuda_graphs
        self.max_steps = max_steps
        self.stats = ExecutorStats()
        self._graphs: dict[tuple[Any, ...], int] = {}
        self._in_capture = False
        self._alloc: dict[str, Allocation] = {}
        self.stream = self.cuda.stream_create()
        self.merged = self.manifest.text_engines == "merged"
        try:
            self.runners = self._make_runners()
            self._allocate_arena()
            self.decisions = {g: capture_decision(g, r, use_cuda_graphs) for g, r in self.runners.items()}
            self.plan = plan_buffers(self.runners, max_steps)
            self.kv = KVGeometry.from_engine(self.runners["decode"])
            self._allocate()
        except BaseException:
            self.close()
            raise
        self.prefix_len = 0
        self.batch = 0
        self.unguided_batch = 0
        self.supports_guidance = "extend" in self.runners

    # configure ----------------------------------------------------------------------------
    def _check_manifest(
        self, compute_capability: str | None, verify_checksums: bool, weights_hash: str | None
    ) -> EngineManifest:
        manifest = load_engine_manifest(self.engine_dir)
        check_engine_manifest(
            manifest,
            self.engine_dir,
            tensorrt_version=self.source.version,
            config_hash=self.config.config_hash,
            compute_capability=compute_capability,
            weights_hash=weights_hash,
            verify_checksums=verify_checksums,
            required_graphs=self._engine_graphs(manifest),
        )
        cfg = self.config
        wanted = (cfg.prefix_capacity, cfg.suffix_capacity)
        if (manifest.prefix_capacity, manifest.suffix_capacity) != wanted:
            raise ManifestError(
                f"engines in {self.engine_dir} have KV capacities (prefix, suffix) = "
                f"({manifest.prefix_capacity}, {manifest.suffix_capacity}), the runtime config wants {wanted}; "
                f"re-export and rebuild"
            )
        return manifest

    def _engine_graphs(self, manifest: EngineManifest) -> tuple[str, ...] | None:
        """The engines this model runs: the arrangement's, and `extend` (navigation guidance) where it was
        built (optional: an engine build without it saves its weights' memory). None: unknown arrangement
        (check_engine_manifest names it)."""
        if manifest.text_engines not in ENGINE_GRAPHS:
            return None
        return engine_graphs(manifest.text_engines, self.config.guidance and "extend" in manifest.engines)

    def _load(self, graph: str) -> tensorrt.ICudaEngine:
        return self.source.deserialize((self.engine_dir / self.manifest.engines[graph].file).read_bytes())

    def _make_runners(self) -> dict[str, GraphRunner]:
        """Runners by role; the merged arrangement's prefill and decode share the one text engine."""
        strategy = self.source.user_managed
        runners: dict[str, GraphRunner] = {}
        for graph in self._engine_graphs(self.manifest) or ():
            engine = self._load(graph)
            if graph != "text":
                runners[graph] = GraphRunner(graph, engine, 0, strategy)
                continue
            names = self.manifest.engines["text"].profiles
            if list(names) != list(TEXT_PHASES):
                raise TensorRTExecutorError(
                    f"text engine profiles {names}, expected {list(TEXT_PHASES)}; rebuild with build-engines")
            for index, phase in enumerate(TEXT_PHASES):
                runners[phase] = GraphRunner(phase, engine, index, strategy, engine_graph="text")
        return runners

    def _allocate_arena(self) -> None:
        """One activation arena for every context: they run one at a time on the stream."""
        need = max(r.memory_need for r in self.runners.values())
        self.arena = Allocation(BufferSpec("arena", need, False, "UINT8"), self.cuda.malloc(need))
        self._alloc["arena"] = self.arena
        for runner in self.runners.values():
            runner.activate(self.stream, self.arena.device, need)

    def _allocate(self) -> None:
        for key, spec in self.plan.items():
            alloc = Allocation(spec, self.cuda.malloc(spec.nbytes))
            self._alloc[key] = alloc
            if spec.staged:
                alloc.host = self.cuda.malloc_host(spec.nbytes)
        for key, alloc in self._alloc.items():  # masked KV slots must hold finite values, never NaN garbage
            if key.startswith("kv."):
                self.cuda.memset_async(alloc.device, 0, alloc.spec.nbytes, self.stream)
        self.cuda.stream_synchronize(self.stream)
        LOG.info(
            "TensorRT executor: %.1f MiB device, %.1f MiB pinned", *(v / 2**20 for v in self.memory_bytes())
        )

    def memory_bytes(self) -> tuple[int, int]:
        device = sum(a.spec.nbytes for a in self._alloc.values())
        pinned = sum(a.spec.nbytes for a in self._alloc.values() if a.host)
        return device, pinned

    def close(self) -> None:
        for graph_exec in self._graphs.values():
            self.cuda.graph_destroy(graph_exec)
        self._graphs.clear()
        for alloc in self._alloc.values():
            self.cuda.free(alloc.device)
            if alloc.host:
                self.cuda.free_host(alloc.host)
        self._alloc.clear()
        if getattr(self, "stream", None) is not None:
            self.cuda.stream_destroy(self.stream)
            self.stream = None  # type: ignore[assignment]
        self.runners = {}

    # staging helpers ----------------------------------------------------------------------
    def _stage(
        self, graph: str, name: str, array: np.ndarray, key: str | None = None
    ) -> tuple[int, int, int]:
        """Write `array` (converted to the engine dtype) into the pinned staging of its buffer."""
        info = self.runners[graph].tensors[name]
        alloc = self._alloc[key or f"{graph}.{name}"]
        encoded = encode_host(array, info.dtype).reshape(-1)
        if encoded.nbytes > alloc.spec.nbytes:
            raise TensorRTExecutorError(
                f"{graph}.{name}: {encoded.nbytes} bytes exceed the buffer ({alloc.spec.nbytes})"
            )
        alloc.host_array(encoded.dtype, encoded.shape)[...] = encoded
        return alloc.device, alloc.host, encoded.nbytes

    def _kv_layers(self, part: str, kind: str, length: int, buffer: str | None = None) -> list[int]:
        """Device address of every layer's slice of a KV buffer: prefix (Hkv, P, Dh) for length = P,
        suffix (Hkv, B, Cs, Dh) for length = B; each starts 256-byte aligned."""
        nbytes = self.kv.prefix_layer_bytes(length) if part == "prefix" else self.kv.suffix_layer_bytes(length)
        base, stride = self._alloc[buffer or f"kv.{part}_{kind}"].device, _aligned(nbytes)
        return [base + i * stride for i in range(self.kv.layers)]

    def _kv_bindings(self, batch: int, suffix: str = "kv.suffix", prefix_len: int | None = None
                     ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        """Shapes and addresses of the per-layer KV inputs for the current prompt (or `prefix_len` tokens:
        0 for the merged text engine's prefill, which has no prefix yet)."""
        kv, p = self.kv, self.prefix_len if prefix_len is None else prefix_len
        shapes: dict[str, tuple[int, ...]] = {}
        addresses: dict[str, int] = {}
        for kind in KV_NAMES:
            for i, ptr in enumerate(self._kv_layers("prefix", kind, p)):
                shapes[f"prefix_{kind}_{i}"], addresses[f"prefix_{kind}_{i}"] = (kv.heads, p, kv.head_dim), ptr
            for i, ptr in enumerate(self._kv_layers("suffix", kind, batch, f"{suffix}_{kind}")):
                shapes[f"suffix_{kind}_{i}"] = (kv.heads, batch, kv.suffix_capacity, kv.head_dim)
                addresses[f"suffix_{kind}_{i}"] = ptr
        return shapes, addresses

    def _gather_expert_suffix(self, rows_a: np.ndarray, rows_b: np.ndarray | None) -> None:
        """The expert's suffix rows in a buffer of their own (the graphs tie the suffix batch to the expert's
        rows): decoded row rows_a[j] (shared reasoning: one row for K candidates), then with navigation
        guidance unguided row rows_b[j]."""
        kv = self.kv
        row = kv.suffix_capacity * kv.head_dim * kv.itemsize
        sources = [("kv.suffix", self.batch, int(i)) for i in rows_a]
        if rows_b is not None:
            sources += [("kv.unguided", self.unguided_batch, int(i)) for i in rows_b]
        total = len(sources)
        for kind in KV_NAMES:
            dst_layers = self._kv_layers("suffix", kind, total, f"kv.expert_suffix_{kind}")
            src_layers = {(buf, b): self._kv_layers("suffix", kind, b, f"{buf}_{kind}") for buf, b, _ in sources}
            for r, (buf, b, i) in enumerate(sources):  # head h's row i -> row h·R + r
                for dst, src in zip(dst_layers, src_layers[(buf, b)], strict=True):
                    self.cuda.memcpy2d_dtod_async(dst + r * row, total * row, src + i * row, b * row, row, kv.heads,
                                                  self.stream)

    def _new_kv_sources(self, kind: str) -> tuple[list[int], bool]:
        """Device addresses of decode's new K/V per layer, and whether they are one stacked buffer
        (separate decode engine: (L, Hkv, B, 1, Dh)) rather than a buffer per layer (text engine)."""
        if f"decode.new_{kind}" in self._alloc:
            base, layer = self._own("decode", f"new_{kind}"), self.kv.heads * self.batch * self.kv.head_dim * self.kv.itemsize
            return [base + i * layer for i in range(self.kv.layers)], True
        return [self._own("decode", f"new_{kind}_{i}") for i in range(self.kv.layers)], False

    def _write_suffix_slot(self, slot: int, batch: int) -> None:
        """Queue the copy of decode's new K/V (per layer (Hkv, B, 1, Dh)) into suffix slot `slot` of every row."""
        kv = self.kv
        row = kv.head_dim * kv.itemsize
        rows = kv.heads * batch  # per layer; the destination rows are suffix_capacity slots apart
        for kind in KV_NAMES:
            sources, stacked = self._new_kv_sources(kind)
            dst_layers = self._kv_layers("suffix", kind, batch)
            if stacked and len(dst_layers) > 1 and dst_layers[1] - dst_layers[0] == kv.suffix_layer_bytes(batch):
                pairs, rows_per_call = [(dst_layers[0], sources[0])], rows * kv.layers  # unpadded layers: one copy
            else:
                pairs, rows_per_call = list(zip(dst_layers, sources, strict=True)), rows
            for dst, src in pairs:
                self.cuda.memcpy2d_dtod_async(
                    dst + slot * row, kv.suffix_capacity * row, src, row, row, rows_per_call, self.stream,
                )

    def _own(self, graph: str, name: str) -> int:
        return self._alloc[f"{graph}.{name}"].device

    def _download(
        self, graph: str, name: str, shape: Sequence[int], key: str | None = None
    ) -> Callable[[], np.ndarray]:
        """Queue a device->staging copy; returns a reader to call after the stream sync."""
        info = self.runners[graph].tensors[name]
        alloc = self._alloc[key or f"{graph}.{name}"]
        raw_dtype = raw_host_dtype(info.dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * info.itemsize
        self.cuda.memcpy_dtoh_async(alloc.host, alloc.device, nbytes, self.stream)
        return lambda: decode_host(alloc.host_array(raw_dtype, shape).copy(), info.dtype)

    def _upload(self, staged: Sequence[tuple[int, int, int]]) -> None:
        for device, host, nbytes in staged:
            self.cuda.memcpy_htod_async(device, host, nbytes, self.stream)

    @contextmanager
    def _capturing(self, graph: str) -> Iterator[None]:
        self.cuda.begin_capture(self.stream)
        self._in_capture = True
        try:
            yield
        except BaseException:
            self._in_capture = False
            self.cuda.graph_destroy(self.cuda.end_capture(self.stream))
            raise
        self._in_capture = False

    def _run(self, graph: str, key: tuple[Any, ...], issue: Callable[[], None], capturable: bool) -> None:
        """Replay the CUDA graph for `key`, or run eagerly and capture it for next time."""
        graph_exec = self._graphs.get(key)
        if graph_exec is not None:
            self.cuda.graph_launch(graph_exec, self.stream)
            self.stats.bump(self.stats.graph_launches, graph)
            self.count("cuda_graph_launches")
            self.cuda.stream_synchronize(self.stream)
            return
        issue()  # eager run; also the warm-up TensorRT wants after shape changes, before capture
        self.cuda.stream_synchronize(self.stream)
        if capturable:
            with self._capturing(graph):
                issue()
            self._graphs[key] = self.cuda.end_capture(self.stream)
            self.stats.bump(self.stats.graph_captures, graph)
            self.count("cuda_graph_captures")

    def _enqueue(self, runner: GraphRunner) -> None:
        runner.enqueue(self.stream)
        if not self._in_capture:  # a captured enqueue runs only when the graph is launched
            self.stats.bump(self.stats.enqueues, runner.graph)

    # GraphExecutor ------------------------------------------------------------------------
    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        runner = self.runners["vision"]
        out = runner.set_input_shapes({"pixel_rows": pixel_rows.shape})
        runner.bind({n: self._own("vision", n) for n in runner.tensors})
        self._upload([self._stage("vision", "pixel_rows", pixel_rows)])
        self._enqueue(runner)
        read_embeds = self._download("vision", "image_embeds", out["image_embeds"])
        read_ds = self._download("vision", "deepstack_embeds", out["deepstack_embeds"])
        self.cuda.stream_synchronize(self.stream)
        embeds, deepstack = read_embeds(), read_ds()
        return [ImageFeatures(embeds=embeds[i], deepstack=deepstack[:, i]) for i in range(embeds.shape[0])]

    def prefill(
        self,
        input_ids: np.ndarray,
        position_ids: np.ndarray,
        features: list[ImageFeatures],
        image_token_index: np.ndarray,
    ) -> np.ndarray:
        runner = self.runners["prefill"]
        embeds, deepstack = self.stack_features(features)
        p = int(input_ids.shape[0])
        host = {
            # the text engine attends causally over the prompt as it is; the prefill engine in query blocks
            "input_ids": input_ids.reshape(1, p) if self.merged else self.padded_ids(input_ids),
            "position_ids": position_ids.reshape(3, 1, p),
            "image_embeds": embeds,
            "deepstack_embeds": deepstack,
            "image_token_index": image_token_index,
        }
        kv_shapes: dict[str, tuple[int, ...]] = {}
        kv_addresses: dict[str, int] = {}
        if self.merged:  # no prefix yet (P = 0); one suffix row, every slot hidden
            host["suffix_mask"] = np.full((1, self.kv.suffix_capacity), MASK_VALUE, dtype=np.float32)
            kv_shapes, kv_addresses = self._kv_bindings(1, prefix_len=0)
        out = runner.set_input_shapes({**{n: tuple(a.shape) for n, a in host.items()}, **kv_shapes})
        addresses = {**{n: self._own("prefill", n) for n in (*host, "logits")}, **kv_addresses}
        want = (self.kv.heads, 1, p, self.kv.head_dim) if self.merged else (self.kv.heads, p, self.kv.head_dim)
        for kind in KV_NAMES:  # the prompt's K/V are written where decode and the expert read them
            for i, ptr in enumerate(self._kv_layers("prefix", kind, p)):
                if out[f"new_{kind}_{i}"] != want:
                    raise TensorRTExecutorError(f"prefill.new_{kind}_{i} has shape {out[f'new_{kind}_{i}']}, not {want}")
                addresses[f"new_{kind}_{i}"] = ptr
        runner.bind(addresses)
        self._upload([self._stage("prefill", n, a) for n, a in host.items()])
        self._enqueue(runner)
        read = self._download("prefill", "logits", out["logits"])
        self.cuda.stream_synchronize(self.stream)
        self.prefix_len = p
        return read()[0]

    device_sampling = True

    def decode_sampled(
        self,
        token_ids: np.ndarray,
        position_ids: np.ndarray,
        write_index: int,
        suffix_mask: np.ndarray,
        uniforms: np.ndarray,
        temperature: float,
        top_p: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """decode, the slot copy and the sampling engine in one stream (one CUDA graph per key): only
        the token ids and `covered` flags come back, B × 9 bytes instead of B × V logits."""
        b = int(token_ids.shape[0])
        sampler = self.runners["sample"]
        staged = [
            self._stage("sample", "uniforms", np.asarray(uniforms, dtype=np.float32).reshape(b)),
            self._stage("sample", "temperature", np.array([temperature], dtype=np.float32)),
            self._stage("sample", "top_p", np.array([top_p], dtype=np.float32)),
        ]

        def sample() -> None:
            sampler.set_input_shapes({"logits": (b, sampler.max_shapes["logits"][1]), "uniforms": (b,),
                                      "temperature": (1,), "top_p": (1,)})
            addresses = {n: self._own("sample", n) for n in ("uniforms", "temperature", "top_p", "token_ids", "covered")}
            sampler.bind({**addresses, "logits": self._own("decode", "logits")})
            self._upload(staged)
            self._enqueue(sampler)
            self._download("sample", "token_ids", (b,))
            self._download("sample", "covered", (b,))

        self._decode(token_ids, position_ids, write_index, suffix_mask, sample, "decode_sampled")
        self.count("device_sampled_steps")
        ids = self._reader("sample", "token_ids", (b,))()
        return ids.astype(np.int64), self._reader("sample", "covered", (b,))().astype(bool)

    def last_logits(self) -> np.ndarray:
        runner = self.runners["decode"]
        read = self._download("decode", "logits", (self.batch, runner.max_shapes["logits"][1]))
        self.cuda.stream_synchronize(self.stream)
        return read()

    def start_decode(self, batch: int) -> None:
        hi = self.runners["decode"].max_shapes["input_ids"][0]
        if not 1 <= batch <= hi:
            raise TensorRTExecutorError(
                f"decode batch {batch} outside the engine profile [1, {hi}]; rebuild with --dim B=1:{batch}:{batch}"
            )
        self.batch = batch

    def decode(
        self,
        token_ids: np.ndarray,
        position_ids: np.ndarray,
        write_index: int,
        suffix_mask: np.ndarray,
    ) -> np.ndarray:
        runner = self.runners["decode"]
        b = int(token_ids.shape[0])
        self._decode(token_ids, position_ids, write_index, suffix_mask,
                     lambda: self._download("decode", "logits", (b, runner.max_shapes["logits"][1])), "decode")
        return self._reader("decode", "logits", (b, runner.max_shapes["logits"][1]))()

    def _decode(self, token_ids: np.ndarray, position_ids: np.ndarray, write_index: int, suffix_mask: np.ndarray,
                tail: Callable[[], object], kind: str) -> None:
        """Enqueue decode + the new K/V's slot copy + `tail` (download the logits, or sample on the device),
        replaying the CUDA graph of (kind, batch, slot, prompt length) when there is one."""
        runner = self.runners["decode"]
        b = int(token_ids.shape[0])
        if b != self.batch:
            raise TensorRTExecutorError(f"decode got {b} rows after start_decode({self.batch})")
        if not 0 <= write_index < self.kv.suffix_capacity:
            raise TensorRTExecutorError(f"suffix slot {write_index} outside [0, {self.kv.suffix_capacity})")
        host = {
            "input_ids": token_ids.reshape(b, 1),
            "position_ids": position_ids.reshape(3, b, 1),
            "suffix_mask": suffix_mask.reshape(b, -1),
        }
        if self.merged:  # the text engine's image inputs are empty in decode (M = 0)
            nds, _, d = runner.tensors["deepstack_embeds"].shape
            host.update(image_embeds=np.zeros((0, d), np.float32), deepstack_embeds=np.zeros((nds, 0, d), np.float32),
                        image_token_index=np.zeros(0, np.int64))
        staged = [self._stage("decode", n, a) for n, a in host.items()]  # staging is read at replay too
        new_kv = [n for n in runner.outputs if n != "logits"]

        def issue() -> None:
            kv_shapes, kv_addresses = self._kv_bindings(b)
            runner.set_input_shapes({**{n: tuple(a.shape) for n, a in host.items()}, **kv_shapes})
            addresses = {n: self._own("decode", n) for n in (*host, "logits", *new_kv)}
            runner.bind({**addresses, **kv_addresses})
            self._upload(staged)
            self._enqueue(runner)
            self._write_suffix_slot(write_index, b)
            tail()

        self._run(kind, (kind, b, write_index, self.prefix_len), issue, self.decisions["decode"].capture)

    def _reader(
        self, graph: str, name: str, shape: Sequence[int], key: str | None = None
    ) -> Callable[[], np.ndarray]:
        info = self.runners[graph].tensors[name]
        alloc = self._alloc[key or f"{graph}.{name}"]
        raw_dtype = raw_host_dtype(info.dtype)
        return lambda: decode_host(alloc.host_array(raw_dtype, shape).copy(), info.dtype)

    def extend(self, input_ids: np.ndarray, position_ids: np.ndarray, prefix_mask: np.ndarray,
               own_mask: np.ndarray) -> None:
        if "extend" not in self.runners:
            super().extend(input_ids, position_ids, prefix_mask, own_mask)
        runner, kv = self.runners["extend"], self.kv
        b, t = (int(d) for d in input_ids.shape)
        if t > kv.suffix_capacity:
            raise TensorRTExecutorError(f"{t} unguided tokens exceed the suffix capacity {kv.suffix_capacity}")
        host = {"input_ids": np.asarray(input_ids, dtype=np.int64), "position_ids": position_ids,
                "prefix_mask": prefix_mask, "own_mask": own_mask}
        kv_shapes, kv_addresses = self._kv_bindings(b)
        prefix = [n for n in kv_shapes if n.startswith("prefix_")]
        runner.set_input_shapes({**{n: tuple(a.shape) for n, a in host.items()}, **{n: kv_shapes[n] for n in prefix}})
        runner.bind({**{n: self._own("extend", n) for n in (*host, "new_key", "new_value")},
                     **{n: kv_addresses[n] for n in prefix}})
        self._upload([self._stage("extend", n, a) for n, a in host.items()])
        self._enqueue(runner)
        row = kv.head_dim * kv.itemsize
        for kind in KV_NAMES:  # (L, Hkv, B, T, Dh) -> slots [0, T) of the unguided rows (Hkv, B, Cs, Dh) per layer
            src = self._own("extend", f"new_{kind}")
            for i, dst in enumerate(self._kv_layers("suffix", kind, b, f"kv.unguided_{kind}")):
                self.cuda.memcpy2d_dtod_async(dst, kv.suffix_capacity * row, src + i * kv.heads * b * t * row,
                                              t * row, t * row, kv.heads * b, self.stream)
        self.cuda.stream_synchronize(self.stream)
        self.unguided_batch = b

    def run_expert(
        self,
        x0: np.ndarray,
        steps: list[tuple[float, float]],
        position_ids: np.ndarray,
        suffix_mask: np.ndarray,
        prefix_mask: np.ndarray | None = None,
        row_mix: np.ndarray | None = None,
    ) -> np.ndarray:
        runner = self.runners["expert_step"]
        r, n = int(x0.shape[0]), len(steps)
        if not 1 <= n <= self.max_steps:
            raise TensorRTExecutorError(f"{n} Euler steps; the step table holds 1..{self.max_steps}")
        k, prefix_mask, row_mix = self.expert_extras(r, self.prefix_len, prefix_mask, row_mix)
        rows_a, rows_b = self.expert_rows(k, r, self.batch or k)
        gathered = rows_b is not None or self.batch not in (0, k)  # guidance, or shared reasoning's one row
        if gathered:
            self.count("suffix_kv_copies", r - self.batch)
            for kind in KV_NAMES:  # allocated at the first tick that needs it, then reused
                key, like = f"kv.expert_suffix_{kind}", self.plan[f"kv.suffix_{kind}"]
                if key not in self._alloc:
                    self._alloc[key] = Allocation(BufferSpec(key, like.nbytes, False, like.dtype),
                                                  self.cuda.malloc(like.nbytes))
        host = {"row_mix": row_mix, "position_ids": position_ids, "suffix_mask": suffix_mask,
                "prefix_mask": prefix_mask}
        staged = [self._stage("expert_step", name, a) for name, a in host.items()]
        staged.append(self._stage("expert_step", "x", x0, key="expert_step.x.0"))
        staged += self._stage_steps(steps)
        kv_shapes, kv_addresses = self._kv_bindings(r, "kv.expert_suffix" if gathered else "kv.suffix")
        shapes = {"x": tuple(x0.shape), "t": (1,), "dt": (1,), **{n_: tuple(a.shape) for n_, a in host.items()},
                  **kv_shapes}

        def issue() -> None:
            runner.set_input_shapes(shapes)
            self._upload(staged)
            if gathered:
                self._gather_expert_suffix(rows_a, rows_b)
            for i in range(n):
                addresses = {name: self._own("expert_step", name) for name in host}
                addresses["x"] = self._alloc[f"expert_step.x.{i % 2}"].device
                addresses["x_next"] = self._alloc[f"expert_step.x.{(i + 1) % 2}"].device
                addresses["t"] = self._alloc["expert_step.t"].device + i * TENSOR_ALIGNMENT
                addresses["dt"] = self._alloc["expert_step.dt"].device + i * TENSOR_ALIGNMENT
                runner.bind({**addresses, **kv_addresses})
                self._enqueue(runner)
            self._download("expert_step", "x_next", x0.shape, key=f"expert_step.x.{n % 2}")

        graph_key = ("expert_step", k, r, gathered, self.batch, self.unguided_batch, n, self.prefix_len)
        self._run("expert_step", graph_key, issue, self.decisions["expert_step"].capture)
        return self._reader("expert_step", "x_next", x0.shape, key=f"expert_step.x.{n % 2}")()

    def _stage_steps(self, steps: list[tuple[float, float]]) -> list[tuple[int, int, int]]:
        """(t_i, dt_i) into the pitched step tables: step i's scalar sits at offset i * 256 bytes."""
        staged = []
        for column, name in enumerate(("t", "dt")):
            info = self.runners["expert_step"].tensors[name]
            alloc = self._alloc[f"expert_step.{name}"]
            table = np.zeros((self.max_steps, TENSOR_ALIGNMENT // info.itemsize), dtype=np.float32)
            table[: len(steps), 0] = [step[column] for step in steps]
            encoded = encode_host(table[: len(steps)], info.dtype)
            alloc.host_array(encoded.dtype, encoded.shape)[...] = encoded
            staged.append((alloc.device, alloc.host, encoded.nbytes))
        return staged
