"""Replay a bag through the planner, tick by tick in bag time, and score it.

Both replay modes share one schedule: tick k is taken once every bag message with log time
<= `tick_times[k]` has been delivered. Offline mode feeds those messages to the core Planner (the
node's code) and calls `plan()`; online mode (replay_online.py) publishes them over DDS, advances
/clock to the tick time and waits for the node's plan. Because the planner's t0, seed and buffers
depend only on the messages delivered, both modes produce the same plans for the same bag.

The schedule is periodic (one tick per `period_s` of bag time), or, for the reference protocol
(tools/protocol.py), one tick per given clip time (`t0_offsets_s` from the clip's time origin).
A protocol tick plans either at the node's own t0 after the messages up to that time
(`t0_policy="node"`, what the online node does) or at exactly that time (`"exact"`, the
reference's definition; offline only).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alpamayo_ros.tools.bag_io import (
    IMAGE_TYPES,
    ODOM_TYPE,
    STRING_TYPE,
    BagReadError,
    BagSource,
    RawMessage,
    decode_image,
    decode_odometry,
    deserialize,
    validate_bag,
)
from alpamayo_ros.tools.protocol import T0_POLICIES, clip_time_origin_s
from alpamayo_ros.tools.scoring import GroundTruth, TickRecord, TickScore, score_records
from alpamayo_ros.tools.topics import (
    DEFAULT_CAMERAS,
    DEFAULT_ODOM_TOPIC,
    DEFAULT_ROUTE_TOPIC,
    DEFAULT_SEGMENT_TOPIC,
    CameraTopic,
)

log = logging.getLogger(__name__)

HISTORY_S = 1.5
HORIZON_S = 6.4


class PlannerLike(Protocol):
    """The slice of core.planner.Planner that replay drives (see notes/planner_api.md)."""

    def add_image(self, camera_id: int, stamp_s: float, rgb: np.ndarray) -> None: ...
    def add_odometry(self, stamp_s: float, position: Any, orientation_xyzw: Any, linear_velocity: Any = None) -> None: ...
    def plan(self, t0: float | None = None, route: str | None = None) -> Any: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class ReplayOptions:
    cameras: tuple[CameraTopic, ...] = DEFAULT_CAMERAS
    odom_topic: str = DEFAULT_ODOM_TOPIC
    segment_topic: str = DEFAULT_SEGMENT_TOPIC
    period_s: float = 0.1  # one tick per period of bag time
    cut_margin_s: float = 0.02  # a tick at time t sees messages up to t + margin (camera trigger skew)
    start_offset_s: float | None = None  # first tick after bag start; default: history + 0.1 s
    include_tail: bool = False  # also tick in the last 6.4 s (no full ground truth there)
    max_ticks: int | None = None
    # Protocol ticks instead of the periodic schedule: one tick per clip time (s from the clip's
    # time origin: import-pai metadata, else the bag start), planned by `t0_policy`.
    t0_offsets_s: tuple[float, ...] | None = None
    t0_policy: str = "node"  # node: the planner's t0 after the messages up to the time | exact: that time
    # std_msgs/String navigation instructions (Alpamayo 1.5), aged as the node does (route.max_age_s)
    route_topic: str = DEFAULT_ROUTE_TOPIC
    route_max_age_s: float = 10.0

    def __post_init__(self) -> None:
        if self.t0_policy not in T0_POLICIES:
            raise ValueError(f"t0_policy must be one of {T0_POLICIES}, got {self.t0_policy!r}")
        if self.t0_offsets_s is not None and not self.t0_offsets_s:
            raise ValueError("t0_offsets_s needs at least one clip time (or None for the periodic schedule)")

    @property
    def topics(self) -> list[str]:
        return [c.topic for c in self.cameras] + [self.odom_topic, self.segment_topic, self.route_topic]


def tick_schedule(start_s: float, end_s: float, opts: ReplayOptions) -> list[float]:
    """Cut times (bag clock, seconds) at which ticks are requested."""
    first = start_s + (opts.start_offset_s if opts.start_offset_s is not None else HISTORY_S + 0.1)
    last = end_s if opts.include_tail else end_s - HORIZON_S
    n = int(math.floor((last - first) / opts.period_s + 1e-9)) + 1
    if opts.max_ticks is not None:
        n = min(n, opts.max_ticks)
    # Round to whole nanoseconds: /clock carries integer ns, so both modes must use the same times.
    return [round((first + k * opts.period_s) * 1e9) / 1e9 + opts.cut_margin_s for k in range(max(n, 0))]


@dataclass(frozen=True)
class Schedule:
    """Cut times (a tick sees every message with log time <= its cut) and, per tick, the t0 to
    plan at (None: the planner's own choice) and the protocol clip time it stands for."""

    cuts: list[float]
    forced_t0: list[float | None]
    t0_offsets_s: list[float | None]
    clip_origin_s: float | None = None


def replay_schedule(bag: str | Path, start_s: float, end_s: float, opts: ReplayOptions) -> Schedule:
    """The bag's ticks: periodic, or one per protocol clip time (in time order)."""
    if opts.t0_offsets_s is None:
        cuts = tick_schedule(start_s, end_s, opts)
        return Schedule(cuts, [None] * len(cuts), [None] * len(cuts))
    origin = clip_time_origin_s(bag)
    base = origin if origin is not None else start_s
    offsets = sorted(opts.t0_offsets_s)[: opts.max_ticks]
    t0s = [round((base + off) * 1e9) / 1e9 for off in offsets]
    if opts.t0_policy == "exact":
        # The odometry must reach past t0 (the history ends at t0, nothing is extrapolated); the
        # frames are the planner's choice at t0 (at or before it).
        return Schedule([t + opts.cut_margin_s for t in t0s], list(t0s), list(offsets), origin)
    return Schedule(list(t0s), [None] * len(t0s), list(offsets), origin)


@dataclass
class ReplayResult:
    """One bag's replay: every tick's record, and its scores once scored.

    `gt` (the bag's odometry) is what the records are scored against; `scored()` computes the
    scores once, after which `detached()` drops `gt` so the result travels light (from a worker
    process, into a results file: tools/results.py). A report needs only records and scores.
    """

    mode: str
    bag: Path
    records: list[TickRecord]
    gt: GroundTruth | None
    error: str | None = None  # BagReadError text when the bag could not be read to its end
    input_errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    scores: list[TickScore] | None = None  # of the planned ticks that have ground truth, in tick order

    @property
    def name(self) -> str:
        """The bag's name: how reports and results files tell bags apart."""
        return self.bag.name

    @property
    def status(self) -> str:
        """ok | incomplete (read up to damage, the part before it scored) | failed (nothing ran)."""
        if self.error is None:
            return "ok"
        return "incomplete" if self.records else "failed"

    def scored(self) -> list[TickScore]:
        if self.scores is None:
            self.scores = score_records(self.records, self.gt, self.name) if self.gt is not None else []
        return self.scores

    def detached(self) -> ReplayResult:
        """Scored, without the ground-truth buffer."""
        self.scored()
        return replace(self, gt=None)


def iter_steps(
    source: BagSource, opts: ReplayOptions, tick_times: Sequence[float], gt: GroundTruth
) -> Iterator[tuple[int, float, list[RawMessage]]]:
    """(k, tick_time, messages with log time in (tick_{k-1}, tick_k]) for each tick.

    Every odometry and segment message also goes into `gt`, including those after the last tick
    (the future of the last ticks). A BagReadError propagates after the steps that were complete.
    """
    batch: list[RawMessage] = []
    k = 0
    # Tick times lie on a µs grid; float seconds at epoch times carry ±0.24 µs, so a message stamped
    # exactly at a cut (50 Hz odometry at tick + 20 ms) would fall on either side at random.
    cut_ns = [round(t * 1e6) * 1000 for t in tick_times]
    for msg in source.messages(opts.topics):
        if msg.topic == opts.odom_topic and msg.msgtype == ODOM_TYPE:
            o = decode_odometry(msg)
            gt.add_odometry(o.stamp_s, o.position, o.orientation_xyzw)
        elif msg.topic == opts.segment_topic and msg.msgtype == STRING_TYPE:
            gt.add_label(msg.log_time_ns / 1e9, deserialize(msg).data)
            continue
        while k < len(cut_ns) and msg.log_time_ns > cut_ns[k]:
            yield k, tick_times[k], batch
            batch, k = [], k + 1
        if k < len(cut_ns):
            batch.append(msg)
    while k < len(cut_ns):  # ticks after the last message see no new data (bag ended early)
        yield k, tick_times[k], batch
        batch, k = [], k + 1


class Feeder:
    """Decodes bag messages into planner inputs; bad inputs are counted, never fatal (as in the node).

    Route instructions are kept as the node keeps them (core.navigation.RouteState): stamped with the
    clock at delivery (``clock_s``: in lockstep the node receives a tick's messages while /clock still
    reads the previous tick's time), dropped after ``route_max_age_s``; only a model that reads
    routes (Alpamayo 1.5) gets them.
    """

    def __init__(self, planner: PlannerLike, opts: ReplayOptions) -> None:
        from alpamayo_ros.core.navigation import RouteState

        self.planner = planner
        self.camera_of = {c.topic: c.camera_id for c in opts.cameras}
        self.odom_topic = opts.odom_topic
        self.route_topic = opts.route_topic
        self.route = RouteState(opts.route_max_age_s)
        variant = getattr(planner, "variant", None)
        self.reads_routes = bool(getattr(variant, "route", False))
        self.errors: dict[str, int] = {}

    def route_at(self, now_s: float) -> str | None:
        """The instruction in effect at a tick (None: none, or the model takes none)."""
        current = self.route.current(now_s) if self.reads_routes else None
        return current.text if current is not None else None

    def _count(self, key: str, exc: Exception) -> None:
        if key not in self.errors:
            log.warning("input rejected (%s): %s", key, exc)
        self.errors[key] = self.errors.get(key, 0) + 1

    def feed(self, msg: RawMessage, clock_s: float | None = None) -> None:
        try:
            if msg.topic in self.camera_of and msg.msgtype in IMAGE_TYPES:
                img = decode_image(msg)
                self.planner.add_image(self.camera_of[msg.topic], img.stamp_s, img.rgb)
            elif msg.topic == self.odom_topic:
                o = decode_odometry(msg)
                self._add_odometry(o)
            elif msg.topic == self.route_topic and msg.msgtype == STRING_TYPE and self.reads_routes:
                self.route.update(deserialize(msg).data, clock_s)
        except Exception as exc:  # a bad message must not stop the replay
            self._count(f"{msg.topic}: {type(exc).__name__}", exc)

    def _add_odometry(self, o) -> None:
        try:
            self.planner.add_odometry(o.stamp_s, o.position, o.orientation_xyzw, o.linear_velocity)
        except Exception as exc:
            if "jump" in type(exc).__name__.lower() or "TIME_JUMP" in str(getattr(exc, "reason_code", "")):
                self.planner.reset()  # bag loop: start over, as the node does
                self.route.clear()
                self.planner.add_odometry(o.stamp_s, o.position, o.orientation_xyzw, o.linear_velocity)
            else:
                raise


def record_from_plan(tick_time: float, result: Any, latency_s: float) -> TickRecord:
    """A TickRecord from a core PlanResult, gated and selected as the node does.

    A plan the node would replace by a fallback (input gate failed, or no candidate passed its
    output gate) is recorded as `gate_rejected` without trajectories: fallbacks are counted, not
    scored, in both replay modes.
    """
    timings = {k: float(v) for k, v in dict(getattr(result, "timings_s", {}) or {}).items()}
    selected = result.drive_index  # the node's rule: core.planner.PlanResult.drive_index
    if selected is None:
        why = result.rejection[0]
        return TickRecord(tick_time, "gate_rejected", t0=float(result.t0), gate_ok=False, fallback=True,
                          reason=why, latency_s=latency_s, timings_s=timings)
    return TickRecord(
        tick_time=tick_time,
        status="planned",
        t0=float(result.t0),
        xyz=np.asarray(result.xyz, dtype=np.float32),
        scores=np.asarray(result.scores, dtype=np.float64),
        selected=selected,
        latency_s=latency_s,
        timings_s=timings,
        reasoning=list(getattr(result, "reasoning", []) or []),
        route_instruction=str(getattr(result, "route_instruction", "") or ""),
    )


class TickRunner:
    """Plans one tick the way the node's worker does: skip when there is no new t0, else plan.
    With a forced t0 (protocol, exact policy) it plans at that t0."""

    def __init__(self, planner: PlannerLike) -> None:
        self.planner = planner
        self.last_t0: float | None = None

    def __call__(self, tick_time: float, t0: float | None = None, route: str | None = None) -> TickRecord:
        t = time.perf_counter()
        try:
            if t0 is None:
                ready = getattr(self.planner, "latest_ready_t0", None)
                t0 = ready() if ready is not None else None
                if t0 is not None and t0 == self.last_t0:
                    return TickRecord(tick_time, "no_new_input", t0=t0, reason="no_new_input")
            result = self.planner.plan(t0, route=route) if route is not None else self.planner.plan(t0)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if code is not None:  # core.planner.TickNotReady
                return TickRecord(tick_time, "not_ready", reason=f"{code}: {exc}")
            log.exception("plan failed at %.3f", tick_time)
            return TickRecord(tick_time, "error", reason=f"{type(exc).__name__}: {exc}")
        self.last_t0 = float(result.t0)
        return record_from_plan(tick_time, result, time.perf_counter() - t)


def run_offline(
    bag: str | Path,
    planner: PlannerLike,
    opts: ReplayOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Drive `planner` through the bag, one tick per period of bag time, as fast as it plans."""
    opts = opts or ReplayOptions()
    t_wall = time.perf_counter()
    source = BagSource(bag)
    info = source.info
    gt = GroundTruth()
    result = ReplayResult("offline", Path(bag), [], gt)
    if info.start_ns is None or info.end_ns is None:
        result.error = f"bag {bag} holds no readable messages"
        return result
    schedule = replay_schedule(bag, info.start_ns / 1e9, info.end_ns / 1e9, opts)
    ticks = schedule.cuts
    result.meta.update(bag_meta(info, opts, schedule))
    feeder = Feeder(planner, opts)
    tick = TickRunner(planner)
    try:
        for k, tick_time, batch in iter_steps(source, opts, ticks, gt):
            for msg in batch:
                feeder.feed(msg, clock_s=ticks[k - 1] if k else info.start_ns / 1e9)
            result.records.append(tick(tick_time, schedule.forced_t0[k], feeder.route_at(tick_time)))
            if progress is not None:
                progress(k + 1, len(ticks))
    except BagReadError as exc:
        result.error = str(exc)
        log.error("%s", exc)
    result.input_errors = feeder.errors
    result.wall_s = time.perf_counter() - t_wall
    return result


def bag_meta(info, opts: ReplayOptions, schedule: Schedule) -> dict[str, Any]:
    meta = {
        "bag_start_s": info.start_ns / 1e9,
        "bag_duration_s": info.duration_s,
        "bag_damaged": info.damaged,
        "ticks_in_schedule": len(schedule.cuts),
    }
    if opts.t0_offsets_s is None:
        meta["tick_period_s"] = opts.period_s
    else:
        meta.update({"protocol_t0_offsets_s": schedule.t0_offsets_s, "t0_policy": opts.t0_policy,
                     "clip_time_origin_s": schedule.clip_origin_s})
    return meta


def replay_bag(
    bag: str | Path,
    planner: PlannerLike,
    opts: ReplayOptions,
    progress: Callable[[int, int], None] | None = None,
    validate: bool = True,
) -> ReplayResult:
    """One bag of a multi-bag replay: the planner reset (no input crosses from one clip to the
    next), the bag checked against the topics (`validate`), replayed and scored. A bag that cannot
    be opened or cannot feed the planner, or a planner that raises, gives a result with `error`
    and no records: it never stops the bags after it."""
    bag = Path(bag)
    warnings: list[str] = []
    try:
        if validate:
            check = validate_bag(BagSource(bag), [c.topic for c in opts.cameras], opts.odom_topic)
            if check.errors:
                damage = [f"the bag is damaged: {check.info.damaged}"] if check.info.damaged else []
                return failed_result(bag, "the bag cannot feed the planner: " + "; ".join(damage + check.errors))
            warnings = list(check.warnings)
        planner.reset()
        result = run_offline(bag, planner, opts, progress)
        result.scored()
    except Exception as exc:  # BagReadError at open, or anything else: this bag failed, the others go on
        log.error("%s: %s", bag, exc, exc_info=not isinstance(exc, BagReadError))
        return failed_result(bag, str(exc) if isinstance(exc, BagReadError) else f"{type(exc).__name__}: {exc}")
    if warnings:
        result.meta["warnings"] = warnings
    return result


def failed_result(bag: str | Path, error: str, mode: str = "offline") -> ReplayResult:
    """A bag that produced no ticks at all, with the reason."""
    return ReplayResult(mode, Path(bag), [], None, error=error, scores=[])


def run_offline_many(
    bags: Sequence[str | Path],
    planner: PlannerLike,
    opts_for: Callable[[Path], ReplayOptions],
    progress: Callable[[int, int], None] | None = None,
    on_bag: Callable[[int, Path], None] | None = None,
    validate: bool = True,
) -> list[ReplayResult]:
    """replay_bag over several bags with one planner (loaded once). `opts_for(bag)`: that bag's
    options (t0 lists)."""
    results = []
    for i, bag in enumerate(bags):
        if on_bag is not None:
            on_bag(i, Path(bag))
        results.append(replay_bag(bag, planner, opts_for(Path(bag)), progress, validate))
    return results


def score_recorded(
    outputs_bag: str | Path,
    gt_bag: str | Path | None = None,
    candidates_topic: str = "/alpamayo_planner/candidates",
    odom_topic: str = DEFAULT_ODOM_TOPIC,
    segment_topic: str = DEFAULT_SEGMENT_TOPIC,
    ego_frame_id: str = "base_link",
) -> ReplayResult:
    """Score plans a node already published and someone recorded (a drive recorded with the
    planner running, or `ros2 bag record` during a replay): ground truth from `gt_bag` (default:
    the same bag). Latency is the message's input_to_publish (t0 → publish, node clock)."""
    from alpamayo_ros.tools.replay_online import record_from_candidates

    t_wall = time.perf_counter()
    gt = GroundTruth()
    result = ReplayResult("recorded", Path(outputs_bag), [], gt)
    try:
        for msg in BagSource(gt_bag or outputs_bag).messages([odom_topic, segment_topic]):
            if msg.topic == odom_topic:
                o = decode_odometry(msg)
                gt.add_odometry(o.stamp_s, o.position, o.orientation_xyzw)
            elif msg.msgtype == STRING_TYPE:
                gt.add_label(msg.log_time_ns / 1e9, deserialize(msg).data)
    except BagReadError as exc:
        result.error = str(exc)
    source = BagSource(outputs_bag)
    if candidates_topic not in source.info.topics:
        raise ValueError(f"{outputs_bag} has no {candidates_topic} (topics: {sorted(source.info.topics)})")
    try:
        for msg in source.messages([candidates_topic]):
            m = deserialize(msg)
            t0 = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            lat = m.input_to_publish.sec + m.input_to_publish.nanosec * 1e-9
            latency = lat if lat > 0 else msg.log_time_ns / 1e9 - t0
            try:
                result.records.append(record_from_candidates(t0, m, latency, gt, ego_frame_id))
            except Exception as exc:  # e.g. odometry-frame paths where the bag has no pose at t0
                result.records.append(TickRecord(t0, "error", t0=t0, reason=f"{type(exc).__name__}: {exc}"))
    except BagReadError as exc:
        result.error = str(exc)
    if gt.poses.earliest_stamp is not None:
        result.meta["bag_start_s"] = gt.poses.earliest_stamp
    result.meta["candidates_topic"] = candidates_topic
    result.wall_s = time.perf_counter() - t_wall
    return result
