"""Loss-aware aggregation (FedVSR section 4.2, Algorithm 1) against hand-computed weights.

Losses L = [0.5, 1.0, 2.0] give I = 1/L = [2, 1, 1/2], so I' = I^a = [2^a, 1, 2^-a] and
w = I' / (2^a + 1 + 2^-a). T = 10 rounds; first t = 1, middle t = 5, last t = 10.
"""

import math

import numpy as np
import pytest

from fedvsr.fl.loss_aware import (
    ALPHA_DECAYS,
    HELLINGER_THRESHOLD,
    InvalidClientLoss,
    decay_exponent,
    hellinger_distance,
    hellinger_mixing,
    hellinger_mixing_coefficient,
    inverse_loss_weight,
    loss_aware_weights,
)

LOSSES = [0.5, 1.0, 2.0]


def by_hand(a: float) -> list[float]:
    total = 2**a + 1 + 2**-a
    return [2**a / total, 1 / total, 2**-a / total]


# (decay, alpha, t, exponent worked out by hand, weights worked out by hand)
CASES = [
    ("none", 2.0, 1, 2.0, [4 / 5.25, 1 / 5.25, 0.25 / 5.25]),  # I' = [4, 1, 1/4]
    ("none", 2.0, 5, 2.0, [16 / 21, 4 / 21, 1 / 21]),
    ("none", 2.0, 10, 2.0, [16 / 21, 4 / 21, 1 / 21]),
    ("linear", 2.0, 1, 1.8, by_hand(1.8)),  # 2 * (1 - 1/10)
    ("linear", 2.0, 5, 1.0, [4 / 7, 2 / 7, 1 / 7]),  # 2 * (1 - 5/10) = 1: I' = [2, 1, 1/2]
    ("linear", 2.0, 10, 0.0, [1 / 3, 1 / 3, 1 / 3]),  # the code's schedule ends uniform
    ("linear", 1.0, 1, 0.9, by_hand(0.9)),  # the authors' code: adaptive_step = 1 - 1/T
    ("power", 2.0, 1, 2**0.9, by_hand(2**0.9)),  # 2 ** (1 - 1/10)
    ("power", 2.0, 5, math.sqrt(2), by_hand(math.sqrt(2))),  # 2 ** 0.5
    ("power", 2.0, 10, 1.0, [4 / 7, 2 / 7, 1 / 7]),  # 2 ** 0 = 1: plain inverse loss, not uniform
    ("power", 1.0, 5, 1.0, [4 / 7, 2 / 7, 1 / 7]),  # alpha = 1 never decays
]


@pytest.mark.parametrize(("decay", "alpha", "t", "exponent", "weights"), CASES)
def test_weights_for_every_decay_first_middle_last_round(decay, alpha, t, exponent, weights):
    a = decay_exponent(alpha, decay, t, 10)
    assert a == pytest.approx(exponent, rel=1e-12, abs=1e-15)
    got = loss_aware_weights(LOSSES, a)
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, weights, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0, rel=1e-15)


def test_by_hand_values_written_out():
    # 2^1.8 = 3.4822022531844965, 2^-1.8 = 0.28717458874925877, sum with 1: 4.7693768419337553
    np.testing.assert_allclose(by_hand(1.8), [0.730117, 0.209671, 0.060212], atol=1e-6)


def test_exponent_zero_is_uniform_and_unit_weight():
    assert loss_aware_weights([0.01, 3.0, 1e6, 42.0], 0.0).tolist() == [0.25] * 4
    assert inverse_loss_weight(1e-300, 0.0) == 1.0
    assert inverse_loss_weight(7.5, 0) == 1.0


def test_inverse_loss_weight_by_hand():
    assert inverse_loss_weight(0.5, 2.0) == pytest.approx(4.0, rel=1e-15)
    assert inverse_loss_weight(4.0, 0.5) == pytest.approx(0.5, rel=1e-15)  # (1/4)^0.5
    assert inverse_loss_weight(1.0, 123.0) == 1.0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (float("nan"), "is NaN"),
        (float("inf"), "is infinite"),
        (float("-inf"), "is infinite"),
        (0.0, "must be > 0, got 0.0"),
        (-1.5, "must be > 0, got -1.5"),
        ("abc", "is not a number"),
    ],
)
def test_bad_losses_raise_invalid_client_loss(bad, message):
    with pytest.raises(InvalidClientLoss, match=message):
        inverse_loss_weight(bad, 1.0)
    with pytest.raises(InvalidClientLoss, match=message) as info:
        loss_aware_weights([1.0, 2.0, bad], 1.0)
    assert info.value.index == 2 and "client #2" in info.value.reason
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidClientLoss):  # even when the exponent would ignore the loss
        loss_aware_weights([bad], 0.0)


def test_extreme_values_stay_finite():
    w = loss_aware_weights([1e-300, 1.0, 1e300], 50.0)
    assert np.all(np.isfinite(w)) and w.tolist() == [1.0, 0.0, 0.0]
    w = loss_aware_weights([1e-300, 1e-300, 1e-300], 1e6)
    np.testing.assert_allclose(w, [1 / 3] * 3, rtol=1e-15)
    w = loss_aware_weights([5e-324, 1.7e308], 1e300)
    assert np.all(np.isfinite(w)) and w.sum() == 1.0
    assert math.isfinite(inverse_loss_weight(1e-300, 50.0))
    assert inverse_loss_weight(1e300, 50.0) == 0.0


def test_decay_exponent_errors():
    with pytest.raises(ValueError, match=r"one of \('none', 'linear', 'power'\), got 'cosine'"):
        decay_exponent(1.0, "cosine", 1, 10)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -0.5"):
        decay_exponent(-0.5, "linear", 1, 10)
    with pytest.raises(ValueError, match=r"round t must be in 1..10 \(1-based\), got 0"):
        decay_exponent(1.0, "linear", 0, 10)
    with pytest.raises(ValueError, match="got 11"):
        decay_exponent(1.0, "power", 11, 10)
    with pytest.raises(ValueError, match="rounds T must be an integer >= 1, got 0"):
        decay_exponent(1.0, "none", 1, 0)
    assert ALPHA_DECAYS == ("none", "linear", "power")


def test_weight_errors():
    with pytest.raises(ValueError, match="at least one client loss"):
        loss_aware_weights([], 1.0)
    with pytest.raises(ValueError, match="exponent must be a finite number >= 0"):
        loss_aware_weights([1.0], -1.0)
    with pytest.raises(ValueError, match="exponent must be a finite number >= 0"):
        inverse_loss_weight(1.0, float("nan"))


# Hellinger mixing, as the authors' aggregate_with_hellinger_distance:
# H = sqrt(0.5 * sum (sqrt(u_i) - sqrt(p_i))^2), u = 1/n; m = 0 if H < 0.05 else (H - 0.05)/0.95;
# result (1 - m) u + m p.


def test_hellinger_mixing_by_hand():
    p = [4 / 7, 2 / 7, 1 / 7]  # loss-aware weights of L = [0.5, 1, 2] at exponent 1
    u = math.sqrt(1 / 3)
    h = math.sqrt(0.5 * sum((u - math.sqrt(q)) ** 2 for q in p))
    assert h == pytest.approx(0.19168, abs=1e-5)
    m = (h - 0.05) / 0.95
    assert m == pytest.approx(0.14914, abs=1e-5)
    expected = [(1 - m) / 3 + m * pi for pi in p]
    assert hellinger_distance([1 / 3] * 3, p) == pytest.approx(h, rel=1e-12)
    assert hellinger_mixing_coefficient(h) == pytest.approx(m, rel=1e-12)
    got = hellinger_mixing(loss_aware_weights(LOSSES, 1.0))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0, rel=1e-15)


def test_hellinger_one_hot_closed_form():
    # p = [1, 0, 0, 0]: H^2 = 0.5 * ((1/2 - 1)^2 + 3 * 1/4) = 1 - 1/sqrt(4) = 1/2
    h = math.sqrt(0.5)
    m = (h - 0.05) / 0.95
    got = hellinger_mixing([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(got, [(1 - m) / 4 + m, (1 - m) / 4, (1 - m) / 4, (1 - m) / 4], rtol=1e-12)


def test_hellinger_below_threshold_is_exactly_uniform():
    p = loss_aware_weights([1.0, 1.01], 1.0)  # [0.5025, 0.4975]: H ~ 0.0035 < 0.05
    assert hellinger_distance([0.5, 0.5], p) < HELLINGER_THRESHOLD
    assert hellinger_mixing(p).tolist() == [0.5, 0.5]
    assert hellinger_mixing([1.0]).tolist() == [1.0]


def test_hellinger_errors():
    with pytest.raises(ValueError, match="must sum to 1, got sum 2.0"):
        hellinger_mixing([1.0, 1.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        hellinger_mixing([1.5, -0.5])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        hellinger_mixing([])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\), got 1.0"):
        hellinger_mixing([0.5, 0.5], threshold=1.0)
    with pytest.raises(ValueError, match="p has 2 entries, q has 3"):
        hellinger_distance([0.5, 0.5], [1 / 3] * 3)
