"""Input and output gates: each failure mode yields its machine-readable reason."""

from __future__ import annotations

import numpy as np
import pytest
from motion_cases import Motion

from alpamayo_ros.core.action_space import ActionSpaceConfig, action_to_traj, normalize_action
from alpamayo_ros.core.egomotion import PoseBuffer
from alpamayo_ros.core.gates import (
    InputGateConfig,
    InputReason,
    OutputGateConfig,
    OutputReason,
    PlausibilityLimits,
    check_input,
    check_output,
)
from alpamayo_ros.core.geometry import rot_z, rotmat_to_quat

STAMPS = 100.0 + np.arange(-15, 1) * 0.1


def history(v=10.0):
    return Motion(v, yaw_rate=0.1).ego_history()


# ------------------------------------------------------------------ input
def test_good_history_passes_with_matching_twist():
    res = check_input(history(), speed_from_twist=10.2, stamps=STAMPS)
    assert res.ok and res.reasons == [] and res.warnings == []
    assert res.details["speed_implied_mps"] == pytest.approx(10.0, rel=1e-3)


def test_ego_history_from_the_buffer_brings_stamps_and_twist():
    buf = PoseBuffer()
    m = Motion(8.0)
    for s in np.arange(0.0, 3.0001, 0.02):
        buf.add(s, m.position(np.array([s]))[0], rotmat_to_quat(rot_z(0.0)), twist_linear=[8.0, 0, 0])
    assert check_input(buf.history(3.0)).ok
    bad_twist = check_input(buf.history(3.0), speed_from_twist=2.0)
    assert bad_twist.reasons == [InputReason.SPEED_MISMATCH]


@pytest.mark.parametrize(("twist", "ok"), [(8.8, True), (11.4, True), (8.0, False), (12.5, False),
                                          (-10.0, False), (0.0, False)])
def test_speed_mismatch_uses_half_a_metre_per_second_plus_ten_percent(twist, ok):
    # history speed 10 m/s; tolerance 0.5 + 0.1·|twist|: 8.8 -> 1.38 (diff 1.2), 8.0 -> 1.3 (diff 2.0)
    res = check_input(history(), speed_from_twist=twist)
    assert res.ok is ok and res.reasons == ([] if ok else [InputReason.SPEED_MISMATCH])
    assert res.details["speed_tolerance_mps"] == pytest.approx(0.5 + 0.1 * abs(twist))


def test_reversing_history_matches_negative_twist():
    assert check_input(history(-3.0), speed_from_twist=-3.0).ok
    assert not check_input(history(-3.0), speed_from_twist=3.0).ok


def test_t0_must_be_origin_and_identity():
    xyz, rot = history()
    res = check_input((xyz + [0.5, 0, 0], rot))
    assert InputReason.T0_NOT_ORIGIN in res.reasons and res.details["t0_offset_m"] == pytest.approx(0.5)
    res = check_input((xyz, rot_z(0.1)[None] @ rot))
    assert res.reasons == [InputReason.T0_NOT_IDENTITY]


def test_nonfinite_bad_shape_and_non_rotations():
    xyz, rot = history()
    bad = xyz.copy()
    bad[3, 1] = np.nan
    assert check_input((bad, rot)).reasons == [InputReason.NONFINITE]
    assert check_input((xyz[:, :2], rot)).reasons == [InputReason.BAD_SHAPE]
    scaled = rot.copy()
    scaled[2] *= 1.1
    assert check_input((xyz, scaled)).reasons == [InputReason.ROT_NOT_ORTHONORMAL]


def test_stamps_must_increase_at_the_model_rate():
    s = STAMPS.copy()
    s[5] = s[4]
    assert check_input(history(), stamps=s).reasons == [InputReason.STAMPS_NOT_MONOTONIC]
    assert check_input(history(), stamps=100.0 + np.arange(16) * 0.02).reasons == [InputReason.STAMPS_NOT_UNIFORM]
    assert check_input(history(), stamps=STAMPS[::-1]).reasons == [InputReason.STAMPS_NOT_MONOTONIC]


def test_standing_start_is_a_warning_only():
    xyz, rot = history()
    xyz = xyz.copy()
    xyz[:6] = xyz[6]  # stood still for the first half second, then drove off
    res = check_input((xyz, rot), cfg=InputGateConfig())
    assert res.ok and res.warnings == [InputReason.STANDING_START]


# ------------------------------------------------------------------ output
def rollouts(k=4, v0=10.0, accel=0.0, kappa=0.02):
    act = np.broadcast_to(normalize_action(np.full(64, accel), np.full(64, kappa)), (k, 64, 2)).copy()
    xyz, rot = action_to_traj(act, *history(v0), v0=v0)
    return act, xyz, rot


def test_plausible_rollouts_pass():
    act, xyz, rot = rollouts()
    res = check_output(xyz, act, 10.0, rot=rot, controls_normalized=True)
    assert res.ok and res.details["candidate_ok"] == [True] * 4
    assert max(res.details["reverse_m"]) == 0.0
    assert max(res.details["first_waypoint_error_m"]) < 0.05


def test_first_waypoint_far_from_v0_dt_is_flagged_per_candidate():
    act, xyz, rot = rollouts()
    xyz[2] -= [10.6, 0, 0]  # the real failure in ros_anchors §A1: started 10.6 m behind
    res = check_output(xyz, None, 10.0)
    assert res.reasons[0] == OutputReason.FIRST_WAYPOINT and res.details["failed"][OutputReason.FIRST_WAYPOINT] == [2]
    assert res.details["candidate_ok"] == [True, True, False, True]


def test_large_reversal_from_speed_profile_and_from_geometry():
    # braking at 3 m/s² from 2 m/s: the unicycle reverses after 0.67 s and backs up ~28 m
    act, xyz, rot = rollouts(k=1, v0=2.0, accel=-3.0, kappa=0.0)
    res = check_output(xyz, act, 2.0, controls_normalized=True)
    assert OutputReason.REVERSAL in res.reasons and res.details["reverse_m"][0] > 20
    # geometry alone (no controls): rotations say the car faces forward while moving backwards
    res_geo = check_output(xyz, rot=rot)
    assert res_geo.reasons == [OutputReason.REVERSAL]
    res_xonly = check_output(xyz)
    assert res_xonly.reasons == [OutputReason.REVERSAL]
    # a small back-up below 2 m is tolerated
    act, xyz, rot = rollouts(k=1, v0=0.5, accel=-0.2, kappa=0.0)
    res_small = check_output(xyz, act, 0.5, rot=rot, controls_normalized=True)
    assert res_small.ok and 0 < res_small.details["reverse_m"][0] < 2.0


def test_u_turn_is_not_a_reversal_when_rotations_are_known():
    act, xyz, rot = rollouts(k=1, v0=5.0, kappa=0.15)  # turns ~4.8 rad: x goes back by ~13 m
    assert check_output(xyz, act, 5.0, rot=rot, controls_normalized=True).ok


def test_physical_bounds_of_the_action_space():
    cfg = ActionSpaceConfig()
    controls = np.zeros((3, 64, 2))
    controls[1, 10, 0] = -12.0
    controls[2, 5, 1] = 0.4
    _, xyz, _ = rollouts(k=3, kappa=0.0)
    res = check_output(xyz, controls, 10.0, action_cfg=cfg)
    # curvature 0.4 at ~10 m/s is also 40 m/s² of lateral acceleration: beyond any tyre
    assert res.details["failed"] == {OutputReason.ACCEL_BOUNDS: [1], OutputReason.CURVATURE_BOUNDS: [2],
                                     OutputReason.LATERAL_ACCEL_LIMIT: [2]}
    assert res.details["candidate_ok"] == [True, False, False]
    tight = ActionSpaceConfig(curvature_bounds=(-0.5, 0.5))
    assert check_output(xyz, controls, 10.0, action_cfg=tight).reasons == [OutputReason.ACCEL_BOUNDS,
                                                                          OutputReason.LATERAL_ACCEL_LIMIT]


def test_nonfinite_candidates_are_isolated():
    act, xyz, rot = rollouts(k=3)
    xyz[1, 7, 0] = np.inf
    act[2, 3, 1] = np.nan
    res = check_output(xyz, act, 10.0, rot=rot, controls_normalized=True)
    assert res.details["failed"] == {OutputReason.NONFINITE: [1, 2]}
    assert res.details["candidate_ok"] == [True, False, False]
    assert check_output(np.zeros((2, 64, 2))).reasons == [OutputReason.BAD_SHAPE]


def test_single_candidate_shape_is_accepted():
    _, xyz, rot = rollouts(k=1)
    assert check_output(xyz[0], None, 10.0, rot=rot[0]).ok


# ------------------------------------------------------------------ continuity and plausibility limits
def buffered_history(v=5.0, jump_at=None, jump=(0.0, 0.0, 0.0), twist=True, t0=3.0):
    """A straight drive at v through a PoseBuffer without continuity checking (the gate must catch it)."""
    buf = PoseBuffer()
    for s in np.arange(0.0, t0 + 1e-9, 0.02):
        p = np.array([v * s, 0.0, 0.0]) + (np.asarray(jump) if jump_at is not None and s >= jump_at else 0.0)
        buf.add(s, p, rotmat_to_quat(rot_z(0.0)), twist_linear=[v, 0.0, 0.0] if twist else None)
    return buf.history(t0)


@pytest.mark.parametrize("twist", [True, False])
@pytest.mark.parametrize("jump_at", [1.63, 2.21, 2.77])  # early, middle and late in the 1.5 s window
@pytest.mark.parametrize("jump", [(1000.0, 0.0, 0.0), (0.0, 2.0, 0.0)])
def test_a_jump_anywhere_in_the_window_trips_the_input_gate(twist, jump_at, jump):
    h = buffered_history(jump_at=jump_at, jump=jump, twist=twist)
    res = check_input(h)
    assert InputReason.DISCONTINUITY in res.reasons and not res.ok, res
    assert "poses" in res.details["discontinuity"]
    # the reference integration's last-step speed check alone misses a jump before the last step
    if jump_at < 2.8:
        assert InputReason.SPEED_MISMATCH not in res.reasons
    assert check_input(buffered_history(twist=twist)).ok


def test_history_faster_than_a_car_trips_the_speed_limit():
    res = check_input(buffered_history(v=80.0))
    assert res.reasons == [InputReason.SPEED_LIMIT] and res.details["max_history_speed_mps"] == pytest.approx(80.0)
    assert check_input(buffered_history(v=80.0), cfg=InputGateConfig(limits=PlausibilityLimits(90.0, 8.0))).ok
    # a twist beyond the limit counts even when the poses look slower
    assert InputReason.SPEED_LIMIT in check_input(buffered_history(v=5.0), speed_from_twist=1e3).reasons


def test_v0_and_planned_speed_beyond_the_car_fail_every_candidate():
    act, xyz, rot = rollouts(k=2, v0=10.0, kappa=0.0)
    res = check_output(xyz, act, 92.0, rot=rot, controls_normalized=True)  # v0 from a jumped history
    assert res.details["failed"][OutputReason.V0_LIMIT] == [0, 1] and res.details["candidate_ok"] == [False, False]
    # accelerating at 9 m/s² from 30 m/s for 6.4 s ends at ~88 m/s
    act, xyz, rot = rollouts(k=1, v0=30.0, accel=9.0, kappa=0.0)
    res = check_output(xyz, act, 30.0, rot=rot, controls_normalized=True)
    assert res.reasons == [OutputReason.SPEED_LIMIT] and res.details["max_speed_mps"][0] == pytest.approx(87.6, abs=0.5)
    # geometry alone: waypoints 10 m apart are 100 m/s whatever the controls claim
    far = np.zeros((1, 64, 3))
    far[0, :, 0] = 10.0 * np.arange(1, 65)
    assert check_output(far).reasons == [OutputReason.SPEED_LIMIT]


def test_lateral_acceleration_limit():
    act, xyz, rot = rollouts(k=1, v0=10.0, kappa=0.06)  # 6 m/s²: a sharp but drivable curve
    res = check_output(xyz, act, 10.0, rot=rot, controls_normalized=True)
    assert res.ok and res.details["max_lateral_accel_mps2"][0] == pytest.approx(6.0, rel=0.01)
    act, xyz, rot = rollouts(k=1, v0=20.0, kappa=0.06)  # 24 m/s²
    res = check_output(xyz, act, 20.0, rot=rot, controls_normalized=True)
    assert res.reasons == [OutputReason.LATERAL_ACCEL_LIMIT]
    loose = OutputGateConfig(limits=PlausibilityLimits(max_lateral_accel_mps2=30.0))
    assert check_output(xyz, act, 20.0, rot=rot, controls_normalized=True, cfg=loose).ok
    with pytest.raises(ValueError):
        PlausibilityLimits(max_speed_mps=0.0)
