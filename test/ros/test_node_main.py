"""`alpamayo-planner` (alpamayo_ros.ros.main) as a process: autostart reaches `active` and plans from
a synthetic drive in another process; a bad parameter makes autostart exit 1 naming it. The
environment (loopback discovery, domain id) is inherited from test/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("alpamayo_ros.core.planner", reason="the core Planner has not landed yet")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "planner.yaml"


def _planner_cmd(*ros_args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "alpamayo_planner"), "--autostart",
            "--ros-args", "--params-file", str(CONFIG), *ros_args]


def test_autostart_with_a_bad_parameter_exits_1_naming_it(tmp_path) -> None:
    proc = subprocess.run(_planner_cmd("-p", f"model_dir:={tmp_path / 'nope'}"), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    log = proc.stdout + proc.stderr
    assert "model_dir" in log and "Fix:" in log and "configure failed" in log


def test_autostart_plans_from_another_process(model_dir, unique_name, ros_context) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from alpamayo_ros.msg import TrajectoryCandidates

    prefix = f"/{unique_name}"
    ros_args = ["-r", f"__ns:={prefix}", "-p", f"model_dir:={model_dir}", "-p", "backend:=kinematic",
                "-p", f"odometry.topic:={prefix}/odom", "-p", "num_candidates:=2"]
    names = ["cross_left_120fov", "front_wide_120fov", "cross_right_120fov", "front_tele_30fov"]
    for i, name in enumerate(names):
        ros_args += ["-p", f"cameras.{name}.topic:={prefix}/cam{i}"]
    planner = subprocess.Popen(_planner_cmd(*ros_args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    drive = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.ros.synthetic", "--prefix", prefix,
                              "--height", "320", "--width", "576", "--seconds", "60"])
    node = rclpy.create_node(f"listener_{unique_name}", context=ros_context)
    got: list[TrajectoryCandidates] = []
    node.create_subscription(TrajectoryCandidates, f"{prefix}/alpamayo_planner/candidates", got.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 40.0
        while not got and time.monotonic() < deadline and planner.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert got, f"no plan from the autostarted node (rc={planner.poll()})"
        assert len(got[0].candidates) == 2 and got[0].header.frame_id == "base_link"
    finally:
        executor.shutdown()
        node.destroy_node()
        drive.send_signal(signal.SIGINT)
        planner.send_signal(signal.SIGINT)
        out, _ = planner.communicate(timeout=30)
        drive.wait(timeout=30)
    assert planner.returncode == 0, out[-2000:]
    assert "active: planning at" in out


def test_wrapper_script_is_executable() -> None:
    script = ROOT / "scripts" / "alpamayo_planner"
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env python3")
    # the system python3 of this machine has no ROS; on a ROS machine `ros2 run` finds it beside rclpy
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--autostart" in proc.stdout


def test_sigint_ends_a_sim_time_node_without_a_clock(model_dir, unique_name) -> None:
    """On sim time with no /clock nothing wakes the executor; SIGINT must still end the node promptly."""
    ros_args = ["-r", f"__ns:=/{unique_name}", "-p", f"model_dir:={model_dir}", "-p", "backend:=kinematic",
                "-p", "use_sim_time:=true"]
    planner = subprocess.Popen(_planner_cmd(*ros_args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30.0
        lines: list[str] = []
        while time.monotonic() < deadline:  # wait until it is active (spinning)
            line = planner.stdout.readline() if planner.stdout else ""
            lines.append(line)
            if "active" in line or planner.poll() is not None:
                break
        assert planner.poll() is None, "".join(lines)[-2000:]
        time.sleep(1.0)
        sent = time.monotonic()
        planner.send_signal(signal.SIGINT)
        planner.wait(timeout=10)
        assert time.monotonic() - sent < 3.0, "the node took more than 3 s to stop after SIGINT"
        assert planner.returncode == 0
    finally:
        if planner.poll() is None:
            planner.kill()
            planner.wait()
