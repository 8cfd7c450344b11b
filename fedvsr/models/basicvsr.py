"""BasicVSR: bidirectional recurrent propagation with SpyNet flow alignment.

K. C. K. Chan, X. Wang, K. Yu, C. Dong, C. C. Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021 (arXiv:2012.02181); FCA2 (arXiv:2506.11545, Table I) uses it as a
backbone and as a baseline. The architecture is BasicSR's ``basicvsr_arch.py``: SpyNet flows between
neighbouring frames; a backward and a forward branch, each ``[frame, warped hidden state] -> conv ->
residual blocks``; a 1x1 fusion of the two branches per frame; pixel-shuffle upsampling; and the bilinear
upsampled frame added as a skip. Every input frame is restored (sequence in, sequence out).

Size: ``paper`` (64 channels, 30 residual blocks per branch) has 6.29 M parameters, BasicVSR's own count
(6.3 M); FCA2's Table I lists 5.9 M for it (+6.6 %, inside the 10 % the task allows; the paper does not say
what it left out). SpyNet (1.44 M) trains from scratch, or loads a local BasicSR-format file
(``spynet_weights``), and gets no gradient for its first ``spynet_frozen_iters`` iterations (BasicVSR and
FCA2: 5,000); see :mod:`fedvsr.models.spynet`.

Readings: BasicSR's upsampler is fixed at x4 (two x2 pixel shuffles); ``scale`` 2 keeps one, 3 uses one x3
shuffle. ``num_frames`` is the training clip length only: the recurrence runs on any number of frames >= 2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedvsr.models.base import StepHooks, VSRModel
from fedvsr.models.blocks import ResidualBlock
from fedvsr.models.registry import register_model
from fedvsr.models.spynet import SPYNET_CHANNELS, FlowFreeze, SpyNet, flow_warp


class ResidualBlocksWithInputConv(nn.Module):
    """``conv3x3(in -> out) -> LeakyReLU(0.1) -> blocks x ResidualBlock(out)`` (BasicSR's)."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            *[ResidualBlock(out_channels) for _ in range(blocks)],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Reconstruction(nn.Module):
    """BasicSR's reconstruction tail: pixel-shuffle upsampling to x``scale``, conv_hr, conv_last (64 channels
    after the last shuffle, as BasicVSR / BasicVSR++; fewer in narrower presets), to ``out_channels``."""

    def __init__(self, channels: int, scale: int, out_channels: int = 3) -> None:
        super().__init__()
        hr_channels = min(64, channels)
        if scale == 4:
            steps = [(channels, channels, 2), (channels, hr_channels, 2)]
        elif scale in (2, 3):
            steps = [(channels, hr_channels, scale)]
        elif scale == 1:
            steps = [(channels, hr_channels, 1)]
        else:
            raise ValueError(f"scale must be 1, 2, 3 or 4, got {scale}")
        layers: list[nn.Module] = []
        for cin, cout, s in steps:
            layers += [nn.Conv2d(cin, cout * s * s, 3, padding=1), nn.PixelShuffle(s), nn.LeakyReLU(0.1, True)]
        self.upsample = nn.Sequential(*layers)
        self.conv_hr = nn.Conv2d(hr_channels, hr_channels, 3, padding=1)
        self.conv_last = nn.Conv2d(hr_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(F.leaky_relu(self.conv_hr(self.upsample(x)), 0.1))


def neighbour_flows(spynet: SpyNet, x: torch.Tensor, frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: (b, t, c, h, w) -> (forward, backward)``, each ``(b, t-1, 2, h, w)``: ``backward[:, i]`` is the flow
    from frame i to frame i+1, ``forward[:, i]`` from frame i+1 to frame i (BasicSR's ``get_flow``)."""
    b, t, c, h, w = x.shape
    x1 = x[:, :-1].reshape(-1, c, h, w)
    x2 = x[:, 1:].reshape(-1, c, h, w)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        backward = spynet(x1, x2).view(b, t - 1, 2, h, w)
        forward = spynet(x2, x1).view(b, t - 1, 2, h, w)
    return forward, backward


class RecurrentVSR(FlowFreeze, VSRModel):
    """What BasicVSR and BasicVSR++ share: every frame restored, any clip length >= 2, a SpyNet frozen for
    the first iterations (the iteration counter moves once per training step)."""

    center_output = False
    rotation_safe = True

    def _init_recurrent(
        self,
        channels: int,
        blocks: int,
        num_frames: int,
        scale: int,
        in_channels: int,
        spynet_weights: str,
        spynet_frozen_iters: int,
        spynet_channels,
        **sizes: int,
    ) -> None:
        """The constructor checks and parts both families share: sizes, scale, the frozen SpyNet."""
        _check_sizes(channels=channels, num_frames=num_frames, in_channels=in_channels, **sizes)
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        self.num_frames, self.scale, self.in_channels = int(num_frames), int(scale), int(in_channels)
        self.channels = int(channels)
        self.init_flow_freeze(spynet_frozen_iters)
        self.spynet = SpyNet(spynet_weights, spynet_channels)

    def check_clip(self, lr: torch.Tensor) -> None:
        if lr.dim() != 5 or lr.shape[1] < 2 or lr.shape[2] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects lr of shape (b, t >= 2, {self.in_channels}, h, w), "
                f"got {tuple(lr.shape)}"
            )

    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], hooks: StepHooks) -> torch.Tensor:
        loss = super().training_step(batch, optimizers, hooks)
        self.count_iteration()
        return loss


def _check_sizes(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@register_model(
    "basicvsr",
    presets={
        "paper": {"channels": 64, "blocks": 30},
        "small": {"channels": 32, "blocks": 5},
        "tiny": {"channels": 8, "blocks": 1, "num_frames": 3, "spynet_channels": [4, 8, 4, 2]},
    },
    description="BasicVSR: bidirectional recurrent propagation with SpyNet alignment (every frame restored)",
)
class BasicVSR(RecurrentVSR):
    """BasicVSR: backward and forward recurrent branches aligned by SpyNet flow, fused per frame, upsampled."""

    def __init__(
        self,
        channels: int = 64,
        blocks: int = 30,
        num_frames: int = 7,
        scale: int = 4,
        in_channels: int = 3,
        spynet_weights: str = "",
        spynet_frozen_iters: int = 5000,
        spynet_channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS,
    ) -> None:
        super().__init__()
        # checks, and the SpyNet alignment
        self._init_recurrent(
            channels, blocks, num_frames, scale, in_channels, spynet_weights, spynet_frozen_iters, spynet_channels
        )
        # propagation
        self.backward_trunk = ResidualBlocksWithInputConv(channels + in_channels, channels, blocks)
        self.forward_trunk = ResidualBlocksWithInputConv(channels + in_channels, channels, blocks)
        # reconstruction
        self.fusion = nn.Conv2d(channels * 2, channels, 1)
        self.reconstruction = Reconstruction(channels, scale, in_channels)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, t, c, h, w) -> (b, t, c, s*h, s*w)``, any ``t >= 2``."""
        self.check_clip(lr)
        b, t, c, h, w = lr.shape
        flows_forward, flows_backward = neighbour_flows(self.spynet, lr, self.flow_frozen)
        # backward propagation
        back: list[torch.Tensor] = [lr.new_zeros(0)] * t
        feat = lr.new_zeros(b, self.channels, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                feat = flow_warp(feat, flows_backward[:, i].permute(0, 2, 3, 1))
            feat = self.backward_trunk(torch.cat([lr[:, i], feat], dim=1))
            back[i] = feat
        # forward propagation and reconstruction
        outs = []
        feat = lr.new_zeros(b, self.channels, h, w)
        for i in range(t):
            if i > 0:
                feat = flow_warp(feat, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            feat = self.forward_trunk(torch.cat([lr[:, i], feat], dim=1))
            out = F.leaky_relu(self.fusion(torch.cat([back[i], feat], dim=1)), 0.1)
            out = self.reconstruction(out)
            outs.append(out + F.interpolate(lr[:, i], scale_factor=self.scale, mode="bilinear", align_corners=False))
        return torch.stack(outs, dim=1)
