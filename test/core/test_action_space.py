"""Unicycle action space (spec §6): hand-derived rollouts, v0 fit, round trips, config loading."""

from __future__ import annotations

import numpy as np
import pytest
from motion_cases import Motion

from alpamayo_ros.core.action_space import (
    ActionSpaceConfig,
    action_to_traj,
    bf16_round,
    denormalize_action,
    estimate_v0,
    estimate_v_history,
    is_within_bounds,
    normalize_action,
    traj_to_action,
)
from alpamayo_ros.core.geometry import wrap_angle, yaw_from_rotmat

CFG = ActionSpaceConfig()
T_FUT = np.arange(1, 65) * 0.1


def physical(accel, kappa, cfg=CFG):
    accel = np.broadcast_to(np.asarray(accel, float), (64,))
    kappa = np.broadcast_to(np.asarray(kappa, float), (64,))
    return normalize_action(accel, kappa, cfg)


def still_history():
    return np.zeros((16, 3)), np.broadcast_to(np.eye(3), (16, 3, 3)).copy()


# ----------------------------------------------------------------- config
def test_defaults_are_the_spec_constants():
    assert CFG.accel_mean == 0.02902694707164455 and CFG.accel_std == 0.6810426736454882
    assert CFG.curvature_mean == 0.0002692167976330542 and CFG.curvature_std == 0.026148280660833106
    assert CFG.curvature_bounds == (-0.33, 0.33) and CFG.accel_bounds == (-9.8, 9.8)
    assert (CFG.dt, CFG.n_waypoints) == (0.1, 64)


def test_bf16_constants_match_spec_6_1():
    b = ActionSpaceConfig.released_bf16()
    assert (b.accel_mean, b.accel_std) == (0.029052734375, 0.6796875)
    assert (b.curvature_mean, b.curvature_std) == (0.0002689361572265625, 0.026123046875)
    assert b.v_lambda == CFG.v_lambda  # only the four buffers are rounded
    assert bf16_round(1.0) == 1.0 and bf16_round(100.0) == 100.0
    # the spec's bf16 Fourier frequencies follow the same rounding (round-to-nearest-even)
    assert bf16_round(1.6681006) == 1.671875 and bf16_round(35.938137) == 36.0


def test_from_model_config_released_layout_and_defaults():
    config = {
        "model_type": "alpamayo_r1",
        "action_space_cfg": {
            "_target_": "alpamayo_r1.action_space.UnicycleAccelCurvatureActionSpace",
            "accel_mean": 0.5, "accel_std": 2.0, "curvature_bounds": [-0.2, 0.2], "n_waypoints": 32,
        },
    }
    c = ActionSpaceConfig.from_model_config(config)
    assert (c.accel_mean, c.accel_std, c.curvature_bounds, c.n_waypoints) == (0.5, 2.0, (-0.2, 0.2), 32)
    assert c.curvature_std == CFG.curvature_std and c.v_ridge == CFG.v_ridge
    assert ActionSpaceConfig.from_model_config({}) == CFG
    assert ActionSpaceConfig.from_model_config(config["action_space_cfg"]) == c  # the sub-dict works too
    assert ActionSpaceConfig.from_model_config({"action_space_cfg": {}}, bf16_constants=True) == \
        ActionSpaceConfig.released_bf16()
    with pytest.raises(ValueError):
        ActionSpaceConfig.from_model_config({"action_space_cfg": {"accel_std": 0.0}})


def test_normalize_roundtrip_and_bounds():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(3, 64, 2))
    a, k = denormalize_action(act)
    np.testing.assert_allclose(normalize_action(a, k), act, atol=1e-12)
    assert is_within_bounds(act).all()
    act[1, 10, 1] = (0.34 - CFG.curvature_mean) / CFG.curvature_std
    act[2, 0, 0] = (-10.0 - CFG.accel_mean) / CFG.accel_std
    assert is_within_bounds(act).tolist() == [True, False, False]


# ----------------------------------------------------------------- v0 (spec §6.3)
def explicit_v_fit(xyz, rot, cfg=CFG):
    """Spec §6.3 written out literally: A (30×16), D3, ridge, dense normal equations."""
    theta = np.unwrap(yaw_from_rotmat(rot))
    dxy = np.diff(xyz[:, :2], axis=0)
    n = 16
    a = np.zeros((2 * (n - 1), n))
    b = np.zeros(2 * (n - 1))
    for k in range(n - 1):
        a[2 * k, k], a[2 * k, k + 1] = np.cos(theta[k]), np.cos(theta[k + 1])
        a[2 * k + 1, k], a[2 * k + 1, k + 1] = np.sin(theta[k]), np.sin(theta[k + 1])
        b[2 * k], b[2 * k + 1] = 2 * dxy[k] / cfg.dt
    d3 = np.zeros((n - 3, n))
    for r in range(n - 3):
        d3[r, r:r + 4] = [-1, 3, -3, 1]
    lhs = a.T @ a + cfg.v_lambda / cfg.dt**6 * d3.T @ d3 + cfg.v_ridge * np.eye(n)
    return np.linalg.solve(lhs, a.T @ b)


@pytest.mark.parametrize("motion", [Motion(10.0), Motion(8.0, yaw_rate=0.4), Motion(5.0, accel=1.5),
                                    Motion(-3.0), Motion(6.0, accel=-2.0, yaw_rate=-0.3)])
def test_v_fit_matches_the_literal_spec_formula(motion):
    xyz, rot = motion.ego_history()
    np.testing.assert_allclose(estimate_v_history(xyz, rot), explicit_v_fit(xyz, rot), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("motion", "expected"), [
    (Motion(10.0), 10.0), (Motion(8.0, yaw_rate=0.4), 8.0), (Motion(5.0, accel=1.5), 5.0),
    (Motion(0.0), 0.0), (Motion(-3.0), -3.0),  # reversing: the sign is not constrained
])
def test_v0_recovers_speed_at_t0(motion, expected):
    xyz, rot = motion.ego_history()
    # the 1e-4 ridge shrinks the estimate by ~1e-4 relative; the circle adds chord effects (~3e-4)
    assert estimate_v0(xyz, rot) == pytest.approx(expected, rel=1e-3, abs=1e-9)


def test_v0_of_a_standing_car_is_exactly_zero():
    assert estimate_v0(*still_history()) == 0.0


def test_v0_is_vectorized():
    hs = [Motion(v, yaw_rate=w).ego_history() for v, w in [(3, 0), (9, 0.2), (15, -0.1)]]
    xyz = np.stack([h[0] for h in hs])
    rot = np.stack([h[1] for h in hs])
    batched = estimate_v0(xyz, rot)
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, [estimate_v0(*h) for h in hs], rtol=1e-12)


# ----------------------------------------------------------------- action_to_traj (spec §6.4)
def test_straight_line_at_constant_speed():
    xyz_h, rot_h = Motion(10.0).ego_history()
    v0 = estimate_v0(xyz_h, rot_h)
    xyz, rot = action_to_traj(physical(0.0, 0.0), xyz_h, rot_h)
    np.testing.assert_allclose(xyz[:, 0], v0 * T_FUT, rtol=1e-12)
    np.testing.assert_allclose(xyz[:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(rot, np.broadcast_to(np.eye(3), (64, 3, 3)), atol=1e-12)


def test_constant_acceleration_is_exact():
    # trapezoid integration of a linear speed is exact: x = v0·t + a·t²/2
    xyz, _ = action_to_traj(physical(1.0, 0.0), *Motion(5.0).ego_history(), v0=5.0)
    np.testing.assert_allclose(xyz[:, 0], 5.0 * T_FUT + 0.5 * T_FUT**2, rtol=1e-12)


def test_constant_curvature_circle():
    v, kappa = 8.0, 0.05
    xyz, rot = action_to_traj(physical(0.0, kappa), *still_history(), v0=v)
    # heading is exact: θ_{i+1} = κ·v·(i+1)·dt
    np.testing.assert_allclose(yaw_from_rotmat(rot), kappa * v * T_FUT, rtol=1e-12)
    # positions: the trapezoid chord rule stays on the circle to ~(κ·v·dt)²·v·dt per step
    circle = Motion(v, yaw_rate=kappa * v).position(T_FUT)
    assert np.abs(xyz - circle).max() < 0.03
    np.testing.assert_allclose(np.hypot(xyz[:, 0], xyz[:, 1] - 1 / kappa), 1 / kappa, atol=0.03)


def test_stop_and_go_hand_derived():
    # from standstill: +2 m/s² for 2 s, −2 m/s² for 2 s, then stand still; curvature throughout
    accel = np.r_[np.full(20, 2.0), np.full(20, -2.0), np.zeros(24)]
    xyz, rot = action_to_traj(physical(accel, 0.0), *still_history())
    # speed is a triangle peaking at 4 m/s: 4 m after 2 s, 8 m at the stop, then no motion
    assert xyz[19, 0] == pytest.approx(4.0, abs=1e-12)
    np.testing.assert_allclose(xyz[39:, 0], 8.0, atol=1e-12)
    np.testing.assert_allclose(xyz[:, 1], 0.0, atol=1e-12)
    # curvature while stopped does not turn the car
    xyz2, rot2 = action_to_traj(physical(accel, np.r_[np.zeros(40), np.full(24, 0.2)]), *still_history())
    np.testing.assert_allclose(xyz2, xyz, atol=1e-12)
    np.testing.assert_allclose(rot2, rot, atol=1e-12)


def test_standing_still_stays_at_origin():
    xyz, rot = action_to_traj(physical(0.0, 0.1), *still_history())
    np.testing.assert_allclose(xyz, 0.0, atol=1e-12)  # normalize→denormalize leaves ~1e-20
    np.testing.assert_allclose(rot, np.broadcast_to(np.eye(3), (64, 3, 3)), atol=1e-15)


def test_z_follows_last_history_point_and_dtype_follows_history():
    xyz_h, rot_h = Motion(5.0).ego_history()
    xyz_h = xyz_h.astype(np.float32)
    xyz_h[:, 2] = 0.25
    xyz, rot = action_to_traj(np.zeros((64, 2), np.float32), xyz_h, rot_h.astype(np.float32))
    assert xyz.dtype == np.float32 and rot.dtype == np.float32
    assert np.all(xyz[:, 2] == np.float32(0.25))


def test_vectorized_over_k_candidates():
    rng = np.random.default_rng(1)
    act = rng.normal(size=(6, 64, 2))
    hist = Motion(9.0, yaw_rate=0.1).ego_history()
    xyz, rot = action_to_traj(act, *hist)
    assert xyz.shape == (6, 64, 3) and rot.shape == (6, 64, 3, 3)
    for k in range(6):
        one = action_to_traj(act[k], *hist)
        np.testing.assert_allclose(xyz[k], one[0], atol=1e-12)
        np.testing.assert_allclose(rot[k], one[1], atol=1e-12)


def test_rejects_wrong_action_shape():
    with pytest.raises(ValueError):
        action_to_traj(np.zeros((32, 2)), *still_history())


# ----------------------------------------------------------------- traj_to_action (spec §6.5)
SMOOTH = [Motion(10.0), Motion(8.0, yaw_rate=0.3), Motion(4.0, accel=1.0), Motion(12.0, accel=-1.5),
          Motion(6.0, accel=0.8, yaw_rate=-0.25), Motion(3.0, yaw_rate=0.5)]


@pytest.mark.parametrize("motion", SMOOTH)
def test_round_trip_reproduces_smooth_trajectories(motion):
    hist = motion.ego_history()
    fut_xyz, fut_rot = motion.ego_future()
    act = traj_to_action(*hist, fut_xyz, fut_rot)
    assert act.shape == (64, 2)
    xyz, rot = action_to_traj(act, *hist)
    assert np.abs(xyz - fut_xyz)[:, :2].max() < 0.05  # a few cm over 6.4 s
    assert np.abs(wrap_angle(yaw_from_rotmat(rot) - motion.yaw(T_FUT))).max() < 5e-3  # past ±π too


def test_traj_to_action_recovers_the_controls():
    motion = Motion(6.0, accel=0.8, yaw_rate=-0.25)
    a, k = denormalize_action(traj_to_action(*motion.ego_history(), *motion.ego_future()))
    v = 6.0 + 0.8 * (np.arange(64) + 0.5) * 0.1
    np.testing.assert_allclose(a[2:-2], 0.8, atol=0.02)
    np.testing.assert_allclose(k[2:-2], -0.25 / v[2:-2], atol=2e-3)


def test_traj_to_action_batched_equals_single():
    hists = [m.ego_history() for m in SMOOTH[:3]]
    futs = [m.ego_future() for m in SMOOTH[:3]]
    batched = traj_to_action(np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists]),
                             np.stack([f[0] for f in futs]), np.stack([f[1] for f in futs]))
    for i in range(3):
        np.testing.assert_allclose(batched[i], traj_to_action(*hists[i], *futs[i]), atol=1e-9)


def test_traj_to_action_standing_still_is_finite_and_neutral():
    act = traj_to_action(*still_history(), np.zeros((64, 3)), np.broadcast_to(np.eye(3), (64, 3, 3)))
    a, k = denormalize_action(act)
    assert np.all(np.isfinite(act))
    np.testing.assert_allclose(a, 0.0, atol=1e-9)
    np.testing.assert_allclose(k, 0.0, atol=1e-9)


def test_bf16_constants_change_the_normalized_action_by_about_0_2_percent():
    motion = Motion(8.0, accel=1.0, yaw_rate=0.2)
    nominal = traj_to_action(*motion.ego_history(), *motion.ego_future())
    rounded = traj_to_action(*motion.ego_history(), *motion.ego_future(), ActionSpaceConfig.released_bf16())
    rel = np.abs(rounded - nominal) / np.maximum(np.abs(nominal), 1.0)
    assert 0 < rel.max() < 0.01
