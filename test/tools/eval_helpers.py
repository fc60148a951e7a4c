"""Helpers for the evaluation tests: the command line they share, and a report's numbers without
what depends on the machine (latency, wall time, which worker ran a bag)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

TIMING = {"latency_s", "latency_p50_s", "wall_s", "worker", "timings_s", "executor", "workers", "hosts",
          "results_dir", "warnings"}


def kinematic_args(bags: list[Path], out: Path, *extra: str) -> list[str]:
    """`evaluate` on the kinematic backend (K = 6), a tick every 0.5 s: 3 ticks per 9 s bag."""
    return ["evaluate", *map(str, bags), "--backend", "kinematic", "--model-dir", str(default_tiny_model_dir()),
            "--period", "0.5", "--out", str(out), "--no-figures", "--quiet", *extra]


def tiny_args(bags: list[Path], out: Path, *extra: str) -> list[str]:
    """`evaluate` on the tiny model (torch backend, one thread so every executor computes alike), K = 2,
    a tick every second: 2 ticks per 9.5 s bag."""
    return ["evaluate", *map(str, bags), "--backend", "torch", "--model-dir", str(default_tiny_model_dir()),
            "--num-candidates", "2", "-p", "backend_threads:=1", "--period", "1.0", "--out", str(out),
            "--no-figures", "--quiet", *extra]


def without_timing(obj: Any) -> Any:
    """The report minus everything that depends on timing or on which process ran what."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def numbers(out: Path) -> dict[str, Any]:
    report = json.loads((out / "report.json").read_text())
    report["summary"].pop("latency_s")
    return without_timing(report)
