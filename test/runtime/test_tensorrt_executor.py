"""TensorRT executor bookkeeping, with fakes at the TensorRT / CUDA boundary only.

Faked: `ICudaEngine` / `IExecutionContext` (FakeEngine, FakeContext) and the `CudaApi` memory
functions (FakeCuda). Everything above that boundary is the production code: manifest check,
engine inspection, buffer plan, pinned staging, dtype conversion, KV ping-pong, bindings,
CUDA-graph capture and replay.

The fakes behave like the real things where the executor could get it wrong:
* "device" memory is real memory, but FakeCuda tracks which ranges are device / pinned host and
  rejects a copy in the wrong direction, an unaligned tensor, or use after free;
* a fake engine computes its outputs from the bytes at the addresses bound when it is enqueued
  (every layer's KV input read where it is bound, the new K/V written where the executor points
  them), so a wrong binding, a missed upload or a misplaced slot copy shows up in the numbers;
* while a stream is capturing, copies and enqueues are recorded with their addresses baked in and
  only run on `graph_launch`, like a CUDA graph: replaying a graph captured for another write slot
  would write the wrong slot and the comparison with the eager executor would fail.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alpamayo_ros.runtime.config import RuntimeConfig, TextConfig
from alpamayo_ros.runtime.executor import ImageFeatures
from alpamayo_ros.runtime.tensorrt.cuda_memory import host_view
from alpamayo_ros.runtime.tensorrt.executor import (
    MAX_EULER_STEPS,
    TensorRTExecutor,
    TensorRTExecutorError,
)
from alpamayo_ros.runtime.tensorrt.manifest import (
    TEXT_ENGINES,
    TEXT_PHASES,
    EngineEntry,
    EngineManifest,
    ManifestError,
    engine_graphs,
)
from alpamayo_ros.runtime.tensorrt.trt_module import from_bf16_bits, to_bf16_bits

# tiny dims: layers, kv heads, head dim, prefix/suffix capacity, vocab, hidden, tokens/image, ...
L, H, DH, CP, CS, V, D, MV, TV, PD, NDS, W, A, KMAX = 2, 1, 2, 8, 4, 5, 3, 2, 4, 3, 2, 3, 2, 3
NP_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
VERSION = "10.13.0.35"


# ---------------------------------------------------------------------------------------------
# fake CUDA


class FakeCuda:
    def __init__(self) -> None:
        self.regions: dict[int, tuple[int, str, Any]] = {}  # start -> (nbytes, kind, keepalive)
        self.mallocs = 0
        self.capturing: list[Callable[[], None]] | None = None
        self.graphs: dict[int, list[Callable[[], None]]] = {}
        self.streams: set[int] = set()
        self.copied: dict[str, int] = {"htod": 0, "dtoh": 0, "dtod": 0}  # bytes, counted when executed
        self._next = 1

    def _alloc(self, nbytes: int, kind: str) -> int:
        buf = ctypes.create_string_buffer(nbytes + 512)
        start = (ctypes.addressof(buf) + 255) // 256 * 256
        ctypes.memset(start, 0x7F, nbytes)  # garbage, like fresh cudaMalloc memory
        self.regions[start] = (nbytes, kind, buf)
        return start

    def check(self, ptr: int, nbytes: int, kind: str) -> None:
        for start, (size, k, _) in self.regions.items():
            if start <= ptr and ptr + nbytes <= start + size:
                assert k == kind, f"{kind} pointer expected, got {k} memory"
                return
        raise AssertionError(f"{ptr:#x}+{nbytes} is not inside a live {kind} allocation")

    def malloc(self, nbytes: int) -> int:
        self.mallocs += 1
        return self._alloc(nbytes, "device")

    def malloc_host(self, nbytes: int) -> int:
        return self._alloc(nbytes, "host")

    def free(self, ptr: int) -> None:
        assert self.regions.pop(ptr)[1] == "device"

    def free_host(self, ptr: int) -> None:
        assert self.regions.pop(ptr)[1] == "host"

    def submit(self, op: Callable[[], None]) -> None:
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        self.check(ptr, nbytes, "device")
        self.submit(lambda: ctypes.memset(ptr, value, nbytes))

    def _copy(self, dst: int, dst_kind: str, src: int, src_kind: str, nbytes: int, direction: str) -> None:
        self.check(dst, nbytes, dst_kind)
        self.check(src, nbytes, src_kind)

        def run() -> None:
            ctypes.memmove(dst, src, nbytes)
            self.copied[direction] += nbytes

        self.submit(run)

    def memcpy_htod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, "device", src, "host", nbytes, "htod")

    def memcpy_dtoh_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, "host", src, "device", nbytes, "dtoh")

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, "device", src, "device", nbytes, "dtod")

    def memcpy2d_dtod_async(
        self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, stream: int
    ) -> None:
        assert width <= dpitch and width <= spitch
        for r in range(height):
            self._copy(dst + r * dpitch, "device", src + r * spitch, "device", width, "dtod")

    def stream_create(self) -> int:
        self.streams.add(len(self.streams) + 1)
        return len(self.streams)

    def stream_destroy(self, stream: int) -> None:
        self.streams.remove(stream)

    def stream_synchronize(self, stream: int) -> None:
        assert self.capturing is None, "synchronize inside a stream capture is illegal"

    def begin_capture(self, stream: int) -> None:
        assert self.capturing is None
        self.capturing = []

    def end_capture(self, stream: int) -> int:
        assert self.capturing is not None
        self._next += 1
        self.graphs[self._next], self.capturing = self.capturing, None
        return self._next

    def graph_launch(self, graph_exec: int, stream: int) -> None:
        for op in self.graphs[graph_exec]:
            op()

    def graph_destroy(self, graph_exec: int) -> None:
        del self.graphs[graph_exec]


# ---------------------------------------------------------------------------------------------
# fake TensorRT engines


@dataclass(frozen=True)
class Enum:
    name: str


@dataclass
class Spec:
    dtype: str
    shape: tuple[int, ...]  # -1 = dynamic
    profile: tuple[tuple[int, ...], ...] | None = None  # (min, opt, max) of profile 0
    is_input: bool = True
    profiles: list[tuple[tuple[int, ...], ...]] | None = None  # several profiles (the merged text engine)

    def range(self, profile: int) -> tuple[tuple[int, ...], ...] | None:
        if self.profiles is not None:
            return self.profiles[profile]
        assert profile == 0, "a single-profile engine"
        return self.profile


USER_MANAGED = Enum("USER_MANAGED")


@dataclass
class FakeEngine:
    graph: str
    specs: dict[str, Spec]
    out_shapes: Callable[[dict[str, tuple[int, ...]]], dict[str, tuple[int, ...]]]
    compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    cuda: FakeCuda
    contexts: list[FakeContext] = field(default_factory=list)
    memory: tuple[int, ...] = (1024,)  # activation bytes per optimization profile

    @property
    def num_io_tensors(self) -> int:
        return len(self.specs)

    def get_tensor_name(self, i: int) -> str:
        return list(self.specs)[i]

    def get_tensor_mode(self, name: str) -> Enum:
        return Enum("INPUT" if self.specs[name].is_input else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> Enum:
        return Enum(self.specs[name].dtype)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name].shape

    def is_shape_inference_io(self, name: str) -> bool:
        return False

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        shapes = self.specs[name].range(profile)
        assert shapes is not None
        return list(shapes)

    def get_device_memory_size_for_profile_v2(self, profile: int) -> int:
        return self.memory[profile]

    def create_execution_context(self, strategy: Enum) -> FakeContext:
        assert strategy == USER_MANAGED, "the executor provides every context's activation memory"
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.profile: int | None = None
        self.memory: tuple[int, int] | None = None

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        assert not self.shapes, "select the profile before setting shapes"
        if profile >= len(self.engine.memory):
            return False
        self.profile = profile
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        spec = self.engine.specs[name]
        assert self.profile is not None, "no optimization profile selected"
        r = spec.range(self.profile)
        lo, hi = (r[0], r[2]) if r else (spec.shape, spec.shape)
        if len(shape) != len(spec.shape) or not all(
            a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True)
        ):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        spec = self.engine.specs[name]
        if spec.is_input:
            return self.shapes.get(name, spec.shape)
        inputs = [n for n, s in self.engine.specs.items() if s.is_input]
        if any(n not in self.shapes for n in inputs):
            return spec.shape
        return self.engine.out_shapes(self.shapes)[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        engine, cuda = self.engine, self.engine.cuda
        assert self.memory is not None and self.profile is not None, "activation memory and profile not set"
        assert self.memory[1] >= engine.memory[self.profile]
        cuda.check(self.memory[0], engine.memory[self.profile], "device")
        shapes = {n: self.get_tensor_shape(n) for n in engine.specs}
        addresses = dict(self.addresses)  # baked in, like kernel arguments in a captured graph
        views: dict[str, np.ndarray] = {}
        for name, spec in engine.specs.items():
            dtype = np.dtype(NP_OF[spec.dtype])
            nbytes = int(np.prod(shapes[name])) * dtype.itemsize
            assert addresses[name], f"{name} not bound"
            cuda.check(addresses[name], nbytes, "device")
            views[name] = host_view(addresses[name], nbytes).view(dtype).reshape(shapes[name])

        def run() -> None:
            inputs = {
                n: views[n].copy() for n, s in engine.specs.items() if s.is_input
            }  # read all, then write
            for name, value in engine.compute(inputs).items():
                views[name][...] = value

        cuda.submit(run)
        return True


def _dyn(shape: tuple[int, ...], axes: dict[int, tuple[int, int]], dtype: str = "FLOAT") -> Spec:
    """A dynamic-shape input: `axes` maps axis -> (min, max); opt = max."""

    def at(which: int) -> tuple[int, ...]:
        return tuple(axes[i][which] if i in axes else d for i, d in enumerate(shape))

    return Spec(dtype, tuple(-1 if i in axes else d for i, d in enumerate(shape)), (at(0), at(1), at(1)))


def _out(dtype: str, shape: tuple[int, ...]) -> Spec:
    return Spec(dtype, shape, None, is_input=False)


def _layer_kv_specs(kv_dtype: str, batch_max: int) -> dict[str, Spec]:
    specs = {}
    for part in ("prefix", "suffix"):
        for kind in ("key", "value"):
            for layer in range(L):
                shape, axes = ((H, 0, DH), {1: (1, CP)}) if part == "prefix" else ((H, 0, CS, DH), {1: (1, batch_max)})
                specs[f"{part}_{kind}_{layer}"] = _dyn(shape, axes, kv_dtype)
    return specs


# The fake graphs' math (the oracle in `expected_tick` mirrors it on the host). Layer l's K/V carry
# 100·l (prefix) or 10·l (suffix), so a layer bound to another layer's slice changes the numbers.
def vision_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    emb = i["pixel_rows"][:, :MV, :D]
    return {"image_embeds": emb, "deepstack_embeds": np.stack([emb * (k + 2) for k in range(NDS)])}


def prefill_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    p = i["position_ids"].shape[2]
    ids = i["input_ids"][0, :p]
    out = {"logits": np.array([[ids.sum(), i["image_embeds"].sum(), i["deepstack_embeds"].sum(), ids.size,
                                i["image_token_index"].sum()]])}
    for layer in range(L):
        out[f"new_key_{layer}"] = np.broadcast_to(ids[None, :, None] + 100 * layer, (H, p, DH))
        out[f"new_value_{layer}"] = np.broadcast_to(-ids[None, :, None] - 100 * layer, (H, p, DH))
    return out


def decode_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids = i["input_ids"][:, 0]
    visible = i["suffix_mask"] == 0  # (B, Cs): the slots written before this step
    prefix_sum = i["prefix_key_1"][0, :, 0].sum() - 100 * i["prefix_key_1"].shape[1]  # layer 1: ids + 100
    suffix_sum = (i[f"suffix_key_{L - 1}"][0, :, :, 0] * visible).sum(axis=1) - 10 * (L - 1) * visible.sum(axis=1)
    logits = np.stack([suffix_sum, np.full_like(suffix_sum, prefix_sum), i["position_ids"][0, :, 0], ids,
                       visible.sum(axis=1)], axis=1)
    layer = np.arange(L)[:, None, None, None, None]
    token = ids[None, None, :, None, None]
    shape = (L, H, ids.size, 1, DH)
    return {"logits": logits, "new_key": np.broadcast_to(token + 10 * layer, shape),
            "new_value": np.broadcast_to(2 * token + 10 * layer, shape)}


def expert_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    k = i["x"].shape[0]
    seen = i["prefix_mask"] == 0  # (R, P): the unguided rows of a guided tick hide the route span
    prefix = (i["prefix_key_0"][0, :, 0] * seen).sum(1) + 0.01 * (i["prefix_value_1"][0, :, 0] * seen).sum(1)
    rows = np.arange(k) % i["suffix_value_0"].shape[1]  # MatMul broadcasting of a one-row suffix
    visible = i["suffix_mask"] == 0
    suffix = (i[f"suffix_value_{L - 1}"][0, rows, :, 0] * visible).sum(axis=1)
    v = prefix[:, None, None] + suffix[:, None, None] + i["t"][0] + 0.01 * i["position_ids"][0][:, :, None] - i["x"]
    v = (i["row_mix"][:, :, None, None] * v[None]).sum(1)  # the identity without guidance
    return {"x_next": i["x"] + i["dt"][0] * v}


def text_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The merged text engine: the prefill's numbers on profile 0 (no prefix, every suffix slot hidden),
    decode's on profile 1; the new K/V per layer as (H, B, T, DH). The real graph's equivalence with the
    prefill and decode graphs is tested on ONNX Runtime (test_export.py)."""
    if i["prefix_key_0"].shape[1] == 0:
        assert i["input_ids"].shape[0] == 1 and (i["suffix_mask"] <= -1e8).all()
        out = prefill_fn(i)
        return {n: v[:, None] if n.startswith("new_") else v for n, v in out.items()}
    assert i["image_token_index"].size == 0
    out = decode_fn(i)
    return {"logits": out["logits"], **{f"new_{kind}_{layer}": out[f"new_{kind}"][layer]
                                        for kind in ("key", "value") for layer in range(L)}}


def extend_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Like decode's new K/V, per token, plus what the masks let each token see (0.001 per prompt column,
    0.0001 per own token) in the values."""
    ids = i["input_ids"]  # (B, T)
    seen = (i["prefix_mask"] == 0).sum() * 0.001 + (i["own_mask"] == 0).sum(-1) * 0.0001  # (B, T)
    layer = np.arange(L)[:, None, None, None, None]
    b, t = ids.shape
    key = np.broadcast_to(ids[None, None, :, :, None] + 10 * layer, (L, H, b, t, DH))
    value = np.broadcast_to(2 * ids[None, None, :, :, None] + 10 * layer + seen[None, None, :, :, None], (L, H, b, t, DH))
    return {"new_key": key, "new_value": value}


def sample_fn(i: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fake sampler: the argmax shifted by the uniform's first digit; rows with u >= 0.9 not covered."""
    u = i["uniforms"]
    return {"token_ids": i["logits"].argmax(axis=1) + np.floor(u * 10).astype(np.int64), "covered": u < 0.9}


def make_engines(
    cuda: FakeCuda, kv_dtype: str = "FLOAT", logits_dtype: str = "FLOAT", guidance: bool = False
) -> dict[str, FakeEngine]:
    rows = 2 * KMAX if guidance else KMAX  # expert rows
    f = "FLOAT"
    vision = {
        "pixel_rows": _dyn((0, TV, PD), {0: (1, 4)}),
        "image_embeds": _out(f, (-1, MV, D)),
        "deepstack_embeds": _out(f, (NDS, -1, MV, D)),
    }
    prefill = {
        "input_ids": _dyn((1, 0), {1: (1, CP)}, "INT64"),
        "position_ids": _dyn((3, 1, 0), {2: (1, CP)}, "INT64"),
        "image_embeds": _dyn((0, D), {0: (1, CP)}),
        "deepstack_embeds": _dyn((NDS, 0, D), {1: (1, CP)}),
        "image_token_index": _dyn((0,), {0: (1, CP)}, "INT64"),
        "logits": _out(logits_dtype, (1, V)),
        **{f"new_{kind}_{layer}": _out(kv_dtype, (H, -1, DH)) for kind in ("key", "value") for layer in range(L)},
    }
    decode = {
        "input_ids": _dyn((0, 1), {0: (1, KMAX)}, "INT64"),
        "position_ids": _dyn((3, 0, 1), {1: (1, KMAX)}, "INT64"),
        "suffix_mask": _dyn((0, CS), {0: (1, KMAX)}),
        **_layer_kv_specs(kv_dtype, KMAX),
        "logits": _out(logits_dtype, (-1, V)),
        "new_key": _out(kv_dtype, (L, H, -1, 1, DH)),
        "new_value": _out(kv_dtype, (L, H, -1, 1, DH)),
    }
    expert = {
        "x": _dyn((0, W, A), {0: (1, rows)}),
        "t": Spec(f, (1,)),
        "dt": Spec(f, (1,)),
        "row_mix": _dyn((0, 0), {0: (1, rows), 1: (1, rows)}),
        "position_ids": _dyn((3, 0, W), {1: (1, rows)}, "INT64"),
        "suffix_mask": _dyn((0, CS), {0: (1, rows)}),
        "prefix_mask": _dyn((0, 0), {0: (1, rows), 1: (1, CP)}),
        **_layer_kv_specs(kv_dtype, rows),
        "x_next": _out(f, (-1, W, A)),
    }
    extend = {
        "input_ids": _dyn((0, 0), {0: (1, KMAX), 1: (1, CS)}, "INT64"),
        "position_ids": _dyn((3, 0, 0), {1: (1, KMAX), 2: (1, CS)}, "INT64"),
        "prefix_mask": _dyn((1, 0), {1: (1, CP)}),
        "own_mask": _dyn((0, 0, 0), {0: (1, KMAX), 1: (1, CS), 2: (1, CS)}),
        **{n: s for n, s in _layer_kv_specs(kv_dtype, KMAX).items() if n.startswith("prefix_")},
        "new_key": _out(kv_dtype, (L, H, -1, -1, DH)),
        "new_value": _out(kv_dtype, (L, H, -1, -1, DH)),
    }

    sample = {
        "logits": _dyn((0, V), {0: (1, KMAX)}, logits_dtype),
        "uniforms": _dyn((0,), {0: (1, KMAX)}),
        "temperature": Spec(f, (1,)),
        "top_p": Spec(f, (1,)),
        "token_ids": _out("INT64", (-1,)),
        "covered": _out("BOOL", (-1,)),
    }

    def sample_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        return {"token_ids": s["uniforms"], "covered": s["uniforms"]}

    def vision_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        n = s["pixel_rows"][0]
        return {"image_embeds": (n, MV, D), "deepstack_embeds": (NDS, n, MV, D)}

    def prefill_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        p = s["position_ids"][2]
        kv = {f"new_{kind}_{layer}": (H, p, DH) for kind in ("key", "value") for layer in range(L)}
        return {"logits": (1, V), **kv}

    def decode_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        b = s["input_ids"][0]
        return {"logits": (b, V), "new_key": (L, H, b, 1, DH), "new_value": (L, H, b, 1, DH)}

    def expert_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        return {"x_next": s["x"]}

    def text_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        b, t = s["input_ids"]
        kv = {f"new_{kind}_{layer}": (H, b, t, DH) for kind in ("key", "value") for layer in range(L)}
        return {"logits": (b, V), **kv}

    def extend_shapes(s: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        b, t = s["input_ids"]
        return {"new_key": (L, H, b, t, DH), "new_value": (L, H, b, t, DH)}

    guided = {"extend": FakeEngine("extend", extend, extend_shapes, extend_fn, cuda)} if guidance else {}
    return {**guided,
        "text": FakeEngine("text", text_specs(kv_dtype, logits_dtype), text_shapes, text_fn, cuda, memory=(4096, 512)),
        "vision": FakeEngine("vision", vision, vision_shapes, vision_fn, cuda),
        "prefill": FakeEngine("prefill", prefill, prefill_shapes, prefill_fn, cuda),
        "decode": FakeEngine("decode", decode, decode_shapes, decode_fn, cuda),
        "expert_step": FakeEngine("expert_step", expert, expert_shapes, expert_fn, cuda),
        "sample": FakeEngine("sample", sample, sample_shapes, sample_fn, cuda),
    }


def text_specs(kv_dtype: str, logits_dtype: str) -> dict[str, Spec]:
    """The merged text engine's I/O: profile 0 = prefill (B 1, T ≤ CP, P 0), profile 1 = decode (T 1, M 0)."""

    def phased(dtype: str, shape: tuple[int, ...], prefill: dict[int, tuple[int, int]],
               decode: dict[int, tuple[int, int]]) -> Spec:
        def at(axes: dict[int, tuple[int, int]], which: int) -> tuple[int, ...]:
            return tuple(axes[i][which] if i in axes else d for i, d in enumerate(shape))

        profiles = [(at(a, 0), at(a, 1), at(a, 1)) for a in (prefill, decode)]
        return Spec(dtype, tuple(-1 if i in prefill else d for i, d in enumerate(shape)), profiles[0],
                    profiles=profiles)

    rows, none, one = (1, KMAX), (0, 0), (1, 1)
    specs = {
        "input_ids": phased("INT64", (0, 0), {0: one, 1: (1, CP)}, {0: rows, 1: one}),
        "position_ids": phased("INT64", (3, 0, 0), {1: one, 2: (1, CP)}, {1: rows, 2: one}),
        "image_embeds": phased("FLOAT", (0, D), {0: (1, CP)}, {0: none}),
        "deepstack_embeds": phased("FLOAT", (NDS, 0, D), {1: (1, CP)}, {1: none}),
        "image_token_index": phased("INT64", (0,), {0: (1, CP)}, {0: none}),
        "suffix_mask": phased("FLOAT", (0, CS), {0: one}, {0: rows}),
        "logits": _out(logits_dtype, (-1, V)),
    }
    for kind in ("key", "value"):
        for layer in range(L):
            specs[f"prefix_{kind}_{layer}"] = phased(kv_dtype, (H, 0, DH), {1: none}, {1: (1, CP)})
            specs[f"suffix_{kind}_{layer}"] = phased(kv_dtype, (H, 0, CS, DH), {1: one}, {1: rows})
            specs[f"new_{kind}_{layer}"] = _out(kv_dtype, (H, -1, -1, DH))
    return specs


class FakeSource:
    user_managed = USER_MANAGED

    def __init__(self, engines: dict[str, FakeEngine], version: str = VERSION) -> None:
        self.engines, self.version = engines, version

    def deserialize(self, data: bytes) -> FakeEngine:
        return self.engines[data.decode().removeprefix("fake-engine:")]


CONFIG = RuntimeConfig(
    text=TextConfig(num_hidden_layers=L, num_key_value_heads=H, head_dim=DH, hidden_size=D, vocab_size=V),
    prefix_capacity=CP,
    suffix_capacity=CS,
    config_hash="fake-config-hash",
)
CONFIG_1_5 = replace(CONFIG, model_type="alpamayo1_5", config_hash="fake-1.5-config-hash")  # extend, 2K rows


def engine_entries(path: Path, arrangement: str, onnx: bool = True, guidance: bool = False,
                   graphs: tuple[str, ...] | None = None) -> dict[str, EngineEntry]:
    entries = {}
    for graph in graphs or engine_graphs(arrangement, guidance):
        data = f"fake-engine:{graph}".encode()
        (path / f"{graph}.engine").write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        entries[graph] = EngineEntry(
            graph, f"{graph}.engine", len(data), sha, f"{graph}.onnx" if onnx else "", "0", True, "fp32", "none", 0.0,
            profiles=list(TEXT_PHASES) if graph == "text" else ["default"],
        )
    return entries


def write_engine_dir(path: Path, config_hash: str = CONFIG.config_hash, version: str = VERSION,
                     arrangement: str = "merged", guidance: bool = False, graphs: tuple[str, ...] | None = None
                     ) -> Path:
    EngineManifest("tensorrt", version, config_hash, "fp32", False, CP, CS, KMAX,
                   engine_entries(path, arrangement, guidance=guidance, graphs=graphs), {}, text_engines=arrangement,
                   model_type="alpamayo1_5" if guidance else "alpamayo_r1", navigation_guidance=guidance).write(path)
    return path


def make_executor(
    tmp_path: Path, cuda: FakeCuda | None = None, arrangement: str = "merged", **kwargs: Any
) -> tuple[TensorRTExecutor, FakeCuda]:
    cuda = cuda or FakeCuda()
    guidance = kwargs.pop("guidance", False)
    engines = make_engines(cuda, kwargs.pop("kv_dtype", "FLOAT"), kwargs.pop("logits_dtype", "FLOAT"), guidance)
    source = FakeSource(engines, kwargs.pop("version", VERSION))
    config = CONFIG_1_5 if guidance else CONFIG
    engine_dir = write_engine_dir(tmp_path, config.config_hash, arrangement=arrangement, guidance=guidance)
    executor = TensorRTExecutor(config, engine_dir, cuda=cuda, engine_source=source, **kwargs)
    return executor, cuda


# ---------------------------------------------------------------------------------------------
# a tick's inputs and the fake graphs' expected outputs


def run_tick(ex: TensorRTExecutor, seed: int, batch: int = 2, steps: int = 3, k: int = 2) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((3, TV, PD)).astype(np.float32)
    feats = ex.encode_images(pixels)
    s = 6
    ids = rng.integers(1, 9, s).astype(np.int64)
    pos = np.tile(np.arange(s), (3, 1)).astype(np.int64)
    token_index = np.array([1, 2, 3, 4], dtype=np.int64)
    prefill_logits = ex.prefill(ids, pos, feats[:2], token_index)
    ex.start_decode(batch)
    decoded, tokens = [], rng.integers(1, 9, (3, batch)).astype(np.int64)
    for i in range(3):
        suffix_mask = np.where(np.arange(CS) < i, 0.0, -1e9).astype(np.float32)[None].repeat(batch, 0)
        positions = np.full((3, batch, 1), s + i, dtype=np.int64)
        decoded.append(ex.decode(tokens[i], positions, i, suffix_mask))
    x0 = rng.standard_normal((k, W, A)).astype(np.float32)
    schedule = [(j / steps, 1.0 / steps) for j in range(steps)]
    positions = np.tile(np.arange(W), (3, k, 1)).astype(np.int64)
    expert_mask = np.where(np.arange(CS) < 3, 0.0, -1e9).astype(np.float32)[None].repeat(k, 0)
    x1 = ex.run_expert(x0, schedule, positions, expert_mask)
    return dict(pixels=pixels, feats=feats, ids=ids, prefill=prefill_logits, tokens=tokens, decoded=decoded,
                x0=x0, schedule=schedule, positions=positions, x1=x1)  # fmt: skip


def expected_tick(t: dict[str, Any], batch: int = 2) -> dict[str, Any]:
    emb = t["pixels"][:, :MV, :D]
    ds = np.stack([emb * (k + 2) for k in range(NDS)])
    ids = t["ids"]
    stacked_embeds, stacked_ds = emb[:2].reshape(-1, D), ds[:, :2].reshape(NDS, -1, D)
    prefill = np.array(
        [ids.sum(), stacked_embeds.sum(), stacked_ds.sum(), ids.size, 1 + 2 + 3 + 4], dtype=np.float32
    )
    decoded = []
    for i in range(3):  # slots [0, i) hold the tokens fed before step i
        suffix = t["tokens"][:i].sum(axis=0)
        row = [suffix, np.full(batch, ids.sum()), np.full(batch, ids.size + i), t["tokens"][i], np.full(batch, i)]
        decoded.append(np.stack(row, 1))
    value_sums = (2 * t["tokens"] + 10 * (L - 1)).sum(axis=0)  # last layer's suffix values, 3 slots
    x = t["x0"].astype(np.float64)
    rows = np.arange(x.shape[0]) % batch
    prefix = ids.sum() + 0.01 * (-ids - 100).sum()  # layer 0 keys, layer 1 values
    for tt, dt in t["schedule"]:
        v = prefix + value_sums[rows][:, None, None] + tt + 0.01 * t["positions"][0][:, :, None] - x
        x = x + dt * v
    return dict(embeds=emb, deepstack=ds, prefill=prefill, decoded=decoded, x1=x)


def assert_tick(t: dict[str, Any], batch: int = 2, atol: float = 1e-5) -> None:
    e = expected_tick(t, batch)
    for n, f in enumerate(t["feats"]):
        np.testing.assert_allclose(f.embeds, e["embeds"][n], atol=atol)
        np.testing.assert_allclose(f.deepstack, e["deepstack"][:, n], atol=atol)
    np.testing.assert_allclose(t["prefill"], e["prefill"], rtol=1e-6, atol=atol)
    for got, want in zip(t["decoded"], e["decoded"], strict=True):
        np.testing.assert_allclose(got, want, atol=atol)
    np.testing.assert_allclose(t["x1"], e["x1"], rtol=1e-5, atol=atol)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_configure_sizes_every_buffer_from_the_engines(tmp_path: Path, arrangement: str) -> None:
    ex, cuda = make_executor(tmp_path, arrangement=arrangement)
    plan = ex.plan
    layer_prefix = -(-H * CP * DH * 4 // 256) * 256  # each layer's slice starts 256-byte aligned
    assert plan["kv.prefix_key"].nbytes == plan["kv.prefix_value"].nbytes == L * layer_prefix
    assert plan["kv.suffix_value"].nbytes == L * -(-H * KMAX * CS * DH * 4 // 256) * 256  # profile max batch
    assert not plan["kv.prefix_key"].staged  # the cache never crosses to the host
    assert not any(k.startswith("kv.") and k[-2:] in (".0", ".1") for k in plan)  # one buffer each: no ping-pong
    if arrangement == "separate":  # decode's new K/V: one stacked output, or one per layer (text engine)
        assert plan["decode.new_key"].nbytes == L * H * KMAX * DH * 4 and not plan["decode.new_key"].staged
    else:
        assert all(plan[f"decode.new_key_{i}"].nbytes == H * KMAX * DH * 4 for i in range(L))
        assert not plan["decode.new_key_0"].staged and plan["prefill.suffix_mask"].nbytes == CS * 4
        assert plan["decode.image_embeds"].nbytes == 0  # M = 0 in the decode profile
    assert plan["decode.logits"].nbytes == KMAX * V * 4 and plan["decode.logits"].staged
    assert plan["prefill.input_ids"].nbytes == CP * 8  # int64, S at profile max
    assert plan["vision.deepstack_embeds"].nbytes == NDS * 4 * MV * D * 4  # N at profile max 4
    assert plan["expert_step.x.0"].nbytes == plan["expert_step.x.1"].nbytes == KMAX * W * A * 4
    assert plan["expert_step.t"].nbytes == MAX_EULER_STEPS * 256  # one 256-byte-aligned slot per step
    bound_into_kv = [k for k in plan if ("_key_" in k or "_value_" in k) and not k.startswith("decode.new_")]
    assert not bound_into_kv and not any(k.endswith("x_next") for k in plan)  # prefix / suffix: in kv.*
    assert "sample.logits" not in plan and plan["sample.token_ids"].nbytes == KMAX * 8  # reads decode.logits
    assert cuda.mallocs == len(plan) + 1  # + the activation arena
    ptr = ex._alloc["kv.prefix_key"].device  # KV zeroed at configure: masked slots are finite, never NaN
    assert not host_view(ptr, plan["kv.prefix_key"].nbytes).any()
    device, pinned = ex.memory_bytes()
    assert device == sum(s.nbytes for s in plan.values()) + ex.arena.spec.nbytes and pinned < device
    decisions = {g: d.capture for g, d in ex.decisions.items()}
    assert decisions == {"vision": False, "prefill": False, "decode": True, "expert_step": True, "sample": False}


def test_merged_text_engine_holds_the_weights_once_and_runs_both_phases(tmp_path: Path) -> None:
    """One text engine (one copy of the text weights), two contexts: prefill on profile 0, decode on
    profile 1; every context's activation memory is the one arena, sized for the largest need."""
    ex, cuda = make_executor(tmp_path)
    prefill, decode = ex.runners["prefill"], ex.runners["decode"]
    assert prefill.engine is decode.engine and prefill.engine.graph == "text"
    assert len(prefill.engine.contexts) == 2 and (prefill.profile, decode.profile) == (0, 1)
    assert prefill.context.profile == 0 and decode.context.profile == 1
    assert "text" not in ex.runners and set(ex.runners) == {"vision", "prefill", "decode", "expert_step", "sample"}
    assert ex.arena.spec.nbytes == 4096  # the text engine's prefill profile needs the most
    assert {r.context.memory for r in ex.runners.values()} == {(ex.arena.device, 4096)}
    assert_tick(run_tick(ex, seed=21))
    assert prefill.max_shapes["input_ids"] == (1, CP) and decode.max_shapes["input_ids"] == (KMAX, 1)
    assert prefill.context.shapes["prefix_key_0"] == (H, 0, DH)  # no prefix yet: an empty tensor
    assert decode.context.shapes["image_embeds"] == (0, D)
    assert prefill.context.shapes["input_ids"] == (1, 6)  # the prompt as it is (no query-block padding)


def test_a_text_engine_built_without_its_two_profiles_is_refused(tmp_path: Path) -> None:
    cuda = FakeCuda()
    write_engine_dir(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["engines"]["text"]["profiles"] = ["default"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TensorRTExecutorError, match=r"text engine profiles \['default'\], expected \['prefill', 'decode'\]"):
        TensorRTExecutor(CONFIG, tmp_path, cuda=cuda, engine_source=FakeSource(make_engines(cuda)))
    assert not cuda.regions and not cuda.streams


@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_a_tick_moves_the_right_bytes_through_the_engines(tmp_path: Path, arrangement: str) -> None:
    ex, cuda = make_executor(tmp_path, arrangement=arrangement, use_cuda_graphs=False)
    mallocs = cuda.mallocs
    assert_tick(run_tick(ex, seed=1))
    assert_tick(run_tick(ex, seed=2))  # second tick: a new prompt over the old one, suffix restarted
    assert cuda.mallocs == mallocs  # nothing allocated per tick
    assert ex.stats.enqueues == {"vision": 2, "prefill": 2, "decode": 6, "expert_step": 6}
    assert not ex.stats.graph_captures and not cuda.graphs


@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_kv_is_read_in_place_and_only_new_tokens_are_written(tmp_path: Path, arrangement: str) -> None:
    """The prompt's K/V outputs are bound to the addresses decode and the expert read (aliased in place);
    a decode step copies exactly the new tokens' K/V on the device and moves no cache to the host."""
    ex, cuda = make_executor(tmp_path, arrangement=arrangement, use_cuda_graphs=False)
    run_tick(ex, seed=11)
    bound = {g: r.context.addresses for g, r in ex.runners.items()}
    base = ex._alloc["kv.prefix_key"].device
    for layer in range(L):
        address = bound["prefill"][f"new_key_{layer}"]
        assert address == bound["decode"][f"prefix_key_{layer}"] == bound["expert_step"][f"prefix_key_{layer}"]
        assert address % 256 == 0 and base <= address < base + ex.plan["kv.prefix_key"].nbytes
        suffix = bound["decode"][f"suffix_value_{layer}"]
        assert suffix == bound["expert_step"][f"suffix_value_{layer}"]
    assert bound["decode"]["prefix_key_1"] - bound["decode"]["prefix_key_0"] == 256  # 6 tokens, aligned layers
    ex.start_decode(2)
    before = dict(cuda.copied)
    mask = np.where(np.arange(CS) < 3, 0.0, -1e9).astype(np.float32)[None].repeat(2, 0)
    ex.decode(np.array([5, 6]), np.full((3, 2, 1), 9), 3, mask)
    moved = {d: cuda.copied[d] - before[d] for d in cuda.copied}
    assert moved["dtod"] == 2 * L * H * 2 * DH * 4  # key + value of one token per row, every layer
    assert moved["dtoh"] == 2 * V * 4  # the logits; nothing of the cache
    suffix_key = host_view(ex._alloc["kv.suffix_key"].device, ex.plan["kv.suffix_key"].nbytes).view(np.float32)
    layer1 = suffix_key[-(-H * 2 * CS * DH * 4 // 256) * 64:][: H * 2 * CS * DH].reshape(H, 2, CS, DH)
    assert (layer1[:, :, 3] == np.array([5, 6])[None, :, None] + 10).all()  # layer 1's slot 3 of both rows


def test_device_sampling_returns_token_ids_and_the_logits_only_on_demand(tmp_path: Path) -> None:
    ex, cuda = make_executor(tmp_path)
    assert ex.device_sampling
    run_tick(ex, seed=12)  # a prompt and three suffix slots
    ex.start_decode(2)
    mask = np.where(np.arange(CS) < 3, 0.0, -1e9).astype(np.float32)[None].repeat(2, 0)
    logits = None
    for _replay in range(2):  # eager + capture, then the replayed CUDA graph
        before = cuda.copied["dtoh"]
        ids, covered = ex.decode_sampled(np.array([5, 6]), np.full((3, 2, 1), 9), 3, mask,
                                         np.array([0.25, 0.95]), 0.6, 0.98)
        assert cuda.copied["dtoh"] - before == 2 * 8 + 2  # token ids and flags; no logits
        logits = ex.last_logits()
        np.testing.assert_array_equal(ids, logits.argmax(axis=1) + np.array([2, 9]))
        np.testing.assert_array_equal(covered, [True, False])
        assert ex.runners["sample"].context.addresses["logits"] == ex._alloc["decode.logits"].device
    assert ex.stats.graph_captures["decode_sampled"] == 1 and ex.stats.graph_launches["decode_sampled"] == 1
    assert logits is not None and logits.shape == (2, V)
    np.testing.assert_allclose(logits[:, 3], [5, 6])  # the fed tokens: decode ran before sampling


@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_cuda_graphs_capture_once_and_replay_with_identical_results(tmp_path: Path, arrangement: str) -> None:
    (tmp_path / "eager").mkdir()
    (tmp_path / "graphed").mkdir()
    eager, _ = make_executor(tmp_path / "eager", arrangement=arrangement, use_cuda_graphs=False)
    graphed, cuda = make_executor(tmp_path / "graphed", arrangement=arrangement)
    for seed in (3, 4, 5):
        want, got = run_tick(eager, seed), run_tick(graphed, seed)
        assert_tick(got)
        for a, b in zip(want["decoded"], got["decoded"], strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(want["x1"], got["x1"])
    # decode keys: (batch 2, write slot 0/1/2, prompt length 6): captured on the first tick, replayed after;
    # the expert key (K, suffix rows, steps, prompt length): one capture
    assert graphed.stats.graph_captures == {"decode": 3, "expert_step": 1}
    assert graphed.stats.graph_launches == {"decode": 9 - 3, "expert_step": 3 - 1}
    # enqueues outside capture = eager first runs only; replays do not enqueue
    assert graphed.stats.enqueues == {"vision": 3, "prefill": 3, "decode": 3, "expert_step": 3}
    assert len(cuda.graphs) == 4


def test_shared_reasoning_repeats_the_one_suffix_row(tmp_path: Path) -> None:
    ex, cuda = make_executor(tmp_path)
    mallocs = cuda.mallocs
    t = run_tick(ex, seed=7, batch=1, k=3)
    assert_tick(t, batch=1)
    assert ex.runners["expert_step"].context.shapes["suffix_key_0"] == (H, 3, CS, DH)
    assert ex.take_counters()["suffix_kv_copies"] == 2
    assert cuda.mallocs == mallocs + 2  # the repeated rows' buffers (key, value), once
    assert_tick(run_tick(ex, seed=8, batch=1, k=3), batch=1)
    assert cuda.mallocs == mallocs + 2


def test_an_engine_build_without_extend_runs_unguided(tmp_path: Path) -> None:
    cuda = FakeCuda()
    engines = make_engines(cuda, guidance=True)
    ex = TensorRTExecutor(CONFIG_1_5, write_engine_dir(tmp_path, CONFIG_1_5.config_hash), cuda=cuda,
                          engine_source=FakeSource(engines))  # the merged arrangement's engines, no extend
    try:
        assert not ex.supports_guidance and "extend" not in ex.runners
        with pytest.raises(NotImplementedError, match="no extend graph"):
            ex.extend(np.zeros((1, 2), np.int64), np.zeros((3, 1, 2), np.int64), np.zeros((1, 4), np.float32),
                      np.zeros((1, 2, 2), np.float32))
        assert_tick(run_tick(ex, seed=9))  # an unguided tick of the 1.5 graph family
    finally:
        ex.close()


@pytest.mark.parametrize("batch", [2, 1], ids=["per_candidate", "shared_reasoning"])
def test_navigation_guidance_extends_the_unguided_rows_and_runs_2k_expert_rows(tmp_path: Path, batch: int) -> None:
    """extend's K/V land in the unguided rows' slots; the expert's 2K rows read the decoded rows, then the
    unguided ones, with their prefix masks, and the row mix blends them (oracle: the fake graphs' math on
    host arrays laid out as the executor must have laid them out)."""
    ex, _ = make_executor(tmp_path, guidance=True)
    assert ex.supports_guidance and "extend" in ex.runners
    rng = np.random.default_rng(3)
    k, s, n, t_ext = 2, 6, 3, 4
    ids = rng.integers(1, 9, s).astype(np.int64)
    feats = ex.encode_images(rng.standard_normal((2, TV, PD)).astype(np.float32))
    ex.prefill(ids, np.tile(np.arange(s), (3, 1)).astype(np.int64), feats, np.array([1, 2, 3, 4], dtype=np.int64))
    ex.start_decode(batch)
    tokens = rng.integers(1, 9, (n, batch)).astype(np.int64)
    for i in range(n):
        mask = np.where(np.arange(CS) < i, 0.0, -1e9).astype(np.float32)[None].repeat(batch, 0)
        ex.decode(tokens[i], np.full((3, batch, 1), s + i, dtype=np.int64), i, mask)
    ext_ids = rng.integers(1, 9, (batch, t_ext)).astype(np.int64)
    prefix_mask = np.where(np.arange(s) < 4, 0.0, -1e9).astype(np.float32)[None]  # the route span hidden
    own = np.where(np.tri(t_ext, dtype=bool)[None], 0.0, -1e9).astype(np.float32).repeat(batch, 0)
    ex.extend(ext_ids, np.full((3, batch, t_ext), 7, dtype=np.int64), prefix_mask, own)
    # the expert: rows [0, K) guided, [K, 2K) unguided; suffix masks show 3 decoded / 4 unguided slots
    r, w = 2 * k, 1.5
    x0 = np.concatenate([rng.standard_normal((k, W, A)).astype(np.float32)] * 2)
    positions = np.tile(np.arange(W), (3, r, 1)).astype(np.int64)
    suffix_mask = np.where(np.arange(CS)[None] < np.array([[3]] * k + [[4]] * k), 0.0, -1e9).astype(np.float32)
    row_prefix = np.concatenate([np.zeros((k, s), np.float32), np.repeat(prefix_mask, k, 0)])
    eye = np.eye(k, dtype=np.float32)
    mix = np.block([[w * eye, (1 - w) * eye], [w * eye, (1 - w) * eye]]).astype(np.float32)
    steps = [(j / 2, 0.5) for j in range(2)]
    x1 = ex.run_expert(x0, steps, positions, suffix_mask, row_prefix, mix)
    assert ex.runners["expert_step"].context.shapes["suffix_key_0"] == (H, r, CS, DH)
    # oracle: prefix from prefill_fn, decoded rows from decode_fn, unguided rows from extend_fn
    pre = prefill_fn({"position_ids": np.zeros((3, 1, s)), "input_ids": ids[None], "image_embeds": np.zeros((1, D)),
                      "deepstack_embeds": np.zeros((NDS, 1, D)), "image_token_index": np.zeros(1)})
    suffix = np.zeros((L, H, r, CS, DH))
    for i in range(n):
        new = decode_fn({"input_ids": tokens[i][:, None], "suffix_mask": np.zeros((batch, CS)),
                         "prefix_key_1": pre["new_key_1"], "position_ids": np.zeros((3, batch, 1)),
                         f"suffix_key_{L - 1}": np.zeros((H, batch, CS, DH))})["new_value"]
        suffix[:, :, :k, i] = new[:, :, np.arange(k) % batch, 0]
    unguided = extend_fn({"input_ids": ext_ids, "prefix_mask": prefix_mask, "own_mask": own})["new_value"]
    suffix[:, :, k:, :t_ext] = unguided[:, :, np.arange(k) % batch]
    x = x0.astype(np.float64)
    for t, dt in steps:
        x = expert_fn({"x": x, "t": np.array([t]), "dt": np.array([dt]), "row_mix": mix, "position_ids": positions,
                       "suffix_mask": suffix_mask, "prefix_mask": row_prefix, "prefix_key_0": pre["new_key_0"],
                       "prefix_value_1": pre["new_value_1"], "suffix_value_0": suffix[0],
                       f"suffix_value_{L - 1}": suffix[L - 1]})["x_next"]
    np.testing.assert_allclose(x1, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x1[:k], x1[k:], rtol=0, atol=0)  # both halves carry the blended x
    assert ex.take_counters()["suffix_kv_copies"] == r - batch


@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_fp16_cache_and_logits_are_converted_at_the_host_boundary(tmp_path: Path, arrangement: str) -> None:
    ex, _ = make_executor(tmp_path, arrangement=arrangement, kv_dtype="HALF", logits_dtype="HALF")
    assert ex.plan["kv.prefix_key"].nbytes == L * -(-H * CP * DH * 2 // 256) * 256
    assert ex.plan["decode.logits"].nbytes == KMAX * V * 2
    t = run_tick(ex, seed=8)
    assert t["decoded"][0].dtype == np.float32
    assert_tick(t, atol=0.05)


def test_profile_violations_are_clear_errors(tmp_path: Path) -> None:
    ex, _ = make_executor(tmp_path, arrangement="separate")
    with pytest.raises(TensorRTExecutorError, match=r"decode batch 4 outside the engine profile \[1, 3\]"):
        ex.start_decode(KMAX + 1)
    ids = np.zeros(CP + 1, dtype=np.int64)
    feats = [ImageFeatures(np.zeros((MV, D), np.float32), np.zeros((NDS, MV, D), np.float32))]
    with pytest.raises(
        TensorRTExecutorError, match=r"input_ids axis 1 = 9 is outside the engine profile \[1, 8\]"
    ):
        ex.prefill(ids, np.zeros((3, CP + 1), np.int64), feats, np.array([0, 1]))
    ex.start_decode(2)
    with pytest.raises(TensorRTExecutorError, match="decode got 1 rows after start_decode"):
        ex.decode(np.zeros(1, np.int64), np.zeros((3, 1, 1), np.int64), 0, np.zeros((1, CS), np.float32))
    with pytest.raises(TensorRTExecutorError, match=r"suffix slot 4 outside \[0, 4\)"):
        ex.decode(np.zeros(2, np.int64), np.zeros((3, 2, 1), np.int64), CS, np.zeros((2, CS), np.float32))


def test_engine_manifest_mismatch_is_refused_before_any_allocation(tmp_path: Path) -> None:
    cuda = FakeCuda()
    with pytest.raises(ManifestError, match=r"built with TensorRT 10\.13\.0\.35 .*runs TensorRT 10\.14\.1"):
        make_executor(tmp_path, cuda=cuda, version="10.14.1")
    assert cuda.mallocs == 0 and not cuda.streams
    write_engine_dir(tmp_path, config_hash="another-model")
    engines = make_engines(cuda)
    with pytest.raises(ManifestError, match="belong to model config 'another-model'"):
        TensorRTExecutor(CONFIG, tmp_path, cuda=cuda, engine_source=FakeSource(engines))


def test_kv_dtype_disagreement_between_engines_is_refused(tmp_path: Path) -> None:
    cuda = FakeCuda()
    engines = make_engines(cuda)
    engines["decode"].specs["prefix_key_0"] = _dyn((H, 0, DH), {1: (1, CP)}, "HALF")
    with pytest.raises(
        TensorRTExecutorError,
        match="KV dtype mismatch: prefill.new_key_0 is FLOAT but decode.prefix_key_0 is HALF",
    ):
        TensorRTExecutor(CONFIG, write_engine_dir(tmp_path, arrangement="separate"), cuda=cuda,
                         engine_source=FakeSource(engines))
    assert not cuda.regions and not cuda.streams  # a failed configure releases what it took


def test_engines_of_the_old_whole_cache_format_are_refused(tmp_path: Path) -> None:
    cuda = FakeCuda()
    engines = make_engines(cuda)
    for name in [n for n in engines["decode"].specs if n.startswith(("prefix_", "suffix_key", "suffix_value"))]:
        del engines["decode"].specs[name]
    with pytest.raises(TensorRTExecutorError, match="no per-layer KV inputs.*older format; re-export and rebuild"):
        TensorRTExecutor(CONFIG, write_engine_dir(tmp_path, arrangement="separate"), cuda=cuda,
                         engine_source=FakeSource(engines))


def test_close_releases_buffers_graphs_and_stream(tmp_path: Path) -> None:
    ex, cuda = make_executor(tmp_path)
    run_tick(ex, seed=9)
    run_tick(ex, seed=10)
    assert cuda.graphs and cuda.regions
    ex.close()
    assert not cuda.graphs and not cuda.regions and not cuda.streams


def test_bf16_host_codec_rounds_to_nearest_even() -> None:
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0, 1.00390625, 1.01171875], dtype=np.float32)
    back = from_bf16_bits(to_bf16_bits(x))
    np.testing.assert_allclose(back, x, rtol=2**-8)
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins (1.0); 1 + 3*2^-8 rounds up
    assert back[5] == 1.0 and back[6] == np.float32(1.015625)


# ---------------------------------------------------------------------------------------------
# the same adapter under the shared orchestrator, with engines that execute the real ONNX graphs


def ort_engines(onnx_dir: Path, cuda: FakeCuda) -> dict[str, FakeEngine]:
    """Fake engines whose kernels are ONNX Runtime sessions of the exported graphs: the I/O
    contract (names, dtypes, dynamic dims, profiles — two for the text graph) comes from the ONNX
    manifest, as a TensorRT build of those files would have it."""
    import onnxruntime as ort

    from alpamayo_ros.runtime.tensorrt.manifest import (
        default_dim_ranges,
        load_onnx_manifest,
        phase_dim_ranges,
    )

    manifest = load_onnx_manifest(onnx_dir)
    ranges = default_dim_ranges(manifest)
    dtypes = {"float32": "FLOAT", "int64": "INT64", "bool": "BOOL"}
    engines = {}
    for graph, decl in manifest.graphs.items():
        phases = list(phase_dim_ranges(ranges).values()) if graph == "text" else [ranges]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # 2 shared cores: no spinning pools
        session = ort.InferenceSession(str(onnx_dir / decl.file), opts, providers=["CPUExecutionProvider"])
        specs: dict[str, Spec] = {}
        for t in decl.inputs:
            shape = tuple(-1 if isinstance(d, str) else d for d in t.shape)
            profiles = None
            if -1 in shape:
                profiles = [
                    tuple(tuple(getattr(r[d], which) if isinstance(d, str) else d for d in t.shape)
                          for which in ("min", "opt", "max"))
                    for r in phases
                ]
            specs[t.name] = Spec(dtypes[t.dtype], shape, profiles[0] if profiles else None, profiles=profiles)
        for t in decl.outputs:
            specs[t.name] = _out(dtypes[t.dtype], tuple(-1 if isinstance(d, str) else d for d in t.shape))

        def out_shapes(shapes: dict[str, tuple[int, ...]], decl: Any = decl) -> dict[str, tuple[int, ...]]:
            symbols = {
                d: shapes[t.name][i] for t in decl.inputs for i, d in enumerate(t.shape) if isinstance(d, str)
            }
            return {
                t.name: tuple(symbols[d] if isinstance(d, str) else d for d in t.shape) for t in decl.outputs
            }

        def compute(inputs: dict[str, np.ndarray], session: Any = session) -> dict[str, np.ndarray]:
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, inputs), strict=True))

        engines[graph] = FakeEngine(graph, specs, out_shapes, compute, cuda, memory=(1024,) * len(phases))
    return engines


@pytest.mark.slow
@pytest.mark.parametrize("arrangement", TEXT_ENGINES)
def test_orchestrator_over_tensorrt_executor_matches_onnxruntime(tiny_onnx_dir: Path, tmp_path: Path,
                                                                 arrangement: str) -> None:
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.graph_backend import GraphBackend
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs
    from alpamayo_ros.runtime.tensorrt.builder import build_engines_main  # noqa: F401 - CLI entry exists
    from alpamayo_ros.runtime.weights import weights_fingerprint

    model_dir = tiny_onnx_dir.parent
    config = load_config(model_dir)
    onnx_manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    EngineManifest(
        "tensorrt", VERSION, config.config_hash, "fp32", False, config.prefix_capacity, config.suffix_capacity,
        onnx_manifest["max_batch"], engine_entries(tmp_path, arrangement), {},
        weights_hash=onnx_manifest.get("weights_hash", ""), normalization=onnx_manifest["normalization"],
        text_engines=arrangement,
    ).write(tmp_path)  # fmt: skip
    cuda = FakeCuda()
    executor = TensorRTExecutor(
        config, tmp_path, cuda=cuda, engine_source=FakeSource(ort_engines(tiny_onnx_dir, cuda)),
        weights_hash=weights_fingerprint(model_dir),
    )  # fmt: skip
    recorded = executor.recorded_normalization  # what a model directory without weights falls back to
    assert recorded is not None and recorded.to_record() == onnx_manifest["normalization"]
    assert recorded.recorded_in == str(tmp_path / "manifest.json")
    trt_backend = GraphBackend("tensorrt", model_dir, executor)
    ort_backend = create_backend("onnxruntime", model_dir)
    synthetic = SyntheticInputs(model_dir)
    request = SamplingRequest(num_candidates=3, seed=11, max_generation_length=12)
    try:
        for index in (3, 4):  # second tick: vision cache hits, prefix parity flipped, graphs replayed
            tick = synthetic.tick(index)
            want = ort_backend.infer(tick.inputs, request)
            got = trt_backend.infer(tick.inputs, request)
            assert got.generated_ids == want.generated_ids
            assert got.reasoning == want.reasoning
            np.testing.assert_allclose(got.actions, want.actions, atol=1e-4)
            assert got.counters["prefix_kv_copies"] == 0
        # decode steps sampled on the device (same tokens as ORT's host sampler) and replayed as CUDA graphs
        assert got.counters["device_sampled_rows"] > 0 and got.counters.get("host_sampled_rows", 0) == 0
        assert executor.stats.graph_launches.get("decode_sampled", 0) > 0
        assert executor.stats.graph_captures["expert_step"] >= 1
    finally:
        trt_backend.close()
        ort_backend.close()
    assert not cuda.regions and not cuda.streams


@pytest.mark.slow
def test_navigation_guidance_over_tensorrt_executor_matches_onnxruntime(tiny_1_5_onnx_dir: Path, tmp_path: Path
                                                                        ) -> None:
    """Alpamayo 1.5 with a route and guidance: extend's K/V moved into the unguided rows and the 2K
    expert rows gathered on the device give ONNX Runtime's tokens and trajectories."""
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.graph_backend import GraphBackend
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    model_dir = tiny_1_5_onnx_dir.parent
    cuda = FakeCuda()
    executor = _trt_over_ort(model_dir, tiny_1_5_onnx_dir, tmp_path, cuda=cuda)
    assert executor.supports_guidance and executor.manifest.navigation_guidance
    trt_backend = GraphBackend("tensorrt", model_dir, executor)
    ort_backend = create_backend("onnxruntime", model_dir)
    synthetic = SyntheticInputs(model_dir)
    request = SamplingRequest(num_candidates=2, seed=4, max_generation_length=12, nav_guidance_weight=1.5)
    try:
        for index in (3, 4):  # second tick: graphs replayed, the gathered suffix buffer reused
            tick = synthetic.tick(index, route="Turn right in 25m", unguided=True)
            want = ort_backend.infer(tick.inputs, request)
            got = trt_backend.infer(tick.inputs, request)
            assert got.generated_ids == want.generated_ids
            np.testing.assert_allclose(got.actions, want.actions, atol=1e-4)
            assert got.nav_guidance_weight == want.nav_guidance_weight == 1.5 and got.counters["extend_calls"] == 1
        assert executor.stats.enqueues["extend"] == 2 and executor.stats.graph_captures["expert_step"] >= 1
    finally:
        trt_backend.close()
        ort_backend.close()
    assert not cuda.regions and not cuda.streams


def _trt_over_ort(
    model_dir: Path, onnx_dir: Path, engine_dir: Path, perturb_decode: float = 0.0, cuda: FakeCuda | None = None
) -> TensorRTExecutor:
    from alpamayo_ros.runtime.config import load_config

    config = load_config(model_dir)
    onnx_manifest = json.loads((onnx_dir / "manifest.json").read_text())
    EngineManifest(
        "tensorrt", VERSION, config.config_hash, "fp32", False, config.prefix_capacity, config.suffix_capacity,
        onnx_manifest["max_batch"],
        engine_entries(engine_dir, "merged", onnx=False, guidance=onnx_manifest["navigation_guidance"]), {},
        text_engines="merged", model_type=onnx_manifest["model_type"],
        navigation_guidance=onnx_manifest["navigation_guidance"],
    ).write(engine_dir)  # fmt: skip
    cuda = cuda or FakeCuda()
    engines = ort_engines(onnx_dir, cuda)
    if perturb_decode:  # an engine whose decode logits are off (e.g. a bad fp16 build): the text engine's decode phase
        inner = engines["text"].compute

        def perturbed(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = inner(inputs)
            if inputs["prefix_key_0"].shape[1]:  # decode (the prefill has no prefix yet)
                out["logits"] = out["logits"] + perturb_decode * np.sin(np.arange(out["logits"].shape[-1]))
            return out

        engines["text"].compute = perturbed
    return TensorRTExecutor(config, engine_dir, cuda=cuda, engine_source=FakeSource(engines))


@pytest.mark.slow
def test_verify_engines_reports_per_stage_differences(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime.onnx_backend import build_onnx_executor
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs
    from alpamayo_ros.runtime.tensorrt.verify import Tolerances, failures, format_table, verify_ticks

    model_dir = tiny_onnx_dir.parent
    request = SamplingRequest(num_candidates=2, temperature=0.0, max_generation_length=8)
    tick = SyntheticInputs(model_dir).tick(3)
    for perturb, engine_dir in ((0.0, tmp_path / "same"), (30.0, tmp_path / "off")):
        engine_dir.mkdir()
        reference = build_onnx_executor(model_dir)
        engines = _trt_over_ort(model_dir, tiny_onnx_dir, engine_dir, perturb)
        try:
            (report,) = verify_ticks(model_dir, reference, engines, [tick], request)
        finally:
            reference.close()
            engines.close()
        assert report.vision_max_abs == report.prefill_logits_max_abs == 0.0  # same graphs, same kernels
        assert report.prefill_argmax_equal
        print(format_table([report]))
        if not perturb:
            assert report.tokens_equal and report.first_token_mismatch == [-1, -1]
            assert report.decode_logits_max_abs == 0.0 and report.decode_top1_agreement == 1.0
            assert report.actions_max_abs < 1e-5 and report.trajectory_max_abs_m < 1e-4
            assert report.decode_steps_compared >= 1
            assert failures([report], Tolerances()) == []
        else:
            assert not report.tokens_equal and report.decode_top1_agreement < 1.0
            assert report.decode_steps_compared == min(m for m in report.first_token_mismatch if m >= 0)
            assert report.decode_logits_max_abs > 1.0
            assert any("tokens differ" in line for line in failures([report], Tolerances()))


def test_verify_engines_cli_explains_a_missing_engine_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alpamayo_ros.runtime.tensorrt.verify import verify_engines_main

    model = tmp_path / "model"
    model.mkdir()
    assert verify_engines_main([str(model), str(tmp_path / "engines")]) == 2
    assert "verify-engines:" in capsys.readouterr().err
