"""FCVSR and FCVSR-S: frequency-aware compressed video super-resolution.

Q. Zhu, F. Zhang, F. Chen, S. Zhu, D. Bull, B. Zeng, "FCVSR: A Frequency-aware Method for
Compressed Video Super-Resolution" (arXiv:2502.06431, Sec. III and IV-A). Seven LR frames
in, the centre frame out at x4: a 3x3 convolution per frame (eq. 1); motion-guided adaptive
alignment (MGAA) on frames t-3..t-1, then t+1..t+3, then on the two results with frame t;
multi-frequency feature refinement (MFFR); reconstruction (REC) of an HR residual that is added
to the bilinear upsampling of the centre frame. Its training recipe (eq. 14) is the Charbonnier
loss (eps = 1e-4) plus alpha times the frequency-aware contrastive loss (eqs. 16-18; alpha = 1,
tau = 1, L1 similarity), which :meth:`FCVSR.vsr_loss` implements. (The authors' public code
never trains with the contrastive loss; we follow the paper.)

Size and cost (one 64x64 RGB clip, FlopCounterMode FLOPs = 2 x MACs; Table I in brackets):
``paper`` 8.88 M parameters (8.81 M, +0.7%), 141.4 GFLOPs (Table I: 165.36 G);
``paper-s`` 3.68 M (3.70 M, -0.6%), 80.6 GFLOPs (Table I: 68.82 G). The FLOPs are ours as
measured; no faithful reading reproduces Table I's. The authors' released FCVSR / FCVSR-S have
exactly Table I's parameter counts (8.811 M; 3.705 M at their code's defaults N=3, Q=4, R=4,
where the text says N=4, Q=4, R=3: ``paper-s`` keeps the text's), but counted with the same
torch flop counter they come to about 94 G and 40 G at 64x64, not 165.36 G and 68.82 G.

Readings of the paper. Each is "paper says X; we do Y because Z".

* Channels. Paper gives no channel count; we use c = 64 for both FCVSR and FCVSR-S, because
  that is what the authors' code uses and what puts both models' parameter counts within 10%
  of Table I (a narrower FCVSR-S falls well below 3.70 M).
* Frequency features. Paper says "FFT"; we take the full 2-D FFT (``fft2``, ortho norm) and
  feed convolutions its real and imaginary parts stacked on the channel axis. Channel counts
  in the text ("CB1 ... 2c channels ... c channels", "CB2 ... 2 channels") count complex
  channels, because ``F^_d`` must keep the c channels of ``F^`` and the two channels of CB2 are
  the (dx, dy) of an offset; so CB1 is 4c -> 4c -> 2c and CB2 2c -> 2c -> 4 real channels.
  Not ``rfft2`` here: a convolution over the spectrum sees each frequency's neighbours, which
  the half spectrum of ``rfft2`` lacks across its cut (they sit, conjugated, in the dropped
  half), and its output is no longer conjugate-symmetric, so ``Re(ifft2(.))`` of it is not the
  ``irfft2`` of its half: the motion estimator would compute another function. The Decoupler
  (eq. 8), whose masks are symmetric about DC, does use ``rfft2``: there the two are equal
  (tested), with half the coefficients.
* Conv_n (eq. 6). Paper: "two convolution layers with kernel size 2n+1, a PReLU, and channel
  attention", n = 1..N, without the widths; we map the 2c-channel ``F^_d`` to the 2 complex
  (4 real) channels of one offset and keep that width (2c -> 4 -> 4, then RCAN channel
  attention), the narrowest reading: six branches at full width (2c -> 2c -> 2c, kernels 3 to
  13) would hold 14.9 M parameters, more than the whole model.
* Correlation (eq. 6). Paper: "a correlation operation"; in the frequency domain correlation
  is the product with the complex conjugate, so ``o^_n = Conv_n(F^_d) * conj(CB2(F^_ref))``,
  and ``o_n = Re(IFFT(o^_n))`` is the offset (dx, dy) in pixels.
* Kernel predictor. Paper: "a 3x3 and a 1x1 convolution", k unstated; we use k = 3 (the
  authors' code), no activation between the two layers (none is named), and start the kernels
  at the identity (centre tap 1) and the offsets at zero (zero-initialised last CB2 layer), so
  an untrained MGAC layer passes features through; initialisation is not in the paper.
* MGAC (eq. 7). Real sampling: bilinear ``grid_sample`` at p + o_n(p) (border padding), then
  the per-pixel, per-channel 1 x k and k x 1 kernels, N steps in cascade exactly as eq. (7),
  with no residual or activation between steps (the authors' code adds both; the paper does not).
* Bidirectional MGAA. The backward set runs through the same Motion Estimator as the forward
  set, and the Kernel Predictor, which sees only the reference, serves both.
* Shared MGAA. Paper says "multiple MGAA modules are employed" but also that the two results
  are "fed into the MGAA module again"; we use one MGAA for all three applications
  (``share_mgaa=True``, as the authors' code does), because three separate modules put FCVSR at
  11.4 M parameters, 29% over Table I. ``share_mgaa=False`` builds three.
* Decoupler masks (eqs. 11-12). Eq. (12) as printed subtracts the *Gaussians* of the lower
  bands, ``M_j = G_j - sum_{l<j} G_l``; such masks are not band-pass for j >= 3 (at the DC term
  ``M_j = 2 - j``: gain -6 for the top band of 8, and the masks sum to -20 at DC). The default,
  ``band_masks="difference"``, subtracts the lower *masks* instead, ``M_j = G_j - G_{j-1}``: true
  band-pass masks summing to ``G_Q``, which is what the prose ("Gaussian band-pass filter masks",
  "truncation frequency", "lowest subband"), Fig. 5 and the authors' mask loop describe.
  ``band_masks="eq12"`` keeps the literal equation. The spectrum is centred with fftshift so
  that ``(h/2, w/2)`` is the DC term.
* Enhancer. Paper: FFE input "{S_j}_{j<=q} summed together, and subtracted by S_q", which the
  text calls a high-frequency feature. Read literally, ``sum_{j<=q} S_j - S_q = sum_{j<q} S_j``
  is the *low*-pass part below band q once the masks are band-pass, so we take
  ``S'_q = S_q - sum_{j<q} S_j`` (band q against everything below it; the authors' code does the
  same). For q = 1 the "mean filter on S_1" (a 3x3 box filter) stands for the lower bands, so
  ``S'_1 = S_1 - mean(S_1)``. The enhancement block is "a 3x3 conv, a sigmoid and CA"; a sigmoid alone would discard
  the feature's sign, so we read it as a gate on the subband being enhanced:
  ``E^f_q = CA(S_q * sigmoid(Conv(S'_q + S''_q)))``, ``E^b_q = CA(S_q * sigmoid(Conv(S''_q)))``,
  ``E_q = E^f_q + E^b_q`` (FFE and FBE each have their own block). Without the gate, the top
  band S_Q would never reach the output.
* REC. Paper: "scale-wise convolution block (SCB) [59] with the residual-in-residual structure",
  R groups of three SCBs with a short skip, then "a pixelshuffle layer". We build SCN's SCB: a
  feature pyramid by bilinear x0.5 steps (``scb_scales`` levels, default 3), one
  conv-ReLU-conv body shared by all scales with SCN's widening (``scb_width`` x c channels
  inside), and 1x1-conv + bilinear exchange between neighbouring scales; each group ends with a
  3x3 conv and its skip, the R groups with a 3x3 conv and the long skip; "a pixelshuffle layer"
  is one 3x3 conv to 3*16 channels and PixelShuffle(4) (zero-initialised, so an untrained model
  returns the bilinear upsampling). The width multiplier is not in either paper's text for this
  use; ``scb_width = 2.75`` (176 channels inside) is where both presets' parameter counts meet
  Table I (within 1%); SCN itself uses 4, which would put FCVSR at 11.6 M.
* RGB. The authors train on the Y channel; the platform's clips are RGB, so the first and last
  convolutions have 3 channels (a few hundred parameters more than a Y-channel model).
* FLOPs. Table I's FLOPs are 2 x MACs (the authors' script doubles thop's MAC count), the same
  convention as ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions and
  matrix products only: the FFTs, the bilinear sampling, the adaptive 1-D filtering,
  interpolation and element-wise operations are not counted (they are a small share of the
  work). See ``fedvsr.models.profile``.
* Losses. The Charbonnier loss is the platform's element-wise mean of ``sqrt(d^2 + eps^2)``
  (eq. 15 with eps = 1e-4). The contrastive loss's "L1 distance as the similarity function" is
  ``s(a, b) = -||a - b||_1``, the L1 distance of the whole sub-band summed per sample (negated:
  a distance taken as a similarity as-is would reward moving away from the positives). With a
  mean instead of a sum, every similarity is near 0, the softmax cannot tell positives from
  negatives, and HR is not a minimiser: Charbonnier + L_fc then stalls at 30.5 dB with a
  brightness bias where Charbonnier alone goes on improving. To put both terms of eq. (14) in
  the same units, ``vsr_loss`` adds ``alpha * L_fc / (C * H * W)`` (C, H, W of the SR frame) to
  the mean Charbonnier loss, i.e. eq. (14) with both terms summed over the pixels, divided by
  their number. I^UP is the bilinear upsampling of the LR centre frame.
"""

from __future__ import annotations

import ptwt
import pywt
import torch
import torch.nn.functional as F
from torch import nn

from fedvsr.models.base import VSRModel, charbonnier
from fedvsr.models.fcvsr_blocks import MFFR, MGAA, REC
from fedvsr.models.registry import register_model

_HAAR = pywt.Wavelet("haar")


def _haar_bands(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One-level 2-D Haar DWT of ``(b, c, H, W)``: the LL band and the three detail bands."""
    ll, details = ptwt.wavedec2(x, _HAAR, level=1, mode="zero")
    return ll, list(details)


def _similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``s(a, b) = -||a - b||_1``, summed over all but the batch axis: ``(b, ...) -> (b,)``."""
    return -(a - b).abs().flatten(1).sum(1)


def _info_nce(sim_pos: torch.Tensor, sim_negs: list[torch.Tensor], tau: float) -> torch.Tensor:
    """``-log(exp(s+/tau) / (exp(s+/tau) + sum_k exp(s-_k/tau)))`` per sample."""
    logits = torch.stack([sim_pos, *sim_negs], dim=1) / tau
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def frequency_contrastive_loss(sr: torch.Tensor, hr: torch.Tensor, up: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Frequency-aware contrastive loss ``L_fc`` (eqs. 16-18) of ``(b, c, H, W)`` images.

    One-level Haar DWT of the SR, HR and bilinearly upsampled compressed (``up``) images.
    Anchors ``A1`` = SR's three high bands, ``A2`` = SR's LL; positives ``P1`` = HR's high bands
    (paired band by band with A1), ``P2`` = {HR LL, UP LL}; negatives ``N`` = UP's high bands.
    ``L1`` averages the InfoNCE term of each (a1_l, p1_l) pair against all of N, ``L2`` that of
    each (a2, p2_l); ``L_fc`` is the batch mean of ``L1 + L2`` (eq. 18). Similarities are summed
    over each sub-band, so ``L_fc`` grows with the image size; :meth:`FCVSR.vsr_loss` divides it
    by ``C * H * W``.
    """
    sr_ll, sr_high = _haar_bands(sr)
    hr_ll, hr_high = _haar_bands(hr)
    up_ll, up_high = _haar_bands(up)
    loss1 = torch.stack(
        [
            _info_nce(_similarity(a, p), [_similarity(a, g) for g in up_high], tau)
            for a, p in zip(sr_high, hr_high, strict=True)
        ]
    ).mean(0)
    negs2 = [_similarity(sr_ll, g) for g in up_high]
    loss2 = torch.stack([_info_nce(_similarity(sr_ll, p), negs2, tau) for p in (hr_ll, up_ll)]).mean(0)
    return (loss1 + loss2).mean()


@register_model(
    "fcvsr",
    presets={
        "paper": {"channels": 64, "num_offsets": 6, "num_bands": 8, "num_groups": 10},
        "paper-s": {"channels": 64, "num_offsets": 4, "num_bands": 4, "num_groups": 3},
        "small": {
            "channels": 16,
            "num_offsets": 3,
            "num_bands": 4,
            "num_groups": 4,
            "scb_width": 2.0,
            "scb_scales": 2,
        },
        "tiny": {
            "channels": 8,
            "num_offsets": 2,
            "num_bands": 2,
            "num_groups": 1,
            "scb_width": 1.0,
            "scb_scales": 2,
        },
    },
    description="FCVSR: frequency-domain motion-guided alignment + multi-frequency refinement, 7 frames",
)
class FCVSR(VSRModel):
    """FCVSR (``paper``) / FCVSR-S (``paper-s``): 7 LR frames -> the x4 centre frame."""

    num_frames = 7
    center_output = True
    scale = 4
    charbonnier_eps = 1e-4

    def __init__(
        self,
        channels: int = 64,
        num_offsets: int = 6,
        num_bands: int = 8,
        num_groups: int = 10,
        ac_kernel_size: int = 3,
        scb_width: float = 2.75,
        scb_scales: int = 3,
        share_mgaa: bool = True,
        band_masks: str = "difference",
        contrastive_weight: float = 1.0,
        contrastive_tau: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("num_offsets", num_offsets), ("num_bands", num_bands)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_groups < 0:
            raise ValueError(f"num_groups must be >= 0, got {num_groups}")
        if ac_kernel_size < 1 or ac_kernel_size % 2 == 0:
            raise ValueError(f"ac_kernel_size must be odd and >= 1, got {ac_kernel_size}")
        if contrastive_tau <= 0:
            raise ValueError(f"contrastive_tau must be > 0, got {contrastive_tau}")
        self.contrastive_weight = contrastive_weight
        self.contrastive_tau = contrastive_tau
        # eq. (1): one 3x3 convolution applied to every frame
        self.feat_extract = nn.Conv2d(in_channels, channels, 3, padding=1)
        n_mgaa = 1 if share_mgaa else 3
        self.mgaa = nn.ModuleList(MGAA(channels, num_offsets, ac_kernel_size) for _ in range(n_mgaa))
        self.mffr = MFFR(channels, num_bands, band_masks)
        width = max(1, round(channels * scb_width))
        self.rec = REC(channels, num_groups, width, scb_scales, self.scale, in_channels)

    def _mgaa(self, i: int) -> MGAA:
        return self.mgaa[i % len(self.mgaa)]

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, 7, c, h, w) -> (b, c, 4h, 4w)``, the restored centre frame."""
        self.check_input(lr)
        b, t, c, h, w = lr.shape
        feats = self.feat_extract(lr.reshape(b * t, c, h, w)).view(b, t, -1, h, w)
        f = feats.unbind(1)
        # alignment: t-3..t-1 -> F_{t-2}, t+1..t+3 -> F_{t+2}, then (F_{t-2}, F_t, F_{t+2}) -> F_t
        if len(self.mgaa) == 1:  # one shared module: both outer triples in one batch
            outer = self.mgaa[0](torch.cat([f[0], f[4]]), torch.cat([f[1], f[5]]), torch.cat([f[2], f[6]]))
            left, right = outer.chunk(2)
        else:
            left = self._mgaa(0)(f[0], f[1], f[2])
            right = self._mgaa(1)(f[4], f[5], f[6])
        aligned = self._mgaa(2)(left, f[3], right)
        # refinement
        refined = self.mffr(aligned)
        # reconstruction
        residual = self.rec(refined)
        return self.upsample_center(lr) + residual

    def upsample_center(self, lr: torch.Tensor) -> torch.Tensor:
        """``I^UP``: bilinear x4 upsampling of the LR centre frame, ``(b, t, c, h, w) -> (b, c, 4h, 4w)``."""
        return F.interpolate(lr[:, lr.shape[1] // 2], scale_factor=self.scale, mode="bilinear", align_corners=False)

    def vsr_loss(self, sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """``L_all = L_spa + alpha * L_fc / (C H W)`` (eq. 14, both terms per pixel) with ``L_spa`` the mean
        Charbonnier loss (eps 1e-4)."""
        target = self.target(hr)
        loss = charbonnier(sr, target, self.charbonnier_eps)
        if self.contrastive_weight:
            up = self.upsample_center(lr)
            pixels = sr.shape[-3] * sr.shape[-2] * sr.shape[-1]
            loss = loss + self.contrastive_weight / pixels * frequency_contrastive_loss(
                sr, target, up, self.contrastive_tau
            )
        return loss
