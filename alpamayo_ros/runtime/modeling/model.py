"""`AlpamayoR1`: all parts under the released state-dict key layout (spec §8).

`empty_model` builds it with its parameters on the meta device (no memory, no initialisation) and its
non-persistent buffers (rotary tables, position interpolation: constants of the graphs) computed for
real, so a 10 B model can be traced, exported or checked key by key on a small host, and its weights
loaded one tensor at a time (`runtime.weights.load_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from alpamayo_ros.runtime.config import RuntimeConfig
from alpamayo_ros.runtime.modeling.action_projection import ActionInProj, make_action_out_proj
from alpamayo_ros.runtime.modeling.expert import Expert
from alpamayo_ros.runtime.modeling.text_decoder import TextModel
from alpamayo_ros.runtime.modeling.vision import VisionTower


class _VLMInner(nn.Module):
    def __init__(self, cfg: RuntimeConfig) -> None:
        super().__init__()
        self.visual = VisionTower(cfg.vision, cfg.image_grid_thw)
        self.language_model = TextModel(cfg.text)


class VLM(nn.Module):
    """`vlm.model.visual.*`, `vlm.model.language_model.*`, `vlm.lm_head.weight`."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        super().__init__()
        self.model = _VLMInner(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=False)


class ActionSpaceBuffers(nn.Module):
    """`action_space.*` normalization constants (persistent buffers in AR1; the Planner uses core's copy)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("accel_mean", "accel_std", "curvature_mean", "curvature_std"):
            self.register_buffer(name, torch.zeros(()))


class AlpamayoR1(nn.Module):
    def __init__(self, cfg: RuntimeConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vlm = VLM(cfg)
        self.expert = Expert(cfg.expert)
        self.action_in_proj = ActionInProj(cfg.action_in_proj, cfg.action_dim, cfg.expert.hidden_size)
        self.action_out_proj = make_action_out_proj(cfg.expert.hidden_size, cfg.action_dim)
        self.action_space = ActionSpaceBuffers()

    @property
    def visual(self) -> VisionTower:
        return self.vlm.model.visual

    @property
    def text(self) -> TextModel:
        return self.vlm.model.language_model


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside goes to the meta device (its initialisation runs on meta: free)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=False)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def empty_model(cfg: RuntimeConfig) -> AlpamayoR1:
    """The model with every parameter on the meta device and every buffer real (eval mode).

    Persistent buffers (action_space.*, the Fourier `freqs`) hold their constructor values until a
    checkpoint is loaded; the non-persistent ones are the exact constants the graphs embed.
    """
    with _parameters_on_meta():
        model = AlpamayoR1(cfg)
    return model.eval()


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape, without touching any data (works on meta parameters)."""
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}


def materialize(model: nn.Module, make: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
    """Replace every state-dict tensor (parameters and persistent buffers) by `make(key, current)`, one at a
    time, so peak memory is the finished model plus one tensor."""
    owners = dict(model.named_modules())
    persistent = model.state_dict(keep_vars=True)
    for key, current in persistent.items():
        path, _, leaf = key.rpartition(".")
        module = owners[path]
        value = make(key, current)
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            module._buffers[leaf] = value
