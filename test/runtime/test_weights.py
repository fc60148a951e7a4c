"""Checkpoint loading in the released key layout, and the errors for wrong checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from alpamayo_ros.runtime.config import load_config
from alpamayo_ros.runtime.weights import CheckpointError, load_model, read_state_dict, save_weights

RELEASED_PREFIXES = ("vlm.model.visual.", "vlm.model.language_model.", "vlm.lm_head.weight", "expert.",
                     "action_in_proj.", "action_out_proj.", "action_space.")


def test_tiny_checkpoint_uses_released_key_layout(tiny_model_dir: Path) -> None:
    state = read_state_dict(tiny_model_dir)
    assert all(k.startswith(RELEASED_PREFIXES) for k in state), [k for k in state if not k.startswith(RELEASED_PREFIXES)]
    aip = sorted(k[len("action_in_proj."):] for k in state if k.startswith("action_in_proj."))
    assert aip == sorted([
        "sinus.0.freqs", "sinus.1.freqs", "timestep_fourier_encoder.freqs",
        "encoder.trunk.0.weight", "encoder.trunk.0.bias", "encoder.trunk.3.weight", "encoder.trunk.3.bias",
        "encoder.trunk.6.weight", "encoder.trunk.6.bias", "encoder.trunk.2.weight", "encoder.trunk.5.weight",
        "norm.weight", "norm.bias",
    ])
    n_layers = load_config(tiny_model_dir).expert.num_hidden_layers
    expert_keys = [k for k in state if k.startswith("expert.")]
    assert len(expert_keys) == n_layers * 11 + 1  # spec §8: 11 tensors per layer + final norm
    assert "expert.embed_tokens.weight" not in state
    # spec §8: 416 non-VLM tensors for 36 layers = 36·11 + 1 + 13 + 2 + 4
    non_vlm = [k for k in state if not k.startswith("vlm.")]
    assert len(non_vlm) == n_layers * 11 + 1 + 13 + 2 + 4


FREQ_KEYS = ("action_in_proj.sinus.0.freqs", "action_in_proj.sinus.1.freqs",
             "action_in_proj.timestep_fourier_encoder.freqs")
# spec §8: the released freqs as the bf16 buffers hold them
BF16_FREQS = [1, 1.671875, 2.78125, 4.65625, 7.75, 12.9375, 21.5, 36, 60, 100]


def test_fourier_freqs_have_the_released_shape_and_both_layouts_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = read_state_dict(tiny_model_dir)
    for key in FREQ_KEYS:
        assert tuple(state[key].shape) == (1, 10), key  # released layout [1, n]
        assert state[key].flatten().tolist() == BF16_FREQS
    assert tuple(load_model(tiny_model_dir).state_dict()[FREQ_KEYS[0]].shape) == (1, 10)
    # An older checkpoint with flat [n] freqs loads to the same model.
    flat = _write(tmp_path / "flat", tiny_model_dir, {k: v.flatten() if k in FREQ_KEYS else v for k, v in state.items()})
    a, b = load_model(tiny_model_dir).state_dict(), load_model(flat).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_checkpoint_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_model(tiny_model_dir)
    out = tmp_path / "sharded"
    shutil.copy(tiny_model_dir / "config.json", out.mkdir() or out / "config.json")
    paths = save_weights(model, out, max_shard_bytes=1_000_000)
    assert len(paths) > 1 and (out / "model.safetensors.index.json").is_file()
    again = load_model(out)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


def _write(tmp: Path, tiny_model_dir: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    tmp.mkdir(exist_ok=True)
    shutil.copy(tiny_model_dir / "config.json", tmp / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    return tmp


def test_error_names_missing_unexpected_and_mismatched_keys(tiny_model_dir: Path, tmp_path: Path) -> None:
    state = read_state_dict(tiny_model_dir)
    del state["expert.norm.weight"]
    state["expert.bogus.weight"] = torch.zeros(3)
    state["action_out_proj.weight"] = torch.zeros(5, 7)
    bad = _write(tmp_path / "bad", tiny_model_dir, state)
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    msg = str(err.value)
    assert "missing keys (1): expert.norm.weight" in msg
    assert "unexpected keys (1): expert.bogus.weight" in msg
    assert "action_out_proj.weight: checkpoint (5, 7) vs model (2, 48)" in msg
    assert "Fix:" in msg


def test_error_when_config_dims_disagree(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dims"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("onnx"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["expert_cfg"]["intermediate_size"] = 80
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"expert\.layers\.0\.mlp\.gate_proj\.weight: checkpoint \(96, 48\) vs model \(80, 48\)"):
        load_model(out)


def test_missing_weights_and_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(tmp_path)


def test_released_default_dims_are_qwen3_vl_8b() -> None:
    from alpamayo_ros.runtime.config import config_from_dict

    cfg = config_from_dict({"vlm_name_or_path": "Qwen/Qwen3-VL-8B-Instruct", "traj_vocab_size": 4000})
    assert (cfg.text.hidden_size, cfg.text.num_hidden_layers, cfg.text.num_attention_heads) == (4096, 36, 32)
    assert (cfg.text.num_key_value_heads, cfg.text.head_dim, cfg.text.vocab_size) == (8, 128, 155697)
    assert (cfg.expert.hidden_size, cfg.expert.intermediate_size, cfg.expert.num_attention_heads) == (2048, 8256, 16)
    assert (cfg.vision.depth, cfg.vision.hidden_size, cfg.vision.deepstack_visual_indexes) == (27, 1152, (8, 16, 24))
    assert cfg.tokens_per_image == 180
