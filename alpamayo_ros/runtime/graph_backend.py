"""`TrajectoryBackend` over the shared orchestrator + one executor (torch, onnxruntime, tensorrt)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from alpamayo_ros.core.backend import AnswerOutput, BackendIdentity, BackendOutput, SamplingRequest
from alpamayo_ros.core.model_inputs import ModelInputs
from alpamayo_ros.core.tokenizer import AlpamayoTokenizer
from alpamayo_ros.runtime.executor import GraphExecutor
from alpamayo_ros.runtime.orchestrator import Orchestrator
from alpamayo_ros.runtime.weights import resolve_normalization


def load_tokenizer(model_dir: str | Path, traj_vocab_size: int) -> AlpamayoTokenizer:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the model directory needs the extended tokenizer.json "
            f"(`python -m alpamayo_ros.core.tokenizer <qwen3-vl tokenizer dir> {Path(model_dir)}`)"
        )
    return AlpamayoTokenizer.from_file(path, traj_vocab_size=traj_vocab_size)


class GraphBackend:
    """Implements core.backend.TrajectoryBackend."""

    def __init__(self, name: str, model_dir: str | Path, executor: GraphExecutor, mode: str = "per_candidate") -> None:
        cfg = executor.config
        normalization = resolve_normalization(model_dir, executor.recorded_normalization)
        self._identity = BackendIdentity(name=name, model_id=f"{Path(model_dir).name}@{cfg.config_hash}",
                                         normalization=normalization)
        tokenizer = load_tokenizer(model_dir, cfg.layout.traj_vocab_size)
        if tokenizer.layout.vocab_size != cfg.text.vocab_size:
            raise ValueError(
                f"tokenizer.json has {tokenizer.layout.vocab_size} tokens but config.json implies {cfg.text.vocab_size}"
            )
        self.orchestrator = Orchestrator(executor, tokenizer, mode)

    @property
    def identity(self) -> BackendIdentity:
        return self._identity

    @property
    def mode(self) -> str:
        return self.orchestrator.mode

    def infer(self, inputs: ModelInputs, request: SamplingRequest, noise: np.ndarray | None = None) -> BackendOutput:
        if request.shared_reasoning and self.orchestrator.mode != "shared_reasoning":
            return self._with_mode("shared_reasoning", inputs, request, noise)
        return self.orchestrator.run(inputs, request, noise)

    def answer(self, inputs: ModelInputs, request: SamplingRequest, max_new_tokens: int,
               cancelled: Callable[[], bool] | None = None) -> AnswerOutput:
        """A question over a tick's frames (the question prompt, core.model_inputs.build_question_inputs)."""
        return self.orchestrator.answer(inputs, request, max_new_tokens, cancelled)

    def _with_mode(self, mode: str, inputs: ModelInputs, request: SamplingRequest, noise: np.ndarray | None
                   ) -> BackendOutput:
        saved = self.orchestrator.mode
        self.orchestrator.mode = mode
        try:
            return self.orchestrator.run(inputs, request, noise)
        finally:
            self.orchestrator.mode = saved

    def close(self) -> None:
        self.orchestrator.close()
