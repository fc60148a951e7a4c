"""ONNX export: manifest contract, standard ops only, stale-export detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from alpamayo_ros.runtime.export import ALLOWED_OPS, OPSET, check_standard_ops, read_manifest

pytestmark = pytest.mark.slow


def test_manifest_matches_graphs(tiny_model_dir: Path, tiny_onnx_dir: Path) -> None:
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.weights import weights_fingerprint

    cfg = load_config(tiny_model_dir)
    manifest = read_manifest(tiny_onnx_dir, cfg.config_hash, weights_fingerprint(tiny_model_dir))
    assert manifest["opset"] == OPSET >= 17
    assert (manifest["prefix_capacity"], manifest["suffix_capacity"]) == (cfg.prefix_capacity, cfg.suffix_capacity)
    assert set(manifest["graphs"]) == {"vision", "prefill", "decode", "expert_step"}
    for name, entry in manifest["graphs"].items():
        model = onnx.load(str(tiny_onnx_dir / entry["file"]))
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        got = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        want = {i["name"]: i["shape"] for i in entry["inputs"]}
        assert got == want, name
        outs = [o.name for o in model.graph.output]
        assert outs == [o["name"] for o in entry["outputs"]], name
        assert check_standard_ops(tiny_onnx_dir / entry["file"]) == []
    # the prefix KV is stored once: batch-free in every graph that reads it
    for name in ("decode", "expert_step"):
        shapes = {i["name"]: i["shape"] for i in manifest["graphs"][name]["inputs"]}
        assert len(shapes["prefix_key"]) == 4 and all(isinstance(d, int) for d in shapes["prefix_key"])
    assert "ScatterND" in {n.op_type for n in onnx.load(str(tiny_onnx_dir / "decode.onnx")).graph.node}
    assert "ScatterND" in ALLOWED_OPS


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


def test_export_cli_writes_one_graph(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime.export import export_onnx

    manifest = export_onnx(tiny_model_dir, tmp_path / "onnx", graphs=("expert_step",))
    assert list(manifest["graphs"]) == ["expert_step"]
    assert (tmp_path / "onnx" / "expert_step.onnx").is_file()
    assert json.loads((tmp_path / "onnx" / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]
