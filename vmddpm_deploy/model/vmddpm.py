"""VM-DDPM: a DDPM-style U-Net whose blocks are SSLayers (ResBlock + multi-level state-space
block), as we reconstruct it from the abstract of Ju & Zhou (arXiv 2405.05667) and VMamba.

Layout (docs/design.md section 1)::

    x (batch, C_in, H, W), t (batch,) int64
      -> conv3x3 stem
      -> encoder: per level, `layers_per_level` SSLayers, then a stride-2 conv (not after the last)
      -> middle: `mid_layers` SSLayers
      -> decoder: per level, `layers_per_level + 1` SSLayers on [h, skip], then upsample + conv
      -> GroupNorm - SiLU - conv3x3 -> eps (batch, C_in, H, W)

    SSLayer   = ResBlock(x, temb) -> MSSBlock(x, temb)
    MSSBlock  = LN + time scale/shift -> [local: DWConv3x3 | global: SS2D] -> fuse -> residual
    SS2D      = in_proj -> (x, z); DWConv3x3+SiLU(x); cross_scan -> selective_scan -> cross_merge;
                LN; * SiLU(z); out_proj

Tensors are channel-first between blocks and channel-last inside the state-space parts, where
the projections are per-token linear layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vmddpm_deploy.model.config import ModelConfig
from vmddpm_deploy.ops import NUM_ROUTES, cross_merge, cross_scan, selective_scan


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, t: (batch,) -> (batch, dim), as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int, config: ModelConfig) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(config.norm_groups, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, config: ModelConfig):
        super().__init__()
        self.norm1 = group_norm(in_ch, config)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = group_norm(out_ch, config)
        self.dropout = nn.Dropout(config.dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SS2D(nn.Module):
    """VMamba's 2-D selective scan over K=4 routes of the H*W tokens.

    Parameters are stored route-major so the scan sees ``(K*D, ...)`` rows without copies:
    ``x_proj_weight (K, R+2N, D)``, ``dt_projs_weight (K, D, R)``, ``A_logs (K*D, N)``.
    """

    def __init__(self, dim: int, config: ModelConfig):
        super().__init__()
        self.scan_order = config.scan_order
        self.d_inner = d_inner = int(config.ssm_ratio * dim)
        self.d_state = n = config.d_state
        self.dt_rank = r = config.dt_rank_for(dim)
        k = NUM_ROUTES

        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's S6 initialisation (docs/design.md section 1)."""
        bound = self.d_inner**-0.5
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
        # dt ~ logU[dt_min, dt_max]; the bias is its inverse softplus so softplus(bias) = dt.
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) with A_log = log(1..N): the S4D-real initialisation.
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, H, W, dim) -> (batch, H, W, dim)."""
        batch, height, width, _ = x.shape
        k, d, n, r, length = NUM_ROUTES, self.d_inner, self.d_state, self.dt_rank, height * width

        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (batch, D, H, W)

        xs = cross_scan(x.contiguous(), self.scan_order)  # (batch, K, D, L)
        # Per-route projections as broadcast matmuls, (K, c, D) @ (batch, K, D, L) -> (batch, K, c, L):
        # the same sums as einsum("bkdl,kcd->bkcl"), which on CPU permutes and copies its operands
        # first (several times slower on CPU). x_proj -> (dt, B, C); dt_proj: (K, D, R) @ (batch, K, R, L).
        x_dbl = torch.matmul(self.x_proj_weight, xs)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)

        y = selective_scan(
            xs.reshape(batch, k * d, length),
            dts.reshape(batch, k * d, length).to(xs.dtype).contiguous(),  # autocast may leave it fp32
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            self.dt_projs_bias.reshape(-1).float(),
            True,
        )
        y = cross_merge(y.view(batch, k, d, length), height, width, self.scan_order)  # (batch, D, H, W)
        y = self.out_norm(y.permute(0, 2, 3, 1)) * F.silu(z)
        return self.out_proj(y)


class MSSBlock(nn.Module):
    """Multi-level state-space block: local (depthwise conv) and global (SS2D) perception."""

    def __init__(self, dim: int, temb_dim: int, config: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.time_modulation = nn.Linear(temb_dim, 2 * dim)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.ss2d = SS2D(dim, config)
        self.fuse = nn.Linear(2 * dim, dim)
        hidden = int(config.mlp_ratio * dim)
        self.mlp = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden
            else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x: (batch, dim, H, W), temb: (batch, temb_dim) -> (batch, dim, H, W)."""
        scale, shift = self.time_modulation(F.silu(temb))[:, None, None, :].chunk(2, dim=-1)
        h = self.norm(x.permute(0, 2, 3, 1)) * (1 + scale) + shift  # (batch, H, W, dim)
        local = F.silu(self.local(h.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        out = x.permute(0, 2, 3, 1) + self.fuse(torch.cat([local, self.ss2d(h)], dim=-1))
        if self.mlp is not None:
            out = out + self.mlp(out)
        return out.permute(0, 3, 1, 2)


class SSLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, config: ModelConfig):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, config)
        self.mss = MSSBlock(out_ch, temb_dim, config)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.mss(self.res(x, temb), temb)


class VMDDPM(nn.Module):
    """The denoiser: ``forward(x, t) -> eps``; x: (batch, C, H, W), t: (batch,) int64."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        ch = config.base_channels
        temb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.stem = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        levels = len(config.channel_mult)
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.layers_per_level):
                self.down.append(SSLayer(ch, mult * config.base_channels, temb_dim, config))
                ch = mult * config.base_channels
                skip_channels.append(ch)
            if level != levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(SSLayer(ch, ch, temb_dim, config) for _ in range(config.mid_layers))

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for _ in range(config.layers_per_level + 1):
                out_ch = mult * config.base_channels
                self.up.append(SSLayer(ch + skip_channels.pop(), out_ch, temb_dim, config))
                ch = out_ch
            if level != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))

        self.head = nn.Sequential(group_norm(ch, config), nn.SiLU(), nn.Conv2d(ch, config.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_embed(timestep_embedding(t, self.config.base_channels))
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h, temb) if isinstance(block, SSLayer) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, temb)
        for block in self.up:
            if isinstance(block, SSLayer):
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = block(h)
        return self.head(h)
