"""The Planner's tick: t0 policy, input assembly, rollout of the backend's actions, gates, selection."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.core.action_space import ActionSpaceConfig, Normalization, normalize_action
from alpamayo_ros.core.backend import BackendIdentity, BackendOutput, SamplingRequest
from alpamayo_ros.core.geometry import rot_z
from alpamayo_ros.core.history_tokens import HistoryTokenizerConfig, history_token_ids
from alpamayo_ros.core.planner import PlannerConfig, TickNotReady, build_planner, consensus_scores
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer, layout_to_dict

CAMS = (0, 1, 2, 6)
SPEED = 10.0


@dataclass
class ScriptedBackend:
    """Returns fixed controls (accel, curvature) per candidate: the planner must roll them out.

    Normalised with `normalization` (reported in its identity), or without one with config.json's
    constants bf16-rounded, which the Planner then uses."""

    controls: list[tuple[float, float]]
    calls: list[tuple[object, SamplingRequest]] = field(default_factory=list)
    normalization: Normalization | None = None

    @property
    def identity(self) -> BackendIdentity:
        return BackendIdentity("scripted", "test-model", normalization=self.normalization)

    def infer(self, inputs, request):
        self.calls.append((inputs, request))
        n = self.normalization or ActionSpaceConfig().bf16_rounded().normalization("config_bf16")
        cfg = ActionSpaceConfig().with_normalization(n)
        acts = [normalize_action(np.full(64, a), np.full(64, k), cfg) for a, k in self.controls[: request.num_candidates]]
        return BackendOutput(actions=np.stack(acts).astype(np.float32),
                             reasoning=[f"candidate {i}" for i in range(len(acts))],
                             timings_s={"decode": 0.001}, counters={"prefill_calls": 1})

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    tok = AlpamayoTokenizer.synthetic()
    tok.tok.save(str(out / "tokenizer.json"))
    lay = layout_to_dict(tok.layout)
    cfg = {
        "traj_vocab_size": lay["traj_vocab_size"], "traj_token_start_idx": lay["traj_token_start_idx"],
        "vocab_size": lay["vocab_size"], "image_token_id": lay["image_pad_id"],
        "vision_start_token_id": lay["vision_start_id"], "vision_end_token_id": lay["vision_end_id"],
        "im_start_token_id": lay["im_start_id"], "im_end_token_id": lay["im_end_id"], "pad_token_id": lay["pad_id"],
    }
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def drive(planner, t_end: float, heading: float = 0.7, origin=(100.0, -50.0, 2.0), cam_hz: float = 10.0,
          odom_hz: float = 50.0, cameras=CAMS) -> None:
    """Straight drive at SPEED along `heading` in the odometry frame; small grey-gradient images."""
    img = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (180, 1, 3))
    for i in range(int(t_end * cam_hz) + 1):
        for cam in cameras:
            planner.add_image(cam, i / cam_hz, img)
    q = np.array([0.0, 0.0, np.sin(heading / 2), np.cos(heading / 2)])
    fwd = np.array([np.cos(heading), np.sin(heading), 0.0])
    for i in range(int(t_end * odom_hz) + 1):
        t = i / odom_hz
        planner.add_odometry(t, np.asarray(origin) + SPEED * t * fwd, q, np.array([SPEED, 0.0, 0.0]))


def make(model_dir, controls=((0.0, 0.0),), **cfg):
    backend = ScriptedBackend(list(controls))
    sampling = SamplingRequest(num_candidates=len(controls), seed=cfg.pop("seed", 7))
    return build_planner(backend, model_dir, PlannerConfig(sampling=sampling, **cfg)), backend


def test_straight_drive_rolls_out_in_the_ego_frame_at_t0(model_dir) -> None:
    planner, backend = make(model_dir)
    drive(planner, 2.0)
    assert planner.latest_ready_t0() == pytest.approx(2.0)
    res = planner.plan()
    assert res.t0 == pytest.approx(2.0)
    assert res.xyz.shape == (1, 64, 3) and res.rot.shape == (1, 64, 3, 3)
    assert res.v0 == pytest.approx(SPEED, abs=0.05)
    t = 0.1 * np.arange(1, 65)
    np.testing.assert_allclose(res.xyz[0, :, 0], SPEED * t, rtol=0.01, atol=0.1)
    np.testing.assert_allclose(res.xyz[0, :, 1], 0.0, atol=0.05)
    assert res.ok and res.input_gate.ok and res.selected == 0
    # the ego pose at t0 in the odometry frame, for mapping paths back
    np.testing.assert_allclose(res.t0_pose_world[0], [100 + 20 * np.cos(0.7), -50 + 20 * np.sin(0.7), 2.0], atol=1e-6)
    np.testing.assert_allclose(res.t0_pose_world[1], rot_z(0.7), atol=1e-9)


def test_backend_receives_the_tick_inputs(model_dir) -> None:
    planner, backend = make(model_dir)
    drive(planner, 2.0)
    planner.plan(2.0)
    inputs, request = backend.calls[-1]
    assert [im.key for im in inputs.images] == [
        (cam, round(t * 1e9)) for cam in CAMS for t in (1.7, 1.8, 1.9, 2.0)]
    hist = planner.poses.history(2.0)
    ids = history_token_ids(hist.model_inputs()[0][0, 0], HistoryTokenizerConfig.from_model_config(
        json.loads((model_dir / "config.json").read_text())))
    seq = inputs.input_ids
    start = int(np.flatnonzero(seq == planner.tokenizer.layout.traj_history_start)[0])
    np.testing.assert_array_equal(seq[start + 1:start + 49], ids)
    # at 10 m/s the oldest sample is 15 m behind: the first x delta saturates to bin 0 (spec §3.2)
    assert ids[0] == planner.history_tokens.hist_token_start_idx
    assert request.num_candidates == 1


def test_curvature_turns_the_path_left(model_dir) -> None:
    planner, _ = make(model_dir, controls=[(0.0, 0.02)])
    drive(planner, 2.0)
    res = planner.plan()
    radius = 1 / 0.02
    theta = SPEED * 6.4 / radius
    np.testing.assert_allclose(res.xyz[0, -1, :2], [radius * np.sin(theta), radius * (1 - np.cos(theta))],
                               atol=0.6)
    assert res.yaw[0, -1] == pytest.approx(theta, abs=0.02)


def test_odometry_lag_moves_t0_back_and_large_lag_is_stale(model_dir) -> None:
    planner, _ = make(model_dir)
    drive(planner, 2.0, odom_hz=50.0)
    img = np.zeros((180, 320, 3), np.uint8)
    for cam in CAMS:
        planner.add_image(cam, 2.05, img)  # cameras 50 ms ahead of odometry
    assert planner.latest_ready_t0() == pytest.approx(2.0)
    for t in (2.1, 2.2, 2.3, 2.4, 2.5):
        for cam in CAMS:
            planner.add_image(cam, t, img)  # odometry stops at 2.0 s: 500 ms behind
    with pytest.raises(TickNotReady) as exc:
        planner.plan()
    assert exc.value.code == "stale_odometry"


def test_skewed_10hz_cameras_keep_their_newest_frames_when_odometry_lags(model_dir) -> None:
    """Synchronised 10 Hz cameras a few ms apart: t0 is a camera stamp at which every camera's newest
    frame is at or before it, bounded by the newest odometry; no camera loses a slot to the previous period."""
    planner, backend = make(model_dir)
    offsets = {0: 0.003, 1: 0.0, 2: 0.005, 6: 0.001}  # the demo bag's trigger offsets
    img = np.zeros((180, 320, 3), np.uint8)
    for i in range(21):
        for cam, off in offsets.items():
            planner.add_image(cam, i / 10 + off, img)
    q = np.array([0.0, 0.0, 0.0, 1.0])
    for i in range(101):  # 50 Hz odometry up to 2.0 s: 5 ms behind camera 2's newest frame
        planner.add_odometry(i / 50, np.array([SPEED * i / 50, 0.0, 0.0]), q)
    assert planner.latest_ready_t0() == pytest.approx(1.905)  # the newest tick the odometry covers
    planner.add_odometry(2.02, np.array([SPEED * 2.02, 0.0, 0.0]), q)
    assert planner.latest_ready_t0() == pytest.approx(2.005)
    planner.plan()
    inputs, _ = backend.calls[-1]
    assert [im.key for im in inputs.images] == [
        (cam, round((t + offsets[cam]) * 1e9)) for cam in CAMS for t in (1.7, 1.8, 1.9, 2.0)]


def test_frame_lookahead_is_configurable(model_dir) -> None:
    planner, _ = make(model_dir)
    assert planner.frames.cfg.lookahead_s == PlannerConfig().frame_lookahead_s == 0.002
    exact, _ = make(model_dir, frame_lookahead_s=0.0)
    assert exact.frames.cfg.lookahead_s == 0.0
    img = np.zeros((180, 320, 3), np.uint8)
    for p in (planner, exact):
        for i in range(21):
            for cam in CAMS:
                p.add_image(cam, i / 10 + (0.001 if (cam, i) == (1, 19) else 0.0), img)  # one frame 1 ms late
        for i in range(101):
            p.add_odometry(i / 50, np.array([SPEED * i / 50, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]))
    assert planner.latest_ready_t0() == pytest.approx(2.0)
    # lookahead 0 (the reference's rule): the late frame is after its slot, so t0 = 2.0 cannot be formed
    with pytest.raises(TickNotReady) as exc:
        exact.plan(2.0)
    assert exc.value.code == "slot_out_of_tolerance" and exc.value.details["camera_id"] == 1
    with pytest.raises(ValueError, match="frame_lookahead_s"):
        PlannerConfig(frame_lookahead_s=-0.001)


def test_missing_camera_is_named(model_dir) -> None:
    planner, _ = make(model_dir)
    drive(planner, 2.0, cameras=(0, 1, 6))
    assert planner.latest_ready_t0() is None
    with pytest.raises(TickNotReady) as exc:
        planner.plan()
    assert exc.value.code == "no_frames" and "camera 2" in str(exc.value)


def test_history_not_covered_before_1_5_s_of_odometry(model_dir) -> None:
    planner, _ = make(model_dir)
    drive(planner, 1.0)
    with pytest.raises(TickNotReady) as exc:
        planner.plan(1.0)
    assert exc.value.code == "history_not_covered"


def test_consensus_selects_the_medoid_and_gates_zero_a_bad_candidate(model_dir) -> None:
    # candidate 4 turns sharply but drivably (0.06 1/m at 10 m/s: 6 m/s² lateral, under the 8 m/s² limit)
    controls = [(0.0, 0.0), (0.2, 0.0), (-0.2, 0.0), (0.0, 0.5), (0.0, 0.06)]
    planner, _ = make(model_dir, controls=controls)
    drive(planner, 2.0)
    res = planner.plan()
    assert res.scores.shape == (5,)
    assert not res.output_gates[3].ok  # curvature 0.5 1/m is beyond the 0.33 bound
    assert res.selected == 0  # the middle of the three agreeing candidates
    assert res.scores[0] > res.scores[1] > 0 and res.scores[0] > res.scores[2] > 0
    assert 0 < res.scores[4] < min(res.scores[:3])  # the sharply turning outlier has the least support
    failed = [k for k, g in enumerate(res.output_gates) if not g.ok]
    assert all(res.scores[k] == 0 for k in failed)


def test_consensus_scores_single_and_all_failed() -> None:
    xyz = np.zeros((1, 64, 3))
    assert consensus_scores(xyz, np.array([True]), 2.0).tolist() == [1.0]
    xyz = np.random.default_rng(0).normal(size=(3, 64, 3))
    assert consensus_scores(xyz, np.zeros(3, bool), 2.0).tolist() == [0.0, 0.0, 0.0]


def test_seed_policy(model_dir) -> None:
    fixed, b1 = make(model_dir, seed_policy="fixed", seed=7)
    per_tick, b2 = make(model_dir, seed_policy="per_tick", seed=7)
    for p in (fixed, per_tick):
        drive(p, 2.5)
        p.plan(2.0)
        p.plan(2.5)
    assert [r.seed for _, r in b1.calls] == [7, 7]
    s = [r.seed for _, r in b2.calls]
    assert s[0] != s[1] and all(0 <= v < 2**63 for v in s)
    again, b3 = make(model_dir, seed_policy="per_tick", seed=7)
    drive(again, 2.0)
    again.plan(2.0)
    assert b3.calls[0][1].seed == s[0]  # derived from (seed, t0) only: replay == live


def test_time_jump_is_reported_and_reset_recovers(model_dir) -> None:
    from alpamayo_ros.core.egomotion import PoseRejected

    planner, _ = make(model_dir)
    drive(planner, 2.0)
    q = np.array([0.0, 0.0, 0.0, 1.0])
    with pytest.raises(PoseRejected) as small:
        planner.add_odometry(1.95, np.zeros(3), q)
    assert small.value.reason_code == "odometry_out_of_order"
    with pytest.raises(PoseRejected) as jump:
        planner.add_odometry(0.5, np.zeros(3), q)
    assert jump.value.reason_code == "time_jump"
    planner.reset()
    assert planner.latest_ready_t0() is None
    drive(planner, 2.0)
    assert planner.plan().ok


def test_camera_set_must_match_the_model(model_dir) -> None:
    with pytest.raises(ValueError, match=r"Alpamayo-R1 was trained on cameras \[0, 1, 2, 6\] only"):
        make(model_dir, camera_ids=(0, 1, 2, 3))
    with pytest.raises(ValueError, match="takes 4 cameras, got 2"):
        make(model_dir, camera_ids=(1, 6))


def test_missing_tokenizer_names_the_fix(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="prepare-tokenizer"):
        build_planner(ScriptedBackend([(0.0, 0.0)]), tmp_path, PlannerConfig())


def test_normalization_constants_come_from_the_backend_with_an_override(model_dir) -> None:
    # A backend that knows its checkpoint's constants: the Planner de-normalises with exactly those.
    held = Normalization(0.1, 0.5, 0.001, 0.03, source="checkpoint")
    backend = ScriptedBackend([(1.0, 0.01)], normalization=held)
    planner = build_planner(backend, model_dir, PlannerConfig(sampling=SamplingRequest(num_candidates=1)))
    assert planner.normalization is held
    assert (planner.action_space.accel_std, planner.action_space.curvature_mean) == (0.5, 0.001)
    drive(planner, 2.0)
    res = planner.plan()
    np.testing.assert_allclose(res.acceleration, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.curvature, 0.01, atol=1e-8)
    # A backend that does not: config.json rounded to bf16, as the released checkpoint stores it.
    plain, _ = make(model_dir)
    assert plain.normalization == ActionSpaceConfig.released_bf16().normalization("config_bf16")
    assert plain.action_space == ActionSpaceConfig.from_model_config({}, bf16_constants=True)
    # Explicit overrides.
    for choice, expected in (("config", ActionSpaceConfig()), ("config_bf16", ActionSpaceConfig.released_bf16())):
        p = build_planner(backend, model_dir, PlannerConfig(normalization_constants=choice))
        assert p.normalization == expected.normalization(choice) and p.action_space == expected
    with pytest.raises(ValueError, match="normalization_constants"):
        PlannerConfig(normalization_constants="weights")


def test_drive_index_follows_the_gates_and_ignores_them_when_disabled(model_dir) -> None:
    planner, _ = make(model_dir, controls=[(0.0, 0.5)])  # curvature beyond the bound: output gate fails
    drive(planner, 2.0)
    res = planner.plan()
    assert res.drive_index is None
    assert res.rejection == ("output_gate", res.output_gates[0].reasons) and res.rejection[1]
    ungated, _ = make(model_dir, controls=[(0.0, 0.5)], gates_enabled=False)
    drive(ungated, 2.0)
    res = ungated.plan()
    assert res.rejection is None and res.drive_index == 0 and res.ok
    ok, _ = make(model_dir)
    drive(ok, 2.0)
    assert ok.plan().drive_index == 0


@pytest.fixture(scope="module")
def model_dir_1_5(tmp_path_factory) -> Path:
    from alpamayo_ros.core.model_config import SPECIAL_TOKEN_KEYS_1_5

    out = tmp_path_factory.mktemp("model15")
    tok = AlpamayoTokenizer.synthetic(special_keys=SPECIAL_TOKEN_KEYS_1_5)
    tok.tok.save(str(out / "tokenizer.json"))
    lay = layout_to_dict(tok.layout)
    cfg = {"model_type": "alpamayo1_5", "traj_vocab_size": lay["traj_vocab_size"],
           "traj_token_start_idx": lay["traj_token_start_idx"], "vocab_size": lay["vocab_size"],
           "image_token_id": lay["image_pad_id"], "vision_start_token_id": lay["vision_start_id"],
           "vision_end_token_id": lay["vision_end_id"], "im_start_token_id": lay["im_start_id"],
           "im_end_token_id": lay["im_end_id"], "pad_token_id": lay["pad_id"]}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@dataclass
class AnsweringBackend(ScriptedBackend):
    asked: list = field(default_factory=list)

    def answer(self, inputs, request, max_new_tokens, cancelled=None):
        from alpamayo_ros.core.backend import AnswerOutput

        self.asked.append((inputs, request, max_new_tokens))
        return AnswerOutput("a clear road", True, 4)


def test_alpamayo_1_5_route_guidance_and_questions_through_the_planner(model_dir_1_5, model_dir) -> None:
    backend = AnsweringBackend([(0.0, 0.0), (0.5, 0.0)])
    sampling = SamplingRequest(num_candidates=2, seed=3, nav_guidance_weight=1.5, noise_temperature=0.6)
    planner = build_planner(backend, model_dir_1_5, PlannerConfig(camera_ids=(1, 6), sampling=sampling))
    assert planner.variant.model_type == "alpamayo1_5" and planner.answers_questions
    with pytest.raises(TickNotReady, match="no tick has run yet"):
        planner.answer("What is ahead?", 16)
    drive(planner, 2.0, cameras=(1, 6))
    res = planner.plan(route="Turn left in 40m")
    inputs, request = backend.calls[-1]
    lay = planner.tokenizer.layout
    assert res.route_instruction == "Turn left in 40m" and inputs.route_text == "Turn left in 40m"
    assert len(inputs.images) == 8 and lay.special_id("route_start") in inputs.input_ids
    assert inputs.unguided is not None and lay.special_id("route_start") not in inputs.unguided.input_ids
    assert (request.nav_guidance_weight, request.noise_temperature) == (1.5, 0.6)
    assert res.nav_guidance_weight == 0.0  # what the backend applied (this one applies none)
    # Without an instruction nothing is guided: no second prompt, the weight is not passed on.
    res = planner.plan()
    inputs, request = backend.calls[-1]
    assert res.route_instruction == "" and inputs.unguided is None and request.nav_guidance_weight == 0.0
    # A question: the newest tick's frames, the question prompt, the tick's seed.
    out, t0 = planner.answer("What is ahead?", 16)
    q_inputs, q_request, max_new = backend.asked[-1]
    assert (out.text, out.complete, t0, max_new) == ("a clear road", True, res.t0, 16)
    assert [im.key for im in q_inputs.images] == [im.key for im in inputs.images]
    assert q_inputs.input_ids[-1] == lay.special_id("answer_start") and q_request.seed == res.seed
    planner.reset()
    with pytest.raises(TickNotReady):
        planner.answer("again?", 16)
    # Alpamayo-R1: no route, no questions.
    r1 = build_planner(AnsweringBackend([(0.0, 0.0)]), model_dir, PlannerConfig(
        sampling=SamplingRequest(num_candidates=1)))
    assert not r1.answers_questions
    drive(r1, 2.0)
    with pytest.raises(ValueError, match="takes no route instruction"):
        r1.plan(route="Turn left in 40m")
    with pytest.raises(ValueError, match="cannot answer questions"):
        r1.answer("What is ahead?", 16)
    with pytest.raises(ValueError, match="takes 1 or 2 or 4 cameras, got 3"):
        build_planner(backend, model_dir_1_5, PlannerConfig(camera_ids=(0, 1, 6), sampling=sampling))
