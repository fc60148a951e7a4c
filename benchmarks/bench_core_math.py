#!/usr/bin/env python3
"""Per-tick cost of the core math (issue #3): prints a table and one JSON line.

Measured: history from a 100 Hz pose buffer (10 s deep), v0 estimation, action_to_traj for K
candidates (with and without the v0 fit), history tokens, output gate, traj_to_action, metrics.
Targets: history and action_to_traj+v0 (K=6) each well under 1 ms per tick.

    .venv/bin/python benchmarks/bench_core_math.py [--k 6] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import numpy as np

from alpamayo_ros.core.action_space import ActionSpaceConfig, action_to_traj, estimate_v0, traj_to_action
from alpamayo_ros.core.egomotion import PoseBuffer
from alpamayo_ros.core.flow_matching import FlowMatchingSampler, make_noise
from alpamayo_ros.core.gates import check_input, check_output
from alpamayo_ros.core.geometry import rot_z, rotmat_to_quat
from alpamayo_ros.core.history_tokens import history_token_ids
from alpamayo_ros.core.metrics import trajectory_metrics


def timeit(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    for _ in range(min(50, repeats)):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t
    us = samples * 1e6
    return {"median_us": float(np.median(us)), "p90_us": float(np.percentile(us, 90)),
            "p99_us": float(np.percentile(us, 99)), "min_us": float(us.min())}


def filled_buffer(rate_hz: float = 100.0, seconds: float = 10.0) -> tuple[PoseBuffer, float]:
    buf = PoseBuffer(max_duration_s=seconds)
    t0 = 1_700_000_000.0
    stamps = t0 - seconds + np.arange(int(seconds * rate_hz) + 1) / rate_hz
    yaw = 0.1 * (stamps - t0)
    pos = np.stack([3.5e5 + 10 * np.cos(0.3) * (stamps - t0), 5.6e6 + 10 * np.sin(0.3) * (stamps - t0),
                    np.full_like(stamps, 40.0)], -1)
    quats = rotmat_to_quat(rot_z(yaw + 0.3))
    for s, p, q in zip(stamps, pos, quats, strict=True):
        buf.add(s, p, q, twist_linear=[10.0, 0.0, 0.0])
    return buf, float(stamps[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    k, n = args.k, args.repeats

    buf, t0 = filled_buffer()
    t_add0 = time.perf_counter()
    extra, _ = filled_buffer(seconds=10.0)
    add_us = (time.perf_counter() - t_add0) / 1001 * 1e6
    hist = buf.history(t0)
    cfg = ActionSpaceConfig.released_bf16()
    action = make_noise(k, seed=0)
    v0 = estimate_v0(hist.xyz, hist.rot, cfg)
    xyz, rot = action_to_traj(action, hist.xyz, hist.rot, cfg, v0=v0)
    gt = xyz[0]
    sampler = FlowMatchingSampler()

    results = {
        "history_100hz_buffer": timeit(lambda: buf.history(t0), n),
        "estimate_v0": timeit(lambda: estimate_v0(hist.xyz, hist.rot, cfg), n),
        f"action_to_traj_k{k}_with_v0_fit": timeit(lambda: action_to_traj(action, hist.xyz, hist.rot, cfg), n),
        f"action_to_traj_k{k}_given_v0": timeit(lambda: action_to_traj(action, hist.xyz, hist.rot, cfg, v0=v0), n),
        "history_token_ids": timeit(lambda: history_token_ids(hist.xyz.astype(np.float32)), n),
        "check_input": timeit(lambda: check_input(hist), n),
        f"check_output_k{k}": timeit(lambda: check_output(xyz, action, v0, rot=rot, controls_normalized=True,
                                                           action_cfg=cfg), n),
        f"euler_loop_10_steps_k{k}_null_field": timeit(lambda: sampler.sample(lambda x, t: x, action), n),
        f"trajectory_metrics_k{k}": timeit(lambda: trajectory_metrics(xyz, gt), n),
        "traj_to_action_1": timeit(lambda: traj_to_action(hist.xyz, hist.rot, xyz[0], rot[0], cfg), max(n // 10, 20)),
    }
    print(f"core math per call on {platform.machine()} / {platform.python_version()} / numpy {np.__version__}")
    print(f"PoseBuffer.add: {add_us:.1f} us per pose (amortized, 1001 poses)")
    print(f"{'operation':42s} {'median':>9s} {'p90':>9s} {'p99':>9s}  (microseconds)")
    for name, r in results.items():
        print(f"{name:42s} {r['median_us']:9.1f} {r['p90_us']:9.1f} {r['p99_us']:9.1f}")
    print(json.dumps({"benchmark": "core_math", "k": k, "repeats": n, "numpy": np.__version__,
                      "pose_add_us": add_us, "results": results}))


if __name__ == "__main__":
    main()
