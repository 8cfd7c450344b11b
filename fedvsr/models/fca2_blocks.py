"""FCA2's parts: overlapping channel grouping, colour correction (eq. 4), the cleaning network, the
spatial / channel coding networks, the flow guidance, and the frame-compression autoencoder built from them.

Paper: FCA2, arXiv:2506.11545 Sec. III (eqs. 2-4, Fig. 5); where it is silent, the authors' public code
(``handsomewzy/FCA2``, ``proposedGAE_arch.py`` / ``FCA2_arch.py``) settles it, as noted below.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedvsr.models.blocks import ResidualBlock
from fedvsr.models.spynet import SPYNET_CHANNELS, SpyNet, flow_warp

COLOR_PLACEMENTS = ("decoder", "encoder", "both", "none")
#: what the last group does when ``K * (S - O) + O`` overruns the ``C*N`` channels (see :func:`group_channels`)
GROUP_FITS = ("pad", "shift")


# ---------------------------------------------------------------- grouping (eq. 3)
def check_grouping(total: int, group_size: int, overlap: int) -> None:
    """Reject a (group size S, overlap O) pair that cannot group ``total = C*N`` channels (a ValueError that
    names both keys and what is allowed)."""
    s, o = int(group_size), int(overlap)
    if s < 1:
        raise ValueError(f"group_size = {s} must be >= 1 (FCA2 paper: 9)")
    if o < 0:
        raise ValueError(f"overlap = {o} must be >= 0 (FCA2 paper: 3)")
    if o >= s:
        raise ValueError(f"overlap = {o} must be smaller than group_size = {s}: allowed 0 <= overlap <= {s - 1}")
    if s > total:
        raise ValueError(
            f"group_size = {s} is larger than the {total} stacked channels (in_channels x num_frames); "
            f"allowed: 1 <= group_size <= {total}"
        )


def group_channels(total: int, group_size: int, overlap: int, fit: str = "pad") -> list[tuple[int, int]]:
    """The ``[start, end)`` channel ranges of eq. (3): ``K = ceil((C*N - O) / (S - O))`` groups of ``S``
    channels with stride ``S - O``. ``group_channels(21, 9, 3) == [(0, 9), (6, 15), (12, 21)]``: an exact fit,
    ``K * (S - O) + O == C*N``. When the channels do not divide, the paper does not say what happens; ``fit``:

    * ``pad`` (default): eq. (3) read literally, every group at its stride; the last one runs past channel
      ``C*N`` into zero channels (:class:`FrameAutoencoder` pads the stack with zeros up to ``K * (S - O) + O``
      and its decoder drops them), so neighbouring groups share exactly O channels and the O = 0 rows of
      Table VI are overlap-free: (6, 0) on 21 channels gives [0, 6), [6, 12), [12, 18), [18, 24).
    * ``shift``: the last group is shifted back to end at the last channel, [15, 21) instead of [18, 24),
      which shares 3 channels with its neighbour (O = 0 is then not overlap-free).
    """
    check_grouping(total, group_size, overlap)
    if fit not in GROUP_FITS:
        raise ValueError(f"group_fit must be one of {', '.join(GROUP_FITS)}, got {fit!r}")
    s, o = int(group_size), int(overlap)
    k = max(1, math.ceil((total - o) / (s - o)))
    groups = []
    for g in range(k):
        start = (s - o) * g
        if start + s > total and fit == "shift":
            start = total - s
        groups.append((start, start + s))
    return groups


def channel_counts(groups: list[tuple[int, int]], total: int) -> torch.Tensor:
    """How many groups encode each of the ``total`` channels (the decoder's frame-averaging divisor; with
    ``pad`` grouping, ``total`` counts the zero channels too)."""
    counts = torch.zeros(total)
    for start, end in groups:
        counts[start:end] += 1
    return counts


# ---------------------------------------------------------------- colour correction (eq. 4)
def color_correct(out: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Eq. (4): ``(out - mu_out) / sigma_out * sigma_ref + mu_ref`` per sample and channel over (h, w); ``out``
    and ``ref`` are ``(..., c, h, w)`` of any two sizes; ``sigma_out`` is clamped to at least ``eps``."""
    mu_o = out.mean(dim=(-2, -1), keepdim=True)
    sd_o = out.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(eps)
    mu_r = ref.mean(dim=(-2, -1), keepdim=True)
    sd_r = ref.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (out - mu_o) / sd_o * sd_r + mu_r


# ---------------------------------------------------------------- networks
class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (global average pool, 1x1 down by ``reduction``, ReLU, 1x1 up,
    sigmoid, rescale)."""

    def __init__(self, channels: int, reduction: int = 3) -> None:
        super().__init__()
        mid = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class SpatialChannelBlock(nn.Module):
    """Spatial coding (two 3x3 convs, residual) then channel coding (two 1x1 convs and channel attention,
    residual); the residuals scaled by ``res_scale`` (0.1, the authors' code)."""

    def __init__(self, channels: int, res_scale: float = 0.1) -> None:
        super().__init__()
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.01, True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.channel = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.LeakyReLU(0.01, True),
            nn.Conv2d(channels, channels, 1),
            ChannelAttention(channels),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.res_scale * self.spatial(x)
        return x + self.res_scale * self.channel(x)


class CodingNet(nn.Module):
    """``in -> out`` channels at the same resolution: 3x3 head, ``blocks`` spatial/channel blocks with a long
    skip, 3x3 tail (the encoder maps a group of S channels to one frame, the decoder back)."""

    def __init__(self, in_channels: int, out_channels: int, features: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.body = nn.Sequential(*[SpatialChannelBlock(features) for _ in range(blocks)])
        self.tail = nn.Conv2d(features, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        return self.tail(y + self.body(y))


class CleaningNet(nn.Module):
    """Sec. III-C1: residual blocks predicting a residue added to each frame, run ``passes`` times (3)."""

    def __init__(self, in_channels: int, features: int, blocks: int, passes: int = 3) -> None:
        super().__init__()
        self.passes = int(passes)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, features, 3, padding=1),
            nn.LeakyReLU(0.1, True),
            *[ResidualBlock(features) for _ in range(blocks)],
            nn.Conv2d(features, in_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, t, c, h, w) -> (b, t, c, h, w)``."""
        b, t, c, h, w = x.shape
        y = x.reshape(b * t, c, h, w)
        for _ in range(self.passes):
            y = y + self.body(y)
        return y.view(b, t, c, h, w)


class FlowGuidance(nn.Module):
    """Sec. III-C2's optical-flow guidance, as the authors' code does it: SpyNet flows between neighbouring
    frames; a recurrent pass carries a frame-sized state, warped by the flow to each next frame, concatenated
    with that frame and refined by a conv + residual blocks, so each frame's channels carry motion-aligned
    information from the frames before it. ``(b, n, c, h, w) -> (b, n, c, h, w)``."""

    def __init__(
        self,
        channels: int,
        blocks: int,
        spynet_weights: str = "",
        spynet_channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS,
    ) -> None:
        super().__init__()
        self.spynet = SpyNet(spynet_weights, spynet_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, True),
            *[ResidualBlock(channels) for _ in range(blocks)],
        )

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        b, n, c, h, w = x.shape
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            flows = self.spynet(x[:, 1:].reshape(-1, c, h, w), x[:, :-1].reshape(-1, c, h, w)).view(b, n - 1, 2, h, w)
        state = x.new_zeros(b, c, h, w)
        outs = []
        for i in range(n):
            if i > 0:
                state = flow_warp(state, flows[:, i - 1].permute(0, 2, 3, 1))
            state = self.fuse(torch.cat([x[:, i], state], dim=1))
            outs.append(state)
        return torch.stack(outs, dim=1)


class FrameAutoencoder(nn.Module):
    """The frame-compression autoencoder: ``encode`` turns N frames of C channels into K compressed frames of
    C channels (one per channel group); ``decode`` turns K frames (at any resolution, e.g. after a backbone
    upscaled them) back into N frames, averaging channels that several groups encoded, refining, and
    colour-correcting each frame against its reference (eq. 4).

    Switches (Tables III, VII): ``grouping=False`` compresses all C*N channels to K*C in one step (one
    encoder / decoder over everything); ``flow_guidance=False`` drops SpyNet and the recurrent fusion;
    ``color_correction`` in ``decoder`` (default, the paper's), ``encoder``, ``both``, ``none``.
    ``group_fit``: ``pad`` (default) or ``shift``, what the last group does when the channels do not divide
    (:func:`group_channels`).
    """

    def __init__(
        self,
        num_frames: int,
        in_channels: int = 3,
        group_size: int = 9,
        overlap: int = 3,
        features: int = 64,
        blocks: int = 3,
        flow_blocks: int = 30,
        refine_features: int = 16,
        refine_blocks: int = 2,
        grouping: bool = True,
        flow_guidance: bool = True,
        color_correction: str = "decoder",
        color_eps: float = 1e-5,
        spynet_weights: str = "",
        spynet_channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS,
        group_fit: str = "pad",
    ) -> None:
        super().__init__()
        if color_correction not in COLOR_PLACEMENTS:
            raise ValueError(f"color_correction must be one of {', '.join(COLOR_PLACEMENTS)}, got {color_correction!r}")
        total = in_channels * num_frames
        self.num_frames, self.in_channels, self.total = int(num_frames), int(in_channels), total
        self.groups = group_channels(total, group_size, overlap, group_fit)
        self.padded = self.groups[-1][1]  # K * (S - O) + O with pad grouping (zero channels past C*N), else C*N
        self.grouping = bool(grouping)
        self.color_correction = color_correction
        self.color_eps = float(color_eps)
        k = len(self.groups)
        self.register_buffer(
            "counts", channel_counts(self.groups, self.padded) if grouping else torch.ones(total), persistent=False
        )
        self.flow = FlowGuidance(in_channels, flow_blocks, spynet_weights, spynet_channels) if flow_guidance else None
        if grouping:  # one encoder / decoder shared by every group (the authors' code)
            self.encoder = CodingNet(group_size, in_channels, features, blocks)
            self.decoder = CodingNet(in_channels, group_size, features, blocks)
        else:
            self.encoder = CodingNet(total, k * in_channels, features, blocks)
            self.decoder = CodingNet(k * in_channels, total, features, blocks)
        # the authors' code refines the averaged channels with a small residual net over all C*N of them
        self.refine = CodingNet(total, total, refine_features, refine_blocks) if refine_features > 0 else None

    @property
    def num_compressed(self) -> int:
        """K: compressed frames per clip of ``num_frames``."""
        return len(self.groups)

    def group_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The input frame at the centre of each group: ``(b, n, c, h, w) -> (b, K, c, h, w)``."""
        idx = [min(self.num_frames - 1, (s + (e - s) // 2) // self.in_channels) for s, e in self.groups]
        return x[:, idx]

    def encode(self, x: torch.Tensor, flow_frozen: bool = False) -> torch.Tensor:
        """``(b, n, c, h, w) -> (b, K, c, h, w)``."""
        b, n, c, h, w = x.shape
        feats = self.flow(x, flow_frozen) if self.flow is not None else x
        stacked = feats.reshape(b, n * c, h, w)  # eq. (2)
        if self.grouping:
            if self.padded > self.total:  # pad grouping: the last group reads zero channels past C*N
                stacked = torch.cat([stacked, stacked.new_zeros(b, self.padded - self.total, h, w)], dim=1)
            z = torch.stack([self.encoder(stacked[:, s:e]) for s, e in self.groups], dim=1)
        else:
            z = self.encoder(stacked).view(b, self.num_compressed, c, h, w)
        if self.color_correction in ("encoder", "both"):
            z = color_correct(z, self.group_reference(x), self.color_eps)
        return z

    def decode(self, z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``z: (b, K, c, H, W)``, ``ref: (b, n, c, h, w)`` (the frames that were encoded) -> ``(b, n, c, H, W)``."""
        b, k, c, hh, ww = z.shape
        if self.grouping:
            out = z.new_zeros(b, self.padded, hh, ww)
            decoded = self.decoder(z.reshape(b * k, c, hh, ww)).view(b, k, -1, hh, ww)
            for g, (s, e) in enumerate(self.groups):
                out[:, s:e] = out[:, s:e] + decoded[:, g]
            out = (out / self.counts.view(1, -1, 1, 1))[:, : self.total]  # frame averaging; the zero pad dropped
        else:
            out = self.decoder(z.reshape(b, k * c, hh, ww))
        if self.refine is not None:
            out = out + self.refine(out)
        out = out.view(b, self.num_frames, c, hh, ww)
        if self.color_correction in ("decoder", "both"):
            out = color_correct(out, ref, self.color_eps)
        return out
