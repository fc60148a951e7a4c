"""`alpamayo-ros demo`: the README's main job, end to end on a CPU.

1. checks the development setup (generated messages importable; otherwise: `make setup`);
2. makes the demo bag (synthetic 4-camera drive with route instructions) and the tiny model
   (Alpamayo 1.5 by default, `--model alpamayo_r1`; + its ONNX graphs), unless they are already in
   the output directory;
3. starts the planner node (lifecycle, use_sim_time) and replays the bag into it over DDS in
   lockstep, recording its outputs;
4. scores every plan against the bag's future odometry and writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _step(msg: str) -> float:
    print(f"==> {msg}", flush=True)
    return time.perf_counter()


def _done(t: float, what: str = "") -> None:
    print(f"    done in {time.perf_counter() - t:.1f} s{(' — ' + what) if what else ''}", flush=True)


def check_setup() -> str | None:
    """None if the environment can run the demo, else what to do."""
    try:
        from alpamayo_ros.msg import TrajectoryCandidates  # noqa: F401
    except ImportError as exc:
        return f"the package's ROS messages are not generated ({exc}); run `make setup` first"
    try:
        import rclpy  # noqa: F401
        import rosbags  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is missing; run `make setup` first"
    return None


def _bag_stamp(duration: float) -> str:
    from alpamayo_ros.tools.demo_bag import DEMO_BAG_VERSION

    return f"demo bag v{DEMO_BAG_VERSION}, {duration:.3f} s\n"


def _bag_current(bag: Path, duration: float) -> bool:
    meta = bag / "metadata.yaml"
    stamp = bag.parent / "bag.stamp"
    if not meta.exists() or not stamp.exists() or stamp.read_text() != _bag_stamp(duration):
        return False
    import yaml

    info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    return abs(info["duration"]["nanoseconds"] / 1e9 - duration) < 0.05


def ensure_bag(out: Path, duration: float, fresh: bool) -> Path:
    from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag

    bag = out / "bag"
    if not fresh and _bag_current(bag, duration):
        print(f"    using {bag}")
        return bag
    t = _step(f"making the demo bag ({duration:.0f} s drive, 4 cameras @10 Hz JPEG, odometry @50 Hz)")
    info = make_demo_bag(bag, DemoBagConfig(duration_s=duration))
    (out / "bag.stamp").write_text(_bag_stamp(duration))
    _done(t, f"{info.path} ({info.size_bytes / 1e6:.1f} MB)")
    return bag


def _model_type(model: Path) -> str | None:
    try:
        return str(json.loads((model / "config.json").read_text()).get("model_type", "alpamayo_r1"))
    except (OSError, ValueError):
        return None


def ensure_model(out: Path, backend: str, fresh: bool, variant: str = "alpamayo1_5") -> Path:
    model = out / "tiny_model"
    need_onnx = backend == "onnxruntime"
    have = _model_type(model) == variant and (not need_onnx or (model / "onnx" / "manifest.json").exists())
    if have and not fresh:
        print(f"    using {model}")
        return model
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    if model.is_symlink():  # someone else's model: replace the link, never write into it
        model.unlink()
    t = _step(f"making the tiny model ({variant}: same architecture, random weights)")
    make_tiny_model(model, variant=variant)
    _done(t, str(model))
    if need_onnx:
        from alpamayo_ros.runtime.export import export_onnx

        t = _step("exporting the tiny model's ONNX graphs (vision, prefill, decode, expert)")
        export_onnx(model)
        _done(t, str(model / "onnx"))
    return model


def replay_args(args: argparse.Namespace, bag: Path, model: Path, report_dir: Path) -> argparse.Namespace:
    """The `alpamayo-ros replay` arguments the demo runs with."""
    from alpamayo_ros.tools.cli import build_parser

    argv = ["replay", str(bag), "--model-dir", str(model), "--backend", args.backend,
            "--num-candidates", str(args.num_candidates), "--period", str(args.period), "--out", str(report_dir)]
    argv += ["--no-online"] if args.offline else ["--online", "--lockstep"]
    if args.quiet:
        argv.append("--quiet")
    return build_parser().parse_args(argv)


def run_demo(args: argparse.Namespace) -> int:
    t_all = time.perf_counter()
    problem = check_setup()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _step(f"demo data in {out}")
    bag = ensure_bag(out, args.duration, args.fresh)
    model = ensure_model(out, args.backend, args.fresh, getattr(args, "model", "alpamayo1_5"))
    report_dir = out / "report"
    mode = "offline (in-process)" if args.offline else "online: planner node over DDS, lockstep"
    t = _step(f"replaying the bag — {mode}, backend {args.backend}, K={args.num_candidates}, "
              f"one tick per {args.period:.1f} s of bag time")
    from alpamayo_ros.tools.cli import run_replay

    code, report = run_replay(replay_args(args, bag, model, report_dir))
    _done(t)
    if report is None:
        return code or 2
    summary = {"total_wall_s": time.perf_counter() - t_all, "report": str(report_dir / "report.md")}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\ndemo finished in {summary['total_wall_s']:.0f} s. Open {report_dir / 'report.md'} "
          f"(figures in {report_dir / 'figures'}).")
    print("The tiny model has random weights: its errors show the pipeline works, not driving skill.")
    return code
