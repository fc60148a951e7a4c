"""Diagnostics aggregation rules (pure) and the DiagnosticArray conversion."""

from __future__ import annotations

import pytest

from alpamayo_ros.ros.diagnostics import (
    ERROR,
    OK,
    WARN,
    LatencyWindow,
    NodeDiagnostics,
    Throttle,
    to_diagnostic_array,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _by_name(entries):
    return {e.name.split(": ", 1)[1]: e for e in entries}


def test_levels_follow_events_between_snapshots() -> None:
    clock = FakeClock()
    d = NodeDiagnostics("n", ["cam", "odometry"], clock=clock, silent_after_s=1.0)
    e = _by_name(d.snapshot())
    assert e["input cam"].level == ERROR and "no message" in e["input cam"].message
    for i in range(11):
        clock.t = 100.0 + 0.1 * i
        d.received("cam")
        d.accepted("cam", 0.004)
        d.received("odometry")
    d.rejected("cam", "truncated", "truncated image data")
    e = _by_name(d.snapshot())
    assert e["input cam"].level == WARN and "truncated" in e["input cam"].message
    assert float(e["input cam"].values["rate_hz"]) == pytest.approx(10.0)
    assert e["input cam"].values["rejected.truncated"] == "1"
    e = _by_name(d.snapshot())  # nothing new since the last report
    assert e["input cam"].level == OK
    clock.t += 5.0
    e = _by_name(d.snapshot())
    assert e["input cam"].level == ERROR and "silent" in e["input cam"].message


def test_tick_gate_fallback_backend_entries() -> None:
    d = NodeDiagnostics("n", [], clock=FakeClock())
    d.tick_done(0.030, 0.010)
    d.tick_not_ready("missing_camera", "camera 6 has no frame")
    d.gate_trip("output", ["first_waypoint"])
    d.fallback("output_gate:first_waypoint", published=True)
    d.backend_error("RuntimeError: boom")
    e = _by_name(d.snapshot())
    assert e["inference"].values["overhead_ms.p50"] == "20.00"
    assert e["synchronization"].level == WARN and "missing_camera" in e["synchronization"].message
    assert e["gates and fallback"].values["output_gate.first_waypoint"] == "1"
    assert e["gates and fallback"].values["fallback.output_gate"] == "1"
    assert e["backend"].level == ERROR
    from builtin_interfaces.msg import Time

    arr = to_diagnostic_array(d.snapshot(), Time(sec=3), "hw")
    assert arr.header.stamp.sec == 3
    assert arr.status[-1].level == bytes([OK])  # no new backend error since the previous report
    assert {kv.key for kv in arr.status[-1].values} >= {"backend", "model_id", "errors"}


def test_latency_window_and_throttle() -> None:
    w = LatencyWindow(4)
    for v in (0.001, 0.002, 0.003, 0.004, 0.005):
        w.add(v)
    p = w.percentiles_ms()
    assert p["p50"] == pytest.approx(3.5) and p["max"] == pytest.approx(5.0) and len(w) == 4
    clock = FakeClock()
    th = Throttle(2.0, clock)
    assert th.ready("a") and not th.ready("a") and th.ready("b")
    clock.t += 2.5
    assert th.ready("a")


def test_saturated_decode_pool_is_flagged() -> None:
    clock = FakeClock()
    d = NodeDiagnostics("n", ["cam0", "cam1"], clock=clock, cameras=["cam0", "cam1"], decode_workers=2)
    for i in range(21):
        clock.t = 100.0 + 0.1 * i
        for cam in ("cam0", "cam1"):
            d.received(cam)
            d.accepted(cam, 0.15)  # 150 ms per frame, 2 x 10 Hz, 2 workers -> 1.5x over capacity
    d.tick_done(0.01, 0.001)
    e = _by_name(d.snapshot())["inference"]
    assert e.level == WARN and "image_resize: fast" in e.message
    assert float(e.values["decode_load"]) == pytest.approx(1.5, rel=0.05)


def test_a_lagging_camera_is_named_against_the_newest_odometry() -> None:
    clock = FakeClock()
    d = NodeDiagnostics("n", ["cam0", "cam1", "odometry"], clock=clock, cameras=["cam0", "cam1"],
                        max_camera_lag_s=0.25)
    for name, stamp in (("cam0", 10.0), ("cam1", 9.5), ("odometry", 10.02)):
        d.received(name)
        d.accepted(name, stamp=stamp)
    e = _by_name(d.snapshot())
    assert e["synchronization"].values["slowest_camera"] == "cam1"
    assert e["synchronization"].values["slowest_camera_lag_s"] == "0.520"
    assert e["synchronization"].level == WARN and "camera 'cam1' lags" in e["synchronization"].message
    assert e["input cam1"].level == WARN and "every plan waits for this camera" in e["input cam1"].message
    assert e["input cam0"].values["lag_s"] == "0.020" and e["input cam0"].level == OK
    d.accepted("cam1", stamp=10.0)  # caught up
    e = _by_name(d.snapshot())
    assert e["synchronization"].level == OK and e["input cam1"].level == OK
    d.time_jump()  # a new timeline: lags restart
    assert _by_name(d.snapshot())["synchronization"].values["slowest_camera"] == ""


def test_relocalisation_and_overtaken_results_are_reported() -> None:
    d = NodeDiagnostics("n", [], clock=FakeClock())
    d.relocalisation("odometry jumped 1000.00 m / 0.00 rad at 12.000 and stayed there (relocalisation)")
    d.odometry_frame("map")
    d.result_overtaken("plan for t0=2.293 finished after an output for t0=4.473 went out")
    e = _by_name(d.snapshot())
    sync, gates = e["synchronization"], e["gates and fallback"]
    assert sync.level == WARN and "relocalised 1x" in sync.message and sync.values["relocalisations"] == "1"
    assert sync.values["odometry_frame_id"] == "map" and "1000.00 m" in sync.values["last_relocalisation"]
    assert gates.level == WARN and gates.values["dropped_overtaken"] == "1" and "t0=2.293" in gates.message
    e = _by_name(d.snapshot())
    assert e["synchronization"].level == OK and e["gates and fallback"].level == OK  # nothing new


def test_navigation_entry_reports_the_route_and_questions() -> None:
    clock = FakeClock()
    d = NodeDiagnostics("n", [], clock=clock)
    nav = _by_name(d.snapshot())["navigation and questions"]
    assert nav.level == OK and nav.message == "no route instruction" and nav.values["route"] == ""
    d.route_event("received", "Turn left in 40m")
    clock.t += 2.5
    nav = _by_name(d.snapshot())["navigation and questions"]
    assert nav.level == OK and nav.message == "route: 'Turn left in 40m'"
    assert (nav.values["route_age_s"], nav.values["route_received"]) == ("2.5", "1")
    d.route_event("expired", problem="'Turn left in 40m' dropped: 10.2 s old")
    d.question(False, error="no tick has run yet")
    nav = _by_name(d.snapshot())["navigation and questions"]
    assert nav.level == WARN and "dropped: 10.2 s old" in nav.message and "1 questions not answered" in nav.message
    assert (nav.values["route"], nav.values["route_expired"], nav.values["questions_failed"]) == ("", "1", "1")
    d.question(True, 0.25)
    nav = _by_name(d.snapshot())["navigation and questions"]
    assert nav.level == OK and nav.values["questions_answered"] == "1" and nav.values["answer_ms.p50"] == "250.0"
