"""`alpamayo-ros verify-engines`: the same ticks through TensorRT engines and ONNX Runtime, compared.

Both sides run the shared orchestrator (GraphBackend) with the same inputs, request and noise;
each executor is wrapped in a recorder, so the report has the differences per stage:
vision features, prefill logits, decode logits (step by step while the two sides fed the same
tokens), the expert's actions, the sampled tokens, and the trajectories after `action_to_traj`.
Greedy decoding by default, so any token difference is a numerical one.

Inputs are deterministic synthetic ticks of the model directory (runtime.synthetic_inputs), or any
`ModelInputs` a caller records (e.g. from a bag) and passes to `verify_ticks`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.runtime.executor import GraphExecutor, ImageFeatures


class RecordingExecutor(GraphExecutor):
    """Passes every call to `inner` and keeps its outputs (host copies) for comparison."""

    def __init__(self, inner: GraphExecutor) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.name = f"recording({inner.name})"
        self.reset()

    def reset(self) -> None:
        self.vision: list[np.ndarray] = []
        self.prefill_logits: list[np.ndarray] = []
        self.decode_logits: list[np.ndarray] = []
        self.expert: list[np.ndarray] = []

    def encode_images(self, pixel_rows: np.ndarray) -> list[ImageFeatures]:
        feats = self.inner.encode_images(pixel_rows)
        self.vision += [np.concatenate([f.embeds[None], f.deepstack]) for f in feats]
        return feats

    def prefill(self, input_ids: Any, position_ids: Any, features: Any, image_token_index: Any) -> np.ndarray:
        logits = self.inner.prefill(input_ids, position_ids, features, image_token_index)
        self.prefill_logits.append(np.array(logits, dtype=np.float32))
        return logits

    def start_decode(self, batch: int) -> None:
        self.inner.start_decode(batch)

    def decode(
        self, token_ids: Any, position_ids: Any, write_index: int, suffix_mask: Any
    ) -> np.ndarray:
        logits = self.inner.decode(token_ids, position_ids, write_index, suffix_mask)
        self.decode_logits.append(np.array(logits, dtype=np.float32))
        return logits

    def run_expert(
        self, x0: Any, steps: Any, position_ids: Any, suffix_mask: Any, prefix_mask: Any = None,
        row_mix: Any = None,
    ) -> np.ndarray:
        x = self.inner.run_expert(x0, steps, position_ids, suffix_mask, prefix_mask, row_mix)
        self.expert.append(np.array(x, dtype=np.float32))
        return x

    @property
    def supports_guidance(self) -> bool:  # type: ignore[override]
        return self.inner.supports_guidance

    def extend(self, input_ids: Any, position_ids: Any, prefix_mask: Any, own_mask: Any) -> None:
        self.inner.extend(input_ids, position_ids, prefix_mask, own_mask)

    def take_counters(self) -> dict[str, int]:
        return self.inner.take_counters()

    def close(self) -> None:
        self.inner.close()


def _max_abs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    diffs = [
        float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=False) if x.shape == y.shape and x.size
    ]
    return max(diffs, default=0.0)


@dataclass
class TickReport:
    tick: int
    vision_max_abs: float
    prefill_logits_max_abs: float
    prefill_argmax_equal: bool
    decode_steps_compared: int
    decode_logits_max_abs: float
    decode_top1_agreement: float
    tokens_equal: bool
    first_token_mismatch: list[int]  # per candidate, -1 = none
    actions_max_abs: float
    trajectory_max_abs_m: float
    seconds: dict[str, float] = field(default_factory=dict)


def compare_tick(index: int, ref: RecordingExecutor, test: RecordingExecutor, out_ref: Any, out_test: Any,
                 hist_xyz: np.ndarray, hist_rot: np.ndarray) -> TickReport:  # fmt: skip
    from alpamayo_ros.core.action_space import action_to_traj

    mismatch = []
    for a, b in zip(out_ref.generated_ids, out_test.generated_ids, strict=True):
        pos = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), -1)
        mismatch.append(pos if pos >= 0 or len(a) == len(b) else min(len(a), len(b)))
    # decode step j is fed token j: steps before the first token mismatch saw identical inputs
    same_prefix = min([m for m in mismatch if m >= 0], default=len(ref.decode_logits))
    steps = min(same_prefix, len(ref.decode_logits), len(test.decode_logits))
    dl_ref, dl_test = ref.decode_logits[:steps], test.decode_logits[:steps]
    top1 = [float(np.mean(x.argmax(-1) == y.argmax(-1))) for x, y in zip(dl_ref, dl_test, strict=True)]
    traj_ref, _ = action_to_traj(out_ref.actions, hist_xyz, hist_rot)
    traj_test, _ = action_to_traj(out_test.actions, hist_xyz, hist_rot)
    return TickReport(
        tick=index,
        vision_max_abs=_max_abs(ref.vision, test.vision),
        prefill_logits_max_abs=_max_abs(ref.prefill_logits, test.prefill_logits),
        prefill_argmax_equal=all(
            int(x.argmax()) == int(y.argmax())
            for x, y in zip(ref.prefill_logits, test.prefill_logits, strict=True)
        ),
        decode_steps_compared=steps,
        decode_logits_max_abs=_max_abs(dl_ref, dl_test),
        decode_top1_agreement=float(np.mean(top1)) if top1 else 1.0,
        tokens_equal=out_ref.generated_ids == out_test.generated_ids,
        first_token_mismatch=mismatch,
        actions_max_abs=float(np.max(np.abs(out_ref.actions - out_test.actions))),
        trajectory_max_abs_m=float(np.max(np.abs(traj_ref - traj_test))),
        seconds={
            "reference": out_ref.timings_s.get("tick", 0.0),
            "engines": out_test.timings_s.get("tick", 0.0),
        },
    )


def verify_ticks(model_dir: str | Path, reference: GraphExecutor, engines: GraphExecutor, ticks: Iterable[Any],
                 request: Any) -> list[TickReport]:  # fmt: skip
    """Run each tick (a SyntheticTick-like object: .inputs, .hist_xyz, .hist_rot) through both executors."""
    from alpamayo_ros.core.flow_matching import make_noise
    from alpamayo_ros.runtime.graph_backend import GraphBackend

    ref, test = RecordingExecutor(reference), RecordingExecutor(engines)
    backends = GraphBackend("onnxruntime", model_dir, ref), GraphBackend("tensorrt", model_dir, test)
    cfg = reference.config
    reports = []
    for index, tick in enumerate(ticks):
        ref.reset()
        test.reset()
        noise = make_noise(request.num_candidates, request.seed + index, (cfg.n_waypoints, cfg.action_dim))
        out_ref = backends[0].infer(tick.inputs, request, noise)
        out_test = backends[1].infer(tick.inputs, request, noise)
        reports.append(compare_tick(index, ref, test, out_ref, out_test, tick.hist_xyz, tick.hist_rot))
    return reports


@dataclass(frozen=True)
class Tolerances:
    actions: float = 0.05  # normalized action units
    trajectory_m: float = 0.5
    require_equal_tokens: bool = True


def failures(reports: list[TickReport], tol: Tolerances) -> list[str]:
    out = []
    for r in reports:
        if tol.require_equal_tokens and not r.tokens_equal:
            out.append(
                f"tick {r.tick}: tokens differ (first mismatch per candidate {r.first_token_mismatch})"
            )
        if r.actions_max_abs > tol.actions:
            out.append(f"tick {r.tick}: actions differ by {r.actions_max_abs:.3g} > {tol.actions}")
        if r.trajectory_max_abs_m > tol.trajectory_m:
            out.append(
                f"tick {r.tick}: trajectories differ by {r.trajectory_max_abs_m:.3g} m > {tol.trajectory_m} m"
            )
    return out


def format_table(reports: list[TickReport]) -> str:
    head = "tick  vision   prefill  argmax  dec.steps  dec.logits  top1    tokens  actions   traj[m]"
    rows = [
        f"{r.tick:4d}  {r.vision_max_abs:7.2e}  {r.prefill_logits_max_abs:7.2e}  {str(r.prefill_argmax_equal):6s}  "
        f"{r.decode_steps_compared:9d}  {r.decode_logits_max_abs:10.2e}  {r.decode_top1_agreement:5.3f}  "
        f"{str(r.tokens_equal):6s}  {r.actions_max_abs:8.2e}  {r.trajectory_max_abs_m:8.2e}"
        for r in reports
    ]
    return "\n".join([head, *rows])


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alpamayo-ros verify-engines",
        description="Compare TensorRT engines with ONNX Runtime on the same ticks (per stage, tokens, trajectories).",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("engine_dir", type=Path, nargs="?", default=None, help="default: MODEL_DIR/engines")
    p.add_argument("--onnx-dir", type=Path, default=None, help="default: MODEL_DIR/onnx")
    p.add_argument("--ticks", type=int, default=3, help="synthetic ticks to run")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--max-generation-length", type=int, default=32)
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 = greedy (default), so token differences are numeric",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol-actions", type=float, default=Tolerances.actions)
    p.add_argument("--atol-trajectory", type=float, default=Tolerances.trajectory_m)
    p.add_argument(
        "--allow-token-mismatch", action="store_true", help="report token differences without failing"
    )
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    p.add_argument("--tensorrt-module", default="tensorrt")
    return p


def verify_engines_main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.runtime.onnx_backend import build_onnx_executor
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs
    from alpamayo_ros.runtime.tensorrt.backend import build_tensorrt_executor

    request = SamplingRequest(
        num_candidates=args.candidates, temperature=args.temperature, seed=args.seed,
        max_generation_length=args.max_generation_length,
    )  # fmt: skip
    try:
        reference = build_onnx_executor(args.model_dir, onnx_dir=args.onnx_dir)
        engines = build_tensorrt_executor(
            args.model_dir, engine_dir=args.engine_dir, tensorrt_module=args.tensorrt_module
        )
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        print(f"verify-engines: {exc}", file=sys.stderr)
        return 2
    synthetic = SyntheticInputs(args.model_dir, seed=args.seed)
    ticks = (synthetic.tick(3 + i) for i in range(args.ticks))  # tick 3 is the first with 4 full frames
    try:
        reports = verify_ticks(args.model_dir, reference, engines, ticks, request)
    finally:
        reference.close()
        engines.close()
    print(format_table(reports))
    tol = Tolerances(args.atol_actions, args.atol_trajectory, not args.allow_token_mismatch)
    problems = failures(reports, tol)
    if args.json:
        args.json.write_text(
            json.dumps({"ticks": [asdict(r) for r in reports], "failures": problems}, indent=2)
        )
    for line in problems:
        print(f"FAIL {line}")
    print("verify-engines: " + ("OK" if not problems else f"{len(problems)} failure(s)"))
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(verify_engines_main())
