"""Fallback trajectories: stop profile and re-expression of the last plan at a newer t0."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.ros.fallback import LastPlan, heading_of, reexpress_plan, stop_trajectory


def _rotz(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_stop_trajectory_brakes_then_holds() -> None:
    xyz, yaw = stop_trajectory(v0=6.0, n=64, dt=0.1, decel=3.0)
    assert xyz.shape == (1, 64, 3) and yaw.shape == (1, 64)
    # stops after 2 s at 6²/(2·3) = 6 m, then holds
    assert xyz[0, 19, 0] == pytest.approx(6.0)
    assert np.all(xyz[0, 19:, 0] == pytest.approx(6.0))
    assert xyz[0, 0, 0] == pytest.approx(6.0 * 0.1 - 1.5 * 0.01)
    assert np.all(np.diff(xyz[0, :, 0]) >= 0) and np.all(xyz[0, :, 1:] == 0)
    assert np.all(stop_trajectory(float("nan"), 8, 0.1, 3.0)[0] == 0)


def test_reexpress_straight_constant_speed_in_a_rotated_world() -> None:
    v, dt, n = 10.0, 0.1, 64
    t = dt * np.arange(1, n + 1)
    xyz = np.stack([v * t, np.zeros(n), np.zeros(n)], axis=-1)[None]
    r0 = _rotz(0.7)
    p0 = np.array([100.0, -50.0, 2.0])
    last = LastPlan(t0=10.0, dt=dt, xyz=xyz, yaw=np.zeros((1, n)), pose_world=(p0, r0),
                    scores=[1.0], selected=0, reasoning=["go"])
    # the car followed the plan for 0.5 s: now 5 m further along its heading
    p1 = p0 + r0 @ np.array([5.0, 0.0, 0.0])
    new_xyz, new_yaw = reexpress_plan(last, 10.5, (p1, r0))
    np.testing.assert_allclose(new_xyz[0, :59, 0], v * t[:59], atol=1e-9)  # same plan, shifted in time
    np.testing.assert_allclose(new_xyz[0, 59:, 0], 59.0, atol=1e-9)  # beyond the old horizon: hold
    np.testing.assert_allclose(new_xyz[0, :, 1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(new_yaw, 0.0, atol=1e-12)


def test_reexpress_rotates_into_the_new_heading() -> None:
    n, dt = 4, 0.1
    xyz = np.array([[[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])
    last = LastPlan(10.0, dt, xyz, np.zeros((1, n)), (np.zeros(3), np.eye(3)), [1.0], 0, [""])
    # same time, ego turned +90°: the old +x direction is the new -y direction
    new_xyz, new_yaw = reexpress_plan(last, 10.0, (np.zeros(3), _rotz(np.pi / 2)))
    np.testing.assert_allclose(new_xyz[0, :, 1], -xyz[0, :, 0], atol=1e-12)
    np.testing.assert_allclose(new_yaw, -np.pi / 2, atol=1e-12)
    assert heading_of(_rotz(0.3)) == pytest.approx(0.3)
