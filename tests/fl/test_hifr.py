"""L_HiFr (FedVSR eq. 7-10) against Haar coefficients worked out by hand.

One-level Haar of a 2x2 block [[a, b], [c, d]] (h = [1, 1]/sqrt2, g = [1, -1]/sqrt2 on rows then
columns): LL = (a+b+c+d)/2 and, up to sign, the details (a+b-c-d)/2, (a-b+c-d)/2, (a-b-c+d)/2.
In 3D a 2x2x2 cube gives the 8 coefficients sum(+-x)/(2*sqrt2).
"""

import math

import pytest
import torch

from fedvsr.fl.hifr import HIFR_MODES, hifr_loss

E = 1e-3


def charb(d: float, eps: float = E) -> float:
    return math.sqrt(d * d + eps * eps)


def test_modes_constant():
    assert HIFR_MODES == ("2d", "3d")


def test_2x2_frame_by_hand():
    sr = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).reshape(1, 1, 2, 2)
    hr = torch.zeros_like(sr)
    # details: (1+2-3-4)/2 = -2, (1-2+3-4)/2 = -1, (1-2-3+4)/2 = 0; LL = 5 is ignored
    expected = (charb(-2.0) + charb(-1.0) + charb(0.0)) / 3
    assert hifr_loss(sr, hr).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx((2.00000025 + 1.0000005 + 0.001) / 3, rel=1e-9)


def test_4x4_checkerboard_difference_in_clip_with_nonzero_hr():
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 2, 4, 4, dtype=torch.float64)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64).repeat(2, 2)
    sr = hr + checker
    # every 2x2 block of the difference is [[1, -1], [-1, 1]]: details 0, 0, (1+1+1+1)/2 = 2
    expected = (charb(0.0) + charb(0.0) + charb(2.0)) / 3
    assert hifr_loss(sr, hr, mode="2d").item() == pytest.approx(expected, rel=1e-9)


def test_low_band_is_ignored():
    hr = torch.rand(1, 3, 4, 6, dtype=torch.float64)
    sr = hr + 7.0  # a constant shift only moves LL (by 7*2 = 14 per block)
    assert hifr_loss(sr, hr).item() == pytest.approx(E, rel=1e-9)


def test_odd_size_symmetric_padding_by_hand():
    sr = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64).reshape(1, 1, 3, 3)
    hr = torch.zeros_like(sr)
    # the odd axes get their last sample repeated: [[1,2,3,3],[4,5,6,6],[7,8,9,9],[7,8,9,9]];
    # blocks [[1,2],[4,5]] -> -3,-1,0; [[3,3],[6,6]] -> -3,0,0; [[7,8],[7,8]] -> 0,-1,0; [[9,9],[9,9]] -> 0,0,0
    expected = (2 * charb(3.0) + 2 * charb(1.0) + 8 * charb(0.0)) / 12
    assert hifr_loss(sr, hr).item() == pytest.approx(expected, rel=1e-12)


def test_3d_odd_frames_by_hand():
    # three frames, all 1, all 3, all 5 (2x2): time is padded to 1, 3, 5, 5
    sr = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64).reshape(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)
    hr = torch.zeros(1, 3, 1, 2, 2, dtype=torch.float64)
    # cube (1, 3): temporal detail (4 - 12)/(2*sqrt2) = -2*sqrt2, 6 zeros; cube (5, 5): 7 zeros
    expected = (charb(2 * math.sqrt(2)) + 13 * charb(0.0)) / 14
    assert hifr_loss(sr, hr, mode="3d").item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mode", HIFR_MODES)
@pytest.mark.parametrize("size", [(4, 8, 8), (5, 8, 8), (7, 9, 11), (3, 5, 6), (2, 3, 3)])
def test_constant_offset_costs_exactly_eps(mode, size):
    # a colour offset has no high-frequency content at any size: odd T (5 for VSRGAN, 7 for BasicVSR), odd H, W
    t, h, w = size
    hr = torch.rand(2, t, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(t * h * w))
    offset = torch.tensor([0.1, -0.25, 0.5], dtype=torch.float64).reshape(1, 1, 3, 1, 1)
    assert hifr_loss(hr + offset, hr, mode=mode).item() == pytest.approx(E, rel=1e-12)
    assert hifr_loss(hr[:, 0] + 7.0, hr[:, 0], mode="2d").item() == pytest.approx(E, rel=1e-12)


def test_equal_inputs_give_exactly_eps_floor():
    x = torch.rand(2, 3, 3, 8, 8)
    assert hifr_loss(x, x.clone()).item() == pytest.approx(E, rel=1e-6)
    assert hifr_loss(x, x.clone(), mode="3d").item() == pytest.approx(E, rel=1e-6)
    assert hifr_loss(x, x.clone(), eps=0.25).item() == pytest.approx(0.25, rel=1e-6)


def test_3d_by_hand_temporal_step():
    # one 2x2x2 cube: frame 0 all 1, frame 1 all 3
    sr = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(1, 2, 1, 1, 1).expand(1, 2, 1, 2, 2)
    hr = torch.zeros(1, 2, 1, 2, 2, dtype=torch.float64)
    # LLL = (4*1 + 4*3)/(2*sqrt2) = 4*sqrt2 is dropped; the temporal detail is
    # (4*1 - 4*3)/(2*sqrt2) = -2*sqrt2 (square 8); the 6 other high bands are 0
    expected = (charb(-2 * math.sqrt(2)) + 6 * charb(0.0)) / 7
    assert hifr_loss(sr, hr, mode="3d").item() == pytest.approx(expected, rel=1e-12)
    # the same clip seen frame by frame has no spatial detail at all
    assert hifr_loss(sr, hr, mode="2d").item() == pytest.approx(E, rel=1e-9)


def test_3d_delta_voxel_by_hand():
    sr = torch.zeros(1, 2, 1, 2, 2, dtype=torch.float64)
    sr[0, 0, 0, 0, 0] = 2 * math.sqrt(2)
    # a single voxel of value 2*sqrt2 gives +-1 in all 8 bands; 7 of them are kept
    expected = charb(1.0)
    assert hifr_loss(sr, torch.zeros_like(sr), mode="3d").item() == pytest.approx(expected, rel=1e-12)


def test_3d_odd_sizes_run():
    x = torch.rand(2, 3, 3, 5, 7)
    y = torch.rand(2, 3, 3, 5, 7)
    out = hifr_loss(x, y, mode="3d")
    assert out.shape == () and torch.isfinite(out) and out.item() > E


def test_gradient_exists_and_is_finite_at_zero_difference():
    hr = torch.rand(1, 2, 3, 6, 6)
    for mode in HIFR_MODES:
        sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
        hifr_loss(sr, hr, mode=mode).backward()
        assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
        same = hr.clone().requires_grad_(True)
        hifr_loss(same, hr, mode=mode).backward()
        assert torch.equal(same.grad, torch.zeros_like(hr))


def test_4d_frames_and_float32():
    sr = torch.rand(4, 3, 8, 8)
    out = hifr_loss(sr, torch.rand(4, 3, 8, 8))
    assert out.dtype == torch.float32 and out.shape == ()


def test_errors():
    a = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"sr \(1, 3, 4, 4\) vs hr \(1, 3, 4, 6\)"):
        hifr_loss(a, torch.rand(1, 3, 4, 6))
    with pytest.raises(ValueError, match="needs a time axis"):
        hifr_loss(a, a, mode="3d")
    with pytest.raises(ValueError, match=r"one of \('2d', '3d'\), got 'wavelet'"):
        hifr_loss(a, a, mode="wavelet")
    with pytest.raises(ValueError, match="eps must be > 0"):
        hifr_loss(a, a, eps=0.0)
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\)"):
        hifr_loss(a[0], a[0])
