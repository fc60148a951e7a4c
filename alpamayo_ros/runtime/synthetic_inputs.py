"""Synthetic but well-formed tick inputs for a model directory (tests, benchmarks, demos).

Real-size images (1080×1920 resized to 320×576 by core's preprocessing is skipped: the frames are
made at 320×576 directly), 4 cameras × 4 frames with stamps that slide by 100 ms per tick, and an
ego history of constant speed and curvature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alpamayo_ros.core.history_tokens import HistoryTokenizerConfig, history_token_ids
from alpamayo_ros.core.image_preprocess import PreprocessedFrame
from alpamayo_ros.core.model_config import ModelInputConfig, load_model_dir_config
from alpamayo_ros.core.model_inputs import ModelInputs, build_model_inputs
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer

FRAME_NS = 100_000_000


@dataclass
class SyntheticTick:
    inputs: ModelInputs
    hist_xyz: np.ndarray  # (16, 3) float32, ego frame at t0
    hist_rot: np.ndarray  # (16, 3, 3)


def constant_motion_history(speed: float = 8.0, curvature: float = 0.0, n: int = 16, dt: float = 0.1
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Ego history (ego frame at t0, last pose = origin) of a constant-speed, constant-curvature drive."""
    s = speed * dt * np.arange(-(n - 1), 1, dtype=np.float64)
    yaw = curvature * s
    if abs(curvature) > 1e-9:
        x, y = np.sin(yaw) / curvature, (1 - np.cos(yaw)) / curvature
    else:
        x, y = s, np.zeros_like(s)
    xyz = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.float32)
    c, si = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((n, 3, 3), dtype=np.float32)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -si, si, c, 1.0
    return xyz, rot


class SyntheticInputs:
    """Makes consecutive ticks; frame k of camera c is a deterministic pattern of (c, k)."""

    def __init__(self, model_dir: str | Path, seed: int = 0, height: int = 320, width: int = 576) -> None:
        raw = load_model_dir_config(model_dir)
        self.cfg = ModelInputConfig.from_config(raw)
        self.hist_cfg = HistoryTokenizerConfig.from_model_config(raw)
        self.tokenizer = AlpamayoTokenizer.from_file(Path(model_dir) / "tokenizer.json",
                                                     traj_vocab_size=self.cfg.layout.traj_vocab_size)
        self.seed, self.h, self.w = seed, height, width
        self._frames: dict[tuple[int, int], PreprocessedFrame] = {}

    def frame(self, camera_id: int, index: int) -> PreprocessedFrame:
        key = (camera_id, index)
        if key not in self._frames:
            rng = np.random.default_rng([self.seed, camera_id, index])
            yy, xx = np.mgrid[0 : self.h, 0 : self.w]
            base = (xx * (1 + camera_id) + yy * 2 + 7 * index) % 256
            img = np.stack([base, (base + 85) % 256, (base * 3) % 256], axis=-1).astype(np.int16)
            img += rng.integers(-8, 9, size=img.shape, dtype=np.int16)
            self._frames[key] = PreprocessedFrame(camera_id, index * FRAME_NS, np.clip(img, 0, 255).astype(np.uint8),
                                                  (1080, 1920))
        return self._frames[key]

    def tick(self, index: int, speed: float = 8.0, curvature: float = 0.0, route: str | None = None,
             unguided: bool = False) -> SyntheticTick:
        """Tick whose newest frame is frame `index` (frames index-3 … index of each camera); `route`: the
        navigation instruction (Alpamayo 1.5), `unguided`: also the prompt without it (navigation guidance)."""
        frames = self.frames(index)
        xyz, rot = constant_motion_history(speed, curvature)
        ids = history_token_ids(xyz, self.hist_cfg)
        inputs = build_model_inputs(frames, ids, self.tokenizer, self.cfg, route_text=route, unguided=unguided)
        return SyntheticTick(inputs, xyz, rot)

    def frames(self, index: int) -> list[PreprocessedFrame]:
        return [self.frame(c, index - 3 + f) for c in self.cfg.inputs.camera_ids for f in range(4)]
