"""Export the graph family (docs/runtime.md §3) from a model directory to `<model_dir>/onnx/`.

Dynamo exporter, opset 18, standard ops only (checked after export: no contrib domains, no
sequence ops). The graphs are traced from a model whose parameters were never read (`empty_model`:
meta construction, uninitialised storage), with the weights turned into graph inputs before the
optimizer runs, so host memory does not grow with the model. The weights then go, one tensor at a
time from the safetensors files, into ONE external-data file `weights.bin` that every graph references
(the text decoder's weights are stored once for prefill, decode and text), in the export dtype:
`float32` for ONNX Runtime on a CPU (it has no bf16 kernels there), or the checkpoint's `bfloat16` /
`float16` for TensorRT. Initializers are named by their checkpoint keys (`<key>.T` for a transposed
Linear weight). `manifest.json` records every graph's inputs/outputs with shapes and dtypes, the
opset, the KV capacities, the config hash and the action de-normalisation constants (so engines
without the weights use the checkpoint's numbers); executors refuse an `onnx/` directory whose hash
differs from the model's config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpamayo_ros.core.action_space import Normalization

if TYPE_CHECKING:
    import onnx
    import torch

# 4: the merged `text` graph (prefill + decode), weights in one external file `weights.bin` in the export
#    dtype (`dtype`, `weights_file`), KV and image features in that dtype;
# 3: expert_step takes a prefix mask and a row mix (navigation guidance), `extend` for Alpamayo 1.5;
# 2: per-layer KV inputs, calls return only the new tokens' K/V (1: whole caches in and out).
MANIFEST_FORMAT = "alpamayo_ros.onnx/4"
GRAPH_NAMES = ("vision", "prefill", "decode", "expert_step", "sample", "text", "extend")
DTYPES = ("float32", "bfloat16", "float16")
WEIGHTS_FILE = "weights.bin"
WEIGHT_ALIGNMENT = 4096  # page-aligned tensors: ONNX Runtime and TensorRT may map them instead of copying
_ONNX_DTYPE = {"float32": 1, "float16": 10, "bfloat16": 16}  # onnx.TensorProto data types


def model_graphs(cfg: Any) -> tuple[str, ...]:
    """The graphs a model needs: `extend` only where navigation guidance exists (a route input)."""
    return GRAPH_NAMES if cfg.guidance else tuple(g for g in GRAPH_NAMES if g != "extend")


OPSET = 18
# Ops the graphs may contain (TensorRT-buildable standard ONNX); anything else fails the export.
ALLOWED_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Tanh", "Erf", "Sigmoid",
    "Sin", "Cos", "MatMul", "Gemm", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "Reshape", "Transpose",
    "Concat", "Split", "Slice", "Gather", "GatherElements", "ScatterND", "Unsqueeze", "Squeeze", "Expand",
    "Shape", "Constant", "ConstantOfShape", "Cast", "Range", "Where", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "And", "Or", "Not", "Max", "Min", "Identity", "Flatten", "LayerNormalization",
    "Tile", "Clip", "Relu", "CastLike", "Size", "Mod", "Floor", "Trilu", "TopK", "CumSum", "ArgMax",
}  # fmt: skip


def _layer_io(layers: int, heads: int, head_dim: int, suffix_capacity: int, batch: str, dtype: str
              ) -> list[list[Any]]:
    """Per-layer KV inputs in graph order (executor.layer_input_names): prefix (Hkv, P, Dh), suffix (Hkv, B, Cs, Dh)."""
    from alpamayo_ros.runtime.executor import layer_input_names

    return [
        [name, dtype, [heads, "P", head_dim] if name.startswith("prefix") else [heads, batch, suffix_capacity, head_dim]]
        for name in layer_input_names(layers)
    ]


def graph_io(cfg: Any, dtype: str = "float32") -> dict[str, dict[str, Any]]:
    """Symbolic I/O table per graph (names, dtypes, shapes): the manifest's contract.

    Image features and KV are in the export dtype; pixels, masks, logits and the action stay float32
    (the graphs cast them), so the host side is the same for every dtype.
    """
    from alpamayo_ros.runtime.executor import prefill_kv_output_names
    t, v = cfg.text, cfg.vision
    L, H, Dh, D = t.num_hidden_layers, t.num_key_value_heads, t.head_dim, t.hidden_size
    Cs, W, nds = cfg.suffix_capacity, cfg.n_waypoints, cfg.num_deepstack
    Tv, Mv, f = cfg.patches_per_image, cfg.tokens_per_image, dtype

    def io(rows: list[list[Any]]) -> list[dict[str, Any]]:
        return [{"name": n, "dtype": d, "shape": s} for n, d, s in rows]

    images = [["image_embeds", f, ["M", D]], ["deepstack_embeds", f, [nds, "M", D]], ["image_token_index", "int64", ["M"]]]
    return {
        "vision": {
            "inputs": io([["pixel_rows", "float32", ["N", Tv, v.patch_dim]]]),
            "outputs": io([["image_embeds", f, ["N", Mv, D]], ["deepstack_embeds", f, [nds, "N", Mv, D]]]),
        },
        "prefill": {
            "inputs": io([["input_ids", "int64", [1, "S"]], ["position_ids", "int64", [3, 1, "P"]], *images]),
            "outputs": io([
                ["logits", "float32", [1, t.vocab_size]],
                *[[name, f, [H, "P", Dh]] for name in prefill_kv_output_names(L)],
            ]),
        },
        "decode": {
            "inputs": io([
                ["input_ids", "int64", ["B", 1]], ["position_ids", "int64", [3, "B", 1]],
                ["suffix_mask", "float32", ["B", Cs]], *_layer_io(L, H, Dh, Cs, "B", f),
            ]),
            "outputs": io([
                ["logits", "float32", ["B", t.vocab_size]],
                ["new_key", f, [L, H, "B", 1, Dh]], ["new_value", f, [L, H, "B", 1, Dh]],
            ]),
        },
        "expert_step": {  # K = expert rows: the candidates, twice that with navigation guidance
            "inputs": io([
                ["x", "float32", ["K", W, cfg.action_dim]], ["t", "float32", [1]], ["dt", "float32", [1]],
                ["row_mix", "float32", ["K", "K"]], ["position_ids", "int64", [3, "K", W]],
                ["suffix_mask", "float32", ["K", Cs]], ["prefix_mask", "float32", ["K", "P"]],
                *_layer_io(L, H, Dh, Cs, "K", f),
            ]),
            "outputs": io([["x_next", "float32", ["K", W, cfg.action_dim]]]),
        },
        "extend": {
            "inputs": io([
                ["input_ids", "int64", ["B", "T"]], ["position_ids", "int64", [3, "B", "T"]],
                ["prefix_mask", "float32", [1, "P"]], ["own_mask", "float32", ["B", "T", "T"]],
                *[row for row in _layer_io(L, H, Dh, Cs, "B", f) if row[0].startswith("prefix")],
            ]),
            "outputs": io([["new_key", f, [L, H, "B", "T", Dh]], ["new_value", f, [L, H, "B", "T", Dh]]]),
        },
        "sample": {
            "inputs": io([
                ["logits", "float32", ["B", t.vocab_size]], ["uniforms", "float32", ["B"]],
                ["temperature", "float32", [1]], ["top_p", "float32", [1]],
            ]),
            "outputs": io([["token_ids", "int64", ["B"]], ["covered", "bool", ["B"]]]),
        },
        # prefill (B = 1, Q = the prompt, P = 0) and decode (Q = 1, M = 0) in one graph; Q (new tokens per
        # row) is not extend's T: the two have different profile ranges
        "text": {
            "inputs": io([
                ["input_ids", "int64", ["B", "Q"]], ["position_ids", "int64", [3, "B", "Q"]], *images,
                ["suffix_mask", "float32", ["B", Cs]], *_layer_io(L, H, Dh, Cs, "B", f),
            ]),
            "outputs": io([
                ["logits", "float32", ["B", t.vocab_size]],
                *[[name, f, [H, "B", "Q", Dh]] for name in prefill_kv_output_names(L)],
            ]),
        },
    }


def _example_inputs(name: str, cfg: Any, dtype: str = "float32") -> tuple[Any, ...]:
    """Example tensors for tracing: every dynamic dim ≥ 2 and distinct, floats in the I/O table's dtype."""
    import torch

    t = cfg.text
    L, H, Dh, D, W, nds, Cs = (t.num_hidden_layers, t.num_key_value_heads, t.head_dim, t.hidden_size,
                               cfg.n_waypoints, cfg.num_deepstack, cfg.suffix_capacity)
    f = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int, dt: Any = f) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dt)

    def kv(p: int, b: int) -> list[list[torch.Tensor]]:
        return [[randn(H, p, Dh) for _ in range(L)] for _ in range(2)] + [
            [randn(H, b, Cs, Dh) for _ in range(L)] for _ in range(2)]

    m, b, p = 7, 3, 21
    images = (randn(m, D), randn(nds, m, D), torch.arange(2, 2 + m))
    if name == "vision":
        return (randn(2, cfg.patches_per_image, cfg.vision.patch_dim, dt=torch.float32),)
    if name == "prefill":
        s = 5 * cfg.prefill_query_blocks
        return (torch.randint(0, 100, (1, s)), torch.arange(s - 3).expand(3, 1, s - 3).contiguous(), *images)
    if name == "sample":
        return (randn(b, t.vocab_size, dt=torch.float32), torch.rand(b, generator=gen), torch.tensor([0.6]),
                torch.tensor([0.98]))
    if name == "decode":
        return (torch.randint(0, 100, (b, 1)), torch.full((3, b, 1), 30), torch.zeros(b, Cs), *kv(p, b))
    if name == "text":
        n = 5
        return (torch.randint(0, 100, (b, n)), torch.arange(n).repeat(3, b, 1) + p, *images, torch.zeros(b, Cs),
                *kv(p, b))
    if name == "extend":
        n = 5
        return (torch.randint(0, 100, (b, n)), torch.full((3, b, n), 30), torch.zeros(1, p), torch.zeros(b, n, n),
                *kv(p, b)[:2])
    k = 4  # expert rows: distinct from B (row_mix is K x K)
    return (randn(k, W, cfg.action_dim, dt=torch.float32), torch.tensor([0.1]), torch.tensor([0.1]), torch.eye(k),
            torch.full((3, k, W), 40), torch.zeros(k, Cs), torch.zeros(k, p), *kv(p, k))


def _dynamic_shapes(name: str, cfg: Any) -> dict[str, Any]:
    from torch.export import Dim

    layers = cfg.text.num_hidden_layers
    if name == "vision":
        return {"pixel_rows": {0: Dim("N", min=1, max=64)}}
    if name == "prefill":
        # S = n·block: query blocks of one symbolic size, so every slice bound is linear (no floor division)
        n = cfg.prefill_query_blocks
        s = n * Dim("S_block", min=2, max=(1 << 16) // n)
        p, m = Dim("P", min=2, max=1 << 16), Dim("M", min=1, max=1 << 16)
        return {"input_ids": {1: s}, "position_ids": {2: p}, "image_embeds": {0: m}, "deepstack_embeds": {1: m},
                "image_token_index": {0: m}}
    if name == "sample":
        b = Dim("B", min=1, max=64)
        return {"logits": {0: b}, "uniforms": {0: b}, "temperature": None, "top_p": None}
    # the text graph's prefill has no prefix yet (P = 0) and its decode no image (M = 0): empty tensors
    p = Dim("P", min=0 if name == "text" else 2, max=1 << 16)
    batch = "K" if name == "expert_step" else "B"
    b = Dim(batch, min=1, max=128)
    prefix, suffix = [{1: p}] * layers, [{1: b}] * layers
    kv = {"prefix_keys": prefix, "prefix_values": prefix, "suffix_keys": suffix, "suffix_values": suffix}
    if name == "decode":
        return {"input_ids": {0: b}, "position_ids": {1: b}, "suffix_mask": {0: b}, **kv}
    if name == "text":
        q, m = Dim("Q", min=1, max=1 << 16), Dim("M", min=0, max=1 << 16)
        return {"input_ids": {0: b, 1: q}, "position_ids": {1: b, 2: q}, "image_embeds": {0: m},
                "deepstack_embeds": {1: m}, "image_token_index": {0: m}, "suffix_mask": {0: b}, **kv}
    if name == "extend":
        t = Dim("T", min=1, max=1 << 12)
        return {"input_ids": {0: b, 1: t}, "position_ids": {1: b, 2: t}, "prefix_mask": {1: p},
                "own_mask": {0: b, 1: t, 2: t}, "prefix_keys": prefix, "prefix_values": prefix}
    return {"x": {0: b}, "t": None, "dt": None, "row_mix": {0: b, 1: b}, "position_ids": {1: b},
            "suffix_mask": {0: b}, "prefix_mask": {0: b, 1: p}, **kv}


def check_standard_ops(path: str | Path | onnx.ModelProto) -> list[str]:
    """Op types outside ALLOWED_OPS or outside the default ONNX domain (empty list = fine)."""
    import onnx

    model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path), load_external_data=False)
    bad = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            bad.add(f"{node.domain or 'ai.onnx'}::{node.op_type}")
    return sorted(bad)


# --------------------------------------------------------------------------------------------
# tracing without weights


def traceable_model(cfg: Any, dtype: str = "float32") -> Any:
    """The model in `dtype` with uninitialised parameter storage that nothing ever reads (pages are
    committed only when touched): tracing needs real devices, not values."""
    import torch

    from alpamayo_ros.runtime.modeling.model import empty_model, materialize

    model = empty_model(cfg)
    target = getattr(torch, dtype)
    materialize(model, lambda key, current: torch.empty(current.shape, dtype=target)
                if current.is_meta else current.to(target))
    return model


@dataclass(frozen=True)
class WeightRef:
    """One initializer of the exported graphs: checkpoint tensor `key` after `ops` (folded data movement)."""

    key: str
    ops: tuple[tuple[str, tuple[int, ...]], ...]  # ("transpose", perm) / ("reshape", shape), applied in order

    @property
    def name(self) -> str:
        suffix = "".join(".T" if op == "transpose" else f".reshape{list(arg)}" for op, arg in self.ops)
        return self.key + suffix.replace(" ", "")

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        for op, arg in self.ops:
            tensor = tensor.permute(*arg) if op == "transpose" else tensor.reshape(arg)
        return tensor.contiguous()


@dataclass
class TracedGraph:
    """A graph whose weights are graph inputs (`weights`: input name -> WeightRef), saved later with the
    weights as external initializers (`finish`) or kept as inputs (structure checks)."""

    name: str
    proto: onnx.ModelProto
    weights: dict[str, WeightRef]
    weight_shapes: dict[str, tuple[int, ...]]


def trace_graph(model: Any, name: str, dtype: str = "float32") -> TracedGraph:
    """Export one graph with the model's state tensors as graph inputs (never read), optimise it, fold
    Transpose / Reshape of a weight into the weight itself, and name the dynamic dims as the manifest does."""
    import logging
    import warnings

    import torch

    from alpamayo_ros.runtime.graphs import GRAPH_CLASSES

    module = GRAPH_CLASSES[name](model).eval()
    io = graph_io(model.config, dtype)[name]
    key_of = _state_keys(model, module)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, _example_inputs(name, model.config, dtype), dynamo=True, opset_version=OPSET,
            dynamic_shapes=_dynamic_shapes(name, model.config),
            input_names=[i["name"] for i in io["inputs"]], output_names=[o["name"] for o in io["outputs"]],
            verbose=False, optimize=False,
        )
        assert program is not None
        graph = program.model.graph
        for init_name in [n for n in graph.initializers if n in key_of]:
            value = graph.initializers.pop(init_name)
            value.const_value = None  # the tensor is never serialised or folded
            value.name = key_of[init_name]
            graph.inputs.append(value)
        program.optimize()
        proto = program.model_proto
    weights = {key: WeightRef(key, ()) for key in set(key_of.values())}
    _fold_weight_ops(proto, weights)
    _name_dynamic_dims(proto, io)
    bad = check_standard_ops(proto)
    if bad:
        raise RuntimeError(f"{name}.onnx contains non-standard or unexpected ops {bad}; TensorRT could not build it")
    used = {i.name for i in proto.graph.input}
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in proto.graph.input}
    weights = {n: ref for n, ref in weights.items() if n in used}
    return TracedGraph(name, proto, weights, {n: shapes[n] for n in weights})


def _state_keys(model: Any, module: Any) -> dict[str, str]:
    """Graph-module tensor name -> checkpoint key (the graphs hold sub-modules of the model)."""
    by_id = {id(t): key for key, t in model.state_dict(keep_vars=True).items()}
    return {n: by_id[id(t)] for n, t in module.state_dict(keep_vars=True).items() if id(t) in by_id}


_FOLDABLE = {"Transpose", "Reshape"}


def _fold_weight_ops(proto: onnx.ModelProto, weights: dict[str, WeightRef]) -> None:
    """Transpose / Reshape nodes on a weight input (constant parameters) become a transformed weight input
    (`<key>.T`): the data is rearranged when it is written, not at every engine build or session start."""
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    inputs = {i.name: i for i in graph.input}
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            src = node.input[0] if node.input else ""
            if node.op_type not in _FOLDABLE or src not in weights:
                continue
            if node.op_type == "Transpose":
                perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm is None:
                    continue
                op: tuple[str, tuple[int, ...]] = ("transpose", perm)
            else:
                if len(node.input) < 2 or node.input[1] not in constants:
                    continue
                op = ("reshape", tuple(int(d) for d in constants[node.input[1]]))
            ref = WeightRef(weights[src].key, (*weights[src].ops, op))
            old_shape = [d.dim_value for d in inputs[src].type.tensor_type.shape.dim]
            new_shape = _moved_shape(old_shape, op)
            if ref.name not in inputs:
                value = onnx.helper.make_tensor_value_info(ref.name, inputs[src].type.tensor_type.elem_type, new_shape)
                graph.input.append(value)
                inputs[ref.name] = value
                weights[ref.name] = ref
            for other in graph.node:
                for i, name in enumerate(other.input):
                    if name == node.output[0]:
                        other.input[i] = ref.name
            for out in graph.output:
                if out.name == node.output[0]:
                    out.name = ref.name
            graph.node.remove(node)
            changed = True
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for value in [i for i in graph.input if i.name in weights and i.name not in used]:
        graph.input.remove(value)
    for init in [i for i in graph.initializer if i.name not in used]:  # shapes of folded Reshapes
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def _moved_shape(shape: list[int], op: tuple[str, tuple[int, ...]]) -> list[int]:
    kind, arg = op
    if kind == "transpose":
        return [shape[a] for a in arg]
    total, known = 1, 1
    for d in shape:
        total *= d
    for d in arg:
        known *= d if d > 0 else 1
    return [d if d > 0 else (shape[i] if d == 0 else total // known) for i, d in enumerate(arg)]


def _name_dynamic_dims(proto: onnx.ModelProto, io: dict[str, Any]) -> None:
    """Give graph inputs the manifest's dim names (the exporter names a derived dim e.g. "7*S_block")."""
    declared = {t["name"]: t["shape"] for t in io["inputs"]}
    for value in proto.graph.input:
        if value.name not in declared:
            continue  # a weight input
        for dim, want in zip(value.type.tensor_type.shape.dim, declared[value.name], strict=True):
            if isinstance(want, str) and dim.dim_param != want:
                dim.dim_param = want


# --------------------------------------------------------------------------------------------
# weights


def write_weights(model_dir: str | Path, refs: Iterable[WeightRef], path: Path, dtype: str
                  ) -> dict[str, tuple[int, int]]:
    """Every WeightRef's tensor into one file, page-aligned, in `dtype`, read one tensor at a time from
    the checkpoint; returns initializer name -> (offset, length)."""
    import torch

    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.modeling.model import empty_model, state_shapes
    from alpamayo_ros.runtime.weights import TensorReader, checkpoint_layout, rebuilt_buffers

    layout = checkpoint_layout(model_dir)
    model = empty_model(load_config(model_dir))
    rebuilt, shapes = rebuilt_buffers(model, set(layout), model_dir), state_shapes(model)
    reader, target = TensorReader(layout), getattr(torch, dtype)
    offsets: dict[str, tuple[int, int]] = {}
    with path.open("wb") as fh:
        for ref in sorted({r.name: r for r in refs}.values(), key=lambda r: r.name):
            tensor = rebuilt[ref.key] if ref.key in rebuilt else reader.get(ref.key)
            data = ref.apply(tensor.to(target).reshape(shapes[ref.key]))
            offset = -(-fh.tell() // WEIGHT_ALIGNMENT) * WEIGHT_ALIGNMENT
            fh.seek(offset)
            fh.write(data.view(torch.uint8).reshape(-1).numpy().data)
            offsets[ref.name] = (offset, data.numel() * data.element_size())
            del tensor, data
    return offsets


def finish_graph(traced: TracedGraph, offsets: dict[str, tuple[int, int]], dtype: str) -> onnx.ModelProto:
    """The weight inputs become initializers whose data lives in WEIGHTS_FILE (external data)."""
    import onnx

    graph = traced.proto.graph
    for value in [i for i in graph.input if i.name in traced.weights]:
        offset, length = offsets[value.name]
        tensor = onnx.TensorProto(name=value.name, data_type=value.type.tensor_type.elem_type,
                                  dims=traced.weight_shapes[value.name])
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
            tensor.external_data.add(key=k, value=v)
        graph.initializer.append(tensor)
        graph.input.remove(value)
    return traced.proto


def export_onnx(model_dir: str | Path, out_dir: str | Path | None = None, graphs: tuple[str, ...] | None = None,
                max_batch: int = 8, dtype: str = "float32") -> dict[str, Any]:
    """Export the graph family; returns the manifest (also written to `<out_dir>/manifest.json`).

    A partial export (`graphs`) rewrites WEIGHTS_FILE with the weights of the graphs it exports, so the
    other graphs of an earlier export are dropped from the manifest unless re-exported with them.
    """
    import onnx

    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.weights import resolve_normalization, weight_files, weights_fingerprint

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    root = Path(model_dir)
    out = Path(out_dir) if out_dir is not None else root / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    weight_files(root)  # fail before tracing when there are no weights
    cfg = load_config(root)
    model = traceable_model(cfg, dtype)
    names = graphs or model_graphs(cfg)
    io = graph_io(cfg, dtype)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "opset": OPSET, "config_hash": cfg.config_hash,
        "weights_hash": weights_fingerprint(root), "dtype": dtype, "weights_file": WEIGHTS_FILE,
        "model_type": cfg.model_type, "navigation_guidance": cfg.guidance,
        "prefix_capacity": cfg.prefix_capacity, "suffix_capacity": cfg.suffix_capacity, "max_batch": max_batch,
        "image_grid_thw": list(cfg.image_grid_thw), "prefill_query_blocks": cfg.prefill_query_blocks,
        # the action de-normalisation the graphs' outputs need, for engines that travel without the weights
        "normalization": resolve_normalization(root).to_record(),
        "graphs": {}, "export_seconds": {},
    }
    traced = []
    for name in names:
        t0 = time.perf_counter()
        traced.append(trace_graph(model, name, dtype))
        manifest["export_seconds"][name] = round(time.perf_counter() - t0, 2)
    del model
    t0 = time.perf_counter()
    offsets = write_weights(root, [r for g in traced for r in g.weights.values()], out / WEIGHTS_FILE, dtype)
    manifest["export_seconds"]["weights"] = round(time.perf_counter() - t0, 2)
    for graph in traced:
        onnx.save(finish_graph(graph, offsets, dtype), str(out / f"{graph.name}.onnx"))
        manifest["graphs"][graph.name] = {"file": f"{graph.name}.onnx", **io[graph.name]}
    manifest["weights_bytes"] = (out / WEIGHTS_FILE).stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def check_manifest_format(path: Path, found: Any) -> None:
    """A manifest of another format (an export by an older version) is a clear error naming the fix."""
    if found != MANIFEST_FORMAT:
        raise ValueError(
            f"{path}: format {found!r}, this version reads {MANIFEST_FORMAT!r} (per-layer KV inputs, an expert_step "
            f"with a prefix mask and a row mix for navigation guidance, the merged text graph, the weights in one "
            f"external file in the export dtype); re-export with `alpamayo-ros export-onnx <model_dir>`"
        )


def read_manifest(onnx_dir: str | Path, expected_hash: str | None = None, weights_hash: str | None = None
                  ) -> dict[str, Any]:
    path = Path(onnx_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: export the graphs first with `alpamayo-ros export-onnx <model_dir>` "
            f"(or `python -m alpamayo_ros.runtime.export <model_dir>`)"
        )
    manifest = json.loads(path.read_text())
    check_manifest_format(path, manifest.get("format"))
    if expected_hash is not None and manifest.get("config_hash") != expected_hash:
        raise ValueError(
            f"{path} was exported from a different config.json (hash {manifest.get('config_hash')} != {expected_hash}); "
            f"re-export with `alpamayo-ros export-onnx <model_dir>`"
        )
    if weights_hash is not None and manifest.get("weights_hash") != weights_hash:
        raise ValueError(
            f"{path} was exported from different weights (fingerprint {manifest.get('weights_hash')} != "
            f"{weights_hash}); re-export with `alpamayo-ros export-onnx <model_dir>`"
        )
    return manifest


def manifest_normalization(manifest: dict[str, Any], path: str | Path) -> Normalization | None:
    """The normalisation constants an ONNX manifest recorded at export (None for older exports)."""
    record = manifest.get("normalization")
    return None if record is None else Normalization.from_record(record, str(path))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="export-onnx", description="Export the Alpamayo ONNX graph family")
    ap.add_argument("model_dir")
    ap.add_argument("--out", default=None, help="output directory (default: MODEL_DIR/onnx)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--dtype", choices=DTYPES, default="float32",
                    help="weights and activations: float32 for ONNX Runtime on a CPU (default), the checkpoint's "
                         "bfloat16 (or float16) for TensorRT")
    ap.add_argument("--graphs", default="", help=f"comma-separated subset of {','.join(GRAPH_NAMES)} (default: "
                    "every graph the model needs; `extend` exists for models with navigation guidance)")
    args = ap.parse_args(argv)
    graphs = tuple(g for g in args.graphs.split(",") if g) or None
    manifest = export_onnx(args.model_dir, args.out, graphs=graphs, max_batch=args.max_batch, dtype=args.dtype)
    for name, secs in manifest["export_seconds"].items():
        print(f"{name}: exported in {secs} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
