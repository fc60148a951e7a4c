"""Export the graph family (docs/runtime.md §3) from a model directory to `<model_dir>/onnx/`.

Dynamo exporter, opset 18, standard ops only (checked after export: no contrib domains, no
sequence ops), fp32 weights embedded (external data beyond 2 GB). `manifest.json` records every
graph's inputs/outputs with shapes and dtypes, the opset, the KV capacities, the config hash and the
action de-normalisation constants (so engines without the weights use the checkpoint's numbers);
executors refuse an `onnx/` directory whose hash differs from the model's config.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from alpamayo_ros.core.action_space import Normalization

# 3: expert_step takes a prefix mask and a row mix (navigation guidance), `extend` for Alpamayo 1.5;
# 2: per-layer KV inputs, calls return only the new tokens' K/V (1: whole caches in and out).
MANIFEST_FORMAT = "alpamayo_ros.onnx/3"
GRAPH_NAMES = ("vision", "prefill", "decode", "expert_step", "sample", "extend")


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


def _layer_io(layers: int, heads: int, head_dim: int, suffix_capacity: int, batch: str) -> list[list[Any]]:
    """Per-layer KV inputs in graph order (executor.layer_input_names): prefix (Hkv, P, Dh), suffix (Hkv, B, Cs, Dh)."""
    from alpamayo_ros.runtime.executor import layer_input_names

    return [
        [name, "float32", [heads, "P", head_dim] if name.startswith("prefix") else [heads, batch, suffix_capacity, head_dim]]
        for name in layer_input_names(layers)
    ]


def _graph_io(cfg: Any) -> dict[str, dict[str, Any]]:
    """Symbolic I/O table per graph (names, dtypes, shapes) — the manifest's contract."""
    from alpamayo_ros.runtime.executor import prefill_kv_output_names
    t, v = cfg.text, cfg.vision
    L, H, Dh, D = t.num_hidden_layers, t.num_key_value_heads, t.head_dim, t.hidden_size
    Cs, W, nds = cfg.suffix_capacity, cfg.n_waypoints, cfg.num_deepstack
    Tv, Mv = cfg.patches_per_image, cfg.tokens_per_image

    def io(rows: list[list[Any]]) -> list[dict[str, Any]]:
        return [{"name": n, "dtype": d, "shape": s} for n, d, s in rows]

    return {
        "vision": {
            "inputs": io([["pixel_rows", "float32", ["N", Tv, v.patch_dim]]]),
            "outputs": io([["image_embeds", "float32", ["N", Mv, D]], ["deepstack_embeds", "float32", [nds, "N", Mv, D]]]),
        },
        "prefill": {
            "inputs": io([
                ["input_ids", "int64", [1, "S"]], ["position_ids", "int64", [3, 1, "P"]],
                ["image_embeds", "float32", ["M", D]], ["deepstack_embeds", "float32", [nds, "M", D]],
                ["image_token_index", "int64", ["M"]],
            ]),
            "outputs": io([
                ["logits", "float32", [1, t.vocab_size]],
                *[[name, "float32", [H, "P", Dh]] for name in prefill_kv_output_names(L)],
            ]),
        },
        "decode": {
            "inputs": io([
                ["input_ids", "int64", ["B", 1]], ["position_ids", "int64", [3, "B", 1]],
                ["suffix_mask", "float32", ["B", Cs]], *_layer_io(L, H, Dh, Cs, "B"),
            ]),
            "outputs": io([
                ["logits", "float32", ["B", t.vocab_size]],
                ["new_key", "float32", [L, H, "B", 1, Dh]], ["new_value", "float32", [L, H, "B", 1, Dh]],
            ]),
        },
        "expert_step": {  # K = expert rows: the candidates, twice that with navigation guidance
            "inputs": io([
                ["x", "float32", ["K", W, cfg.action_dim]], ["t", "float32", [1]], ["dt", "float32", [1]],
                ["row_mix", "float32", ["K", "K"]], ["position_ids", "int64", [3, "K", W]],
                ["suffix_mask", "float32", ["K", Cs]], ["prefix_mask", "float32", ["K", "P"]],
                *_layer_io(L, H, Dh, Cs, "K"),
            ]),
            "outputs": io([["x_next", "float32", ["K", W, cfg.action_dim]]]),
        },
        "extend": {
            "inputs": io([
                ["input_ids", "int64", ["B", "T"]], ["position_ids", "int64", [3, "B", "T"]],
                ["prefix_mask", "float32", [1, "P"]], ["own_mask", "float32", ["B", "T", "T"]],
                *[row for row in _layer_io(L, H, Dh, Cs, "B") if row[0].startswith("prefix")],
            ]),
            "outputs": io([["new_key", "float32", [L, H, "B", "T", Dh]], ["new_value", "float32", [L, H, "B", "T", Dh]]]),
        },
        "sample": {
            "inputs": io([
                ["logits", "float32", ["B", t.vocab_size]], ["uniforms", "float32", ["B"]],
                ["temperature", "float32", [1]], ["top_p", "float32", [1]],
            ]),
            "outputs": io([["token_ids", "int64", ["B"]], ["covered", "bool", ["B"]]]),
        },
    }


def _layer_kv(cfg: Any, prefix_len: int, batch: int) -> tuple[list[Any], ...]:
    import torch

    t = cfg.text
    L, H, Dh, Cs = t.num_hidden_layers, t.num_key_value_heads, t.head_dim, cfg.suffix_capacity
    gen = torch.Generator().manual_seed(0)
    prefix = [[torch.randn(H, prefix_len, Dh, generator=gen) for _ in range(L)] for _ in range(2)]
    suffix = [[torch.randn(H, batch, Cs, Dh, generator=gen) for _ in range(L)] for _ in range(2)]
    return (*prefix, *suffix)


def _example_inputs(name: str, cfg: Any) -> tuple[Any, ...]:
    import torch

    D, W, nds = cfg.text.hidden_size, cfg.n_waypoints, cfg.num_deepstack
    Cs = cfg.suffix_capacity
    if name == "vision":
        return (torch.randn(2, cfg.patches_per_image, cfg.vision.patch_dim),)
    if name == "prefill":
        s, m = 5 * cfg.prefill_query_blocks, 7
        p = s - 3
        return (
            torch.randint(0, 100, (1, s)), torch.arange(p).view(1, 1, p).expand(3, 1, p).contiguous(),
            torch.randn(m, D), torch.randn(nds, m, D), torch.arange(2, 2 + m),
        )
    if name == "sample":
        b = 3
        return (torch.randn(b, cfg.text.vocab_size), torch.rand(b), torch.tensor([0.6]), torch.tensor([0.98]))
    p = 21
    if name == "decode":
        b = 3
        return (torch.randint(0, 100, (b, 1)), torch.full((3, b, 1), 30), torch.zeros(b, Cs), *_layer_kv(cfg, p, b))
    if name == "extend":
        b, t = 3, 5
        return (torch.randint(0, 100, (b, t)), torch.full((3, b, t), 30), torch.zeros(1, p), torch.zeros(b, t, t),
                *_layer_kv(cfg, p, b)[:2])
    k = 4
    return (
        torch.randn(k, W, cfg.action_dim), torch.tensor([0.1]), torch.tensor([0.1]), torch.eye(k),
        torch.full((3, k, W), 40), torch.zeros(k, Cs), torch.zeros(k, p), *_layer_kv(cfg, p, k),
    )


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
    p = Dim("P", min=2, max=1 << 16)
    batch = "K" if name == "expert_step" else "B"
    b = Dim(batch, min=1, max=128)
    prefix, suffix = [{1: p}] * layers, [{1: b}] * layers
    kv = {"prefix_keys": prefix, "prefix_values": prefix, "suffix_keys": suffix, "suffix_values": suffix}
    if name == "decode":
        return {"input_ids": {0: b}, "position_ids": {1: b}, "suffix_mask": {0: b}, **kv}
    if name == "extend":
        t = Dim("T", min=1, max=1 << 12)
        return {"input_ids": {0: b, 1: t}, "position_ids": {1: b, 2: t}, "prefix_mask": {1: p},
                "own_mask": {0: b, 1: t, 2: t}, "prefix_keys": prefix, "prefix_values": prefix}
    return {"x": {0: b}, "t": None, "dt": None, "row_mix": {0: b, 1: b}, "position_ids": {1: b},
            "suffix_mask": {0: b}, "prefix_mask": {0: b, 1: p}, **kv}


def check_standard_ops(path: str | Path) -> list[str]:
    """Op types outside ALLOWED_OPS or outside the default ONNX domain (empty list = fine)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    bad = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ALLOWED_OPS:
            bad.add(f"{node.domain or 'ai.onnx'}::{node.op_type}")
    return sorted(bad)


def export_graph(model: Any, name: str, path: Path) -> None:
    import torch

    from alpamayo_ros.runtime.graphs import GRAPH_CLASSES

    module = GRAPH_CLASSES[name](model).eval()
    io = _graph_io(model.config)[name]
    args = _example_inputs(name, model.config)
    with torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET,
            dynamic_shapes=_dynamic_shapes(name, model.config),
            input_names=[i["name"] for i in io["inputs"]], output_names=[o["name"] for o in io["outputs"]],
            verbose=False, optimize=True,
        )
    assert program is not None
    program.save(str(path), external_data=_needs_external_data(model))
    _name_dynamic_dims(path, io)
    bad = check_standard_ops(path)
    if bad:
        raise RuntimeError(f"{path.name} contains non-standard or unexpected ops {bad}; TensorRT could not build it")


def _name_dynamic_dims(path: Path, io: dict[str, Any]) -> None:
    """Give graph inputs the manifest's dim names (the exporter names a derived dim e.g. "7*S_block")."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    declared = {t["name"]: t["shape"] for t in io["inputs"]}
    for value in model.graph.input:
        for dim, want in zip(value.type.tensor_type.shape.dim, declared[value.name], strict=True):
            if isinstance(want, str) and dim.dim_param != want:
                dim.dim_param = want
    onnx.save(model, str(path))


def _needs_external_data(model: Any) -> bool:
    return sum(p.numel() for p in model.parameters()) * 4 > 1_800_000_000


def export_onnx(model_dir: str | Path, out_dir: str | Path | None = None, graphs: tuple[str, ...] | None = None,
                max_batch: int = 8) -> dict[str, Any]:
    """Export the graph family; returns the manifest (also written to `<out_dir>/manifest.json`)."""
    import logging
    import warnings

    from alpamayo_ros.runtime.weights import load_model, resolve_normalization, weights_fingerprint

    root = Path(model_dir)
    out = Path(out_dir) if out_dir is not None else root / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(root)
    cfg = model.config
    names = graphs or model_graphs(cfg)
    io = _graph_io(cfg)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "opset": OPSET, "config_hash": cfg.config_hash,
        "weights_hash": weights_fingerprint(root),
        "model_type": cfg.model_type, "navigation_guidance": cfg.guidance,
        "prefix_capacity": cfg.prefix_capacity, "suffix_capacity": cfg.suffix_capacity, "max_batch": max_batch,
        "image_grid_thw": list(cfg.image_grid_thw), "prefill_query_blocks": cfg.prefill_query_blocks,
        # the action de-normalisation the graphs' outputs need, for engines that travel without the weights
        "normalization": resolve_normalization(root).to_record(),
        "graphs": {}, "export_seconds": {},
    }
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for name in names:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_graph(model, name, out / f"{name}.onnx")
        manifest["graphs"][name] = {"file": f"{name}.onnx", **io[name]}
        manifest["export_seconds"][name] = round(time.perf_counter() - t0, 2)
    previous = out / "manifest.json"
    if graphs is not None and previous.is_file():  # partial re-export: keep the other graphs of the same model
        old = json.loads(previous.read_text())
        if (old.get("config_hash"), old.get("weights_hash")) == (manifest["config_hash"], manifest["weights_hash"]):
            for name, entry in old.get("graphs", {}).items():
                manifest["graphs"].setdefault(name, entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def check_manifest_format(path: Path, found: Any) -> None:
    """A manifest of another format (an export by an older version) is a clear error naming the fix."""
    if found != MANIFEST_FORMAT:
        raise ValueError(
            f"{path}: format {found!r}, this version reads {MANIFEST_FORMAT!r} (per-layer KV inputs, an expert_step "
            f"with a prefix mask and a row mix for navigation guidance); re-export with "
            f"`alpamayo-ros export-onnx <model_dir>`"
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
    args = ap.parse_args(argv)
    manifest = export_onnx(args.model_dir, args.out, max_batch=args.max_batch)
    for name, secs in manifest["export_seconds"].items():
        print(f"{name}: exported in {secs} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
