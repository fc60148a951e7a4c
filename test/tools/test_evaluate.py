"""`alpamayo-ros evaluate` on the local executors: the same numbers in this process and in a
process pool, a corrupted bag listed as failed while the rest are scored, the aggregate equal to
the bags' own single-bag reports, resume after a kill, settings never mixed, lossless results
files, a pool worker lost mid-run, and workers that read bags without ROS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import kinematic_args, numbers, without_timing

from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir
from alpamayo_ros.tools.cli import main
from alpamayo_ros.tools.evaluate import BagWorker, EvalSpec, read_bag_list, run_bags, unique_names
from alpamayo_ros.tools.executors import InProcessExecutor, PoolExecutor
from alpamayo_ros.tools.planner_setup import camera_topics, node_params
from alpamayo_ros.tools.replay import ReplayOptions
from alpamayo_ros.tools.report import build_report
from alpamayo_ros.tools.results import read_result, write_result


@pytest.fixture(scope="session")
def in_process(eval_bags: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six bags and the corrupted one, evaluated in this process: the reference run."""
    out = tmp_path_factory.mktemp("eval") / "in_process"
    assert main(kinematic_args(eval_bags, out)) == 1  # 1: a bag failed, the others were scored
    return out


def kinematic_spec(**options) -> EvalSpec:
    params = node_params(None, {"backend": "kinematic", "model_dir": str(default_tiny_model_dir())})
    return EvalSpec(params, ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic,
                                          period_s=0.5, **options))


def test_corrupted_bag_is_listed_as_failed_and_the_rest_are_scored(in_process: Path, eval_bags: list[Path]) -> None:
    report = json.loads((in_process / "report.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == [b.name for b in eval_bags]
    bad = runs.pop("corrupted")
    assert bad["status"] == "failed" and bad["ticks"] == 0
    assert bad["error"].startswith("the bag cannot feed the planner: the bag is damaged: index unusable")
    assert all(r["status"] == "ok" and r["ticks"] == 3 and r["ticks_scored"] == 2 for r in runs.values())
    assert report["summary"]["ticks_scored"] == 12 and report["complete"] is False
    # six different drives: six different per-bag numbers, and their spread
    assert len({r["min_ade"] for r in runs.values()}) == 6
    spread = report["summary"]["across_bags"]["min_ade"]
    assert spread["bags"] == 6 and spread["min"] < spread["median"] < spread["max"]
    assert spread["worst"] == max(runs, key=lambda n: runs[n]["min_ade"])
    assert spread["mean"] == pytest.approx(np.mean([r["min_ade"] for r in runs.values()]), rel=1e-12)
    md = (in_process / "report.md").read_text()
    assert "## Per bag" in md and "## Spread across bags" in md and "| corrupted | failed | 0 | 0 |" in md
    assert "- corrupted (failed): " in md and "1 of 7 bags failed" in md
    # what produced the numbers is recorded, every result file carries the same settings key
    s = report["settings"]
    assert (s["K"], s["seed"], s["steps"], s["backend"], s["model_id"]) == (6, 0, 10, "kinematic", "kinematic:tiny_model")
    assert s["clip_list"]["count"] == 7 and s["precision"] == s["precision_run"]
    heads = [json.loads((in_process / "results" / f"{b.name}.jsonl").open().readline()) for b in eval_bags]
    assert {h["settings_key"] for h in heads} == {s["settings_key"]}
    assert [h["status"] for h in heads] == ["ok"] * 6 + ["failed"]


def test_process_pool_gives_the_numbers_of_the_in_process_run(in_process: Path, eval_bags: list[Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "pool"
    assert main(kinematic_args(eval_bags, out, "--workers", "2")) == 1
    assert numbers(out) == numbers(in_process)
    manifest = json.loads((out / "evaluation.json").read_text())
    assert manifest["runs"][-1]["executor"] == "process-pool" and manifest["runs"][-1]["workers"] == 2
    # two worker processes, neither of them this one
    pids = {json.loads((out / "results" / f"{b.name}.jsonl").open().readline())["meta"].get("worker", {}).get("pid")
            for b in eval_bags[:6]}
    assert len(pids) == 2 and os.getpid() not in pids


def test_aggregate_equals_the_single_bag_reports(in_process: Path, eval_bags: list[Path], tmp_path: Path) -> None:
    agg = json.loads((in_process / "report.json").read_text())
    singles = []
    for bag in eval_bags[:6]:
        out = tmp_path / bag.name
        assert main(["replay", str(bag), "--backend", "kinematic", "--model-dir", str(default_tiny_model_dir()),
                     "--period", "0.5", "--out", str(out), "--no-figures", "--quiet"]) == 0
        singles.append(json.loads((out / "report.json").read_text()))
    # every tick row is the single-bag report's, in bag order
    assert without_timing(agg["ticks"]) == without_timing([t for s in singles for t in s["ticks"]])
    # each bag's row holds its own report's numbers
    for row, single in zip(agg["runs"], singles, strict=False):
        o = single["summary"]["overall"]
        assert (row["min_ade"], row["min_fde"], row["selected_ade"], row["selected_fde"], row["ticks_scored"]) == \
               (o["min_ade"], o["min_fde"], o["selected_ade"], o["selected_fde"], single["summary"]["ticks_scored"])
        assert row["baselines"] == {n: b["ade"] for n, b in o["baselines"].items()}
    # the overall and per-segment means are the means over the concatenated ticks
    rows = [t for s in singles for t in s["ticks"] if t["min_ade"] is not None]
    o = agg["summary"]["overall"]
    assert o["min_ade"] == pytest.approx(np.mean([t["min_ade"] for t in rows]), rel=1e-12)
    assert o["selected_fde"] == pytest.approx(np.mean([t["selected_fde"] for t in rows]), rel=1e-12)
    assert o["baselines"]["constant_turn_rate"]["ade"] == pytest.approx(
        np.mean([t["baselines"]["constant_turn_rate"]["ade"] for t in rows]), rel=1e-12)
    for seg, a in agg["summary"]["segments"].items():
        seg_rows = [t["min_ade"] for t in rows if t["segment"] == seg]
        assert a["ticks"] == len(seg_rows) and a["min_ade"] == pytest.approx(np.mean(seg_rows), rel=1e-12)


def test_a_killed_run_resumes_to_the_same_report(in_process: Path, eval_bags: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    cmd = [sys.executable, "-c", "import sys; from alpamayo_ros.tools.cli import main; sys.exit(main(sys.argv[1:]))",
           *kinematic_args(eval_bags, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results"
    deadline = time.monotonic() + 120
    try:
        while len(list(results.glob("*.jsonl"))) < 2:  # killed (preempted) after two bags
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before two bags were done"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    first = {p.name: p.stat().st_mtime_ns for p in results.glob("*.jsonl")}
    assert 2 <= len(first) < 7 and not (out / "report.json").exists()
    assert main(kinematic_args(eval_bags, out)) == 1
    assert numbers(out) == numbers(in_process)
    assert all(results.joinpath(n).stat().st_mtime_ns == t for n, t in first.items())  # kept, not redone
    assert not list(results.glob(".*.tmp"))  # what the killed run was writing is gone
    runs = json.loads((out / "evaluation.json").read_text())["runs"]
    assert runs[0]["finished"] is None and runs[1]["skipped"] == len(first) and runs[1]["to_run"] == 7 - len(first)
    # a third run has nothing to do and writes the same report
    assert main(kinematic_args(eval_bags, out)) == 1
    assert numbers(out) == numbers(in_process)
    assert json.loads((out / "evaluation.json").read_text())["runs"][2]["to_run"] == 0


def test_results_of_other_settings_are_never_mixed(in_process: Path, eval_bags: list[Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k3"
    assert main(kinematic_args(eval_bags[:2], out)) == 0
    assert main(kinematic_args(eval_bags[:2], out, "--num-candidates", "3")) == 2
    err = capsys.readouterr().err
    assert "holds results made with other settings" in err and "K: 6 -> 3" in err and "--overwrite" in err
    assert main(kinematic_args(eval_bags[:2], out, "--num-candidates", "3", "--overwrite")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["K"] == 3 and json.loads((out / "evaluation.json").read_text())["runs"][-1]["skipped"] == 0
    # a node-only parameter (QoS, rates) changes no plan: the results are kept
    assert main(kinematic_args(eval_bags[:2], out, "--num-candidates", "3", "-p", "odometry_depth:=7")) == 0
    assert json.loads((out / "evaluation.json").read_text())["runs"][-1]["skipped"] == 2


def test_failed_bags_are_kept_unless_retried(in_process: Path, eval_bags: list[Path], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "retry"
    shutil.copytree(in_process, out)
    assert main(kinematic_args(eval_bags, out)) == 1
    assert json.loads((out / "evaluation.json").read_text())["runs"][-1]["to_run"] == 0
    assert main(kinematic_args(eval_bags, out, "--retry-failed")) == 1
    assert json.loads((out / "evaluation.json").read_text())["runs"][-1]["to_run"] == 1
    assert numbers(out) == numbers(in_process)


def test_results_files_read_back_bit_for_bit(eval_bags: list[Path], tmp_path: Path) -> None:
    spec = kinematic_spec()
    worker = BagWorker(spec)
    try:
        result = worker(eval_bags[2])
    finally:
        worker.close()
    back = read_result(write_result(tmp_path / "r.jsonl", result, "key"))
    assert len(back.records) == len(result.records) == 3
    for a, b in zip(result.records, back.records, strict=True):
        assert a.xyz is not None and b.xyz is not None
        assert a.xyz.dtype == b.xyz.dtype == np.float32 and np.array_equal(a.xyz, b.xyz)
        assert np.array_equal(a.scores, b.scores) and (a.t0, a.status, a.reasoning) == (b.t0, b.status, b.reasoning)
    for a, b in zip(result.scored(), back.scored(), strict=True):
        assert np.array_equal(a.ground_truth, b.ground_truth) and a.prefix_min_ade == b.prefix_min_ade
        assert a.baselines["constant_velocity"].prefix_fde == b.baselines["constant_velocity"].prefix_fde
    original, read_back = build_report([result])[0], build_report([back])[0]
    assert json.dumps(original, sort_keys=True, default=str) == json.dumps(read_back, sort_keys=True, default=str)


def test_a_pool_worker_killed_mid_run_loses_no_bag(eval_bags: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    import multiprocessing

    spec = kinematic_spec()
    expected = run_bags(eval_bags[:4], InProcessExecutor(spec))
    pool = PoolExecutor(spec, workers=2)
    got, killed = {}, False
    for bag, outcome in pool.map_unordered(eval_bags[:4]):
        got[bag] = outcome
        if not killed:  # after the first result: the other worker holds a bag; kill a worker
            victim = multiprocessing.active_children()[0]
            os.kill(victim.pid, signal.SIGKILL)
            killed = True
    assert killed and set(got) == set(eval_bags[:4])
    assert "worker process died" in caplog.text and "trying it again on a fresh worker" in caplog.text
    for want in expected:
        have = got[want.bag]
        assert have.status == "ok" and [r.t0 for r in have.records] == [r.t0 for r in want.records]
        assert all(np.array_equal(a.xyz, b.xyz) for a, b in zip(have.records, want.records, strict=True))


def test_workers_read_bags_without_ros(eval_bags: list[Path]) -> None:
    code = (
        "import sys\n"
        "from alpamayo_ros.tools.evaluate import BagWorker, EvalSpec\n"
        "from alpamayo_ros.tools.planner_setup import camera_topics, node_params\n"
        "from alpamayo_ros.tools.replay import ReplayOptions\n"
        f"params = node_params(None, {{'backend': 'kinematic', 'model_dir': {str(default_tiny_model_dir())!r}}})\n"
        "opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=0.5)\n"
        f"result = BagWorker(EvalSpec(params, opts))({str(eval_bags[1])!r})\n"
        "assert result.status == 'ok' and len(result.scored()) == 2, result.error\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosbag2_py', 'rmw')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bag_list_file_and_names(eval_bags: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "lists" / "bags.txt"
    listing.parent.mkdir()
    rel = os.path.relpath(eval_bags[0], listing.parent)
    listing.write_text(f"# the drives\n{rel}\n\n{eval_bags[1]}   # absolute\n")
    assert [Path(p).resolve() for p in read_bag_list(listing)] == [eval_bags[0].resolve(), eval_bags[1].resolve()]
    out = tmp_path / "listed"
    assert main(kinematic_args([], out, "--list", str(listing))) == 0
    assert [r["name"] for r in json.loads((out / "report.json").read_text())["runs"]] == ["drive0", "drive1"]
    with pytest.raises(SystemExit, match="two bags are named drive0"):
        unique_names([eval_bags[0], tmp_path / "elsewhere" / "drive0"])
    assert main(["evaluate", "--out", str(tmp_path / "none")]) == 2
    assert "--list FILE" in capsys.readouterr().err


def test_workers_that_cannot_build_the_planner_lose_no_results(eval_bags: list[Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The committed tiny model has no ONNX export: onnxruntime workers cannot build their planner.
    The bags are reported as not run, with the reason, and nothing is written, so a later run
    (with the export in place) evaluates them."""
    out = tmp_path / "no_onnx"
    args = kinematic_args(eval_bags[:3], out, "--workers", "2")
    args[args.index("kinematic")] = "onnxruntime"
    assert main(args) == 2
    report = json.loads((out / "report.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["failed"] * 3
    assert all("not run: the worker could not build its planner: FileNotFoundError" in r["error"]
               and "manifest.json not found" in r["error"] for r in report["runs"])
    assert not list((out / "results").glob("*.jsonl"))
    assert "failed: drive0: the worker could not build its planner" in capsys.readouterr().out
