"""Delta history tokenizer (spec §3.2), including the AR1 first-delta saturation."""

from __future__ import annotations

import numpy as np
import pytest
from motion_cases import Motion

from alpamayo_ros.core.history_tokens import HistoryTokenizerConfig, history_token_bins, history_token_ids


def straight(speed, dtype=np.float32):
    return Motion(speed).ego_history()[0].astype(dtype)


def test_standing_still_is_the_middle_bin():
    # (0 + 4) / 8 · 999 = 499.5 exactly -> round half to even -> 500
    assert history_token_bins(np.zeros((16, 3))).tolist() == [500] * 48


def test_ten_metres_per_second_saturates_the_first_delta():
    bins = history_token_bins(straight(10.0))
    # first delta = oldest absolute position (−15, 0, 0): far below −4 m -> bin 0
    # later deltas: (1 + 4)/8·999 = 624.375 -> 624; y and z deltas are 0 -> 500
    assert bins.dtype == np.int64 and bins.shape == (48,)
    assert bins.tolist() == [0, 500, 500] + [624, 500, 500] * 15
    ids = history_token_ids(straight(10.0))
    assert ids[0] == 154669  # <i3000>
    assert ids.tolist() == (bins + 151669 + 3000).tolist()


def test_slow_car_does_not_saturate():
    bins = history_token_bins(straight(1.0))
    # first delta x = −1.5 -> 2.5/8·999 = 312.1875 -> 312; steps of 0.1 m -> 4.1/8·999 = 511.9875 -> 512
    assert bins.tolist() == [312, 500, 500] + [512, 500, 500] * 15


def test_order_is_interleaved_per_step_and_z_has_its_own_range():
    xyz = np.zeros((16, 3))
    xyz[:, 2] = np.arange(16) * 0.2  # z deltas: first 0 (from origin), then 0.2
    xyz[:, 1] = np.arange(16) * -0.5
    bins = history_token_bins(xyz).reshape(16, 3)
    assert bins[1:, 2].tolist() == [int(np.rint(10.2 / 20 * 999))] * 15  # 509.49 -> 509
    assert bins[1:, 1].tolist() == [int(np.rint(3.5 / 8 * 999))] * 15  # 437.06 -> 437
    assert bins[:, 0].tolist() == [500] * 16


def test_rounding_is_half_to_even_not_half_up():
    cfg = HistoryTokenizerConfig(ego_xyz_min=(-1, -1, -1), ego_xyz_max=(1, 1, 1), num_bins=6)
    # (0 + 1)/2 · 5 = 2.5 -> 2 (half to even); C-style lround would give 3
    assert history_token_bins(np.zeros((16, 3)), cfg).tolist() == [2] * 48


def test_clipping_at_both_ends():
    xyz = np.zeros((16, 3))
    xyz[1:, 0] = 100.0  # one +100 m jump, then zeros
    bins = history_token_bins(xyz).reshape(16, 3)
    assert bins[1, 0] == 999 and bins[2, 0] == 500


def test_batch_dims_and_validation():
    batch = np.stack([straight(10.0), straight(1.0)])
    out = history_token_bins(batch)
    assert out.shape == (2, 48)
    assert out[1].tolist() == history_token_bins(straight(1.0)).tolist()
    with pytest.raises(ValueError):
        history_token_bins(np.zeros((15, 3)))
    with pytest.raises(ValueError):
        history_token_bins(np.full((16, 3), np.nan))


def test_config_from_model_config():
    config = {
        "traj_token_start_idx": 1000,
        "traj_vocab_size": 40,
        "tokens_per_history_traj": 48,
        "hist_traj_tokenizer_cfg": {"_target_": "x.DeltaTrajectoryTokenizer", "ego_xyz_min": [-2, -2, -5],
                                    "ego_xyz_max": [2, 2, 5], "num_bins": 10},
        "traj_tokenizer_cfg": {"num_bins": 30, "dims_min": [-10, -10], "dims_max": [10, 10]},
    }
    cfg = HistoryTokenizerConfig.from_model_config(config)
    assert cfg.hist_token_start_idx == 1030
    ids = history_token_ids(np.zeros((16, 3)), cfg)
    assert ids.tolist() == [1030 + 4] * 48  # (2/4)·9 = 4.5 -> 4
    assert HistoryTokenizerConfig.from_model_config({}) == HistoryTokenizerConfig()
    assert HistoryTokenizerConfig().hist_token_start_idx == 154669
    with pytest.raises(ValueError):
        HistoryTokenizerConfig.from_model_config({**config, "traj_vocab_size": 35})


def test_float64_input_is_tokenized_as_the_float32_tensor_the_model_sees():
    # EgoHistory is float64; the reference tokenizes a float32 tensor, so inputs are cast first
    rng = np.random.default_rng(3)
    xyz = np.cumsum(rng.normal(scale=0.7, size=(500, 16, 3)), axis=1)
    as32 = history_token_bins(xyz.astype(np.float32), compute_dtype=None)
    assert np.array_equal(history_token_bins(xyz), as32)
    # the raw float64 arithmetic would disagree somewhere near an edge, which is why we cast
    edges = (np.arange(1, 999) - 0.5) / 999 * 8 - 4  # x/y deltas exactly on half-bin boundaries
    near = np.zeros((len(edges), 16, 3))
    near[:, 1, 0] = near[:, 0, 0] + edges
    diff = history_token_bins(near, compute_dtype=None) != history_token_bins(near)
    assert diff.any()
