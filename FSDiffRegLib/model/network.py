"""The FSDiffReg network: shared DDPM-UNet encoder, diffusion decoder, registration decoder.

Tensors are (N, C, D, H, W) with D the slice axis; flows have three channels holding
displacements in voxels of the network grid along (D, H, W).
"""

from __future__ import annotations

import math
import os
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .spatial import upsample_flow

BF16_VARIABLE = "FSDIFFREG_BF16"  # set (to anything but empty): inference's convolutions in bfloat16 where native


def native_bf16() -> bool:
    """Whether BF16_VARIABLE asks for bfloat16 and this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX).
    Off by default: the fields then differ from float32's by hundredths of a voxel, and from CPU to CPU."""
    if not os.environ.get(BF16_VARIABLE):
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


class Conv3d(nn.Conv3d):
    """A 3D convolution that always takes oneDNN on CPU.

    For batch-1 float32 inputs with few channels PyTorch picks its slow reference
    kernel; oneDNN runs this network's inference ~1.7x faster on CPU. With ``bf16`` (``use_bf16``), a
    float32 convolution on CPU without gradients computes in bfloat16 (oneDNN's, half the time of float32's
    where the CPU has native bfloat16), its input and output float32: the fields change by hundredths of a voxel,
    the Dice of patient 092 by under 1e-3 both ways (Testing/test_network.py).
    """

    bf16 = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            if self.bf16 and not torch.is_grad_enabled():
                bias = self.bias.bfloat16() if self.bias is not None else None
                return F.conv3d(x.bfloat16(), self.weight.bfloat16(), bias, self.stride, self.padding, self.dilation,
                                self.groups).float()
            padding = cast(tuple[int, ...], self.padding)  # this network's padding is a number, never 'same'
            return torch.mkldnn_convolution(x, self.weight, self.bias, padding, self.stride, self.dilation, self.groups)
        return super().forward(x)


def use_bf16(model: nn.Module, on: bool) -> None:
    """Whether ``model``'s convolutions (``Conv3d``) compute in bfloat16 at inference on CPU."""
    for module in model.modules():
        if isinstance(module, Conv3d):
            module.bf16 = on


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the noise level followed by a small MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.SiLU(), nn.Linear(dim * 4, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))


class ResBlock(nn.Module):
    """Time-conditioned residual block: GroupNorm, Swish, 3x3x3 conv, twice."""

    def __init__(self, cin: int, cout: int, tdim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = Conv3d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = Conv3d(cout, cout, 3, padding=1)
        self.skip = Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class LinearAttention(nn.Module):
    """Efficient (linear) attention of Shen et al.: queries from x, keys and values from y.

    With y = x it is self-attention; with y the diffusion feature it is the cross
    attention of the Feature-wise Diffusion-Guided module (paper Eq. 3).
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.GroupNorm(groups, channels)
        self.norm_kv = nn.GroupNorm(groups, channels)
        self.to_q = Conv3d(channels, channels, 1)
        self.to_kv = Conv3d(channels, 2 * channels, 1)
        self.out = Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = x if y is None else y
        n, c, *spatial = x.shape
        q = self.to_q(self.norm_q(x)).reshape(n, self.heads, c // self.heads, -1)
        k, v = self.to_kv(self.norm_kv(y)).reshape(n, 2, self.heads, c // self.heads, -1).unbind(1)
        k = k.softmax(dim=-1)
        q = q.softmax(dim=-2)
        context = torch.einsum("nhdp,nhep->nhde", k, v)
        attended = torch.einsum("nhde,nhdp->nhep", context, q).reshape(n, c, *spatial)
        return x + self.out(attended)


class FlowHead(nn.Module):
    """A decoder level's flow: optional FDG cross attention, then a 3x3x3 conv to 3 channels."""

    def __init__(self, channels: int, heads: int, groups: int, fdg: bool):
        super().__init__()
        self.attn = LinearAttention(channels, heads, groups) if fdg else None
        self.conv = Conv3d(channels, 3, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=1e-5)
        nn.init.zeros_(cast(torch.Tensor, self.conv.bias))  # made with a bias

    def forward(self, reg: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        h = self.attn(reg, diff) if self.attn is not None else reg
        return self.conv(h)


class Encoder(nn.Module):
    """Shared time-conditioned encoder; returns the skip features and the bottleneck."""

    def __init__(self, cfg: Config, tdim: int):
        super().__init__()
        w, g = cfg.base_width, cfg.norm_groups
        self.conv_in = Conv3d(3, w, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.skip_channels = [w]
        ch = w
        for level, mult in enumerate(cfg.channel_mults):
            level_blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                level_blocks.append(ResBlock(ch, w * mult, tdim, g))
                ch = w * mult
                self.skip_channels.append(ch)
            self.blocks.append(level_blocks)
            last = level == len(cfg.channel_mults) - 1
            self.downs.append(nn.Identity() if last else Conv3d(ch, ch, 3, stride=2, padding=1))
            if not last:
                self.skip_channels.append(ch)
        self.mid1 = ResBlock(ch, ch, tdim, g)
        self.mid_attn = LinearAttention(ch, cfg.attn_heads, g)
        self.mid2 = ResBlock(ch, ch, tdim, g)
        self.out_channels = ch

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = self.conv_in(x)
        skips = [h]
        for level_blocks, down in zip(self.blocks, self.downs):
            for block in cast(nn.ModuleList, level_blocks):
                h = block(h, temb)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        return skips, h


class Decoder(nn.Module):
    """A DDPM-UNet decoder: per level res_blocks + 1 residual blocks, then upsampling.

    ``guided`` blocks (the registration decoder) also take the diffusion decoder's
    feature of the same block as input (paper Eq. 2).
    """

    def __init__(self, cfg: Config, tdim: int, skip_channels: list[int], cin: int, guided: bool):
        super().__init__()
        w, g = cfg.base_width, cfg.norm_groups
        skips = list(skip_channels)
        self.blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.block_channels: list[int] = []
        ch = cin
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            level_blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks + 1):
                cout = w * mult
                extra = cout if guided else 0
                level_blocks.append(ResBlock(ch + skips.pop() + extra, cout, tdim, g))
                ch = cout
                self.block_channels.append(ch)
            self.blocks.append(level_blocks)
            self.ups.append(Conv3d(ch, ch, 3, padding=1) if level > 0 else nn.Identity())
        self.out_channels = ch

    def forward(
        self,
        h: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        guide: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Return the output feature of every block, shallowest last."""
        skips = list(skips)
        feats: list[torch.Tensor] = []
        for level_blocks, up in zip(self.blocks, self.ups):
            for block in cast(nn.ModuleList, level_blocks):
                parts = [h, skips.pop()]
                if guide is not None:
                    parts.append(guide[len(feats)])
                h = block(torch.cat(parts, dim=1), temb)
                feats.append(h)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return feats


class FSDiffRegNet(nn.Module):
    """Shared encoder E, diffusion decoder G (predicts the noise), registration decoder R."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        w, g = cfg.base_width, cfg.norm_groups
        self.time = TimeEmbedding(w)
        self.encoder = Encoder(cfg, w)
        enc = self.encoder
        self.diff_decoder = Decoder(cfg, w, enc.skip_channels, enc.out_channels, guided=False)
        self.reg_decoder = Decoder(cfg, w, enc.skip_channels, enc.out_channels, guided=cfg.fdg)
        self.noise_out = nn.Sequential(nn.GroupNorm(g, w), nn.SiLU(), Conv3d(w, 1, 3, padding=1))
        if cfg.fdg:
            heads = [FlowHead(c, cfg.attn_heads, g, True) for c in self.reg_decoder.block_channels]
            self.flow_heads = nn.ModuleList(heads)
            self.final_flow = FlowHead(w + 1, 1, 1, False)
        else:
            self.flow_heads = nn.ModuleList()
            self.final_flow = FlowHead(w, 1, 1, False)
        self.heart_head: nn.Module | None = None  # the heart head weights.load_model finds beside the weights

    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (predicted noise S, flow in voxels of the input grid)."""
        temb = self.time(t)
        skips, h = self.encoder(torch.cat([moving, fixed, x_t], dim=1), temb)
        diff_feats = self.diff_decoder(h, skips, temb)
        score = self.noise_out(diff_feats[-1])
        if not self.cfg.fdg:
            reg_feats = self.reg_decoder(h, skips, temb)
            return score, self.final_flow(reg_feats[-1], reg_feats[-1])
        reg_feats = self.reg_decoder(h, skips, temb, guide=diff_feats)
        size = tuple(moving.shape[2:])
        flows = [upsample_flow(head(r, d).contiguous(), size)  # 3 channels: 2x faster contiguous, same numbers
                 for head, r, d in zip(self.flow_heads, reg_feats, diff_feats)]
        last = torch.cat([reg_feats[-1], score], dim=1)
        flows.append(self.final_flow(last, last))
        return score, torch.stack(flows).mean(dim=0)



def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
