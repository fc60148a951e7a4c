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
    OutputReason,
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
    assert res.details["failed"] == {OutputReason.ACCEL_BOUNDS: [1], OutputReason.CURVATURE_BOUNDS: [2]}
    assert res.details["candidate_ok"] == [True, False, False]
    tight = ActionSpaceConfig(curvature_bounds=(-0.5, 0.5))
    assert check_output(xyz, controls, 10.0, action_cfg=tight).reasons == [OutputReason.ACCEL_BOUNDS]


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
