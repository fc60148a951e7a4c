"""Offline replay builds the node's planner: same params file rules, same backend options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from alpamayo_ros.tools.planner_setup import (
    DEFAULT_PARAMS_FILE,
    backend_options,
    node_params,
    read_params_file,
)


def test_backend_options_match_the_node(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from alpamayo_ros.ros.node import PlannerNode

    base = node_params(DEFAULT_PARAMS_FILE, {"backend": "kinematic", "model_dir": str(_model_dir(tmp_path))})
    for change in ({}, {"backend": "onnxruntime", "backend_threads": 2, "engine_dir": "/e", "auto_export": True},
                   {"backend": "torch", "reasoning_mode": "shared"}, {"backend": "tensorrt", "engine_dir": "/e"}):
        params = replace(base, **change)
        assert backend_options(params) == PlannerNode._backend_options(params), change


def test_params_file_sections_apply_from_generic_to_specific(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters: {rate_hz: 1.0, seed: 1}\n"
                 "alpamayo_planner:\n  ros__parameters: {seed: 2, cameras: {a: {topic: /x}}}\n"
                 "/veh1/alpamayo_planner:\n  ros__parameters: {seed: 3}\n")
    assert read_params_file(f) == {"rate_hz": 1.0, "seed": 2, "cameras.a.topic": "/x"}
    assert read_params_file(f, namespace="veh1")["seed"] == 3
    only_planner = tmp_path / "q.yaml"
    only_planner.write_text("alpamayo_planner:\n  ros__parameters: {seed: 2}\n")
    with pytest.raises(ValueError, match="no ros__parameters for node /other"):
        read_params_file(only_planner, node_name="other")


def _model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d
