"""Alpamayo 1.5 prompts: token ids and MRoPE positions pinned to what the 1.5 reference produces.

The expected values were computed once, outside this repository, by NVlabs/alpamayo1.5 @ f42e594:
its tokenizer extension (``ReasoningVLAConfig._build_processor``, 1.5 special-token names) on the tiny
synthetic base tokenizer (``build_synthetic_base_tokenizer``), ``helper.create_message`` /
``create_vqa_message`` with ``camera_indices`` over 1080x1920 frames, the Qwen3-VL processor
(``apply_chat_template(..., continue_final_message=True)``, transformers 4.57.1, min/max pixels
163840/196608) and ``Qwen3VLModel.get_rope_index``; the unguided ids by ``nav_utils.remove_nav_text``.
The test needs none of that: it pins the results (sha256 of the int64 little-endian arrays, and
some exact strings and id windows).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from alpamayo_ros.core.model_config import ALPAMAYO_1_5, SPECIAL_TOKEN_KEYS_1_5
from alpamayo_ros.core.prompt import PromptSpec, build_prompt_template, render_prompt
from alpamayo_ros.core.rope import rope_index
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer

ROUTE = "Turn left onto De La Cruz Boulevard in 40m"
QUESTION = "Describe the scene."
CAMERAS = {"4cam": (0, 1, 2, 6), "2cam": (1, 6), "1cam": (1,)}
# case -> (tokens, rope_delta, sha256(ids), sha256(positions (3, S)), sha256(chat text before the
# processor expands <|image_pad|>), sha256(ids without the route span) or None)
EXPECTED = {
    "4cam_plain": (3362, -2592, "eab9c9263ac0128194f67c300ae05c5686ede3ea7a0d31b5f4a37fcd5c0ccabe",
                   "773e4fda021de9353c96237c7eaeb6890bd9342bbe4707dbd27700e7c11032c8",
                   "15ebf86cc4da06a9937807132b1de5892bbb4ebc4f8d631f3fef76d33246fa0e", None),
    "4cam_route": (3406, -2592, "34a1d9928adbb97b85f1b95550fec0c7a7d9e1386768d54727243e5d8353132f",
                   "b77003f11865047e0be4e0046742bafabb2b0cedf120915572f7a7ab7640c20b",
                   "cf1912236c3cf48514768c4226ed73fa2830cf336c84577deb617ffc364a355a",
                   "eab9c9263ac0128194f67c300ae05c5686ede3ea7a0d31b5f4a37fcd5c0ccabe"),
    "4cam_question": (3237, -2592, "8dbf46aeccede898792a0e1aa30572236596c2afa0b910d8da3c5755d688813e",
                      "30c875a77e4d0d1eba2751403ab609959f697f7519e6df155eeb7e3de98f0776",
                      "8649dcdd9233984c37f3768a6502d8b3bd6d89851910d51932fe27f86bdee7e9", None),
    "2cam_plain": (1803, -1296, "a5ac4fd31b46d65efa29fa00a84ee5b59bb374c5f6980d92fd1c3692f0cf3c61",
                   "7221e82cc38177ede0717c2164b2baf7d71340d67970710ab26039c2f2c4123f",
                   "6173c6611dc583c98f80405e2e05b30be905e7a88fde0286f9c3beffaf2cdcf1", None),
    "2cam_route": (1847, -1296, "4844411675be9ce2d845ec1aafcd19ca9cd297b9c842d0b8eb6d5bc7d316b470",
                   "9fbdafe3a02787761a7f453a4298708a665adf9556867bc5ffe4fb77b00ba674",
                   "15a8e8092719a1e869d94bbd749a68b992e4657fa18d6741667ca8ac5a643f0b",
                   "a5ac4fd31b46d65efa29fa00a84ee5b59bb374c5f6980d92fd1c3692f0cf3c61"),
    "2cam_question": (1678, -1296, "4a976c0f9580f1d2dc48b7c4d21bb9cc7ca3cd4d7622eef0fe9eea07e048b9ff",
                      "b313e7a122414c43b8244e3cce3257789eb35f336c77b32c8b7fd9a2a1ccd337",
                      "4395d54a75ab1ec4d907ce60c6985837be87b9b0be683b30ceb52dad7766f47d", None),
    "1cam_plain": (1019, -648, "703656c2c324e0902df9b71d41c1b0c789fd781f2fe9c3b2eb943dc8d95e07ae",
                   "93ee2b9d20b1859e54d81452627699ffd1733ab52cfa83daa96b7c4ab1f48d0e",
                   "5a4defca23e6bbec079c4846ebbe3721774bc973b217b365a5dc92a23e3c854c", None),
    "1cam_route": (1063, -648, "87d93e03d1166f84c0bb2fb2e080b1db88c884fe2f4752e99efa4f159998eac7",
                   "c245566f8043a4f494c7100b4847f4d2b14dd71be01f96ded12d6c1a3ca0f62a",
                   "05511d574a3730c6c4a31f1dfe52345cf49aebb8e92d6ff6ecc4da70cd573838",
                   "703656c2c324e0902df9b71d41c1b0c789fd781f2fe9c3b2eb943dc8d95e07ae"),
    "1cam_question": (894, -648, "d9886a9a47cd86fca691a3c2f197a85a7569b1fdecec851adee5f7ddbbaf8766",
                      "f778739c08118682bcc4be364f9da08a84fc5595ef67c6d8e6c36e4993d8b5e0",
                      "0f4ab9f0e78dcbe2f4bb6a3afca2e7fd714e12ceec861e18ba0db2ef50e6de0a", None),
}  # fmt: skip
HISTORY = "<|traj_history_start|>" + "<|traj_history|>" * 48 + "<|traj_history_end|>"
# The reference's chat text for two cameras with a route, written out.
TEXT_2CAM_ROUTE = (
    "<|im_start|>system\nYou are a driving assistant that generates safe and accurate actions.<|im_end|>\n"
    "<|im_start|>user\n"
    "Front camera: frame 0 <|vision_start|><|image_pad|><|vision_end|>frame 1 <|vision_start|><|image_pad|>"
    "<|vision_end|>frame 2 <|vision_start|><|image_pad|><|vision_end|>frame 3 <|vision_start|><|image_pad|>"
    "<|vision_end|>Front telephoto camera: frame 0 <|vision_start|><|image_pad|><|vision_end|>frame 1 "
    "<|vision_start|><|image_pad|><|vision_end|>frame 2 <|vision_start|><|image_pad|><|vision_end|>frame 3 "
    f"<|vision_start|><|image_pad|><|vision_end|>{HISTORY}"
    "<|route_start|>Turn left onto De La Cruz Boulevard in 40m<|route_end|>"
    "output the chain-of-thought reasoning of the driving process, then output the future trajectory.<|im_end|>\n"
    "<|im_start|>assistant\n<|cot_start|>"
)
TEXT_1CAM_QUESTION = (
    "<|im_start|>system\nYou are a driving assistant that generates safe and accurate actions.<|im_end|>\n"
    "<|im_start|>user\n"
    "Front camera: frame 0 <|vision_start|><|image_pad|><|vision_end|>frame 1 <|vision_start|><|image_pad|>"
    "<|vision_end|>frame 2 <|vision_start|><|image_pad|><|vision_end|>frame 3 <|vision_start|><|image_pad|>"
    "<|vision_end|><|question_start|>Describe the scene.<|question_end|><|im_end|>\n"
    "<|im_start|>assistant\n<|answer_start|>"
)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, dtype=np.int64)).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tok() -> AlpamayoTokenizer:
    return AlpamayoTokenizer.synthetic(special_keys=SPECIAL_TOKEN_KEYS_1_5)


def _spec(case: str, route: bool | None = None) -> PromptSpec:
    cams, kind = CAMERAS[case.split("_")[0]], case.split("_")[1]
    with_route = kind == "route" if route is None else route
    return PromptSpec(camera_ids=cams, num_frames=4, image_tokens=(180,) * (4 * len(cams)),
                      camera_text=ALPAMAYO_1_5.camera_text, frame_text=ALPAMAYO_1_5.frame_text,
                      route_text=ROUTE if with_route else None, question=QUESTION if kind == "question" else None)


def _chat_text(spec: PromptSpec) -> str:
    """Our rendering before the processor's image-pad expansion (what apply_chat_template(tokenize=False) gives)."""
    return render_prompt(spec).replace("<|image_pad|>" * 180, "<|image_pad|>")


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_ids_and_positions_equal_the_reference(tok: AlpamayoTokenizer, case: str) -> None:
    n, delta, ids_sha, pos_sha, text_sha, unguided_sha = EXPECTED[case]
    spec = _spec(case)
    t = build_prompt_template(tok, spec)
    pos, got_delta = rope_index(t.ids, [[1, 20, 36]] * len(spec.image_tokens), tok.layout.image_pad)
    assert t.ids.shape == (n,)
    assert _sha(t.ids) == ids_sha
    assert (_sha(pos), got_delta) == (pos_sha, delta)
    assert hashlib.sha256(_chat_text(spec).encode()).hexdigest() == text_sha
    if unguided_sha is not None:  # navigation guidance's unguided prompt: the route span removed
        plain = build_prompt_template(tok, _spec(case, route=False)).ids
        assert _sha(plain) == unguided_sha
        start, end = (int(np.flatnonzero(t.ids == tok.layout.special_id(k))[0]) for k in ("route_start", "route_end"))
        assert np.array_equal(np.concatenate([t.ids[:start], t.ids[end + 1:]]), plain)


def test_exact_texts(tok: AlpamayoTokenizer) -> None:
    assert _chat_text(_spec("2cam_route")) == TEXT_2CAM_ROUTE
    assert _chat_text(_spec("1cam_question")) == TEXT_1CAM_QUESTION


def test_exact_id_windows(tok: AlpamayoTokenizer) -> None:
    ids = build_prompt_template(tok, _spec("1cam_route")).ids.tolist()
    # ... <|traj_history|> <|traj_history_end|> <|route_start|> "Turn left onto De La Cruz Boulevard in 40m" <|route_end|> "o"
    assert ids[907:954] == [
        4297, 4289, 4303, 51, 84, 81, 77, 220, 75, 68, 69, 83, 220, 78, 77, 83, 78, 220, 35, 68, 220, 43, 64, 220, 34,
        81, 84, 89, 220, 33, 78, 84, 75, 68, 85, 64, 81, 67, 220, 72, 77, 220, 19, 15, 76, 4305, 78]
    # "a: frame 0 " <|vision_start|> <|image_pad|>
    assert ids[96:109] == [64, 25, 220, 69, 81, 64, 76, 68, 220, 15, 220, 265, 268]
    q = build_prompt_template(tok, _spec("1cam_question")).ids.tolist()
    assert q[859:] == [4306, 35, 68, 82, 66, 81, 72, 65, 68, 220, 83, 71, 68, 220, 82, 66, 68, 77, 68, 13, 4307, 258,
                       198, 257, 64, 82, 82, 72, 82, 83, 64, 77, 83, 198, 4308]
    assert tok.layout.special_id("_padding_0") == 4285 and tok.layout.vocab_size == 4310
