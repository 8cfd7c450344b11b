"""BasicVSR++: second-order grid propagation with flow-guided deformable alignment.

K. C. K. Chan, S. Zhou, X. Xu, C. C. Loy, "BasicVSR++: Improving Video Super-Resolution with Enhanced
Propagation and Alignment", CVPR 2022 (arXiv:2104.13371); FCA2 (arXiv:2506.11545, Table I) uses it as a
backbone and as a baseline. The architecture is BasicSR's ``basicvsrpp_arch.py``: per-frame features (a conv
and 5 residual blocks), four propagation branches (backward, forward, backward, forward), each frame's
branch input being the features of every earlier branch; second-order propagation (the hidden states of
the last two frames, the second aligned by the composed flow); alignment by a modulated deformable
convolution whose offsets are residues (bounded by ``max_residue_magnitude`` = 10 through tanh) added to
the SpyNet flow; reconstruction from the concatenated branches, pixel-shuffle upsampling and a bilinear
skip. Every input frame is restored.

Size: ``paper`` (64 channels, 7 blocks per branch, 16 deformable groups) has 7.32 M parameters; BasicVSR++
and FCA2's Table I list 7.3 M (+0.3 %).

Readings: torchvision is not a dependency, so the modulated deformable convolution (DCNv2) is written
with ``grid_sample`` (one bilinear sample per kernel tap and deformable group, zero outside the frame,
then one matrix product): the same function as mmcv's, slower. Offsets are laid out as mmcv's (per
group, per tap, (dy, dx)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedvsr.models.basicvsr import Reconstruction, RecurrentVSR, ResidualBlocksWithInputConv, neighbour_flows
from fedvsr.models.registry import register_model
from fedvsr.models.spynet import SPYNET_CHANNELS, SpyNet, flow_warp

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    deform_groups: int,
) -> torch.Tensor:
    """DCNv2 with a ``k x k`` kernel, stride 1, padding ``k // 2``: ``x (n, cin, h, w)``, ``offset (n, 2*g*k*k,
    h, w)`` as (group, tap, (dy, dx)), ``mask (n, g*k*k, h, w)`` -> ``(n, cout, h, w)``."""
    n, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    g, taps = deform_groups, kh * kw
    cg = cin // g
    off = offset.view(n * g, taps, 2, h, w)
    msk = mask.view(n * g, taps, 1, h, w)
    xg = x.reshape(n * g, cg, h, w)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    cols = []
    for k in range(taps):
        dy, dx = k // kw - kh // 2, k % kw - kw // 2
        py = ys + dy + off[:, k, 0]
        px = xs + dx + off[:, k, 1]
        grid = torch.stack((2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0), dim=-1)
        sampled = F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        cols.append(sampled * msk[:, k])
    col = torch.stack(cols, dim=2).view(n, cin * taps, h * w)  # channel index c * taps + k, as weight's
    out = torch.matmul(weight.view(cout, cin * taps), col).view(n, cout, h, w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class SecondOrderDeformableAlignment(nn.Module):
    """Aligns ``[h_{i-1}, h_{i-2}]`` to frame i: offsets and masks from ``[warped h_{i-1}, f_i, warped h_{i-2},
    flow_1, flow_2]``; the offsets are ``max_residue_magnitude * tanh(.)`` residues on top of the flows."""

    def __init__(self, channels: int, deform_groups: int = 16, max_residue_magnitude: float = 10.0) -> None:
        super().__init__()
        if (2 * channels) % deform_groups:
            raise ValueError(f"2 * channels = {2 * channels} must be divisible by deform_groups = {deform_groups}")
        self.deform_groups = deform_groups
        self.max_residue_magnitude = max_residue_magnitude
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 27 * deform_groups, 3, padding=1),
        )
        nn.init.zeros_(self.conv_offset[-1].weight)  # start from pure flow alignment
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, x: torch.Tensor, extra: torch.Tensor, flow_1: torch.Tensor, flow_2: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(torch.cat([extra, flow_1, flow_2], dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        offset_1, offset_2 = torch.chunk(offset, 2, dim=1)
        offset_1 = offset_1 + flow_1.flip(1).repeat(1, offset_1.size(1) // 2, 1, 1)
        offset_2 = offset_2 + flow_2.flip(1).repeat(1, offset_2.size(1) // 2, 1, 1)
        offset = torch.cat([offset_1, offset_2], dim=1)
        return modulated_deform_conv2d(x, offset, torch.sigmoid(mask), self.weight, self.bias, self.deform_groups)


@register_model(
    "basicvsr++",
    presets={
        "paper": {"channels": 64, "blocks": 7},
        "small": {"channels": 32, "blocks": 2, "deform_groups": 8},
        "tiny": {"channels": 8, "blocks": 1, "deform_groups": 2, "num_frames": 3, "spynet_channels": [4, 8, 4, 2]},
    },
    description="BasicVSR++: second-order grid propagation, flow-guided deformable alignment",
)
class BasicVSRPlusPlus(RecurrentVSR):
    """BasicVSR++: four second-order propagation branches aligned by flow-guided deformable convolution."""

    def __init__(
        self,
        channels: int = 64,
        blocks: int = 7,
        num_frames: int = 7,
        scale: int = 4,
        in_channels: int = 3,
        deform_groups: int = 16,
        max_residue_magnitude: float = 10.0,
        spynet_weights: str = "",
        spynet_frozen_iters: int = 5000,
        spynet_channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS,
    ) -> None:
        super().__init__()
        self._init_recurrent(
            channels,
            blocks,
            num_frames,
            scale,
            in_channels,
            spynet_weights,
            spynet_frozen_iters,
            spynet_channels,
            deform_groups=deform_groups,
        )
        self.feat_extract = ResidualBlocksWithInputConv(in_channels, channels, 5)
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, name in enumerate(BRANCHES):
            self.deform_align[name] = SecondOrderDeformableAlignment(channels, deform_groups, max_residue_magnitude)
            self.backbone[name] = ResidualBlocksWithInputConv((2 + i) * channels, channels, blocks)
        self.reconstruction_trunk = ResidualBlocksWithInputConv(5 * channels, channels, 5)
        self.reconstruction = Reconstruction(channels, scale, in_channels)

    def propagate(self, feats: dict[str, list[torch.Tensor]], flows: torch.Tensor, name: str) -> None:
        """One branch over every frame (appends ``feats[name]``, in frame order)."""
        b, tf, _, h, w = flows.shape
        frame_idx = list(range(tf + 1))
        flow_idx = list(range(-1, tf))
        if name.startswith("backward"):
            frame_idx = frame_idx[::-1]
            flow_idx = frame_idx
        feat_prop = flows.new_zeros(b, self.channels, h, w)
        out: list[torch.Tensor] = []
        for i, idx in enumerate(frame_idx):
            feat_current = feats["spatial"][idx]
            if i > 0:
                flow_n1 = flows[:, flow_idx[i]]
                cond_n1 = flow_warp(feat_prop, flow_n1.permute(0, 2, 3, 1))
                feat_n2 = torch.zeros_like(feat_prop)
                flow_n2 = torch.zeros_like(flow_n1)
                cond_n2 = torch.zeros_like(cond_n1)
                if i > 1:  # second order: h_{i-2}, aligned by the composed flow
                    feat_n2 = out[-2]
                    flow_n2 = flows[:, flow_idx[i - 1]]
                    flow_n2 = flow_n1 + flow_warp(flow_n2, flow_n1.permute(0, 2, 3, 1))
                    cond_n2 = flow_warp(feat_n2, flow_n2.permute(0, 2, 3, 1))
                cond = torch.cat([cond_n1, feat_current, cond_n2], dim=1)
                feat_prop = self.deform_align[name](torch.cat([feat_prop, feat_n2], dim=1), cond, flow_n1, flow_n2)
            earlier = [feats[k][idx] for k in feats if k not in ("spatial", name)]
            feat_prop = feat_prop + self.backbone[name](torch.cat([feat_current, *earlier, feat_prop], dim=1))
            out.append(feat_prop)
        feats[name] = out[::-1] if name.startswith("backward") else out

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, t, c, h, w) -> (b, t, c, s*h, s*w)``, any ``t >= 2``."""
        self.check_clip(lr)
        b, t, c, h, w = lr.shape
        # features
        spatial = self.feat_extract(lr.reshape(-1, c, h, w)).view(b, t, -1, h, w)
        feats: dict[str, list[torch.Tensor]] = {"spatial": [spatial[:, i] for i in range(t)]}
        # alignment flows
        flows_forward, flows_backward = neighbour_flows(self.spynet, lr, self.flow_frozen)
        # propagation
        for name in BRANCHES:
            feats[name] = []
            self.propagate(feats, flows_backward if name.startswith("backward") else flows_forward, name)
        # reconstruction
        outs = []
        for i in range(t):
            hr = torch.cat([feats[k][i] for k in feats], dim=1)
            hr = self.reconstruction(self.reconstruction_trunk(hr))
            outs.append(hr + F.interpolate(lr[:, i], scale_factor=self.scale, mode="bilinear", align_corners=False))
        return torch.stack(outs, dim=1)


__all__ = ["BasicVSRPlusPlus", "SecondOrderDeformableAlignment", "SpyNet", "modulated_deform_conv2d"]
