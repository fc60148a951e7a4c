"""End to end: 16 synthetic camera frames + a pose buffer → one tick's model inputs (spec §1–§3)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alpamayo_ros.core.egomotion import PoseBuffer
from alpamayo_ros.core.frames import FrameStore
from alpamayo_ros.core.history_tokens import history_token_ids
from alpamayo_ros.core.image_preprocess import decode_raw, preprocess_frame, preprocess_image
from alpamayo_ros.core.model_config import SPECIAL_TOKEN_KEYS_1_5, ModelInputConfig
from alpamayo_ros.core.model_inputs import build_model_inputs, build_question_inputs
from alpamayo_ros.core.prompt import PromptError
from alpamayo_ros.core.rope import rope_index
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer

CAMS = (0, 1, 2, 6)
NS = 1_000_000_000
SPEED = 5.0  # m/s along +x: the oldest delta (-7.5 m) saturates bin 0 (spec §3.2)


@pytest.fixture(scope="module")
def tok() -> AlpamayoTokenizer:
    return AlpamayoTokenizer.synthetic(pad_regular_to=151643)  # the real Qwen3-VL id layout


def _raw_frame(cam: int, k: int) -> tuple[bytes, int, int]:
    """A bgr8 sensor_msgs/Image payload whose content encodes (camera, frame index)."""
    h, w = 540, 960
    rng = np.random.default_rng(cam * 100 + k)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:64, :64] = (cam * 30, k * 10, 200)  # stays recognisable after the resize
    return img[..., ::-1].tobytes(), w, h


@pytest.fixture(scope="module")
def scene():
    store = FrameStore()
    raw: dict[tuple[int, int], np.ndarray] = {}
    for cam in CAMS:
        for k in range(8):  # 10 Hz, 0.0 .. 0.7 s after 2 s of driving, with a per-camera phase
            stamp = 2 * NS + k * NS // 10 + cam * 3_000_000
            data, w, h = _raw_frame(cam, k)
            rgb = decode_raw(data, w, h, "bgr8", w * 3)
            raw[(cam, stamp)] = rgb
            store.add(preprocess_frame(rgb, cam, stamp))
    poses = PoseBuffer()
    for i in range(0, 151):  # 50 Hz odometry, straight line along x at SPEED
        t = i * 0.02
        poses.add(t, [SPEED * t, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    return store, poses, raw


def _spec_history_ids(hist_xyz: np.ndarray) -> np.ndarray:
    """Spec §3.2 written out: zero-origin deltas, per-axis bins, interleaved, + <i3000>."""
    lo, hi = np.array([-4.0, -4.0, -10.0]), np.array([4.0, 4.0, 10.0])
    d = np.diff(np.concatenate([np.zeros((1, 3)), hist_xyz]), axis=0)
    q = np.clip(np.rint((d - lo) / (hi - lo) * 999), 0, 999).astype(np.int64)
    return 151669 + 3000 + q.reshape(-1)


def test_end_to_end_token_layout(tok, scene) -> None:
    store, poses, raw = scene
    t0_ns = store.latest_common_t0(not_after_ns=int(poses.latest_stamp * NS))
    assert t0_ns == 2_718_000_000  # camera 6's newest frame: every camera's newest is at or before it
    sel = store.select_tick(t0_ns)
    hist = poses.history(t0_ns / NS)
    hist_ids = history_token_ids(hist.xyz)
    expected_hist = _spec_history_ids(hist.xyz)
    assert np.array_equal(hist_ids, expected_hist)
    assert expected_hist[0] == 154669 and expected_hist[3] == 154669 + 562  # saturated x0; 0.5 m steps

    cfg = ModelInputConfig(layout=tok.layout)
    mi = build_model_inputs(sel, hist_ids, tok, cfg)
    ids = mi.input_ids
    assert ids.dtype == np.int64 and mi.t0_ns == t0_ns

    # Counts of every special token (spec §2.1, ids of §2.2).
    counts = {i: int((ids == i).sum()) for i in (151644, 151645, 151652, 151653, 151655, 155674, 155676, 155677,
                                                 155678, 155681, 155684)}
    assert counts == {151644: 3, 151645: 2, 151652: 16, 151653: 16, 151655: 2880, 155674: 1, 155676: 1,
                      155677: 1, 155678: 0, 155681: 0, 155684: 0}
    assert ids[-1] == 155677  # the assistant prefix <|cot_start|> ends the prompt

    # Image pads: 16 runs of 180, each wrapped in vision_start/end, back to back.
    spans = mi.image_token_spans
    assert len(spans) == 16 and all(e - s == 180 for s, e in spans)
    for (s, e), (s2, _) in zip(spans, spans[1:], strict=False):
        assert ids[s - 1] == 151652 and ids[e] == 151653 and s2 == e + 2
    # History block right after the last image, holding the 48 history ids in order.
    h0 = spans[-1][1] + 1
    assert ids[h0] == 155674 and ids[h0 + 49] == 155676
    assert np.array_equal(ids[h0 + 1:h0 + 49], expected_hist)
    assert np.all((ids < 151669) | (ids >= 155669) | ((ids >= 154669) & (np.arange(len(ids)) > h0)))

    # Images: camera-major, oldest first, keyed by (camera, stamp); rows equal per-image preprocessing.
    keys = [im.key for im in mi.images]
    assert [k[0] for k in keys] == [c for c in CAMS for _ in range(4)]
    assert [k[1] for k in keys[:4]] == [2_400_000_000, 2_500_000_000, 2_600_000_000, 2_700_000_000]
    pv = mi.pixel_values()
    assert pv.shape == (11520, 1536) and pv.dtype == np.float32
    for i, key in enumerate(keys):
        rows, grid = preprocess_image(raw[key])
        assert np.array_equal(pv[720 * i:720 * (i + 1)], rows) and grid.tolist() == [1, 20, 36]
    assert mi.image_grid_thw.tolist() == [[1, 20, 36]] * 16

    # Positions: as computed from the ids and grids; rope_delta of spec §1.3.
    pos, delta = rope_index(ids, mi.image_grid_thw, 151655)
    assert np.array_equal(mi.position_ids, pos) and mi.rope_delta == delta == -2592
    assert mi.position_ids.shape == (3, mi.seq_len) and mi.position_ids.dtype == np.int64
    assert mi.position_ids[:, -1].tolist() == [mi.seq_len - 1 - 2592] * 3
    assert np.array_equal(mi.mm_token_type_ids(), (ids == 151655).astype(np.int32))


def test_ticks_reuse_cached_frames_and_templates(tok, scene) -> None:
    store, poses, _ = scene
    a = build_model_inputs(store.select_tick(2_718_000_000), np.full(48, 154669), tok)
    b = build_model_inputs(store.select_tick(2_618_000_000), np.full(48, 154670), tok)
    assert b.position_ids is a.position_ids  # cached per prompt shape
    shared = set(a.images[i].key for i in range(16)) & set(b.images[i].key for i in range(16))
    assert len(shared) == 12  # each camera contributes one new frame per tick
    fa = {im.key: im.frame for im in a.images}
    assert all(fa[im.key] is im.frame for im in b.images if im.key in fa)  # same objects, nothing redone
    assert not np.array_equal(a.input_ids, b.input_ids)


def test_other_resolutions_and_errors(tok, scene) -> None:
    store, _, _ = scene
    sel = store.select_tick(2_718_000_000)
    # The telephoto camera at another resolution: its grid and token count follow.
    tele = preprocess_frame(np.zeros((720, 1280, 3), np.uint8), 6, 1)
    frames = list(sel.frames[:12]) + [replace(tele, stamp_ns=i) for i in range(4)]
    mi = build_model_inputs(frames, np.full(48, 154669), tok)
    n_tele = int(np.prod(tele.grid_thw)) // 4
    assert [e - s for s, e in mi.image_token_spans] == [180] * 12 + [n_tele] * 4
    pos, delta = rope_index(mi.input_ids, mi.image_grid_thw, 151655)
    assert np.array_equal(pos, mi.position_ids) and delta == mi.rope_delta
    with pytest.raises(PromptError, match="16 frames"):
        build_model_inputs(sel.frames[:15], np.full(48, 154669), tok)
    with pytest.raises(PromptError, match="camera-major"):
        build_model_inputs(list(sel.frames[4:8]) + list(sel.frames[:4]) + list(sel.frames[8:]), np.full(48, 1), tok)
    with pytest.raises(PromptError, match="oldest first"):
        build_model_inputs(list(sel.frames[:4])[::-1] + list(sel.frames[4:]), np.full(48, 1), tok)
    with pytest.raises(PromptError, match="48"):
        build_model_inputs(sel, np.full(47, 154669), tok)
    with pytest.raises(PromptError, match="layout"):
        build_model_inputs(sel, np.full(48, 154669), AlpamayoTokenizer.synthetic(), ModelInputConfig())


def test_alpamayo_1_5_inputs_route_unguided_question_and_camera_subsets(scene) -> None:
    store, _, _ = scene
    tok15 = AlpamayoTokenizer.synthetic(pad_regular_to=151643, special_keys=SPECIAL_TOKEN_KEYS_1_5)
    cfg = ModelInputConfig.from_config({"model_type": "alpamayo1_5"})
    assert cfg.inputs.variant.model_type == "alpamayo1_5" and cfg.layout == tok15.layout
    sel = store.select_tick(2_718_000_000)
    hist = np.full(48, 154669)
    lay = tok15.layout
    plain = build_model_inputs(sel, hist, tok15, cfg)
    assert plain.route_text is None and plain.unguided is None
    first_image = plain.image_token_spans[0][0]
    assert tok15.decode(plain.input_ids[:first_image]).endswith("user\nFront left camera: frame 0 <|vision_start|>")
    routed = build_model_inputs(sel, hist, tok15, cfg, route_text="Turn left in 40m", unguided=True)
    assert routed.route_text == "Turn left in 40m" and routed.unguided is not None
    assert np.array_equal(routed.unguided.input_ids, plain.input_ids)  # the guidance branch drops only the span
    assert np.array_equal(routed.unguided.position_ids, plain.position_ids)
    assert routed.rope_delta == plain.rope_delta == routed.unguided.rope_delta
    assert routed.seq_len == plain.seq_len + 2 + len("Turn left in 40m")  # byte-level tiny tokenizer
    assert build_model_inputs(sel, hist, tok15, cfg, route_text="x").unguided is None  # guidance not asked
    q = build_question_inputs(sel, "Is the road clear?", tok15, cfg)
    assert lay.traj_history not in q.input_ids and q.input_ids[-1] == lay.special_id("answer_start")
    assert q.images[0].key == plain.images[0].key  # the same frames: the vision cache serves both
    # Camera subsets: 2 and 1 cameras in index order; 3 is not a trained layout.
    for cams in ((1, 6), (1,)):
        sub = replace(cfg, inputs=cfg.inputs.with_cameras(cams))
        frames = [f for f in sel.frames if f.camera_id in cams]
        mi = build_model_inputs(frames, hist, tok15, sub)
        assert len(mi.images) == 4 * len(cams) and mi.rope_delta == 4 * len(cams) * (18 - 180)
    with pytest.raises(ValueError, match="takes 1 or 2 or 4 cameras, got 3"):
        cfg.inputs.with_cameras((0, 1, 6))
    with pytest.raises(ValueError, match="indices 0..6"):
        cfg.inputs.with_cameras((1, 7))
    # Alpamayo-R1 has neither a route nor a question prompt.
    r1 = ModelInputConfig(layout=tok15.layout)
    with pytest.raises(PromptError, match="Alpamayo-R1 takes no route instruction"):
        build_model_inputs(sel, hist, tok15, r1, route_text="Turn left in 40m")
    with pytest.raises(PromptError, match="no question prompt"):
        build_question_inputs(sel, "why?", tok15, r1)


def test_alpamayo_1_5_config_keys_choose_the_text_items() -> None:
    on = ModelInputConfig.from_config({"model_type": "alpamayo1_5"}).inputs.variant
    assert (on.camera_text, on.frame_text) == (True, True)  # absent keys: as the reference helper writes
    off = ModelInputConfig.from_config({"model_type": "alpamayo1_5", "include_camera_ids": True,
                                        "include_frame_nums": False}).inputs.variant
    assert (off.camera_text, off.frame_text, off.route) == (True, False, True)
    r1 = ModelInputConfig.from_config({"model_type": "alpamayo_r1", "include_camera_ids": True}).inputs.variant
    assert (r1.camera_text, r1.frame_text, r1.route, r1.camera_counts) == (False, False, False, (4,))
    with pytest.raises(ValueError, match="model_type 'alpamayo2' is not a supported"):
        ModelInputConfig.from_config({"model_type": "alpamayo2"})
