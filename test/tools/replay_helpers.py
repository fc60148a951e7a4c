"""Test helpers for the tools tests: an oracle planner and ground truth read up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class NotReady(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OracleResult:
    def __init__(self, t0: float, xyz: np.ndarray, selected: int = 0) -> None:
        self.t0, self.xyz, self.selected = t0, xyz, selected
        self.scores = -np.arange(len(xyz), dtype=np.float64)
        self.ok = True
        self.rejection = None  # the oracle passes every gate
        self.drive_index = selected
        self.reasoning = [f"oracle {k}" for k in range(len(xyz))]
        self.timings_s = {"total": 0.0}


class OraclePlanner:
    """A "model" that knows the future: plans the ground truth (+ fixed offsets per candidate).

    Its t0 is the newest stamp at which every camera has a frame, like the real planner's.
    Ground truth comes from a GroundTruth filled from the whole bag beforehand.
    """

    def __init__(self, gt, offsets_xy: list[tuple[float, float]], camera_ids=(0, 1, 2, 6)) -> None:
        self.gt, self.offsets = gt, offsets_xy
        self.latest: dict[int, float] = {}
        self.camera_ids = camera_ids
        self.images = 0
        self.odometry: list[float] = []

    def add_image(self, camera_id: int, stamp_s: float, rgb: np.ndarray) -> None:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        self.latest[camera_id] = max(self.latest.get(camera_id, -1.0), stamp_s)
        self.images += 1

    def add_odometry(self, stamp_s, position, orientation_xyzw, linear_velocity=None) -> None:
        self.odometry.append(stamp_s)

    def reset(self) -> None:
        self.latest.clear()

    def plan(self, t0: float | None = None) -> OracleResult:
        if len(self.latest) < len(self.camera_ids):
            raise NotReady("missing_camera", "not every camera has a frame yet")
        t0 = min(self.latest.values()) if t0 is None else t0
        fut = self.gt.future(t0)
        if fut is None:
            raise NotReady("history_not_covered", f"no ground truth at {t0}")
        xyz = np.stack([fut + np.array([dx, dy, 0.0]) for dx, dy in self.offsets]).astype(np.float32)
        return OracleResult(t0, xyz, selected=len(xyz) - 1)


def full_ground_truth(bag: Path):
    from alpamayo_ros.tools.bag_io import BagSource, decode_odometry
    from alpamayo_ros.tools.scoring import GroundTruth

    gt = GroundTruth()
    for msg in BagSource(bag).messages(["/odom"]):
        o = decode_odometry(msg)
        gt.add_odometry(o.stamp_s, o.position, o.orientation_xyzw)
    return gt
