"""ONNX manifest (written by runtime/export.py) in, engine manifest out, and the load-time check.

The engine manifest binds a directory of engines to the model config (config hash) and to the
exact TensorRT build that produced them: a serialized engine only runs on the TensorRT version
that built it (unless built version-compatible) and on the GPU architecture it was built for, so
a mismatch must be a clear error at configure, not a crash or wrong numbers at the first tick.

Two arrangements of the text decoder (`text_engines`): **merged** (default) is one engine built from
the `text` graph with an optimization profile per phase (prefill, decode), so the 8 B text weights
are on the device once; **separate** is the `prefill` and `decode` engines, each with its own copy of
the weights (blocked causal prefill attention, the fused-attention pattern; twice the weight memory).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alpamayo_ros.core.action_space import Normalization
from alpamayo_ros.runtime.export import GRAPH_NAMES, check_manifest_format

# 3: the text-decoder arrangement (`text_engines`: merged = one `text` engine with a profile per phase),
#    engines built from the ONNX format 4 (weights in the export dtype);
# 2: expert_step with a prefix mask and a row mix (navigation guidance), `extend` for Alpamayo 1.5
ENGINE_MANIFEST_FORMAT = "alpamayo_ros.engines/3"
TEXT_ENGINES = ("merged", "separate")
ENGINE_GRAPHS = {  # every model; `extend` in addition for models with navigation guidance
    "merged": ("vision", "text", "expert_step", "sample"),
    "separate": ("vision", "prefill", "decode", "expert_step", "sample"),
}
CORE_GRAPHS = tuple(g for g in GRAPH_NAMES if g != "extend")  # the graphs every model's ONNX export has
TEXT_PHASES = ("prefill", "decode")  # the merged text engine's optimization profiles, in this order


def engine_graphs(text_engines: str, guidance: bool = False) -> tuple[str, ...]:
    """The engines of an arrangement: `extend` (its own engine) only where navigation guidance exists."""
    return ENGINE_GRAPHS[text_engines] + (("extend",) if guidance else ())
ENGINE_MANIFEST_NAME = "manifest.json"
DEFAULT_MAX_IMAGES = 16  # 4 cameras x 4 frames (DESIGN.md §3): the most a vision call ever gets


class ManifestError(ValueError):
    """An ONNX or engine directory is not what the caller expects; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# ONNX side


@dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: str  # "float32", "int64", ...
    shape: tuple[int | str, ...]  # ints are static dims, strings name dynamic dims ("B", "S", ...)


@dataclass(frozen=True)
class GraphDecl:
    name: str
    file: str
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]


@dataclass(frozen=True)
class OnnxManifest:
    directory: Path
    config_hash: str
    prefix_capacity: int
    suffix_capacity: int
    max_batch: int
    graphs: dict[str, GraphDecl]
    raw: dict[str, Any]

    @property
    def model_type(self) -> str:
        return str(self.raw.get("model_type", "alpamayo_r1"))

    @property
    def navigation_guidance(self) -> bool:
        return bool(self.raw.get("navigation_guidance", False))

    @property
    def max_expert_rows(self) -> int:
        """expert_step rows: the candidates, twice that with navigation guidance."""
        return self.max_batch * (2 if self.navigation_guidance else 1)

    def dim_names(self) -> set[str]:
        return {
            d
            for g in self.graphs.values()
            for t in g.inputs + g.outputs
            for d in t.shape
            if isinstance(d, str)
        }


def _tensor(entry: dict[str, Any]) -> TensorDecl:
    shape = tuple(d if isinstance(d, str) else int(d) for d in entry["shape"])
    return TensorDecl(name=str(entry["name"]), dtype=str(entry["dtype"]), shape=shape)


def load_onnx_manifest(onnx_dir: str | Path) -> OnnxManifest:
    directory = Path(onnx_dir)
    path = directory / "manifest.json"
    if not path.is_file():
        raise ManifestError(
            f"{path} not found: export the graphs first (`alpamayo-ros export-onnx MODEL_DIR`, or "
            f"alpamayo_ros.runtime.export.export_onnx), or pass the model directory that contains onnx/"
        )
    raw = json.loads(path.read_text())
    try:
        check_manifest_format(path, raw.get("format"))
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    graphs: dict[str, GraphDecl] = {}
    for name, g in raw["graphs"].items():
        graphs[name] = GraphDecl(
            name=name,
            file=str(g["file"]),
            inputs=tuple(_tensor(t) for t in g["inputs"]),
            outputs=tuple(_tensor(t) for t in g["outputs"]),
        )
        if not (directory / g["file"]).is_file():
            raise ManifestError(f"{path} lists {g['file']} but {directory / g['file']} does not exist")
    return OnnxManifest(
        directory=directory,
        config_hash=str(raw.get("config_hash", "")),
        prefix_capacity=int(raw["prefix_capacity"]),
        suffix_capacity=int(raw["suffix_capacity"]),
        max_batch=int(raw["max_batch"]),
        graphs=graphs,
        raw=raw,
    )


@dataclass(frozen=True)
class DimRange:
    """One optimization-profile range for a named dynamic dim."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise ValueError(f"dim range must satisfy 0 <= min <= opt <= max, got {self}")

    @classmethod
    def parse(cls, text: str) -> DimRange:
        """ "1:4:16" (min:opt:max), "16" (static), or "1:16" (opt = max)."""
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            return cls(parts[0], parts[0], parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1], parts[1])
        if len(parts) == 3:
            return cls(*parts)
        raise ValueError(f"bad dim range {text!r}; use MIN:OPT:MAX")


def _tokens_per_image(manifest: OnnxManifest) -> int | None:
    vision = manifest.graphs.get("vision")
    if vision is None:
        return None
    for out in vision.outputs:
        if out.name == "image_embeds" and len(out.shape) == 3 and isinstance(out.shape[1], int):
            return out.shape[1]
    return None


def default_dim_ranges(manifest: OnnxManifest) -> dict[str, DimRange]:
    """Profiles for the dims named in docs/runtime.md §3: B, K, N, S, P, M, T, Q.

    opt is the steady-state value the kernels are tuned for: all K candidates decode together,
    a tick encodes 4 new images (DESIGN.md §4.1), the prompt fills most of the prefix capacity.
    K (expert rows) reaches 2 × max_batch for a model with navigation guidance; T (`extend` tokens per
    row: the unguided prompt's tail + the reasoning) the suffix capacity; Q (the merged `text` graph's new
    tokens per row) the prefix capacity in prefill (the unpadded prompt), 1 in decode (phase_dim_ranges).
    An explicit `"dims": {"S": [min, opt, max]}` in the ONNX manifest wins.
    """
    max_images = int(manifest.raw.get("max_images", DEFAULT_MAX_IMAGES))
    blocks = int(manifest.raw.get("prefill_query_blocks", 1))
    padded = -(-manifest.prefix_capacity // blocks) * blocks  # S: the prompt padded to whole query blocks
    ranges: dict[str, DimRange] = {
        "B": DimRange(1, manifest.max_batch, manifest.max_batch),
        "K": DimRange(1, manifest.max_batch, manifest.max_expert_rows),
        "T": DimRange(1, min(64, manifest.suffix_capacity), manifest.suffix_capacity),
        "N": DimRange(1, min(4, max_images), max_images),
        "S": DimRange(blocks, padded, padded),
        "P": DimRange(1, manifest.prefix_capacity, manifest.prefix_capacity),
    }
    # image tokens are part of the prompt, so M <= S <= Cp bounds M even without the vision graph
    mv = _tokens_per_image(manifest)
    m_max = manifest.prefix_capacity if mv is None else min(max_images * mv, manifest.prefix_capacity)
    ranges["M"] = DimRange(1, m_max, m_max)
    ranges["Q"] = DimRange(1, manifest.prefix_capacity, manifest.prefix_capacity)  # the prompt, unpadded
    for name, value in manifest.raw.get("dims", {}).items():
        ranges[name] = DimRange(*[int(v) for v in value])
    return ranges


def phase_dim_ranges(ranges: dict[str, DimRange]) -> dict[str, dict[str, DimRange]]:
    """The merged text engine's two profiles from the named ranges: prefill = one row of Q prompt tokens
    with M image tokens and no prefix yet (P = 0); decode = B rows of one token over a P-token prefix and
    no image (M = 0). Empty tensors (a 0 dim) are standard TensorRT."""
    one = DimRange(1, 1, 1)
    return {
        "prefill": {**ranges, "B": one, "P": DimRange(0, 0, 0)},
        "decode": {**ranges, "Q": one, "M": DimRange(0, 0, 0)},
    }


# --------------------------------------------------------------------------------------------
# engine side


@dataclass
class EngineTensor:
    name: str
    dtype: str  # TensorRT DataType name: FLOAT, HALF, BF16, INT64, ...
    shape: list[int | str]  # as declared in the ONNX manifest (names for dynamic dims)
    is_input: bool
    profile: dict[str, list[int]] | None = None  # {"min": [...], "opt": [...], "max": [...]} (profile 0)
    phase_profiles: dict[str, dict[str, list[int]]] | None = None  # merged text engine: per profile name


@dataclass
class EngineEntry:
    graph: str
    file: str
    bytes: int
    sha256: str
    onnx_file: str
    onnx_sha256: str
    strongly_typed: bool
    precision: str
    quantization: str  # none | fp8-qdq | int8-qdq
    build_seconds: float
    tensors: list[EngineTensor] = field(default_factory=list)
    profiles: list[str] = field(default_factory=lambda: ["default"])  # optimization profile names, in order


@dataclass
class EngineManifest:
    tensorrt_module: str
    tensorrt_version: str
    config_hash: str
    precision: str
    version_compatible: bool
    prefix_capacity: int
    suffix_capacity: int
    max_batch: int
    engines: dict[str, EngineEntry]
    dims: dict[str, list[int]]
    device: dict[str, Any] | None = None  # {"name", "compute_capability"} when built on a GPU
    model_type: str = "alpamayo_r1"  # the model variant the ONNX was exported from (config.json model_type)
    navigation_guidance: bool = False  # engines include `extend` and 2K expert rows
    weights_hash: str = ""  # runtime.weights.weights_fingerprint of the exported checkpoint, if recorded
    # action de-normalisation constants + source, copied from the ONNX manifest (None: an older export)
    normalization: dict[str, Any] | None = None
    text_engines: str = "separate"  # the builder always records it (format 3); a default for hand-made manifests
    host: str = field(default_factory=platform.machine)
    created_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format: str = ENGINE_MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def recorded_normalization(self, engine_dir: str | Path) -> Normalization | None:
        """The constants recorded at export, for a model directory that holds engines but no weights."""
        if self.normalization is None:
            return None
        return Normalization.from_record(self.normalization, str(Path(engine_dir) / ENGINE_MANIFEST_NAME))

    def write(self, engine_dir: str | Path) -> Path:
        path = Path(engine_dir) / ENGINE_MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path


def _entry_from(raw: dict[str, Any]) -> EngineEntry:
    tensors = [EngineTensor(**t) for t in raw.pop("tensors", [])]
    return EngineEntry(**raw, tensors=tensors)


def load_engine_manifest(engine_dir: str | Path) -> EngineManifest:
    path = Path(engine_dir) / ENGINE_MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path} not found: {engine_dir} is not an engine directory. Build engines on the target with "
            f"`alpamayo-ros build-engines MODEL_OR_ONNX_DIR {engine_dir}`"
        )
    raw = json.loads(path.read_text())
    if raw.get("format") != ENGINE_MANIFEST_FORMAT:
        raise ManifestError(
            f"{path}: format {raw.get('format')!r}, expected {ENGINE_MANIFEST_FORMAT!r} (the text-decoder arrangement, "
            f"navigation guidance, engines from an ONNX export of format 4); re-export the ONNX and rebuild the "
            f"engines with `alpamayo-ros build-engines MODEL_DIR {engine_dir}`"
        )
    raw["engines"] = {k: _entry_from(dict(v)) for k, v in raw["engines"].items()}
    return EngineManifest(**raw)


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def check_engine_manifest(
    manifest: EngineManifest,
    engine_dir: str | Path,
    *,
    tensorrt_version: str,
    config_hash: str,
    compute_capability: str | None = None,
    weights_hash: str | None = None,
    required_graphs: tuple[str, ...] | None = None,  # None: the engines of the manifest's arrangement
    verify_checksums: bool = False,
) -> None:
    """Raise ManifestError naming every mismatch and the command that fixes it."""
    problems: list[str] = []
    rebuild = f"rebuild with `alpamayo-ros build-engines MODEL_DIR {engine_dir}` on this machine"
    if manifest.tensorrt_version != tensorrt_version:
        same_major = _major(manifest.tensorrt_version) == _major(tensorrt_version)
        if not (manifest.version_compatible and same_major):
            problems.append(
                f"engines were built with TensorRT {manifest.tensorrt_version} ({manifest.tensorrt_module}) "
                f"but this process runs TensorRT {tensorrt_version}; serialized engines are tied to the "
                f"TensorRT version that built them"
            )
    if config_hash and manifest.config_hash != config_hash:
        problems.append(
            f"engines belong to model config {manifest.config_hash!r} but the model directory has "
            f"config {config_hash!r} (different weights/dims); re-export the ONNX and rebuild"
        )
    if weights_hash and manifest.weights_hash and manifest.weights_hash != weights_hash:
        problems.append(
            f"engines were built from weights {manifest.weights_hash!r} but the model directory holds "
            f"{weights_hash!r}; re-export the ONNX and rebuild"
        )
    built_cc = (manifest.device or {}).get("compute_capability")
    if compute_capability and built_cc and built_cc != compute_capability:
        problems.append(
            f"engines were built for compute capability {built_cc}, this GPU is {compute_capability}"
        )
    if manifest.text_engines not in ENGINE_GRAPHS:
        problems.append(f"unknown text_engines {manifest.text_engines!r} (known: {TEXT_ENGINES})")
    for graph in required_graphs or ENGINE_GRAPHS.get(manifest.text_engines, ()):
        entry = manifest.engines.get(graph)
        if entry is None:
            problems.append(f"no engine for graph {graph!r}")
            continue
        path = Path(engine_dir) / entry.file
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != entry.bytes:
            problems.append(
                f"{path} has {path.stat().st_size} bytes, the manifest says {entry.bytes} (truncated copy?)"
            )
        elif verify_checksums and file_sha256(path) != entry.sha256:
            problems.append(f"{path} does not match its sha256 in the manifest")
    if problems:
        raise ManifestError(
            f"engine directory {engine_dir} cannot be used: " + "; ".join(problems) + f". Fix: {rebuild}."
        )
