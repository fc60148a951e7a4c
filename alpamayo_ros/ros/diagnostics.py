"""Diagnostics aggregation, kept free of rclpy so its rules are unit-tested without a ROS graph.

The node feeds events in (frames received/accepted/rejected/dropped, ticks, gate trips, fallbacks,
latencies, backend errors) from several threads; `snapshot()` turns them into `StatusEntry`s that
`to_diagnostic_array` (the only rclpy-facing function, imported lazily) publishes on /diagnostics.
Levels follow diagnostic_msgs: OK while nothing went wrong since the previous snapshot, WARN for
recoverable trouble in that period (drops, rejects, not-ready ticks, fallbacks), ERROR when a
backend call failed or an input went silent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ERROR",
    "OK",
    "STALE",
    "WARN",
    "InputStats",
    "LatencyWindow",
    "NodeDiagnostics",
    "StatusEntry",
    "Throttle",
    "to_diagnostic_array",
]

OK, WARN, ERROR, STALE = 0, 1, 2, 3


@dataclass
class StatusEntry:
    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class Throttle:
    """At most one `ready(key)` per `period_s` per key (keyed, unlike rclpy's per-call-site throttle)."""

    def __init__(self, period_s: float, clock: Any = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True


class LatencyWindow:
    """Rolling window of durations (seconds) with percentiles in milliseconds."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(float(seconds))

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values.clear()

    def percentiles_ms(self, qs: tuple[float, ...] = (50.0, 90.0, 99.0)) -> dict[str, float]:
        if not self._values:
            return {}
        arr = np.asarray(self._values, dtype=np.float64) * 1e3
        out = {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
        out["max"] = float(arr.max())
        return out

    def values(self) -> list[float]:
        return list(self._values)


@dataclass
class InputStats:
    """Per input stream (a camera or odometry)."""

    received: int = 0
    accepted: int = 0
    dropped: int = 0  # decoder pool busy: an older pending frame was replaced
    rejected: Counter = field(default_factory=Counter)  # reason code -> count
    last_error: str = ""
    last_received_mono: float | None = None
    graph_note: str = ""  # what the ROS graph says about this input's publishers (QoS, type)
    arrivals: deque = field(default_factory=lambda: deque(maxlen=256))  # monotonic arrival times
    newest_stamp: float | None = None  # header stamp of the newest accepted message

    def rate_hz(self, now: float, window_s: float = 2.0) -> float:
        recent = [t for t in self.arrivals if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


class NodeDiagnostics:
    """Thread-safe event sink of the planner node; `snapshot()` builds the /diagnostics entries."""

    def __init__(self, node_name: str, inputs: list[str], latency_window: int = 200,
                 silent_after_s: float = 1.0, clock: Any = time.monotonic, cameras: list[str] | None = None,
                 decode_workers: int = 1, max_camera_lag_s: float = 0.25, odometry: str = "odometry") -> None:
        self.node_name = node_name
        self.cameras = list(cameras or [])  # inputs whose frames go through the decode pool
        self.decode_workers = decode_workers
        self.max_camera_lag_s = max_camera_lag_s
        self.odometry = odometry  # the input whose newest stamp the cameras' lag is measured against
        self.silent_after_s = silent_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self.inputs: dict[str, InputStats] = {name: InputStats() for name in inputs}
        self.ticks_planned = 0
        self.ticks_busy = 0  # timer fired while a tick was in flight (latest input wins, no backlog)
        self.ticks_no_new_input = 0
        self.not_ready: Counter = Counter()
        self.last_not_ready = ""
        self.input_gate_trips: Counter = Counter()
        self.output_gate_trips: Counter = Counter()
        self.fallbacks: Counter = Counter()
        self.fallbacks_unpublished = 0
        self.last_fallback = ""
        self.time_jumps = 0
        self.relocalisations = 0
        self.last_relocalisation = ""
        self.odometry_frame_id = ""
        self.overtaken = 0  # results dropped because a newer output (a fallback) went out first
        self.last_overtaken = ""
        self.backend_errors = 0
        self.backend_last_error = ""
        self.backend_name = ""
        self.model_id = ""
        self.normalization = ""  # source and values of the action de-normalisation constants
        self.tick_total = LatencyWindow(latency_window)  # timer fired -> last message published
        self.tick_backend = LatencyWindow(latency_window)  # backend compute of that tick
        self.tick_overhead = LatencyWindow(latency_window)  # total minus backend compute
        self.frame_preprocess = LatencyWindow(latency_window)  # decode + crop + core preprocessing
        self.image_callback = LatencyWindow(latency_window)  # executor-thread cost of one image message
        self.stages: dict[str, LatencyWindow] = {}  # per-tick stages (core select/inputs/rollout, node publish)
        self._window = latency_window
        self._prev: dict[str, Any] = {}
        # navigation instruction (~/route_instruction) and questions (~/ask), Alpamayo 1.5
        self.route_supported = True
        self.route_text = ""  # the instruction in effect ("" none)
        self.route_received_mono: float | None = None
        self.route_counts: Counter = Counter()  # received, rejected, expired, ignored, cleared, untrained_wording
        self.route_last_problem = ""
        self.nav_guidance_weight = 0.0
        self.questions: Counter = Counter()  # answered, failed
        self.last_question_error = ""
        self.answer_time = LatencyWindow(latency_window)

    # --- events -------------------------------------------------------------------------------
    def received(self, name: str) -> None:
        now = self._clock()
        with self._lock:
            st = self.inputs[name]
            st.received += 1
            st.last_received_mono = now
            st.arrivals.append(now)

    def callback_cost(self, seconds: float) -> None:
        with self._lock:
            self.image_callback.add(seconds)

    def accepted(self, name: str, preprocess_s: float | None = None, stamp: float | None = None) -> None:
        with self._lock:
            st = self.inputs[name]
            st.accepted += 1
            if stamp is not None and (st.newest_stamp is None or stamp > st.newest_stamp):
                st.newest_stamp = stamp
            if preprocess_s is not None:
                self.frame_preprocess.add(preprocess_s)

    def rejected(self, name: str, reason: str, message: str) -> None:
        with self._lock:
            st = self.inputs[name]
            st.rejected[reason] += 1
            st.last_error = f"{reason}: {message}"

    def graph_note(self, name: str, note: str) -> None:
        with self._lock:
            self.inputs[name].graph_note = note

    def dropped(self, name: str) -> None:
        with self._lock:
            self.inputs[name].dropped += 1

    def tick_not_ready(self, code: str, message: str) -> None:
        with self._lock:
            self.not_ready[code] += 1
            self.last_not_ready = f"{code}: {message}"

    def tick_busy(self) -> None:
        with self._lock:
            self.ticks_busy += 1

    def tick_no_new_input(self) -> None:
        with self._lock:
            self.ticks_no_new_input += 1

    def tick_done(self, total_s: float, backend_s: float) -> None:
        with self._lock:
            self.ticks_planned += 1
            self.tick_total.add(total_s)
            self.tick_backend.add(backend_s)
            self.tick_overhead.add(max(0.0, total_s - backend_s))

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            if name not in self.stages:
                self.stages[name] = LatencyWindow(self._window)
            self.stages[name].add(seconds)

    def gate_trip(self, kind: str, reasons: list[str]) -> None:
        with self._lock:
            counter = self.input_gate_trips if kind == "input" else self.output_gate_trips
            for r in reasons or ["unspecified"]:
                counter[r] += 1

    def fallback(self, reason: str, published: bool) -> None:
        with self._lock:
            self.fallbacks[reason.split(":")[0]] += 1
            self.last_fallback = reason
            if not published:
                self.fallbacks_unpublished += 1

    def time_jump(self) -> None:
        with self._lock:
            self.time_jumps += 1
            for st in self.inputs.values():  # lags are measured within one timeline
                st.newest_stamp = None

    def relocalisation(self, message: str) -> None:
        with self._lock:
            self.relocalisations += 1
            self.last_relocalisation = message

    def odometry_frame(self, frame_id: str) -> None:
        with self._lock:
            self.odometry_frame_id = frame_id

    def result_overtaken(self, message: str) -> None:
        with self._lock:
            self.overtaken += 1
            self.last_overtaken = message

    def route_event(self, kind: str, text: str = "", problem: str = "") -> None:
        """kind: received | rejected | expired | ignored | cleared | untrained_wording."""
        with self._lock:
            self.route_counts[kind] += 1
            if kind == "received":
                self.route_text, self.route_received_mono = text, self._clock()
            elif kind in ("expired", "cleared"):
                self.route_text, self.route_received_mono = "", None
            if problem:
                self.route_last_problem = problem

    def question(self, ok: bool, seconds: float | None = None, error: str = "") -> None:
        with self._lock:
            self.questions["answered" if ok else "failed"] += 1
            if seconds is not None:
                self.answer_time.add(seconds)
            if error:
                self.last_question_error = error

    def backend_error(self, message: str) -> None:
        with self._lock:
            self.backend_errors += 1
            self.backend_last_error = message

    # --- snapshot -------------------------------------------------------------------------------
    def _delta(self, key: str, value: int) -> int:
        prev = self._prev.get(key, 0)
        self._prev[key] = value
        return value - prev

    def _camera_lags(self) -> dict[str, float]:
        """How far each camera's newest frame trails the newest odometry (or the newest camera)."""
        newest = {c: self.inputs[c].newest_stamp for c in self.cameras if c in self.inputs}
        stamps = [t for t in newest.values() if t is not None]
        odom = self.inputs[self.odometry].newest_stamp if self.odometry in self.inputs else None
        ref = odom if odom is not None else (max(stamps) if stamps else None)
        if ref is None:
            return {}
        return {c: max(0.0, ref - t) for c, t in newest.items() if t is not None}

    def _input_entry(self, name: str, st: InputStats, now: float, lags: dict[str, float]) -> StatusEntry:
        rejected = sum(st.rejected.values())
        d_rej = self._delta(f"{name}.rejected", rejected)
        d_drop = self._delta(f"{name}.dropped", st.dropped)
        silent_for = None if st.last_received_mono is None else now - st.last_received_mono
        level, msg = OK, "receiving"
        note = f" ({st.graph_note})" if st.graph_note else ""
        lag = lags.get(name)
        if st.last_received_mono is None:
            level, msg = ERROR, "no message received yet" + note
        elif silent_for is not None and silent_for > self.silent_after_s:
            level, msg = ERROR, f"silent for {silent_for:.1f} s" + note
        elif lag is not None and lag > self.max_camera_lag_s:
            level, msg = WARN, f"lags the newest odometry by {lag:.2f} s: every plan waits for this camera"
        elif d_rej:
            level, msg = WARN, f"{d_rej} rejected since last report; last: {st.last_error}"
        elif d_drop:
            level, msg = WARN, f"{d_drop} dropped (decoder busy) since last report"
        values = {
            "rate_hz": f"{st.rate_hz(now):.2f}",
            "received": str(st.received),
            "accepted": str(st.accepted),
            "dropped_decoder_busy": str(st.dropped),
            "rejected": str(rejected),
            "last_error": st.last_error,
            "publishers": st.graph_note or "ok",
        }
        if name in lags:
            values["lag_s"] = f"{lags[name]:.3f}"
        values.update({f"rejected.{k}": str(v) for k, v in sorted(st.rejected.items())})
        return StatusEntry(f"{self.node_name}: input {name}", level, msg, values)

    def _sync_entry(self, lags: dict[str, float]) -> StatusEntry:
        total_nr = sum(self.not_ready.values())
        d_nr = self._delta("not_ready", total_nr)
        d_tj = self._delta("time_jumps", self.time_jumps)
        d_rl = self._delta("relocalisations", self.relocalisations)
        slowest = max(lags, key=lags.__getitem__) if lags else ""
        level, msg = OK, "ticks formed"
        if d_tj:
            level, msg = WARN, f"time jumped backwards {d_tj}x (buffers reset)"
        elif d_rl:
            level, msg = WARN, f"relocalised {d_rl}x: {self.last_relocalisation}"
        elif slowest and lags[slowest] > self.max_camera_lag_s:
            level, msg = WARN, (f"camera '{slowest}' lags the newest odometry by {lags[slowest]:.2f} s: t0 follows "
                                "the slowest camera, so every plan is that late")
        elif d_nr:
            level, msg = WARN, f"{d_nr} ticks not ready; last: {self.last_not_ready}"
        values = {"not_ready": str(total_nr), "last_not_ready": self.last_not_ready,
                  "time_jumps": str(self.time_jumps), "relocalisations": str(self.relocalisations),
                  "last_relocalisation": self.last_relocalisation, "odometry_frame_id": self.odometry_frame_id,
                  "slowest_camera": slowest, "slowest_camera_lag_s": f"{lags[slowest]:.3f}" if slowest else ""}
        values.update({f"not_ready.{k}": str(v) for k, v in sorted(self.not_ready.items())})
        return StatusEntry(f"{self.node_name}: synchronization", level, msg, values)

    def _inference_entry(self, now: float) -> StatusEntry:
        values = {"ticks": str(self.ticks_planned), "busy_skips": str(self.ticks_busy),
                  "no_new_input": str(self.ticks_no_new_input)}
        for label, window in (("tick_ms", self.tick_total), ("backend_ms", self.tick_backend),
                              ("overhead_ms", self.tick_overhead), ("frame_preprocess_ms", self.frame_preprocess),
                              ("image_callback_ms", self.image_callback)):
            for k, v in window.percentiles_ms().items():
                values[f"{label}.{k}"] = f"{v:.2f}"
        for name, window in sorted(self.stages.items()):
            for k, v in window.percentiles_ms((50.0, 99.0)).items():
                values[f"stage.{name}_ms.{k}"] = f"{v:.2f}"
        d_ticks = self._delta("ticks", self.ticks_planned)
        level, msg = (OK, f"{d_ticks} ticks since last report") if d_ticks else (WARN, "no tick planned since last report")
        load = self.decode_load(now)
        values["decode_load"] = f"{load:.2f}"
        if load > 0.9:
            level = max(level, WARN)
            msg += (f"; image preprocessing saturated (load {load:.2f} of {self.decode_workers} workers): "
                    "set image_resize: fast or raise image_workers")
        return StatusEntry(f"{self.node_name}: inference", level, msg, values)

    def decode_load(self, now: float) -> float:
        """Busy fraction of the decode pool: camera frame rate x median preprocessing time / workers."""
        pre = self.frame_preprocess.percentiles_ms((50.0,)).get("p50", 0.0) * 1e-3
        rate = sum(self.inputs[c].rate_hz(now) for c in self.cameras if c in self.inputs)
        return rate * pre / max(1, self.decode_workers)

    def _gates_entry(self) -> StatusEntry:
        n_fb = sum(self.fallbacks.values())
        d_fb = self._delta("fallbacks", n_fb)
        d_ot = self._delta("overtaken", self.overtaken)
        level, msg = (WARN, f"{d_fb} fallbacks since last report; last: {self.last_fallback}") if d_fb else (OK, "ok")
        if d_ot:
            level, msg = WARN, f"{d_ot} results dropped, overtaken by a newer output; last: {self.last_overtaken}"
        values = {"input_gate_trips": str(sum(self.input_gate_trips.values())),
                  "output_gate_trips": str(sum(self.output_gate_trips.values())),
                  "fallbacks": str(n_fb), "fallbacks_unpublished": str(self.fallbacks_unpublished),
                  "last_fallback": self.last_fallback, "dropped_overtaken": str(self.overtaken),
                  "last_overtaken": self.last_overtaken}
        values.update({f"input_gate.{k}": str(v) for k, v in sorted(self.input_gate_trips.items())})
        values.update({f"output_gate.{k}": str(v) for k, v in sorted(self.output_gate_trips.items())})
        values.update({f"fallback.{k}": str(v) for k, v in sorted(self.fallbacks.items())})
        return StatusEntry(f"{self.node_name}: gates and fallback", level, msg, values)

    def _backend_entry(self) -> StatusEntry:
        d_err = self._delta("backend_errors", self.backend_errors)
        level, msg = (ERROR, f"backend failed: {self.backend_last_error}") if d_err else (OK, "healthy")
        values = {"backend": self.backend_name, "model_id": self.model_id, "normalization": self.normalization,
                  "errors": str(self.backend_errors), "last_error": self.backend_last_error}
        return StatusEntry(f"{self.node_name}: backend", level, msg, values)

    def _navigation_entry(self, now: float) -> StatusEntry:
        """The route instruction in effect and the ~/ask questions; WARN when either had trouble in the period."""
        c = self.route_counts
        problems = {k: self._delta(f"nav/route_{k}", c[k]) for k in ("rejected", "expired", "ignored", "untrained_wording")}
        d_failed = self._delta("nav/questions_failed", self.questions["failed"])
        level, msg = OK, (f"route: '{self.route_text}'" if self.route_text else "no route instruction")
        if any(problems.values()):
            level, msg = WARN, f"route instruction problem: {self.route_last_problem}"
        if d_failed:
            level = WARN
            msg += f"; {d_failed} questions not answered, last: {self.last_question_error}"
        age = now - self.route_received_mono if self.route_received_mono is not None else None
        values = {"route_supported": str(self.route_supported).lower(), "route": self.route_text,
                  "route_age_s": f"{age:.1f}" if age is not None else "", "last_route_problem": self.route_last_problem,
                  "nav_guidance_weight": f"{self.nav_guidance_weight:g}",
                  "questions_answered": str(self.questions["answered"]), "questions_failed": str(self.questions["failed"]),
                  "last_question_error": self.last_question_error}
        values.update({f"route_{k}": str(c[k]) for k in ("received", "rejected", "expired", "ignored", "cleared",
                                                           "untrained_wording")})
        values.update({f"answer_ms.{k}": f"{v:.1f}" for k, v in self.answer_time.percentiles_ms((50.0, 99.0)).items()})
        return StatusEntry(f"{self.node_name}: navigation and questions", level, msg, values)

    def snapshot(self) -> list[StatusEntry]:
        now = self._clock()
        with self._lock:
            lags = self._camera_lags()
            entries = [self._input_entry(n, st, now, lags) for n, st in self.inputs.items()]
            entries += [self._sync_entry(lags), self._inference_entry(now), self._gates_entry(),
                        self._navigation_entry(now), self._backend_entry()]
        return entries


def to_diagnostic_array(entries: list[StatusEntry], stamp: Any, hardware_id: str) -> Any:
    """StatusEntry list -> diagnostic_msgs/DiagnosticArray (stamped with the node clock's now)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [
        DiagnosticStatus(level=bytes([e.level]), name=e.name, message=e.message, hardware_id=hardware_id,
                         values=[KeyValue(key=k, value=v) for k, v in e.values.items()])
        for e in entries
    ]
    return arr
