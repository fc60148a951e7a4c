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
