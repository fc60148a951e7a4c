"""Action de-normalisation constants: from the checkpoint's action_space buffers (as the reference),
recorded at export for directories without weights, config.json bf16-rounded otherwise (spec §6.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alpamayo_ros.core.action_space import ActionSpaceConfig, Normalization, bf16_round
from alpamayo_ros.core.planner import PlannerConfig, build_planner
from alpamayo_ros.runtime import create_backend
from alpamayo_ros.runtime.weights import (
    checkpoint_normalization,
    load_model,
    read_small_tensors,
    read_state_dict,
    resolve_normalization,
)

# spec §6.1: the released constants as the bf16 buffers hold them
RELEASED_BF16 = (0.029052734375, 0.6796875, 0.0002689361572265625, 0.026123046875)
NOMINAL = (0.02902694707164455, 0.6810426736454882, 0.0002692167976330542, 0.026148280660833106)


def _values(n: Normalization) -> tuple[float, ...]:
    return tuple(n.values().values())


def _model_copy(src: Path, dst: Path, state: dict[str, torch.Tensor] | None) -> Path:
    """config + tokenizer of the tiny model, with `state` as its weights (None: no weights at all)."""
    from safetensors.torch import save_file

    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "token_layout.json"):
        shutil.copy(src / name, dst / name)
    if state is not None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
    return dst


def test_safetensors_reader_widens_bf16_f16_f32_without_torch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"a": torch.tensor(0.6810426736454882, dtype=torch.bfloat16), "b": torch.tensor([[1.5, -2.25]]).half(),
               "c": torch.tensor([3.0, 4.0]), "d": torch.tensor(7.0, dtype=torch.float64)}
    (tmp_path / "config.json").write_text("{}")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    got = read_small_tensors(tmp_path, ["a", "b", "c", "d", "missing"])
    assert set(got) == {"a", "b", "c", "d"}
    for k, t in tensors.items():
        assert got[k].shape == tuple(t.shape) and np.array_equal(got[k], t.double().numpy()), k
    assert float(got["a"]) == 0.6796875 == bf16_round(0.6810426736454882)


def test_the_tiny_checkpoint_holds_the_released_bf16_constants(tiny_model_dir: Path) -> None:
    held = checkpoint_normalization(tiny_model_dir)
    assert held is not None and held.source == "checkpoint" and _values(held) == RELEASED_BF16
    assert _values(ActionSpaceConfig().bf16_rounded().normalization("config_bf16")) == RELEASED_BF16


def test_every_backend_and_the_planner_use_the_checkpoint_by_default(tiny_model_dir: Path, torch_backend,
                                                                    ort_backend) -> None:
    kinematic = create_backend("kinematic", tiny_model_dir)
    for backend in (torch_backend, ort_backend, kinematic):
        assert backend.identity.normalization == Normalization(*RELEASED_BF16, source="checkpoint")
    planner = build_planner(ort_backend, tiny_model_dir, PlannerConfig())
    assert planner.normalization.source == "checkpoint"
    a = planner.action_space
    assert (a.accel_mean, a.accel_std, a.curvature_mean, a.curvature_std) == RELEASED_BF16
    assert planner.normalization.describe().startswith("checkpoint: accel 0.0290527344 ± 0.6796875 m/s²")
    # explicit overrides
    nominal = build_planner(ort_backend, tiny_model_dir, PlannerConfig(normalization_constants="config"))
    assert nominal.normalization.source == "config" and _values(nominal.normalization) == NOMINAL
    rounded = build_planner(ort_backend, tiny_model_dir, PlannerConfig(normalization_constants="config_bf16"))
    assert rounded.normalization.source == "config_bf16" and _values(rounded.normalization) == RELEASED_BF16


def test_the_weights_decide_not_config_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A checkpoint whose buffers differ from config.json: the buffers win, as in the reference."""
    state = read_state_dict(tiny_model_dir)
    state["action_space.accel_std"] = torch.tensor(0.5, dtype=torch.bfloat16)
    state["action_space.curvature_mean"] = torch.tensor(0.001, dtype=torch.bfloat16)
    model_dir = _model_copy(tiny_model_dir, tmp_path / "m", state)
    expected = (RELEASED_BF16[0], 0.5, bf16_round(0.001), RELEASED_BF16[3])
    backend = create_backend("torch", model_dir)
    try:
        assert _values(backend.identity.normalization) == expected
        assert float(backend.orchestrator.executor.model.action_space.accel_std) == 0.5
        planner = build_planner(backend, model_dir, PlannerConfig())
        assert (planner.action_space.accel_std, planner.action_space.curvature_mean) == expected[1:3]
    finally:
        backend.close()
    assert _values(create_backend("kinematic", model_dir).identity.normalization) == expected


def test_weights_without_the_buffers_rebuild_them_from_config_bf16(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Alpamayo 1.5 does not store the action_space and Fourier buffers: config.json, bf16-rounded."""
    state = {k: v for k, v in read_state_dict(tiny_model_dir).items()
             if not k.startswith("action_space.") and not k.endswith(".freqs")}
    model_dir = _model_copy(tiny_model_dir, tmp_path / "m15", state)
    assert checkpoint_normalization(model_dir) is None
    assert resolve_normalization(model_dir) == Normalization(*RELEASED_BF16, source="config_bf16")
    model, reference = load_model(model_dir), load_model(tiny_model_dir)
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k  # the tiny model stores exactly those rounded values
    backend = create_backend("torch", model_dir)
    try:
        assert backend.identity.normalization.source == "config_bf16"
    finally:
        backend.close()


def test_export_records_the_constants_and_an_onnx_only_directory_uses_them(tiny_model_dir: Path,
                                                                          tiny_onnx_dir: Path,
                                                                          tmp_path: Path) -> None:
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    assert manifest["normalization"] == dict(zip(("accel_mean", "accel_std", "curvature_mean", "curvature_std"),
                                                 RELEASED_BF16, strict=True)) | {"source": "checkpoint"}
    vehicle = _model_copy(tiny_model_dir, tmp_path / "vehicle", None)  # no weights: ONNX only
    shutil.copytree(tiny_onnx_dir, vehicle / "onnx")
    backend = create_backend("onnxruntime", vehicle)
    try:
        got = backend.identity.normalization
        assert got == Normalization(*RELEASED_BF16, source="checkpoint", recorded_in=str(vehicle / "onnx" / "manifest.json"))
        assert "(recorded in " in build_planner(backend, vehicle, PlannerConfig()).normalization.describe()
    finally:
        backend.close()
    # An export made before the constants were recorded: config.json, bf16-rounded.
    del manifest["normalization"]
    (vehicle / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    backend = create_backend("onnxruntime", vehicle)
    try:
        assert backend.identity.normalization == Normalization(*RELEASED_BF16, source="config_bf16")
    finally:
        backend.close()


def test_engine_manifest_carries_the_recorded_constants(tmp_path: Path) -> None:
    from alpamayo_ros.runtime.tensorrt.manifest import EngineManifest, load_engine_manifest

    record = Normalization(*RELEASED_BF16, source="checkpoint").to_record()
    EngineManifest("tensorrt", "10.13", "h", "fp16", False, 8, 4, 2, {}, {}, normalization=record).write(tmp_path)
    loaded = load_engine_manifest(tmp_path)
    assert loaded.recorded_normalization(tmp_path) == Normalization(
        *RELEASED_BF16, source="checkpoint", recorded_in=str(tmp_path / "manifest.json"))
    EngineManifest("tensorrt", "10.13", "h", "fp16", False, 8, 4, 2, {}, {}).write(tmp_path)  # an older build
    assert load_engine_manifest(tmp_path).recorded_normalization(tmp_path) is None
    with pytest.raises(ValueError, match="lacks"):
        Normalization.from_record({"accel_mean": 0.0}, "x")
