"""Flow-matching Euler sampler of the action expert (spec §5.1).

t = 0 is noise and t = 1 is data; x ← x + (t_{i+1} − t_i)·v(x, t_i) over t = linspace(0, 1, n+1).
The velocity function is any callable (ONNX Runtime, TensorRT, torch, a test function), so the
loop is backend-agnostic: it only uses `+` and `*` on what the velocity function returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ACTION_SHAPE", "FlowMatchingSampler", "VelocityFn", "guided_velocity", "initial_noise", "make_noise"]

ACTION_SHAPE = (64, 2)
VelocityFn = Callable[[Any, float], Any]


def make_noise(
    k: int, seed: int, shape: Sequence[int] = ACTION_SHAPE, dtype: type[np.floating] = np.float32
) -> NDArray[np.floating]:
    """Initial noise ε ~ N(0, I) of shape (k, *shape), reproducible per seed (PCG64).

    Row j depends only on (seed, shape, j), not on k: a larger k extends a smaller one.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.standard_normal((k, *shape), dtype=dtype)


def initial_noise(k: int, seed: int, shape: Sequence[int] = ACTION_SHAPE, temperature: float = 1.0) -> NDArray[np.float32]:
    """The sampler's starting point: ``make_noise`` scaled by Alpamayo 1.5's noise ``temperature``
    (``randn(...) * temperature``; 1 = Alpamayo-R1; below 1 the samples are steadier and less diverse)."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = make_noise(k, seed, shape, np.float32)
    return x if temperature == 1.0 else (x * np.float32(temperature)).astype(np.float32)


def guided_velocity(v_cond: Any, v_uncond: Any, weight: float) -> Any:
    """Alpamayo 1.5's navigation guidance (classifier-free): ``(1 − w)·v_uncond + w·v_cond``.

    w = 1 is the conditional velocity alone, w = 0 the unconditional one, w > 1 extrapolates
    towards the instruction (NVIDIA's demo: 1.5)."""
    return (1.0 - weight) * v_uncond + weight * v_cond


@dataclass(frozen=True)
class FlowMatchingSampler:
    """Euler integration of a flow-matching velocity field (10 steps in AR1)."""

    num_steps: int = 10

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError("num_steps must be >= 1")

    def time_grid(self) -> NDArray[np.float32]:
        """t_0 … t_n as float32 (the reference builds them with fp32 linspace)."""
        return np.linspace(0.0, 1.0, self.num_steps + 1, dtype=np.float64).astype(np.float32)

    def steps(self) -> list[tuple[float, float]]:
        """(t_i, dt_i) per step, with dt_i = t_{i+1} − t_i computed in float32."""
        ts = self.time_grid()
        return [(float(ts[i]), float(ts[i + 1] - ts[i])) for i in range(self.num_steps)]

    def sample(
        self,
        velocity_fn: VelocityFn,
        noise: Any,
        callback: Callable[[int, float, Any], None] | None = None,
    ) -> Any:
        """Integrate from `noise` (t = 0) to t = 1; callback(i, t_i, x_before_step) sees each step."""
        x = noise
        for i, (t, dt) in enumerate(self.steps()):
            if callback is not None:
                callback(i, t, x)
            v = velocity_fn(x, t)
            if getattr(v, "shape", None) != getattr(x, "shape", None):
                raise ValueError(f"velocity_fn returned shape {getattr(v, 'shape', None)} for x of {x.shape}")
            x = x + dt * v
        return x
