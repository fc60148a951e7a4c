"""The contract between the Planner (core) and an inference backend (runtime).

A backend turns one tick's model inputs into K normalized flow-matching actions plus the reasoning
that conditioned them. Everything before (frame selection, preprocessing, prompt, positions) and
after (unicycle rollout, gates, selection) is the Planner's, so every backend — PyTorch reference,
ONNX Runtime, TensorRT, the kinematic development backend — is scored by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .action_space import Normalization

if TYPE_CHECKING:
    from alpamayo_ros.core.model_inputs import ModelInputs


@dataclass(frozen=True)
class SamplingRequest:
    """What the Planner asks of one tick (DESIGN.md §3, spec §4-§5)."""

    num_candidates: int = 6
    num_diffusion_steps: int = 10
    shared_reasoning: bool = False  # one reasoning feeds all K trajectories (DESIGN.md §4.3)
    seed: int = 0
    temperature: float = 0.6
    top_p: float = 0.98
    max_generation_length: int = 256
    # Alpamayo 1.5 flow matching: the initial noise is scaled by this (1 = the R1 reference; its nav demo
    # uses 0.6), and navigation guidance blends (1 - w)·v_uncond + w·v_cond (0 = off, plain conditioning)
    noise_temperature: float = 1.0
    nav_guidance_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.num_diffusion_steps < 1:
            raise ValueError(f"num_diffusion_steps must be >= 1, got {self.num_diffusion_steps}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.max_generation_length < 1:
            raise ValueError(f"max_generation_length must be >= 1, got {self.max_generation_length}")
        if not self.noise_temperature > 0.0:
            raise ValueError(f"noise_temperature must be > 0, got {self.noise_temperature}")
        if not self.nav_guidance_weight >= 0.0:
            raise ValueError(f"nav_guidance_weight must be >= 0 (0 = off), got {self.nav_guidance_weight}")


@dataclass
class BackendOutput:
    """K candidates of one tick, in the model's normalized action space."""

    actions: np.ndarray  # float32 (K, n_waypoints, 2): normalized (acceleration, curvature)
    reasoning: list[str]  # chain-of-causation text per candidate
    # Generated ids per candidate as the reference returns them: every token after the first
    # <|traj_future_start|> is pad (the KV cache the expert read holds the sampled tokens); reasoning is
    # extracted from these ids.
    generated_ids: list[list[int]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)  # stage -> seconds (vision, prefill, ...)
    counters: dict[str, int] = field(default_factory=dict)  # e.g. images_encoded, prefill_calls
    nav_guidance_weight: float = 0.0  # the guidance weight the expert applied (0: none)


@dataclass
class AnswerOutput:
    """A question answered over one tick's frames (Alpamayo 1.5's question prompt)."""

    text: str  # the answer, special tokens removed
    complete: bool  # the model closed it with <|answer_end|> (False: cut by the token limit or ended otherwise)
    num_tokens: int
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendIdentity:
    name: str  # torch | onnxruntime | tensorrt | kinematic
    model_id: str  # model directory name + config hash; ends up in TrajectoryCandidates.model_id
    # The constants the model's actions are normalised with (checkpoint buffers, or what the export
    # recorded, or config.json bf16-rounded); None: the backend does not know (the Planner uses config.json).
    normalization: Normalization | None = None


@runtime_checkable
class TrajectoryBackend(Protocol):
    """Implemented by every runtime backend. `infer` may be called from a worker thread."""

    @property
    def identity(self) -> BackendIdentity: ...

    def infer(self, inputs: ModelInputs, request: SamplingRequest) -> BackendOutput: ...

    # Backends with a language model also have
    #   answer(inputs: ModelInputs, request: SamplingRequest, max_new_tokens: int,
    #          cancelled: Callable[[], bool] | None = None) -> AnswerOutput
    # (the question prompt of build_question_inputs; the Planner checks for it with hasattr).

    def close(self) -> None:
        """Release engines, buffers and caches (lifecycle cleanup)."""
        ...
