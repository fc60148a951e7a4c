"""Evaluation over many bags: one planner per worker, per-bag results files, one report.

    alpamayo-ros evaluate BAGS... | --list FILE  [--workers N | --ray [ADDRESS]] --out DIR

The pieces, each shared with `alpamayo-ros replay`:
- `BagWorker`: one planner built from the node's parameters (the model loaded once) that replays
  bag after bag (replay.replay_bag: the planner reset, the bag checked, replayed, scored). Bags
  are read with the package's MCAP reader: a worker needs no ROS graph and no DDS.
- executors (tools/executors.py) run BagWorkers in this process, in a process pool, or as Ray
  actors, and stream each bag's result back as it finishes.
- `evaluate_bags` writes each result to `OUT/results/<bag>.jsonl` (tools/results.py) as it
  arrives, skips bags already there (resume), and returns every bag's result in the order given;
  tools/report.py turns them into the one report.

Results are keyed by the settings that produce them (`run_settings`: backend, model, precision,
K, seed, steps, sampling, schedule, protocol and every other node parameter that changes a plan),
so results of other settings are never mixed in: a run whose settings differ from those recorded
in OUT refuses to start (another --out, or --overwrite to discard them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from alpamayo_ros.tools.protocol import META_CLIP_ID, REFERENCE, bag_custom_data
from alpamayo_ros.tools.replay import ReplayOptions, ReplayResult, failed_result, replay_bag
from alpamayo_ros.tools.results import (
    ResultsFileError,
    bag_fingerprint,
    read_header,
    read_result,
    write_result,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "evaluation.json"
RESULTS_DIR = "results"
# Node parameters that never change a plan (rates, QoS, diagnostics, node-side fallback timing,
# threads that only decode images): left out of the settings key so changing them keeps results.
NODE_ONLY_PARAMS = ("rate_hz", "fallback", "diagnostics_period_s", "latency_window", "publish_markers", "warmup",
                    "image_workers", "odometry_reliability", "odometry_depth", "ask")
NODE_ONLY_CAMERA_PARAMS = ("reliability", "depth")


# ----------------------------------------------------------------------------------------------
# What a worker needs, and the worker


@dataclass(frozen=True)
class EvalSpec:
    """Everything a worker needs to replay any bag of the run (picklable: it travels to worker
    processes and Ray actors). `t0_table`: per-bag clip times (--t0-file), by bag name or clip id."""

    params: Any  # ros.params.NodeParams
    options: ReplayOptions
    t0_table: dict[str, tuple[float, ...]] = field(default_factory=dict)
    validate: bool = True  # check each bag's topics first (replay checks them up front instead)
    default_t0s: tuple[float, ...] = REFERENCE.t0_offsets_s  # clip times of bags the table does not name

    def options_for(self, bag: Path) -> ReplayOptions:
        """The options, with the bag's own t0 list when the table names the bag (directory name or
        clip id from import-pai's metadata)."""
        if not self.t0_table:
            return self.options
        key = bag.name if bag.name in self.t0_table else bag_custom_data(bag).get(META_CLIP_ID, bag.name)
        if key in self.t0_table:
            return replace(self.options, t0_offsets_s=self.t0_table[key])
        return self.options if self.options.t0_offsets_s is not None else replace(self.options, t0_offsets_s=self.default_t0s)


def params_meta(params: Any) -> dict[str, Any]:
    """The settings every bag's result carries in its meta."""
    return {"backend": params.backend, "model_dir": params.model_dir, "K": params.num_candidates,
            "seed": params.seed, "seed_policy": params.seed_policy}


class BagWorker:
    """One planner, built as the node builds it at configure (the model loaded once), that replays
    bag after bag. Results come back scored and without the ground-truth buffer (small to send)."""

    def __init__(self, spec: EvalSpec) -> None:
        from alpamayo_ros.tools.planner_setup import build_planner_from_params

        self.spec = spec
        self.backend, self.planner = build_planner_from_params(spec.params)
        ident = getattr(self.backend, "identity", None)
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "backend": getattr(ident, "name", spec.params.backend),
                     "model_id": getattr(ident, "model_id", ""), "precision": precision_of(spec.params),
                     "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def __call__(self, bag: str | Path, progress: Callable[[int, int], None] | None = None) -> ReplayResult:
        bag = Path(bag)
        result = replay_bag(bag, self.planner, self.spec.options_for(bag), progress, self.spec.validate)
        result.meta.update(params_meta(self.spec.params) | {"worker": dict(self.info)})
        return result.detached()

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class BagNotRun:
    """A bag whose worker was lost (process died, actor died, the planner could not be built):
    reported as failed in this run, not written as a result, so the next run tries it again."""

    bag: Path
    reason: str
    worker_failed: bool = False  # the worker could not build its planner: give the bag to another


Outcome = ReplayResult | BagNotRun


class Executor(Protocol):
    """Runs BagWorkers; tools/executors.py has the in-process, process-pool and Ray ones."""

    name: str
    workers: int

    def map_unordered(self, bags: Sequence[Path]) -> Iterator[tuple[Path, Outcome]]: ...
    def close(self) -> None: ...


def run_bags(bags: Sequence[Path], executor: Executor, on_result: Callable[[Path, Outcome], None] | None = None
             ) -> list[ReplayResult]:
    """Every bag's result in the order given, whatever order the executor finished them in; a
    lost bag becomes a failed result."""
    outcomes: dict[Path, Outcome] = {}
    for bag, outcome in executor.map_unordered(bags):
        outcomes[bag] = outcome
        if on_result is not None:
            on_result(bag, outcome)
    return [_as_result(bag, outcomes.get(bag)) for bag in bags]


def _as_result(bag: Path, outcome: Outcome | None) -> ReplayResult:
    if isinstance(outcome, ReplayResult):
        return outcome
    return failed_result(bag, f"not run: {outcome.reason if outcome else 'no result came back'}")


# ----------------------------------------------------------------------------------------------
# Settings: what the results depend on


def precision_of(params: Any) -> str:
    """The precision the backend computes in: the CPU backends run the fp32 graphs; TensorRT what
    its engine manifest records (unknown where the engines are not readable)."""
    if params.backend == "kinematic":
        return "none (no network)"
    if params.backend in ("torch", "onnxruntime"):
        return "fp32"
    manifest = _engine_dir(params) / "manifest.json"
    try:
        return str(json.loads(manifest.read_text()).get("precision", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def _engine_dir(params: Any) -> Path:
    if params.engine_dir:
        return Path(params.engine_dir)
    sub = "engines" if params.backend == "tensorrt" else "onnx"
    return Path(params.model_dir) / sub


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def run_settings(params: Any, options: ReplayOptions, protocol: Any = None,
                 t0_table: dict[str, tuple[float, ...]] | None = None) -> dict[str, Any]:
    """What an evaluation's results depend on, readable, plus digests of the rest (every node
    parameter except NODE_ONLY_PARAMS; model config.json; the engine/graph manifest)."""
    node = asdict(params)
    for name in NODE_ONLY_PARAMS:
        node.pop(name, None)
    node["cameras"] = [{k: v for k, v in c.items() if k not in NODE_ONLY_CAMERA_PARAMS} for c in node["cameras"]]
    return {
        "protocol": getattr(protocol, "name", None),
        "backend": params.backend,
        "model_dir": params.model_dir,
        "model_config": _file_digest(Path(params.model_dir) / "config.json") if params.model_dir else None,
        "engines": _file_digest(_engine_dir(params) / "manifest.json") if params.model_dir else None,
        "precision": precision_of(params),
        "K": params.num_candidates,
        "seed": params.seed,
        "seed_policy": params.seed_policy,
        "steps": params.num_diffusion_steps,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_generation_length": params.max_generation_length,
        "reasoning_mode": params.reasoning_mode,
        "gates_enabled": params.gates_enabled,
        "nav_guidance_weight": params.nav_guidance_weight,
        "schedule": {"period_s": options.period_s, "t0_offsets_s": options.t0_offsets_s,
                     "t0_policy": options.t0_policy if options.t0_offsets_s is not None or t0_table else None,
                     "t0_file": _digest(t0_table) if t0_table else None, "max_ticks": options.max_ticks,
                     "include_tail": options.include_tail, "cut_margin_s": options.cut_margin_s,
                     "start_offset_s": options.start_offset_s},
        "node_params": _digest(node),
    }


def settings_key(settings: dict[str, Any]) -> str:
    return _digest(settings)


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def clip_list(bags: Sequence[Path]) -> dict[str, Any]:
    """The evaluated clip list: count and a digest of the bag names (paths differ between machines)."""
    names = sorted(b.name for b in bags)
    return {"count": len(names), "hash": _digest(names)}


def read_bag_list(path: str | Path) -> list[str]:
    """--list FILE: one bag (or directory of bags) per line; blank lines and # comments skipped;
    relative paths are relative to the list file's directory."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SystemExit(f"error: --list {path}: {exc.strerror or exc}") from exc
    out = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            p = Path(entry).expanduser()
            out.append(str(p if p.is_absolute() else path.parent / p))
    return out


# ----------------------------------------------------------------------------------------------
# The run: resume, write as results arrive, read everything back in order


class EvaluationConflict(RuntimeError):
    """OUT holds results made with other settings."""


@dataclass
class EvaluationRun:
    results: list[ReplayResult]  # every bag's, in the order given
    ran: list[str]
    skipped: list[str]
    lost: dict[str, str]
    wall_s: float
    settings: dict[str, Any]  # run_settings + key, clip list, executor, what the workers reported


class Evaluation:
    """The results directory of one evaluation (OUT/results + OUT/evaluation.json)."""

    def __init__(self, out: str | Path, settings: dict[str, Any]) -> None:
        self.out = Path(out)
        self.results_dir = self.out / RESULTS_DIR
        self.manifest_path = self.out / MANIFEST_NAME
        self.settings = json.loads(json.dumps(settings, default=str))  # as the manifest holds them
        self.key = settings_key(self.settings)

    def path(self, bag: Path) -> Path:
        return self.results_dir / f"{bag.name}.jsonl"

    def check(self, overwrite: bool) -> None:
        """Refuse results of other settings (or discard them with `overwrite`)."""
        recorded = self._manifest().get("settings")
        stale = [p.name for p in self._files() if _key_of(p) not in (self.key, None)]
        if (recorded is None or recorded == self.settings) and not stale:
            return
        if overwrite:
            shutil.rmtree(self.results_dir, ignore_errors=True)
            self.manifest_path.unlink(missing_ok=True)
            return
        why = settings_diff(recorded, self.settings) if recorded and recorded != self.settings else []
        raise EvaluationConflict(
            f"{self.out} holds results made with other settings"
            + (f" ({'; '.join(why)})" if why else f" ({len(stale)} results files, e.g. {stale[:3]})")
            + ": evaluate into another --out, or pass --overwrite to discard them")

    def pending(self, bags: Sequence[Path], retry_failed: bool = False) -> tuple[list[Path], list[Path]]:
        """(bags to run, bags already done). A bag is done when its results file has this run's
        settings, the bag is unchanged (where it can be read here), and it did not fail (or failed
        and `retry_failed` is off)."""
        for tmp in self.results_dir.glob(".*.tmp") if self.results_dir.is_dir() else []:
            tmp.unlink(missing_ok=True)  # a file a killed run was writing (one evaluate per OUT at a time)
        todo, done = [], []
        for bag in bags:
            try:
                head = read_header(self.path(bag)) if self.path(bag).exists() else None
            except (ResultsFileError, OSError) as exc:
                log.warning("%s", exc)
                head = None
            fingerprint = bag_fingerprint(bag)
            changed = head is not None and None not in (fingerprint, head["bag_fingerprint"]) \
                and fingerprint != head["bag_fingerprint"]
            if changed:
                log.warning("%s changed since it was evaluated: evaluating it again", bag)
            if head is None or changed or (retry_failed and head["status"] == "failed"):
                todo.append(bag)
            else:
                done.append(bag)
        return todo, done

    def write(self, result: ReplayResult) -> Path:
        return write_result(self.path(result.bag), result, self.key, bag_fingerprint(result.bag))

    def read(self, bag: Path) -> ReplayResult:
        return read_result(self.path(bag))

    def record_run(self, entry: dict[str, Any], bags: Sequence[Path] | None = None) -> None:
        """Append this run to the manifest (with the settings and clip list), or, without `bags`,
        update the run appended last (when it finishes)."""
        manifest = self._manifest()
        runs = manifest.setdefault("runs", [])
        if bags is None:
            runs[-1] = runs[-1] | entry
        else:
            manifest.update({"format": 1, "settings": self.settings, "settings_key": self.key,
                             "clip_list": clip_list(bags)})
            runs.append(entry)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        tmp.replace(self.manifest_path)

    def _manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    def _files(self) -> Iterable[Path]:
        return sorted(self.results_dir.glob("*.jsonl")) if self.results_dir.is_dir() else []


def _key_of(path: Path) -> str | None:
    try:
        return read_header(path).get("settings_key")
    except (ResultsFileError, OSError):
        return None


def unique_names(bags: Sequence[Path]) -> None:
    """Bags are told apart by name (results files, report rows): two with one name is an error."""
    seen: dict[str, Path] = {}
    for bag in bags:
        if bag.name in seen and seen[bag.name].resolve() != bag.resolve():
            raise SystemExit(f"error: two bags are named {bag.name}: {seen[bag.name]} and {bag}; "
                             "rename one or evaluate them into separate --out directories")
        seen[bag.name] = bag


def evaluate_bags(bags: Sequence[Path], executor: Executor, evaluation: Evaluation, overwrite: bool = False,
                  retry_failed: bool = False, on_result: Callable[[Path, Outcome], None] | None = None,
                  on_start: Callable[[list[Path], list[Path]], None] | None = None) -> EvaluationRun:
    """Run the bags not done yet, writing each result as it arrives, then read every bag's result
    back from its file, in the order given (bags whose worker was lost: failed, not written)."""
    bags = list(dict.fromkeys(Path(b) for b in bags))
    unique_names(bags)
    evaluation.check(overwrite)
    todo, done = evaluation.pending(bags, retry_failed)
    if on_start is not None:
        on_start(todo, done)
    started = time.time()
    lost: dict[Path, str] = {}
    evaluation.record_run({"started": _now(), "executor": executor.name, "workers": executor.workers,
                           "to_run": len(todo), "skipped": len(done), "finished": None}, bags)
    try:
        for bag, outcome in executor.map_unordered(todo):
            if isinstance(outcome, BagNotRun):
                lost[bag] = outcome.reason
            else:
                evaluation.write(outcome)
            if on_result is not None:
                on_result(bag, outcome)
    finally:
        executor.close()
    wall = time.time() - started
    evaluation.record_run({"finished": _now(), "wall_s": wall, "lost": len(lost)})
    results = [evaluation.read(b) if b not in lost and evaluation.path(b).exists()
               else _as_result(b, BagNotRun(b, lost.get(b, "no result came back"))) for b in bags]
    return EvaluationRun(results, [b.name for b in todo if b not in lost], [b.name for b in done],
                         {b.name: r for b, r in lost.items()}, wall, observed_settings(evaluation, results, executor))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def observed_settings(evaluation: Evaluation, results: Sequence[ReplayResult], executor: Executor) -> dict[str, Any]:
    """The report's settings: what was asked for, the clip list, and what the workers ran."""
    workers = [r.meta.get("worker") or {} for r in results]
    seen = {k: sorted({str(w[k]) for w in workers if w.get(k) is not None}) for k in ("model_id", "precision", "host")}
    out = dict(evaluation.settings) | {"settings_key": evaluation.key, "clip_list": clip_list([r.bag for r in results]),
                                       "executor": executor.name, "workers": executor.workers,
                                       "results_dir": str(evaluation.results_dir)}
    out["model_id"] = seen["model_id"][0] if len(seen["model_id"]) == 1 else seen["model_id"]
    out["precision_run"] = seen["precision"][0] if len(seen["precision"]) == 1 else seen["precision"]
    out["hosts"] = len(seen["host"])
    mixed = [k for k in ("model_id", "precision") if len(seen[k]) > 1]
    if mixed:
        out["warning"] = f"bags were evaluated with different {' and '.join(mixed)}: {[seen[k] for k in mixed]}"
    return out
