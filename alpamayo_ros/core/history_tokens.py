"""History tokens: the reference's delta tokenizer (spec §3.2).

48 bins = 16 steps × (x, y, z) of per-step deltas, the first delta taken from a zero origin. That
first delta is the absolute oldest position (t0 − 1.5 s), so above ~2.7 m/s its x saturates to
bin 0. This is the AR1 behaviour the model was trained on; it is reproduced, not fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["HistoryTokenizerConfig", "history_token_bins", "history_token_ids"]


@dataclass(frozen=True)
class HistoryTokenizerConfig:
    """Ranges, bins and vocabulary offsets; defaults are the released AR1 values (spec §2.2, §3.2)."""

    ego_xyz_min: tuple[float, float, float] = (-4.0, -4.0, -10.0)
    ego_xyz_max: tuple[float, float, float] = (4.0, 4.0, 10.0)
    num_bins: int = 1000
    traj_token_start_idx: int = 151669  # id of <i0>
    future_num_bins: int = 3000  # <i0>..<i2999> are future bins; history bins follow
    traj_vocab_size: int = 4000
    tokens_per_history_traj: int = 48

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.ego_xyz_min, float), np.asarray(self.ego_xyz_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(hi <= lo):
            raise ValueError(f"ego_xyz_min/max must be 3 values with max > min, got {lo}, {hi}")
        if self.num_bins < 2:
            raise ValueError("num_bins must be >= 2")
        if self.future_num_bins + self.num_bins > self.traj_vocab_size:
            raise ValueError(
                f"history bins [{self.future_num_bins}, {self.future_num_bins + self.num_bins}) do not fit "
                f"in traj_vocab_size={self.traj_vocab_size}"
            )

    @property
    def hist_token_start_idx(self) -> int:
        """Vocabulary id of history bin 0 (`<i3000>` = 154669 in AR1)."""
        return self.traj_token_start_idx + self.future_num_bins

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any]) -> HistoryTokenizerConfig:
        """From the model's config.json dict; missing keys keep the defaults."""
        hist = dict(config.get("hist_traj_tokenizer_cfg") or {})
        fut = dict(config.get("traj_tokenizer_cfg") or {})
        d = cls()
        kw: dict[str, Any] = {}
        if "ego_xyz_min" in hist:
            kw["ego_xyz_min"] = tuple(float(x) for x in hist["ego_xyz_min"])
        if "ego_xyz_max" in hist:
            kw["ego_xyz_max"] = tuple(float(x) for x in hist["ego_xyz_max"])
        if "num_bins" in hist:
            kw["num_bins"] = int(hist["num_bins"])
        if config.get("traj_token_start_idx") is not None:
            kw["traj_token_start_idx"] = int(config["traj_token_start_idx"])
        if "num_bins" in fut:
            kw["future_num_bins"] = int(fut["num_bins"])
        if config.get("traj_vocab_size") is not None:
            kw["traj_vocab_size"] = int(config["traj_vocab_size"])
        if config.get("tokens_per_history_traj") is not None:
            kw["tokens_per_history_traj"] = int(config["tokens_per_history_traj"])
        if hist.get("predict_yaw"):
            raise ValueError("hist_traj_tokenizer_cfg.predict_yaw=True is not supported (AR1 uses False)")
        return cls(**{**d.__dict__, **kw})


_DEFAULT = HistoryTokenizerConfig()


def history_token_bins(
    hist_xyz: ArrayLike,
    cfg: HistoryTokenizerConfig | None = None,
    compute_dtype: type[np.floating] | None = np.float32,
) -> NDArray[np.int64]:
    """Quantized delta bins (..., 16, 3) -> int64 (..., 48) in [0, num_bins), interleaved x,y,z.

    The reference tokenizes the float32 history tensor, so by default the input is cast to
    float32 and the arithmetic follows the reference's order; a value sitting on a bin edge then
    lands in the same bin as in PyTorch. compute_dtype=None keeps the input's float dtype.
    Rounding is half-to-even (np.rint), like torch.round.
    """
    cfg = cfg or _DEFAULT
    xyz = np.asarray(hist_xyz)
    if compute_dtype is not None:
        xyz = xyz.astype(compute_dtype, copy=False)
    elif not np.issubdtype(xyz.dtype, np.floating):
        xyz = xyz.astype(np.float64)
    if xyz.shape[-1] != 3 or xyz.ndim < 2:
        raise ValueError(f"hist_xyz must be (..., T, 3), got {xyz.shape}")
    if xyz.shape[-2] * 3 != cfg.tokens_per_history_traj:
        raise ValueError(f"{xyz.shape[-2]} steps give {xyz.shape[-2] * 3} tokens, expected {cfg.tokens_per_history_traj}")
    if not np.all(np.isfinite(xyz)):
        raise ValueError("hist_xyz contains NaN/inf")
    padded = np.concatenate([np.zeros_like(xyz[..., :1, :]), xyz], axis=-2)
    delta = padded[..., 1:, :] - padded[..., :-1, :]
    lo = np.asarray(cfg.ego_xyz_min, dtype=xyz.dtype)
    hi = np.asarray(cfg.ego_xyz_max, dtype=xyz.dtype)
    scaled = (delta - lo) / (hi - lo) * xyz.dtype.type(cfg.num_bins - 1)
    bins = np.clip(np.rint(scaled), 0, cfg.num_bins - 1).astype(np.int64)
    return bins.reshape(*bins.shape[:-2], -1)


def history_token_ids(hist_xyz: ArrayLike, cfg: HistoryTokenizerConfig | None = None) -> NDArray[np.int64]:
    """Vocabulary ids (..., 48) = hist_token_start_idx + bins (`<i{3000+q}>` in AR1)."""
    cfg = cfg or _DEFAULT
    return history_token_bins(hist_xyz, cfg) + cfg.hist_token_start_idx
