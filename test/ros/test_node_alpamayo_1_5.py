"""The tiny Alpamayo 1.5 through the node on ONNX Runtime over real DDS: a route instruction with
navigation guidance in every plan, and ~/ask answered about the newest tick's frames."""

from __future__ import annotations

import pytest
from node_rig import Rig
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from alpamayo_ros.ros.conversions import stamp_to_sec

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_dir(tiny_1_5_onnx_dir) -> str:
    return str(tiny_1_5_onnx_dir.parent)


def _planned(rig: Rig) -> list:
    return [m for m in rig.messages("candidates") if not m.fallback]


def test_guided_plans_and_questions_over_dds(rig_factory) -> None:
    from alpamayo_ros.srv import Ask

    rig = rig_factory(params={
        "backend": "onnxruntime", "num_candidates": 2, "max_generation_length": 8, "nav_guidance_weight": 1.5,
        "noise_temperature": 0.6, "warmup": False, "rate_hz": 2.0, "fallback.inference_timeout_s": 120.0,
        "fallback.input_timeout_s": 120.0, "ask.max_answer_tokens": 6, "ask.timeout_s": 120.0})
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    rig.drv.create_publisher(String, f"{rig.fqn}/route_instruction", qos).publish(String(data="Turn left in 40m"))
    assert rig.transition("configure"), rig.node.last_configure_error
    assert rig.transition("activate")
    rig.start_inputs()
    assert rig.wait_for(lambda: any(m.route_instruction for m in _planned(rig)), timeout_s=120.0), \
        rig.node.stats.snapshot()
    plan = next(m for m in _planned(rig) if m.route_instruction)
    assert (plan.route_instruction, plan.nav_guidance_weight) == ("Turn left in 40m", pytest.approx(1.5))
    assert plan.backend == "onnxruntime" and len(plan.candidates) == 2
    client = rig.drv.create_client(Ask, f"{rig.fqn}/ask")
    res = rig._call(client, Ask.Request(question="Is the road ahead clear?"), timeout_s=180.0)
    assert res.success, res.message
    assert isinstance(res.answer, str) and res.message == ""
    t0 = stamp_to_sec(res.frames_stamp)
    assert any(abs(stamp_to_sec(m.header.stamp) - t0) < 1e-6 for m in _planned(rig))  # a tick's frames
    assert res.inference_time.sec + res.inference_time.nanosec > 0
    # planning resumes after the question, still guided
    n = len(_planned(rig))
    assert rig.wait_for(lambda: len(_planned(rig)) > n, timeout_s=120.0)
    assert _planned(rig)[-1].nav_guidance_weight == pytest.approx(1.5)
    assert rig.wait_for(lambda: rig.diag_values("navigation and questions").get("questions_answered") == "1",
                        timeout_s=30.0)
