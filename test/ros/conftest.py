"""Fixtures shared by the node tests (the loopback DDS settings come from test/conftest.py)."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    return str(default_tiny_model_dir())  # the committed tiny model (read only)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: str) -> str:
    return tiny_model_dir


@pytest.fixture
def rig_factory(ros_context, unique_name, model_dir):
    """Make node rigs (node + driver on their own executor threads); all are closed after the test."""
    from node_rig import Rig

    rigs: list[Rig] = []

    def make(**kwargs) -> Rig:
        rig = Rig(ros_context, f"{unique_name}{len(rigs)}", model_dir, **kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    gc.collect()
