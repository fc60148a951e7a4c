"""Kinematic development backend: no torch, follows the history's motion, candidates differ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.core.action_space import action_to_traj
from alpamayo_ros.core.backend import SamplingRequest, TrajectoryBackend
from alpamayo_ros.runtime import create_backend
from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir


@pytest.fixture(scope="module")
def source():
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    return SyntheticInputs(default_tiny_model_dir())


@pytest.mark.parametrize(("speed", "curvature"), [(8.0, 0.0), (5.0, 0.02), (12.0, -0.01)])
def test_continues_the_history(source, speed: float, curvature: float) -> None:
    backend = create_backend("kinematic", default_tiny_model_dir())
    assert isinstance(backend, TrajectoryBackend)
    tick = source.tick(3, speed=speed, curvature=curvature)
    out = backend.infer(tick.inputs, SamplingRequest(num_candidates=4, seed=1))
    assert out.actions.shape == (4, 64, 2) and out.actions.dtype == np.float32
    xyz, _ = action_to_traj(out.actions, tick.hist_xyz, tick.hist_rot)
    horizon = speed * 6.4
    s = np.linspace(0.1, 6.4, 64) * speed
    exp_x = np.sin(curvature * s) / curvature if curvature else s
    exp_y = (1 - np.cos(curvature * s)) / curvature if curvature else 0 * s
    err = np.hypot(xyz[..., 0] - exp_x, xyz[..., 1] - exp_y)
    assert err.max() < 0.08 * horizon, err.max()
    assert not np.allclose(out.actions[0], out.actions[1])  # per-candidate noise
    assert f"{speed:.1f} m/s" in out.reasoning[0]
    assert f"curvature {curvature:.3f}" in out.reasoning[0] or abs(curvature) < 1e-3


def test_output_depends_on_inputs_and_seed(source) -> None:
    backend = create_backend("kinematic", default_tiny_model_dir())
    req = SamplingRequest(num_candidates=2, seed=4)
    a = backend.infer(source.tick(3, speed=4.0).inputs, req)
    b = backend.infer(source.tick(3, speed=10.0).inputs, req)
    c = backend.infer(source.tick(3, speed=4.0).inputs, SamplingRequest(num_candidates=2, seed=5))
    assert not np.allclose(a.actions, b.actions) and not np.allclose(a.actions, c.actions)


def test_kinematic_imports_no_torch() -> None:
    code = (
        "import sys; from alpamayo_ros.runtime import create_backend; "
        f"b = create_backend('kinematic', {str(default_tiny_model_dir())!r}); "
        "bad = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert res.returncode == 0, res.stdout + res.stderr


def test_missing_history_block_is_a_clear_error(source) -> None:
    import dataclasses

    from alpamayo_ros.runtime.kinematic import KinematicInputError

    tick = source.tick(3)
    bad = dataclasses.replace(tick.inputs, input_ids=tick.inputs.input_ids[:100])
    with pytest.raises(KinematicInputError, match="traj_history_start"):
        create_backend("kinematic", default_tiny_model_dir()).infer(bad, SamplingRequest(num_candidates=1))
