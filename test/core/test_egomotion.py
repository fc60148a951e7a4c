"""Pose buffer and egomotion history (spec §3.1): timestamp interpolation, frames, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from motion_cases import Motion, world_poses

from alpamayo_ros.core.egomotion import (
    ContinuityConfig,
    ContinuityEvent,
    HistoryUnavailable,
    PoseBuffer,
    PoseRejected,
    Reason,
    find_discontinuity,
    future_in_ego_frame,
    step_residuals,
    to_ego_frame,
)
from alpamayo_ros.core.geometry import quat_multiply, quat_to_rotmat, rot_z, rotmat_to_quat, yaw_from_rotmat

T0 = 1_700_000_000.25  # epoch-like stamps: float64 resolution matters
MOTION = Motion(10.0, accel=0.5, yaw_rate=0.15)
WORLD_ROT = rot_z(0.7)
WORLD_OFFSET = np.array([3.5e5, 5.6e6, 42.0])  # UTM-sized odometry coordinates


def filled(rate_hz, jitter_s=0.0, seed=0, start=-3.0, end=0.0, motion=MOTION, t0=T0, **kw):
    rng = np.random.default_rng(seed)
    stamps = t0 + np.arange(start, end + 1e-9, 1.0 / rate_hz)
    if jitter_s:
        stamps = stamps + rng.uniform(-jitter_s, jitter_s, stamps.shape)
        stamps[-1] = max(stamps[-1], t0)  # keep t0 covered
    p, q = world_poses(motion, stamps, t0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(**kw)
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi, twist_linear=[motion.v0 + motion.accel * (s - t0), 0.0, 0.0])
    return buf


def test_history_matches_the_analytic_ego_frame_motion():
    h = filled(100).history(T0)
    exp_xyz, exp_rot = MOTION.ego_history()
    assert h.xyz.shape == (16, 3) and h.rot.shape == (16, 3, 3)
    assert np.all(h.xyz[-1] == 0.0) and np.all(h.rot[-1] == np.eye(3))
    np.testing.assert_allclose(h.xyz, exp_xyz, atol=2e-3)  # chord error of 1 cm-spaced samples
    np.testing.assert_allclose(h.rot, exp_rot, atol=1e-6)
    np.testing.assert_allclose(h.stamps, T0 + np.arange(-15, 1) * 0.1, atol=1e-6)
    assert h.stamps[-1] == T0 and h.t0 == T0
    assert h.speed_from_twist == pytest.approx(10.0)
    xyz32, rot32 = h.model_inputs()
    assert xyz32.shape == (1, 1, 16, 3) and rot32.shape == (1, 1, 16, 3, 3) and xyz32.dtype == np.float32
    np.testing.assert_array_equal(xyz32[0, 0], h.xyz.astype(np.float32))


@pytest.mark.parametrize("rate", [10, 30, 50, 100])
@pytest.mark.parametrize("jitter", [0.0, 0.01])
def test_odometry_rate_does_not_matter(rate, jitter):
    ref = filled(100).history(T0)
    h = filled(rate, jitter_s=jitter / (rate / 10), seed=rate).history(T0)
    # linear interpolation between 10 Hz samples cuts the arc: ≤ (v·Δt)²·κ/8 ≈ 1 mm here
    np.testing.assert_allclose(h.xyz, ref.xyz, atol=5e-3)
    np.testing.assert_allclose(h.rot, ref.rot, atol=1e-5)


def test_ten_hz_on_the_grid_is_exact():
    h = filled(10, motion=Motion(8.0, yaw_rate=0.2)).history(T0)
    exp_xyz, exp_rot = Motion(8.0, yaw_rate=0.2).ego_history()
    np.testing.assert_allclose(h.xyz, exp_xyz, atol=1e-6)  # only float64 stamp noise remains
    np.testing.assert_allclose(h.rot, exp_rot, atol=1e-7)  # 2.4e-7 s stamp resolution × 0.2 rad/s


def test_index_stride_would_be_wrong_but_timestamps_are_right():
    # 50 Hz odometry with a 20 ms dropout pattern: taking "every 5th message" drifts, stamps do not
    stamps = T0 + np.arange(-3.0, 1e-9, 0.02)
    stamps = np.delete(stamps, np.arange(10, stamps.size - 20, 7))
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer()
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    np.testing.assert_allclose(buf.history(T0).xyz, MOTION.ego_history()[0], atol=2e-3)


def test_to_world_inverts_the_ego_frame():
    buf = filled(50)
    h = buf.history(T0)
    p, r = h.to_world(h.xyz, h.rot)
    for k in (0, 7, 15):
        pose = buf.pose_at(h.stamps[k])
        np.testing.assert_allclose(p[k], pose.position, atol=1e-6)
        np.testing.assert_allclose(r[k], pose.rot, atol=1e-9)
    back, _ = to_ego_frame(p, None, h.origin.position, h.origin.rot)
    np.testing.assert_allclose(back, h.xyz, atol=1e-6)


def test_pose_at_interpolates_linearly_and_by_slerp():
    buf = PoseBuffer()
    buf.add(10.0, [0, 0, 0], [0, 0, 0, 1])
    q1 = np.r_[0, 0, np.sin(0.5), np.cos(0.5)]  # yaw 1 rad
    buf.add(10.2, [2.0, 4.0, 0], q1)
    pose = buf.pose_at(10.05)
    np.testing.assert_allclose(pose.position, [0.5, 1.0, 0.0], atol=1e-12)
    assert yaw_from_rotmat(pose.rot) == pytest.approx(0.25, abs=1e-12)
    np.testing.assert_allclose(pose.rot, quat_to_rotmat(pose.quaternion))


def test_future_in_ego_frame_for_replay_ground_truth():
    buf = filled(50, start=-3.0, end=7.0)
    xyz, rot = future_in_ego_frame(buf, T0)
    exp_xyz, exp_rot = MOTION.ego_future()
    assert xyz.shape == (64, 3) and rot.shape == (64, 3, 3)
    np.testing.assert_allclose(xyz, exp_xyz, atol=5e-3)
    np.testing.assert_allclose(rot, exp_rot, atol=1e-6)
    with pytest.raises(HistoryUnavailable) as e:
        future_in_ego_frame(buf, T0 + 1.0)  # needs up to T0 + 7.4
    assert e.value.reason_code == Reason.STALE and e.value.details["missing_s"] == pytest.approx(0.4, abs=1e-6)


# ------------------------------------------------------------------ errors
def test_empty_buffer():
    with pytest.raises(HistoryUnavailable) as e:
        PoseBuffer().history(T0)
    assert e.value.reason_code == Reason.BUFFER_EMPTY
    assert PoseBuffer().latest_stamp is None and not PoseBuffer().covers(T0)


def test_too_little_history_says_how_much_is_missing():
    buf = filled(50, start=-1.0)
    with pytest.raises(HistoryUnavailable) as e:
        buf.history(T0)
    assert e.value.reason_code == Reason.NOT_COVERED_PAST
    assert e.value.details["missing_s"] == pytest.approx(0.5, abs=1e-6)
    assert "0.500 s" in str(e.value)
    assert not buf.covers(T0) and buf.covers(T0 - 1e-3) is False


def test_stale_odometry_is_not_extrapolated_unless_allowed():
    buf = filled(50, end=-0.2)
    with pytest.raises(HistoryUnavailable) as e:
        buf.history(T0)
    assert e.value.reason_code == Reason.STALE and e.value.details["missing_s"] == pytest.approx(0.2, abs=1e-6)
    lenient = filled(50, end=-0.02, max_extrapolation_s=0.05)
    h = lenient.history(T0)
    assert h.extrapolated_s == pytest.approx(0.02, abs=1e-6)
    np.testing.assert_allclose(h.xyz, filled(50).history(T0).xyz, atol=5e-3)


def test_gap_in_odometry_is_refused():
    stamps = T0 + np.r_[np.arange(-3.0, -0.8, 0.02), np.arange(-0.3, 1e-9, 0.02)]
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(max_gap_s=0.3)
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    with pytest.raises(HistoryUnavailable) as e:
        buf.history(T0)
    assert e.value.reason_code == Reason.GAP and e.value.details["gap_s"] == pytest.approx(0.52, abs=1e-3)
    buf.history(T0 - 0.82)  # a window that ends before the gap is fine


def test_time_jump_raises_or_resets():
    buf = filled(50)
    n = len(buf)
    with pytest.raises(PoseRejected) as e:
        buf.add(T0 - 10.0, [0, 0, 0], [0, 0, 0, 1])
    assert e.value.reason_code == Reason.TIME_JUMP and e.value.details["jump_s"] == pytest.approx(10.0, abs=1e-6)
    assert len(buf) == n  # unchanged
    looping = filled(50, reset_on_time_jump=True)
    assert looping.add(T0 - 10.0, [1, 2, 3], [0, 0, 0, 1])
    assert len(looping) == 1 and looping.time_jumps == 1 and looping.latest_stamp == T0 - 10.0
    with pytest.raises(HistoryUnavailable) as e2:
        looping.history(T0 - 10.0)
    assert e2.value.reason_code == Reason.NOT_COVERED_PAST and "time jump" in str(e2.value)


@pytest.mark.parametrize(("position", "quat", "code"), [
    ([np.nan, 0, 0], [0, 0, 0, 1], Reason.POSE_NONFINITE),
    ([0, 0, 0], [0, 0, np.inf, 1], Reason.POSE_NONFINITE),
    ([0, 0, 0], [0, 0, 0, 0.9], Reason.QUATERNION_NOT_UNIT),
    ([0, 0, 0], [0, 0, 0, 0], Reason.QUATERNION_NOT_UNIT),
    ([0, 0], [0, 0, 0, 1], Reason.BAD_SHAPE),
])
def test_bad_poses_are_rejected(position, quat, code):
    buf = PoseBuffer()
    with pytest.raises(PoseRejected) as e:
        buf.add(1.0, position, quat)
    assert e.value.reason_code == code and len(buf) == 0


def test_duplicate_stamps_are_ignored_and_near_unit_quaternions_normalized():
    buf = PoseBuffer()
    assert buf.add(1.0, [0, 0, 0], [0, 0, 0, 1.0005])
    assert not buf.add(1.0, [5, 0, 0], [0, 0, 0, 1])
    assert len(buf) == 1 and np.allclose(buf.pose_at(1.0).position, 0.0)
    assert np.linalg.norm(buf.pose_at(1.0).quaternion) == pytest.approx(1.0, abs=1e-15)


def test_buffer_is_bounded_and_reset():
    stamps = T0 - 20.0 + np.arange(2000) * 0.01  # 20 s at 100 Hz: many compactions
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(max_duration_s=2.0, max_poses=64)
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    assert len(buf) <= 64
    assert buf.latest_stamp == pytest.approx(T0 - 0.01)
    assert not buf.covers(T0 - 0.01)  # only 0.64 s kept by max_poses
    big = PoseBuffer(max_duration_s=2.0)
    for s, pi, qi in zip(stamps, p, q, strict=True):
        big.add(s, pi, qi)
    assert big.earliest_stamp <= big.latest_stamp - 2.0 and len(big) <= 202
    assert big.covers(T0 - 0.01)
    exp = filled(100).history(T0 - 0.01)
    np.testing.assert_allclose(big.history(T0 - 0.01).xyz, exp.xyz, atol=1e-6)
    big.reset()
    assert len(big) == 0 and big.latest_stamp is None


# ------------------------------------------------------------------ properties
@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-np.pi, np.pi), roll=st.floats(-0.3, 0.3), pitch=st.floats(-0.3, 0.3),
    offset=st.lists(st.floats(-1e5, 1e5), min_size=3, max_size=3),
)
def test_moving_or_rotating_the_world_leaves_the_history_unchanged(yaw, roll, pitch, offset):
    ref = filled(30).history(T0)
    cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    world = rot_z(yaw) @ ry @ rx
    stamps = T0 + np.arange(-3.0, 1e-9, 1 / 30)
    p, q = world_poses(MOTION, stamps, T0, world, np.asarray(offset))
    buf = PoseBuffer()
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    h = buf.history(T0)
    np.testing.assert_allclose(h.xyz, ref.xyz, atol=1e-6)
    np.testing.assert_allclose(h.rot, ref.rot, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(offset=st.floats(-4.0, 4.0), rate=st.sampled_from([10, 33, 100]))
def test_interpolation_never_extrapolates_silently(offset, rate):
    buf = filled(rate, start=-2.0, end=0.0)
    t0 = T0 + offset
    try:
        h = buf.history(t0)
    except HistoryUnavailable as e:
        assert e.reason_code in (Reason.NOT_COVERED_PAST, Reason.STALE)
        assert e.details["missing_s"] > 0
        assert h_outside(buf, t0)
    else:
        assert h.stamps[0] >= buf.earliest_stamp - 1e-6 and h.stamps[-1] <= buf.latest_stamp + 1e-6
        assert h.extrapolated_s == 0.0


def h_outside(buf, t0):
    return t0 - 1.5 < buf.earliest_stamp - 1e-6 or t0 > buf.latest_stamp + 1e-6


def test_concurrent_adds_and_history_reads_stay_consistent():
    import threading

    stamps = T0 - 30.0 + np.arange(3001) * 0.01
    p, q = world_poses(Motion(10.0), stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(max_duration_s=2.0, max_poses=256)  # small: compaction happens often
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        for s, pi, qi in zip(stamps, p, q, strict=True):
            buf.add(s, pi, qi)
        done.set()

    def reader():
        while not done.is_set():
            latest = buf.latest_stamp
            if latest is None:
                continue
            try:
                h = buf.history(latest)
            except HistoryUnavailable:
                continue
            except BaseException as e:  # anything else is a race
                errors.append(e)
                return
            # straight line at 10 m/s: every history must be exactly that, whatever the timing
            if np.abs(h.xyz[:, 0] - np.arange(-15, 1)).max() > 1e-4 or np.abs(h.xyz[:, 1:]).max() > 1e-4:
                errors.append(AssertionError(f"inconsistent history at {latest}"))
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_long_replay_buffer_grows_with_what_it_holds():
    stamps = T0 - 60.0 + np.arange(6001) * 0.01  # 60 s at 100 Hz, all kept
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(max_duration_s=1e9, max_poses=1_000_000)
    assert buf._t.shape[0] <= 1024  # nothing like 2 M rows up front
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    assert len(buf) == 6001 and buf.earliest_stamp == stamps[0]
    assert buf._t.shape[0] < 4 * 6001
    np.testing.assert_allclose(buf.history(T0).xyz, filled(100).history(T0).xyz, atol=1e-6)
    np.testing.assert_allclose(buf.pose_at(stamps[0]).position, p[0], atol=1e-9)


# ------------------------------------------------------------------ continuity (relocalisation, outliers)
def jumped(offset_world, at_s=-1.0, back_after=None, twist=True, rate=50, heading_jump=0.0, **kw):
    """MOTION at `rate` Hz over t0-3…t0 whose poses from t0+at_s on are moved by `offset_world` (and
    turned by `heading_jump`); with `back_after` samples the jump ends again (a glitch)."""
    stamps = T0 + np.arange(-3.0, 1e-9, 1.0 / rate)
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    hit = np.flatnonzero(stamps >= T0 + at_s)
    if back_after is not None:
        hit = hit[:back_after]
    p[hit] += np.asarray(offset_world, dtype=float)
    if heading_jump:
        q[hit] = quat_multiply(rotmat_to_quat(rot_z(heading_jump))[None], q[hit])
    buf = PoseBuffer(continuity=ContinuityConfig(), **kw)
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi, twist_linear=[MOTION.v0 + MOTION.accel * (s - T0), 0.0, 0.0] if twist else None)
    return buf, stamps[hit[0]]


@pytest.mark.parametrize("twist", [True, False])
@pytest.mark.parametrize("offset", [[1000.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-1.5, 1.0, 0.3]])
def test_a_jump_that_stays_restarts_the_history(offset, twist):
    buf, t_jump = jumped(offset, twist=twist)
    events = buf.pop_events()
    assert [e.kind for e in events] == [ContinuityEvent.RELOCALISATION] and buf.relocalisations == 1
    assert events[0].stamp == t_jump and events[0].error_m == pytest.approx(np.linalg.norm(offset), abs=0.05)
    assert "relocalisation" in events[0].message and buf.pop_events() == []
    assert buf.earliest_stamp == t_jump  # nothing from before the jump is left
    with pytest.raises(HistoryUnavailable) as e:
        buf.history(T0)  # only 1 s since the jump
    assert e.value.reason_code == Reason.NOT_COVERED_PAST and "relocalisation" in str(e.value)
    assert buf.covers(t_jump + 1.5) is False and buf.latest_stamp == T0


def test_history_resumes_and_is_clean_once_1_5_s_passed_the_jump():
    buf, t_jump = jumped([0.0, 2.0, 0.0], at_s=-2.0)
    h = buf.history(T0)  # 2 s after the jump: the new track only
    assert h.stamps[0] >= t_jump
    np.testing.assert_allclose(h.xyz, MOTION.ego_history()[0], atol=2e-3)
    assert find_discontinuity(h.stamps, h.xyz, h.rot, h.twist) is None


@pytest.mark.parametrize("twist", [True, False])
def test_a_single_glitch_is_dropped_as_an_outlier(twist):
    buf, t_glitch = jumped([5.0, 0.0, 0.0], back_after=1, twist=twist)
    events = buf.pop_events()
    assert [e.kind for e in events] == [ContinuityEvent.OUTLIER] and buf.outliers == 1
    assert events[0].stamp == t_glitch and buf.relocalisations == 0
    h = buf.history(T0)  # the glitch never entered the buffer (one 20 ms sample fewer: chord error only)
    np.testing.assert_allclose(h.xyz, filled(50).history(T0).xyz, atol=1e-3)


def test_a_heading_flip_is_a_discontinuity():
    buf, _ = jumped([0.0, 0.0, 0.0], heading_jump=np.pi / 2)
    assert [e.kind for e in buf.pop_events()] == [ContinuityEvent.RELOCALISATION]


@pytest.mark.parametrize("rate", [10, 50, 100])
@pytest.mark.parametrize("twist_error", [0.0, 0.1])
def test_real_motion_is_never_a_jump(rate, twist_error):
    # 10 m/s accelerating at 0.5 m/s² through a 0.15 rad/s turn, jittered stamps, a twist 10 % off
    rng = np.random.default_rng(rate)
    stamps = np.sort(T0 + np.arange(-3.0, 1e-9, 1.0 / rate) + rng.uniform(-0.002, 0.002, int(3 * rate) + 1))
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    buf = PoseBuffer(continuity=ContinuityConfig())
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi, twist_linear=[(MOTION.v0 + MOTION.accel * (s - T0)) * (1 + twist_error), 0.0, 0.0])
    assert buf.pop_events() == [] and len(buf) == stamps.size


def test_no_jump_check_across_an_odometry_gap():
    stamps = np.concatenate([T0 + np.arange(-3.0, -1.0, 0.02), T0 + np.arange(-0.5, 1e-9, 0.02)])
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    p[stamps >= T0 - 0.5] += [30.0, 0.0, 0.0]
    buf = PoseBuffer(continuity=ContinuityConfig())
    for s, pi, qi in zip(stamps, p, q, strict=True):
        buf.add(s, pi, qi)
    assert buf.pop_events() == [] and len(buf) == stamps.size  # the gap itself refuses these windows
    with pytest.raises(HistoryUnavailable) as e:
        buf.history(T0)
    assert e.value.reason_code == Reason.GAP


def test_a_twist_that_is_given_must_be_finite():
    buf = PoseBuffer()
    for bad in ([np.inf, 0, 0], [0, np.nan, 0]):
        with pytest.raises(PoseRejected) as e:
            buf.add(1.0, [0, 0, 0], [0, 0, 0, 1], twist_linear=bad)
        assert e.value.reason_code == Reason.TWIST_NONFINITE
    assert len(buf) == 0 and buf.add(1.0, [0, 0, 0], [0, 0, 0, 1], twist_linear=None)


def test_a_pose_older_than_the_held_back_one_is_out_of_order():
    buf = filled(50, end=-0.02, continuity=ContinuityConfig())
    p, q = world_poses(MOTION, np.array([T0]), T0, WORLD_ROT, WORLD_OFFSET)
    assert buf.add(T0, p[0] + [50.0, 0, 0], q[0])  # held back
    assert buf.pending_stamp == T0 and buf.latest_stamp == pytest.approx(T0 - 0.02)
    assert not buf.add(T0, p[0], q[0])  # a repeat of its stamp
    with pytest.raises(PoseRejected) as e:
        buf.add(T0 - 0.01, p[0], q[0])
    assert e.value.reason_code == Reason.OUT_OF_ORDER
    buf.reset()
    assert buf.pending_stamp is None


@pytest.mark.parametrize("twist", [True, False])
@pytest.mark.parametrize("at", [-1.23, -0.5, -0.07])  # the jump falls between history stamps
def test_find_discontinuity_anywhere_in_a_history_window(twist, at):
    plain = filled(50, jitter_s=0.0)
    stamps = T0 + np.arange(-3.0, 1e-9, 0.02)
    p, q = world_poses(MOTION, stamps, T0, WORLD_ROT, WORLD_OFFSET)
    p[stamps >= T0 + at] += WORLD_ROT @ [0.0, 1.5, 0.0]  # a 1.5 m lateral step, no continuity check
    raw = PoseBuffer()
    for s, pi, qi in zip(stamps, p, q, strict=True):
        raw.add(s, pi, qi, twist_linear=[MOTION.v0 + MOTION.accel * (s - T0), 0, 0] if twist else None)
    h = raw.history(T0)
    jump = find_discontinuity(h.stamps, h.xyz, h.rot, h.twist)
    assert jump is not None and abs(h.stamps[jump.index] - (T0 + at)) <= 0.2, jump
    assert "position off by" in jump.describe()
    clean = plain.history(T0)
    assert find_discontinuity(clean.stamps, clean.xyz, clean.rot, clean.twist) is None
    assert find_discontinuity(clean.stamps, clean.xyz, clean.rot, None) is None


def test_step_residuals_predict_from_the_twist_in_the_pose_frame():
    cfg = ContinuityConfig(max_jump_m=0.5, relative_tolerance=0.0)
    rot = np.stack([rot_z(np.pi / 2)] * 2)[:, None]  # heading +y: body x is world y
    res = step_residuals([0.1], [[0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], rot[0], rot[1],
                         [[10.0, 0.0, 0.0]], [[10.0, 0.0, 0.0]], [[np.nan] * 3], cfg)
    np.testing.assert_allclose(res.error, 0.0, atol=1e-12)
    res = step_residuals([0.1], [[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], rot[0], rot[1],
                         [[10.0, 0.0, 0.0]], [[10.0, 0.0, 0.0]], [[np.nan] * 3], cfg)
    assert res.error_m[0] == pytest.approx(np.sqrt(2)) and res.jump.tolist() == [True]
    with pytest.raises(ValueError):
        ContinuityConfig(max_jump_m=0.0)
