"""Quaternion, slerp and yaw helpers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alpamayo_ros.core.geometry import (
    quat_multiply,
    quat_slerp,
    quat_to_rotmat,
    rot_z,
    rotmat_to_quat,
    unwrap_angle,
    wrap_angle,
    yaw_from_quat,
    yaw_from_rotmat,
)

quats = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda v: np.linalg.norm(v) > 0.1).map(
    lambda v: np.asarray(v) / np.linalg.norm(v)
)


def axis_angle_quat(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.r_[axis * np.sin(angle / 2), np.cos(angle / 2)]


def test_yaw_quaternion_matches_rot_z():
    for yaw in (-3.0, -0.5, 0.0, 1.0, 3.1):
        q = axis_angle_quat([0, 0, 1], yaw)
        np.testing.assert_allclose(quat_to_rotmat(q), rot_z(yaw), atol=1e-15)
        assert yaw_from_quat(q) == np.float64(yaw) or abs(yaw_from_quat(q) - yaw) < 1e-15
        assert abs(yaw_from_rotmat(rot_z(yaw)) - yaw) < 1e-15


@settings(max_examples=200, deadline=None)
@given(quats)
def test_rotmat_quat_round_trip(q):
    r = quat_to_rotmat(q)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) > 0
    q2 = rotmat_to_quat(r)
    assert abs(abs(np.dot(q, q2)) - 1.0) < 1e-12  # same rotation (q ≡ −q)
    np.testing.assert_allclose(yaw_from_quat(q), yaw_from_rotmat(r), atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(quats, quats)
def test_quat_multiply_is_matrix_product(a, b):
    np.testing.assert_allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b),
                               atol=1e-12)


def test_slerp_constant_angular_rate_and_short_way():
    q0 = axis_angle_quat([0, 0, 1], 0.0)
    q1 = axis_angle_quat([0, 0, 1], 1.2)
    for u in (0.0, 0.25, 0.5, 1.0, 1.5):  # 1.5: extrapolation continues at the same rate
        assert abs(yaw_from_quat(quat_slerp(q0, q1, u)) - 1.2 * u) < 1e-12
    # −q1 is the same rotation: slerp must still take the 1.2 rad arc, not the 2π − 1.2 one
    assert abs(yaw_from_quat(quat_slerp(q0, -q1, 0.5)) - 0.6) < 1e-12
    # across ±π
    qa, qb = axis_angle_quat([0, 0, 1], 3.0), axis_angle_quat([0, 0, 1], -3.0)
    assert abs(wrap_angle(yaw_from_quat(quat_slerp(qa, qb, 0.5)) - np.pi)) < 1e-12
    # identical and nearly identical inputs
    np.testing.assert_allclose(quat_slerp(q0, q0, 0.3), q0, atol=1e-15)
    tiny = axis_angle_quat([0, 0, 1], 1e-9)
    assert abs(yaw_from_quat(quat_slerp(q0, tiny, 0.5)) - 5e-10) < 1e-15


def test_rotmat_to_quat_handles_half_turns():
    for axis in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]):
        q = axis_angle_quat(axis, np.pi)
        np.testing.assert_allclose(quat_to_rotmat(rotmat_to_quat(quat_to_rotmat(q))), quat_to_rotmat(q), atol=1e-12)


def test_unwrap_angle_follows_the_reference_rule():
    phi = np.array([3.0, -3.0, -2.5, 3.1, 2.0])
    out = unwrap_angle(phi)
    assert out[0] == 3.0
    np.testing.assert_allclose(np.diff(out), wrap_angle(np.diff(phi)), atol=1e-15)
    assert out[1] > np.pi  # went through +π instead of jumping back
    np.testing.assert_allclose(unwrap_angle(np.stack([phi, phi + 1])), np.stack([out, unwrap_angle(phi + 1)]))
