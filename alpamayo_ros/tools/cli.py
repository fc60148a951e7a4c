"""`alpamayo-ros`: the package's command-line tools.

    alpamayo-ros demo                         # the README's main job (bag + tiny model + lockstep replay)
    alpamayo-ros make-demo-bag artifacts/demo_bag
    alpamayo-ros replay BAG --model-dir DIR [--online] [--backend onnxruntime] [--out DIR]
    alpamayo-ros bag-info BAG
    alpamayo-ros make-tiny-model DIR | export-onnx ... | prepare-tokenizer ... | build-engines ...

Heavy modules are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alpamayo_ros.tools.topics import NODE_NAME

# Subcommands that live with the code they drive: name -> (module, function, help).
DELEGATES: dict[str, tuple[str, str, str]] = {
    "make-tiny-model": ("alpamayo_ros.runtime.tiny_model", "main", "write a tiny random model directory"),
    "export-onnx": ("alpamayo_ros.runtime.export", "main", "export a model directory to the ONNX graph family"),
    "prepare-tokenizer": ("alpamayo_ros.core.tokenizer", "main", "extend a base tokenizer with Alpamayo tokens"),
    "build-engines": ("alpamayo_ros.runtime.tensorrt.builder", "build_engines_main",
                      "build TensorRT engines from the ONNX graphs (Jetson Thor)"),
    "verify-engines": ("alpamayo_ros.runtime.tensorrt.verify", "verify_engines_main",
                       "run the same ticks through the TensorRT engines and ONNX Runtime; report the differences"),
}


def _delegate(name: str, argv: list[str]) -> int:
    module, func, _ = DELEGATES[name]
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        print(f"alpamayo-ros {name}: not available in this installation ({module}.{func}: {exc})", file=sys.stderr)
        return 2
    return int(fn(argv) or 0)


# ----------------------------------------------------------------------------------------------


def _progress(desc: str, total: int, disable: bool = False) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tick", disable=disable, dynamic_ncols=True, leave=True)


def _parse_camera(spec: str) -> tuple[int, str]:
    cid, _, topic = spec.partition("=")
    if not topic or not cid.strip().isdigit():
        raise argparse.ArgumentTypeError(f"--camera expects ID=TOPIC (e.g. 1=/front/compressed), got {spec!r}")
    return int(cid), topic


def _parse_param(spec: str) -> tuple[str, Any]:
    import yaml

    name, _, value = spec.partition(":=")
    if not value and ":=" not in spec:
        raise argparse.ArgumentTypeError(f"-p expects NAME:=VALUE, got {spec!r}")
    return name, yaml.safe_load(value) if value else ""


def cmd_make_demo_bag(args: argparse.Namespace) -> int:
    from alpamayo_ros.tools.demo_bag import DemoBagConfig, make_demo_bag

    cfg = DemoBagConfig(duration_s=args.duration, raw_images=args.raw, width=args.width, height=args.height)
    info = make_demo_bag(args.out, cfg)
    print(f"wrote {info.path} ({info.size_bytes / 1e6:.1f} MB, {info.duration_s:.0f} s)")
    for topic, n in info.counts.items():
        print(f"  {topic}: {n} messages")
    print("  phases: " + ", ".join(f"{n} {a - info.start_time_s:.1f}-{b - info.start_time_s:.1f} s" for n, a, b in info.phases))
    if args.raw:  # the default params file names the compressed topics
        print("  replay with: " + " ".join(f"--camera {c.camera_id}={c.topic}" for c in cfg.cameras))
    return 0


def cmd_bag_info(args: argparse.Namespace) -> int:
    from alpamayo_ros.tools.bag_io import BagReadError, BagSource, validate_bag

    try:
        src = BagSource(args.bag)
    except BagReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = src.info
    print(f"{info.path}: {info.storage}, {info.duration_s or 0:.2f} s" + (f"  [DAMAGED: {info.damaged}]" if info.damaged else ""))
    for topic, t in sorted(info.topics.items()):
        print(f"  {topic:55s} {t.msgtype:40s} {t.count if t.count is not None else '?'}")
    from alpamayo_ros.tools.planner_setup import raw_params

    raw = raw_params(args.params_file, _overrides(args), args.node_name, args.namespace)
    cams = [raw[f"cameras.{n}.topic"] for n in raw["camera_names"]]
    rep = validate_bag(src, cams, raw["odometry.topic"])
    for p in rep.problems:
        print(f"  problem: {p}")
    print("  usable for replay" if rep.ok else "  NOT fully usable for replay")
    return 0 if rep.ok else 1


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    ov: dict[str, Any] = dict(getattr(args, "param", None) or [])
    for name, attr in (("backend", "backend"), ("model_dir", "model_dir"), ("seed", "seed"),
                       ("num_candidates", "num_candidates")):
        v = getattr(args, attr, None)
        if v is not None and v != "":  # empty = keep the params file's value (as in the launch files)
            ov[name] = str(Path(v).resolve()) if name == "model_dir" else v
    if getattr(args, "odom_topic", None):
        ov["odometry.topic"] = args.odom_topic
    for cid, topic in getattr(args, "camera", None) or []:
        ov.update(_camera_override(args, cid, topic))
    return ov


def _camera_override(args: argparse.Namespace, cid: int, topic: str) -> dict[str, Any]:
    """--camera ID=TOPIC -> the topic parameter of the params file's camera with that model id."""
    from alpamayo_ros.tools.planner_setup import raw_params

    raw = raw_params(args.params_file, {}, args.node_name, args.namespace)
    names = {int(raw[f"cameras.{n}.model_camera_id"]): n for n in raw["camera_names"]}
    if cid not in names:
        raise SystemExit(f"--camera {cid}=...: the params file maps camera ids {sorted(names)}")
    return {f"cameras.{names[cid]}.topic": topic}


def _params(args: argparse.Namespace) -> Any:
    from alpamayo_ros.ros.params import ParameterError
    from alpamayo_ros.tools.planner_setup import node_params

    try:
        return node_params(args.params_file, _overrides(args), args.node_name, args.namespace)
    except ParameterError as exc:
        raise SystemExit(f"error: {exc}") from exc


def _replay_options(args: argparse.Namespace, params: Any) -> Any:
    from alpamayo_ros.tools.planner_setup import camera_topics
    from alpamayo_ros.tools.replay import ReplayOptions

    return ReplayOptions(
        cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=args.period,
        include_tail=args.include_tail, max_ticks=args.max_ticks,
    )


def run_replay(args: argparse.Namespace) -> tuple[int, dict[str, Any] | None]:
    """Replay + report; returns (exit code, report)."""
    from alpamayo_ros.tools.bag_io import BagReadError, BagSource, validate_bag
    from alpamayo_ros.tools.report import segment_table, summary_table, write_report

    params = _params(args)
    opts = _replay_options(args, params)
    try:
        check = validate_bag(BagSource(args.bag), [c.topic for c in opts.cameras], opts.odom_topic)
    except BagReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    if check.errors:
        print("error: the bag cannot feed the planner:\n  " + "\n  ".join(check.errors), file=sys.stderr)
        return 2, None
    for w in check.warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = Path(args.out)
    quiet = args.quiet
    if args.online:
        result = _run_online(args, params, opts, out, quiet, _transports(params, check.info))
    else:
        from alpamayo_ros.tools.planner_setup import build_planner_from_params
        from alpamayo_ros.tools.replay import run_offline

        backend, planner = build_planner_from_params(params)
        try:
            bar = _progress("offline replay", 0, quiet)
            result = run_offline(args.bag, planner, opts, progress=_bar_update(bar))
            bar.close()
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
    result.meta.update({"backend": params.backend, "model_dir": params.model_dir, "K": params.num_candidates,
                        "seed": params.seed, "seed_policy": params.seed_policy})
    paths, report = write_report(result, out, figures=not args.no_figures)
    if not quiet:
        print()
        print(summary_table(report))
        print()
        print(segment_table(report))
        if result.error:
            print(f"\nWARNING: {result.error}\n  the report covers only the ticks before the damage.")
        print(f"\nreport: {paths.markdown}\n        {paths.json}" + (f"\nfigures: {paths.out_dir / 'figures'}" if paths.figures else ""))
    return (3 if result.error else 0), report


def _bar_update(bar: Any) -> Any:
    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update


def _transports(params: Any, info: Any) -> dict[str, str]:
    """Each camera's transport as the bag has it (Image = raw), so the node subscribes with the
    bag's message type whatever the params file says."""
    out = {}
    for cam in params.cameras:
        t = info.topics.get(cam.topic)
        if t is not None:
            out[f"cameras.{cam.name}.transport"] = "raw" if t.msgtype == "sensor_msgs/msg/Image" else "compressed"
    return out


def _run_online(args: argparse.Namespace, params: Any, opts: Any, out: Path, quiet: bool,
                transports: dict[str, str]) -> Any:
    from alpamayo_ros.tools.replay_online import OnlineOptions, OnlineReplayError, run_online

    overrides = transports | _overrides(args)
    if args.lockstep:
        from alpamayo_ros.tools.replay_online import lockstep_overrides

        overrides = lockstep_overrides(params) | overrides
    out.mkdir(parents=True, exist_ok=True)
    online = OnlineOptions(
        node=args.node, node_name=args.node_name, namespace=args.namespace,
        params_file=Path(args.params_file).resolve() if args.params_file else _default_params(),
        param_overrides=overrides, lockstep=args.lockstep, rate=args.rate, settle_s=args.settle,
        plan_timeout_s=args.plan_timeout, record_dir=out / "outputs", log_path=out / "node.log",
    )
    shadow_backend, shadow = (None, None)
    if args.lockstep:  # predicts each tick's t0; the kinematic backend is cheap and never runs
        from dataclasses import replace

        from alpamayo_ros.tools.planner_setup import build_planner_from_params

        shadow_backend, shadow = build_planner_from_params(replace(params, backend="kinematic"))
    bar = _progress("online replay" + (" (lockstep)" if args.lockstep else ""), 0, quiet)
    try:
        result = run_online(args.bag, opts, online, progress=_bar_update(bar), ego_frame_id=params.ego_frame_id,
                            shadow=shadow)
    except OnlineReplayError as exc:
        raise SystemExit(f"error: {exc}") from exc
    finally:
        bar.close()
        if shadow_backend is not None:
            shadow_backend.close()
    return result


def _default_params() -> Path:
    from alpamayo_ros.tools.planner_setup import DEFAULT_PARAMS_FILE

    return DEFAULT_PARAMS_FILE


def cmd_replay(args: argparse.Namespace) -> int:
    code, _ = run_replay(args)
    return code


def cmd_score(args: argparse.Namespace) -> int:
    from alpamayo_ros.tools.bag_io import BagReadError
    from alpamayo_ros.tools.replay import score_recorded
    from alpamayo_ros.tools.report import segment_table, summary_table, write_report

    try:
        result = score_recorded(args.outputs, args.bag, args.candidates_topic, args.odom_topic,
                                ego_frame_id=args.ego_frame_id)
    except (BagReadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths, report = write_report(result, args.out, figures=not args.no_figures)
    print(summary_table(report))
    print()
    print(segment_table(report))
    if result.error:
        print(f"\nWARNING: {result.error}")
    print(f"\nreport: {paths.markdown}")
    return 3 if result.error else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from alpamayo_ros.tools.demo import run_demo

    return run_demo(args)


# ----------------------------------------------------------------------------------------------


def _add_replay_args(p: argparse.ArgumentParser, online_default: bool = False) -> None:
    p.add_argument("--params-file", default=None, help="node parameters (default: the package's config/planner.yaml)")
    p.add_argument("--backend", default=None, help="override the params file's backend")
    p.add_argument("--model-dir", default=None, help="override the params file's model_dir")
    p.add_argument("--seed", type=int, default=None, help="override the params file's seed")
    p.add_argument("--num-candidates", type=int, default=None, help="override K")
    p.add_argument("-p", "--param", type=_parse_param, action="append", metavar="NAME:=VALUE",
                   help="any other node parameter (repeatable), e.g. -p frame_mode:=odometry")
    p.add_argument("--camera", type=_parse_camera, action="append", metavar="ID=TOPIC",
                   help="bag topic of model camera ID (repeatable), e.g. --camera 1=/front/image/compressed")
    p.add_argument("--odom-topic", default=None, help="bag odometry topic (default: the params file's)")
    p.add_argument("--period", type=float, default=0.1, help="seconds of bag time between ticks (default 0.1)")
    p.add_argument("--max-ticks", type=int, default=None, help="stop after this many ticks")
    p.add_argument("--include-tail", action="store_true", help="also plan in the last 6.4 s (not scored)")
    p.add_argument("--out", default="artifacts/replay", help="report directory (default artifacts/replay)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    g = p.add_argument_group("online mode (over DDS into the node)")
    g.add_argument("--online", action=argparse.BooleanOptionalAction, default=online_default,
                   help="play the bag into the running node instead of driving the planner in-process")
    g.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for each plan before advancing (default); --no-lockstep plays in real time")
    g.add_argument("--rate", type=float, default=1.0, help="real-time factor without lockstep")
    g.add_argument("--node", choices=("subprocess", "external"), default="subprocess",
                   help="start the node here, or use one already running (e.g. from replay.launch.py)")
    g.add_argument("--node-name", default=NODE_NAME)
    g.add_argument("--namespace", default="")
    g.add_argument("--settle", type=float, default=0.05, help="seconds for the node's input threads per step")
    g.add_argument("--plan-timeout", type=float, default=30.0, help="seconds to wait for one plan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpamayo-ros", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("demo", help="make the demo bag and tiny model, replay online in lockstep, report")
    p.add_argument("--out", default="artifacts/demo", help="where the bag, model and report go")
    p.add_argument("--duration", type=float, default=30.0, help="demo drive length in seconds")
    p.add_argument("--period", type=float, default=1.0, help="seconds of bag time between ticks (1 keeps the CPU demo short)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime (tiny model) or kinematic")
    p.add_argument("--num-candidates", type=int, default=3, help="K candidates per tick")
    p.add_argument("--offline", action="store_true", help="drive the planner in-process instead of over DDS")
    p.add_argument("--fresh", action="store_true", help="remake the bag and the model even if present")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("make-demo-bag", help="write the synthetic demo drive as a rosbag2 (MCAP)")
    p.add_argument("out", nargs="?", default="artifacts/demo_bag")
    p.add_argument("--duration", type=float, default=45.0)
    p.add_argument("--raw", action="store_true", help="sensor_msgs/Image rgb8 instead of JPEG")
    p.add_argument("--width", type=int, default=576)
    p.add_argument("--height", type=int, default=320)
    p.set_defaults(func=cmd_make_demo_bag)

    p = sub.add_parser("replay", help="replay a bag through the planner and score it against its odometry")
    p.add_argument("bag")
    _add_replay_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("score", help="score plans recorded in a bag (node outputs) against odometry")
    p.add_argument("outputs", help="bag with the node's ~/candidates (e.g. OUT/outputs of an online replay)")
    p.add_argument("--bag", default=None, help="bag with the odometry (default: the outputs bag itself)")
    p.add_argument("--candidates-topic", default="/alpamayo_planner/candidates")
    p.add_argument("--odom-topic", default="/odom")
    p.add_argument("--ego-frame-id", default="base_link", help="frame_id of ego-frame paths")
    p.add_argument("--out", default="artifacts/score")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("bag-info", help="topics, counts and whether a bag can feed the planner")
    p.add_argument("bag")
    p.add_argument("--params-file", default=None)
    p.add_argument("--camera", type=_parse_camera, action="append", metavar="ID=TOPIC")
    p.add_argument("--odom-topic", default=None)
    p.add_argument("--node-name", default=NODE_NAME)
    p.add_argument("--namespace", default="")
    p.set_defaults(func=cmd_bag_info, model_dir=None)

    for name, (_, _, help_text) in DELEGATES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from rclpy.utilities import remove_ros_args  # launch appends --ros-args to executables

        argv = remove_ros_args(["alpamayo-ros", *argv])[1:]
    except ImportError:
        pass
    if argv and argv[0] in DELEGATES:
        return _delegate(argv[0], argv[1:])
    # SIGTERM (timeout, launch shutdown) unwinds like Ctrl-C, so child nodes are stopped cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
