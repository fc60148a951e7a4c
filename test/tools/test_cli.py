"""The `alpamayo-ros` command: subcommands, exit codes, messages, and the demo flow (offline, fast)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_bag_io import damaged_copy

from alpamayo_ros.tools.cli import DELEGATES, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def test_make_demo_bag_and_bag_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-demo-bag", str(tmp_path / "bag"), "--duration", "8", "--width", "192", "--height", "108"]) == 0
    assert "/odom: 401 messages" in capsys.readouterr().out
    assert main(["bag-info", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "nav_msgs/msg/Odometry" in out and "usable for replay" in out
    assert main(["bag-info", str(tmp_path / "bag"), "--odom-topic", "/nope"]) == 1
    assert "odometry topic /nope is missing" in capsys.readouterr().out
    assert main(["bag-info", str(tmp_path / "missing")]) == 2


def test_replay_offline_writes_the_report(short_bag, tiny_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    code = main(["replay", str(short_bag.path), "--model-dir", str(tiny_model), "--backend", "kinematic",
                 "--num-candidates", "2", "--period", "0.5", "--out", str(out), "--no-figures"])
    assert code == 0
    text = capsys.readouterr().out
    assert "minADE_K" in text and str(out / "report.md") in text
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "offline" and report["meta"]["backend"] == "kinematic" and report["meta"]["K"] == 2
    # 5 ticks; the last one's t0 is camera 2's newest frame (+5 ms trigger offset: every camera's newest
    # frame is at or before t0), so its 6.4 s future ends 5 ms after the bag
    assert report["summary"]["ticks_scored"] == 4


def test_replay_of_a_truncated_bag_exits_3_with_the_error_and_a_report(short_bag, tiny_model: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bag = damaged_copy(short_bag.path, tmp_path / "cut", keep_fraction=0.9)
    out = tmp_path / "rep"
    code = main(["replay", str(bag), "--model-dir", str(tiny_model), "--backend", "kinematic", "--out", str(out),
                 "--no-figures", "--include-tail", "--quiet"])
    assert code == 3
    err = capsys.readouterr().err
    assert "bag is damaged" in err
    report = json.loads((out / "report.json").read_text())
    assert not report["complete"] and "truncated or corrupted" in report["error"]
    assert report["summary"]["ticks_planned"] > 0


def test_replay_refuses_a_bag_without_the_cameras_and_names_the_parameter(short_bag, tiny_model: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", str(short_bag.path), "--model-dir", str(tiny_model), "--camera", "1=/front/none"])
    assert code == 2
    assert "camera topic /front/none is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="parameter 'model_dir'"):
        main(["replay", str(short_bag.path), "--model-dir", "/does/not/exist"])


def test_delegated_commands_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(DELEGATES) >= {"make-tiny-model", "export-onnx", "prepare-tokenizer", "build-engines"}
    assert main([]) == 1
    assert "make-demo-bag" in capsys.readouterr().out
    # A delegate whose module lacks the function says so instead of a traceback.
    DELEGATES["x-missing"] = ("alpamayo_ros.tools.cli", "no_such_function", "test")
    try:
        assert main(["x-missing"]) == 2
        assert "not available in this installation" in capsys.readouterr().err
    finally:
        del DELEGATES["x-missing"]
    with pytest.raises(SystemExit):
        main(["make-tiny-model", "--help"])


def test_demo_offline_kinematic_end_to_end(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "tiny_model").symlink_to(tiny_model)  # the demo reuses a model it finds
    code = main(["demo", "--out", str(out), "--duration", "9", "--period", "0.5", "--backend", "kinematic",
                 "--offline", "--quiet", "--model", "alpamayo_r1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "making the demo bag" in text and f"using {out / 'tiny_model'}" in text
    assert (out / "report" / "report.md").exists() and "demo finished" in text


def test_demo_defaults_to_alpamayo_1_5_and_its_plans_carry_the_bags_route(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--duration", "9", "--period", "0.5", "--backend", "kinematic",
                 "--offline", "--quiet"])
    assert code == 0
    assert "making the tiny model (alpamayo1_5" in capsys.readouterr().out
    assert json.loads((out / "tiny_model" / "config.json").read_text())["model_type"] == "alpamayo1_5"
    ticks = json.loads((out / "report" / "report.json").read_text())["ticks"]
    routes = {t["route_instruction"] for t in ticks if t["status"] == "planned"}
    assert routes and all(r.startswith("Turn left") for r in routes), routes  # the 9 s drive is in its curve


def test_installed_wrappers_are_executable_and_run_the_cli() -> None:
    for name in ("alpamayo-ros", "run_demo.sh"):
        mode = (ROOT / "scripts" / name).stat().st_mode
        assert mode & stat.S_IXUSR, name
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "alpamayo-ros"), "--help"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "replay" in proc.stdout
    assert "scripts/alpamayo-ros" in (ROOT / "CMakeLists.txt").read_text()
    assert 'alpamayo-ros" demo' in (ROOT / "scripts" / "run_demo.sh").read_text()


@pytest.mark.ros
def test_demo_online_lockstep_end_to_end(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job, as `make demo` runs it (online, lockstep), on a short drive."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "tiny_model").symlink_to(tiny_model)
    code = main(["demo", "--out", str(out), "--duration", "9", "--period", "0.5", "--backend", "kinematic", "--quiet",
                 "--model", "alpamayo_r1"])
    assert code == 0, (out / "report" / "node.log").read_text()[-2000:]
    assert "online: planner node over DDS, lockstep" in capsys.readouterr().out
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["mode"] == "online" and report["meta"]["lockstep"] is True
    assert report["summary"]["ticks_planned"] == report["summary"]["ticks_scheduled"] == 3
    assert (out / "report" / "outputs" / "metadata.yaml").exists()
