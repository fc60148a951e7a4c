"""One tick's model inputs: token ids, MRoPE positions and the 16 images (spec §1–§2).

``build_model_inputs`` does no image work: the frames were preprocessed on arrival, the prompt
template and its positions are cached per prompt shape (image grids, camera set, variant, route
text), so a tick copies the template, writes the 48 history ids and gathers 16 cached frames. The
runtime encodes each image once and caches its embedding under ``ImageInput.key`` = (camera_id, stamp_ns).

Alpamayo 1.5 adds a route instruction to the prompt, and navigation guidance needs the same prompt
without it (``ModelInputs.unguided``: the reference's ``remove_nav_text``, same images and history);
``build_question_inputs`` makes the question prompt over a tick's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .frames import TickSelection, frames_from
from .image_preprocess import PreprocessedFrame
from .model_config import ModelInputConfig
from .prompt import PromptError, PromptSpec, PromptTemplate, build_prompt_template
from .rope import rope_index
from .tokenizer import AlpamayoTokenizer


@dataclass(frozen=True)
class ImageInput:
    frame: PreprocessedFrame

    @property
    def key(self) -> tuple[int, int]:
        """(camera_id, stamp_ns): the runtime's vision-embedding cache key."""
        return self.frame.key

    @property
    def pixel_rows(self) -> np.ndarray:
        """float32 (N, 1536), built on first access and kept with the frame."""
        return self.frame.pixel_rows

    @property
    def grid_thw(self) -> np.ndarray:
        return self.frame.grid_thw


@dataclass(frozen=True)
class ModelInputs:
    input_ids: np.ndarray  # int64 (S,)
    position_ids: np.ndarray  # int64 (3, S), shared read-only across ticks of the same shape
    rope_delta: int
    images: list[ImageInput]
    image_token_spans: tuple[tuple[int, int], ...]  # [start, end) of each image's <|image_pad|> run
    t0_ns: int | None = None
    route_text: str | None = None  # the navigation instruction in the prompt (Alpamayo 1.5)
    # the same tick without the route span, for navigation guidance (None: not requested or no route)
    unguided: ModelInputs | None = None

    @property
    def image_grid_thw(self) -> np.ndarray:
        return np.stack([im.grid_thw for im in self.images]).astype(np.int64)

    def pixel_values(self) -> np.ndarray:
        """All images' rows concatenated (the reference's ``pixel_values``); copies 16×4.4 MB."""
        return np.concatenate([im.pixel_rows for im in self.images], axis=0)

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[0])

    def mm_token_type_ids(self) -> np.ndarray:
        """int32 (S,): 1 on image tokens, 0 on text (what transformers' Qwen3-VL forward expects)."""
        out = np.zeros(self.seq_len, dtype=np.int32)
        for s, e in self.image_token_spans:
            out[s:e] = 1
        return out


def prompt_spec_for(frames: Sequence[PreprocessedFrame], cfg: ModelInputConfig, route_text: str | None = None,
                    question: str | None = None) -> PromptSpec:
    inp = cfg.inputs
    variant = inp.variant
    if route_text is not None and not variant.route:
        raise PromptError(f"{variant.display_name} takes no route instruction (an Alpamayo 1.5 input)")
    if question is not None and not variant.questions:
        raise PromptError(f"{variant.display_name} has no question prompt (an Alpamayo 1.5 feature)")
    return PromptSpec(
        camera_ids=tuple(inp.camera_ids),
        num_frames=inp.num_frames,
        image_tokens=tuple(f.num_llm_tokens for f in frames),
        tokens_per_history=inp.tokens_per_history_traj,
        camera_text=variant.camera_text,
        frame_text=variant.frame_text,
        route_text=route_text,
        question=question,
    )


def build_model_inputs(selection: TickSelection | Sequence[PreprocessedFrame], history_token_ids: np.ndarray,
                       tokenizer: AlpamayoTokenizer, cfg: ModelInputConfig | None = None, *,
                       route_text: str | None = None, unguided: bool = False) -> ModelInputs:
    """Assemble one tick's inputs from 16 cached frames and the 48 history token ids.

    ``route_text``: the navigation instruction (Alpamayo 1.5); ``unguided``: also build the prompt
    without it (``ModelInputs.unguided``) for navigation guidance.
    """
    cfg = cfg or ModelInputConfig(layout=tokenizer.layout)
    frames = _checked_frames(selection, tokenizer, cfg)
    inputs = _inputs(frames, prompt_spec_for(frames, cfg, route_text=route_text), history_token_ids, tokenizer, cfg,
                     selection)
    if unguided and route_text is not None:
        plain = _inputs(frames, prompt_spec_for(frames, cfg), history_token_ids, tokenizer, cfg, selection)
        inputs = replace(inputs, unguided=plain)
    return inputs


def build_question_inputs(selection: TickSelection | Sequence[PreprocessedFrame], question: str,
                          tokenizer: AlpamayoTokenizer, cfg: ModelInputConfig) -> ModelInputs:
    """The question prompt (Alpamayo 1.5 VQA) over a tick's frames: no history, assistant prefix <|answer_start|>."""
    frames = _checked_frames(selection, tokenizer, cfg)
    return _inputs(frames, prompt_spec_for(frames, cfg, question=question), np.empty(0, np.int64), tokenizer, cfg,
                   selection)


def _checked_frames(selection: TickSelection | Sequence[PreprocessedFrame], tokenizer: AlpamayoTokenizer,
                    cfg: ModelInputConfig) -> list[PreprocessedFrame]:
    frames = frames_from(selection)
    n_expected = len(cfg.inputs.camera_ids) * cfg.inputs.num_frames
    if len(frames) != n_expected:
        raise PromptError(f"expected {n_expected} frames (cameras x frames), got {len(frames)}")
    want = [c for c in cfg.inputs.camera_ids for _ in range(cfg.inputs.num_frames)]
    got = [f.camera_id for f in frames]
    if got != want:
        raise PromptError(f"frames must be camera-major in model order {want}, got cameras {got}")
    n = cfg.inputs.num_frames
    for c in range(len(cfg.inputs.camera_ids)):
        stamps = [f.stamp_ns for f in frames[c * n:(c + 1) * n]]
        if any(b <= a for a, b in zip(stamps, stamps[1:], strict=False)):
            raise PromptError(f"camera {want[c * n]} frames must be oldest first with distinct stamps, got {stamps}")
    if tokenizer.layout != cfg.layout:
        raise PromptError("tokenizer layout differs from the model config's token layout")
    return list(frames)


def _inputs(frames: list[PreprocessedFrame], spec: PromptSpec, history_token_ids: np.ndarray,
            tokenizer: AlpamayoTokenizer, cfg: ModelInputConfig,
            selection: TickSelection | Sequence[PreprocessedFrame]) -> ModelInputs:
    grids = tuple(tuple(int(v) for v in f.grid_thw) for f in frames)
    template, positions, delta = _template_and_positions(tokenizer, spec, grids, cfg.processor.merge_size)
    return ModelInputs(
        input_ids=template.fill(history_token_ids),
        position_ids=positions,
        rope_delta=delta,
        images=[ImageInput(f) for f in frames],
        image_token_spans=template.image_token_spans,
        t0_ns=selection.t0_ns if isinstance(selection, TickSelection) else None,
        route_text=spec.route_text,
    )


def _template_and_positions(tokenizer: AlpamayoTokenizer, spec: PromptSpec, grids: tuple[tuple[int, ...], ...],
                            merge: int) -> tuple[PromptTemplate, np.ndarray, int]:
    template = build_prompt_template(tokenizer, spec)
    positions, delta = _positions(template, grids, tokenizer.layout.image_pad, merge)
    return template, positions, delta


@lru_cache(maxsize=16)
def _positions(template: PromptTemplate, grids: tuple[tuple[int, ...], ...], image_pad: int,
               merge: int) -> tuple[np.ndarray, int]:
    # Positions do not depend on the history ids (they are text tokens either way).
    pos, delta = rope_index(template.ids, np.asarray(grids), image_pad, merge)
    pos.setflags(write=False)
    return pos, delta
