"""Flow-matching Euler sampler (spec §5.1)."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.core.flow_matching import FlowMatchingSampler, make_noise


def test_same_seed_same_noise_and_rows_extend():
    a = make_noise(6, seed=123)
    assert a.shape == (6, 64, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, make_noise(6, seed=123))
    np.testing.assert_array_equal(a[:2], make_noise(2, seed=123))
    assert not np.array_equal(a, make_noise(6, seed=124))
    assert abs(float(a.mean())) < 0.1 and abs(float(a.std()) - 1.0) < 0.1
    assert make_noise(1, 0, shape=(8, 3), dtype=np.float64).shape == (1, 8, 3)
    with pytest.raises(ValueError):
        make_noise(0, 1)


def test_time_grid_and_step_sizes():
    s = FlowMatchingSampler()
    ts = s.time_grid()
    assert ts.dtype == np.float32 and ts[0] == 0.0 and ts[-1] == 1.0 and ts.shape == (11,)
    steps = s.steps()
    assert len(steps) == 10 and steps[0][0] == 0.0
    assert sum(dt for _, dt in steps) == pytest.approx(1.0, abs=1e-7)
    assert FlowMatchingSampler(num_steps=4).time_grid().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError):
        FlowMatchingSampler(num_steps=0)


def test_constant_field_integrates_exactly():
    noise = make_noise(3, seed=7, dtype=np.float64)
    c = np.linspace(-2, 2, 128).reshape(64, 2)
    out = FlowMatchingSampler().sample(lambda x, t: np.broadcast_to(c, x.shape), noise)
    np.testing.assert_allclose(out, noise + c, atol=1e-7)


def test_rectified_path_field_lands_on_the_data():
    # On the straight path x_t = t·d + (1−t)·ε the field is v = (d − x)/(1 − t) (linear in x),
    # and Euler follows a straight line exactly, so any step count ends on d.
    data = np.random.default_rng(0).normal(size=(2, 64, 2))
    for n in (1, 3, 10):
        noise = make_noise(2, seed=n, dtype=np.float64)
        out = FlowMatchingSampler(n).sample(lambda x, t: (data - x) / (1.0 - t), noise)
        np.testing.assert_allclose(out, data, atol=1e-6)


def test_velocity_is_evaluated_at_the_left_time_of_each_step():
    # v = t: Euler sums t_i·Δt = 0.1·(0 + 0.1 + … + 0.9) = 0.45, not the exact integral 0.5
    calls = []

    def field(x, t):
        calls.append((t, x.copy()))
        return np.full_like(x, t)

    out = FlowMatchingSampler(10).sample(field, np.zeros((1, 64, 2), np.float32))
    np.testing.assert_allclose(out, 0.45, atol=1e-6)
    assert [round(t, 6) for t, _ in calls] == [round(0.1 * i, 6) for i in range(10)]
    assert out.dtype == np.float32


def test_callback_and_shape_checks():
    seen = []
    s = FlowMatchingSampler(3)
    s.sample(lambda x, t: x * 0, np.zeros((2, 64, 2)), callback=lambda i, t, x: seen.append(i))
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError):
        s.sample(lambda x, t: np.zeros((64, 2)), np.zeros((2, 64, 2)))


def test_initial_noise_temperature_and_guided_velocity() -> None:
    from alpamayo_ros.core.flow_matching import guided_velocity, initial_noise

    base = make_noise(3, 11)
    assert np.array_equal(initial_noise(3, 11), base)
    np.testing.assert_allclose(initial_noise(3, 11, temperature=0.6), 0.6 * base, rtol=1e-6)  # randn * T
    assert initial_noise(3, 11, temperature=0.6).dtype == np.float32
    with pytest.raises(ValueError):
        initial_noise(3, 11, temperature=0.0)
    vc, vu = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    np.testing.assert_allclose(guided_velocity(vc, vu, 1.5), [1.25, 3.5])  # (1 - w)·vu + w·vc
    np.testing.assert_allclose(guided_velocity(vc, vu, 1.0), vc)
    np.testing.assert_allclose(guided_velocity(vc, vu, 0.0), vu)
