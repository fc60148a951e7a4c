"""ONNX graph family -> TensorRT engines + engine manifest (`alpamayo-ros build-engines`).

Generic over the graphs of docs/runtime.md §3: every graph listed in the ONNX manifest is parsed
with the TensorRT ONNX parser and built with one optimization profile whose min/opt/max come from
the manifest's named dynamic dims (B, N, S, M) and capacities; the `text` graph (prefill and decode
in one) gets two, one per phase, so the merged arrangement (default, `--text-engines merged`) holds
the text weights once (manifest.py). Precision:

* strongly typed networks (TensorRT-RTX, TensorRT 11, or any ONNX already exported in the target
  dtype): the ONNX decides every tensor's type, FP8/INT8 Q/DQ nodes included;
* weakly typed (TensorRT 10.x, fp32 ONNX with --precision fp16/bf16): the FP16/BF16 builder flag
  lets TensorRT pick reduced-precision kernels, and the KV-cache I/O tensors are declared in the
  target dtype so the cache costs half the memory and bandwidth (the executor reads the I/O
  dtypes from the engine, so both layouts run).

TensorRT is imported only inside the functions that build (see trt_module.load_tensorrt).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpamayo_ros.runtime.executor import is_kv_tensor
from alpamayo_ros.runtime.tensorrt.manifest import (
    GRAPH_NAMES,
    TEXT_ENGINES,
    DimRange,
    EngineEntry,
    EngineManifest,
    EngineTensor,
    GraphDecl,
    ManifestError,
    OnnxManifest,
    default_dim_ranges,
    engine_graphs,
    file_sha256,
    load_onnx_manifest,
    phase_dim_ranges,
)
from alpamayo_ros.runtime.tensorrt.trt_module import (
    DEFAULT_MODULE,
    RTX_MODULE,
    dims_tuple,
    dtype_name,
    load_tensorrt,
)

if TYPE_CHECKING:
    import tensorrt

LOG = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16")
_ONNX_FLOAT = {1: "fp32", 10: "fp16", 16: "bf16"}  # onnx.TensorProto elem types
_FP8_TYPES = {17, 18, 19, 20}  # FLOAT8E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ


class EngineBuildError(RuntimeError):
    pass


@dataclass
class BuildOptions:
    precision: str = "fp16"
    graphs: tuple[str, ...] | None = None  # None: the engines of `text_engines` (+ `extend` where exported)
    text_engines: str = "merged"
    dims: dict[str, DimRange] = field(default_factory=dict)  # overrides of default_dim_ranges
    workspace_mib: int | None = None
    timing_cache: Path | None = None  # None: <out_dir>/timing.cache
    optimization_level: int | None = None  # builder_optimization_level 0..5 (TensorRT default 3)
    version_compatible: bool = False
    tensorrt_module: str = DEFAULT_MODULE
    kv_io_in_precision: bool = True  # weakly typed builds: KV I/O tensors in fp16/bf16

    def engine_graphs(self, onnx_graphs: Sequence[str] = ()) -> tuple[str, ...]:
        """The graphs to build: `graphs`, or the arrangement's engines plus `extend` where the ONNX export has
        it (a model with navigation guidance)."""
        if self.text_engines not in TEXT_ENGINES:
            raise EngineBuildError(f"text_engines must be one of {TEXT_ENGINES}, got {self.text_engines!r}")
        return self.graphs or engine_graphs(self.text_engines, "extend" in onnx_graphs)


@dataclass(frozen=True)
class OnnxInfo:
    float_dtype: str | None  # fp32 | fp16 | bf16 (of the graph's float inputs), None if none
    quantization: str  # none | fp8-qdq | int8-qdq


def inspect_onnx(path: Path) -> OnnxInfo:
    """Float dtype and Q/DQ content of an ONNX file, reading the graph only (not external weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    float_types = {
        _ONNX_FLOAT[i.type.tensor_type.elem_type]
        for i in graph.input
        if i.type.tensor_type.elem_type in _ONNX_FLOAT
    }
    # a bf16/fp16 export keeps its masks and pixels fp32 by contract (runtime/export.py graph_io): the
    # graph's dtype is the reduced one
    reduced = float_types - {"fp32"}
    if len(reduced) > 1:
        raise EngineBuildError(
            f"{path}: mixed float input dtypes {sorted(float_types)}; export one dtype per graph"
        )
    float_types = reduced or float_types
    quant = "none"
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        zero_point_types = {init.data_type for init in graph.initializer}
        cast_types = {
            a.i
            for n in graph.node
            if n.op_type == "QuantizeLinear"
            for a in n.attribute
            if a.name == "output_dtype"
        }
        quant = "fp8-qdq" if (zero_point_types | cast_types) & _FP8_TYPES else "int8-qdq"
    return OnnxInfo(float_dtype=next(iter(float_types), None), quantization=quant)


def _export_dtype(onnx_dir: Path) -> str:
    """The dtype the ONNX directory was exported in (the manifest's `dtype`)."""
    path = onnx_dir / "manifest.json"
    return str(json.loads(path.read_text()).get("dtype", "float32")) if path.is_file() else "float32"


def choose_typing(precision: str, onnx_dtype: str | None, weak_typing_available: bool) -> bool:
    """True = strongly typed network. Raises when the requested precision cannot be honoured."""
    if precision not in PRECISIONS:
        raise EngineBuildError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if onnx_dtype is None or onnx_dtype == precision:
        return True
    if onnx_dtype == "fp32" and weak_typing_available:
        return False
    if onnx_dtype != "fp32":
        raise EngineBuildError(
            f"the ONNX graph is {onnx_dtype}; it cannot be built as {precision}. Use --precision {onnx_dtype} "
            f"or re-export the graphs in {precision}"
        )
    raise EngineBuildError(
        f"this TensorRT builds strongly typed networks only (TensorRT-RTX, TensorRT 11): the ONNX decides "
        f"the precision, and these graphs are fp32. Use --precision fp32, or export the graphs in {precision}"
    )


def profile_shapes(
    decl: GraphDecl, name: str, trt_shape: Sequence[int], ranges: dict[str, DimRange]
) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) for one network input, None when the input is fully static."""
    spec = next((t for t in decl.inputs if t.name == name), None)
    if spec is None:
        raise EngineBuildError(f"graph {decl.name}: network input {name!r} is not in the ONNX manifest")
    if len(spec.shape) != len(trt_shape):
        raise EngineBuildError(
            f"graph {decl.name}: input {name} has rank {len(trt_shape)}, manifest says {spec.shape}"
        )
    if all(d >= 0 for d in trt_shape):
        return None
    lo, opt, hi = [], [], []
    for axis, (dim, declared) in enumerate(zip(trt_shape, spec.shape, strict=True)):
        if dim >= 0:
            lo.append(dim)
            opt.append(dim)
            hi.append(dim)
            continue
        if not isinstance(declared, str):
            raise EngineBuildError(
                f"graph {decl.name}: {name} axis {axis} is dynamic in ONNX but static ({declared}) in the manifest"
            )
        if declared not in ranges:
            raise EngineBuildError(
                f"graph {decl.name}: no profile range for dim {declared!r} of {name}; pass --dim {declared}=MIN:OPT:MAX"
            )
        r = ranges[declared]  # min 0: an empty tensor (the merged text engine's P in prefill, M in decode)
        lo.append(r.min)
        opt.append(r.opt)
        hi.append(r.max)
    return tuple(lo), tuple(opt), tuple(hi)


EXPORT_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_onnx_dir(source: Path, out_dir: Path, precision: str = "bf16") -> Path:
    """MODEL_OR_ONNX_DIR -> a directory with the ONNX manifest (exporting from a model dir if needed, in
    the build precision: the graphs then carry their weights in it and need no weakly typed conversion)."""
    if (source / "manifest.json").is_file():
        return source
    if (source / "onnx" / "manifest.json").is_file():
        return source / "onnx"
    if (source / "config.json").is_file():
        try:
            from alpamayo_ros.runtime.export import export_onnx
        except ImportError as exc:
            raise ManifestError(
                f"{source} is a model directory without onnx/, and exporting needs PyTorch ({exc}). "
                f"Export on an x86 host (`alpamayo-ros export-onnx {source}`) and copy onnx/ here"
            ) from exc
        onnx_dir = out_dir / "onnx"
        export_onnx(source, onnx_dir, dtype=EXPORT_DTYPE[precision])
        return onnx_dir
    raise ManifestError(
        f"{source} holds neither an ONNX manifest, nor onnx/manifest.json, nor a model config.json"
    )


def _device_info() -> dict[str, Any] | None:
    from alpamayo_ros.runtime.tensorrt.cuda_memory import device_info

    return device_info()


def _read_cache(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def build_graph(
    decl: GraphDecl,
    onnx_dir: Path,
    out_dir: Path,
    ranges: dict[str, DimRange],
    options: BuildOptions,
    timing_cache: bytes,
) -> tuple[EngineEntry, bytes]:
    """Parse + build one graph; returns its manifest entry and the updated timing cache."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = load_tensorrt(options.tensorrt_module)

    onnx_path = onnx_dir / decl.file
    info = inspect_onnx(onnx_path)
    weak_available = hasattr(trt.BuilderFlag, "FP16")
    if info.float_dtype == "fp32" and _export_dtype(onnx_dir) in ("bfloat16", "float16") and info.quantization == "none":
        # fp32 inputs by design in a reduced-precision export (`sample`: logits in, ids out; `vision`: pixels in,
        # its weights in the export dtype): the ONNX decides
        strongly_typed = True
    else:
        strongly_typed = choose_typing(options.precision, info.float_dtype, weak_available)

    logger = _CapturingLogger.create(trt)
    parsed = parse_onnx(trt, onnx_path, logger, strongly_typed)  # alive until the engine is built
    builder, network = parsed.builder, parsed.network
    _check_io_names(network, decl)
    config = builder.create_builder_config()
    _configure_precision(config, network, options, info, strongly_typed)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = None
    if options.tensorrt_module != RTX_MODULE:  # timing-cache calls are deprecated no-ops in TensorRT-RTX
        cache = config.create_timing_cache(timing_cache)
        config.set_timing_cache(cache, False)

    phases = phase_dim_ranges(ranges) if decl.name == "text" else {"default": ranges}
    per_phase: dict[str, dict[str, tuple[tuple[int, ...], ...] | None]] = {}
    for phase, phase_ranges in phases.items():
        profile = builder.create_optimization_profile()
        per_phase[phase] = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shapes = profile_shapes(decl, tensor.name, dims_tuple(tensor.shape), phase_ranges)
            per_phase[phase][tensor.name] = shapes
            if shapes is not None:
                profile.set_shape(tensor.name, *(trt.Dims(list(shape)) for shape in shapes))
        config.add_optimization_profile(profile)
    tensors = _engine_tensors(network, decl, per_phase)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {decl.name} from {onnx_path}: " + logger.summary())
    engine_file = f"{decl.name}.engine"
    _write_atomic(out_dir / engine_file, memoryview(serialized))
    entry = EngineEntry(
        graph=decl.name,
        file=engine_file,
        bytes=(out_dir / engine_file).stat().st_size,
        sha256=file_sha256(out_dir / engine_file),
        onnx_file=decl.file,
        onnx_sha256=file_sha256(onnx_path),
        strongly_typed=strongly_typed,
        precision=options.precision if not strongly_typed else (info.float_dtype or options.precision),
        quantization=info.quantization,
        build_seconds=round(seconds, 3),
        tensors=tensors,
        profiles=list(phases),
    )
    return entry, timing_cache if cache is None else bytes(memoryview(cache.serialize()))


def _engine_tensors(
    network: tensorrt.INetworkDefinition,
    decl: GraphDecl,
    per_phase: dict[str, dict[str, tuple[tuple[int, ...], ...] | None]],
) -> list[EngineTensor]:
    """Manifest records of the network's I/O: dtype, declared shape, the profile range(s) of each input."""

    def as_dict(shapes: tuple[tuple[int, ...], ...]) -> dict[str, list[int]]:
        return {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])}

    first = next(iter(per_phase))
    tensors: list[EngineTensor] = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        declared = next(t for t in decl.inputs if t.name == tensor.name)
        shapes = per_phase[first][tensor.name]
        ranges = {p: s[tensor.name] for p, s in per_phase.items()}
        phases = {p: as_dict(r) for p, r in ranges.items() if r is not None}
        tensors.append(EngineTensor(
            name=tensor.name, dtype=dtype_name(tensor.dtype), shape=list(declared.shape), is_input=True,
            profile=None if shapes is None else as_dict(shapes),
            phase_profiles=phases if len(per_phase) > 1 and phases else None,
        ))
    for i in range(network.num_outputs):
        tensor = network.get_output(i)
        declared = next(t for t in decl.outputs if t.name == tensor.name)
        tensors.append(EngineTensor(tensor.name, dtype_name(tensor.dtype), list(declared.shape), is_input=False))
    return tensors


@dataclass
class ParsedOnnx:
    """A TensorRT network parsed from one ONNX file, with its builder. The parser owns the network's
    weights, so it is kept here: hold this object until the engine is built."""

    builder: Any
    network: Any
    parser: Any


def parse_onnx(trt: Any, onnx_path: Path, logger: Any, strongly_typed: bool = True) -> ParsedOnnx:
    """One ONNX file through TensorRT's ONNX parser (strongly typed: the ONNX's own dtypes decide), or
    EngineBuildError naming every node the parser rejected. `trt`: tensorrt or tensorrt_rtx."""
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT ONNX parser rejected {onnx_path}: " + " | ".join(errors))
    return ParsedOnnx(builder, network, parser)


def _parser_error(error: tensorrt.ParserError) -> str:
    return f"node {error.node()} ({error.node_operator() or '?'} {error.node_name() or ''}): {error.desc()}"


def _check_io_names(network: tensorrt.INetworkDefinition, decl: GraphDecl) -> None:
    got_in = {network.get_input(i).name for i in range(network.num_inputs)}
    got_out = {network.get_output(i).name for i in range(network.num_outputs)}
    want_in, want_out = {t.name for t in decl.inputs}, {t.name for t in decl.outputs}
    if got_in != want_in or got_out != want_out:
        raise EngineBuildError(
            f"graph {decl.name}: ONNX I/O {sorted(got_in)} -> {sorted(got_out)} does not match the manifest "
            f"{sorted(want_in)} -> {sorted(want_out)}; the ONNX directory is inconsistent, re-export it"
        )


def _configure_precision(
    config: tensorrt.IBuilderConfig,
    network: tensorrt.INetworkDefinition,
    options: BuildOptions,
    info: OnnxInfo,
    strongly_typed: bool,
) -> None:
    """Weakly typed builds only: precision flags, Q/DQ flags, KV I/O dtype."""
    if strongly_typed:
        return
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = load_tensorrt(options.tensorrt_module)
    wanted = {"fp16": "FP16", "bf16": "BF16"}.get(options.precision)
    if wanted is not None:
        config.set_flag(getattr(trt.BuilderFlag, wanted))
    quant_flag = {"fp8-qdq": "FP8", "int8-qdq": "INT8"}.get(info.quantization)
    if quant_flag is not None and hasattr(trt.BuilderFlag, quant_flag):
        config.set_flag(getattr(trt.BuilderFlag, quant_flag))
    if wanted is None or not options.kv_io_in_precision:
        return
    kv_dtype = trt.DataType.HALF if options.precision == "fp16" else trt.DataType.BF16
    for tensor in [network.get_input(i) for i in range(network.num_inputs)] + [
        network.get_output(i) for i in range(network.num_outputs)
    ]:
        if is_kv_tensor(tensor.name):
            tensor.dtype = kv_dtype


class _CapturingLogger:
    """A trt.ILogger subclass made at runtime (the base class lives in the lazily imported module)."""

    @staticmethod
    def create(trt: Any) -> Any:
        class Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(msg)
                    LOG.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.Severity.WARNING:
                    LOG.warning("TensorRT: %s", msg)
                else:
                    LOG.debug("TensorRT: %s", msg)

            def summary(self) -> str:
                return " | ".join(self.errors[-5:]) or "no error message (run with -v)"

        return Logger()


def build_engines(
    source: str | Path,
    out_dir: str | Path,
    options: BuildOptions | None = None,
    model_dir: str | Path | None = None,
) -> EngineManifest:
    """Build every requested graph of an ONNX directory into `out_dir` and write the engine manifest."""
    options = options or BuildOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_dir = resolve_onnx_dir(Path(source), out, options.precision)
    manifest = load_onnx_manifest(onnx_dir)
    _check_model_config(manifest, model_dir or _model_dir_of(Path(source), onnx_dir))
    graphs = options.engine_graphs(tuple(manifest.graphs))
    missing = [g for g in graphs if g not in manifest.graphs]
    if missing:
        raise ManifestError(
            f"{onnx_dir}/manifest.json has no graph {missing}; it has {sorted(manifest.graphs)}; re-export "
            f"with `alpamayo-ros export-onnx MODEL_DIR`"
        )
    trt = load_tensorrt(options.tensorrt_module)
    ranges = {**default_dim_ranges(manifest), **options.dims}
    cache_path = options.timing_cache or out / "timing.cache"
    cache = _read_cache(cache_path)
    entries: dict[str, EngineEntry] = {}
    for graph in graphs:
        LOG.info("building %s (%s) ...", graph, options.precision)
        entries[graph], cache = build_graph(manifest.graphs[graph], onnx_dir, out, ranges, options, cache)
        if cache:
            _write_atomic(cache_path, cache)  # survive a later graph's failure
        LOG.info("built %s in %.1f s (%d bytes)", graph, entries[graph].build_seconds, entries[graph].bytes)
    result = EngineManifest(
        tensorrt_module=options.tensorrt_module,
        tensorrt_version=str(trt.__version__),
        config_hash=manifest.config_hash,
        precision=options.precision,
        version_compatible=options.version_compatible,
        prefix_capacity=manifest.prefix_capacity,
        suffix_capacity=manifest.suffix_capacity,
        max_batch=manifest.max_batch,
        engines=entries,
        dims={k: [v.min, v.opt, v.max] for k, v in sorted(ranges.items())},
        device=_device_info() if options.tensorrt_module == DEFAULT_MODULE else None,
        weights_hash=str(manifest.raw.get("weights_hash", "")),
        normalization=manifest.raw.get("normalization"),
        model_type=manifest.model_type,
        navigation_guidance=manifest.navigation_guidance,
        text_engines=options.text_engines,
    )
    result.write(out)
    return result


def _model_dir_of(source: Path, onnx_dir: Path) -> Path | None:
    for candidate in (source, onnx_dir.parent):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _check_model_config(manifest: OnnxManifest, model_dir: str | Path | None) -> None:
    if model_dir is None:
        return
    from alpamayo_ros.runtime.config import load_config

    expected = load_config(model_dir).config_hash
    if manifest.config_hash and manifest.config_hash != expected:
        raise ManifestError(
            f"{manifest.directory} was exported from config {manifest.config_hash!r}, but {model_dir}/config.json "
            f"is {expected!r}; re-export the ONNX from this model directory"
        )


def _parse_dims(items: Sequence[str]) -> dict[str, DimRange]:
    dims: dict[str, DimRange] = {}
    for item in items:
        name, _, text = item.partition("=")
        if not name or not text:
            raise argparse.ArgumentTypeError(f"--dim expects NAME=MIN:OPT:MAX, got {item!r}")
        dims[name] = DimRange.parse(text)
    return dims


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpamayo-ros build-engines",
        description="Build TensorRT engines for the Alpamayo graph family (run this on the target, e.g. Jetson Thor).",
    )
    parser.add_argument(
        "source", type=Path, help="model directory (with onnx/ or config.json) or ONNX directory"
    )
    parser.add_argument(
        "out_dir", type=Path, help="engine directory to write (engines + manifest.json + timing.cache)"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument(
        "--text-engines", choices=TEXT_ENGINES, default="merged",
        help="merged: one text engine with a profile per phase (the text weights once, default); separate: "
        "prefill and decode engines (blocked prefill attention, the text weights twice)",
    )
    parser.add_argument(
        "--graphs", default="", help=f"comma-separated subset of {','.join(GRAPH_NAMES)} (default: the "
        "arrangement's engines, and `extend` where the ONNX export has it: models with navigation guidance)"
    )
    parser.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=MIN:OPT:MAX",
        help="profile range override (B, K, N, S, P, M, T, Q)",
    )
    parser.add_argument("--workspace-mib", type=int, default=None)
    parser.add_argument("--timing-cache", type=Path, default=None, help="default: OUT_DIR/timing.cache")
    parser.add_argument(
        "--opt-level", type=int, choices=range(6), default=None, help="builder optimization level"
    )
    parser.add_argument(
        "--version-compatible",
        action="store_true",
        help="engines that later TensorRT of the same major can load",
    )
    parser.add_argument(
        "--fp32-kv-io", action="store_true", help="weakly typed builds: keep the KV cache I/O in fp32"
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="check the ONNX against this model config"
    )
    parser.add_argument(
        "--tensorrt-module",
        default=DEFAULT_MODULE,
        help="tensorrt (default) or tensorrt_rtx_bindings (CPU parse/build check)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def build_engines_main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    options = BuildOptions(
        precision=args.precision,
        graphs=tuple(g for g in args.graphs.split(",") if g) if args.graphs else None,
        text_engines=args.text_engines,
        dims=_parse_dims(args.dim),
        workspace_mib=args.workspace_mib,
        timing_cache=args.timing_cache,
        optimization_level=args.opt_level,
        version_compatible=args.version_compatible,
        tensorrt_module=args.tensorrt_module,
        kv_io_in_precision=not args.fp32_kv_io,
    )
    try:
        manifest = build_engines(args.source, args.out_dir, options, model_dir=args.model_dir)
    except (EngineBuildError, ManifestError, ImportError) as exc:
        print(f"build-engines: {exc}", file=sys.stderr)
        return 1
    for name, entry in manifest.engines.items():
        print(
            f"{name:12s} {entry.file:22s} {entry.bytes / 2**20:10.1f} MiB  {entry.precision:5s} {entry.quantization:8s} {entry.build_seconds:8.1f} s"
        )
    print(f"TensorRT {manifest.tensorrt_version}; manifest: {Path(args.out_dir) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(build_engines_main())
