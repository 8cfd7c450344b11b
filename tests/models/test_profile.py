"""Parameter and FLOP counting of registered models (FlopCounterMode: 2 FLOPs per MAC)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedvsr.models import build_model, count_params, get_entry, model_names
from fedvsr.models.base import VSRModel
from fedvsr.models.profile import count_flops, profile_model


class OneConv(VSRModel):
    num_frames = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = lr.shape
        return self.conv(lr.reshape(b, t * c, h, w))


def test_count_flops_of_one_convolution_by_hand():
    # 6 -> 4 channels, 3x3, on 8 x 10 pixels: 6 * 9 * 4 * 80 = 17,280 MACs, 2 FLOPs each
    model = OneConv()
    assert count_flops(model, lr_hw=(8, 10)) == 2 * 6 * 9 * 4 * 80
    assert count_flops(model, lr_hw=(8, 10), batch=3) == 3 * 2 * 6 * 9 * 4 * 80


def test_count_flops_restores_mode_and_leaves_no_graph():
    model = build_model("efvsr", "tiny")
    model.train()
    count_flops(model, lr_hw=(8, 8))
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    count_flops(model, lr_hw=(8, 8))
    assert not model.training


def test_profile_efvsr_tiny_matches_hand_count():
    # EFVSR tiny (3 frames, 16 channels, 2 residual blocks) on 64x64, in MACs per pixel:
    # head 9->16: 1296, 4 block convs + body tail 16->16: 5 * 2304 (at 64^2);
    # upsampler 16->64 at 64^2 and at 128^2: 9216 each; tail 16->3 at 256^2: 432
    macs = (1296 + 5 * 2304 + 9216) * 64**2 + 9216 * 128**2 + 432 * 256**2
    info = profile_model("efvsr", "tiny")
    assert info["macs"] == macs == 269_549_568
    assert info["flops"] == 2 * macs
    assert info["params"] == count_params(build_model("efvsr", "tiny"))
    assert (info["name"], info["preset"], info["lr_hw"]) == ("efvsr", "tiny", (64, 64))
    assert (info["num_frames"], info["center_output"], info["scale"]) == (3, True, 4)


@pytest.mark.parametrize("name", model_names())
def test_profile_works_for_every_registered_model(name):
    preset = "tiny" if "tiny" in get_entry(name).presets else next(iter(get_entry(name).presets))
    info = profile_model(name, preset, lr_hw=(16, 16))
    assert set(info) == {"name", "preset", "params", "flops", "macs", "num_frames", "center_output", "scale", "lr_hw"}
    assert info["flops"] > 0 and info["macs"] == info["flops"] // 2
    assert info["params"] == count_params(build_model(name, preset))
    # measured on the meta device: the same count as a real forward pass on the CPU
    assert info["flops"] == count_flops(build_model(name, preset), lr_hw=(16, 16))


def test_profile_fcvsr_tiny():
    info = profile_model("fcvsr", "tiny", lr_hw=(16, 16))
    assert (info["num_frames"], info["center_output"], info["scale"]) == (7, True, 4)
    assert info["flops"] == count_flops(build_model("fcvsr", "tiny"), lr_hw=(16, 16))
