"""In-process rig for node tests: the planner node on its own executor thread (as `main()` runs it), and a
driver node (synthetic inputs, output subscriptions, lifecycle service clients) on another.
All traffic is real DDS on loopback (test/conftest.py confines discovery)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from nav_msgs.msg import Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from alpamayo_ros.msg import TrajectoryCandidates
from alpamayo_ros.ros.conversions import stamp_to_sec, time_msg
from alpamayo_ros.ros.node import PlannerNode
from alpamayo_ros.ros.synthetic import CameraStream, SyntheticDrive

CAMERA_NAMES = ["cross_left_120fov", "front_wide_120fov", "cross_right_120fov", "front_tele_30fov"]

def default_streams(ns: str) -> list[CameraStream]:
    """Four cameras at 10-30 Hz, two raw and two JPEG, small frames (320x576: no resize cost)."""
    return [
        CameraStream(f"/{ns}/cam0", "raw", 10.0, 320, 576, "rgb8"),
        CameraStream(f"/{ns}/cam1", "compressed", 20.0, 320, 576, "jpeg"),
        CameraStream(f"/{ns}/cam2", "raw", 15.0, 320, 576, "bgr8"),
        CameraStream(f"/{ns}/cam3", "compressed", 30.0, 320, 576, "jpeg"),
    ]


class Rig:
    def __init__(self, context: Any, ns: str, model_dir: str, *, params: dict[str, Any] | None = None,
                 streams: list[CameraStream] | None = None, sim_time: bool = True, yaw_rate: float = 0.0) -> None:
        self.context, self.ns, self.model_dir = context, ns, model_dir
        self.streams = streams if streams is not None else default_streams(ns)
        overrides: dict[str, Any] = {
            "backend": "kinematic", "model_dir": model_dir, "num_candidates": 3, "rate_hz": 10.0,
            "odometry.topic": f"/{ns}/odom", "camera_names": CAMERA_NAMES, "use_sim_time": sim_time,
            "fallback.input_timeout_s": 5.0,
        }
        for name, s in zip((params or {}).get("camera_names", CAMERA_NAMES), self.streams, strict=True):
            overrides[f"cameras.{name}.topic"] = s.topic
            overrides[f"cameras.{name}.transport"] = s.transport
        overrides.update(params or {})
        self.camera_names = list(overrides["camera_names"])
        self._camera_lag_s = [0.0] * len(self.streams)
        self.node = PlannerNode(namespace=f"/{ns}", context=context,
                                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.fqn = self.node.get_fully_qualified_name()
        self.drv = rclpy.create_node(f"driver_{ns}", context=context)
        self.drive = SyntheticDrive(self.drv, self.streams, f"/{ns}/odom", publish_clock=sim_time, yaw_rate=yaw_rate)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        k = int(overrides["num_candidates"])
        outputs: list[tuple[str, Any]] = [("candidates", TrajectoryCandidates), ("selected_path", Path),
                                          ("reasoning", String), ("markers", MarkerArray)]
        outputs += [(f"candidate_{i}/path", Path) for i in range(k)]
        for name, typ in outputs:
            self.drv.create_subscription(typ, f"{self.fqn}/{name}", self._store(name), qos)
        self.drv.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)
        self._clients = {
            "change": self.drv.create_client(ChangeState, f"{self.fqn}/change_state"),
            "get": self.drv.create_client(GetState, f"{self.fqn}/get_state"),
            "transitions": self.drv.create_client(GetAvailableTransitions, f"{self.fqn}/get_available_transitions"),
        }
        self.node_exec = SingleThreadedExecutor(context=context)
        self.node_exec.add_node(self.node)
        self.drv_exec = SingleThreadedExecutor(context=context)
        self.drv_exec.add_node(self.drv)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._spin, args=(ex,), daemon=True)
                         for ex in (self.node_exec, self.drv_exec)]
        for t in self._threads:
            t.start()

    def _spin(self, executor: Any) -> None:
        # spin_once in a loop, so close() can stop the loop before shutting the executor down
        # (shutting down an executor inside spin() races with its guard conditions)
        while not self._stop.is_set() and self.context.ok():
            executor.spin_once(timeout_sec=0.05)

    # --- outputs -----------------------------------------------------------------------------------
    def _store(self, name: str) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self._lock:
                self.received[name].append(msg)
        return cb

    def _on_diag(self, msg: DiagnosticArray) -> None:
        if any(s.hardware_id == self.fqn for s in msg.status):
            with self._lock:
                self.received["diagnostics"].append(msg)

    def count(self, name: str) -> int:
        with self._lock:
            return len(self.received[name])

    def messages(self, name: str) -> list[Any]:
        with self._lock:
            return list(self.received[name])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self.received.items()}

    def diag_values(self, entry_suffix: str) -> dict[str, str]:
        """Key/values of the newest diagnostics status whose name ends with `entry_suffix`."""
        for arr in reversed(self.messages("diagnostics")):
            for s in arr.status:
                if s.name.endswith(entry_suffix):
                    return {kv.key: kv.value for kv in s.values} | {"__message": s.message, "__level": s.level}
        return {}

    @staticmethod
    def wait_for(pred: Callable[[], bool], timeout_s: float = 10.0, period_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(period_s)
        return pred()

    # --- lifecycle services ------------------------------------------------------------------------
    def _call(self, client: Any, request: Any, timeout_s: float = 30.0) -> Any:
        assert client.wait_for_service(timeout_sec=10.0), f"service {client.srv_name} not available"
        future = client.call_async(request)
        assert self.wait_for(future.done, timeout_s), f"{client.srv_name} did not answer in {timeout_s} s"
        return future.result()

    def transition(self, name: str) -> bool:
        req = ChangeState.Request()
        req.transition.label = name  # by label: "shutdown" works from every primary state
        return bool(self._call(self._clients["change"], req).success)

    def state(self) -> str:
        return self._call(self._clients["get"], GetState.Request()).current_state.label

    def available_transitions(self) -> list[str]:
        res = self._call(self._clients["transitions"], GetAvailableTransitions.Request())
        return [t.transition.label for t in res.available_transitions]

    # --- faults a real vehicle produces ------------------------------------------------------------
    def jump_odometry(self, offset: tuple[float, float, float], at: float, back_after_s: float | None = None) -> None:
        """Odometry positions (odometry frame) from stream time `at` on are moved by `offset`; with
        `back_after_s` only until then (a glitch). Twist and orientation stay (a relocalisation)."""
        plain = self.drive.odometry_msg

        def moved(t: float) -> Any:
            msg = plain(t)
            if t >= at and (back_after_s is None or t < at + back_after_s):
                pos = msg.pose.pose.position
                pos.x, pos.y, pos.z = pos.x + offset[0], pos.y + offset[1], pos.z + offset[2]
            return msg
        self.drive.odometry_msg = moved  # type: ignore[method-assign]

    def lag_camera(self, index: int, seconds: float) -> None:
        """Camera `index` delivers each frame `seconds` after its capture stamp."""
        self._camera_lag_s[index] = seconds
        pub = self.drive.cams[index].pub
        send = pub.publish

        def late(msg: Any) -> None:
            stamp = stamp_to_sec(msg.header.stamp)
            msg.header.stamp = time_msg(stamp - seconds)
            send(msg)
            msg.header.stamp = time_msg(stamp)
        pub.publish = late

    def pause_camera(self, index: int, timeout_s: float = 10.0) -> None:
        """Camera `index` goes silent, and the node has received every frame it sent before (DDS
        delivers them in order), so counts taken after this change only by what the test sends."""
        last = self.drive.pause_camera(index)
        if last is None or self.node._rt is None:
            return
        cam = self.node._rt.cameras[self.camera_names[index]]
        last -= self._camera_lag_s[index]
        assert self.wait_for(lambda: (cam.newest_queued or 0.0) >= last - 1e-6, timeout_s), \
            f"camera {index}'s last frame ({last:.3f}) never reached the node"

    def resume_camera(self, index: int) -> None:
        self.drive.resume_camera(index)

    def start_inputs(self) -> None:
        assert self.drive.wait_for_subscribers(), "the node did not subscribe to every input"
        self.drive.backfill_odometry()
        self.drive.start()

    def close(self) -> None:
        self.drive.stop()
        # Stop the spin loops first: shutting the node down from this thread while its executor runs a
        # timer callback races with the publishers being destroyed (a ROS graph serialises both on the
        # executor thread, where the lifecycle service runs).
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        try:
            self.node.trigger_shutdown()
        except Exception:  # already finalized
            pass
        for ex in (self.node_exec, self.drv_exec):
            ex.shutdown(timeout_sec=5.0)
        self.drive.destroy()
        self.node.destroy_node()
        self.drv.destroy_node()
