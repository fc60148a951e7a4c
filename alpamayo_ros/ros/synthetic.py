"""Synthetic camera + odometry streams published over DDS (tests, benchmark, smoke runs).

A `SyntheticDrive` publishes, from its own thread and at real-time rates, N camera topics (raw or
compressed, each at its own rate and size) and odometry of a car driving a constant-speed arc,
optionally with /clock so the node can run on sim time. Every message carries the stream's own
time in its header, so stamps on the node's outputs can be checked against what was sent.
Images are encoded once per camera (a distinct pattern per camera); each frame only gets a new
header, which keeps the publisher cheap enough for 4 × 1080p JPEG at 10 Hz on two cores.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from nav_msgs.msg import Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from .conversions import time_msg
from .image_bridge import rgb_to_compressed_msg, rgb_to_image_msg

__all__ = ["CameraStream", "SyntheticDrive", "pattern_image"]


@dataclass
class CameraStream:
    topic: str
    transport: str = "compressed"  # raw | compressed
    rate_hz: float = 10.0
    height: int = 320
    width: int = 576
    encoding: str = "rgb8"  # raw encoding / compressed format ("jpeg" or "png")


def pattern_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, camera-specific RGB pattern (JPEG-friendly, not constant)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([
        127 + 100 * np.sin(xx / (37.0 + 5 * seed) + seed),
        127 + 100 * np.cos(yy / (23.0 + 3 * seed)),
        np.full_like(xx, 40.0 * (seed % 5)),
    ], axis=-1)
    out = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    cv2.putText(out, f"cam {seed}", (width // 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX,
                max(1.0, width / 400), (255, 255, 255), 3)
    return out


@dataclass
class _Cam:
    spec: CameraStream
    pub: Any
    msg: Any
    next_t: float = 0.0
    sent: list[float] = field(default_factory=list)


class SyntheticDrive:
    """Publishes cameras + odometry (+ /clock) from a background thread in real time."""

    def __init__(self, node: Any, cameras: list[CameraStream], odom_topic: str | None, *, odom_hz: float = 50.0,
                 speed_mps: float = 5.0, yaw_rate: float = 0.0, start_s: float = 1000.0,
                 publish_clock: bool = False, odom_frame: str = "odom") -> None:
        # Depth 10: a publisher thread that was held up sends its overdue frames in a burst.
        qos_img = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        qos_odom = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.cams: list[_Cam] = []
        for i, spec in enumerate(cameras):
            rgb = pattern_image(spec.height, spec.width, i)
            if spec.transport == "compressed":
                pub, msg = node.create_publisher(CompressedImage, spec.topic, qos_img), rgb_to_compressed_msg(rgb, spec.encoding)
            else:
                pub, msg = node.create_publisher(Image, spec.topic, qos_img), rgb_to_image_msg(rgb, spec.encoding)
            self.cams.append(_Cam(spec, pub, msg))
        self.odom_pub = node.create_publisher(Odometry, odom_topic, qos_odom) if odom_topic else None
        self.clock_pub = node.create_publisher(Clock, "/clock", 10) if publish_clock else None
        self.odom_hz, self.speed, self.yaw_rate = odom_hz, speed_mps, yaw_rate
        self.start_s, self.odom_frame = start_s, odom_frame
        self._paused_cameras: set[int] = set()  # pause_camera / resume_camera
        self._publish_lock = threading.Lock()  # a pause waits out the camera publish in progress
        self.time_offset_s = 0.0  # added to every stamp (negative = time jumps backwards)
        self.twist_scale = 1.0  # reported speed / true speed (≠ 1 trips the input gate's speed check)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t = start_s
        self._t_wall0 = time.monotonic()
        self._next_odom = start_s
        self._lock = threading.Lock()

    # --- kinematics ----------------------------------------------------------------------------
    def pose(self, t: float) -> tuple[np.ndarray, float]:
        """World position and heading at stream time t (constant speed, constant yaw rate)."""
        dt = t - self.start_s
        yaw = self.yaw_rate * dt
        if abs(self.yaw_rate) < 1e-9:
            return np.array([self.speed * dt, 0.0, 0.0]), yaw
        r = self.speed / self.yaw_rate
        return np.array([r * np.sin(yaw), r * (1 - np.cos(yaw)), 0.0]), yaw

    def odometry_msg(self, t: float) -> Odometry:
        p, yaw = self.pose(t)
        msg = Odometry()
        msg.header.stamp = time_msg(t)
        msg.header.frame_id = self.odom_frame
        msg.child_frame_id = "base_link"
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in p)
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
        msg.twist.twist.linear.x = float(self.speed * self.twist_scale)
        msg.twist.twist.angular.z = float(self.yaw_rate)
        return msg

    # --- publishing ----------------------------------------------------------------------------
    def wait_for_subscribers(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        pubs = [c.pub for c in self.cams] + ([self.odom_pub] if self.odom_pub is not None else [])
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.02)
        return False

    def backfill_odometry(self, seconds: float = 1.6) -> None:
        """Odometry history before start_s, so the first tick does not wait 1.5 s for it."""
        if self.odom_pub is None:
            return
        n = int(seconds * self.odom_hz)
        for i in range(n, 0, -1):
            self.odom_pub.publish(self.odometry_msg(self.start_s - i / self.odom_hz))
            time.sleep(0.002)

    def now(self) -> float:
        with self._lock:
            return self._t

    def start(self, elapsed_s: float = 0.0) -> None:
        """Odometry (+ /clock) and cameras publish from two threads, as separate drivers would: a
        slow image publish must not delay odometry. Stream time is start_s + elapsed_s at this call."""
        self._stop.clear()
        for c in self.cams:
            c.next_t = self.start_s
        self._next_odom = self.start_s
        self._t_wall0 = time.monotonic() - elapsed_s
        self._threads = [threading.Thread(target=self._loop, args=(fn,), name=f"synthetic_{fn.__name__}", daemon=True)
                         for fn in (self._odom_due, self._cams_due)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads = []

    def _loop(self, due: Any) -> None:
        """Call `due(t, stamp_t)` (it publishes what is due and returns the next due time) in real time."""
        while not self._stop.is_set():
            t = self.start_s + (time.monotonic() - self._t_wall0)
            with self._lock:
                self._t = max(self._t, t)
            try:
                wake = due(t, t + self.time_offset_s)
            except Exception:  # the context was shut down under us (SIGINT/SIGTERM): stop quietly
                if self._stop.is_set() or not self.node.context.ok():
                    return
                raise
            self._stop.wait(max(0.0, min(0.005, wake - t)))

    def _odom_due(self, t: float, stamp_t: float) -> float:
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=time_msg(stamp_t)))
        if self.odom_pub is None:
            return t + 0.01 if self.clock_pub is not None else t + 1.0
        if t >= self._next_odom:
            # Stamped with the scheduled time, like a sensor stamping at capture: a publisher thread
            # that was held up sends late messages, not wrongly timed ones.
            self.odom_pub.publish(self.odometry_msg(self._next_odom + (stamp_t - t)))
            self._next_odom += 1.0 / self.odom_hz
        return self._next_odom

    def _cams_due(self, t: float, stamp_t: float) -> float:
        for i, c in enumerate(self.cams):
            if t >= c.next_t:
                capture_t = c.next_t + (stamp_t - t)  # scheduled capture time (+ the test's time offset)
                c.next_t += 1.0 / c.spec.rate_hz
                with self._publish_lock:
                    if i in self._paused_cameras:
                        continue
                    c.msg.header.stamp = time_msg(capture_t)
                    c.pub.publish(c.msg)
                    c.sent.append(capture_t)
        return min(c.next_t for c in self.cams) if self.cams else t + 0.1

    def pause_camera(self, index: int) -> float | None:
        """Camera `index` stops publishing; no frame of it is sent once this returns. Returns the
        stamp of its last sent frame (None if it sent none), which may still be on its way."""
        with self._publish_lock:
            self._paused_cameras.add(index)
            sent = self.cams[index].sent
            return sent[-1] if sent else None

    def resume_camera(self, index: int) -> None:
        self._paused_cameras.discard(index)

    def publish_image(self, index: int, msg: Any) -> None:
        """Send one hand-made message on camera `index`'s topic (bad-input tests)."""
        self.cams[index].pub.publish(msg)

    def destroy(self) -> None:
        self.stop()
        for c in self.cams:
            self.node.destroy_publisher(c.pub)
        if self.odom_pub is not None:
            self.node.destroy_publisher(self.odom_pub)
        if self.clock_pub is not None:
            self.node.destroy_publisher(self.clock_pub)


def main(argv: list[str] | None = None) -> int:
    """Publish a synthetic drive for --seconds (own process, e.g. for benchmarks):

    python -m alpamayo_ros.ros.synthetic --prefix /bench --cameras 4 --height 1080 --width 1920 --seconds 20
    Camera i publishes `<prefix>/cam<i>` (CompressedImage JPEG), odometry `<prefix>/odom`.
    """
    import argparse

    import rclpy

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0] if main.__doc__ else None)
    ap.add_argument("--prefix", default="/synthetic")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--speed", type=float, default=5.0)
    ap.add_argument("--no-odometry", action="store_true", help="cameras only (odometry from another process)")
    args = ap.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node(f"synthetic_drive_{os.getpid()}")
    streams = [CameraStream(f"{args.prefix}/cam{i}", "compressed", args.hz, args.height, args.width, "jpeg")
               for i in range(args.cameras)]
    drive = SyntheticDrive(node, streams, None if args.no_odometry else f"{args.prefix}/odom",
                           speed_mps=args.speed, start_s=time.time())
    try:
        if not drive.wait_for_subscribers(30.0):
            print("synthetic: no subscriber on every topic after 30 s", flush=True)
            return 1
        drive.start_s = time.time()  # stamps = wall time (the node runs on the system clock)
        drive.backfill_odometry()
        drive.start(elapsed_s=time.time() - drive.start_s)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end and rclpy.ok():  # SIGINT/SIGTERM shut the context down
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        drive.destroy()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
