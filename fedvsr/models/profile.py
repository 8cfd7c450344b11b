"""Model size and cost: parameters and FLOPs of one forward pass, for any registered model.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts two
FLOPs per multiply-accumulate (MAC) of convolutions and matrix products and nothing else (no
FFTs, sampling, interpolation or element-wise work). Papers differ in what they call FLOPs:
many report MACs; FCVSR's Table I reports 2 x MACs (its authors double thop's MAC count), i.e.
the ``flops`` figure here. :func:`profile_model` returns both ``flops`` and ``macs``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedvsr.models.registry import build_model, count_params


def count_flops(model: nn.Module, lr_hw: tuple[int, int] = (64, 64), batch: int = 1, in_channels: int = 3) -> int:
    """FLOPs (2 per MAC) of one forward pass on a ``(batch, num_frames, in_channels, h, w)`` clip.

    Runs under ``torch.no_grad`` in eval mode (the model's mode is restored afterwards) on a
    random input placed on the model's device (CPU for :func:`profile_model`).
    """
    h, w = lr_hw
    num_frames = int(getattr(model, "num_frames", 1))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    lr = torch.rand(batch, num_frames, in_channels, h, w, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(lr)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def profile_model(name: str, preset: str, lr_hw: tuple[int, int] = (64, 64)) -> dict[str, Any]:
    """Build registered model ``name`` with ``preset`` on the meta device and measure it.

    Returns ``{"name", "preset", "params", "flops", "macs", "num_frames", "center_output",
    "scale", "lr_hw"}``; ``flops`` is FlopCounterMode's count for one LR clip of size ``lr_hw``
    (batch 1) and ``macs = flops // 2``. On the meta device nothing is allocated or computed, only
    shapes propagate, so a 5-TFLOP model is measured in seconds (the counts equal a CPU run's: every
    shipped family is tested both ways in ``tests/models/test_profile.py``).
    """
    with torch.device("meta"):
        model = build_model(name, preset)
    flops = count_flops(model, lr_hw=lr_hw, batch=1)
    return {
        "name": name,
        "preset": preset,
        "params": count_params(model),
        "flops": flops,
        "macs": flops // 2,
        "num_frames": int(model.num_frames),
        "center_output": bool(model.center_output),
        "scale": int(model.scale),
        "lr_hw": tuple(lr_hw),
    }
