"""The segmentation U-Net in plain torch: MONAI's ``UNet`` (2D, residual units, batch norm, PReLU), layer for
layer and with the same state_dict keys, so weights trained with MONAI load here and the library needs no
MONAI at run time (Testing/test_segment.py checks both give the same output).

MONAI: ``monai.networks.nets.UNet(spatial_dims=2, ..., num_res_units=1, norm="batch")``, version 1.3 to 1.6.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Convolution(nn.Module):
    """A 3 x 3 convolution (or transposed convolution), then batch norm and PReLU unless ``conv_only``."""

    def __init__(self, cin: int, cout: int, stride: int, transposed: bool = False, conv_only: bool = False) -> None:
        super().__init__()
        self.conv: nn.Module
        if transposed:
            self.conv = nn.ConvTranspose2d(cin, cout, 3, stride, padding=1, output_padding=stride - 1)
        else:
            self.conv = nn.Conv2d(cin, cout, 3, stride, padding=1)
        self.adn = None if conv_only else nn.Sequential(OrderedDict(N=nn.BatchNorm2d(cout), A=nn.PReLU()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.adn is None else self.adn(x)


class ResidualUnit(nn.Module):
    """One ``Convolution`` plus the input (through a convolution where the stride or channels change)."""

    def __init__(self, cin: int, cout: int, stride: int, last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(OrderedDict(unit0=Convolution(cin, cout, stride, conv_only=last_conv_only)))
        if stride != 1:
            self.residual: nn.Module = nn.Conv2d(cin, cout, 3, stride, padding=1)
        elif cin != cout:
            self.residual = nn.Conv2d(cin, cout, 1)
        else:
            self.residual = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)


class SkipConnection(nn.Module):
    """The input and the submodule's output, concatenated along the channels."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


def level(cin: int, cout: int, channels: list[int], strides: list[int], top: bool) -> nn.Sequential:
    """Down, skip (the deeper levels), up: MONAI UNet's ``_create_block``."""
    if len(channels) > 2:
        deeper: nn.Module = level(channels[0], channels[0], channels[1:], strides[1:], False)
        up_channels = 2 * channels[0]
    else:
        deeper = ResidualUnit(channels[0], channels[1], 1)
        up_channels = channels[0] + channels[1]
    down = ResidualUnit(cin, channels[0], strides[0])
    up = nn.Sequential(Convolution(up_channels, cout, strides[0], transposed=True),
                       ResidualUnit(cout, cout, 1, last_conv_only=top))
    return nn.Sequential(down, SkipConnection(deeper), up)


class UNet(nn.Module):
    """2D U-Net of ``channels`` per level and ``strides`` between them (one fewer), residual units, batch norm."""

    def __init__(self, in_channels: int, out_channels: int, channels: list[int], strides: list[int],
                 num_res_units: int = 1, norm: str = "batch") -> None:
        super().__init__()
        if num_res_units != 1 or norm != "batch" or len(strides) != len(channels) - 1 or len(channels) < 2:
            raise ValueError(f"unsupported U-Net: channels {channels}, strides {strides}, {num_res_units} residual "
                             f"units, {norm} norm (this one: 1 residual unit, batch norm)")
        self.model = level(in_channels, out_channels, list(channels), list(strides), True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
