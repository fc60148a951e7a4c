"""The issue #3 public names are importable from alpamayo_ros.core and work end to end."""

from __future__ import annotations

import numpy as np

import alpamayo_ros.core as core


def test_public_names_and_a_tick_worth_of_math():
    buf = core.PoseBuffer()
    for i in range(31):  # 3 s at 10 Hz, straight at 5 m/s
        buf.add(100.0 + 0.1 * i, [0.5 * i, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], twist_linear=[5.0, 0, 0])
    hist = buf.history(103.0)
    assert core.check_input(hist).ok
    ids = core.history_token_ids(hist.xyz.astype(np.float32))
    assert ids.shape == (48,) and ids[0] == 154669  # x0 = −7.5 m saturates
    noise = core.make_noise(6, seed=0)
    x = core.FlowMatchingSampler().sample(lambda x, t: -x, noise)
    cfg = core.ActionSpaceConfig.released_bf16()
    v0 = core.estimate_v0(hist.xyz, hist.rot, cfg)
    xyz, rot = core.action_to_traj(x, hist.xyz, hist.rot, cfg, v0=v0)
    assert xyz.shape == (6, 64, 3) and rot.shape == (6, 64, 3, 3)
    res = core.check_output(xyz, x, v0, rot=rot, controls_normalized=True, action_cfg=cfg)
    assert isinstance(res, core.GateResult) and res.ok
    act = core.traj_to_action(hist.xyz, hist.rot, xyz[0], rot[0], cfg)
    # the smoother cannot follow white-noise controls, but the trajectory they drive is recovered
    xyz_again, _ = core.action_to_traj(act, hist.xyz, hist.rot, cfg)
    assert np.abs(xyz_again - xyz[0]).max() < 0.1
    m = core.trajectory_metrics(xyz, xyz[3])
    assert isinstance(m, core.TrajectoryMetrics) and m.best_index == 3 and m.min_ade == 0.0
