"""Image losses of VSRGAN (arXiv:2505.10589 Sec. 3.1.7): content (MSE / Charbonnier), edge-aware
(Laplacian with the 4- or 8-neighbour kernel, Sobel, Ricker, Laplacian pyramid, gradient), SSIM, the
adversarial loss and an optional VGG perceptual ("LPIPS") loss from a local weights file.

Every loss takes ``(pred, target)`` of any shape ``(..., c, H, W)`` (frames are flattened into the
batch) and returns a scalar mean. The edge losses filter each channel separately with replicate
padding and compare the responses with an L2 (``distance="l2"``, the paper's example) or L1 distance;
like any derivative filter they are blind to a constant offset between the images, which the content
loss sees. Each is zero for identical images and positive otherwise (tested).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedvsr.models.base import charbonnier

DISTANCES = ("l1", "l2")

LAPLACIAN_4 = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))  # von Neumann neighbourhood
LAPLACIAN_8 = ((1.0, 1.0, 1.0), (1.0, -8.0, 1.0), (1.0, 1.0, 1.0))  # Moore neighbourhood
SOBEL_H = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_V = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))


def _frames(x: torch.Tensor) -> torch.Tensor:
    """``(..., c, H, W) -> (n, c, H, W)``."""
    return x.reshape(-1, *x.shape[-3:])


def distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    if kind == "l2":
        return F.mse_loss(a, b)
    if kind == "l1":
        return F.l1_loss(a, b)
    raise ValueError(f"unknown distance {kind!r}; allowed: {', '.join(DISTANCES)}")


def ricker_kernel(width: float = 0.55, size: int = 3) -> torch.Tensor:
    """2-D Ricker (Mexican hat) wavelet ``(1/(pi s^4)) (1 - r^2/(2 s^2)) exp(-r^2/(2 s^2))`` sampled on a
    ``size x size`` grid; with ``s = 0.55`` its centre is ``1/(pi s^4) = 3.4786``, the paper's value."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Ricker kernel size must be odd and >= 1, got {size}")
    if width <= 0:
        raise ValueError(f"Ricker width must be > 0, got {width}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    s2 = width * width
    k = (1.0 - r2 / (2 * s2)) * torch.exp(-r2 / (2 * s2)) / (math.pi * s2 * s2)
    return k.float()


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter each channel of ``(n, c, H, W)`` with one ``(k, k)`` kernel, replicate padding (same size)."""
    c, k = x.shape[1], kernel.shape[-1]
    weight = kernel.to(x).expand(c, 1, k, k)
    return F.conv2d(F.pad(x, [k // 2] * 4, mode="replicate"), weight, groups=c)


def filter_loss(
    pred: torch.Tensor, target: torch.Tensor, kernels: list[torch.Tensor], dist: str = "l2"
) -> torch.Tensor:
    """Mean distance between the filter responses of ``pred`` and ``target``, summed over ``kernels``."""
    p, t = _frames(pred), _frames(target)
    return sum(distance(filter2d(p, k), filter2d(t, k), dist) for k in kernels)


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, neighbours: int = 8, dist: str = "l2") -> torch.Tensor:
    """Laplacian loss with the 4-neighbour (von Neumann) or 8-neighbour (Moore) kernel."""
    if neighbours not in (4, 8):
        raise ValueError(f"Laplacian neighbours must be 4 or 8, got {neighbours}")
    return filter_loss(pred, target, [torch.tensor(LAPLACIAN_4 if neighbours == 4 else LAPLACIAN_8)], dist)


def sobel_loss(pred: torch.Tensor, target: torch.Tensor, dist: str = "l2") -> torch.Tensor:
    """Sobel loss: horizontal plus vertical Sobel responses."""
    return filter_loss(pred, target, [torch.tensor(SOBEL_H), torch.tensor(SOBEL_V)], dist)


def ricker_loss(
    pred: torch.Tensor, target: torch.Tensor, width: float = 0.55, size: int = 3, dist: str = "l2"
) -> torch.Tensor:
    """Ricker (Mexican hat) loss, the paper's own: width 0.55 on a 3x3 grid."""
    return filter_loss(pred, target, [ricker_kernel(width, size)], dist)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, dist: str = "l2") -> torch.Tensor:
    """First-order finite differences along H and W."""
    p, t = _frames(pred), _frames(target)
    dh = distance(p[..., 1:, :] - p[..., :-1, :], t[..., 1:, :] - t[..., :-1, :], dist)
    dw = distance(p[..., :, 1:] - p[..., :, :-1], t[..., :, 1:] - t[..., :, :-1], dist)
    return dh + dw


_GAUSS5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``[L_0, ..., L_(n-1), G_n]`` of ``(n, c, H, W)``: ``G_(k+1)`` = 5x5 Gaussian blur of ``G_k`` taken at every
    other pixel, ``L_k = G_k - up(G_(k+1))`` (bilinear), stopping early when a side would drop below 2."""
    kernel = torch.outer(_GAUSS5, _GAUSS5)
    out, g = [], x
    for _ in range(levels):
        if min(g.shape[-2:]) < 4:
            break
        down = filter2d(g, kernel)[..., ::2, ::2]
        out.append(g - F.interpolate(down, size=g.shape[-2:], mode="bilinear", align_corners=False))
        g = down
    out.append(g)
    return out


def laplacian_pyramid_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 3, dist: str = "l1") -> torch.Tensor:
    """Mean over the pyramid's bands (the ``levels`` Laplacian bands and the coarsest Gaussian) of the
    band-wise distance (L1, as LapLoss)."""
    bands = zip(laplacian_pyramid(_frames(pred), levels), laplacian_pyramid(_frames(target), levels), strict=True)
    losses = [distance(p, t, dist) for p, t in bands]
    return sum(losses) / len(losses)


def ssim(
    pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Mean SSIM (Gaussian window, valid positions, per channel) of ``(..., c, H, W)`` images; the window
    shrinks to the image for images smaller than it."""
    p, t = _frames(pred), _frames(target)
    size = min(window, p.shape[-2], p.shape[-1])
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma * sigma))
    g = (g / g.sum()).float()
    kernel = torch.outer(g, g).to(p).expand(p.shape[1], 1, size, size)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=p.shape[1])

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM``."""
    return 1.0 - ssim(pred, target)


def content_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse", eps: float = 1e-3) -> torch.Tensor:
    """The direct (content) loss: MSE (eq. 20, the paper's choice) or Charbonnier (eq. 21)."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "charbonnier":
        return charbonnier(pred, target, eps)
    raise ValueError(f"unknown content loss {kind!r}; allowed: mse, charbonnier")


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of the discriminator's logits against all-real or all-fake labels."""
    labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


# ------------------------------------------------------------------------------ VGG perceptual ("LPIPS")
# VGG-19's ``features`` layout (torchvision's key names ``features.<i>.weight``): channel counts, "M" = max-pool
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def vgg19_features(layers: int = 36) -> nn.Sequential:
    """The first ``layers`` modules of VGG-19's feature extractor (36: through conv5_4 and its ReLU, without
    the last pooling), untrained; load weights with :func:`load_vgg19`."""
    mods: list[nn.Module] = []
    c = 3
    for v in _VGG19:
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2))
        else:
            mods += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return nn.Sequential(*mods[:layers])


def load_vgg19(path: str | Path, layers: int = 36) -> nn.Sequential:
    """VGG-19 features from a local state-dict file (torchvision's ``vgg19`` keys, with or without the
    ``features.`` prefix; ``.safetensors`` or a ``torch.save`` file read with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    net = vgg19_features(layers)
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path} is not a VGG-19 state dict: missing {', '.join(missing[:4])}")
    net.load_state_dict({k: state[k] for k in wanted})
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Distance between VGG-19 features (the first 36 layers, as the paper) of ImageNet-normalised images.

    The network is kept out of the state dict (not trained, not federated, not checkpointed): it is
    loaded from a local file and moved to the images' device on use."""

    def __init__(self, path: str | Path, layers: int = 36, dist: str = "l1") -> None:
        super().__init__()
        self._net = (load_vgg19(path, layers),)  # a tuple: not a registered submodule
        self.dist = dist
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net = self._net[0]
        if next(net.parameters()).device != pred.device:
            self._net = (net.to(pred.device),)
            net = self._net[0]
        p = (_frames(pred) - self.mean) / self.std
        t = (_frames(target) - self.mean) / self.std
        return distance(net(p), net(t), self.dist)
