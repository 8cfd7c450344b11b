"""SpyNet optical flow, flow warping, and the iteration counter that keeps a flow network frozen early on.

A. Ranjan, M. J. Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR 2017, in the form
BasicVSR / BasicVSR++ / FCA2 use it (BasicSR's ``spynet_arch.py``): six levels of five 7x7 convolutions
(8 -> 32 -> 64 -> 32 -> 16 -> 2, ReLU between), no batch norm, ImageNet mean / std normalisation, inputs
resized to a multiple of 32. 1.44 M parameters. ``spynet_channels`` narrows the four hidden widths (the
``tiny`` presets use 4, 8, 4, 2, so that CPU tests run in seconds); the paper presets keep SpyNet's own.

No weights are downloaded: SpyNet trains from scratch with the network around it, or loads a local
BasicSR-format file (``spynet_weights``: a state dict, optionally under ``"params"``; the keys
``basic_module.{level}.basic_module.{0,2,4,6,8}.{weight,bias}``). As in BasicVSR and FCA2 (Sec. IV-A: "we
keep the parameters of the optical flow network frozen for the first 5,000 iterations"), a model counts its
training steps in a float buffer (so federated averaging carries it: the global count moves by the mean
number of local steps) and computes flows without gradients while ``iteration < spynet_frozen_iters``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def flow_warp(
    x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Warp ``x: (n, c, h, w)`` by ``flow: (n, h, w, 2)`` (pixels, x then y): output(p) = x(p + flow(p))."""
    _, _, h, w = x.shape
    grid_y, grid_x = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    grid = torch.stack((grid_x, grid_y), 2)  # (h, w, 2)
    vgrid = grid + flow
    vx = 2.0 * vgrid[..., 0] / max(w - 1, 1) - 1.0
    vy = 2.0 * vgrid[..., 1] / max(h - 1, 1) - 1.0
    return F.grid_sample(
        x, torch.stack((vx, vy), dim=3), mode=interp_mode, padding_mode=padding_mode, align_corners=True
    )


#: SpyNet's widths (the four hidden layers of each level); tiny presets narrow them (same architecture)
SPYNET_CHANNELS = (32, 64, 32, 16)


class SpyNetBasicModule(nn.Module):
    """One pyramid level: ``[ref (3), warped supp (3), flow (2)] -> flow residual (2)``."""

    def __init__(self, channels: tuple[int, ...] = SPYNET_CHANNELS) -> None:
        super().__init__()
        chans = (8, *channels, 2)
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 7, padding=3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SpyNet: ``flow = spynet(ref, supp)`` with ``ref, supp: (n, 3, h, w)`` in [0, 1] -> ``(n, 2, h, w)``,
    the flow from ``ref`` to ``supp`` (warping ``supp`` by it aligns it with ``ref``)."""

    levels = 6

    def __init__(self, weights: str = "", channels: tuple[int, ...] | list[int] = SPYNET_CHANNELS) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"spynet_channels must be 4 positive widths (SpyNet's: 32, 64, 32, 16), got {channels}")
        if weights and channels != SPYNET_CHANNELS:
            raise ValueError(
                f"spynet_weights needs SpyNet's own widths (32, 64, 32, 16), got spynet_channels = {channels}"
            )
        self.basic_module = nn.ModuleList([SpyNetBasicModule(channels) for _ in range(self.levels)])
        # constants, not federated (persistent=False): a BasicSR file's copies of them are ignored
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if weights:
            load_spynet_weights(self, weights)

    def compute_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        n, _, h, w = ref.shape
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(self.levels - 1):
            refs.append(F.avg_pool2d(refs[-1], 2, 2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], 2, 2, count_include_pad=False))
        refs, supps = refs[::-1], supps[::-1]
        flow = ref.new_zeros(n, 2, h // 32, w // 32)
        for level in range(self.levels):
            if level == 0:
                up = flow
            else:
                up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), padding_mode="border")
            flow = up + self.basic_module[level](torch.cat([refs[level], warped, up], 1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[2:]
        h_up, w_up = -(-h // 32) * 32, -(-w // 32) * 32
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.compute_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / w_up, h / h_up], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
        return flow * scale


def load_spynet_weights(spynet: SpyNet, path: str) -> None:
    """Load a local BasicSR-format SpyNet file (``.pth`` read with ``weights_only=True``, or ``.safetensors``)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(
            f"spynet_weights = {path!r} is not a file (a local BasicSR-format SpyNet state dict; nothing is downloaded)"
        )
    if torch.empty(0).device.type == "meta":  # the config check builds on the meta device: nothing to load
        return
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
    for wrapper in ("params", "params_ema", "state_dict"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module.").removeprefix("spynet."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k not in ("mean", "std")}
    missing, unexpected = spynet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"spynet_weights = {path!r} is not a BasicSR SpyNet state dict: missing keys "
            f"{missing[:4]}, unexpected keys {unexpected[:4]}"
        )


class FlowFreeze:
    """Mixin state for a model with a SpyNet: a float ``iteration`` buffer (federated like a weight) and the
    number of initial iterations during which the flow network gets no gradient."""

    def init_flow_freeze(self, frozen_iters: int) -> None:
        if int(frozen_iters) < 0:
            raise ValueError(f"spynet_frozen_iters must be >= 0, got {frozen_iters}")
        self.spynet_frozen_iters = int(frozen_iters)
        self.register_buffer("iteration", torch.zeros(()))

    @property
    def flow_frozen(self) -> bool:
        """Whether flows are computed without gradients now (training and ``iteration < spynet_frozen_iters``)."""
        if not self.training or self.spynet_frozen_iters == 0:
            return False
        it = self.iteration
        if it.device.type == "meta":
            return True
        return float(it) < self.spynet_frozen_iters

    def count_iteration(self) -> None:
        with torch.no_grad():
            self.iteration += 1
