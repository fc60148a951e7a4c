"""ONNX export: manifest contract, standard ops only, stale-export detection."""

from __future__ import annotations

import json
import re
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
    # the merged text graph next to prefill and decode; no extend for R1
    assert set(manifest["graphs"]) == {"vision", "prefill", "decode", "expert_step", "sample", "text"}
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
    assert manifest["format"] == MANIFEST_FORMAT == "alpamayo_ros.onnx/4"
    manifest["format"] = "alpamayo_ros.onnx/3"  # fp32 weights embedded per graph, no merged text graph
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"format 'alpamayo_ros.onnx/3', this version reads 'alpamayo_ros.onnx/4'"
                                         r".*merged text graph.*re-export with `alpamayo-ros export-onnx"):
        read_manifest(old)
    with pytest.raises(ManifestError, match="re-export"):
        load_onnx_manifest(old)


def test_export_cli_writes_one_graph(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime.export import export_onnx

    manifest = export_onnx(tiny_model_dir, tmp_path / "onnx", graphs=("expert_step",))
    assert list(manifest["graphs"]) == ["expert_step"]
    assert (tmp_path / "onnx" / "expert_step.onnx").is_file()
    assert json.loads((tmp_path / "onnx" / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]


def _ort(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_text_graph_is_the_prefill_and_the_decode_graph(tiny_model_dir: Path, tiny_onnx_dir: Path) -> None:
    """The merged text graph (one TensorRT engine for both phases) computes what prefill and decode do:
    prefill = one row of the whole prompt, no prefix (an empty tensor), every suffix slot hidden; decode =
    one token per row over the prompt's K/V and the suffix, no image rows (empty tensors)."""
    import numpy as np

    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.executor import layer_input_names

    cfg = load_config(tiny_model_dir)
    t = cfg.text
    L, H, Dh, Cs, D, nds = t.num_hidden_layers, t.num_key_value_heads, t.head_dim, cfg.suffix_capacity, t.hidden_size, cfg.num_deepstack
    text, prefill, decode = (_ort(tiny_onnx_dir / f"{n}.onnx") for n in ("text", "prefill", "decode"))
    rng = np.random.default_rng(0)
    p, m = 40, 12
    ids = rng.integers(0, 4000, (1, p))
    images = {"image_embeds": rng.standard_normal((m, D)).astype(np.float32),
              "deepstack_embeds": rng.standard_normal((nds, m, D)).astype(np.float32),
              "image_token_index": np.arange(5, 5 + m)}
    positions = np.tile(np.arange(p), (3, 1, 1))
    padded = np.zeros((1, -(-p // cfg.prefill_query_blocks) * cfg.prefill_query_blocks), np.int64)
    padded[0, :p] = ids
    want = prefill.run(None, {"input_ids": padded, "position_ids": positions, **images})
    empty_prefix = {n: np.zeros((H, 0, Dh), np.float32) for n in layer_input_names(L) if n.startswith("prefix")}
    junk_suffix = {n: rng.standard_normal((H, 1, Cs, Dh)).astype(np.float32)
                   for n in layer_input_names(L) if n.startswith("suffix")}  # hidden: its values must not matter
    got = text.run(None, {"input_ids": ids, "position_ids": positions, **images,
                          "suffix_mask": np.full((1, Cs), -1e9, np.float32), **empty_prefix, **junk_suffix})
    np.testing.assert_allclose(got[0], want[0], atol=2e-5)
    for a, b in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(a[:, 0], b, atol=2e-5)  # (Hkv, 1, P, Dh) = the prefix cache
    b = 3
    kv = {f"prefix_{k}_{i}": np.ascontiguousarray(got[1 + j * L + i][:, 0]) for j, k in enumerate(("key", "value"))
          for i in range(L)}
    kv.update({n: rng.standard_normal((H, b, Cs, Dh)).astype(np.float32) for n in layer_input_names(L)
               if n.startswith("suffix")})
    step = {"input_ids": rng.integers(0, 4000, (b, 1)), "position_ids": np.full((3, b, 1), p + 2),
            "suffix_mask": np.where(np.arange(Cs) < 2, 0.0, -1e9).astype(np.float32)[None].repeat(b, 0), **kv}
    want = decode.run(None, step)
    got = text.run(None, {**step, "image_embeds": np.zeros((0, D), np.float32),
                          "deepstack_embeds": np.zeros((nds, 0, D), np.float32),
                          "image_token_index": np.zeros(0, np.int64)})
    np.testing.assert_allclose(got[0], want[0], atol=2e-5)
    for i in range(L):
        np.testing.assert_allclose(got[1 + i], want[1][i], atol=2e-5)  # new_key_i (Hkv, B, 1, Dh)
        np.testing.assert_allclose(got[1 + L + i], want[2][i], atol=2e-5)


def test_weights_are_stored_once_for_every_graph(tiny_model_dir: Path, tiny_onnx_dir: Path) -> None:
    from alpamayo_ros.runtime.export import WEIGHT_ALIGNMENT, WEIGHTS_FILE
    from alpamayo_ros.runtime.weights import checkpoint_layout

    manifest = read_manifest(tiny_onnx_dir)
    refs: dict[str, tuple[str, str, str]] = {}
    for name, entry in manifest["graphs"].items():
        graph = onnx.load(str(tiny_onnx_dir / entry["file"]), load_external_data=False).graph
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in init.external_data}
                assert info["location"] == WEIGHTS_FILE and int(info["offset"]) % WEIGHT_ALIGNMENT == 0
                ref = (info["location"], info["offset"], info["length"])
                assert refs.setdefault(init.name, ref) == ref, f"{init.name} stored twice ({name})"
    offsets = [int(o) for _, o, _ in refs.values()]
    assert len(set(offsets)) == len(offsets)  # one place per tensor
    stored = sum(int(n) for _, _, n in refs.values())
    checkpoint = (tiny_model_dir / "model.safetensors").stat().st_size
    assert stored <= checkpoint  # every tensor once (+ `.T` variants of Linear weights instead of the originals)
    shared = {n for n in refs if n.startswith("vlm.model.language_model.layers.0.")}
    for name in ("prefill", "decode", "text"):
        graph = onnx.load(str(tiny_onnx_dir / f"{name}.onnx"), load_external_data=False).graph
        assert shared <= {i.name for i in graph.initializer}, name  # the three text graphs share them
    # initializers are named by their checkpoint keys, + `.T` / `.reshape[...]` for a folded transpose / reshape
    assert {re.sub(r"(\.T|\.reshape\[[-0-9,]*\])+$", "", k) for k in refs} <= set(checkpoint_layout(tiny_model_dir))
    assert manifest["weights_bytes"] == (tiny_onnx_dir / WEIGHTS_FILE).stat().st_size


def test_bf16_export_is_for_tensorrt_and_refused_by_onnxruntime(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.export import export_onnx

    fp32 = export_onnx(tiny_model_dir, tmp_path / "fp32", graphs=("expert_step",))
    bf16 = export_onnx(tiny_model_dir, tmp_path / "bf16", graphs=("expert_step",), dtype="bfloat16")
    def data_bytes(root: Path) -> int:  # the tensors' bytes in weights.bin (the file adds 4 KiB page alignment)
        graph = onnx.load(str(root / "expert_step.onnx"), load_external_data=False).graph
        return sum(int(e.value) for i in graph.initializer for e in i.external_data if e.key == "length")

    assert bf16["dtype"] == "bfloat16" and 2 * data_bytes(tmp_path / "bf16") == data_bytes(tmp_path / "fp32") > 0
    assert bf16["weights_bytes"] < fp32["weights_bytes"]
    io = {t["name"]: t["dtype"] for t in bf16["graphs"]["expert_step"]["inputs"]}
    assert io["prefix_key_0"] == io["suffix_value_1"] == "bfloat16" and io["x"] == io["suffix_mask"] == "float32"
    graph = onnx.load(str(tmp_path / "bf16" / "expert_step.onnx"), load_external_data=False).graph
    assert {i.data_type for i in graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL} == {16}
    with pytest.raises(ValueError, match="lacks bf16/fp16 kernels.*--dtype float32"):
        create_backend("onnxruntime", tiny_model_dir, onnx_dir=tmp_path / "bf16")
