"""The reference protocol as a replay mode, on imported dataset-format fixture clips: the metric
matches a hand-computed value, the baselines are scored on the same ticks and appear in every
report, the protocol's settings reach the planner, and online (the node) equals offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pai_fixture import FixtureClip, write_pai_dataset

from alpamayo_ros.tools.cli import main
from alpamayo_ros.tools.pai.convert import PAI_TIME_ORIGIN_NS, ImportOptions, import_clips
from alpamayo_ros.tools.pai.dataset import PaiDataset
from alpamayo_ros.tools.protocol import REFERENCE
from alpamayo_ros.tools.replay import ReplayOptions, run_offline_many
from alpamayo_ros.tools.report import write_report

pytest.importorskip("av")
pytest.importorskip("pandas")

# Straight drives at 10 and 5 m/s, an arc, and a clip too short for t0 = 5.1 s (future beyond it).
FAST = FixtureClip("clip-1-fast", duration_s=11.6, speed_mps=10.0, seed=11)
SLOW = FixtureClip("clip-2-slow", duration_s=11.6, speed_mps=5.0, seed=12)
# The arc goes through the node too: its frames resize to the model's 320x576 grid (the node refuses
# images that do not fit the model at the input stage, as the backend would).
ARC = FixtureClip("clip-3-arc", duration_s=11.6, speed_mps=8.0, yaw_rate=0.2, seed=13, width=640, height=360)
SHORT = FixtureClip("clip-4-short", duration_s=9.0, speed_mps=7.0, seed=14)
# The "model": straight candidates at these speeds (m/s).
CANDIDATE_SPEEDS = (8.0, 9.5, 12.0)
TAU = 0.1 * np.arange(1, 65)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pai")
    write_pai_dataset(root / "ds", [FAST, SLOW, ARC, SHORT])
    summary = import_clips(PaiDataset(root / "ds"), [FAST.clip_id, SLOW.clip_id, ARC.clip_id, SHORT.clip_id],
                           root / "bags", ImportOptions(camera_rate_hz=10))
    assert not summary.failed and len(summary.bags) == 4
    return root / "bags"


class StraightResult:
    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.xyz = np.stack([np.stack([u * TAU, 0 * TAU, 0 * TAU], -1) for u in CANDIDATE_SPEEDS]).astype(np.float32)
        self.scores = np.ones(len(CANDIDATE_SPEEDS))
        self.selected, self.drive_index, self.rejection = 0, 0, None
        self.reasoning = ["straight"] * len(CANDIDATE_SPEEDS)
        self.timings_s = {"total": 0.0}


class StraightPlanner:
    """Plans K straight lines at fixed speeds wherever it is asked to; records what it saw."""

    def __init__(self) -> None:
        self.asked: list[float | None] = []
        self.images = self.poses = self.resets = 0

    def add_image(self, camera_id, stamp_s, rgb) -> None:
        self.images += 1

    def add_odometry(self, stamp_s, position, orientation_xyzw, linear_velocity=None) -> None:
        self.poses += 1

    def reset(self) -> None:
        self.resets += 1

    def plan(self, t0=None) -> StraightResult:
        self.asked.append(t0)
        assert t0 is not None  # the exact policy always names t0
        return StraightResult(t0)


def test_protocol_metric_matches_the_hand_computed_value(bags: Path, tmp_path: Path) -> None:
    planner = StraightPlanner()
    paths = sorted(p for p in bags.iterdir())
    opts = ReplayOptions(t0_offsets_s=REFERENCE.t0_offsets_s, t0_policy="exact")
    results = run_offline_many(paths, planner, lambda bag: opts)
    # One tick per clip, planned at exactly 5.1 s of clip time, the planner reset before each clip.
    assert planner.resets == 4 and len(planner.asked) == 4
    assert all(t == pytest.approx(PAI_TIME_ORIGIN_NS / 1e9 + 5.1, abs=1e-6) for t in planner.asked)
    rep_paths, report = write_report(results, tmp_path / "rep", protocol=REFERENCE)
    p = report["protocol"]
    # By hand: a straight candidate at u against a drive at v misses by |v − u|·τ at τ = 0.1 … 6.4 s,
    # so its ADE is |v − u|·3.25 m. v = 10: best u = 9.5 -> 1.625 m; v = 5: best u = 8 -> 9.75 m.
    per_clip = {s["bag"]: s["min_ade"] for s in p["samples"]}
    assert per_clip[FAST.clip_id] == pytest.approx(1.625, abs=1e-4)
    assert per_clip[SLOW.clip_id] == pytest.approx(9.75, abs=1e-4)
    # The arc by its closed form: the truth is v/ω·(sin ωτ, 1 − cos ωτ) in the ego frame at t0.
    v, w = ARC.speed_mps, ARC.yaw_rate
    truth = np.stack([v / w * np.sin(w * TAU), v / w * (1 - np.cos(w * TAU))], -1)
    arc_ades = [np.linalg.norm(truth - np.stack([u * TAU, 0 * TAU], -1), axis=1).mean() for u in CANDIDATE_SPEEDS]
    assert per_clip[ARC.clip_id] == pytest.approx(min(arc_ades), abs=1e-4)
    # The short clip has no 6.4 s future at 5.1 s: listed as failed, left out of the mean.
    assert p["samples_scored"] == 3 and p["samples_total"] == 4
    assert [(f["bag"], f["status"]) for f in p["failed"]] == [(SHORT.clip_id, "no_ground_truth")]
    assert p["value"] == pytest.approx((1.625 + 9.75 + min(arc_ades)) / 3, abs=1e-4)
    assert p["metric"] == "minADE" and p["faithful"] and p["protocol"]["t0_policy"] == "exact"
    # Baselines on the same samples: both exact on the straight drives, CTR exact on the arc too,
    # CV off the arc by the closed-form distance.
    cv_arc = np.linalg.norm(truth - np.stack([v * TAU, 0 * TAU], -1), axis=1).mean()
    assert p["baselines"]["constant_velocity"] == pytest.approx(cv_arc / 3, abs=1e-4)
    assert p["baselines"]["constant_turn_rate"] == pytest.approx(0.0, abs=1e-4)
    # The package's own metrics come from the same scores.
    assert report["summary"]["overall"]["min_ade"] == pytest.approx(p["value"], rel=1e-12)
    # JSON, Markdown and figures all carry the baselines.
    data = json.loads(rep_paths.json.read_text())
    assert data["summary"]["overall"]["baselines"]["constant_velocity"]["ticks"] == 3
    assert data["ticks"][0]["baselines"]["constant_turn_rate"]["ade"] == pytest.approx(0.0, abs=1e-4)
    md = rep_paths.markdown.read_text()
    assert "**minADE (reference protocol) = " in md and "over 3/4 clip samples" in md
    assert "| constant velocity (K=1) |" in md and "| ADE, constant turn rate (K=1) |" in md
    assert f"| {FAST.clip_id} | 5.10 | 1.625 |" in md and f"- {SHORT.clip_id} @ 5.1 s: no_ground_truth" in md
    assert {f.name for f in rep_paths.figures} == {"bev_candidates.png", "error_vs_horizon.png", "latency_hist.png"}
    plans = np.load(rep_paths.plans)
    assert list(plans["bag"]) == sorted(b.name for b in paths) and plans["xyz"].shape == (4, 3, 64, 3)


def test_a_skipped_protocol_tick_is_a_failed_sample_not_a_second_copy() -> None:
    """Two clip times that give the node the same input: the second tick is `no_new_input` and
    must not count the first tick's score again."""
    from alpamayo_ros.core.metrics import trajectory_metrics
    from alpamayo_ros.tools.protocol import protocol_samples, protocol_summary
    from alpamayo_ros.tools.scoring import TickRecord, TickScore

    plan = np.zeros((2, 64, 3), np.float32)
    records = [TickRecord(10.0, "planned", t0=9.98, xyz=plan, scores=np.ones(2)),
               TickRecord(10.02, "no_new_input", t0=9.98, reason="no_new_input")]
    m = trajectory_metrics(plan, np.ones((64, 3)))
    score = TickScore(9.98, "straight", m.min_ade, m.min_fde, m.best_index, {}, m.min_ade, m.min_fde, {}, {})
    samples = protocol_samples("bag", records, [score], [2.0, 2.02])
    assert [s.status for s in samples] == ["scored", "no_new_input"]
    summary = protocol_summary(REFERENCE, samples)
    assert summary["samples_scored"] == 1 and summary["value"] == pytest.approx(np.sqrt(2))


def test_protocol_settings_reach_the_planner() -> None:
    from alpamayo_ros.ros.params import planner_config
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir
    from alpamayo_ros.tools.planner_setup import node_params

    model = str(default_tiny_model_dir())
    params = node_params(None, REFERENCE.node_overrides() | {"backend": "kinematic", "model_dir": model})
    cfg = planner_config(params)
    assert cfg.seed_policy == "fixed" and cfg.sampling.seed == 42  # seed 42 before every clip
    assert cfg.sampling.num_candidates == 6 and cfg.sampling.temperature == 0.6 and cfg.sampling.top_p == 0.98
    assert cfg.sampling.max_generation_length == 256 and cfg.gates_enabled is False
    assert REFERENCE.deviations(params) == []
    changed = node_params(None, REFERENCE.node_overrides() | {"model_dir": model, "num_candidates": 3})
    assert REFERENCE.deviations(changed) == ["num_candidates = 3 (protocol: 6)"]


def test_replay_command_runs_the_protocol_over_a_directory_of_bags(bags: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    out = tmp_path / "rep"
    code = main(["replay", str(bags), "--protocol", "reference", "--backend", "kinematic", "--model-dir",
                 str(default_tiny_model_dir()), "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    p = report["protocol"]
    assert p["faithful"] and p["samples_total"] == 4 and p["samples_scored"] == 3
    assert report["meta"]["K"] == 6 and report["meta"]["seed"] == 42 and report["meta"]["seed_policy"] == "fixed"
    assert {r["bag"] for r in report["ticks"]} == {b.name for b in bags.iterdir()}
    ades = [t["min_ade"] for t in report["ticks"] if t["min_ade"] is not None]
    assert p["value"] == pytest.approx(sum(ades) / len(ades))
    # Per-bag t0 lists (--t0-file, by clip id) and a deviation from the protocol, reported as such.
    t0s = tmp_path / "t0.yaml"
    t0s.write_text(f"{FAST.clip_id}: [2.0, 3.0]\n{SHORT.clip_id}: [2.5]\n")
    code = main(["replay", str(bags / FAST.clip_id), str(bags / SHORT.clip_id), "--protocol", "reference",
                 "--t0-file", str(t0s), "--num-candidates", "2", "--backend", "kinematic", "--model-dir",
                 str(default_tiny_model_dir()), "--out", str(out), "--no-figures"])
    assert code == 0
    text = capsys.readouterr().out
    assert "NOT the reference settings: num_candidates = 2 (protocol: 6)" in text
    p = json.loads((out / "report.json").read_text())["protocol"]
    assert not p["faithful"] and p["samples_scored"] == p["samples_total"] == 3
    assert sorted((s["bag"], s["t0_offset_s"]) for s in p["samples"]) == [
        (FAST.clip_id, 2.0), (FAST.clip_id, 3.0), (SHORT.clip_id, 2.5)]
    with pytest.raises(SystemExit, match="offline only"):
        main(["replay", str(bags), "--protocol", "reference", "--online", "--t0-policy", "exact",
              "--backend", "kinematic", "--model-dir", str(default_tiny_model_dir())])


def test_evaluate_runs_the_protocol_like_replay(bags: Path, tmp_path: Path) -> None:
    """The protocol and per-bag t0 lists reach every worker of a process pool: the same samples
    and the same protocol number as `replay`."""
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    t0s = tmp_path / "t0.yaml"
    t0s.write_text(f"{FAST.clip_id}: [2.0, 3.0]\n")
    common = ["--protocol", "reference", "--t0-file", str(t0s), "--backend", "kinematic", "--model-dir",
              str(default_tiny_model_dir()), "--no-figures", "--quiet"]
    assert main(["replay", str(bags), *common, "--out", str(tmp_path / "replay")]) == 0
    assert main(["evaluate", str(bags), *common, "--workers", "2", "--out", str(tmp_path / "eval")]) == 0
    one, many = (json.loads((tmp_path / d / "report.json").read_text())["protocol"] for d in ("replay", "eval"))
    assert many["samples_total"] == 5 and many["samples_scored"] == 4  # SHORT: no ground truth at 5.1 s
    assert many["value"] == one["value"] and many["samples"] == one["samples"] and many["failed"] == one["failed"]


@pytest.mark.ros
def test_converted_bag_online_equals_offline_under_the_protocol(bags: Path, tmp_path: Path) -> None:
    """An imported clip (cameras at 10 Hz) through the node over DDS in lockstep, at protocol
    ticks (node t0 policy), gives the offline replay's plans and scores."""
    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir
    from alpamayo_ros.tools.planner_setup import (
        DEFAULT_PARAMS_FILE,
        build_planner_from_params,
        camera_topics,
        node_params,
    )
    from alpamayo_ros.tools.replay import run_offline
    from alpamayo_ros.tools.replay_online import OnlineOptions, lockstep_overrides, run_online
    from alpamayo_ros.tools.scoring import summarize

    overrides = REFERENCE.node_overrides() | {"backend": "kinematic", "model_dir": str(default_tiny_model_dir()),
                                              "num_candidates": 3}
    params = node_params(DEFAULT_PARAMS_FILE, overrides)
    opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic,
                         t0_offsets_s=(2.0, 3.3, 5.1), t0_policy="node")
    bag = bags / ARC.clip_id
    backend, planner = build_planner_from_params(params)
    try:
        offline = run_offline(bag, planner, opts)
    finally:
        backend.close()
    _, shadow = build_planner_from_params(params)
    online = run_online(bag, opts, OnlineOptions(
        params_file=DEFAULT_PARAMS_FILE, param_overrides=lockstep_overrides(params) | overrides,
        log_path=tmp_path / "node.log", startup_timeout_s=60.0, first_plan_timeout_s=60.0, plan_timeout_s=20.0,
    ), shadow=shadow)
    assert online.error is None and offline.error is None
    assert [r.status for r in online.records] == [r.status for r in offline.records] == ["planned"] * 3, \
        (tmp_path / "node.log").read_text()[-2000:]
    origin = PAI_TIME_ORIGIN_NS / 1e9
    for off, on, clip_t in zip(offline.records, online.records, (2.0, 3.3, 5.1), strict=True):
        assert on.t0 == pytest.approx(off.t0, abs=1e-9)
        assert origin + clip_t - 0.1 <= off.t0 <= origin + clip_t  # the newest complete input at or before
        np.testing.assert_allclose(on.xyz, off.xyz, atol=1e-5)
        np.testing.assert_allclose(on.scores, off.scores, rtol=1e-6, atol=1e-6)
    a, _ = summarize(offline.records, offline.gt)
    b, _ = summarize(online.records, online.gt)
    assert a["ticks_scored"] == b["ticks_scored"] == 3
    assert b["overall"]["min_ade"] == pytest.approx(a["overall"]["min_ade"], rel=1e-6)
    assert b["overall"]["baselines"] == a["overall"]["baselines"]
