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
    from planner_process import drive_topic_args, first_message

    from alpamayo_ros.msg import TrajectoryCandidates

    prefix = f"/{unique_name}"
    cmd = _planner_cmd(*drive_topic_args(prefix), "-p", f"model_dir:={model_dir}", "-p", "backend:=kinematic",
                       "-p", "num_candidates:=2")
    # A stop fallback (one candidate) is legitimate while the drive's cameras are not in yet.
    run = first_message(cmd, sys.executable, prefix, TrajectoryCandidates, f"{prefix}/alpamayo_planner/candidates",
                        ros_context, timeout_s=40.0, until=lambda msg: not msg.fallback)
    plans = [msg for msg in run.received if not msg.fallback]
    assert plans, f"no plan from the autostarted node (rc={run.returncode}):\n{run.output[-2000:]}"
    assert len(plans[0].candidates) == 2 and plans[0].header.frame_id == "base_link"
    assert run.returncode == 0, run.output[-2000:]
    assert "active: planning at" in run.output


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


def _start_active_planner(model_dir: str, unique_name: str) -> tuple[subprocess.Popen, list[str]]:
    """An autostarted kinematic planner process, returned once it logs `active`."""
    ros_args = ["-r", f"__ns:=/{unique_name}", "-p", f"model_dir:={model_dir}", "-p", "backend:=kinematic"]
    planner = subprocess.Popen(_planner_cmd(*ros_args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and planner.stdout is not None:
        line = planner.stdout.readline()
        lines.append(line)
        if "active: planning at" in line or not line:
            break
    if planner.poll() is not None or "active: planning at" not in lines[-1]:
        planner.kill()
        pytest.fail("the planner did not become active:\n" + "".join(lines)[-3000:])
    return planner, lines


@pytest.mark.parametrize("again", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_second_signal_during_shutdown_does_not_abort_the_cleanup(model_dir, unique_name, again) -> None:
    """A terminal Ctrl-C reaches the node twice under launch (the terminal's process group, then
    launch's own SIGINT; launch escalates to SIGTERM): the cleanup must finish and exit 0.
    After the first SIGINT the second signal is repeated every few ms until the process is gone, so
    it lands inside the cleanup, however short that is."""
    planner, lines = _start_active_planner(model_dir, unique_name)
    try:
        planner.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20.0
        while planner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
            try:
                planner.send_signal(again)
            except ProcessLookupError:
                break
        out, _ = planner.communicate(timeout=20)
    finally:
        if planner.poll() is None:
            planner.kill()
            planner.wait()
    log = "".join(lines) + out
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert planner.returncode == 0, f"exit code {planner.returncode}:\n{log[-3000:]}"
