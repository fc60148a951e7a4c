"""The generated interfaces exist and travel over real DDS (loopback)."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.ros


def test_discovery_is_confined_to_loopback() -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101


def _candidates_message():
    from builtin_interfaces.msg import Duration, Time
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path

    from alpamayo_ros.msg import CandidateControls, TrajectoryCandidates

    msg = TrajectoryCandidates()
    msg.header.stamp = Time(sec=12, nanosec=500_000_000)
    msg.header.frame_id = "base_link"
    for k in range(3):
        path = Path()
        path.header = msg.header
        for i in range(64):
            pose = PoseStamped()
            pose.header.frame_id = "base_link"
            pose.pose.position.x = float(k + i * 0.5)
            pose.pose.orientation.w = 1.0
            path.poses.append(pose)
        msg.candidates.append(path)
        msg.controls.append(CandidateControls(dt=0.1, v0=5.0, acceleration=[0.1] * 64, curvature=[0.0] * 64))
    msg.scores = [0.9, 0.5, 0.1]
    msg.selected_index = 0
    msg.reasoning = ["Keep lane.", "Slow down for the lead vehicle.", ""]
    msg.model_id = "tiny@abc123"
    msg.backend = "onnxruntime"
    msg.fallback = False
    msg.inference_time = Duration(sec=0, nanosec=1234)
    return msg


def test_trajectory_candidates_round_trips_over_dds(ros_context, unique_name) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message

    from alpamayo_ros.msg import TrajectoryCandidates

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_node = rclpy.create_node(f"pub_{unique_name}", context=ros_context)
    sub_node = rclpy.create_node(f"sub_{unique_name}", context=ros_context)
    received: list[TrajectoryCandidates] = []
    topic = f"/{unique_name}/candidates"
    sub_node.create_subscription(TrajectoryCandidates, topic, received.append, qos)
    pub = pub_node.create_publisher(TrajectoryCandidates, topic, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(pub_node)
    executor.add_node(sub_node)
    sent = _candidates_message()
    deadline = time.monotonic() + 10.0
    while not received and time.monotonic() < deadline:
        if pub.get_subscription_count() > 0:
            pub.publish(sent)
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    pub_node.destroy_node()
    sub_node.destroy_node()

    assert received, "no TrajectoryCandidates arrived over loopback DDS within 10 s"
    got = received[0]
    # float32 scalars are rounded on the wire, so compare with the locally round-tripped message.
    assert got == deserialize_message(serialize_message(sent), TrajectoryCandidates)
    assert len(got.candidates) == 3 and len(got.candidates[2].poses) == 64
    assert got.candidates[1].poses[3].pose.position.x == pytest.approx(2.5)
    assert list(got.reasoning) == ["Keep lane.", "Slow down for the lead vehicle.", ""]
    assert got.controls[0].v0 == pytest.approx(5.0)
