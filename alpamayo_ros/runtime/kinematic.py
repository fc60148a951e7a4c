"""Kinematic development backend: no neural network, no torch (ROS tests, demos, fallback).

It reads the tick's 48 history tokens back out of `inputs.input_ids`, de-quantizes them into the
ego motion of the last 1.5 s, fits a constant speed and curvature to it, converts the
constant-speed / constant-curvature continuation into a normalized action (core `traj_to_action`),
and runs core's flow-matching Euler sampler with a velocity field that transports each
candidate's noise to that target (rectified flow, v = (target_k − x)/(1 − t)), where target_k keeps a
small share of candidate k's noise so that the K candidates differ. The reasoning text says what it did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.core.action_space import ActionSpaceConfig, traj_to_action
from alpamayo_ros.core.backend import BackendIdentity, BackendOutput, SamplingRequest
from alpamayo_ros.core.flow_matching import FlowMatchingSampler, initial_noise
from alpamayo_ros.core.history_tokens import HistoryTokenizerConfig
from alpamayo_ros.core.model_config import TokenLayout, load_model_dir_config
from alpamayo_ros.runtime.weights import config_normalization, resolve_normalization

DT = 0.1


class KinematicInputError(ValueError):
    """The prompt has no decodable history block."""


def decode_history_tokens(input_ids: np.ndarray, layout: TokenLayout, cfg: HistoryTokenizerConfig) -> np.ndarray:
    """Per-step displacement deltas (16, 3) from the 48 ids after `<|traj_history_start|>`."""
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    start = np.flatnonzero(ids == layout.traj_history_start)
    n = cfg.tokens_per_history_traj
    if start.size == 0 or start[0] + 1 + n > ids.shape[0]:
        raise KinematicInputError("input_ids has no <|traj_history_start|> followed by the history tokens")
    bins = ids[start[0] + 1 : start[0] + 1 + n] - cfg.hist_token_start_idx
    if np.any(bins < 0) or np.any(bins >= cfg.num_bins):
        raise KinematicInputError(
            f"history block holds ids outside the history bins [{cfg.hist_token_start_idx}, "
            f"{cfg.hist_token_start_idx + cfg.num_bins}): was the <|traj_history|> placeholder filled?"
        )
    lo, hi = np.asarray(cfg.ego_xyz_min, float), np.asarray(cfg.ego_xyz_max, float)
    return bins.reshape(-1, 3) / (cfg.num_bins - 1) * (hi - lo) + lo


def history_from_deltas(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions relative to t0 (last = origin) and yaw-only rotations from displacement directions.

    The first delta is the saturating absolute oldest position (spec §3.2); it cancels out here.
    """
    pos = np.cumsum(deltas, axis=0)
    pos = pos - pos[-1]
    step = np.diff(pos[:, :2], axis=0)
    yaw = np.arctan2(step[:, 1], step[:, 0])
    moving = np.hypot(step[:, 0], step[:, 1]) > 1e-3
    yaw = np.where(moving, yaw, 0.0)
    yaw = np.concatenate([yaw[:1], 0.5 * (yaw[:-1] + yaw[1:]), yaw[-1:]])  # heading at the samples
    yaw = yaw - yaw[-1]  # the ego frame at t0 has heading 0
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((yaw.shape[0], 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return pos.astype(np.float32), rot.astype(np.float32)


def fit_speed_curvature(pos: np.ndarray, window: int = 12) -> tuple[float, float]:
    """Speed (m/s) of the last 5 steps and curvature (1/m): slope of step heading vs arc length."""
    step = np.diff(pos[-(window + 1) :, :2], axis=0)
    dist = np.hypot(step[:, 0], step[:, 1])
    speed = float(dist[-5:].mean() / DT)
    if speed < 0.5 or len(step) < 3:
        return speed, 0.0
    yaw = np.unwrap(np.arctan2(step[:, 1], step[:, 0]))
    arc = np.cumsum(dist) - 0.5 * dist  # arc length at each step's midpoint
    return speed, float(np.polyfit(arc, yaw, 1)[0])


def constant_turn_future(speed: float, curvature: float, n: int, dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    s = speed * dt * np.arange(1, n + 1)
    yaw = curvature * s
    if abs(curvature) > 1e-6:
        x, y = np.sin(yaw) / curvature, (1.0 - np.cos(yaw)) / curvature
    else:
        x, y = s, np.zeros_like(s)
    xyz = np.stack([x, y, np.zeros_like(x)], axis=-1)
    c, si = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -si, si, c, 1.0
    return xyz, rot


class KinematicBackend:
    """core.backend.TrajectoryBackend without a network; `model_dir` (optional) supplies config.json."""

    def __init__(self, model_dir: str | Path | None = None, spread: float = 0.05, **_ignored: Any) -> None:
        raw: dict[str, Any] = load_model_dir_config(model_dir) if model_dir is not None else {}
        self.layout = TokenLayout.from_config(raw)
        self.hist_cfg = HistoryTokenizerConfig.from_model_config(raw)
        # normalise with the constants the model's actions would carry, so the Planner's rollout inverts it
        normalization = resolve_normalization(model_dir) if model_dir is not None else config_normalization(raw)
        self.action_cfg = ActionSpaceConfig.from_model_config(raw).with_normalization(normalization)
        self.spread = float(spread)
        name = Path(model_dir).name if model_dir is not None else "default"
        self._identity = BackendIdentity(name="kinematic", model_id=f"kinematic:{name}", normalization=normalization)

    @property
    def identity(self) -> BackendIdentity:
        return self._identity

    def infer(self, inputs: Any, request: SamplingRequest, noise: np.ndarray | None = None) -> BackendOutput:
        t0 = time.perf_counter()
        deltas = decode_history_tokens(inputs.input_ids, self.layout, self.hist_cfg)
        hist_xyz, hist_rot = history_from_deltas(deltas)
        speed, curvature = fit_speed_curvature(hist_xyz)
        n = self.action_cfg.n_waypoints
        fut_xyz, fut_rot = constant_turn_future(speed, curvature, n)
        target = traj_to_action(hist_xyz, hist_rot, fut_xyz, fut_rot, self.action_cfg).astype(np.float32)
        k = request.num_candidates
        x0 = (initial_noise(k, request.seed, (n, 2), request.noise_temperature) if noise is None
              else np.asarray(noise, dtype=np.float32))
        targets = target[None] + np.float32(self.spread) * x0

        def velocity(x: np.ndarray, t: float) -> np.ndarray:
            return (targets - x) / np.float32(1.0 - t)

        actions = FlowMatchingSampler(request.num_diffusion_steps).sample(velocity, x0).astype(np.float32)
        text = f"kinematic backend: continuing at {speed:.1f} m/s, curvature {curvature:.4f} 1/m"
        return BackendOutput(
            actions=actions,
            reasoning=[text] * k,
            generated_ids=[[] for _ in range(k)],
            timings_s={"tick": time.perf_counter() - t0},
            counters={"images_encoded": 0, "prefill_calls": 0, "expert_steps": request.num_diffusion_steps},
        )

    def close(self) -> None:
        """Nothing to release."""
