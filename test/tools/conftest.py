"""Shared fixtures for the tools tests: one short demo bag per session, and an oracle planner."""

from __future__ import annotations

import pytest

from alpamayo_ros.tools.demo_bag import DemoBagConfig, DemoBagInfo, make_demo_bag

SHORT_BAG_S = 10.0


@pytest.fixture(scope="session")
def short_bag(tmp_path_factory: pytest.TempPathFactory) -> DemoBagInfo:
    """A 10 s demo bag (every phase, compressed) — about 1.5 s to make."""
    return make_demo_bag(tmp_path_factory.mktemp("bags") / "demo10", DemoBagConfig(duration_s=SHORT_BAG_S))


# Six distinct short drives (speed, curve radius, heading) for the evaluation tests, small images.
EVAL_DRIVES = [(8.0, 40.0, 0.1), (9.0, 45.0, 0.4), (10.0, 50.0, -0.3), (11.0, 55.0, 1.0), (12.0, 60.0, -1.2),
               (13.0, 65.0, 2.0)]


@pytest.fixture(scope="session")
def eval_bags(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Six 9 s demo bags of different drives, plus one corrupted bag (garbage from its first byte),
    last: what `evaluate` is accepted on."""
    from test_bag_io import damaged_copy

    root = tmp_path_factory.mktemp("eval_bags")
    bags = []
    for i, (speed, radius, yaw) in enumerate(EVAL_DRIVES):
        cfg = DemoBagConfig(duration_s=9.0, cruise_speed_mps=speed, curve_radius_m=radius, start_yaw=yaw,
                            width=192, height=108)
        bags.append(make_demo_bag(root / f"drive{i}", cfg).path)
    bags.append(damaged_copy(bags[0], root / "corrupted", scribble_at=0.0))
    return bags


@pytest.fixture(scope="session")
def tiny_eval_bags(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Two of those drives at the camera resolution the tiny model's vision grid is built for."""
    root = tmp_path_factory.mktemp("tiny_eval_bags")
    return [make_demo_bag(root / f"drive{i}", DemoBagConfig(duration_s=9.5, cruise_speed_mps=speed,
                                                            curve_radius_m=radius, start_yaw=yaw)).path
            for i, (speed, radius, yaw) in enumerate(EVAL_DRIVES[:2])]
