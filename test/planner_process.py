"""The planner as a process, fed by the synthetic drive in another process, heard over DDS by the
test (test/ros/test_node_main.py runs the source tree's script, test/colcon the colcon install's).
pytest puts test/ on sys.path when it loads test/conftest.py (prepend import mode)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CAMERAS = ["cross_left_120fov", "front_wide_120fov", "cross_right_120fov", "front_tele_30fov"]


def drive_topic_args(prefix: str) -> list[str]:
    """--ros-args for a planner under namespace `prefix`, wired to the synthetic drive's topics."""
    args = ["-r", f"__ns:={prefix}", "-p", f"odometry.topic:={prefix}/odom"]
    for i, camera in enumerate(CAMERAS):
        args += ["-p", f"cameras.{camera}.topic:={prefix}/cam{i}"]
    return args


@dataclass
class PlannerRun:
    received: list[Any]  # messages heard on the topic, up to the first one `until` accepted
    output: str  # the planner's stdout + stderr
    returncode: int  # after SIGINT


def first_message(planner_cmd: Sequence[str], drive_python: str, prefix: str, msg_type: type, topic: str,
                  ros_context: object, *, timeout_s: float, until: Callable[[Any], bool] = lambda msg: True,
                  **popen: Any) -> PlannerRun:
    """Start the planner and `drive_python -m alpamayo_ros.ros.synthetic --prefix prefix`, wait
    (up to timeout_s) for a message on `topic` that `until` accepts, then stop both with SIGINT."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    planner = subprocess.Popen(list(planner_cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               **popen)
    drive = subprocess.Popen([drive_python, "-m", "alpamayo_ros.ros.synthetic", "--prefix", prefix,
                              "--height", "320", "--width", "576", "--seconds", "90"], **popen)
    node = rclpy.create_node(f"listener_{prefix.strip('/')}", context=ros_context)
    got: list[Any] = []
    node.create_subscription(msg_type, topic, got.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout_s
        while not (got and until(got[-1])) and time.monotonic() < deadline and planner.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        drive.send_signal(signal.SIGINT)
        planner.send_signal(signal.SIGINT)
        try:
            out, _ = planner.communicate(timeout=30)
        finally:
            for proc in (planner, drive):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
    return PlannerRun(got, out, planner.returncode)
