"""Online replay (the node as a subprocess, bag over DDS on loopback, lockstep) produces the same
plans as offline replay (the same Planner in-process) for the same bag and seed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.tools.bag_io import BagSource, deserialize
from alpamayo_ros.tools.planner_setup import (
    DEFAULT_PARAMS_FILE,
    build_planner_from_params,
    camera_topics,
    node_params,
)
from alpamayo_ros.tools.replay import ReplayOptions, run_offline
from alpamayo_ros.tools.replay_online import OnlineOptions, lockstep_overrides, run_online

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _overrides(model: Path, seed: int) -> dict:
    return {"backend": "kinematic", "model_dir": str(model), "num_candidates": 3, "seed": seed}


def _offline(bag: Path, model: Path, seed: int, opts: ReplayOptions):
    params = node_params(DEFAULT_PARAMS_FILE, _overrides(model, seed))
    backend, planner = build_planner_from_params(params)
    try:
        return run_offline(bag, planner, opts)
    finally:
        backend.close()


def test_offline_and_online_lockstep_give_the_same_plans(short_bag, tiny_model: Path, tmp_path: Path) -> None:
    seed = 7
    params = node_params(DEFAULT_PARAMS_FILE, _overrides(tiny_model, seed))
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=0.2)
    offline = _offline(short_bag.path, tiny_model, seed, opts)
    _, shadow = build_planner_from_params(params)
    online_opts = OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE,
        param_overrides=lockstep_overrides(params) | _overrides(tiny_model, seed),
        record_dir=tmp_path / "outputs", log_path=tmp_path / "node.log",
        startup_timeout_s=60.0, first_plan_timeout_s=60.0, plan_timeout_s=20.0,
    )
    online = run_online(short_bag.path, opts, online_opts, shadow=shadow)
    assert online.error is None and offline.error is None
    assert [r.status for r in online.records] == [r.status for r in offline.records], (tmp_path / "node.log").read_text()[-2000:]
    planned = [(a, b) for a, b in zip(offline.records, online.records, strict=True) if a.status == "planned"]
    assert len(planned) == 11
    for off, on in planned:
        assert on.t0 == pytest.approx(off.t0, abs=1e-9)
        assert on.selected == off.selected
        np.testing.assert_allclose(on.xyz, off.xyz, atol=1e-5)  # float32 paths through Path messages
        np.testing.assert_allclose(on.scores, off.scores, rtol=1e-6, atol=1e-6)
        assert on.reasoning == off.reasoning
    # The node's outputs were recorded to a readable bag, stamped with t0.
    rec = BagSource(tmp_path / "outputs")
    cands = [deserialize(m) for m in rec.messages(["/alpamayo_planner/candidates"])]
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in cands]
    # (a plan the node made before a step's last slice arrived would be recorded too: superset)
    assert all(any(abs(s - off.t0) < 1e-6 for s in stamps) for off, _ in planned)
    assert len(cands[0].candidates) == 3 and len(cands[0].candidates[0].poses) == 64
    assert online.meta["node_exit_code"] == 0
    # `alpamayo-ros score`: the recorded outputs, scored later against the input bag, give the
    # same numbers as the live replay.
    from alpamayo_ros.tools.replay import score_recorded
    from alpamayo_ros.tools.scoring import summarize

    rescored = score_recorded(tmp_path / "outputs", short_bag.path)
    live_t0 = {r.t0 for r in online.records if r.status == "planned"}
    live, _ = summarize(online.records, online.gt)
    again, _ = summarize([r for r in rescored.records if r.t0 in live_t0], rescored.gt)  # early extras aside
    # the last tick's t0 is camera 2's newest frame (+5 ms), so its 6.4 s future ends 5 ms after the bag
    assert again["ticks_scored"] == live["ticks_scored"] == 10
    assert again["overall"]["min_ade"] == pytest.approx(live["overall"]["min_ade"], rel=1e-9)


def test_the_seed_changes_the_plans(short_bag, tiny_model: Path) -> None:
    opts = ReplayOptions(max_ticks=3)
    a = _offline(short_bag.path, tiny_model, 1, opts)
    b = _offline(short_bag.path, tiny_model, 2, opts)
    a2 = _offline(short_bag.path, tiny_model, 1, opts)
    assert all(np.array_equal(x.xyz, y.xyz) for x, y in zip(a.records, a2.records, strict=True))
    assert not np.allclose(a.records[0].xyz, b.records[0].xyz)


def test_node_that_cannot_configure_fails_the_replay_clearly(short_bag, tmp_path: Path) -> None:
    from alpamayo_ros.tools.replay_online import OnlineReplayError

    bad = OnlineOptions(params_file=DEFAULT_PARAMS_FILE, param_overrides={"backend": "kinematic", "model_dir": str(tmp_path)},
                        log_path=tmp_path / "node.log", startup_timeout_s=60.0)
    with pytest.raises(OnlineReplayError, match="exited with code 1") as err:
        run_online(short_bag.path, ReplayOptions(max_ticks=1), bad)
    assert "model_dir" in str(err.value)  # the node's configure error names the parameter


def test_odometry_frame_outputs_are_scored_in_the_ego_frame(short_bag, tiny_model: Path, tmp_path: Path) -> None:
    """frame_mode=odometry: the node publishes paths in the odom frame; the replay brings them back
    into the ego frame at t0 with the bag's pose, and they equal the offline (ego-frame) plans."""
    params = node_params(DEFAULT_PARAMS_FILE, _overrides(tiny_model, 3))
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, max_ticks=4)
    offline = _offline(short_bag.path, tiny_model, 3, opts)
    _, shadow = build_planner_from_params(params)
    online = run_online(short_bag.path, opts, OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE, log_path=tmp_path / "node.log",
        param_overrides=lockstep_overrides(params) | _overrides(tiny_model, 3) | {"frame_mode": "odometry"},
    ), shadow=shadow)
    assert [r.status for r in online.records] == ["planned"] * 4
    for off, on in zip(offline.records, online.records, strict=True):
        np.testing.assert_allclose(on.xyz, off.xyz, atol=1e-4)


def test_free_running_replay_records_plans_at_the_nodes_pace(short_bag, tiny_model: Path, tmp_path: Path) -> None:
    """Without lockstep the bag plays in real time (here x2); plans arrive as the node makes them."""
    params = node_params(DEFAULT_PARAMS_FILE, _overrides(tiny_model, 0))
    # Ticks to the end of the bag (~4 s of wall time at x2): enough for a loaded machine to plan.
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, include_tail=True)
    online = run_online(short_bag.path, opts, OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE, lockstep=False, rate=2.0, log_path=tmp_path / "node.log",
        param_overrides=_overrides(tiny_model, 0), record_dir=tmp_path / "outputs",
    ))
    assert online.meta["lockstep"] is False and len(online.records) == 85
    planned = [r for r in online.records if r.status == "planned"]
    assert planned, (tmp_path / "node.log").read_text()[-2000:]
    assert all(r.xyz.shape == (3, 64, 3) for r in planned)
    assert {r.status for r in online.records} <= {"planned", "timeout", "gate_rejected", "fallback"}
    assert online.meta["recorded_messages"] >= len(planned)


@pytest.fixture(scope="module")
def tiny_model_1_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny15", variant="alpamayo1_5")


def test_route_instructions_from_the_bag_reach_the_prompt_in_both_modes(short_bag, tiny_model_1_5: Path,
                                                                       tmp_path: Path) -> None:
    """The demo bag's route topic (1 Hz) goes into Alpamayo 1.5's prompt offline and through the node's
    ~/route_instruction online; with route.max_age_s 0.5 s some ticks find it aged out, the same ones."""
    from alpamayo_ros.tools.topics import DEFAULT_ROUTE_TOPIC

    ov = _overrides(tiny_model_1_5, 5) | {"route.max_age_s": 0.5}
    params = node_params(DEFAULT_PARAMS_FILE, ov)
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=0.2,
                         max_ticks=12, route_topic=DEFAULT_ROUTE_TOPIC, route_max_age_s=params.route.max_age_s)
    backend, planner = build_planner_from_params(params)
    try:
        offline = run_offline(short_bag.path, planner, opts)
    finally:
        backend.close()
    _, shadow = build_planner_from_params(params)
    online = run_online(short_bag.path, opts, OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE, param_overrides=lockstep_overrides(params) | ov,
        log_path=tmp_path / "node.log", startup_timeout_s=60.0, first_plan_timeout_s=60.0, plan_timeout_s=20.0,
    ), shadow=shadow)
    assert online.error is None and offline.error is None
    off = [(r.status, r.route_instruction) for r in offline.records]
    on = [(r.status, r.route_instruction) for r in online.records]
    assert on == off, (tmp_path / "node.log").read_text()[-2000:]
    routes = [route for status, route in off if status == "planned"]
    assert any(r.startswith("Turn left") for r in routes) and "" in routes, routes
    assert set(routes) <= {"", "Turn left", "Continue straight"} | {f"Turn left in {d}m" for d in range(100)}


@pytest.mark.slow
def test_tiny_alpamayo_1_5_with_guidance_replays_alike_on_onnxruntime_and_torch(short_bag, tiny_1_5_onnx_dir: Path,
                                                                                tmp_path: Path) -> None:
    """The tiny 1.5 model on ONNX Runtime reads the bag's route topic offline and through the node
    online (lockstep) with navigation guidance on: the same reasoning and trajectories; offline on
    torch, guidance off, the same instructions reach its prompt."""
    model = tiny_1_5_onnx_dir.parent
    ov = {"backend": "onnxruntime", "model_dir": str(model), "num_candidates": 2, "seed": 9,
          "max_generation_length": 8, "nav_guidance_weight": 1.5, "noise_temperature": 0.6, "warmup": False}
    params = node_params(DEFAULT_PARAMS_FILE, ov)
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=0.5, max_ticks=3)
    backend, planner = build_planner_from_params(params)
    try:
        offline = run_offline(short_bag.path, planner, opts)
    finally:
        backend.close()
    _, shadow = build_planner_from_params(node_params(DEFAULT_PARAMS_FILE, ov | {"backend": "kinematic"}))
    online = run_online(short_bag.path, opts, OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE, param_overrides=lockstep_overrides(params) | ov,
        log_path=tmp_path / "node.log", startup_timeout_s=120.0, first_plan_timeout_s=120.0, plan_timeout_s=120.0,
    ), shadow=shadow)
    assert online.error is None and offline.error is None
    assert [r.status for r in online.records] == [r.status for r in offline.records] == ["planned"] * 3, \
        (tmp_path / "node.log").read_text()[-2000:]
    for off, on in zip(offline.records, online.records, strict=True):
        assert on.route_instruction == off.route_instruction != ""
        assert on.reasoning == off.reasoning
        np.testing.assert_allclose(on.xyz, off.xyz, atol=1e-4)
    torch_params = node_params(DEFAULT_PARAMS_FILE, ov | {"backend": "torch", "nav_guidance_weight": 0.0})
    backend, planner = build_planner_from_params(torch_params)
    try:
        plain = run_offline(short_bag.path, planner, replace(opts, max_ticks=2))
    finally:
        backend.close()
    assert [r.route_instruction for r in plain.records] == [r.route_instruction for r in offline.records[:2]]
    assert not np.allclose(plain.records[0].xyz, offline.records[0].xyz, atol=1e-4)  # guidance changed the plans
