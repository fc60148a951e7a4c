"""ONNX Runtime executor over the exported graph family (`<model_dir>/onnx/`).

KV buffers are a `HostKVCache` owned here: the prefill writes the prompt's K/V straight into the
prefix buffer (IOBinding of its outputs to that memory), decode and expert_step read every layer's
slice in place (numpy views, no copy), and a decode step's new K/V (one token per row) is written
into its suffix slot by the executor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.runtime.config import RuntimeConfig, load_config
from alpamayo_ros.runtime.executor import GraphExecutor, HostKVCache, ImageFeatures

GRAPHS = ("vision", "prefill", "decode", "expert_step")  # `sample` is for device backends: ORT samples on the host
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
HEAP_RETAIN_BYTES = 64 << 20  # above the largest per-call temporary of the graphs (bounded score blocks)


def retain_freed_memory(limit: int = HEAP_RETAIN_BYTES) -> bool:
    """glibc only: serve allocations up to `limit` bytes from the heap and keep freed heap memory.

    A tick allocates and frees tens of MB of temporaries per graph call (attention score blocks); glibc
    maps each block above its mmap threshold fresh and unmaps it on free, so every page faults on first
    touch, every call (half of the tiny model's prefill and expert time). Served from the heap and kept
    there (up to 2 × `limit` of free heap) they reuse warm pages. Unlike ONNX Runtime's CPU arena, which
    doubles its chunks and holds them (+40 % peak RSS on the mid model), this keeps peak RSS near the
    live peak (docs/benchmarks.md). Process-wide; False where there is no glibc `mallopt`.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * limit))


class OnnxRuntimeExecutor(GraphExecutor):
    name = "onnxruntime"

    def __init__(self, config: RuntimeConfig, onnx_dir: str | Path, num_threads: int | None = None,
                 providers: list[str] | None = None, weights_hash: str | None = None,
                 cpu_mem_arena: bool = False, retain_heap: bool = True, spin_threads: bool = False) -> None:
        import onnxruntime as ort

        from alpamayo_ros.runtime.export import manifest_normalization, read_manifest

        super().__init__(config)
        root = Path(onnx_dir)
        manifest = read_manifest(root, expected_hash=config.config_hash, weights_hash=weights_hash)
        self.recorded_normalization = manifest_normalization(manifest, root / "manifest.json")
        if manifest.get("dtype", "float32") != "float32":
            raise ValueError(
                f"{root} holds {manifest['dtype']} graphs (for TensorRT); ONNX Runtime on the CPU lacks bf16/fp16 "
                f"kernels for them: export with `alpamayo-ros export-onnx <model_dir> --dtype float32`"
            )
        if manifest["prefix_capacity"] != config.prefix_capacity or manifest["suffix_capacity"] != config.suffix_capacity:
            raise ValueError(
                f"{root}/manifest.json capacities (prefix {manifest['prefix_capacity']}, suffix "
                f"{manifest['suffix_capacity']}) differ from the requested ones (prefix {config.prefix_capacity}, "
                f"suffix {config.suffix_capacity}); re-export or drop the capacity overrides"
            )
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        # Worker threads block between kernels instead of spinning: a spinning worker holds a core the image
        # workers and the node's threads need (measured with bench_runtime_floor.py --memory heap,heap-spin).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_threads else "0")
        # Arena off, heap retention on by default: measured with benchmarks/bench_runtime_floor.py, docs/benchmarks.md.
        opts.enable_cpu_mem_arena = cpu_mem_arena
        self.heap_retained = retain_heap and retain_freed_memory()
        self.sessions = {}
        # extend: navigation guidance (exported for models that take a route, Alpamayo 1.5; optional)
        wanted = (*GRAPHS, "extend") if config.guidance and "extend" in manifest["graphs"] else GRAPHS
        for name in wanted:
            if name not in manifest["graphs"]:
                raise FileNotFoundError(
                    f"{root}/manifest.json has no '{name}' graph; re-export with `alpamayo-ros export-onnx <model_dir>`"
                )
            path = root / manifest["graphs"][name]["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path} missing; re-export with `alpamayo-ros export-onnx <model_dir>`")
            self.sessions[name] = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.kv = HostKVCache(config)
        self.supports_guidance = "extend" in self.sessions

    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        emb, ds = self.sessions["vision"].run(None, {"pixel_rows": np.ascontiguousarray(pixel_rows, dtype=np.float32)})
        return [ImageFeatures(emb[i], ds[:, i]) for i in range(emb.shape[0])]

    def prefill(self, input_ids, position_ids, features, image_token_index) -> np.ndarray:
        embeds, deepstack = self.stack_features(features)
        session, p = self.sessions["prefill"], int(input_ids.shape[0])
        binding = session.io_binding()
        inputs = {"input_ids": self.padded_ids(input_ids), "position_ids": position_ids[:, None],
                  "image_embeds": embeds, "deepstack_embeds": deepstack, "image_token_index": image_token_index}
        for name, value in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits")
        for kind in ("key", "value"):  # the prompt's K/V land in the prefix buffer itself
            for i, layer in enumerate(self.kv.prefix_view(kind, p)):
                binding.bind_output(f"new_{kind}_{i}", "cpu", 0, np.float32, list(layer.shape), layer.ctypes.data)
        session.run_with_iobinding(binding)
        self.kv.set_prefix(p)
        return binding.get_outputs()[0].numpy()[0]  # the logits only (copy_outputs_to_cpu would copy the K/V too)

    def start_decode(self, batch: int) -> None:
        self.kv.batch = batch

    def decode(self, token_ids, position_ids, write_index, suffix_mask) -> np.ndarray:
        logits, new_key, new_value = self.sessions["decode"].run(None, {
            "input_ids": np.asarray(token_ids, dtype=np.int64).reshape(-1, 1), "position_ids": position_ids,
            "suffix_mask": suffix_mask, **self.kv.feeds(),
        })
        self.kv.write_suffix(write_index, new_key, new_value)
        return logits

    def extend(self, input_ids, position_ids, prefix_mask, own_mask) -> None:
        if "extend" not in self.sessions:
            super().extend(input_ids, position_ids, prefix_mask, own_mask)
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64), "position_ids": position_ids,
                 "prefix_mask": prefix_mask, "own_mask": own_mask}
        prefix = {name: value for name, value in self.kv.feeds().items() if name.startswith("prefix_")}
        keys, values = self.sessions["extend"].run(None, {**feeds, **prefix})
        self.kv.write_unguided(keys, values)

    def run_expert(self, x0, steps, position_ids, suffix_mask, prefix_mask=None, row_mix=None) -> np.ndarray:
        r = x0.shape[0]
        k, prefix_mask, row_mix = self.expert_extras(r, self.kv.prefix_len, prefix_mask, row_mix)
        if self.kv.batch != k:  # shared reasoning: one suffix row for K candidates (the prefix is never copied)
            self.count("suffix_kv_copies", k - self.kv.batch)
        x = np.ascontiguousarray(x0, dtype=np.float32)
        sess = self.sessions["expert_step"]
        feeds = {"position_ids": position_ids, "suffix_mask": suffix_mask, "prefix_mask": prefix_mask,
                 "row_mix": row_mix, **self.kv.feeds(k, r)}
        for t, dt in steps:
            (x,) = sess.run(None, {**feeds, "x": x, "t": np.array([t], dtype=np.float32),
                                   "dt": np.array([dt], dtype=np.float32)})
        return x

    def close(self) -> None:
        self.sessions.clear()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alpamayo_ros" / "onnx"


def resolve_onnx_dir(model_dir: str | Path, onnx_dir: str | Path | None = None, auto_export: bool = False) -> Path:
    """`onnx_dir`, else MODEL_DIR/onnx, else (auto_export) a cache dir keyed by config + weights, exported once."""
    from alpamayo_ros.runtime.export import export_onnx, read_manifest
    from alpamayo_ros.runtime.weights import weights_fingerprint

    if onnx_dir is not None:
        return Path(onnx_dir)
    local = Path(model_dir) / "onnx"
    if (local / "manifest.json").is_file() or not auto_export:
        return local
    cfg = load_config(model_dir)
    fp = weights_fingerprint(model_dir)
    cached = cache_root() / f"{cfg.config_hash}-{fp}"
    try:
        read_manifest(cached, expected_hash=cfg.config_hash, weights_hash=fp)
    except (FileNotFoundError, ValueError):
        export_onnx(model_dir, cached)
    return cached


def build_onnx_executor(model_dir: str | Path, **options: Any) -> OnnxRuntimeExecutor:
    overrides = {k: options[k] for k in ("prefix_capacity", "suffix_capacity", "max_candidates") if k in options}
    cfg = load_config(model_dir, **overrides)
    onnx_dir = resolve_onnx_dir(model_dir, options.get("onnx_dir"), bool(options.get("auto_export", False)))
    from alpamayo_ros.runtime.weights import optional_weights_fingerprint

    # A model directory may carry only its ONNX export; with weights present they must be the exported ones.
    return OnnxRuntimeExecutor(cfg, onnx_dir, num_threads=options.get("num_threads"),
                               weights_hash=optional_weights_fingerprint(model_dir),
                               cpu_mem_arena=bool(options.get("cpu_mem_arena", False)),
                               retain_heap=bool(options.get("retain_heap", True)),
                               spin_threads=bool(options.get("spin_threads", False)))
