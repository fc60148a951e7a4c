"""`alpamayo-ros`: the package's command-line tools.

    alpamayo-ros demo                         # the README's main job (bag + tiny model + lockstep replay)
    alpamayo-ros make-demo-bag artifacts/demo_bag
    alpamayo-ros replay BAG [BAG ...] --model-dir DIR [--online] [--backend onnxruntime] [--out DIR]
    alpamayo-ros replay BAGS_DIR --protocol reference    # NVIDIA's open-loop protocol (minADE, t0 = 5.1 s)
    alpamayo-ros evaluate BAGS... | --list FILE [--workers N | --ray [ADDRESS]]   # many bags, resumable
    alpamayo-ros import-pai DATASET_DIR --chunk 0 --out BAGS_DIR   # PhysicalAI-AV clips -> one bag each
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
    "quantize": ("alpamayo_ros.runtime.quantize", "main",
                 "FP8/INT8 Q/DQ graphs with NVIDIA Model Optimizer, calibrated on a replay bag"),
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
    _print_clip_metadata(args.bag)
    from alpamayo_ros.tools.planner_setup import raw_params

    raw = raw_params(args.params_file, _overrides(args), args.node_name, args.namespace)
    cams = [raw[f"cameras.{n}.topic"] for n in raw["camera_names"]]
    rep = validate_bag(src, cams, raw["odometry.topic"])
    for p in rep.problems:
        print(f"  problem: {p}")
    print("  usable for replay" if rep.ok else "  NOT fully usable for replay")
    return 0 if rep.ok else 1


def _print_clip_metadata(bag: str) -> None:
    """What import-pai recorded about the clip (nothing for other bags)."""
    from alpamayo_ros.tools.protocol import META_CLIP_ID, META_PREFIX, bag_custom_data, clip_time_origin_s

    meta = bag_custom_data(bag)
    if META_CLIP_ID not in meta:
        return
    origin = clip_time_origin_s(bag)
    print(f"  clip {meta[META_CLIP_ID]} of {meta.get(META_PREFIX + 'source', '?')} (chunk "
          f"{meta.get(META_PREFIX + 'chunk', '?')}), cameras at {meta.get(META_PREFIX + 'camera_rate_hz', '?')} Hz"
          + (f"; clip time 0 = bag time {origin:.3f} s" if origin is not None else ""))


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


def _params(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The node's parameters: params file < `base` (a protocol's settings) < command-line overrides."""
    from alpamayo_ros.ros.params import ParameterError
    from alpamayo_ros.tools.planner_setup import node_params

    try:
        return node_params(args.params_file, dict(base or {}) | _overrides(args), args.node_name, args.namespace)
    except ParameterError as exc:
        raise SystemExit(f"error: {exc}") from exc


def _replay_options(args: argparse.Namespace, params: Any) -> Any:
    from alpamayo_ros.tools.planner_setup import camera_topics
    from alpamayo_ros.tools.replay import ReplayOptions

    offsets = tuple(args.t0) if args.t0 else (_protocol(args).t0_offsets_s if args.protocol else None)
    policy = args.t0_policy or ("node" if args.online else "exact")
    if args.online and policy == "exact":
        raise SystemExit("error: --t0-policy exact is offline only: online, the node plans at its own t0 "
                         "(use --t0-policy node, or replay offline)")
    from alpamayo_ros.tools.topics import resolve_node_topic

    return ReplayOptions(
        cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=args.period,
        include_tail=args.include_tail, max_ticks=args.max_ticks, t0_offsets_s=offsets, t0_policy=policy,
        route_topic=resolve_node_topic(params.route.topic, args.node_name, args.namespace),
        route_max_age_s=params.route.max_age_s,
    )


def _protocol(args: argparse.Namespace) -> Any:
    from alpamayo_ros.tools.protocol import REFERENCE

    return REFERENCE if args.protocol == "reference" else None


def _t0_table(path: str | None) -> dict[str, tuple[float, ...]]:
    """--t0-file: YAML/JSON {bag name or clip id: [clip times in s]}."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        table = {str(k): tuple(float(t) for t in (v if isinstance(v, list | tuple) else [v])) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: --t0-file {path}: expected a mapping bag-or-clip-id -> [t0 seconds, ...] ({exc})") from exc
    empty = [k for k, v in table.items() if not v]
    if empty:
        raise SystemExit(f"error: --t0-file {path}: no t0 for {empty}")
    return table


def expand_bags(paths: list[str]) -> list[Path]:
    """The bags named: a directory that is not itself a bag (no metadata.yaml, no .mcap) stands for
    the bags directly inside it (import-pai's output directory), in name order."""
    bags: list[Path] = []
    for name in paths:
        p = Path(name)
        if p.is_dir() and not (p / "metadata.yaml").exists() and not any(p.glob("*.mcap")):
            inner = sorted(d for d in p.iterdir() if d.is_dir() and (d / "metadata.yaml").exists())
            if not inner:
                raise SystemExit(f"error: {p} is neither a bag nor a directory of bags")
            bags += inner
        else:
            bags.append(p)
    return bags


def _check_bags(bags: list[Path], opts: Any) -> tuple[list[Path], dict[Path, str]]:
    """(bags that can feed the planner, {bag: why not}); warnings are printed."""
    from alpamayo_ros.tools.bag_io import BagReadError, BagSource, validate_bag

    good, bad = [], {}
    for bag in bags:
        try:
            check = validate_bag(BagSource(bag), [c.topic for c in opts.cameras], opts.odom_topic)
        except BagReadError as exc:
            bad[bag] = str(exc)
            continue
        if check.errors:
            bad[bag] = "the bag cannot feed the planner:\n  " + "\n  ".join(check.errors)
            continue
        for w in check.warnings:
            print(f"warning: {bag.name}: {w}" if len(bags) > 1 else f"warning: {w}", file=sys.stderr)
        good.append(bag)
    return good, bad


def run_replay(args: argparse.Namespace) -> tuple[int, dict[str, Any] | None]:
    """Replay (one bag or many) + report; returns (exit code, report)."""
    from alpamayo_ros.tools.evaluate import EvalSpec, params_meta, run_settings
    from alpamayo_ros.tools.replay import failed_result
    from alpamayo_ros.tools.report import write_report

    protocol = _protocol(args)
    params = _params(args, protocol.node_overrides() if protocol else None)
    opts = _replay_options(args, params)
    bags = expand_bags(args.bag)
    good, bad = _check_bags(bags, opts)
    for bag, why in bad.items():
        print(f"error: {why}" if len(bags) == 1 else f"error: {bag}: {why}", file=sys.stderr)
    if not good:
        return 2, None
    table = _t0_table(args.t0_file)
    spec = EvalSpec(params, opts, table, validate=False)  # checked above
    out = Path(args.out)
    if args.online:
        results = [_run_online(args, params, spec.options_for(bag), bag,
                               out / "runs" / bag.name if len(good) > 1 else out,
                               _transports(params, bag), f"[{i + 1}/{len(good)}] " if len(good) > 1 else "")
                   for i, bag in enumerate(good)]
    else:
        results = _run_offline(args, spec, good)
    results += [failed_result(bag, why, "online" if args.online else "offline") for bag, why in bad.items()]
    for result in results:
        result.meta.update(params_meta(params))
    deviations = protocol.deviations(params) if protocol else []
    paths, report = write_report(results, out, figures=not args.no_figures, protocol=protocol, deviations=deviations,
                                 settings=run_settings(params, opts, protocol, table))
    _print_report(args, report, paths)
    return (3 if report["error"] else 0), report


def _print_report(args: argparse.Namespace, report: dict[str, Any], paths: Any) -> None:
    from alpamayo_ros.tools.report import bag_table, protocol_table, segment_table, summary_table

    if args.quiet:
        return
    if report.get("protocol"):
        print("\n" + protocol_table(report))
    print()
    print(summary_table(report))
    print()
    print(segment_table(report))
    if report.get("runs"):
        print()
        print(bag_table(report))
    if report["error"]:
        print(f"\nWARNING: {report['error']}\n  the report covers only what could be read.")
    print(f"\nreport: {paths.markdown}\n        {paths.json}" + (f"\nfigures: {paths.out_dir / 'figures'}" if paths.figures else ""))


def _run_offline(args: argparse.Namespace, spec: Any, bags: list[Path]) -> list[Any]:
    """The bags through one in-process BagWorker (the evaluate path with one worker)."""
    from alpamayo_ros.tools.evaluate import run_bags
    from alpamayo_ros.tools.executors import InProcessExecutor

    bar = _progress("offline replay", 0, args.quiet)

    def on_bag(i: int, bag: Path) -> None:
        if len(bags) > 1:
            bar.set_description(f"offline replay [{i + 1}/{len(bags)}] {bag.name}")
            bar.reset()

    executor = InProcessExecutor(spec, tick_progress=_bar_update(bar), on_bag=on_bag)
    try:
        return run_bags(bags, executor)
    finally:
        bar.close()
        executor.close()


def _bar_update(bar: Any) -> Any:
    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update


def _transports(params: Any, bag: Path) -> dict[str, str]:
    """Each camera's transport as the bag has it (Image = raw), so the node subscribes with the
    bag's message type whatever the params file says."""
    from alpamayo_ros.tools.bag_io import BagSource

    info = BagSource(bag).info
    out = {}
    for cam in params.cameras:
        t = info.topics.get(cam.topic)
        if t is not None:
            out[f"cameras.{cam.name}.transport"] = "raw" if t.msgtype == "sensor_msgs/msg/Image" else "compressed"
    return out


def _run_online(args: argparse.Namespace, params: Any, opts: Any, bag: Path, out: Path,
                transports: dict[str, str], label: str = "") -> Any:
    """One bag into a node started for it (outputs and node.log under `out`)."""
    from alpamayo_ros.tools.replay_online import OnlineOptions, OnlineReplayError, run_online

    overrides = transports | _overrides(args)
    if args.protocol:  # the node gets the protocol's settings (command-line overrides still win)
        overrides = _protocol(args).node_overrides() | overrides
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
    bar = _progress(f"{label}online replay" + (" (lockstep)" if args.lockstep else ""), 0, args.quiet)
    try:
        result = run_online(bag, opts, online, progress=_bar_update(bar), ego_frame_id=params.ego_frame_id,
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Many bags, one planner per worker, per-bag results files (resumable), one report."""
    from alpamayo_ros.tools.evaluate import (
        EvalSpec,
        Evaluation,
        EvaluationConflict,
        evaluate_bags,
        read_bag_list,
        run_settings,
    )
    from alpamayo_ros.tools.executors import make_executor
    from alpamayo_ros.tools.report import write_report

    names = list(args.bag or []) + (read_bag_list(args.list) if args.list else [])
    if not names:
        print("error: name the bags (BAG ... or a directory of bags) or --list FILE", file=sys.stderr)
        return 2
    bags = expand_bags(names)
    protocol = _protocol(args)
    params = _params(args, protocol.node_overrides() if protocol else None)
    opts = _replay_options(args, params)
    table = _t0_table(args.t0_file)
    spec = EvalSpec(params, opts, table)
    evaluation = Evaluation(args.out, run_settings(params, opts, protocol, table))
    try:
        evaluation.check(args.overwrite)
        executor = make_executor(spec, args.workers, args.ray or None, args.ray is not None,
                                 [g for g in (args.gpus or "").split(",") if g], args.gpus_per_worker,
                                 args.cpus_per_worker)
    except (EvaluationConflict, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    bar = tqdm(total=len(bags), desc="evaluate", unit="bag", disable=args.quiet, dynamic_ncols=True)
    failed: list[str] = []

    def on_start(todo: list[Path], done: list[Path]) -> None:
        bar.update(len(done))
        if not args.quiet:
            bar.write(f"{len(bags)} bags: {len(done)} already evaluated in {evaluation.results_dir}, "
                      f"{len(todo)} to run ({executor.name}, {executor.workers or 'auto'} worker(s))")

    def on_result(bag: Path, outcome: Any) -> None:
        error = getattr(outcome, "error", None) or getattr(outcome, "reason", None)
        if error:
            failed.append(bag.name)
            bar.write(f"failed: {bag.name}: {error}")
            bar.set_postfix_str(f"{len(failed)} failed")
        bar.update(1)

    try:
        run = evaluate_bags(bags, executor, evaluation, args.overwrite, args.retry_failed, on_result, on_start)
    except Exception as exc:  # the in-process planner could not be built: nothing can run
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    deviations = protocol.deviations(params) if protocol else []
    paths, report = write_report(run.results, args.out, figures=not args.no_figures, protocol=protocol,
                                 deviations=deviations, settings=run.settings)
    _print_report(args, report, paths)
    bad = [r.name for r in run.results if r.status != "ok"]
    errors = report["summary"]["status"].get("error", 0)
    if not args.quiet:
        print(f"\n{len(run.results) - len(bad)} of {len(run.results)} bags evaluated in full "
              f"({len(run.ran)} now, {len(run.skipped)} from earlier runs); failed or incomplete: {len(bad)}"
              + (f" {bad[:10]}" if bad else "") + f"; ticks that raised an error: {errors}; wall {run.wall_s:.1f} s")
    if run.settings.get("warning"):
        print(f"WARNING: {run.settings['warning']}", file=sys.stderr)
    if len(bad) == len(run.results):
        return 2
    return 1 if bad or errors or run.settings.get("warning") else 0


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


def _pai_selection(args: argparse.Namespace, dataset: Any) -> list[str]:
    from alpamayo_ros.tools.pai.dataset import read_clip_list

    ids: list[str] = list(args.clip or [])
    if args.clips:
        ids += read_clip_list(args.clips)
    if args.chunk:
        ids += dataset.clips_in_chunks(args.chunk, valid_only=not args.include_invalid)
    if not (args.clip or args.clips or args.chunk):
        chunks = dataset.downloaded_chunks()
        ids = dataset.clips_in_chunks(chunks, valid_only=not args.include_invalid)
        print(f"no --clip/--clips/--chunk: every clip of the {len(chunks)} fully downloaded chunk(s) {chunks[:10]}"
              + (" …" if len(chunks) > 10 else ""))
    return list(dict.fromkeys(ids))


def cmd_import_pai(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from alpamayo_ros.tools.pai.convert import ImportOptions, import_clips
    from alpamayo_ros.tools.pai.dataset import PaiDataset, PaiFormatError

    try:
        dataset = PaiDataset(args.dataset)
        clip_ids = _pai_selection(args, dataset)
        opts = ImportOptions(camera_rate_hz=args.camera_rate, image_format=args.image_format,
                             jpeg_quality=args.jpeg_quality, write_tf=not args.no_tf,
                             calibration=not args.no_calibration, overwrite=args.overwrite)
        if args.time_origin_ns is not None:
            opts = replace(opts, time_origin_ns=args.time_origin_ns)
    except (PaiFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not clip_ids:
        print("error: no clips selected (nothing downloaded, or the chunks hold no valid clips)", file=sys.stderr)
        return 2
    from tqdm import tqdm

    clips_bar = tqdm(total=len(clip_ids), desc="clips", unit="clip", disable=args.quiet, dynamic_ncols=True)
    frames_bar = tqdm(total=0, desc="frames", unit="frame", disable=args.quiet, dynamic_ncols=True, leave=False)

    def on_clip(clip_id: str, i: int, n: int) -> None:
        clips_bar.n = i
        clips_bar.set_postfix_str(clip_id)
        frames_bar.reset()

    def on_frame(done: int, total: int) -> None:
        if frames_bar.total != total:
            frames_bar.total = total
        frames_bar.update(done - frames_bar.n)

    try:
        summary = import_clips(dataset, clip_ids, args.out, opts, on_clip=on_clip, on_frame=on_frame)
    finally:
        clips_bar.n = len(clip_ids)
        clips_bar.close()
        frames_bar.close()
    for bag in summary.bags:
        print(f"wrote {bag.path} ({bag.size_bytes / 1e6:.1f} MB, {bag.duration_s:.1f} s)")
        for w in bag.warnings:
            print(f"  warning: {w}")
    if summary.skipped:
        print(f"kept {len(summary.skipped)} existing bag(s) (--overwrite replaces them)")
    for clip_id, err in summary.failed.items():
        print(f"error: {clip_id}: {err}", file=sys.stderr)
    print(f"{len(summary.bags)} converted, {len(summary.skipped)} kept, {len(summary.failed)} failed -> {args.out}")
    return 1 if summary.failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from alpamayo_ros.tools.demo import run_demo

    return run_demo(args)


# ----------------------------------------------------------------------------------------------


def _add_replay_args(p: argparse.ArgumentParser, online: bool = True, out: str = "artifacts/replay") -> None:
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
    p.add_argument("--node-name", default=NODE_NAME, help="the node whose section of the params file applies")
    p.add_argument("--namespace", default="")
    p.add_argument("--period", type=float, default=0.1, help="seconds of bag time between ticks (default 0.1)")
    p.add_argument("--max-ticks", type=int, default=None, help="stop after this many ticks")
    p.add_argument("--include-tail", action="store_true", help="also plan in the last 6.4 s (not scored)")
    p.add_argument("--out", default=out, help=f"report directory (default {out})")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    g = p.add_argument_group("evaluation protocol (one tick per clip time instead of the periodic schedule)")
    g.add_argument("--protocol", choices=("reference",), default=None,
                   help="NVIDIA's open-loop protocol (alpamayo-recipes eval.py): t0 = 5.1 s into each clip, K=6, "
                        "T=0.6, top-p 0.98, seed 42 before every clip, gates off; reports its minADE")
    g.add_argument("--t0", type=float, action="append", metavar="SECONDS",
                   help="plan at this clip time (repeatable; s from the clip's time origin, else the bag start)")
    g.add_argument("--t0-file", default=None, metavar="FILE",
                   help="YAML/JSON {bag name or clip id: [t0, ...]}: each bag's own clip times")
    g.add_argument("--t0-policy", choices=("exact", "node"), default=None,
                   help="exact: plan at exactly t0 (the reference; offline default) | node: the node's own t0 "
                        "after the messages up to t0 (online; offline too, to match an online run)")
    if not online:
        return
    g = p.add_argument_group("online mode (over DDS into the node)")
    g.add_argument("--online", action=argparse.BooleanOptionalAction, default=False,
                   help="play the bag into the running node instead of driving the planner in-process")
    g.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for each plan before advancing (default); --no-lockstep plays in real time")
    g.add_argument("--rate", type=float, default=1.0, help="real-time factor without lockstep")
    g.add_argument("--node", choices=("subprocess", "external"), default="subprocess",
                   help="start the node here, or use one already running (e.g. from replay.launch.py)")
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
    p.add_argument("--model", default="alpamayo1_5", choices=("alpamayo1_5", "alpamayo_r1"),
                   help="which tiny model (1.5 reads the bag's route instructions)")
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

    p = sub.add_parser("replay", help="replay bags through the planner and score them against their odometry")
    p.add_argument("bag", nargs="+", help="bag(s); a directory of bags (import-pai's output) stands for all of them")
    _add_replay_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("evaluate", help="replay many bags offline on several workers (local or Ray), resumable, "
                                        "one report")
    p.add_argument("bag", nargs="*", help="bag(s); a directory of bags stands for all of them")
    p.add_argument("--list", metavar="FILE", help="a text file naming the bags, one per line (# comments; relative "
                                                  "paths are relative to the file)")
    _add_replay_args(p, online=False, out="artifacts/evaluate")
    g = p.add_argument_group("workers (one planner each, the model loaded once per worker)")
    g.add_argument("--workers", type=int, default=None,
                   help="worker count: 1 (default) runs in this process, N > 1 a local process pool; with --ray, "
                        "the actor count (default: one per GPU of the cluster, else 1)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the workers as Ray actors: on the cluster at ADDRESS (or RAY_ADDRESS), else on a "
                        "local Ray started on loopback (pip install 'alpamayo_ros[ray]')")
    g.add_argument("--gpus", default=None, metavar="LIST",
                   help="local workers: pin worker i to GPU LIST[i %% len] (CUDA_VISIBLE_DEVICES), e.g. 0,1")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="Ray: GPUs each actor holds (default 1 on a cluster with GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs each actor holds (default 1)")
    g = p.add_argument_group("results (OUT/results/<bag>.jsonl, written as each bag finishes)")
    g.add_argument("--overwrite", action="store_true",
                   help="discard results in OUT made with other settings (default: refuse to mix them)")
    g.add_argument("--retry-failed", action="store_true",
                   help="run bags again that failed in an earlier run (default: bags already done are skipped)")
    p.set_defaults(func=cmd_evaluate, online=False)

    p = sub.add_parser("score", help="score plans recorded in a bag (node outputs) against odometry")
    p.add_argument("outputs", help="bag with the node's ~/candidates (e.g. OUT/outputs of an online replay)")
    p.add_argument("--bag", default=None, help="bag with the odometry (default: the outputs bag itself)")
    p.add_argument("--candidates-topic", default="/alpamayo_planner/candidates")
    p.add_argument("--odom-topic", default="/odom")
    p.add_argument("--ego-frame-id", default="base_link", help="frame_id of ego-frame paths")
    p.add_argument("--out", default="artifacts/score")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("import-pai", help="convert PhysicalAI-AV clips (NVIDIA's dataset) to rosbag2 MCAP, one per clip")
    p.add_argument("dataset", help="the downloaded dataset directory (features.csv, clip_index.parquet, camera/, "
                                   "labels/egomotion/, calibration/)")
    p.add_argument("--clip", action="append", metavar="ID", help="a clip id (repeatable)")
    p.add_argument("--clips", metavar="FILE", help="clip ids: a text file (one per line) or a parquet with a key or "
                                                   "clip_id column (e.g. alpamayo-recipes' eval list)")
    p.add_argument("--chunk", type=int, action="append", metavar="N", help="every valid clip of chunk N (repeatable)")
    p.add_argument("--out", default="artifacts/pai_bags", help="one bag directory per clip goes here")
    p.add_argument("--camera-rate", type=int, choices=(10, 30), default=30,
                   help="30: every frame (native); 10: the latest frame at or before each 0.1 s of clip time")
    p.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="png: lossless (pixel parity)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--time-origin-ns", type=int, default=None, help="bag time of clip time 0 (default 1.7e18)")
    p.add_argument("--no-tf", action="store_true", help="no /tf and /tf_static")
    p.add_argument("--no-calibration", action="store_true", help="no CameraInfo or /tf_static (calibration not downloaded)")
    p.add_argument("--include-invalid", action="store_true", help="with --chunk/all: also clips with clip_is_valid false")
    p.add_argument("--overwrite", action="store_true", help="replace existing bags (default: keep them, resume)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_import_pai)

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
