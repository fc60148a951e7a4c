"""The Alpamayo chat prompt (spec §2.1) and its token ids.

AR1 renders, with real newlines and no separators between content items::

    <|im_start|>system\\nYou are a driving assistant that generates safe and accurate actions.<|im_end|>\\n
    <|im_start|>user\\n[<|vision_start|><|image_pad|>×n<|vision_end|>]×16<|traj_history_start|>
    <|traj_history|>×48<|traj_history_end|>output the chain-of-thought reasoning of the driving process,
    then output the future trajectory.<|im_end|>\\n<|im_start|>assistant\\n<|cot_start|>

(``continue_final_message`` leaves no ``<|im_end|>`` after the assistant prefix.) Alpamayo 1.5 puts
``"<Display name>: "`` before each camera group and ``"frame k "`` (k from 0, per camera) before each
image (``helper._build_image_content``), and may add ``<|route_start|>{text}<|route_end|>`` between the
history block and the unchanged instruction. Its question prompt (``create_vqa_message``) replaces the
history block and instruction with ``<|question_start|>{q}<|question_end|>`` and pre-fills the
assistant turn with ``<|answer_start|>`` instead of ``<|cot_start|>``.

The string is tokenized once per prompt shape and cached; a tick only replaces the 48
``<|traj_history|>`` placeholders with the history token ids (the reference's ``masked_scatter``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .tokenizer import AlpamayoTokenizer

SYSTEM_TEXT = "You are a driving assistant that generates safe and accurate actions."
INSTRUCTION_TEXT = "output the chain-of-thought reasoning of the driving process, then output the future trajectory."
CAMERA_DISPLAY_NAMES: dict[int, str] = {
    0: "Front left camera", 1: "Front camera", 2: "Front right camera", 3: "Rear left camera",
    4: "Rear camera", 5: "Rear right camera", 6: "Front telephoto camera",
}  # fmt: skip


class PromptError(ValueError):
    """The prompt could not be built (wrong history length, tokenizer mismatch…)."""


@dataclass(frozen=True)
class PromptSpec:
    """Everything that changes the prompt's token ids, except the history tokens (hashable → cacheable)."""

    camera_ids: tuple[int, ...] = (0, 1, 2, 6)
    num_frames: int = 4
    image_tokens: tuple[int, ...] = (180,) * 16  # <|image_pad|> count per image, camera-major
    tokens_per_history: int = 48
    camera_text: bool = False  # "<name>: " before each camera's first image (Alpamayo 1.5)
    frame_text: bool = False  # "frame <k> " before every image (Alpamayo 1.5)
    route_text: str | None = None  # navigation instruction (Alpamayo 1.5)
    question: str | None = None  # the question prompt (Alpamayo 1.5): no history, no instruction

    def __post_init__(self) -> None:
        if len(self.image_tokens) != len(self.camera_ids) * self.num_frames:
            raise PromptError(
                f"{len(self.image_tokens)} images given for {len(self.camera_ids)} cameras x {self.num_frames} frames"
            )
        if self.route_text is not None and self.question is not None:
            raise PromptError("the question prompt carries no route text")

    @property
    def history_tokens(self) -> int:
        """``<|traj_history|>`` placeholders in the prompt (none in the question prompt)."""
        return 0 if self.question is not None else self.tokens_per_history


def camera_display_name(camera_id: int) -> str:
    return CAMERA_DISPLAY_NAMES.get(camera_id, f"Camera {camera_id}")


def render_prompt(spec: PromptSpec) -> str:
    """The exact chat string the reference tokenizes (image pads already expanded)."""
    user: list[str] = []
    for c, cam in enumerate(spec.camera_ids):
        if spec.camera_text:
            user.append(f"{camera_display_name(cam)}: ")
        for f in range(spec.num_frames):
            if spec.frame_text:
                user.append(f"frame {f} ")
            n = spec.image_tokens[c * spec.num_frames + f]
            user.append("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>")
    if spec.question is not None:
        user.append(f"<|question_start|>{spec.question}<|question_end|>")
        prefix = "<|answer_start|>"
    else:
        user.append("<|traj_history_start|>" + "<|traj_history|>" * spec.tokens_per_history + "<|traj_history_end|>")
        if spec.route_text is not None:
            user.append(f"<|route_start|>{spec.route_text}<|route_end|>")
        user.append(INSTRUCTION_TEXT)
        prefix = "<|cot_start|>"
    return (
        f"<|im_start|>system\n{SYSTEM_TEXT}<|im_end|>\n"
        f"<|im_start|>user\n{''.join(user)}<|im_end|>\n"
        f"<|im_start|>assistant\n{prefix}"
    )


@dataclass(frozen=True, eq=False)  # hashed by identity (it is cached)
class PromptTemplate:
    """Tokenized prompt with placeholders; ``fill`` makes one tick's ``input_ids``."""

    ids: np.ndarray  # int64 (S,), read-only
    history_positions: np.ndarray  # int64 (tokens_per_history,)
    image_token_spans: tuple[tuple[int, int], ...]  # [start, end) of each image's <|image_pad|> run

    def fill(self, history_token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        hist = np.asarray(history_token_ids, dtype=np.int64).reshape(-1)
        if hist.shape[0] != self.history_positions.shape[0]:
            raise PromptError(f"expected {self.history_positions.shape[0]} history token ids, got {hist.shape[0]}")
        ids = self.ids.copy()
        ids[self.history_positions] = hist
        return ids


def build_prompt_template(tokenizer: AlpamayoTokenizer, spec: PromptSpec) -> PromptTemplate:
    """Tokenize the prompt (cached per tokenizer and spec) and locate the placeholders."""
    return _cached_template(_TokKey(tokenizer), spec)


class _TokKey:
    """Hash a tokenizer by identity so lru_cache can key on it without hashing its content."""

    def __init__(self, tok: AlpamayoTokenizer) -> None:
        self.tok = tok

    def __hash__(self) -> int:
        return id(self.tok)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TokKey) and other.tok is self.tok


@lru_cache(maxsize=16)
def _cached_template(key: _TokKey, spec: PromptSpec) -> PromptTemplate:
    tok = key.tok
    lay = tok.layout
    ids = tok.encode(render_prompt(spec))
    hist = np.flatnonzero(ids == lay.traj_history)
    if hist.shape[0] != spec.history_tokens:
        raise PromptError(f"tokenized prompt has {hist.shape[0]} <|traj_history|> tokens, expected "
                          f"{spec.history_tokens}: does the tokenizer treat it as one special token?")
    spans = _runs(ids == lay.image_pad)
    if [e - s for s, e in spans] != list(spec.image_tokens):
        raise PromptError(f"image pad runs {[e - s for s, e in spans]} differ from {list(spec.image_tokens)}")
    ids.setflags(write=False)
    hist.setflags(write=False)
    return PromptTemplate(ids=ids, history_positions=hist, image_token_spans=tuple(spans))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True)]
