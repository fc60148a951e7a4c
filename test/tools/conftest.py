"""Shared fixtures for the tools tests: one short demo bag per session, and an oracle planner."""

from __future__ import annotations

import pytest

from alpamayo_ros.tools.demo_bag import DemoBagConfig, DemoBagInfo, make_demo_bag

SHORT_BAG_S = 10.0


@pytest.fixture(scope="session")
def short_bag(tmp_path_factory: pytest.TempPathFactory) -> DemoBagInfo:
    """A 10 s demo bag (every phase, compressed) — about 1.5 s to make."""
    return make_demo_bag(tmp_path_factory.mktemp("bags") / "demo10", DemoBagConfig(duration_s=SHORT_BAG_S))
