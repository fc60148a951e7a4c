"""ADE/FDE, minADE_K/minFDE_K and prefix metrics (spec §7)."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.metrics import ade_fde, trajectory_metrics

T = np.arange(1, 65) * 0.1
GT = np.stack([10 * T, np.zeros(64), np.zeros(64)], -1)


def lateral(offsets):
    pred = np.repeat(GT[None], len(offsets), 0)
    pred[:, :, 1] += np.asarray(offsets, float)[:, None] if np.ndim(offsets[0]) == 0 else np.asarray(offsets)
    return pred


def test_constant_offsets():
    m = trajectory_metrics(lateral([1.0, 0.5, 2.0]), GT)
    np.testing.assert_allclose(m.ade, [1.0, 0.5, 2.0])
    np.testing.assert_allclose(m.fde, [1.0, 0.5, 2.0])
    assert (m.min_ade, m.min_fde, m.best_index, m.k) == (0.5, 0.5, 1, 3)
    assert set(m.prefix_ade) == {0.5, 1.0, 3.0, 5.0, 6.4}
    assert all(v == pytest.approx(0.5) for v in m.prefix_ade.values())


def test_prefixes_follow_the_best_full_horizon_sample():
    # candidate 0: error grows linearly 0.1·(i+1) (ADE 3.25); candidate 1: constant 3.3 m (worse
    # ADE, better FDE). Prefixes come from candidate 0; minFDE is candidate 1's independent minimum.
    grow = 0.1 * np.arange(1, 65)
    m = trajectory_metrics(lateral([grow, np.full(64, 3.3)]), GT)
    assert m.best_index == 0 and m.ade[0] == pytest.approx(3.25)
    assert m.min_fde == pytest.approx(3.3) and m.fde[0] == pytest.approx(6.4)
    # prefix ADE over n waypoints of a linear error: 0.1·(n+1)/2
    for h, n in [(0.5, 5), (1.0, 10), (3.0, 30), (5.0, 50), (6.4, 64)]:
        assert m.prefix_ade[h] == pytest.approx(0.1 * (n + 1) / 2)
        assert m.prefix_fde[h] == pytest.approx(0.1 * n)
    d = m.as_dict()
    assert d["ade@1.0s"] == pytest.approx(0.55) and d["best_index"] == 0 and len(d["ade"]) == 2


def test_xy_by_default_3d_optional():
    pred = GT.copy()
    pred[:, 2] += 2.0
    pred[:, 0] += 1.0
    assert trajectory_metrics(pred, GT).min_ade == pytest.approx(1.0)
    assert trajectory_metrics(pred, GT, use_3d=True).min_ade == pytest.approx(np.sqrt(5.0))
    ade, fde = ade_fde(pred, GT)
    assert ade == pytest.approx(1.0) and fde == pytest.approx(1.0)


def test_short_horizons_are_skipped_and_errors():
    m = trajectory_metrics(GT[:20] + [0, 1, 0], GT[:20])
    assert set(m.prefix_ade) == {0.5, 1.0}
    with pytest.raises(ValueError):
        trajectory_metrics(GT[:20], GT)
    bad = GT.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError):
        trajectory_metrics(bad, GT)
