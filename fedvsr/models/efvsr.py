"""EFVSR: a compact early-fusion VSR network, the platform's default model.

It is deliberately small so that a federated experiment runs on a laptop CPU in minutes:
the ``num_frames`` LR frames are stacked on the channel axis (early fusion, as in VESPCN's
fusion stage), passed through EDSR-style residual blocks, upsampled with pixel shuffle and
added to the bicubic upsampling of the centre frame. The last convolution starts at zero,
so an untrained EFVSR is exactly bicubic upsampling and training only has to learn the
residual.
"""

from __future__ import annotations

import torch
from torch import nn

from fedvsr.models.base import VSRModel
from fedvsr.models.blocks import PixelShuffleUpsampler, ResidualBlock, upsample_like_bicubic
from fedvsr.models.registry import register_model


@register_model(
    "efvsr",
    presets={
        "tiny": {"num_frames": 3, "channels": 16, "blocks": 2},
        "small": {"num_frames": 3, "channels": 32, "blocks": 4},
        "base": {"num_frames": 5, "channels": 64, "blocks": 10},
    },
    description="compact early-fusion residual VSR net (default model)",
)
class EFVSR(VSRModel):
    """Early-fusion residual VSR network predicting the centre frame."""

    center_output = True

    def __init__(
        self, num_frames: int = 3, channels: int = 32, blocks: int = 4, scale: int = 4, in_channels: int = 3
    ) -> None:
        super().__init__()
        if num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd and >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.scale = scale
        self.head = nn.Conv2d(in_channels * num_frames, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = PixelShuffleUpsampler(channels, scale)
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, t, c, h, w) -> (b, c, s*h, s*w)``, the restored centre frame."""
        self.check_input(lr)
        b, t, c, h, w = lr.shape
        # fusion
        feat = self.head(lr.reshape(b, t * c, h, w))
        # refinement
        feat = feat + self.body_tail(self.body(feat))
        # reconstruction
        residual = self.tail(self.upsample(feat))
        return upsample_like_bicubic(lr[:, t // 2], self.scale) + residual
