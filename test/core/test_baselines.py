"""core.baselines: constant velocity and constant turn rate from the 16-pose ego history,
checked against closed-form motions (exact on a constant-speed arc)."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.baselines import BASELINES, constant_turn_rate, constant_velocity, motion_at_t0
from alpamayo_ros.core.egomotion import to_ego_frame
from alpamayo_ros.core.geometry import rot_z

DT = 0.1
T_HIST = DT * np.arange(-15, 1)  # t0 - 1.5 ... t0
T_FUT = DT * np.arange(1, 65)


def arc(v: float, w: float, t: np.ndarray, yaw0: float = 0.7, p0=(12.0, -3.0)) -> tuple[np.ndarray, np.ndarray]:
    """World poses of a constant-speed, constant-yaw-rate drive (heading yaw0 at t = 0)."""
    yaw = yaw0 + w * t
    if abs(w) < 1e-12:
        x, y = v * t * np.cos(yaw0), v * t * np.sin(yaw0)
    else:
        x = v / w * (np.sin(yaw) - np.sin(yaw0))
        y = -v / w * (np.cos(yaw) - np.cos(yaw0))
    xyz = np.stack([p0[0] + x, p0[1] + y, np.zeros_like(t)], axis=-1)
    return xyz, rot_z(yaw)


def history(v: float, w: float) -> tuple[np.ndarray, np.ndarray]:
    xyz, rot = arc(v, w, T_HIST)
    return to_ego_frame(xyz, rot, xyz[-1], rot[-1])  # type: ignore[return-value]


def future_in_ego(v: float, w: float) -> np.ndarray:
    hx, hr = arc(v, w, np.array([0.0]))
    fx, fr = arc(v, w, T_FUT)
    return to_ego_frame(fx, fr, hx[0], hr[0])[0]


@pytest.mark.parametrize("v, w", [(10.0, 0.0), (8.0, 0.25), (5.0, -0.4), (15.0, 0.02)])
def test_constant_turn_rate_is_exact_on_an_arc(v: float, w: float) -> None:
    hx, hr = history(v, w)
    speed, rate = motion_at_t0(hx, hr)
    assert speed == pytest.approx(v, rel=1e-9) and rate == pytest.approx(w, abs=1e-9)
    np.testing.assert_allclose(constant_turn_rate(hx, hr)[:, :2], future_in_ego(v, w)[:, :2], atol=1e-8)


def test_constant_velocity_goes_straight_at_the_current_speed() -> None:
    hx, hr = history(8.0, 0.25)
    cv = constant_velocity(hx, hr)
    np.testing.assert_allclose(cv[:, 0], 8.0 * T_FUT, rtol=1e-9)
    assert np.all(cv[:, 1:] == 0.0)
    # On a straight drive both baselines are the truth.
    hx, hr = history(12.0, 0.0)
    for fn in BASELINES.values():
        np.testing.assert_allclose(fn(hx, hr)[:, :2], future_in_ego(12.0, 0.0)[:, :2], atol=1e-8)


def test_reversing_and_standing_still() -> None:
    hx, hr = history(-3.0, 0.1)  # backwards along the heading
    speed, rate = motion_at_t0(hx, hr)
    assert speed == pytest.approx(-3.0, rel=1e-9) and rate == pytest.approx(0.1, abs=1e-9)
    np.testing.assert_allclose(constant_turn_rate(hx, hr)[:, :2], future_in_ego(-3.0, 0.1)[:, :2], atol=1e-8)
    hx, hr = history(0.0, 0.0)
    assert np.all(constant_velocity(hx, hr) == 0.0) and np.all(constant_turn_rate(hx, hr) == 0.0)


def test_shape_and_argument_errors() -> None:
    hx, hr = history(5.0, 0.0)
    assert constant_turn_rate(hx, hr, n=10, dt=0.5).shape == (10, 3)
    with pytest.raises(ValueError, match="expected history"):
        motion_at_t0(hx[:1], hr[:1])
    with pytest.raises(ValueError, match="expected history"):
        motion_at_t0(hx, hr[:3])
    with pytest.raises(ValueError, match="n >= 1"):
        constant_velocity(hx, hr, n=0)
