"""The action expert: a Qwen3-VL text model without embeddings (spec §5.3).

Expert layer l attends to [VLM cache K/V of layer l ; its own W tokens' K/V] non-causally. The
VLM keys are used as stored (already k-normed and rotated at their VLM positions).
"""

from __future__ import annotations

from torch import nn

from alpamayo_ros.runtime.config import TextConfig
from alpamayo_ros.runtime.modeling.attention import RMSNorm
from alpamayo_ros.runtime.modeling.text_decoder import DecoderLayer, RotaryMRoPE


class Expert(nn.Module):
    """`expert.layers.*`, `expert.norm.weight` (no embed_tokens: it is deleted in the reference)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryMRoPE(cfg)
