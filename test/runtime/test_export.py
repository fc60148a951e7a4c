"""ONNX export: manifest contract, standard ops only, stale-export detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from alpamayo_ros.runtime.export import MANIFEST_FORMAT, OPSET, check_standard_ops, read_manifest

pytestmark = pytest.mark.slow


def test_manifest_matches_graphs(tiny_model_dir: Path, tiny_onnx_dir: Path) -> None:
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.weights import weights_fingerprint

    cfg = load_config(tiny_model_dir)
    manifest = read_manifest(tiny_onnx_dir, cfg.config_hash, weights_fingerprint(tiny_model_dir))
    assert manifest["opset"] == OPSET >= 17
    assert (manifest["prefix_capacity"], manifest["suffix_capacity"]) == (cfg.prefix_capacity, cfg.suffix_capacity)
    assert set(manifest["graphs"]) == {"vision", "prefill", "decode", "expert_step", "sample"}  # no extend for R1
    assert (manifest["model_type"], manifest["navigation_guidance"]) == ("alpamayo_r1", False)
    for name, entry in manifest["graphs"].items():
        model = onnx.load(str(tiny_onnx_dir / entry["file"]))
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        got = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        want = {i["name"]: i["shape"] for i in entry["inputs"]}
        assert got == want, name
        outs = [o.name for o in model.graph.output]
        assert outs == [o["name"] for o in entry["outputs"]], name
        assert check_standard_ops(tiny_onnx_dir / entry["file"]) == []
    # every layer's KV is its own input; the prefix is stored once (batch-free) in every graph that reads it
    L, H, Dh, Cs = cfg.text.num_hidden_layers, cfg.text.num_key_value_heads, cfg.text.head_dim, cfg.suffix_capacity
    for name, batch in (("decode", "B"), ("expert_step", "K")):
        shapes = {i["name"]: i["shape"] for i in manifest["graphs"][name]["inputs"]}
        for i in range(L):
            assert shapes[f"prefix_key_{i}"] == shapes[f"prefix_value_{i}"] == [H, "P", Dh]
            assert shapes[f"suffix_key_{i}"] == shapes[f"suffix_value_{i}"] == [H, batch, Cs, Dh]
    # calls return only the new tokens' K/V: the prompt's per layer, one token per row from decode
    outs = {o["name"]: o["shape"] for o in manifest["graphs"]["prefill"]["outputs"]}
    assert outs == {"logits": [1, cfg.text.vocab_size], **{f"new_{k}_{i}": [H, "P", Dh] for k in ("key", "value")
                                                            for i in range(L)}}
    outs = {o["name"]: o["shape"] for o in manifest["graphs"]["decode"]["outputs"]}
    assert outs["new_key"] == outs["new_value"] == [L, H, "B", 1, Dh]
    # no graph writes into or copies a cache: no ScatterND on KV (only the prefill's image rows), no Split of it
    ops = {name: {n.op_type for n in onnx.load(str(tiny_onnx_dir / f"{name}.onnx")).graph.node}
           for name in ("decode", "expert_step")}
    assert not any("ScatterND" in o for o in ops.values())
    assert manifest["prefill_query_blocks"] == cfg.prefill_query_blocks


def test_stale_export_is_refused(tiny_model_dir: Path, tiny_onnx_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime import create_backend

    other = tmp_path / "model"
    shutil.copytree(tiny_model_dir, other, ignore=shutil.ignore_patterns("onnx"))
    cfg = json.loads((other / "config.json").read_text())
    cfg["runtime"]["suffix_capacity"] = 128
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="different config.json.*export-onnx"):
        create_backend("onnxruntime", other, onnx_dir=tiny_onnx_dir)
    with pytest.raises(FileNotFoundError, match="manifest.json not found.*export-onnx"):
        create_backend("onnxruntime", other)


def test_manifest_of_an_older_export_is_a_clear_error(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime.tensorrt.manifest import ManifestError, load_onnx_manifest

    old = tmp_path / "onnx"
    shutil.copytree(tiny_onnx_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["format"] == MANIFEST_FORMAT == "alpamayo_ros.onnx/3"
    manifest["format"] = "alpamayo_ros.onnx/2"  # an expert_step without the prefix mask and row mix
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"format 'alpamayo_ros.onnx/2', this version reads 'alpamayo_ros.onnx/3'"
                                         r".*re-export with `alpamayo-ros export-onnx"):
        read_manifest(old)
    with pytest.raises(ManifestError, match="re-export"):
        load_onnx_manifest(old)


def test_export_cli_writes_one_graph(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime.export import export_onnx

    manifest = export_onnx(tiny_model_dir, tmp_path / "onnx", graphs=("expert_step",))
    assert list(manifest["graphs"]) == ["expert_step"]
    assert (tmp_path / "onnx" / "expert_step.onnx").is_file()
    assert json.loads((tmp_path / "onnx" / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]
