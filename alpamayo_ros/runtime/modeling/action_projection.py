"""`action_in_proj` (PerWaypointActionInProjV2) and `action_out_proj` (spec §5.2).

State-dict keys are exactly the released ones under `action_in_proj.`: `sinus.{0,1}.freqs`,
`timestep_fourier_encoder.freqs`, `encoder.trunk.{0,3,6}.{weight,bias}`, `encoder.trunk.{2,5}.weight`,
`norm.{weight,bias}`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alpamayo_ros.runtime.config import ActionInProjConfig
from alpamayo_ros.runtime.modeling.attention import RMSNorm


def fourier_freqs(dim: int, max_freq: float) -> torch.Tensor:
    """logspace(0, log10(max_freq), dim/2)."""
    return torch.logspace(0.0, math.log10(max_freq), dim // 2)


class FourierEncoder(nn.Module):
    """enc(s) = √2·[sin(2π s f_k), cos(2π s f_k)]; `freqs` is a persistent buffer of the released shape
    `[1, dim/2]` (AR1: bf16 on disk; `runtime.weights` also loads a flat `[dim/2]`)."""

    def __init__(self, dim: int, max_freq: float) -> None:
        super().__init__()
        self.register_buffer("freqs", fourier_freqs(dim, max_freq)[None, :])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        arg = 2.0 * math.pi * s.float().unsqueeze(-1) * self.freqs.float()[0]
        return math.sqrt(2.0) * torch.cat((arg.sin(), arg.cos()), dim=-1)


class Trunk(nn.Module):
    """Linear → SiLU → RMSNorm, (num_enc_layers − 1) × [Linear → SiLU → RMSNorm], Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_enc_layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_enc_layers):
            mods += [nn.Linear(dim, hidden), nn.SiLU(), RMSNorm(hidden, eps=1e-5)]
            dim = hidden
        mods.append(nn.Linear(dim, out_dim))
        self.trunk = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class ActionInProj(nn.Module):
    """(K, W, 2) action + scalar t -> (K, W, expert_hidden) tokens."""

    def __init__(self, cfg: ActionInProjConfig, action_dim: int, out_dim: int) -> None:
        super().__init__()
        nf = cfg.num_fourier_feats
        self.sinus = nn.ModuleList([FourierEncoder(nf, cfg.max_freq) for _ in range(action_dim)])
        self.timestep_fourier_encoder = FourierEncoder(nf, cfg.max_freq)
        self.encoder = Trunk(nf * (action_dim + 1), cfg.hidden_size, out_dim, cfg.num_enc_layers)
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (K, W, A); t broadcastable to (K,) (one time per row, or one for all)."""
        x = x.float()
        feats = [enc(x[..., i]) for i, enc in enumerate(self.sinus)]
        t_enc = self.timestep_fourier_encoder(t.float().reshape(-1, 1))  # (K|1, 1, nf)
        feats.append(t_enc.expand(x.shape[0], x.shape[1], t_enc.shape[-1]))
        dtype = self.norm.weight.dtype  # fp32 features, the expert's dtype from the first Linear on (autocast)
        return self.norm(self.encoder(torch.cat(feats, dim=-1).to(dtype)))


def make_action_out_proj(in_dim: int, action_dim: int) -> nn.Linear:
    """`action_out_proj` = Linear(expert_hidden → action_dim) with bias, applied per waypoint."""
    return nn.Linear(in_dim, action_dim)
