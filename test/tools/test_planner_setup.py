"""Offline replay builds the node's planner: same params file rules, same backend options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from alpamayo_ros.ros.params import backend_options
from alpamayo_ros.tools.planner_setup import (
    DEFAULT_PARAMS_FILE,
    build_planner_from_params,
    node_params,
    read_params_file,
)


def test_backend_options_map_each_backend(tmp_path: Path) -> None:
    base = node_params(DEFAULT_PARAMS_FILE, {"backend": "kinematic", "model_dir": str(_model_dir(tmp_path))})
    cases = [
        ({}, {"mode": "per_candidate"}),
        ({"backend": "onnxruntime", "backend_threads": 2, "engine_dir": "/e", "auto_export": True},
         {"mode": "per_candidate", "max_candidates": base.num_candidates, "num_threads": 2, "auto_export": True,
          "onnx_dir": "/e"}),
        ({"backend": "torch", "reasoning_mode": "shared"},
         {"mode": "shared_reasoning", "max_candidates": base.num_candidates}),
        ({"backend": "tensorrt", "engine_dir": "/e"}, {"mode": "per_candidate", "engine_dir": "/e"}),
    ]
    for change, expected in cases:
        assert backend_options(replace(base, **change)) == expected, change


def test_replay_planner_is_configured_from_the_node_parameters() -> None:
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    params = node_params(DEFAULT_PARAMS_FILE, {"backend": "kinematic", "model_dir": str(default_tiny_model_dir()),
                                               "num_candidates": 3, "seed": 11, "gates_enabled": False})
    backend, planner = build_planner_from_params(params)
    try:
        cfg = planner.config
        assert cfg.sampling.num_candidates == 3 and cfg.sampling.seed == 11 and not cfg.gates_enabled
        assert cfg.camera_ids == params.camera_ids and cfg.seed_policy == params.seed_policy
    finally:
        backend.close()


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
