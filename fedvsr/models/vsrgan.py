"""VSRGAN: SRGAN extended to video with 3D non-local blocks.

K. Cetin, H. Akca, "Super-Resolution Generative Adversarial Networks based Video Enhancement"
(arXiv:2505.10589, Sec. 1.4, 2.1, 3.1, 3.2, 4). A generator restores every frame of an LR clip
(sequence in, sequence out) and a U-Net discriminator judges frames real or fake. Two generators:
``rrdb`` (residual-in-residual dense blocks; the paper's 27 M-parameter model) and ``residual``
(residual blocks; the 5 M model). Both are built in the paper's four parts: channel expansion with
temporal feature extraction (a 3D dot-product non-local block over (T, H, W), so frames exchange
information), spatial feature extraction (the blocks), reconstruction, and upsampling with channel
compression (see :class:`~fedvsr.models.vsrgan_blocks.Generator`).

Sizes (generator parameters; ``fedvsr models`` lists these, the discriminator trains beside it):
``paper-rrdb`` 26.51 M (27 M, -1.8%), ``paper-residual`` 4.86 M (5 M, -2.8%); the U-Net
discriminator of both holds 3.91 M more.

Training recipe (:meth:`VSRGAN.training_step`, one call per mini-batch; both networks are federated,
since both are submodules and the strategy averages the whole state dict):

1. Patch-wise passes (Sec. 1.4, 3.1.4-3.1.6): for each LR patch size in ``patch_sizes`` (16 and 32,
   the paper's) that divides the LR crop, the clip is cut into a grid of patches, every patch goes
   through the generator independently (one batch), the outputs are put back in their grid positions,
   and the generator's losses are taken per patch and on the reassembled whole (``whole_weight``).
2. Cascade (Sec. 3.1.6): the generator network upsamples x2; at ``scale=4`` it runs twice (LR -> x2 ->
   x4, also per patch), and the x2 output is scored against the HR clip downscaled by 2 as well as the
   x4 output against the HR clip. ``cascade=False`` builds a one-pass x``scale`` generator instead.
3. Gradient accumulation (Sec. 3.2): with ``accumulate=True`` the passes' gradients add up and the
   generator takes one step per mini-batch; otherwise one step per pass (SCAFFOLD's K counts each
   network's own optimizer steps, so its control variates stay option II's either way). Gradient clipping is the
   platform's ``fl.clip_grad_norm``, applied to each network's accumulated gradient right before its step.
4. Separate generator and discriminator steps (Sec. 1.4): the generator step runs with the
   discriminator frozen, then the discriminator takes one step on the HR frames (real) and the detached
   outputs of every pass (fake). Each network's gradients are cleared (set to None) before the other's
   step, so a strategy's gradient correction (SCAFFOLD) only ever sees the gradients being stepped.

The strategy's local terms: the generator's loss goes through ``hooks.objective`` with its final output
(FedProx's proximal term, FedVSR's DWT loss); the discriminator's loss too, without an output (so
FedProx's proximal term also holds the discriminator near the global one; FedVSR's ``lambda_vsr`` also
scales it). The loss the client reports, ``L_i`` of FedVSR's loss-aware aggregation, is the
generator's content loss (MSE or Charbonnier) of its final output, averaged over the passes: not the
adversarial or edge terms, whose scale says little about how well a client restores frames.

Readings of the paper. Each is "paper says X; we do Y because Z"; where the paper is silent, we say so.

* Widths and depths. The paper gives only the totals (27 M and 5 M) and no channel or block counts;
  we use 128 channels for both generators and 26 RRDBs / 12 residual blocks, which puts both within 3%
  of the totals. (At ESRGAN's 64 channels, 27 M would take about 108 RRDBs.)
* Residual block. "The addition process is replaced by concatenation", with a 1x1 convolution over the
  concatenation (Sec. 1.1); eq. (6)'s body is not legible in our copy, so we use two 3x3 conv + LReLU
  layers (``convs=2``), SRGAN's body: ``RB(x) = Conv1x1([x, F(x)])``. The residual model uses the same
  block ("the method used in this thesis").
* RRDB. "Each RRDB is also a series (3) of residual blocks with another skip connection at the end"
  (Sec. 2.1): ``x + beta * RB3(RB2(RB1(x)))``. The dense connections of ESRGAN's RRDB are the
  concatenations inside each block. ``beta = 0.2`` (``res_scale``) is ESRGAN's residual scaling, which
  the paper cites but does not state; it keeps 26 stacked blocks stable from scratch.
* LeakyReLU. The negative slope is missing from our copy of eq. (4); we use 0.2 (ESRGAN's and SRGAN's
  discriminator's).
* Non-local block. Dot product (eq. 13) with ``C(x) = N`` (eq. 11), theta / phi / g / W_z 1x1
  convolutions, the inner width c/2 (Wang et al.), no batch norm (batch statistics do not federate
  well) and default (non-zero) initialisation of W_z, so frames exchange information from the first
  step. One block, in part 1 (the "temporal feature extraction" of the channel-expanding layer; Sec.
  4.3.2: "residual blocks with a simple non-local block"). No max-pool subsampling of phi and g: without a
  softmax we compute the block in linear form (see :class:`~fedvsr.models.vsrgan_blocks.NonLocalBlock3D`).
* Image skip. The paper does not say whether the generator adds its output to an interpolated input;
  we add the bicubic upsampling and start the last convolution at zero (``image_skip=True``), so an
  untrained generator is bicubic upsampling, as the platform's other families: a federated run of a
  few rounds then starts from a sensible model. ``image_skip=False`` is SRGAN's plain output.
* Frames. The paper's clips have "a constant length of N frames", N not given; we use 5 (3 in ``tiny``).
  Every frame is restored (``center_output = False``).
* Discriminator. "A U-Net architecture" (Fig. 10, refs [37], [38]) with no sizes; we use 64 channels,
  3 stride-2 levels (channels capped at 8x), skip concatenation, a per-pixel logit map (as Real-ESRGAN's
  U-Net discriminator), no spectral norm (its power-iteration vectors would be averaged across clients).
  The adversarial loss is binary cross-entropy on that map; its weight (1e-3, SRGAN's) is not in the paper.
* Losses (Sec. 3.1.7). Content: MSE, the paper's choice (``content_loss="charbonnier"``, eq. 21, is the
  alternative). Laplacian with the 8- (Moore) or 4-neighbour (von Neumann) kernel; Sobel (H + V);
  Ricker: the paper's "width 0.55, circular length 3, centre 3.4786" is the Mexican hat
  ``(1/(pi s^4))(1 - r^2/2s^2) exp(-r^2/2s^2)`` with s = 0.55 (its centre is exactly 3.4786) on a 3x3 grid;
  Laplacian pyramid: 5x5 binomial Gaussian, 3 levels, L1 per band; gradient: finite differences; SSIM:
  ``1 - SSIM`` with an 11x11 Gaussian window. Distances are L2 (the paper's "e.g., L2") except the pyramid's.
  The paper gives no loss weights: ours (0.1 for each edge / SSIM loss) are placeholders to tune
  through ``model.recipe.*`` (:class:`VSRGANRecipe`). LPIPS: the paper feeds VGG-19's first 36 layers and
  compares the features (L1); no weights can be downloaded, so it is off unless ``lpips_weights`` names a local VGG-19
  state-dict file (``lpips_weight > 0`` without one is a configuration error saying so). The VGG is not
  part of the model's state dict (not federated, not checkpointed).
* Patch losses. "Losses are calculated for each patch independently, in addition to the comparison of
  whole constructed patches, and they are accumulated": we add the per-patch losses (a mean over the
  patches) and ``whole_weight`` (1) times the whole-grid losses; with a 1x1 grid the two coincide and are
  counted once. Patch sizes that do not divide the LR crop are skipped; with none left, one pass on the
  whole clip. The adversarial term is taken on the reassembled final output.
* Scales. The paper's results are x2; the platform's default data is x4, which the cascade covers
  (``scale`` must be a power of 2; x3 is not supported). The x2 and x4 stage losses weigh the same.
* Data side: the degradation suite (``data.degradation=vsrgan``, :mod:`fedvsr.data.degrade`) and the
  dark-patch elimination (Sec. 1.4: "sub-batches that are too dark (detected according to mean of their RGB
  values) are eliminated"; :mod:`fedvsr.data.dark_patch`, ``data.dark_threshold``) belong to ``fedvsr.data``,
  not to the model. The paper gives no threshold, so the filter is off until ``data.dark_threshold`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedvsr.fields import check_fields, key
from fedvsr.models import losses as L
from fedvsr.models.base import StepHooks, VSRModel
from fedvsr.models.registry import register_model
from fedvsr.models.vsrgan_blocks import Generator, UNetDiscriminator

_PAPER = {"channels": 128, "num_frames": 5, "disc_channels": 64, "disc_depth": 3}

WEIGHTS = ("adversarial", "laplacian", "sobel", "ricker", "pyramid", "gradient", "ssim", "lpips")


@dataclass(frozen=True)
class VSRGANRecipe:
    """VSRGAN's training recipe: its loss weights and the patch-wise cascaded training (the config keys
    ``model.recipe.*``; the networks' sizes are the preset's and ``model.options``'). The paper gives no loss
    weights: ours are placeholders to tune (a sweep samples these keys like any other)."""

    cascade: bool = key(
        True,
        "VSRGAN: cascaded training (Sec. 3.1.6): the generator upsamples x2 and runs twice "
        "at x4, the x2 output scored against the HR clip downscaled by 2; false = one x-scale pass",
    )
    content_loss: str = key(
        "mse", "VSRGAN: content loss, the paper's MSE or Charbonnier (eq. 21)", choices=("mse", "charbonnier")
    )
    charbonnier_eps: float = key(
        1e-3,
        "VSRGAN: Charbonnier epsilon of the content loss (content_loss = charbonnier)",
        min=0.0,
        min_exclusive=True,
        max=1.0,
    )
    adversarial_weight: float = key(
        1e-3,
        "VSRGAN: weight of the adversarial BCE on the U-Net discriminator's "
        "logit map (SRGAN's 1e-3; not in the paper); 0 = no discriminator step",
        min=0.0,
        max=1e6,
    )
    laplacian_weight: float = key(0.1, "VSRGAN: weight of the Laplacian edge loss", min=0.0, max=1e6)
    laplacian_neighbours: int = key(
        8, "VSRGAN: Laplacian kernel, 8 (Moore) or 4 (von Neumann) neighbours", choices=(4, 8)
    )
    sobel_weight: float = key(0.1, "VSRGAN: weight of the Sobel (H + V) edge loss", min=0.0, max=1e6)
    ricker_weight: float = key(0.1, "VSRGAN: weight of the Ricker (Mexican hat) edge loss", min=0.0, max=1e6)
    ricker_width: float = key(
        0.55,
        "VSRGAN: width s of the 3x3 Ricker kernel (the paper: 0.55, centre 3.4786)",
        min=0.0,
        min_exclusive=True,
        max=100.0,
    )
    pyramid_weight: float = key(0.1, "VSRGAN: weight of the Laplacian-pyramid loss (L1 per band)", min=0.0, max=1e6)
    pyramid_levels: int = key(3, "VSRGAN: levels of the Laplacian pyramid (5x5 binomial Gaussian)", min=1, max=16)
    gradient_weight: float = key(0.1, "VSRGAN: weight of the finite-difference gradient loss", min=0.0, max=1e6)
    ssim_weight: float = key(0.1, "VSRGAN: weight of 1 - SSIM (11x11 Gaussian window)", min=0.0, max=1e6)
    lpips_weight: float = key(
        0.0,
        "VSRGAN: weight of the LPIPS-style VGG-19 feature loss; > 0 needs "
        "model.recipe.lpips_weights (no weights are downloaded)",
        min=0.0,
        max=1e6,
    )
    lpips_weights: str = key(
        "", "VSRGAN: path of a local VGG-19 state-dict file for the LPIPS loss (not federated, not checkpointed)"
    )
    edge_distance: str = key(
        "l2", "VSRGAN: distance of the edge and gradient losses (the paper's 'e.g., L2')", choices=L.DISTANCES
    )
    patch_sizes: list = key(
        None,
        "VSRGAN: LR patch sizes of the patch-wise passes (the paper's 16 and 32); a size "
        "that does not divide the LR crop is skipped, with none left one pass on the whole clip",
        factory=lambda: [16, 32],
    )
    whole_weight: float = key(
        1.0,
        "VSRGAN: weight of the losses on the reassembled whole, beside the mean of the per-patch losses",
        min=0.0,
        max=1e6,
    )
    accumulate: bool = key(
        True,
        "VSRGAN: the patch passes' gradients add up to one generator step per mini-batch "
        "(Sec. 3.2); false = one step per pass",
    )

    def __post_init__(self) -> None:
        check_fields(self, "model.recipe.")
        if self.lpips_weight > 0 and not self.lpips_weights:
            raise ValueError(
                f"model.recipe.lpips_weight = {self.lpips_weight} needs model.recipe.lpips_weights = the path of a "
                f"local VGG-19 weights file (no weights are downloaded); without one LPIPS is off: set lpips_weight = 0"
            )
        if self.lpips_weights and not Path(self.lpips_weights).is_file():
            raise ValueError(
                f"model.recipe.lpips_weights = {self.lpips_weights!r} is not a file (a local VGG-19 state dict)"
            )


def to_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(b, t, c, h, w) -> (b * gh * gw, t, c, p, p)``, row-major grid of ``p x p`` patches."""
    b, t, c, h, w = x.shape
    gh, gw = h // p, w // p
    y = x.reshape(b, t, c, gh, p, gw, p).permute(0, 3, 5, 1, 2, 4, 6)
    return y.reshape(b * gh * gw, t, c, p, p)


def from_patches(y: torch.Tensor, b: int, gh: int, gw: int) -> torch.Tensor:
    """Inverse of :func:`to_patches`: ``(b * gh * gw, t, c, P, P) -> (b, t, c, gh * P, gw * P)``."""
    _, t, c, ph, pw = y.shape
    x = y.reshape(b, gh, gw, t, c, ph, pw).permute(0, 3, 4, 1, 5, 2, 6)
    return x.reshape(b, t, c, gh * ph, gw * pw)


@register_model(
    "vsrgan",
    presets={
        "paper-rrdb": {"generator": "rrdb", "blocks": 26, **_PAPER},
        "paper-residual": {"generator": "residual", "blocks": 12, **_PAPER},
        "small": {"generator": "rrdb", "channels": 32, "blocks": 3, "num_frames": 5, "disc_channels": 32},
        "small-residual": {"generator": "residual", "channels": 32, "blocks": 6, "num_frames": 5, "disc_channels": 32},
        "tiny": {"generator": "rrdb", "channels": 8, "blocks": 1, "num_frames": 3, "disc_channels": 8, "disc_depth": 2},
        "tiny-residual": {
            "generator": "residual",
            "channels": 8,
            "blocks": 2,
            "num_frames": 3,
            "disc_channels": 8,
            "disc_depth": 2,
        },
    },
    description="VSRGAN: RRDB / residual generator with a 3D non-local block + U-Net discriminator",
    recipe=VSRGANRecipe,
)
class VSRGAN(VSRModel):
    """VSRGAN generator (``rrdb`` or ``residual``) and U-Net discriminator: every frame restored at x``scale``."""

    center_output = False
    rotation_safe = True

    def __init__(
        self,
        generator: str = "rrdb",
        channels: int = 128,
        blocks: int = 26,
        num_frames: int = 5,
        scale: int = 4,
        convs: int = 2,
        negative_slope: float = 0.2,
        res_scale: float = 0.2,
        nonlocal_reduction: int = 2,
        image_skip: bool = True,
        disc_channels: int = 64,
        disc_depth: int = 3,
        in_channels: int = 3,
        **recipe: Any,
    ) -> None:
        """The networks' sizes (a preset's keys, ``model.options``) and the training recipe's keys
        (:class:`VSRGANRecipe`, ``model.recipe.*`` in a config)."""
        super().__init__()
        r = self.recipe = VSRGANRecipe(**recipe)
        for name, value in (
            ("channels", channels),
            ("num_frames", num_frames),
            ("convs", convs),
            ("nonlocal_reduction", nonlocal_reduction),
            ("disc_channels", disc_channels),
            ("disc_depth", disc_depth),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of 2 (2, 4, 8), got {scale}")
        sizes = [int(p) for p in r.patch_sizes]
        if any(p < 1 for p in sizes):
            raise ValueError(f"patch_sizes must be positive LR patch sizes, got {list(r.patch_sizes)}")
        self.num_frames = int(num_frames)
        self.scale = int(scale)
        self.cascade = bool(r.cascade)
        self.content_kind = r.content_loss
        self.charbonnier_eps = r.charbonnier_eps
        self.weights = {k: float(getattr(r, f"{k}_weight")) for k in (*WEIGHTS, "whole")}
        self.laplacian_neighbours = r.laplacian_neighbours
        self.ricker_width = r.ricker_width
        self.pyramid_levels = r.pyramid_levels
        self.edge_distance = r.edge_distance
        self.patch_sizes = sizes
        self.accumulate = bool(r.accumulate)
        # networks
        step = 2 if self.cascade else self.scale
        self.stages = self.scale.bit_length() - 1 if self.cascade else 1
        self.generator = Generator(
            generator,
            channels,
            blocks,
            step,
            convs,
            negative_slope,
            res_scale,
            nonlocal_reduction,
            image_skip,
            in_channels,
        )
        self.discriminator = UNetDiscriminator(disc_channels, disc_depth, negative_slope, in_channels)
        # LPIPS (VGG-19 features) only from a local file: nothing is downloaded
        self.perceptual: L.PerceptualLoss | None = None
        if r.lpips_weights and torch.empty(0).device.type != "meta":  # the config check builds on meta: no loading
            self.perceptual = L.PerceptualLoss(r.lpips_weights)

    @property
    def counted_module(self) -> nn.Module:
        """What ``count_params`` (and ``fedvsr models``) counts: the generator; the discriminator only trains."""
        return self.generator

    # ------------------------------------------------------------------ inference
    def upscale(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output: ``[x2, x4, ...]`` with the cascade, ``[x scale]`` without."""
        outs, x = [], lr
        for _ in range(self.stages):
            x = self.generator(x)
            outs.append(x)
        return outs

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, t, c, h, w) -> (b, t, c, s*h, s*w)``, every frame restored."""
        self.check_input(lr)
        return self.upscale(lr)[-1]

    # ------------------------------------------------------------------ losses
    def content(self, sr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return L.content_loss(sr, target, self.content_kind, self.charbonnier_eps)

    def image_losses(self, sr: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content, content + weighted edge / SSIM / LPIPS terms)`` of ``(..., c, H, W)`` images."""
        w, d = self.weights, self.edge_distance
        content = self.content(sr, target)
        total = content
        if w["laplacian"]:
            total = total + w["laplacian"] * L.laplacian_loss(sr, target, self.laplacian_neighbours, d)
        if w["sobel"]:
            total = total + w["sobel"] * L.sobel_loss(sr, target, d)
        if w["ricker"]:
            total = total + w["ricker"] * L.ricker_loss(sr, target, self.ricker_width, 3, d)
        if w["pyramid"]:
            total = total + w["pyramid"] * L.laplacian_pyramid_loss(sr, target, self.pyramid_levels)
        if w["gradient"]:
            total = total + w["gradient"] * L.gradient_loss(sr, target, d)
        if w["ssim"]:
            total = total + w["ssim"] * L.ssim_loss(sr, target)
        if w["lpips"] and self.perceptual is not None:
            total = total + w["lpips"] * self.perceptual(sr, target)
        return content, total

    def vsr_loss(self, sr: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """The generator's image losses on its final output (no adversarial term, no patches): what a plain
        step would minimise, e.g. centralized pre-training."""
        return self.image_losses(sr, self.target(hr))[1]

    def stage_targets(self, hr: torch.Tensor) -> list[torch.Tensor]:
        """The HR clip at each stage's scale: ``hr`` downscaled (bicubic, antialiased) for the x2, x4, ...
        stages of the cascade, ``hr`` itself for the last."""
        b, t, c, H, W = hr.shape
        out = []
        for i in range(self.stages):
            f = 2 ** (self.stages - 1 - i)
            if f == 1:
                out.append(hr)
            else:
                small = F.interpolate(
                    hr.reshape(b * t, c, H, W),
                    size=(H // f, W // f),
                    mode="bicubic",
                    align_corners=False,
                    antialias=True,
                )
                out.append(small.clamp(0, 1).view(b, t, c, H // f, W // f))
        return out

    def passes(self, lr: torch.Tensor) -> list[int | None]:
        """LR patch sizes of the patch-wise passes for a clip of this size (None: one pass on the whole clip)."""
        h, w = lr.shape[-2:]
        sizes = [p for p in self.patch_sizes if h % p == 0 and w % p == 0]
        return list(sizes) or [None]

    def generator_pass(self, lr: torch.Tensor, hr: torch.Tensor, patch: int | None):
        """One patch-wise (cascaded) pass: ``(loss, content, final whole output)``."""
        b, _, _, h, w = lr.shape
        if patch is None:
            gh = gw = 1
            outs = self.upscale(lr)
        else:
            gh, gw = h // patch, w // patch
            outs = self.upscale(to_patches(lr, patch))
        loss = lr.new_zeros(())
        for out, target in zip(outs, self.stage_targets(hr), strict=True):
            whole = from_patches(out, b, gh, gw)
            if gh * gw == 1:
                content, total = self.image_losses(whole, target)
                loss = loss + total
            else:
                _, per_patch = self.image_losses(out, to_patches(target, out.shape[-1]))
                content, total = self.image_losses(whole, target)
                loss = loss + per_patch + self.weights["whole"] * total
        if self.weights["adversarial"]:
            logits = self.discriminator(L._frames(whole))
            loss = loss + self.weights["adversarial"] * L.adversarial_loss(logits, real=True)
        return loss, content, whole

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "generator": [p for p in self.generator.parameters() if p.requires_grad],
            "discriminator": [p for p in self.discriminator.parameters() if p.requires_grad],
        }

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], hooks: StepHooks) -> torch.Tensor:
        """Generator step(s) over the patch-wise passes, then one discriminator step; returns the generator's
        content loss (detached, averaged over the passes), the loss the client reports."""
        lr, hr = batch
        opt_g, opt_d = optimizers["generator"], optimizers.get("discriminator")
        passes = self.passes(lr)
        fakes, contents = [], []
        # generator: discriminator frozen, its stale gradients cleared
        if opt_d is not None:
            opt_d.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        try:
            opt_g.zero_grad(set_to_none=True)
            for i, patch in enumerate(passes):
                loss, content, sr = self.generator_pass(lr, hr, patch)
                loss = hooks.objective(loss, sr, hr)
                if self.accumulate:
                    loss = loss / len(passes)
                    if i < len(passes) - 1:
                        loss.backward()
                    else:
                        hooks.apply(loss, opt_g, zero_grad=False)
                else:
                    hooks.apply(loss, opt_g)
                fakes.append(sr.detach())
                contents.append(content.detach())
        finally:
            self.discriminator.requires_grad_(True)
        # discriminator: generator frozen, its gradients cleared
        if opt_d is not None and self.weights["adversarial"]:
            opt_g.zero_grad(set_to_none=True)
            self.generator.requires_grad_(False)
            try:
                real = self.discriminator(L._frames(hr))
                fake = self.discriminator(L._frames(torch.cat(fakes)))
                d_loss = 0.5 * (L.adversarial_loss(real, True) + L.adversarial_loss(fake, False))
                hooks.apply(hooks.objective(d_loss, None, None), opt_d)
                opt_d.zero_grad(set_to_none=True)
            finally:
                self.generator.requires_grad_(True)
        return torch.stack(contents).mean()
