"""Model dimensions and runtime capacities, read from a model directory's config.json.

The released checkpoint's config.json names its VLM (`vlm_name_or_path`) instead of spelling out
the Qwen3-VL dims, so the Qwen3-VL-8B dims of spec §8 are the defaults here; a tiny model's
config.json carries explicit `vision_config` / `text_config` dicts that override them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from alpamayo_ros.core.model_config import TokenLayout, variant_from_config


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 27
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 4096
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 155697
    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    mrope_interleaved: bool = True
    hidden_act: str = "silu"
    attention_bias: bool = False


@dataclass(frozen=True)
class ActionInProjConfig:
    hidden_size: int = 512
    num_enc_layers: int = 2
    num_fourier_feats: int = 20
    max_freq: float = 100.0


PREFILL_QUERY_BLOCK = 512  # prefill queries per causal-attention block when the prompt fills the capacity
# Default capacities that differ from RuntimeConfig's (a config.json "runtime" section overrides them).
# Alpamayo 1.5's prompt is ~64 tokens longer (camera and frame text) plus the route span, and a guided
# tick's unguided suffix holds the prompt's tail after the route span (~26 tokens) before the reasoning.
VARIANT_CAPACITIES: dict[str, dict[str, int]] = {"alpamayo1_5": {"prefix_capacity": 3328, "suffix_capacity": 320}}


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything the runtime needs to build the model and size its buffers."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    expert: TextConfig = field(
        default_factory=lambda: TextConfig(hidden_size=2048, num_attention_heads=16, intermediate_size=8256)
    )
    action_in_proj: ActionInProjConfig = field(default_factory=ActionInProjConfig)
    n_waypoints: int = 64
    action_dim: int = 2
    image_grid_thw: tuple[int, int, int] = (1, 20, 36)
    layout: TokenLayout = field(default_factory=TokenLayout)  # token ids (spec §2.2), from core
    # buffer capacities (DESIGN.md §4.5)
    prefix_capacity: int = 3200
    suffix_capacity: int = 256
    max_candidates: int = 8
    config_hash: str = ""
    model_type: str = "alpamayo_r1"  # config.json model_type (core.model_config.VARIANTS)

    @property
    def guidance(self) -> bool:
        """The model takes a route instruction, so ticks may run navigation guidance (Alpamayo 1.5):
        the `extend` graph exists and the expert runs up to 2 × max_candidates rows."""
        from alpamayo_ros.core.model_config import VARIANTS

        return VARIANTS[self.model_type].route

    @property
    def max_expert_rows(self) -> int:
        """Rows of one expert_step call: K candidates, twice that with navigation guidance."""
        return self.max_candidates * (2 if self.guidance else 1)

    @property
    def patches_per_image(self) -> int:
        t, h, w = self.image_grid_thw
        return t * h * w

    @property
    def tokens_per_image(self) -> int:
        return self.patches_per_image // self.vision.spatial_merge_size**2

    @property
    def num_deepstack(self) -> int:
        return len(self.vision.deepstack_visual_indexes)

    @property
    def prefill_query_blocks(self) -> int:
        """Causal-attention query blocks of the prefill graph: ≤ PREFILL_QUERY_BLOCK queries each at capacity."""
        return max(1, -(-self.prefix_capacity // PREFILL_QUERY_BLOCK))

    @property
    def prefix_buffer_tokens(self) -> int:
        """Prefix KV slots: the capacity rounded up to whole query blocks (the prefill pads the prompt to them)."""
        n = self.prefill_query_blocks
        return -(-self.prefix_capacity // n) * n

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layout"] = {"base_vocab_size": self.layout.base_vocab_size, "traj_vocab_size": self.layout.traj_vocab_size}
        return data


def _dataclass_from(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "rope_parameters" and isinstance(value, dict):  # transformers-5 layout
            if "rope_theta" in value:
                kwargs["rope_theta"] = float(value["rope_theta"])
            if "mrope_section" in value:
                kwargs["mrope_section"] = tuple(value["mrope_section"])
            if "mrope_interleaved" in value:
                kwargs["mrope_interleaved"] = bool(value["mrope_interleaved"])
            continue
        if key not in known:
            continue  # released configs carry many keys the runtime does not need
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def config_hash(config_json: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config_json, sort_keys=True).encode()).hexdigest()[:16]


def load_config(model_dir: str | Path, **overrides: Any) -> RuntimeConfig:
    """Read `<model_dir>/config.json` into a RuntimeConfig (capacities may be overridden)."""
    from alpamayo_ros.core.model_config import load_model_dir_config

    return config_from_dict(load_model_dir_config(model_dir), **overrides)


def config_from_dict(raw: dict[str, Any], **overrides: Any) -> RuntimeConfig:
    vision = _dataclass_from(VisionConfig, raw.get("vision_config", {}), "config.json vision_config")
    text = _dataclass_from(TextConfig, raw.get("text_config", {}), "config.json text_config")
    text = _replace(text, vocab_size=TokenLayout.from_config(raw).vocab_size)  # embeddings/lm_head rows
    expert_overrides = {"hidden_size": 2048, "num_attention_heads": 16, "head_dim": 128, "intermediate_size": 8256}
    expert_overrides.update({k: v for k, v in raw.get("expert_cfg", {}).items() if k in expert_overrides})
    expert = _replace(text, **expert_overrides)  # deep copy of the text config + overrides (spec §5.3)
    aip = _dataclass_from(ActionInProjConfig, raw.get("action_in_proj_cfg", {}), "config.json action_in_proj_cfg")
    layout = TokenLayout.from_config(raw)
    kwargs: dict[str, Any] = dict(
        vision=vision,
        text=text,
        expert=expert,
        action_in_proj=aip,
        n_waypoints=int(raw.get("action_space_cfg", {}).get("n_waypoints", 64)),
        image_grid_thw=tuple(raw.get("image_grid_thw", (1, 20, 36))),
        layout=layout,
        config_hash=config_hash(raw),
    )
    variant = variant_from_config(raw)
    kwargs["model_type"] = variant.model_type
    kwargs.update(VARIANT_CAPACITIES.get(variant.model_type, {}))
    for name in ("prefix_capacity", "suffix_capacity", "max_candidates"):
        if name in raw.get("runtime", {}):
            kwargs[name] = int(raw["runtime"][name])
    kwargs.update(overrides)
    cfg = RuntimeConfig(**kwargs)
    _validate(cfg)
    return cfg


def _replace(obj: Any, **changes: Any) -> Any:
    data = copy.deepcopy(asdict(obj))
    data.update(changes)
    return type(obj)(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _validate(cfg: RuntimeConfig) -> None:
    t, e, v = cfg.text, cfg.expert, cfg.vision
    if e.num_hidden_layers != t.num_hidden_layers or e.num_key_value_heads != t.num_key_value_heads:
        raise ValueError("expert and text decoder must share layer count and KV heads (the expert reads the VLM cache)")
    for name, c in (("text", t), ("expert", e)):
        if c.num_attention_heads % c.num_key_value_heads:
            raise ValueError(
                f"{name} num_attention_heads={c.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={c.num_key_value_heads} (grouped-query attention)"
            )
    if e.head_dim != t.head_dim:
        raise ValueError(f"expert head_dim {e.head_dim} != text head_dim {t.head_dim}")
    if sum(t.mrope_section) * 2 != t.head_dim:
        raise ValueError(f"text mrope_section {t.mrope_section} must sum to head_dim/2 = {t.head_dim // 2}")
    if v.out_hidden_size != t.hidden_size:
        raise ValueError(f"vision out_hidden_size {v.out_hidden_size} != text hidden_size {t.hidden_size}")
    _, h, w = cfg.image_grid_thw
    if h % v.spatial_merge_size or w % v.spatial_merge_size:
        raise ValueError(f"image grid {cfg.image_grid_thw} not divisible by merge size {v.spatial_merge_size}")
