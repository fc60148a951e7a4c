"""Test harness shared by every test.

DDS must stay on loopback: the discovery range and a per-run domain id are set here, before any
test imports rclpy, so nobody has to remember to export them. `scripts/run_tests.sh` exports the
same values for subprocesses.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; must not fight the discovery range


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A private rclpy context, shut down and garbage-collected after the test.

    DDS participants are freed only when their node/context objects are collected, so the
    fixture collects explicitly to keep threads from piling up across tests.
    """
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
        gc.collect()


@pytest.fixture
def unique_name() -> str:
    """A topic/node-name suffix unique to this test (tests in one domain never cross-talk)."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def tiny_1_5_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny Alpamayo 1.5 (its config keys, token names and capacities), made once per session."""
    pytest.importorskip("torch")
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_1_5"), seed=0, variant="alpamayo1_5")


@pytest.fixture(scope="session")
def tiny_1_5_onnx_dir(tiny_1_5_model_dir):
    """Its ONNX graph family (extend included), exported once per session (about a minute on 2 cores)."""
    pytest.importorskip("onnxruntime")
    from alpamayo_ros.runtime.export import export_onnx

    export_onnx(tiny_1_5_model_dir)
    return tiny_1_5_model_dir / "onnx"
