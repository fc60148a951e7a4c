"""The node's Alpamayo 1.5 inputs besides sensors: the route instruction topic and the ~/ask service.

``RouteInput`` keeps the instruction a route planner publishes on ``route.topic`` (std_msgs/String,
transient local, so a node that starts late still gets the current one) and hands the tick the one
in effect: received on the node clock, dropped ``route.max_age_s`` later, refused (the previous one
stays) when it cannot go into the prompt. Every event is counted in /diagnostics.

``QuestionJob`` is one ``~/ask`` request on the inference worker: it runs after the tick in progress
(one model, one worker), gives up at its deadline, and hands its response back to the service
coroutine through an rclpy future.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alpamayo_ros.core.navigation import PromptTextError, RouteState, check_prompt_text, is_trained_wording

from .diagnostics import NodeDiagnostics
from .params import AskParams, RouteParams

__all__ = ["QuestionJob", "RouteInput", "route_qos"]


def route_qos() -> Any:
    """Reliable, transient local, depth 1: a late subscriber gets the instruction in effect."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RouteInput:
    """Thread-safe route instruction state of the node (subscription callback in, tick out)."""

    def __init__(self, params: RouteParams, supported: bool, model_name: str, stats: NodeDiagnostics,
                 warn: Callable[[str, str], None]) -> None:
        self.params = params
        self.supported = supported
        self.model_name = model_name
        self.stats = stats
        self._warn = warn
        self._state = RouteState(params.max_age_s, params.max_chars)
        self._lock = threading.Lock()
        stats.route_supported = supported

    def on_message(self, text: str, now_s: float) -> None:
        """``now_s`` <= 0: simulated time before the first /clock (its age counts from the first tick)."""
        if not self.supported:
            problem = f"{self.model_name} takes no route instruction; '{text[:60]}' ignored (Alpamayo 1.5 does)"
            self.stats.route_event("ignored", problem=problem)
            self._warn("route.ignored", problem)
            return
        try:
            with self._lock:
                current = self._state.update(text, now_s if now_s > 0.0 else None)
        except PromptTextError as exc:
            problem = f"refused: {exc}; the previous instruction stays until it ages out"
            self.stats.route_event("rejected", problem=problem)
            self._warn("route.rejected", f"route instruction {problem}")
            return
        if current is None:
            self.stats.route_event("cleared")
            return
        self.stats.route_event("received", current.text)
        if not is_trained_wording(current.text):
            problem = (f"'{current.text}' is not the wording Alpamayo 1.5 was trained on (e.g. 'Turn left in 40m', "
                       "'Turn right onto Main St in 120m', 'Continue straight'); used as it is")
            self.stats.route_event("untrained_wording", problem=problem)
            self._warn("route.wording", problem)

    def current(self, now_s: float) -> str | None:
        """The instruction in effect now (None: none, or it aged out, which is reported once)."""
        with self._lock:
            instruction = self._state.current(now_s)
            expired, self._state.expired = self._state.expired, None
        if expired is not None:
            problem = (f"'{expired.text}' dropped: {now_s - (expired.received_s or now_s):.1f} s old, route.max_age_s="
                       f"{self.params.max_age_s:g}; the route planner must re-publish while it is valid")
            self.stats.route_event("expired", problem=problem)
            self._warn("route.expired", problem)
        return instruction.text if instruction is not None else None

    def clear(self) -> None:
        """Time jumped back (bag loop): an instruction from the other timeline does not apply."""
        with self._lock:
            self._state.clear()


@dataclass
class QuestionJob:
    """One ~/ask request; ``run`` executes on the inference worker, ``finish`` is called exactly once."""

    question: str
    params: AskParams
    deadline: float  # time.monotonic()
    finish: Callable[[dict[str, Any]], None]  # gets the response fields
    _done: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @staticmethod
    def check(question: str, params: AskParams) -> str:
        """The question as it goes into the prompt (PromptTextError says what is wrong)."""
        return check_prompt_text(question, "question", params.max_question_chars)

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def run(self, planner: Any, stats: NodeDiagnostics) -> None:
        if self.expired():
            self.fail(stats, f"timed out after ask.timeout_s={self.params.timeout_s:g} s waiting for the tick in "
                             "progress")
            return
        t = time.perf_counter()
        try:
            out, t0 = planner.answer(self.question, self.params.max_answer_tokens, cancelled=self.expired)
        except Exception as exc:  # not answerable now (no tick yet, R1, kinematic) or a backend failure
            self.fail(stats, str(getattr(exc, "message", "") or exc))
            return
        seconds = time.perf_counter() - t
        if self.expired() and not out.complete:
            self.fail(stats, f"timed out after ask.timeout_s={self.params.timeout_s:g} s while answering "
                             f"({out.num_tokens} tokens)")
            return
        if self._finish({"success": True, "message": "", "answer": out.text, "complete": out.complete,
                         "frames_stamp_s": t0, "inference_time_s": seconds}):
            stats.question(True, seconds)

    def fail(self, stats: NodeDiagnostics, message: str) -> None:
        if self._finish({"success": False, "message": message, "answer": "", "complete": False,
                         "frames_stamp_s": 0.0, "inference_time_s": 0.0}):
            stats.question(False, error=message)

    def _finish(self, fields: dict[str, Any]) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
        self.finish(fields)
        return True
