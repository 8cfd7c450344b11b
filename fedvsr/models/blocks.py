"""Building blocks shared by several model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, added to the input (EDSR-style, no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x), inplace=True))


class PixelShuffleUpsampler(nn.Module):
    """Upsample by ``scale`` (a power of 2, or 3) with conv + pixel shuffle steps."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
                layers += [nn.LeakyReLU(0.1, inplace=True)]
        elif scale == 3:
            layers += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
            layers += [nn.LeakyReLU(0.1, inplace=True)]
        else:
            raise ValueError(f"scale must be a power of 2 or 3, got {scale}")
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def upsample_like_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling ``(n, c, h, w) -> (n, c, s*h, s*w)`` used as the skip path of a residual net."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
