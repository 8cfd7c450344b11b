"""FCA2: a frame-compression autoencoder around any VSR backbone.

Z. Wang, J. Li, W. Lu, L. He, M. Gong, X. Gao, "FCA2: Frame Compression-Aware Autoencoder for Modular and
Fast Compressed Video Super-Resolution" (FCA2, arXiv:2506.11545, Sec. III-IV). The N frames of a clip are
stacked into C*N channels (eq. 2) and cut into K overlapping groups of S channels with overlap O (eq. 3);
each group is encoded into one C-channel frame, so the backbone (BasicVSR, BasicVSR++, or any registered
family that restores every frame) super-resolves K frames instead of N (7 RGB frames, S = 9, O = 3: K = 3,
hence the ~2x faster inference of Table I). The decoder maps each upscaled frame back to its S channels,
averages the channels several groups encoded (frame averaging), and matches each output frame's colour
statistics to its LR frame (eq. 4, decoder only by default, Table VII).

Forward (modes ``frozen`` and ``joint``): ``lr (b, t, c, h, w)`` -> cleaning (residual blocks, 3 passes,
Sec. III-C1) -> flow guidance (SpyNet) -> grouped encoding -> backbone on the K compressed frames ->
decoding at the HR size -> ``(b, t, c, s*h, s*w)``. A clip longer than ``num_frames`` is cut into chunks of
``num_frames`` (the last padded by repeating its last frame, as the authors' code), and the compressed frames
of all chunks go through the backbone as one sequence (so a recurrent backbone propagates across chunks).

Training modes (Table V; ``mode``):

* ``pretrain``: the autoencoder alone (no cleaning, no backbone), ``scale = 1``, trained GT -> GT: each step
  encodes and decodes the HR clip and takes the Charbonnier loss against it (run it with ``data.scale = 1``;
  federated like any model, or centrally). Its ``model.safetensors`` is the input of the next phase.
* ``frozen`` (the paper's best, the default): loads the autoencoder from ``autoencoder_checkpoint`` and keeps
  it out of :meth:`optimizer_groups` (its parameters never change); cleaning and backbone train.
* ``joint``: everything trains together (from ``autoencoder_checkpoint`` when given: "pre-training + joint").

Sizes (``fedvsr models``): ``paper`` (BasicVSR backbone) 9.76 M against Table I's 9.2 M (+6.1 %), the
backbone alone 6.29 M (5.9 M, +6.6 %); ``paper-basicvsr++`` 10.79 M (10.6 M, +1.8 %), the backbone alone
7.32 M (7.3 M, +0.3 %). The autoencoder is 1.99 M (its SpyNet 1.44 M of it), the cleaning net 1.48 M: FCA2
adds 3.47 M to a backbone, Table I 3.3 M.

Readings (the paper leaves these open; the authors' code settles most):

* Grouping when the channels do not divide (``K * (S - O) + O != C*N``; of Table VI's pairs on 7 RGB frames
  only (9, 3) divides): ``group_fit = pad`` (default) reads eq. (3) literally, every group at stride S - O,
  the stack padded with zero channels up to ``K * (S - O) + O`` and the decoder dropping them, so adjacent
  groups share exactly O channels and Table VI's O = 0 rows stay overlap-free; ``group_fit = shift`` shifts
  the last group back to end at channel C*N (it then shares more than O channels with its neighbour:
  (9, 0) gives [0, 9), [9, 18), [12, 21), 6 shared channels).

* Cleaning: RealBasicVSR's cleaning module (64 channels, 20 residual blocks), 3 fixed passes (the paper;
  the authors' code stops early when the mean residue is small). It is trained with the backbone, not
  pretrained on PIPAL (not available here). At that size it is 46 % of fca2/paper's FLOPs (41 % of its CPU
  time, ``benchmarks/results/fca2_inference``); Table IV has cleaning add only 7 ms to 50 (12 % of FCA2 +
  BasicVSR++'s 57 ms), so ``paper-light`` sizes it to that budget: 32 channels, 12 blocks, still 3 passes
  (11 % of its FLOPs, 9 % of its CPU time). Even so FCA2 is slower than its backbone alone on the CPU: the
  decoder at the HR size takes 45 % of paper-light's time.
* Flow guidance: the authors' recurrent fusion (a frame-sized state warped by SpyNet flow, concatenated with
  the next frame, a conv and 30 residual blocks of C channels); the paper's text says only that the flows
  "are concatenated into a single input".
* Encoder / decoder: one encoder shared by all groups (S -> C channels) and one decoder (C -> S): a 3x3 head
  (spatial coding), 3 blocks of (two 3x3 convs: spatial) + (two 1x1 convs and channel attention: channel
  coding), 64 features, a 3x3 tail; after frame averaging, a small residual refinement over all C*N
  channels (16 features, 2 blocks), as the authors' code. Colour correction uses the cleaned LR frames.
* ``grouping=False`` (Table III's first row, "compressing multiple frames into a fixed number in a single
  step"): one encoder maps all C*N channels to K*C, one decoder back.
* Encoder-side colour correction (Table VII) matches each compressed frame to the LR frame at its group's
  centre.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedvsr.models.base import StepHooks, VSRModel, charbonnier
from fedvsr.models.fca2_blocks import CleaningNet, FrameAutoencoder
from fedvsr.models.registry import build_model, get_entry, register_model
from fedvsr.models.spynet import SPYNET_CHANNELS, FlowFreeze

MODES = ("frozen", "joint", "pretrain")
#: the least value of each size argument, checked in this order
MIN_SIZES = {
    "num_frames": 1,
    "in_channels": 1,
    "features": 1,
    "clean_features": 1,
    "clean_passes": 1,
    "blocks": 0,
    "flow_blocks": 0,
    "clean_blocks": 0,
    "refine_blocks": 0,
    "refine_features": 0,
}
AE_PREFIX = "autoencoder."

_PAPER = {
    "num_frames": 7,
    "group_size": 9,
    "overlap": 3,
    "features": 64,
    "blocks": 3,
    "flow_blocks": 30,
    "clean_features": 64,
    "clean_blocks": 20,
}
# cleaning sized to Table IV's budget: it adds 7 ms to 50 (57 with it, 12 %); 32 x 12 blocks, 3 passes, is 11 % of
# fca2/paper-light's FLOPs (137 of 1199 GFLOPs on 100 frames of 32x32; RealBasicVSR's 64 x 20 is 46 %, 908 of 1970)
_LIGHT_CLEANING = {"clean_features": 32, "clean_blocks": 12}
_TINY = {
    "num_frames": 7,
    "group_size": 9,
    "overlap": 3,
    "features": 8,
    "blocks": 1,
    "flow_blocks": 1,
    "refine_features": 4,
    "refine_blocks": 1,
    "clean_features": 8,
    "clean_blocks": 1,
    "spynet_channels": [4, 8, 4, 2],
}


def autoencoder_state_path(path: str) -> Path:
    """A run folder (its ``model.safetensors``) or a weights file."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise ValueError(
            f"autoencoder_checkpoint = {path!r} is neither a weights file nor a run folder holding "
            f"model.safetensors (run phase 1 first: model.options.mode = pretrain, data.scale = 1)"
        )
    return p


def read_autoencoder_state(path: str, shapes_only: bool = False) -> dict[str, Any]:
    """The autoencoder's entries (``autoencoder.`` prefix removed) of a pretraining run's weights; with
    ``shapes_only`` only their shapes (read from the safetensors header, nothing loaded)."""
    p = autoencoder_state_path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            keys = list(f.keys())
            if shapes_only:
                state = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
            else:
                state = {k: f.get_tensor(k) for k in keys}
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        if shapes_only:
            state = {k: tuple(v.shape) for k, v in state.items()}
    ae = {k[len(AE_PREFIX) :]: v for k, v in state.items() if k.startswith(AE_PREFIX)}
    if not ae:
        raise ValueError(f"autoencoder_checkpoint = {path!r} holds no {AE_PREFIX}* weights (not an FCA2 run)")
    return ae


def _check_arguments(mode: str, flow_guidance: bool, **sizes: int) -> None:
    """ValueError for a mode FCA2 does not have, a size below its least value (:data:`MIN_SIZES`), or flow guidance
    over fewer than 2 frames."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for name, least in MIN_SIZES.items():
        if int(sizes[name]) < least:
            raise ValueError(f"{name} must be >= {least}, got {sizes[name]}")
    if int(sizes["num_frames"]) < 2 and flow_guidance:
        raise ValueError(f"num_frames = {sizes['num_frames']}: flow guidance needs at least 2 frames")


@register_model(
    "fca2",
    presets={
        "paper": {**_PAPER, "backbone": "basicvsr", "backbone_preset": "paper"},
        "paper-basicvsr++": {**_PAPER, "backbone": "basicvsr++", "backbone_preset": "paper"},
        "paper-light": {**_PAPER, **_LIGHT_CLEANING, "backbone": "basicvsr", "backbone_preset": "paper"},
        "small": {
            **_PAPER,
            "features": 32,
            "blocks": 2,
            "flow_blocks": 5,
            "clean_features": 32,
            "clean_blocks": 5,
            "backbone": "basicvsr",
            "backbone_preset": "small",
        },
        "tiny": {**_TINY, "backbone": "basicvsr", "backbone_preset": "tiny"},
        "tiny-basicvsr++": {**_TINY, "backbone": "basicvsr++", "backbone_preset": "tiny"},
    },
    description="FCA2: frame-compression autoencoder (grouped, flow-guided) around a VSR backbone",
)
class FCA2(FlowFreeze, VSRModel):
    """FCA2: clean, compress N frames into K (grouped coding), super-resolve the K with a backbone, decode to N."""

    center_output = False
    rotation_safe = True

    def __init__(
        self,
        backbone: str = "basicvsr",
        backbone_preset: str = "paper",
        backbone_options: dict | None = None,
        mode: str = "frozen",
        autoencoder_checkpoint: str = "",
        num_frames: int = 7,
        scale: int = 4,
        in_channels: int = 3,
        group_size: int = 9,
        overlap: int = 3,
        group_fit: str = "pad",
        grouping: bool = True,
        flow_guidance: bool = True,
        color_correction: str = "decoder",
        color_eps: float = 1e-5,
        features: int = 64,
        blocks: int = 3,
        flow_blocks: int = 30,
        refine_features: int = 16,
        refine_blocks: int = 2,
        cleaning: bool = True,
        clean_features: int = 64,
        clean_blocks: int = 20,
        clean_passes: int = 3,
        spynet_weights: str = "",
        spynet_frozen_iters: int = 5000,
        spynet_channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS,
    ) -> None:
        super().__init__()
        _check_arguments(
            mode,
            flow_guidance,
            num_frames=num_frames,
            in_channels=in_channels,
            features=features,
            clean_features=clean_features,
            clean_passes=clean_passes,
            blocks=blocks,
            flow_blocks=flow_blocks,
            clean_blocks=clean_blocks,
            refine_blocks=refine_blocks,
            refine_features=refine_features,
        )
        self.mode = mode
        self.num_frames, self.in_channels = int(num_frames), int(in_channels)
        self.scale = 1 if mode == "pretrain" else int(scale)
        self.init_flow_freeze(spynet_frozen_iters)
        self.autoencoder = FrameAutoencoder(
            num_frames,
            in_channels,
            group_size,
            overlap,
            features,
            blocks,
            flow_blocks,
            refine_features,
            refine_blocks,
            grouping,
            flow_guidance,
            color_correction,
            color_eps,
            spynet_weights,
            spynet_channels,
            group_fit,
        )
        self.cleaning: CleaningNet | None = None
        self.backbone: nn.Module | None = None
        if mode != "pretrain":
            if cleaning:
                self.cleaning = CleaningNet(in_channels, clean_features, clean_blocks, clean_passes)
            self.backbone = self._build_backbone(backbone, backbone_preset, backbone_options or {})
        self.checkpoint = autoencoder_checkpoint
        if autoencoder_checkpoint:
            self.load_autoencoder(autoencoder_checkpoint)
        if mode == "frozen":
            self.autoencoder.requires_grad_(False)

    def _build_backbone(self, name: str, preset: str, options: dict) -> nn.Module:
        if name == "fca2":
            raise ValueError("backbone = 'fca2': FCA2 cannot wrap itself; use basicvsr, basicvsr++ or another family")
        try:
            entry = get_entry(name)
        except KeyError as err:
            raise ValueError(f"backbone = {name!r}: {err.args[0]}") from None
        if entry.cls.center_output:
            raise ValueError(
                f"backbone = {name!r} restores only the centre frame; FCA2 needs a backbone that "
                f"restores every frame (basicvsr, basicvsr++, vsrgan, ...)"
            )
        opts = {"scale": self.scale, **options}
        if "num_frames" in inspect.signature(entry.cls).parameters:  # the backbone sees K frames per chunk
            opts.setdefault("num_frames", self.autoencoder.num_compressed)
        try:
            model = build_model(name, preset, opts)
        except KeyError as err:
            raise ValueError(f"backbone_preset = {preset!r}: {err.args[0]}") from None
        if int(getattr(model, "scale", self.scale)) != self.scale:
            raise ValueError(f"backbone {name!r} upscales x{model.scale}, FCA2 x{self.scale}")
        return model

    # ------------------------------------------------------------------ checkpoint of phase 1
    def load_autoencoder(self, path: str) -> None:
        """Load (or, on the meta device, check the shapes of) a pretraining run's autoencoder weights."""
        meta = torch.empty(0).device.type == "meta"
        state = read_autoencoder_state(path, shapes_only=meta)
        own = self.autoencoder.state_dict()
        missing = sorted(set(own) - set(state))
        wrong = sorted(
            k for k in own if k in state and tuple(state[k] if meta else state[k].shape) != tuple(own[k].shape)
        )
        if missing or wrong:
            raise ValueError(
                f"autoencoder_checkpoint = {path!r} does not fit this autoencoder (trained with other "
                f"group_size / overlap / switches / sizes?): missing {missing[:3]}, wrong shapes "
                f"{wrong[:3]}"
            )
        if not meta:
            self.autoencoder.load_state_dict({k: state[k] for k in own})

    def check_experiment(self, cfg: Any) -> None:
        """Cross-key checks the config runs on the meta-built model (ValueError -> ConfigError)."""
        if self.mode == "frozen" and not self.checkpoint:
            raise ValueError(
                "mode = 'frozen' (the default: the paper's pretrain-then-freeze recipe) needs "
                "autoencoder_checkpoint = a pretraining run folder or its model.safetensors; run phase 1 "
                "with model.options.mode = pretrain and data.scale = 1 first, or use mode = joint"
            )
        if self.mode == "pretrain" and int(cfg.data.scale) != 1:
            raise ValueError(
                f"mode = 'pretrain' trains the autoencoder GT -> GT at scale 1; set data.scale = 1 "
                f"(got data.scale = {cfg.data.scale})"
            )

    # ------------------------------------------------------------------ forward
    def _chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, t, c, h, w) -> (b * chunks, N, c, h, w)``, the last chunk padded with its last frame."""
        b, t, c, h, w = x.shape
        n = self.num_frames
        chunks = -(-t // n)
        if chunks * n != t:
            x = torch.cat([x, x[:, -1:].expand(b, chunks * n - t, c, h, w)], dim=1)
        return x.reshape(b * chunks, n, c, h, w)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr: (b, t, c, h, w) -> (b, t, c, s*h, s*w)`` (``s = 1`` in ``pretrain`` mode), any ``t >= 1``."""
        if lr.dim() != 5 or lr.shape[2] != self.in_channels:
            raise ValueError(f"FCA2 expects lr of shape (b, t, {self.in_channels}, h, w), got {tuple(lr.shape)}")
        b, t, c, h, w = lr.shape
        x = self.cleaning(lr) if self.cleaning is not None else lr
        chunks = self._chunks(x)  # (b * m, N, c, h, w)
        m = chunks.shape[0] // b
        ae = self.autoencoder
        z = ae.encode(chunks, self.flow_frozen)  # (b * m, K, c, h, w)
        if self.backbone is not None:
            k = z.shape[1]
            seq = self.backbone(z.reshape(b, m * k, c, h, w))  # every chunk's compressed frames, one sequence
            z = seq.reshape(b * m, k, c, h * self.scale, w * self.scale)
        out = ae.decode(z, chunks)
        return out.reshape(b, m * self.num_frames, c, h * self.scale, w * self.scale)[:, :t]

    # ------------------------------------------------------------------ training
    def count_iteration(self) -> None:
        """One training step: FCA2's counter (its autoencoder's SpyNet) and the backbone's (its own SpyNet)."""
        super().count_iteration()
        if self.backbone is not None and hasattr(self.backbone, "count_iteration"):
            self.backbone.count_iteration()

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every trainable parameter; in ``frozen`` mode the autoencoder's are excluded (and need no gradient)."""
        frozen = {id(p) for p in self.autoencoder.parameters()} if self.mode == "frozen" else set()
        return {"model": [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]}

    def training_step(self, batch: Any, optimizers: dict[str, torch.optim.Optimizer], hooks: StepHooks) -> torch.Tensor:
        """One step: GT -> GT in ``pretrain`` mode (input and target the HR clip), else LR -> HR."""
        lr, hr = batch
        x = hr if self.mode == "pretrain" else lr
        sr = self(x)
        target = self.target(hr)
        loss = hooks.objective(charbonnier(sr, target, self.charbonnier_eps), sr, target)
        hooks.apply(loss, optimizers["model"])
        self.count_iteration()
        return loss.detach()
