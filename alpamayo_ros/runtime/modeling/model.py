"""`AlpamayoR1`: all parts under the released state-dict key layout (spec §8)."""

from __future__ import annotations

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
