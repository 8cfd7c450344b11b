"""Building blocks of VSRGAN (arXiv:2505.10589): the concatenation-based residual block, the RRDB,
the 3D dot-product non-local block, the two generators and the U-Net discriminator.

Tensors are ``(n, c, h, w)`` for the per-frame 2-D parts and ``(b, t, c, h, w)`` for the parts that
see the whole clip (the non-local block, the generators). See ``fedvsr/models/vsrgan.py`` for the
readings of the paper behind each choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(negative_slope: float) -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope, inplace=True)


class ConcatResidualBlock(nn.Module):
    """Residual block with concatenation instead of addition (paper Sec. 1.1, 2.1, eq. 6):
    ``y = Conv1x1([x, F(x)])`` with ``F = (Conv3x3 -> LReLU) x convs``; the 1x1 convolution learns how
    to mix the skip path and the convolved path."""

    def __init__(self, channels: int, convs: int = 2, negative_slope: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), lrelu(negative_slope)]
        self.body = nn.Sequential(*layers)
        self.fuse = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, self.body(x)], dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block as the paper builds it (Sec. 2.1, eq. 8): three concatenation-based
    residual blocks in series with a skip connection around them, ``x + beta * RB3(RB2(RB1(x)))``."""

    def __init__(
        self, channels: int, convs: int = 2, negative_slope: float = 0.2, res_scale: float = 0.2, blocks: int = 3
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ConcatResidualBlock(channels, convs, negative_slope) for _ in range(blocks)])
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class NonLocalBlock3D(nn.Module):
    """Dot-product non-local block over (T, H, W) (Wang et al. 2018; paper eqs. 9-15).

    ``z_i = W_z y_i + x_i`` with ``y_i = (1/N) sum_j (theta(x_i)^T phi(x_j)) g(x_j)`` over all N positions j
    of the clip; theta, phi, g and W_z are 1x1 convolutions (theta, phi, g: c -> c / reduction). Without
    a softmax the sum is associative, so we compute ``y_i = theta(x_i)^T M`` with the (d x d) matrix
    ``M = (1/N) sum_j phi(x_j) g(x_j)^T``: the same numbers as the N x N affinity matrix, with memory and
    time linear in N, so whole frames (and the second pass of the x4 cascade) fit.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (b, t, c, h, w) -> (b, t, c, h, w)``; every output position sees every input position."""
        b, t, c, h, w = x.shape
        flat = x.reshape(b * t, c, h, w)

        def positions(conv: nn.Conv2d) -> torch.Tensor:  # (b, N, d) with N = t*h*w
            y = conv(flat)
            return y.view(b, t, -1, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, -1)

        theta, phi, g = positions(self.theta), positions(self.phi), positions(self.g)
        m = phi.transpose(1, 2) @ g / phi.shape[1]  # (b, d, d): eq. (11) C(x) = N
        y = theta @ m  # (b, N, d)
        y = y.view(b, t, h * w, -1).permute(0, 1, 3, 2).reshape(b * t, -1, h, w)
        return x + self.w_z(y).view(b, t, c, h, w)


class Generator(nn.Module):
    """One x``step_scale`` pass of a VSRGAN generator, in the paper's four parts (Sec. 2.1):

    1. channel expansion (3x3 conv, LReLU, per frame) and temporal feature extraction (3D non-local block);
    2. spatial feature extraction: ``blocks`` RRDBs (``kind="rrdb"``) or concatenation-based residual blocks
       (``kind="residual"``), per frame;
    3. reconstruction: a 3x3 conv and the long skip from part 1;
    4. upsampling (3x3 conv + PixelShuffle(2) + LReLU per factor 2) and channel compression (3x3 conv,
       LReLU, 3x3 conv to ``out_channels``).

    With ``image_skip`` the output is added to the bicubic upsampling of the input and the last conv
    starts at zero, so an untrained generator is exactly bicubic upsampling.
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        blocks: int,
        step_scale: int = 2,
        convs: int = 2,
        negative_slope: float = 0.2,
        res_scale: float = 0.2,
        nonlocal_reduction: int = 2,
        image_skip: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if kind not in ("rrdb", "residual"):
            raise ValueError(f"generator must be 'rrdb' or 'residual', got {kind!r}")
        if step_scale < 1 or step_scale & (step_scale - 1):
            raise ValueError(f"the generator's upsampling factor must be a power of 2, got {step_scale}")
        self.step_scale = step_scale
        self.image_skip = image_skip
        # 1. channel expansion + temporal feature extraction
        self.expand = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), lrelu(negative_slope))
        self.temporal = NonLocalBlock3D(channels, nonlocal_reduction)
        # 2. spatial feature extraction
        if kind == "rrdb":
            body = [RRDB(channels, convs, negative_slope, res_scale) for _ in range(blocks)]
        else:
            body = [ConcatResidualBlock(channels, convs, negative_slope) for _ in range(blocks)]
        self.spatial = nn.Sequential(*body)
        # 3. reconstruction
        self.reconstruct = nn.Conv2d(channels, channels, 3, padding=1)
        # 4. upsampling + channel compression
        up: list[nn.Module] = []
        for _ in range(step_scale.bit_length() - 1):
            up += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), lrelu(negative_slope)]
        self.upsample = nn.Sequential(*up)
        self.compress = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            lrelu(negative_slope),
            nn.Conv2d(channels, in_channels, 3, padding=1),
        )
        if image_skip:
            nn.init.zeros_(self.compress[-1].weight)
            nn.init.zeros_(self.compress[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (b, t, c, h, w) -> (b, t, c, s*h, s*w)`` with ``s = step_scale``."""
        b, t, c, h, w = x.shape
        # 1. channel expansion, temporal feature extraction
        feat = self.expand(x.reshape(b * t, c, h, w))
        feat = self.temporal(feat.view(b, t, -1, h, w)).reshape(b * t, -1, h, w)
        # 2. spatial feature extraction, 3. reconstruction
        feat = feat + self.reconstruct(self.spatial(feat))
        # 4. upsampling, channel compression
        out = self.compress(self.upsample(feat))
        s = self.step_scale
        if self.image_skip:
            out = out + F.interpolate(x.reshape(b * t, c, h, w), scale_factor=s, mode="bicubic", align_corners=False)
        return out.view(b, t, c, s * h, s * w)


class UNetDiscriminator(nn.Module):
    """U-Net discriminator (paper Sec. 2.1, Fig. 10; Schonfeld et al. 2020): an encoder of ``depth`` stride-2
    convolutions (channels doubling, capped at 8x), a decoder of bilinear upsampling + skip concatenation +
    conv, and a per-pixel real/fake logit map. Frames are judged one by one: ``(n, c, H, W) -> (n, 1, H, W)``.
    """

    def __init__(self, channels: int = 64, depth: int = 3, negative_slope: float = 0.2, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"discriminator depth must be >= 1, got {depth}")
        widths = [channels * min(2**i, 8) for i in range(depth + 1)]
        self.act = lrelu(negative_slope)
        self.head = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(depth))
        self.up = nn.ModuleList(
            nn.Conv2d(widths[i + 1] + widths[i], widths[i], 3, padding=1) for i in reversed(range(depth))
        )
        self.tail = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1), lrelu(negative_slope), nn.Conv2d(widths[0], 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.act(self.head(x))]
        for conv in self.down:
            feats.append(self.act(conv(feats[-1])))
        y = feats.pop()
        for conv in self.up:
            skip = feats.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = self.act(conv(torch.cat([y, skip], dim=1)))
        return self.tail(y)
