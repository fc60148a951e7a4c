"""`alpamayo-ros quantize`: FP8 (or INT8) Q/DQ graphs with NVIDIA Model Optimizer, calibrated on a bag.

    alpamayo-ros quantize MODEL_DIR --bag BAG [--mode fp8] [--graphs prefill,decode,text] [--expert]
                          [--out MODEL_DIR/onnx-fp8] [--ticks 4] [--candidates 2]

1. Calibration inputs are recorded while the planner replays the bag on ONNX Runtime over the fp32
   export (`MODEL_DIR/onnx`, exported if absent): the real frames, ego histories and prompts of the
   drive, the prefill, the first decode steps of every tick (their KV as decode reads it) and every
   Euler step of the expert. The text graph's calibration is the same calls in its two phases.
2. Model Optimizer's ONNX post-training quantization (`modelopt.onnx.quantization.quantize`, max
   calibration on ONNX Runtime's CPU provider) inserts Q/DQ around every MatMul/Gemm of the chosen graphs
   (FP8 E4M3 scales per tensor, opset 19). Everything else stays in `--high-precision-dtype` (fp32: the
   graphs still run on ONNX Runtime on a CPU, which emulates FP8 with Q/DQ, so the accuracy of the
   quantized model is measured here; fp16 for a TensorRT build from the same graphs).
3. The output is an ONNX directory like the export's (manifest + graphs; the unquantized graphs and
   weights.bin are copied) with a `quantization` record. Use it with `backend: onnxruntime`
   and `engine_dir: OUT`, or build engines from it on Thor: `build-engines` sees the FP8 Q/DQ nodes.

NVFP4: Model Optimizer's ONNX quantizer offers int8 / fp8 / int4 only; its NVFP4 is the PyTorch path
(`modelopt.torch.quantization` with NVFP4_DEFAULT_CFG, then its ONNX exporter), which this command
does not implement (docs/deployment/jetson_thor.md says what is left).

Model Optimizer is an optional dependency (requirements/quantize.txt, installed by `make setup`): its
`[onnx]` extra pulls onnxruntime-gpu and cupy on x86, so it is installed without dependencies plus the
CPU-side ones it needs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.runtime.executor import KV_NAMES, MASK_VALUE, GraphExecutor, ImageFeatures

MODES = ("fp8", "int8")
TEXT_STACK = ("prefill", "decode", "text")
QUANTIZABLE = (*TEXT_STACK, "expert_step")
Feeds = dict[str, np.ndarray]


class CalibrationRecorder(GraphExecutor):
    """Runs an OnnxRuntimeExecutor and keeps, per graph, the feeds its calls had (or, for the text graph,
    would have had). Prefix caches are copied once per tick and shared by that tick's feeds."""

    name = "calibration-recorder"

    def __init__(self, inner: Any, graphs: Sequence[str], decode_samples: int = 8) -> None:
        super().__init__(inner.config)
        self.inner, self.graphs, self.decode_samples = inner, set(graphs), decode_samples
        self.feeds: dict[str, list[Feeds]] = {g: [] for g in graphs}
        self._prefix: dict[str, np.ndarray] = {}
        self._steps = 0

    def _want(self, graph: str) -> bool:
        return graph in self.graphs

    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        return self.inner.encode_images(pixel_rows)

    def prefill(self, input_ids: Any, position_ids: Any, features: Any, image_token_index: Any) -> np.ndarray:
        logits = self.inner.prefill(input_ids, position_ids, features, image_token_index)
        embeds, deepstack = self.stack_features(features)
        p, images = int(input_ids.shape[0]), {"image_embeds": embeds, "deepstack_embeds": deepstack,
                                               "image_token_index": np.asarray(image_token_index, np.int64)}
        positions = np.asarray(position_ids, np.int64)[:, None]
        if self._want("prefill"):
            self.feeds["prefill"].append({"input_ids": self.padded_ids(input_ids), "position_ids": positions, **images})
        if self._want("text"):  # the text graph's prefill phase: no prefix yet, every suffix slot hidden
            kv = self.inner.kv
            cs = self.config.suffix_capacity
            empty = {f"prefix_{k}_{i}": np.zeros((kv.heads, 0, kv.head_dim), np.float32)
                     for k in KV_NAMES for i in range(kv.layers)}
            hidden = {f"suffix_{k}_{i}": np.zeros((kv.heads, 1, cs, kv.head_dim), np.float32)
                      for k in KV_NAMES for i in range(kv.layers)}
            self.feeds["text"].append({"input_ids": np.asarray(input_ids, np.int64).reshape(1, p),
                                       "position_ids": positions, **images,
                                       "suffix_mask": np.full((1, cs), MASK_VALUE, np.float32), **empty, **hidden})
        self._prefix = {k: self.inner.kv.prefix_view(k).copy() for k in KV_NAMES}
        self._steps = 0
        return logits

    def _kv_feeds(self, k: int | None = None, r: int | None = None) -> Feeds:
        """The per-layer KV inputs as the graph reads them now (decode, or an expert_step of r rows for k
        candidates); prefixes from this tick's copy."""
        feeds = {}
        for name, value in self.inner.kv.feeds(k, r).items():
            part, kind, layer = name.split("_")
            feeds[name] = self._prefix[kind][int(layer)] if part == "prefix" else value.copy()
        return feeds

    def start_decode(self, batch: int) -> None:
        self.inner.start_decode(batch)

    def decode(self, token_ids: Any, position_ids: Any, write_index: int, suffix_mask: Any) -> np.ndarray:
        if self._steps < self.decode_samples and (self._want("decode") or self._want("text")):
            kv = self._kv_feeds()
            feeds = {"input_ids": np.asarray(token_ids, np.int64).reshape(-1, 1),
                     "position_ids": np.asarray(position_ids, np.int64), "suffix_mask": np.asarray(suffix_mask), **kv}
            if self._want("decode"):
                self.feeds["decode"].append(feeds)
            if self._want("text"):  # the decode phase: no image rows
                d, nds = self.config.text.hidden_size, self.config.num_deepstack
                self.feeds["text"].append({**feeds, "image_embeds": np.zeros((0, d), np.float32),
                                           "deepstack_embeds": np.zeros((nds, 0, d), np.float32),
                                           "image_token_index": np.zeros(0, np.int64)})
        self._steps += 1
        return self.inner.decode(token_ids, position_ids, write_index, suffix_mask)

    @property
    def supports_guidance(self) -> bool:  # type: ignore[override]
        return bool(self.inner.supports_guidance)

    def extend(self, input_ids: Any, position_ids: Any, prefix_mask: Any, own_mask: Any) -> None:
        self.inner.extend(input_ids, position_ids, prefix_mask, own_mask)  # not calibrated: `extend` stays as is

    def run_expert(self, x0: Any, steps: Any, position_ids: Any, suffix_mask: Any, prefix_mask: Any = None,
                   row_mix: Any = None) -> np.ndarray:
        if self._want("expert_step"):  # every Euler step's input, from the fp32 expert itself
            r = int(x0.shape[0])
            k, seen, mix = self.expert_extras(r, self.inner.kv.prefix_len, prefix_mask, row_mix)
            kv = self._kv_feeds(k, r)
            session, x = self.inner.sessions["expert_step"], np.ascontiguousarray(x0, np.float32)
            for t, dt in steps:
                feeds = {"x": x, "t": np.array([t], np.float32), "dt": np.array([dt], np.float32), "row_mix": mix,
                         "position_ids": np.asarray(position_ids, np.int64), "suffix_mask": np.asarray(suffix_mask),
                         "prefix_mask": seen, **kv}
                self.feeds["expert_step"].append(feeds)
                (x,) = session.run(None, feeds)
        return self.inner.run_expert(x0, steps, position_ids, suffix_mask, prefix_mask, row_mix)

    def take_counters(self) -> dict[str, int]:
        return self.inner.take_counters()

    def close(self) -> None:
        self.inner.close()


def record_calibration(model_dir: str | Path, onnx_dir: str | Path, bag: str | Path, graphs: Sequence[str],
                       ticks: int = 4, candidates: int = 2, decode_samples: int = 8,
                       params_file: str | Path | None = None) -> tuple[dict[str, list[Feeds]], dict[str, Any]]:
    """Replay `ticks` ticks spread over the bag through the planner on ONNX Runtime, recording the feeds."""
    from alpamayo_ros.core.planner import build_planner
    from alpamayo_ros.ros.params import planner_config
    from alpamayo_ros.runtime.graph_backend import GraphBackend
    from alpamayo_ros.runtime.image_resize import planner_resizer
    from alpamayo_ros.runtime.onnx_backend import build_onnx_executor
    from alpamayo_ros.tools.bag_io import BagSource
    from alpamayo_ros.tools.planner_setup import camera_topics, node_params
    from alpamayo_ros.tools.replay import ReplayOptions, run_offline

    params = node_params(params_file, {"model_dir": str(model_dir), "backend": "onnxruntime",
                                       "num_candidates": candidates})
    recorder = CalibrationRecorder(build_onnx_executor(model_dir, onnx_dir=onnx_dir, max_candidates=candidates),
                                   graphs, decode_samples)
    backend = GraphBackend("onnxruntime", model_dir, recorder)
    try:
        planner = build_planner(backend, model_dir, planner_config(params), exact_resizer=planner_resizer(params))
        duration = BagSource(bag).info.duration_s or 0.0
        period = max(0.1, (duration - 8.0) / max(ticks, 1))  # spread over the drive (history + horizon margin)
        opts = ReplayOptions(cameras=camera_topics(params), odom_topic=params.odometry_topic, period_s=period,
                             max_ticks=ticks)
        result = run_offline(bag, planner, opts)
    finally:
        backend.close()
    planned = [r for r in result.records if r.status in ("planned", "gate_rejected")]
    if not planned:
        reasons = sorted({r.reason or r.status for r in result.records}) or [result.error or "no ticks"]
        raise RuntimeError(f"no tick of {bag} reached the model; cannot calibrate: {reasons}")
    info = {"bag": str(bag), "ticks": len(planned), "tick_period_s": round(period, 3), "candidates": candidates,
            "samples": {g: len(f) for g, f in recorder.feeds.items()}}
    return recorder.feeds, info


class _FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds (what Model Optimizer reads)."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self.feeds, self.i = feeds, 0

    def get_next(self) -> Feeds | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def get_first(self) -> Feeds:
        return self.feeds[0]

    def rewind(self) -> None:
        self.i = 0


def load_modelopt() -> Any:
    """modelopt.onnx.quantization.quantize, with a clear error when Model Optimizer is not installed."""
    try:
        import modelopt
        import modelopt.onnx.trt_utils as trt_utils
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise ImportError(
            f"NVIDIA Model Optimizer is not installed ({exc}): "
            "`make setup`, or `pip install --no-deps nvidia-modelopt==0.47.0 && pip install -r requirements/quantize.txt` "
            "(its CPU-side dependencies)"
        ) from exc
    try:  # tensorrt-stubs (typing only) installs a `tensorrt` namespace that is no TensorRT
        import tensorrt

        if not hasattr(tensorrt, "__version__"):
            trt_utils.TRT_PYTHON_AVAILABLE = False
    except ImportError:
        pass
    return quantize, modelopt.__version__


def quantize_graph(source: Path, out: Path, feeds: list[Feeds], mode: str, high_precision: str) -> None:
    """One graph through Model Optimizer's ONNX PTQ (in a scratch copy: it writes intermediate files)."""
    import onnx

    quantize, _ = load_modelopt()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        work = Path(tmp)  # the graph with its own weights only (onnx refuses linked external-data files)
        onnx.save(onnx.load(str(source)), str(work / source.name), save_as_external_data=True,
                  location=f"{source.stem}.weights", size_threshold=1024)
        quantize(
            onnx_path=str(work / source.name), quantize_mode=mode, calibration_method="max",
            calibration_data_reader=_FeedReader(feeds), calibration_eps=["cpu"], output_path=str(out),
            op_types_to_quantize=["MatMul", "Gemm"], high_precision_dtype=high_precision,
            use_external_data_format=True, log_level="ERROR",
        )




def quantize_onnx_dir(onnx_dir: str | Path, out_dir: str | Path, feeds: dict[str, list[Feeds]], mode: str = "fp8",
                      high_precision: str = "fp32", calibration_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ONNX directory with the graphs in `feeds` quantized; returns the written manifest."""
    from alpamayo_ros.runtime.export import read_manifest

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; NVFP4 is Model Optimizer's PyTorch path (not implemented)")
    src, out = Path(onnx_dir), Path(out_dir)
    manifest = read_manifest(src)
    missing = [g for g in feeds if g not in manifest["graphs"]]
    if missing:
        raise ValueError(f"{src}/manifest.json has no graph {missing}; re-export with `alpamayo-ros export-onnx`")
    if manifest.get("dtype", "float32") != "float32":
        raise ValueError(f"{src} holds {manifest['dtype']} graphs; calibration runs them on ONNX Runtime on the "
                         f"CPU: quantize a float32 export (`export-onnx --dtype float32`)")
    out.mkdir(parents=True, exist_ok=True)
    _, version = load_modelopt()
    seconds = {}
    for name, entry in manifest["graphs"].items():
        if name in feeds:
            t0 = time.perf_counter()
            quantize_graph(src / entry["file"], out / entry["file"], feeds[name], mode, high_precision)
            seconds[name] = round(time.perf_counter() - t0, 1)
        else:
            shutil.copy2(src / entry["file"], out / entry["file"])
    weights = manifest.get("weights_file", "weights.bin")
    if (src / weights).is_file():  # the unquantized graphs' weights (a copy: onnx refuses linked data files)
        shutil.copy2(src / weights, out / weights)
    manifest["quantization"] = {
        "mode": mode, "graphs": sorted(feeds), "tool": f"nvidia-modelopt {version} (ONNX PTQ, max calibration)",
        "op_types": ["MatMul", "Gemm"], "high_precision_dtype": high_precision, "quantize_seconds": seconds,
        "calibration": calibration_info or {"samples": {g: len(f) for g, f in feeds.items()}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def quantize_model(model_dir: str | Path, bag: str | Path, out_dir: str | Path | None = None, mode: str = "fp8",
                   graphs: Sequence[str] = TEXT_STACK, ticks: int = 4, candidates: int = 2,
                   high_precision: str = "fp32", onnx_dir: str | Path | None = None,
                   params_file: str | Path | None = None) -> dict[str, Any]:
    from alpamayo_ros.runtime.export import export_onnx

    root = Path(model_dir)
    source = Path(onnx_dir) if onnx_dir else root / "onnx"
    if not (source / "manifest.json").is_file():
        export_onnx(root, source)
    unknown = set(graphs) - set(QUANTIZABLE)
    if unknown:
        raise ValueError(f"cannot quantize {sorted(unknown)}; choose from {QUANTIZABLE}")
    load_modelopt()  # fail before the replay when Model Optimizer is missing
    feeds, info = record_calibration(root, source, bag, graphs, ticks, candidates, params_file=params_file)
    return quantize_onnx_dir(source, out_dir or root / f"onnx-{mode}", feeds, mode, high_precision, info)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alpamayo-ros quantize", description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--bag", required=True, help="replay bag whose frames and ego histories calibrate the scales")
    ap.add_argument("--out", default=None, help="ONNX directory to write (default MODEL_DIR/onnx-MODE)")
    ap.add_argument("--onnx-dir", default=None, help="the float32 export to quantize (default MODEL_DIR/onnx)")
    ap.add_argument("--mode", choices=MODES, default="fp8")
    ap.add_argument("--graphs", default=",".join(TEXT_STACK), help="the VLM text stack by default")
    ap.add_argument("--expert", action="store_true", help="also quantize expert_step")
    ap.add_argument("--ticks", type=int, default=4, help="calibration ticks spread over the bag")
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--high-precision-dtype", choices=("fp32", "fp16"), default="fp32",
                    help="the non-quantized ops: fp32 runs on ONNX Runtime (CPU); fp16 for a TensorRT build")
    ap.add_argument("--params-file", default=None, help="node parameters (camera topics, odometry topic)")
    args = ap.parse_args(argv)
    graphs = [g for g in args.graphs.split(",") if g] + (["expert_step"] if args.expert else [])
    try:
        manifest = quantize_model(args.model_dir, args.bag, args.out, args.mode, graphs, args.ticks,
                                  args.candidates, args.high_precision_dtype, args.onnx_dir, args.params_file)
    except (ImportError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 1
    q = manifest["quantization"]
    print(f"{q['mode']} Q/DQ graphs {q['graphs']} in {args.out or Path(args.model_dir) / f'onnx-{args.mode}'} "
          f"({q['tool']}; calibration {q['calibration']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
