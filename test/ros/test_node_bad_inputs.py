"""Each bad input leaves the node running and planning, and diagnostics say why (real DDS)."""

from __future__ import annotations

import copy
import gc
import math
import time

import numpy as np
import pytest
from node_rig import CAMERA_NAMES, Rig
from sensor_msgs.msg import Image

from alpamayo_ros.ros.conversions import stamp_to_sec, time_msg
from alpamayo_ros.ros.image_bridge import rgb_to_compressed_msg, rgb_to_image_msg

pytestmark = pytest.mark.ros
pytest.importorskip("alpamayo_ros.core.planner", reason="the core Planner has not landed yet")


@pytest.fixture
def rig(ros_context, unique_name, model_dir):
    # max_image_bytes: 1 MB (the rig's frames are 320x576, 0.55 MB raw) so oversized test frames stay small
    rig = Rig(ros_context, unique_name, model_dir, params={"fallback.input_timeout_s": 0.8,
                                                           "max_image_bytes": 1_000_000})
    assert rig.transition("configure") and rig.transition("activate")
    rig.start_inputs()
    assert rig.wait_for(lambda: rig.count("candidates") >= 1, timeout_s=20.0), rig.node.stats.snapshot()
    yield rig
    rig.close()
    gc.collect()


def _inject(rig: Rig, cam: int, mutate) -> None:
    """Pause camera `cam`, send one mutated copy of its frame stamped now, resume."""
    rig.pause_camera(cam)
    msg = copy.deepcopy(rig.drive.cams[cam].msg)
    msg.header.stamp = time_msg(rig.drive.now())
    rig.drive.publish_image(cam, mutate(msg))
    time.sleep(0.05)
    rig.resume_camera(cam)


def _rejected(rig: Rig, name: str, reason: str) -> int:
    return rig.node.stats.inputs[name].rejected[reason]


def _set(msg, **fields):
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    ("cam", "mutate", "reasons"),
    [
        (0, lambda m: _set(m, encoding="yuv422"), ("bad_encoding",)),
        (2, lambda m: _set(m, data=m.data[: len(m.data) // 3]), ("truncated",)),
        (0, lambda m: Image(header=m.header, height=0, width=0, encoding="rgb8", step=0), ("empty_image",)),
        (1, lambda m: _set(m, data=m.data[:200].tobytes() + bytes(range(256)) * 8), ("corrupt",)),
        # libjpeg cannot always tell a cut stream from a corrupt one: either reason is a clear answer
        (3, lambda m: _set(m, data=m.data[: len(m.data) // 2]), ("truncated", "corrupt")),
    ],
    ids=["wrong_encoding", "truncated_raw", "zero_size", "corrupted_jpeg", "truncated_jpeg"],
)
def test_bad_image_is_rejected_reported_and_survived(rig, cam, mutate, reasons) -> None:
    name = CAMERA_NAMES[cam]
    _inject(rig, cam, mutate)
    assert rig.wait_for(lambda: any(_rejected(rig, name, r) for r in reasons), timeout_s=5.0), \
        rig.node.stats.inputs[name]
    reason = next(r for r in reasons if _rejected(rig, name, r))
    # diagnostics over DDS carry the reason and the count
    assert rig.wait_for(lambda: rig.diag_values(f"input {name}").get(f"rejected.{reason}") == "1", timeout_s=3.0)
    assert reason in rig.node.stats.inputs[name].last_error
    n = rig.count("candidates")
    assert rig.wait_for(lambda: rig.count("candidates") > n + 1, timeout_s=5.0), "planning stopped"


def test_nan_odometry_is_rejected(rig) -> None:
    msg = rig.drive.odometry_msg(rig.drive.now() + 0.001)
    msg.pose.pose.position.x = math.nan
    rig.drive.odom_pub.publish(msg)
    assert rig.wait_for(lambda: _rejected(rig, "odometry", "pose_nonfinite") >= 1, timeout_s=5.0), \
        rig.node.stats.inputs["odometry"]
    assert rig.wait_for(lambda: "rejected.pose_nonfinite" in rig.diag_values("input odometry"), timeout_s=3.0)
    n = rig.count("candidates")
    assert rig.wait_for(lambda: rig.count("candidates") > n + 1, timeout_s=5.0)


def test_silent_camera_then_fallback_then_recovery(rig) -> None:
    rig.pause_camera(3)
    assert rig.wait_for(lambda: "silent" in str(rig.diag_values("input front_tele_30fov").get("__message")),
                        timeout_s=6.0)
    stats = rig.node.stats
    assert sum(stats.not_ready.values()) >= 1, stats.not_ready
    # no plan for fallback.input_timeout_s -> a flagged fallback plan (last valid, re-expressed)
    assert rig.wait_for(lambda: any(m.fallback for m in rig.messages("candidates")), timeout_s=5.0)
    fb = next(m for m in rig.messages("candidates") if m.fallback)
    assert fb.fallback_reason.startswith("input_timeout") and len(fb.candidates[0].poses) == 64
    assert stamp_to_sec(fb.header.stamp) > 999.0  # stamped with the newest odometry time, not now()
    assert rig.wait_for(lambda: "fallback.input_timeout" in rig.diag_values("gates and fallback"), timeout_s=3.0)
    rig.resume_camera(3)
    n = sum(not m.fallback for m in rig.messages("candidates"))
    assert rig.wait_for(lambda: sum(not m.fallback for m in rig.messages("candidates")) > n, timeout_s=5.0)


def test_stamps_going_backwards_reset_the_buffers(rig) -> None:
    t_before = stamp_to_sec(rig.messages("candidates")[-1].header.stamp)
    rig.drive.time_offset_s = -20.0  # bag loop: every stamp (and /clock) jumps back 20 s
    assert rig.wait_for(lambda: rig.node.stats.time_jumps >= 1, timeout_s=5.0)
    assert rig.wait_for(lambda: any(stamp_to_sec(m.header.stamp) < t_before - 10.0 and not m.fallback
                                    for m in rig.messages("candidates")), timeout_s=15.0), rig.node.stats.snapshot()
    assert int(rig.diag_values("synchronization").get("time_jumps", "0")) >= 1


def test_input_gate_trip_publishes_a_flagged_fallback(rig) -> None:
    rig.drive.twist_scale = 3.0  # odometry twist says 15 m/s while the poses move at 5 m/s
    assert rig.wait_for(lambda: any(m.fallback and m.fallback_reason.startswith("input_gate")
                                    for m in rig.messages("candidates")), timeout_s=8.0), rig.node.stats.snapshot()
    assert sum(rig.node.stats.input_gate_trips.values()) >= 1
    rig.drive.twist_scale = 1.0


def test_stop_policy_publishes_a_braking_path(ros_context, unique_name, model_dir) -> None:
    rig = Rig(ros_context, unique_name, model_dir, params={"fallback.policy": "stop"})
    try:
        assert rig.transition("configure") and rig.transition("activate")
        rig.drive.twist_scale = 3.0  # every tick trips the input gate from the start
        rig.start_inputs()
        assert rig.wait_for(lambda: any(m.fallback for m in rig.messages("candidates")), timeout_s=20.0), \
            rig.node.stats.snapshot()
        fb = next(m for m in rig.messages("candidates") if m.fallback)
        assert fb.fallback_reason.startswith("input_gate") and len(fb.candidates) == 1
        xs = [p.pose.position.x for p in fb.candidates[0].poses]
        assert all(b >= a for a, b in zip(xs, xs[1:], strict=False)) and xs[-1] > 0.0  # brakes forward, then holds
        assert all(abs(p.pose.position.y) < 1e-9 for p in fb.candidates[0].poses)
        assert rig.wait_for(lambda: rig.count("selected_path") >= 1)
        assert rig.count("candidate_0/path") == 0  # per-candidate topics carry plans only
    finally:
        rig.close()
        gc.collect()


def test_slow_tick_times_out_to_a_fallback_and_services_stay_responsive(ros_context, unique_name, model_dir) -> None:
    # K=16 x 100 Euler steps make each kinematic tick last tens of ms; a 10 ms budget at 50 Hz trips it
    params = {"num_candidates": 16, "num_diffusion_steps": 100, "rate_hz": 50.0,
              "fallback.inference_timeout_s": 0.01}
    rig = Rig(ros_context, unique_name, model_dir, params=params)
    try:
        assert rig.transition("configure") and rig.transition("activate")
        rig.start_inputs()
        assert rig.wait_for(lambda: any(m.fallback and m.fallback_reason == "inference_timeout"
                                        for m in rig.messages("candidates")), timeout_s=20.0), \
            rig.node.stats.snapshot()
        assert rig.node.stats.ticks_busy >= 1
        # lifecycle services answer while ticks keep the inference worker busy
        for _ in range(3):
            t = time.monotonic()
            assert rig.state() == "active"
            assert time.monotonic() - t < 2.0
    finally:
        rig.close()
        gc.collect()


def test_infinite_twist_is_rejected(rig) -> None:
    msg = rig.drive.odometry_msg(rig.drive.now() + 0.001)
    msg.twist.twist.linear.x = math.inf
    accepted = rig.node.stats.inputs["odometry"].accepted
    rig.drive.odom_pub.publish(msg)
    assert rig.wait_for(lambda: _rejected(rig, "odometry", "twist_nonfinite") == 1, timeout_s=5.0), \
        rig.node.stats.inputs["odometry"]
    assert "non-finite twist" in rig.node.stats.inputs["odometry"].last_error
    assert rig.wait_for(lambda: "rejected.twist_nonfinite" in rig.diag_values("input odometry"), timeout_s=3.0)
    assert rig.node.stats.inputs["odometry"].accepted >= accepted  # the stream goes on, this one is not in it
    n = rig.count("candidates")
    assert rig.wait_for(lambda: rig.count("candidates") > n + 1, timeout_s=5.0)


@pytest.mark.parametrize(("cam", "make"), [
    (0, lambda: rgb_to_image_msg(np.zeros((1000, 1000, 3), np.uint8), "rgb8")),  # 3 MB of rows
    (1, lambda: rgb_to_compressed_msg(np.zeros((2000, 2000, 3), np.uint8), "jpeg")),  # tiny JPEG, 12 MB decoded
], ids=["raw_3MB", "jpeg_decodes_to_12MB"])
def test_oversized_image_is_refused_before_decoding(rig, cam, make) -> None:
    name = CAMERA_NAMES[cam]
    big = make()
    _inject(rig, cam, lambda m: _set(big, header=m.header))
    assert rig.wait_for(lambda: _rejected(rig, name, "image_too_large") == 1, timeout_s=5.0), \
        rig.node.stats.inputs[name]
    assert "max_image_bytes=1000000" in rig.node.stats.inputs[name].last_error
    camera_id = rig.node._rt.cameras[name].params.model_camera_id
    stamp_ns = round(stamp_to_sec(big.header.stamp) * 1e9)
    assert stamp_ns not in rig.node.planner.frames.buffers[camera_id].stamps_ns  # never decoded nor buffered
    assert rig.wait_for(lambda: rig.diag_values(f"input {name}").get("rejected.image_too_large") == "1",
                        timeout_s=3.0)
    n = rig.count("candidates")
    assert rig.wait_for(lambda: rig.count("candidates") > n + 1, timeout_s=5.0), "planning stopped"


def test_image_that_does_not_fit_the_model_is_refused_at_the_input(rig, capfd) -> None:
    """A square 576x576 camera resizes to 416x416, not to the model's 320x576: refused with a crop that
    fits, before the backend sees it, and logged at most once per 2 s however many frames come."""
    name = CAMERA_NAMES[0]
    square = rgb_to_image_msg(np.full((576, 576, 3), 90, np.uint8), "rgb8")
    rig.pause_camera(0)
    t0 = rig.drive.now()
    for i in range(12):  # 1.2 s of mis-sized frames
        msg = copy.deepcopy(square)
        msg.header.stamp = time_msg(t0 + 0.1 * (i + 1))
        rig.drive.publish_image(0, msg)
        time.sleep(0.1)
    assert rig.wait_for(lambda: _rejected(rig, name, "image_size_mismatch") == 12, timeout_s=5.0), \
        rig.node.stats.inputs[name]
    rig.resume_camera(0)
    error = rig.node.stats.inputs[name].last_error
    assert "576x576 image resizes to 416x416" in error and "the model takes 576x320" in error
    assert f"cameras.{name}.crop: [0, 128, 576, 320]" in error
    assert rig.node.stats.backend_errors == 0
    logged = [line for line in capfd.readouterr().err.splitlines() if "image_size_mismatch" in line]
    assert 1 <= len(logged) <= 2, logged


def test_a_failing_backend_is_logged_throttled_and_counted_every_tick(rig, capfd) -> None:
    class BrokenEngine:  # a device fault: every inference raises (the GPU edge, the one thing faked)
        identity = rig.node.planner.backend.identity

        def infer(self, inputs, request):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        def close(self) -> None:
            pass

    capfd.readouterr()
    stats = rig.node.stats
    rig.node.planner.backend = BrokenEngine()
    start = stats.backend_errors
    assert rig.wait_for(lambda: stats.backend_errors >= start + 12, timeout_s=10.0), stats.snapshot()
    logged = [line for line in capfd.readouterr().err.splitlines() if "tick failed in the backend" in line]
    assert 1 <= len(logged) <= 2, logged  # 12+ failed ticks in ~1.2 s, one line per 2 s
    assert rig.wait_for(lambda: "illegal memory access" in rig.diag_values("backend").get("last_error", ""),
                        timeout_s=3.0)
