"""Sub-networks of FCVSR (Zhu et al., "FCVSR: A Frequency-aware Method for Compressed Video
Super-Resolution"): MGAA alignment, MFFR refinement and the REC reconstruction module.

The model and every reading of the paper that these blocks embody are documented in
:mod:`fedvsr.models.fcvsr`; this module holds the pieces, each named after the paper.

Frequency features. A "frequency feature" ``F^ = FFT(F)`` of a real ``(n, c, h, w)`` feature is
the full, centred-at-index-0 2-D spectrum ``torch.fft.fft2(F, norm="ortho")``; convolutions act on
it through its real and imaginary parts stacked on the channel axis, ``(n, 2c, h, w)`` (the
paper counts such a feature as ``c`` channels, and so do we when reading its channel counts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """RCAN channel attention [58]: global average pool -> 1x1 conv (c -> c/r) -> ReLU -> 1x1 conv
    (c/r -> c) -> sigmoid, multiplied onto the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


def to_frequency(x: torch.Tensor) -> torch.Tensor:
    """``(n, c, h, w)`` real -> ``(n, 2c, h, w)``: real and imaginary parts of ``fft2(x)`` (ortho)."""
    spec = torch.fft.fft2(x, norm="ortho")
    return torch.cat([spec.real, spec.imag], dim=1)


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """``(n, 2c, h, w)`` stacked real/imaginary parts -> ``(n, c, h, w)`` complex."""
    real, imag = x.chunk(2, dim=1)
    return torch.complex(real, imag)


def conv_block(in_ch: int, mid_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Sequential:
    """conv(in -> mid) -> ReLU -> conv(mid -> out): the paper's convolution blocks CB1 and CB2."""
    pad = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, mid_ch, kernel_size, padding=pad),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_ch, out_ch, kernel_size, padding=pad),
    )


# ---------------------------------------------------------------------------------------------
# MGAA: motion-guided adaptive alignment (Sec. III-A)
# ---------------------------------------------------------------------------------------------


class OffsetBranch(nn.Module):
    """``Conv_n`` of eq. (6): two convolutions with kernel size ``2n+1``, a PReLU between them and
    channel attention, mapping the difference feature ``F^_d`` (c complex channels) to one
    frequency-domain motion field (2 complex channels)."""

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        k = 2 * n + 1
        self.body = nn.Sequential(
            nn.Conv2d(2 * channels, 4, k, padding=k // 2),
            nn.PReLU(4),
            nn.Conv2d(4, 4, k, padding=k // 2),
            ChannelAttention(4),
        )

    def forward(self, diff: torch.Tensor) -> torch.Tensor:
        return self.body(diff)


class MotionEstimator(nn.Module):
    """ME of eqs. (2), (5), (6): N motion offsets between a reference and a neighbouring feature,
    estimated in the frequency domain.

    ``F^_d = F^_ref - F^_nbr + CB1([F^_ref, F^_nbr])``; branch n gives
    ``o^_n = Conv_n(F^_d) (*) CB2(F^_ref)`` where ``(*)`` is correlation, which in the frequency
    domain is the product with the complex conjugate; ``o_n = Re(IFFT(o^_n))`` is a
    ``(dx, dy)`` field in pixels.
    """

    def __init__(self, channels: int, num_offsets: int) -> None:
        super().__init__()
        c = channels
        # CB1: 3x3 conv to 2c channels, ReLU, 3x3 conv to c channels (complex channels: x2 real)
        self.cb1 = conv_block(4 * c, 4 * c, 2 * c)
        # CB2: 3x3 conv to c channels, ReLU, 3x3 conv to 2 channels (complex)
        self.cb2 = conv_block(2 * c, 2 * c, 4)
        self.branches = nn.ModuleList(OffsetBranch(c, n) for n in range(1, num_offsets + 1))
        # the motion fields start at exactly zero (plain DCN practice: offset layers start at 0)
        nn.init.zeros_(self.cb2[-1].weight)
        nn.init.zeros_(self.cb2[-1].bias)

    def forward(self, ref_freq: torch.Tensor, nbr_freq: torch.Tensor) -> list[torch.Tensor]:
        """``ref_freq, nbr_freq: (n, 2c, h, w)`` frequency features -> N offsets ``(n, 2, h, w)``.

        ``ref_freq`` may hold fewer samples than ``nbr_freq`` (the two directions of an MGAA share
        one reference); it is then repeated.
        """
        reps = nbr_freq.shape[0] // ref_freq.shape[0]
        guide = as_complex(self.cb2(ref_freq)).conj()
        ref_freq = ref_freq.repeat(reps, 1, 1, 1)
        guide = guide.repeat(reps, 1, 1, 1)
        diff = ref_freq - nbr_freq + self.cb1(torch.cat([ref_freq, nbr_freq], dim=1))
        offsets = []
        for branch in self.branches:
            corr = as_complex(branch(diff)) * guide
            offsets.append(torch.fft.ifft2(corr, norm="ortho").real)
        return offsets


class KernelPredictor(nn.Module):
    """KP of eq. (3): a 3x3 and a 1x1 convolution predicting, per pixel, N pairs of 1-D kernels
    (``K^h_n``: 1 x k and ``K^v_n``: k x 1, one per channel), a ``2Nck``-dim vector.

    It starts as the identity (centre tap 1, others 0) so that an untrained MGAC layer is a
    plain warp.
    """

    def __init__(self, channels: int, num_offsets: int, kernel_size: int) -> None:
        super().__init__()
        self.channels, self.num_offsets, self.kernel_size = channels, num_offsets, kernel_size
        out = 2 * num_offsets * channels * kernel_size
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, out, 1)
        nn.init.zeros_(self.conv1.weight)
        with torch.no_grad():
            bias = torch.zeros(num_offsets, 2, channels, kernel_size)
            bias[..., kernel_size // 2] = 1.0
            self.conv1.bias.copy_(bias.flatten())

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        """``ref: (n, c, h, w) -> (n, N, 2, c, k, h, w)``; index 2 is (horizontal, vertical)."""
        n, _, h, w = ref.shape
        kernels = self.conv1(self.conv3(ref))
        return kernels.view(n, self.num_offsets, 2, self.channels, self.kernel_size, h, w)


_GRIDS: dict[tuple, torch.Tensor] = {}


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (h, w, device, dtype)
    if key not in _GRIDS:
        # a normal tensor even when first built under inference_mode, so training can reuse it
        with torch.inference_mode(False):
            ys, xs = torch.meshgrid(
                torch.arange(h, device=device, dtype=dtype),
                torch.arange(w, device=device, dtype=dtype),
                indexing="ij",
            )
            _GRIDS[key] = torch.stack([xs, ys], dim=-1)  # (h, w, 2) in (x, y) order
    return _GRIDS[key]


def spatial_sampling(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``S(x, o)`` of eq. (7): bilinear sampling of ``x: (n, c, h, w)`` at ``p + o(p)``, with
    ``offset: (n, 2, h, w)`` holding ``(dx, dy)`` in pixels (``torch.nn.functional.grid_sample``)."""
    _, _, h, w = x.shape
    pos = _base_grid(h, w, x.device, x.dtype) + offset.permute(0, 2, 3, 1)
    gx = 2.0 * pos[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * pos[..., 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def adaptive_conv_1d(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Spatially-adaptive, channel-wise 1-D convolution along ``dim`` (-1: horizontal, -2:
    vertical) with a per-pixel kernel ``(n, c, k, h, w)``; borders are replicated."""
    k = kernel.shape[2]
    pad = k // 2
    padded = F.pad(x, (pad, pad, 0, 0) if dim == -1 else (0, 0, pad, pad), mode="replicate")
    patches = padded.unfold(dim, k, 1)  # (n, c, h, w, k)
    return (patches * kernel.permute(0, 1, 3, 4, 2)).sum(-1)


def motion_guided_adaptive_conv(feat: torch.Tensor, offsets: list[torch.Tensor], kernels: torch.Tensor) -> torch.Tensor:
    """MGAC layer, eq. (7): ``a_n = S(a_{n-1}, o_n) * K^h_n * K^v_n`` for n = 1..N, ``a_0 = feat``.

    ``feat: (n, c, h, w)``, ``offsets``: N tensors ``(n, 2, h, w)``, ``kernels: (n, N, 2, c, k, h, w)``.
    """
    out = feat
    for offset, step in zip(offsets, kernels.unbind(1), strict=True):
        k_h, k_v = step.unbind(1)
        out = spatial_sampling(out, offset)
        out = adaptive_conv_1d(out, k_h, dim=-1)
        out = adaptive_conv_1d(out, k_v, dim=-2)
    return out


class MGAA(nn.Module):
    """Motion-guided adaptive alignment (Fig. 3): aligns the two outer features of a triple to the
    middle one, bidirectionally, and fuses the two aligned features with a 3x3 convolution.

    The forward set (prev, ref) and the backward set (ref, next) go through the same Motion
    Estimator; the Kernel Predictor sees only the reference, so both directions use its kernels.
    """

    def __init__(self, channels: int, num_offsets: int, kernel_size: int) -> None:
        super().__init__()
        self.motion_estimator = MotionEstimator(channels, num_offsets)
        self.kernel_predictor = KernelPredictor(channels, num_offsets, kernel_size)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, prev: torch.Tensor, ref: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """``prev, ref, nxt: (n, c, h, w) -> (n, c, h, w)``, the aligned feature of ``ref``."""
        nbrs = torch.cat([prev, nxt], dim=0)  # forward and backward direction as one batch
        offsets = self.motion_estimator(to_frequency(ref), to_frequency(nbrs))
        kernels = self.kernel_predictor(ref).repeat(2, 1, 1, 1, 1, 1, 1)
        aligned = motion_guided_adaptive_conv(nbrs, offsets, kernels)
        return self.fuse(torch.cat(aligned.chunk(2), dim=1))


# ---------------------------------------------------------------------------------------------
# MFFR: multi-frequency feature refinement (Sec. III-B)
# ---------------------------------------------------------------------------------------------


BAND_MASK_MODES = ("eq12", "difference")


def gaussian_band_masks(h: int, w: int, num_bands: int, mode: str = "difference") -> torch.Tensor:
    """The Decoupler's Q masks ``(Q, h, w)`` on a centred (fftshift-ed) spectrum, eqs. (11)-(12).

    ``d_j = j * sqrt((h/2)^2 + (w/2)^2) / Q`` and ``G_j(u, v) = exp(-((u-h/2)^2 + (v-w/2)^2) / (2 d_j^2))``
    (the centre is taken at ``(h//2, w//2)``, where fftshift puts the DC term; the same as h/2,
    w/2 for even sizes). ``mode="eq12"`` is eq. (12) as printed, ``M_j = G_j - sum_{l<j} G_l``;
    ``mode="difference"`` is ``M_j = G_j - sum_{l<j} M_l = G_j - G_{j-1}``, true band-pass masks
    that sum to ``G_Q`` (the reading of the authors' code).
    """
    if mode not in BAND_MASK_MODES:
        raise ValueError(f"band mask mode must be one of {BAND_MASK_MODES}, got {mode!r}")
    u = torch.arange(h, dtype=torch.float64).view(h, 1) - h // 2
    v = torch.arange(w, dtype=torch.float64).view(1, w) - w // 2
    dist2 = u**2 + v**2
    radius = math.sqrt((h / 2) ** 2 + (w / 2) ** 2)
    gauss = [torch.exp(-dist2 / (2 * (j * radius / num_bands) ** 2)) for j in range(1, num_bands + 1)]
    masks: list[torch.Tensor] = []
    for j, g in enumerate(gauss):
        if mode == "eq12":
            masks.append(g - sum(gauss[:j], torch.zeros_like(g)))
        else:
            masks.append(g - (gauss[j - 1] if j > 0 else 0.0))
    return torch.stack(masks).float()


class Decoupler(nn.Module):
    """Eq. (8): FFT of the feature, centred spectrum times each of the Q Gaussian masks, inverse FFT:
    ``(n, c, h, w) -> (n, Q, c, h, w)``, lowest band first. Masks are built once per
    ``(h, w, device, dtype)`` and cached.

    Computed with the real FFT: the masks are symmetric about the centre (they depend on the distance
    to it only), so each band's spectrum keeps the Hermitian symmetry of a real feature's spectrum and
    ``Re(ifft2(M * fft2(x)))`` equals ``irfft2(M_half * rfft2(x))`` with ``M_half`` the mask's
    non-negative-frequency columns (``tests/models/test_fcvsr.py`` checks it against the full FFT at even
    and odd sizes). Half the coefficients, no complex-to-real projection."""

    def __init__(self, num_bands: int, mode: str = "difference") -> None:
        super().__init__()
        if mode not in BAND_MASK_MODES:
            raise ValueError(f"band mask mode must be one of {BAND_MASK_MODES}, got {mode!r}")
        self.num_bands, self.mode = num_bands, mode
        self._masks: dict[tuple, torch.Tensor] = {}

    def masks(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w, device, dtype)
        if key not in self._masks:
            with torch.inference_mode(False):  # reusable by training after an inference pass
                masks = gaussian_band_masks(h, w, self.num_bands, self.mode)
                self._masks[key] = masks.to(device, dtype)
        return self._masks[key]

    def half_masks(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The masks in ``rfft2``'s layout: un-centred (DC at index 0), columns ``0 .. w//2``: ``(Q, h, w//2+1)``."""
        key = ("half", h, w, device, dtype)
        if key not in self._masks:
            with torch.inference_mode(False):
                full = torch.fft.ifftshift(self.masks(h, w, device, dtype), dim=(-2, -1))
                self._masks[key] = full[..., : w // 2 + 1].contiguous()
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x, norm="ortho")  # (n, c, h, w//2+1)
        bands = spec.unsqueeze(1) * self.half_masks(h, w, x.device, x.dtype)[None, :, None]  # (n, Q, c, h, w//2+1)
        return torch.fft.irfft2(bands, s=(h, w), norm="ortho")


class EnhancementBlock(nn.Module):
    """3x3 conv -> sigmoid -> channel attention. The sigmoid output gates the subband feature
    ``S_q`` being enhanced: ``EB(z; S_q) = CA(S_q * sigmoid(Conv(z)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels)

    def forward(self, z: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
        return self.attention(band * torch.sigmoid(self.conv(z)))


class Enhancer(nn.Module):
    """Eq. (9) for one subband q: a feed-forward (FFE) and, for q > 1, a feedback (FBE) branch.

    FFE: ``S'_q = S_q - sum_{j<q} S_j`` (band q against the bands below it: high-frequency, as the
    paper says; see the FCVSR module docstring); FBE: ``S''_q = sum_{j<q} E_j``;
    ``E_q = EB_f(S'_q + S''_q) + EB_b(S''_q)``. For q = 1 the mean-filtered ``S_1`` (3x3 box
    filter) stands for the lower bands, so ``S'_1 = S_1 - mean(S_1)``, and there is no FBE branch.
    """

    def __init__(self, channels: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.feedforward = EnhancementBlock(channels)
        self.feedback = None if first else EnhancementBlock(channels)

    def forward(self, bands: list[torch.Tensor], enhanced: list[torch.Tensor]) -> torch.Tensor:
        band = bands[-1]
        if self.first:
            mean = F.avg_pool2d(band, 3, stride=1, padding=1, count_include_pad=False)
            return self.feedforward(band - mean, band)
        high_ff = band - torch.stack(bands[:-1]).sum(0)  # S'_q
        high_fb = torch.stack(enhanced).sum(0)  # S''_q
        return self.feedforward(high_ff + high_fb, band) + self.feedback(high_fb, band)


class MFFR(nn.Module):
    """Multi-frequency feature refinement (Fig. 4): Decoupler -> Q Enhancers -> Aggregator,
    ``F~ = CA(sum_j E_j)`` (eq. 13)."""

    def __init__(self, channels: int, num_bands: int, mask_mode: str = "difference") -> None:
        super().__init__()
        self.decoupler = Decoupler(num_bands, mask_mode)
        self.enhancers = nn.ModuleList(Enhancer(channels, first=q == 0) for q in range(num_bands))
        self.aggregator = ChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (n, c, h, w) -> (n, c, h, w)``."""
        bands = list(self.decoupler(x).unbind(1))
        enhanced: list[torch.Tensor] = []
        for q, enhancer in enumerate(self.enhancers):
            enhanced.append(enhancer(bands[: q + 1], enhanced))
        return self.aggregator(torch.stack(enhanced).sum(0))


# ---------------------------------------------------------------------------------------------
# REC: reconstruction with scale-wise convolution blocks (Sec. III-C)
# ---------------------------------------------------------------------------------------------


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ScaleWiseConvBlock(nn.Module):
    """SCB of SCN [59] on a feature pyramid: one body (conv -> ReLU -> conv, widened by
    ``width``) shared by every scale, and a scale-wise step that adds to each scale its own
    residual and those of the finer scale (1x1 conv, bilinear down) and the coarser scale (1x1
    conv, bilinear up); at the two ends of the pyramid the scale's own residual stands in for
    the missing neighbour, as in SCN."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.body = conv_block(channels, width, channels)
        self.down = nn.Conv2d(channels, channels, 1)
        self.up = nn.Conv2d(channels, channels, 1)

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        res = [self.body(x) for x in pyramid]
        out = []
        for s, x in enumerate(pyramid):
            size = x.shape[-2:]
            finer = _resize(self.down(res[s - 1]), size) if s > 0 else res[s]
            coarser = _resize(self.up(res[s + 1]), size) if s + 1 < len(res) else res[s]
            out.append(x + res[s] + finer + coarser)
        return out


class ResidualGroup(nn.Module):
    """Three SCBs, a 3x3 conv (shared by the scales) and a short skip connection."""

    def __init__(self, channels: int, width: int, blocks: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ScaleWiseConvBlock(channels, width) for _ in range(blocks))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        out = pyramid
        for block in self.blocks:
            out = block(out)
        return [x + self.conv(y) for x, y in zip(pyramid, out, strict=True)]


class REC(nn.Module):
    """Reconstruction: feature pyramid (bilinear x0.5 steps, as SCN builds it), R residual groups
    inside a long skip (residual in residual), then one pixel-shuffle layer (3x3 conv to
    ``out_channels * scale^2``, PixelShuffle) giving the HR residual frame."""

    def __init__(
        self, channels: int, num_groups: int, width: int, num_scales: int, scale: int, out_channels: int = 3
    ) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"scb_scales must be >= 1, got {num_scales}")
        self.num_scales = num_scales
        self.groups = nn.ModuleList(ResidualGroup(channels, width) for _ in range(num_groups))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, out_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )
        # an untrained network predicts a zero residual (the output is the bilinear upsampling)
        nn.init.zeros_(self.upsample[0].weight)
        nn.init.zeros_(self.upsample[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (n, c, h, w) -> (n, out_channels, s*h, s*w)``."""
        pyramid = [x]
        for _ in range(self.num_scales - 1):
            h, w = pyramid[-1].shape[-2:]
            pyramid.append(_resize(pyramid[-1], ((h + 1) // 2, (w + 1) // 2)))
        for group in self.groups:
            pyramid = group(pyramid)
        return self.upsample(x + self.conv(pyramid[0]))
