"""The exported ONNX graph family parses and builds with the TensorRT ONNX parser and builder.

TensorRT itself cannot be installed on a CPU machine; TensorRT-RTX (PyPI wheels) shares its ONNX
parser and network builder and builds with no GPU, so it stands in for "does TensorRT accept every
op and shape of these graphs". The graphs are the tiny model's, exported with the runtime's own
`export_onnx`; the builder is the production one with `tensorrt_module="tensorrt_rtx_bindings"`.
RTX networks are strongly typed only, hence fp32 (the ONNX dtype). This check found the deepstack
`ScatterND(reduction="add")` that TensorRT's parser rejects (fixed in runtime/graphs.py, beee02a).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpamayo_ros.runtime.tensorrt.builder import BuildOptions, EngineBuildError, build_engines, build_graph
from alpamayo_ros.runtime.tensorrt.manifest import (
    CORE_GRAPHS,
    GRAPH_NAMES,
    ManifestError,
    check_engine_manifest,
    default_dim_ranges,
    load_engine_manifest,
    load_onnx_manifest,
)
from alpamayo_ros.runtime.tensorrt.trt_module import RTX_MODULE

trt_rtx = pytest.importorskip(RTX_MODULE, reason="requirements/dev.txt installs tensorrt-rtx-cu12-bindings")
RTX = BuildOptions(precision="fp32", tensorrt_module=RTX_MODULE)


@pytest.fixture(scope="module")
def onnx_dir(tiny_onnx_dir: Path) -> Path:
    """The tiny model's graphs, exported once per session by test/runtime/conftest.py (runtime.export)."""
    return tiny_onnx_dir


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["extend", "expert_step"])
def test_navigation_guidance_graphs_build_with_2k_expert_rows(tiny_1_5_onnx_dir: Path, tmp_path: Path,
                                                              graph: str) -> None:
    """Alpamayo 1.5's export: `extend` (a 3-D causal mask) and expert_step over up to 2 × max_batch rows."""
    manifest = load_onnx_manifest(tiny_1_5_onnx_dir)
    assert graph in manifest.graphs and manifest.navigation_guidance
    entry, _ = build_graph(manifest.graphs[graph], tiny_1_5_onnx_dir, tmp_path, default_dim_ranges(manifest), RTX, b"")
    assert (tmp_path / entry.file).stat().st_size == entry.bytes > 0
    tensors = {t.name: t for t in entry.tensors}
    if graph == "expert_step":
        assert tensors["row_mix"].profile["max"] == [2 * manifest.max_batch] * 2
        assert tensors["prefix_mask"].profile["max"] == [2 * manifest.max_batch, manifest.prefix_capacity]
    else:
        assert tensors["own_mask"].profile["max"] == [manifest.max_batch] + [manifest.suffix_capacity] * 2


@pytest.mark.slow
@pytest.mark.parametrize("graph", CORE_GRAPHS)
def test_graph_parses_and_builds_with_tensorrt_parser(onnx_dir: Path, tmp_path: Path, graph: str) -> None:
    manifest = load_onnx_manifest(onnx_dir)
    # a parse or build failure raises EngineBuildError with the parser's node/op message
    entry, _ = build_graph(manifest.graphs[graph], onnx_dir, tmp_path, default_dim_ranges(manifest), RTX, b"")
    engine = tmp_path / entry.file
    assert engine.stat().st_size == entry.bytes > 0
    decl = manifest.graphs[graph]
    assert {t.name for t in entry.tensors if t.is_input} == {t.name for t in decl.inputs}
    assert {t.name for t in entry.tensors if not t.is_input} == {t.name for t in decl.outputs}
    # every dynamic input got the manifest's named range; static inputs got none
    for tensor in entry.tensors:
        named = [d for d in tensor.shape if isinstance(d, str)]
        assert (tensor.profile is not None) == (tensor.is_input and bool(named)), tensor
    if graph == "text":  # the merged engine: one network, an optimization profile per phase
        assert entry.profiles == ["prefill", "decode"]
        ids = next(t for t in entry.tensors if t.name == "input_ids")
        assert ids.phase_profiles == {"prefill": {"min": [1, 1], "opt": [1, manifest.prefix_capacity],
                                                  "max": [1, manifest.prefix_capacity]},
                                      "decode": {"min": [1, 1], "opt": [manifest.max_batch, 1],
                                                 "max": [manifest.max_batch, 1]}}
        prefix = next(t for t in entry.tensors if t.name == "prefix_key_0")
        assert prefix.phase_profiles is not None and prefix.phase_profiles["prefill"]["max"][1] == 0  # empty
    if graph == "decode":
        ids = next(t for t in entry.tensors if t.name == "input_ids")
        assert ids.profile == {"min": [1, 1], "opt": [manifest.max_batch, 1], "max": [manifest.max_batch, 1]}
        assert ids.dtype == "INT64"


@pytest.mark.slow
def test_build_engines_manifest_binds_version_and_config(onnx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "engines"
    options = BuildOptions(precision="fp32", tensorrt_module=RTX_MODULE, graphs=("vision", "expert_step"))
    manifest = build_engines(onnx_dir, out, options)
    onnx_manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert manifest.tensorrt_version == trt_rtx.__version__
    assert manifest.config_hash == onnx_manifest["config_hash"]
    assert manifest.normalization == onnx_manifest["normalization"]  # engines without weights keep the constants
    assert (manifest.model_type, manifest.navigation_guidance) == ("alpamayo_r1", False)  # the variant, recorded
    assert not (out / "timing.cache").exists()  # timing caches are no-ops in TensorRT-RTX, so none is written

    loaded = load_engine_manifest(out)
    assert loaded.engines["vision"].sha256 == manifest.engines["vision"].sha256
    ok = dict(
        tensorrt_version=trt_rtx.__version__,
        config_hash=manifest.config_hash,
        required_graphs=("vision", "expert_step"),
    )
    check_engine_manifest(loaded, out, verify_checksums=True, **ok)

    with pytest.raises(
        ManifestError, match=r"built with TensorRT 1\.7\.1\.116 .*runs TensorRT 10\.13\.0\.35"
    ):
        check_engine_manifest(loaded, out, **{**ok, "tensorrt_version": "10.13.0.35"})
    with pytest.raises(ManifestError, match="belong to model config"):
        check_engine_manifest(loaded, out, **{**ok, "config_hash": "0" * 16})
    with pytest.raises(ManifestError, match="no engine for graph 'decode'"):
        check_engine_manifest(loaded, out, **{**ok, "required_graphs": GRAPH_NAMES})
    engine = out / loaded.engines["vision"].file
    engine.write_bytes(engine.read_bytes()[:-1])
    with pytest.raises(ManifestError, match="truncated"):
        check_engine_manifest(loaded, out, **ok)


@pytest.mark.slow
def test_reduced_precision_on_strongly_typed_tensorrt_is_a_clear_error(
    onnx_dir: Path, tmp_path: Path
) -> None:
    options = BuildOptions(precision="fp16", tensorrt_module=RTX_MODULE, graphs=("expert_step",))
    with pytest.raises(EngineBuildError, match="strongly typed networks only.*graphs are fp32"):
        build_engines(onnx_dir, tmp_path, options)


@pytest.mark.slow
def test_mismatched_model_config_is_refused(onnx_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "other_model"
    model_dir.mkdir()
    config = json.loads((onnx_dir.parent / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ManifestError, match="re-export the ONNX from this model directory"):
        build_engines(onnx_dir, tmp_path / "engines", RTX, model_dir=model_dir)


@pytest.mark.slow
def test_bf16_text_graph_builds_as_one_engine_with_two_profiles(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The deployment build: graphs exported in the checkpoint's bf16, strongly typed, the merged text engine."""
    from alpamayo_ros.runtime.export import export_onnx

    export_onnx(tiny_model_dir, tmp_path / "onnx", graphs=("text",), dtype="bfloat16")
    options = BuildOptions(precision="bf16", tensorrt_module=RTX_MODULE, graphs=("text",))
    manifest = build_engines(tmp_path / "onnx", tmp_path / "engines", options)
    entry = manifest.engines["text"]
    assert manifest.text_engines == "merged" and entry.precision == "bf16" and entry.strongly_typed
    assert entry.profiles == ["prefill", "decode"]
    kv = next(t for t in entry.tensors if t.name == "new_key_0")
    assert kv.dtype == "BF16" and next(t for t in entry.tensors if t.name == "logits").dtype == "FLOAT"


@pytest.mark.slow
def test_bf16_extend_graph_of_alpamayo_1_5_builds(tiny_1_5_model_dir: Path, tmp_path: Path) -> None:
    """Navigation guidance in the deployment build: 1.5's `extend` exported without weights in bf16 (its weights in
    the shared weights.bin) builds strongly typed, its K/V in bf16, next to the merged text engine's graphs."""
    from alpamayo_ros.runtime.export import export_onnx

    onnx = export_onnx(tiny_1_5_model_dir, tmp_path / "onnx", graphs=("extend",), dtype="bfloat16")
    assert (onnx["model_type"], onnx["navigation_guidance"], onnx["dtype"]) == ("alpamayo1_5", True, "bfloat16")
    options = BuildOptions(precision="bf16", tensorrt_module=RTX_MODULE, graphs=("extend",))
    manifest = build_engines(tmp_path / "onnx", tmp_path / "engines", options)
    entry = manifest.engines["extend"]
    assert manifest.navigation_guidance and entry.precision == "bf16" and entry.strongly_typed
    assert {t.name: t.dtype for t in entry.tensors if t.name in ("new_key", "prefix_key_0", "own_mask")} == {
        "new_key": "BF16", "prefix_key_0": "BF16", "own_mask": "FLOAT"}
