"""A tiny Alpamayo-R1 or Alpamayo 1.5 of the same architecture, made deterministically from a seed.

Same file layout as the released model directory (config.json, model.safetensors, tokenizer.json),
same key layout, a synthetic byte-level tokenizer with the full Alpamayo extension (4000 `<i*>` +
28 specials, so the id-layout logic is exercised), and a vision tower that takes the real
320×576 grid (1, 20, 36) -> 180 tokens per image.

Random weights, with three deliberate choices so that demos behave sanely:
* the action output projection is initialized small, so actions stay near the normalized mean;
* hidden channel 0 of the text residual stream carries a constant (embedding column 0 = const,
  nothing writes to it), so lm_head column 0 acts as a per-token bias;
* that bias favours `<|cot_end|>` and `<|traj_future_start|>` a little, so sampled reasoning ends
  after tens of tokens rather than always at max_generation_length.

`--variant alpamayo1_5` makes the Alpamayo 1.5 layout: config.json `model_type: alpamayo1_5` with
`include_camera_ids` / `include_frame_nums`, the 1.5 special-token names (`<|_padding_k|>`), no
action_space / Fourier buffers in the weights (1.5 rebuilds them from config.json), a prefix capacity
for its longer prompt (camera and frame text, a route instruction), and `<|answer_end|>` favoured too so
that answers to questions end.

CLI: `python -m alpamayo_ros.runtime.tiny_model OUT_DIR [--seed N] [--variant alpamayo1_5]` (also
`alpamayo-ros make-tiny-model`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TINY_SEED = 0
RESOURCE_DIR = Path(__file__).resolve().parent.parent / "resources" / "tiny_model"


def default_tiny_model_dir() -> Path:
    """The tiny model committed with the package (regenerate: `python -m alpamayo_ros.runtime.tiny_model --resource`)."""
    if not (RESOURCE_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"{RESOURCE_DIR} has no tiny model; make one with `python -m alpamayo_ros.runtime.tiny_model {RESOURCE_DIR}`"
        )
    return RESOURCE_DIR

TINY_VISION: dict[str, Any] = dict(
    depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
    temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=64,
    deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh",
)  # fmt: skip
TINY_TEXT: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
    "mrope_section": [4, 2, 2], "mrope_interleaved": True},
)  # fmt: skip
TINY_EXPERT = dict(hidden_size=48, num_attention_heads=4, head_dim=16, intermediate_size=96)
TINY_ACTION_IN_PROJ = dict(hidden_size=32, num_enc_layers=2, num_fourier_feats=20, max_freq=100)
# Biases (≈ logit units: channel 0 is ≈1 after the final norm) that the constant channel gives tokens.
END_BIASES = {"cot_end": 1.0, "traj_future_start": 1.6}
END_BIASES_1_5 = {**END_BIASES, "answer_end": 1.6}
VARIANTS = ("alpamayo_r1", "alpamayo1_5")
# The tiny tokenizer is byte level: "Front left camera: frame 0 " costs 27 tokens where Qwen's costs ~7, so
# the 1.5 prompt (3362 tokens with 4 cameras) plus a 200-character route needs more prefix room, and a
# guided tick's unguided suffix starts with the prompt's tail after the route span (111 bytes).
CAPACITIES_1_5 = {"prefix_capacity": 3584, "suffix_capacity": 384}
TEXT_BIAS, TEXT_CHARS = 1.2, "etaoinshrdlucmwfgypb "

# spec §6.1 released values (bf16-rounded in AR1's persistent buffers)
ACTION_SPACE_CFG = dict(
    accel_mean=0.02902694707164455, accel_std=0.6810426736454882,
    curvature_mean=0.0002692167976330542, curvature_std=0.026148280660833106,
    accel_bounds=[-9.8, 9.8], curvature_bounds=[-0.33, 0.33], dt=0.1, n_waypoints=64,
)  # fmt: skip


def tiny_config_dict(layout_dict: dict[str, int], **overrides: Any) -> dict[str, Any]:
    """config.json of the tiny model (released keys + explicit vision/text dims)."""
    cfg: dict[str, Any] = {
        "model_type": "alpamayo_r1",
        "architectures": ["AlpamayoR1"],
        "vlm_name_or_path": "tiny-random-qwen3-vl (alpamayo_ros)",
        "traj_vocab_size": layout_dict["traj_vocab_size"],
        "traj_token_start_idx": layout_dict["traj_token_start_idx"],
        "vocab_size": layout_dict["vocab_size"],
        "image_token_id": layout_dict["image_pad_id"],
        "vision_start_token_id": layout_dict["vision_start_id"],
        "vision_end_token_id": layout_dict["vision_end_id"],
        "im_start_token_id": layout_dict["im_start_id"],
        "im_end_token_id": layout_dict["im_end_id"],
        "pad_token_id": layout_dict["pad_id"],
        "tokens_per_history_traj": 48,
        "tokens_per_future_traj": 128,
        "min_pixels": 163840,
        "max_pixels": 196608,
        "hist_traj_tokenizer_cfg": {"ego_xyz_min": [-4, -4, -10], "ego_xyz_max": [4, 4, 10], "num_bins": 1000},
        "traj_tokenizer_cfg": {"dims_min": [-10, -10], "dims_max": [10, 10], "num_bins": 3000},
        "action_space_cfg": dict(ACTION_SPACE_CFG),
        "action_in_proj_cfg": dict(TINY_ACTION_IN_PROJ),
        "expert_cfg": dict(TINY_EXPERT),
        "diffusion_cfg": {"int_method": "euler", "num_inference_steps": 10},
        "expert_non_causal_attention": True,
        "vision_config": dict(TINY_VISION),
        "text_config": dict(TINY_TEXT),
        "image_grid_thw": [1, 20, 36],
        "runtime": {"prefix_capacity": 3328, "suffix_capacity": 256, "max_candidates": 8},
        "tiny_model": True,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def _init_weights(model: Any, seed: int, layout: Any, text_ids: list[int], end_biases: dict[str, float]) -> None:
    import torch

    from alpamayo_ros.core.action_space import bf16_round

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1 and name.endswith("weight"):  # RMSNorm / LayerNorm gains
                p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
        text = model.vlm.model.language_model
        text.embed_tokens.weight.normal_(0.0, 1.0, generator=gen)
        # constant channel 0: embeddings carry it, no layer writes to it
        text.embed_tokens.weight[:, 0] = 4.0
        for layer in text.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        lm = model.vlm.lm_head.weight
        lm[:, 0] = 0.0
        lm[torch.as_tensor(text_ids), 0] = TEXT_BIAS  # readable-ish reasoning
        for key, bias in end_biases.items():
            lm[layout.special_id(key), 0] = bias
        model.action_out_proj.weight.mul_(0.05)
        model.action_out_proj.bias.zero_()
        for enc in (*model.action_in_proj.sinus, model.action_in_proj.timestep_fourier_encoder):
            enc.freqs.copy_(torch.tensor([bf16_round(float(f)) for f in enc.freqs.reshape(-1)]).reshape(enc.freqs.shape))
        for name in ("accel_mean", "accel_std", "curvature_mean", "curvature_std"):
            getattr(model.action_space, name).fill_(bf16_round(ACTION_SPACE_CFG[name]))


def tiny_1_5_overrides() -> dict[str, Any]:
    """config.json keys of the tiny Alpamayo 1.5 over the R1 ones."""
    return {"model_type": "alpamayo1_5", "architectures": ["Alpamayo1_5"], "include_camera_ids": True,
            "include_frame_nums": True, "runtime": dict(CAPACITIES_1_5)}


def make_tiny_model(out_dir: str | Path, seed: int = TINY_SEED, variant: str = "alpamayo_r1",
                    **config_overrides: Any) -> Path:
    """Write a tiny model directory (config.json, model.safetensors, tokenizer.json) and return it."""
    import torch

    from alpamayo_ros.core.model_config import VARIANTS as MODEL_VARIANTS
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer, layout_to_dict
    from alpamayo_ros.runtime.config import config_from_dict
    from alpamayo_ros.runtime.modeling.model import AlpamayoR1
    from alpamayo_ros.runtime.weights import ACTION_SPACE_KEYS, FOURIER_FREQ_KEYS, save_weights

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} must be one of {VARIANTS}")
    is_1_5 = variant == "alpamayo1_5"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = AlpamayoTokenizer.synthetic(special_keys=MODEL_VARIANTS[variant].special_token_keys)
    layout = layout_to_dict(tok.layout)
    overrides = tiny_1_5_overrides() if is_1_5 else {}
    for key, value in config_overrides.items():
        both_dicts = isinstance(value, dict) and isinstance(overrides.get(key), dict)
        overrides[key] = {**overrides[key], **value} if both_dicts else value
    raw = tiny_config_dict(layout, **overrides)
    cfg = config_from_dict(raw)
    torch.manual_seed(seed)
    model = AlpamayoR1(cfg)
    _init_weights(model, seed, tok.layout, sorted(set(tok.encode(TEXT_CHARS).tolist())),
                  END_BIASES_1_5 if is_1_5 else END_BIASES)
    # Alpamayo 1.5's action_space and Fourier buffers are non-persistent: not in its checkpoint.
    skip = ACTION_SPACE_KEYS + FOURIER_FREQ_KEYS if is_1_5 else ()
    save_weights(model, out, skip=skip)
    tok.tok.save(str(out / "tokenizer.json"))
    (out / "token_layout.json").write_text(json.dumps(layout, indent=1) + "\n")
    (out / "config.json").write_text(json.dumps(raw, indent=1) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make-tiny-model", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=None, help="model directory to write (default with --resource)")
    ap.add_argument("--resource", action="store_true", help=f"write the committed copy ({RESOURCE_DIR})")
    ap.add_argument("--seed", type=int, default=TINY_SEED)
    ap.add_argument("--variant", default="alpamayo_r1", choices=VARIANTS,
                    help="the model it stands in for (config.json model_type)")
    ap.add_argument("--export-onnx", action="store_true", help="also export the ONNX graph family to OUT_DIR/onnx")
    args = ap.parse_args(argv)
    if args.out_dir is None and not args.resource:
        ap.error("give OUT_DIR or --resource")
    if args.resource and args.variant != "alpamayo_r1":
        ap.error("the committed tiny model (--resource) is the Alpamayo-R1 one")
    path = make_tiny_model(RESOURCE_DIR if args.resource else args.out_dir, args.seed, args.variant)
    print(f"wrote tiny model to {path}")
    if args.export_onnx:
        from alpamayo_ros.runtime.export import export_onnx

        manifest = export_onnx(path)
        print(f"wrote {len(manifest['graphs'])} ONNX graphs to {path / 'onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
