"""Model-input configuration read from a model directory's ``config.json``.

The released Alpamayo-R1 ``config.json`` (spec §8) carries the trajectory vocabulary, the pixel band
of the image processor and the history/future token counts; a tiny test model uses the same keys.
Every field defaults to the spec's value, so ``from_config({})`` is the reference AR1 setting.

Token ids are never constants here: ``TokenLayout`` derives the Alpamayo ids from the base vocabulary
size (spec §2.2: ``<i0>`` = base size, the 28 new special tokens follow ``<i3999>`` in list order) and
the Qwen ids (``<|image_pad|>`` …) from the base tokenizer or the VLM config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Spec §2.2: the 29 SPECIAL_TOKENS_KEYS in list order, each added as "<|key|>". "image_pad" exists in the
# base Qwen vocabulary, so adding it is a no-op and the other 28 get consecutive new ids.
SPECIAL_TOKEN_KEYS: tuple[str, ...] = (
    "prompt_start", "prompt_end",
    "image_start", "image_pre_tkn", "image_end",
    "traj_history_start", "traj_history_pre_tkn", "traj_history_end",
    "cot_start", "cot_end",
    "meta_action_start", "meta_action_end",
    "traj_future_start", "traj_future_pre_tkn", "traj_future_end",
    "traj_history", "traj_future",
    "vectorized_wm", "vectorized_wm_start", "vectorized_wm_end", "vectorized_wm_pre_tkn",
    "route_start", "route_pad", "route_end",
    "question_start", "question_end",
    "answer_start", "answer_end",
    "image_pad",
)  # fmt: skip
# Alpamayo 1.5 renamed the keys it does not use to "_padding_<n>" (same slots, so the same ids).
_RENAMED_1_5 = {"image_pre_tkn": "_padding_0", "traj_history_pre_tkn": "_padding_1", "meta_action_start": "_padding_2",
                "meta_action_end": "_padding_3", "traj_future_pre_tkn": "_padding_4", "vectorized_wm": "_padding_5",
                "vectorized_wm_start": "_padding_6", "vectorized_wm_end": "_padding_7",
                "vectorized_wm_pre_tkn": "_padding_8"}
SPECIAL_TOKEN_KEYS_1_5: tuple[str, ...] = tuple(_RENAMED_1_5.get(k, k) for k in SPECIAL_TOKEN_KEYS)


@dataclass(frozen=True)
class ModelVariant:
    """What differs between the Alpamayo models this package runs; chosen by config.json ``model_type``.

    Everything after the prompt (history tokens, stop rule, expert, action space) is shared.
    """

    model_type: str  # config.json "model_type"
    display_name: str
    special_token_keys: tuple[str, ...]
    camera_text: bool  # "<name>: " before each camera's first image (1.5: config include_camera_ids)
    frame_text: bool  # "frame <k> " before every image (1.5: config include_frame_nums)
    route: bool  # <|route_start|>…<|route_end|> navigation text, navigation guidance
    questions: bool  # the VQA prompt (<|question_start|>…, assistant prefix <|answer_start|>)
    camera_counts: tuple[int, ...]  # how many cameras the model takes
    default_cameras: tuple[int, ...] = (0, 1, 2, 6)

    def check_cameras(self, camera_ids: tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """The camera set in model order (ascending index), or ValueError saying what the model takes."""
        cams = tuple(sorted(int(c) for c in camera_ids))
        if len(set(cams)) != len(cams) or not cams:
            raise ValueError(f"camera ids {list(camera_ids)} must be distinct and non-empty")
        if any(not 0 <= c <= 6 for c in cams):
            raise ValueError(f"camera ids {list(cams)} must be Alpamayo camera indices 0..6 (spec §1.1)")
        if len(cams) not in self.camera_counts:
            raise ValueError(f"{self.display_name} takes {' or '.join(map(str, self.camera_counts))} cameras, "
                             f"got {len(cams)} ({list(cams)})")
        if len(self.camera_counts) == 1 and cams != self.default_cameras:
            raise ValueError(f"{self.display_name} was trained on cameras {list(self.default_cameras)} only, "
                             f"got {list(cams)}")
        return cams


ALPAMAYO_R1 = ModelVariant(
    model_type="alpamayo_r1", display_name="Alpamayo-R1", special_token_keys=SPECIAL_TOKEN_KEYS,
    camera_text=False, frame_text=False, route=False, questions=False, camera_counts=(4,))
ALPAMAYO_1_5 = ModelVariant(
    model_type="alpamayo1_5", display_name="Alpamayo 1.5", special_token_keys=SPECIAL_TOKEN_KEYS_1_5,
    camera_text=True, frame_text=True, route=True, questions=True, camera_counts=(1, 2, 4))
VARIANTS: dict[str, ModelVariant] = {v.model_type: v for v in (ALPAMAYO_R1, ALPAMAYO_1_5)}


def variant_from_config(cfg: Mapping[str, Any]) -> ModelVariant:
    """The variant config.json names (``model_type``; absent: Alpamayo-R1, the first release).

    Alpamayo 1.5's prompt text items follow its ``include_camera_ids`` / ``include_frame_nums`` keys,
    True when absent (the reference's inference helper always writes both).
    """
    model_type = str(cfg.get("model_type", ALPAMAYO_R1.model_type))
    variant = VARIANTS.get(model_type)
    if variant is None:
        raise ValueError(f"config.json model_type {model_type!r} is not a supported Alpamayo model; supported: "
                         f"{sorted(VARIANTS)}")
    if variant.camera_text or variant.frame_text:
        from dataclasses import replace

        variant = replace(variant, camera_text=bool(cfg.get("include_camera_ids", True)),
                          frame_text=bool(cfg.get("include_frame_nums", True)))
    return variant


def variant_for_special_tokens(has_token: Any) -> ModelVariant:
    """The variant whose special-token names an extended tokenizer holds (``has_token(text) -> bool``)."""
    return ALPAMAYO_1_5 if has_token(special_token(SPECIAL_TOKEN_KEYS_1_5[3])) else ALPAMAYO_R1


# Qwen tokens the Alpamayo code uses (ids come from the base tokenizer, never from arithmetic).
QWEN_TOKENS: dict[str, str] = {
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "pad": "<|endoftext|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image_pad": "<|image_pad|>",
}

# Reference (Qwen3-VL base tokenizer) values, spec §2.2.
REFERENCE_BASE_VOCAB = 151669
REFERENCE_QWEN_IDS: dict[str, int] = {
    "im_start": 151644, "im_end": 151645, "pad": 151643,
    "vision_start": 151652, "vision_end": 151653, "image_pad": 151655,
}  # fmt: skip


def special_token(key: str) -> str:
    return f"<|{key}|>"


def new_special_keys(keys: tuple[str, ...] = SPECIAL_TOKEN_KEYS) -> list[str]:
    """The special keys that get new ids, in order (all but ``image_pad``, which the base vocabulary has)."""
    return [k for k in keys if special_token(k) != QWEN_TOKENS["image_pad"]]


@dataclass(frozen=True)
class TokenLayout:
    """All token ids the model inputs need (spec §2.2), derived from the base vocabulary size."""

    base_vocab_size: int = REFERENCE_BASE_VOCAB
    traj_vocab_size: int = 4000
    future_bins: int = 3000
    qwen_ids: Mapping[str, int] = field(default_factory=lambda: dict(REFERENCE_QWEN_IDS))
    # the variant's SPECIAL_TOKENS_KEYS (same ids, 1.5 renamed the unused ones)
    special_keys: tuple[str, ...] = SPECIAL_TOKEN_KEYS

    def __post_init__(self) -> None:
        if not 0 < self.future_bins <= self.traj_vocab_size:
            raise ValueError(f"future_bins={self.future_bins} must be in (0, traj_vocab_size={self.traj_vocab_size}]")
        missing = set(QWEN_TOKENS) - set(self.qwen_ids)
        if missing:
            raise ValueError(f"TokenLayout.qwen_ids lacks {sorted(missing)}")

    # --- trajectory tokens <i0>..<i{traj_vocab_size-1}> ---
    @property
    def traj_token_start_idx(self) -> int:
        return self.base_vocab_size

    @property
    def hist_token_start_idx(self) -> int:
        """``<i{future_bins}>``: the first history bin (``traj_token_start_idx + 3000``)."""
        return self.base_vocab_size + self.future_bins

    @property
    def traj_token_end_idx(self) -> int:
        """One past ``<i{traj_vocab_size-1}>`` (the masked range is [start, end))."""
        return self.base_vocab_size + self.traj_vocab_size

    # --- Alpamayo special tokens ---
    def special_id(self, key: str) -> int:
        if key in QWEN_TOKENS:
            return int(self.qwen_ids[key])
        keys = new_special_keys(self.special_keys)
        if key not in keys:
            raise KeyError(f"unknown special token key {key!r}")
        return self.traj_token_end_idx + keys.index(key)

    @property
    def vocab_size(self) -> int:
        return self.traj_token_end_idx + len(new_special_keys(self.special_keys))

    @property
    def image_pad(self) -> int:
        return int(self.qwen_ids["image_pad"])

    @property
    def vision_start(self) -> int:
        return int(self.qwen_ids["vision_start"])

    @property
    def vision_end(self) -> int:
        return int(self.qwen_ids["vision_end"])

    @property
    def im_start(self) -> int:
        return int(self.qwen_ids["im_start"])

    @property
    def im_end(self) -> int:
        return int(self.qwen_ids["im_end"])

    @property
    def pad(self) -> int:
        return int(self.qwen_ids["pad"])

    @property
    def traj_history(self) -> int:
        return self.special_id("traj_history")

    @property
    def traj_history_start(self) -> int:
        return self.special_id("traj_history_start")

    @property
    def traj_history_end(self) -> int:
        return self.special_id("traj_history_end")

    @property
    def cot_start(self) -> int:
        return self.special_id("cot_start")

    @property
    def cot_end(self) -> int:
        return self.special_id("cot_end")

    @property
    def traj_future_start(self) -> int:
        return self.special_id("traj_future_start")

    def expected_tokens(self) -> dict[str, int]:
        """Every token string the extended tokenizer must map to these ids (for verification)."""
        out = {f"<i{i}>": self.base_vocab_size + i for i in range(self.traj_vocab_size)}
        out.update({special_token(k): self.special_id(k) for k in new_special_keys(self.special_keys)})
        out.update({QWEN_TOKENS[k]: int(v) for k, v in self.qwen_ids.items()})
        return out

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TokenLayout:
        """From an Alpamayo ``config.json`` dict; Qwen ids from the nested VLM config when present."""
        traj_vocab = int(cfg.get("traj_vocab_size", 4000))
        future_bins = int(_nested(cfg, "traj_tokenizer_cfg", "num_bins", 3000))
        start = cfg.get("traj_token_start_idx")
        base = int(start) if start is not None else REFERENCE_BASE_VOCAB
        qwen = dict(REFERENCE_QWEN_IDS)
        vlm = cfg.get("vlm_config") or cfg.get("vlm") or {}
        for src in (cfg, vlm, vlm.get("text_config") or {}):
            for our, theirs in (("image_pad", "image_token_id"), ("vision_start", "vision_start_token_id"),
                                ("vision_end", "vision_end_token_id")):
                if theirs in src:
                    qwen[our] = int(src[theirs])
        for our in ("im_start", "im_end", "pad"):
            if f"{our}_token_id" in cfg:
                qwen[our] = int(cfg[f"{our}_token_id"])
        keys = variant_from_config(cfg).special_token_keys
        layout = cls(base_vocab_size=base, traj_vocab_size=traj_vocab, future_bins=future_bins, qwen_ids=qwen,
                     special_keys=keys)
        if "vocab_size" in cfg and int(cfg["vocab_size"]) != layout.vocab_size:
            raise ValueError(
                f"config vocab_size={cfg['vocab_size']} disagrees with the derived layout ({layout.vocab_size} = "
                f"{base} base + {traj_vocab} <i*> + {len(new_special_keys(keys))} special tokens)"
            )
        return layout


@dataclass(frozen=True)
class ProcessorConfig:
    """Qwen3-VL image processor settings (spec §1.2)."""

    min_pixels: int = 163840
    max_pixels: int = 196608
    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bicubic"

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def row_len(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ProcessorConfig:
        d = cls()
        vision = _vision_cfg(cfg)
        return cls(
            min_pixels=int(cfg.get("min_pixels", d.min_pixels)),
            max_pixels=int(cfg.get("max_pixels", d.max_pixels)),
            patch_size=int(vision.get("patch_size", d.patch_size)),
            temporal_patch_size=int(vision.get("temporal_patch_size", d.temporal_patch_size)),
            merge_size=int(vision.get("spatial_merge_size", d.merge_size)),
        )


@dataclass(frozen=True)
class InputConfig:
    """Which frames and history feed one tick (spec §1.1, §3.1)."""

    camera_ids: tuple[int, ...] = (0, 1, 2, 6)
    num_frames: int = 4
    frame_spacing_s: float = 0.1
    history_steps: int = 16
    history_dt_s: float = 0.1
    tokens_per_history_traj: int = 48
    variant: ModelVariant = ALPAMAYO_R1  # prompt text items, route/question support, camera sets

    def __post_init__(self) -> None:
        if list(self.camera_ids) != sorted(self.camera_ids):
            raise ValueError(f"camera_ids {list(self.camera_ids)} must be sorted by index (spec §1.1)")
        if self.num_frames < 1 or self.frame_spacing_s <= 0:
            raise ValueError("num_frames must be >= 1 and frame_spacing_s > 0")

    def with_cameras(self, camera_ids: tuple[int, ...] | list[int]) -> InputConfig:
        """This config on another camera set, checked against what the model takes (ValueError)."""
        from dataclasses import replace

        return replace(self, camera_ids=self.variant.check_cameras(camera_ids))

    def frame_offsets_s(self) -> tuple[float, ...]:
        """Slot offsets relative to t0, oldest first: (-0.3, -0.2, -0.1, 0.0) for the reference."""
        n = self.num_frames
        return tuple(-(n - 1 - i) * self.frame_spacing_s for i in range(n))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> InputConfig:
        d = cls()
        variant = variant_from_config(cfg)
        cams = cfg.get("camera_ids", variant.default_cameras)
        return cls(
            camera_ids=tuple(sorted(int(c) for c in cams)),
            num_frames=int(cfg.get("num_frames", d.num_frames)),
            history_steps=int(cfg.get("num_history_steps", d.history_steps)),
            tokens_per_history_traj=int(cfg.get("tokens_per_history_traj", d.tokens_per_history_traj)),
            variant=variant,
        )


@dataclass(frozen=True)
class SamplingConfig:
    """VLM sampling (spec §4)."""

    temperature: float = 0.6
    top_p: float = 0.98
    max_generation_length: int = 256
    # Tokens HF generate treats as EOS (a row that emits one is finished and padded). The reference
    # inherits the Qwen3-VL config's <|im_end|> (spec §4, §11.2); () disables it.
    hf_eos_keys: tuple[str, ...] = ("im_end",)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SamplingConfig:
        d = cls()
        return cls(
            temperature=float(cfg.get("temperature", d.temperature)),
            top_p=float(cfg.get("top_p", d.top_p)),
            max_generation_length=int(cfg.get("max_generation_length", d.max_generation_length)),
            hf_eos_keys=tuple(cfg.get("hf_eos_keys", d.hf_eos_keys)),
        )


@dataclass(frozen=True)
class ModelInputConfig:
    """Everything ``build_model_inputs`` needs, in one object."""

    layout: TokenLayout = field(default_factory=TokenLayout)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelInputConfig:
        return cls(
            layout=TokenLayout.from_config(cfg),
            processor=ProcessorConfig.from_config(cfg),
            inputs=InputConfig.from_config(cfg),
            sampling=SamplingConfig.from_config(cfg),
        )


def load_model_dir_config(model_dir: str | Path) -> dict[str, Any]:
    """Read ``<model_dir>/config.json`` (raises FileNotFoundError naming the path)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a model directory needs config.json (make a tiny one with "
            f"`alpamayo-ros make-tiny-model DIR`, or use the released checkpoint's directory)"
        )
    with path.open() as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: top level must be a JSON object")
    return cfg


def _nested(cfg: Mapping[str, Any], section: str, key: str, default: Any) -> Any:
    sub = cfg.get(section)
    return sub.get(key, default) if isinstance(sub, Mapping) else default


def _vision_cfg(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    vlm = cfg.get("vlm_config") or cfg.get("vlm") or {}
    vision = vlm.get("vision_config") if isinstance(vlm, Mapping) else None
    return vision or cfg.get("vision_config") or {}
