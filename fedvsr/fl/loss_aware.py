"""FedVSR's loss-aware aggregation weights (FedVSR, arXiv 2503.13745, section 4.2, Algorithm 1).

Each participating client i reports its average local training loss L_i. The server weighs its
model by I'_i = (1/L_i)^a_t and normalises, w_i = I'_i / sum_j I'_j (Algorithm 1, lines 16-18);
the exponent a_t decays over the rounds so that aggregation moves from loss-based priority
towards plain averaging.

Decay schedules (``decay_exponent``), t = 1..T is the 1-based round, T the number of rounds:

- ``"none"``: a_t = alpha, greedy loss-aware aggregation in every round (the paper's F-GLA).
- ``"linear"``: a_t = alpha * (1 - t/T). With alpha = 1 this is exactly what the authors'
  public code runs (``adaptive_step = 1.0 - self.round / NUM_ROUNDS`` in
  ``IART/iart_fedvsr.py`` and ``VRTandRVRT/vrt_and_rvrt_fedvsr.py`` of
  github.com/alimd94/FedVSR): its round counter starts at 1 and is read before it is
  incremented, so the first aggregation uses 1 - 1/T and the T-th uses 0, i.e. exactly uniform
  averaging at the last round (the ``round == 0 -> 1.0`` branch there is never reached). The
  exponent is recomputed from fresh losses each round, never compounded.
- ``"power"``: a_t = alpha ** (1 - t/T), the paper's text ("alpha = alpha^(1 - t/T)").
  Note that this tends to alpha^0 = 1, i.e. to plain inverse-loss weights, NOT to uniform
  averaging: with alpha > 1 the exponent falls to 1, with alpha < 1 it rises to 1, and with
  alpha = 1 it never moves. (At alpha = 0 it is 0 for t < T and 0**0 = 1 at t = T.)

Robustness: weights are computed in log space, log I'_i = -a_t * log L_i in float64, and the
normalisation subtracts the largest log-weight before exponentiating, so extreme losses or
exponents never give inf or NaN. A loss that is not finite or not > 0 raises
``InvalidClientLoss`` so the platform can drop that client and record why.

``hellinger_mixing`` is the extra option found in the authors' code
(``aggregate_with_hellinger_distance`` in ``IART/iart_fedvsr.py`` and
``VRTandRVRT/vrt_and_rvrt_fedvsr.py``, not described in the paper): it blends the loss-aware
weights with uniform weights, by a coefficient that grows with their Hellinger distance.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

ALPHA_DECAYS = ("none", "linear", "power")

HELLINGER_THRESHOLD = 0.05  # the authors' code's threshold below which no mixing happens

_MAX_LOG = math.log(sys.float_info.max)


class InvalidClientLoss(ValueError):
    """A client's reported loss cannot weigh its update (not finite, or not > 0).

    ``reason`` is the message; ``loss`` the offending value and ``index`` its position in the
    round's list of losses when known.
    """

    def __init__(self, reason: str, loss: float | None = None, index: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.loss = loss
        self.index = index


def decay_exponent(alpha: float, decay: str, t: int, T: int) -> float:
    """Exponent a_t applied to I_i = 1/L_i at round t (1-based, 1 <= t <= T); see module docstring."""
    if decay not in ALPHA_DECAYS:
        raise ValueError(f"alpha decay must be one of {ALPHA_DECAYS}, got {decay!r}")
    if not (isinstance(alpha, Real) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not isinstance(T, Integral) or T < 1:
        raise ValueError(f"rounds T must be an integer >= 1, got {T!r}")
    if not isinstance(t, Integral) or not 1 <= t <= T:
        raise ValueError(f"round t must be in 1..{T} (1-based), got {t!r}")
    alpha = float(alpha)
    if decay == "none":
        return alpha
    remaining = 1.0 - t / T
    if decay == "linear":
        return alpha * remaining
    return alpha**remaining


def _check_exponent(exponent: float) -> float:
    if not (isinstance(exponent, Real) and math.isfinite(exponent) and exponent >= 0):
        raise ValueError(f"loss-aware exponent must be a finite number >= 0, got {exponent!r}")
    return float(exponent)


def _log_weight(loss: float, exponent: float, index: int | None = None) -> float:
    """log I'_i = -a_t * log L_i, after checking the loss."""
    where = "" if index is None else f" (client #{index} of the round)"
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise InvalidClientLoss(f"client loss{where} is not a number: {loss!r}", None, index) from None
    if math.isnan(value):
        raise InvalidClientLoss(f"client loss{where} is NaN", value, index)
    if math.isinf(value):
        raise InvalidClientLoss(f"client loss{where} is infinite: {value}", value, index)
    if value <= 0:
        raise InvalidClientLoss(f"client loss{where} must be > 0, got {value}", value, index)
    if exponent == 0:
        return 0.0
    return -exponent * math.log(value)


def log_inverse_loss_weight(loss: float, exponent: float) -> float:
    """``log I'_i = -a_t * log L_i`` (float64, finite for any valid input); raises ``InvalidClientLoss``
    for a loss that is NaN, infinite, zero or negative. What the platform aggregates with."""
    return _log_weight(loss, _check_exponent(exponent))


def inverse_loss_weight(loss: float, exponent: float) -> float:
    """Unnormalised weight I'_i = (1/L_i)^a_t = exp(-a_t * log L_i), float64.

    Raises ``InvalidClientLoss`` for a loss that is NaN, infinite, zero or negative. Exponent 0
    gives exactly 1.0. A weight too large for float64 saturates at the largest finite float
    (use ``loss_aware_weights`` for normalised weights, which never saturate).
    """
    log_w = _log_weight(loss, _check_exponent(exponent))
    return math.exp(log_w) if log_w < _MAX_LOG else sys.float_info.max


def loss_aware_weights(losses: Sequence[float], exponent: float) -> np.ndarray:
    """Normalised weights w_i = I'_i / sum_j I'_j of the round's clients (float64, sums to 1).

    Stable for any valid input: the largest log-weight is subtracted before exponentiating, so
    the largest weight's term is exactly 1 and nothing overflows. Raises ``InvalidClientLoss``
    (with ``index`` set) for the first bad loss, ``ValueError`` for no losses.
    """
    exponent = _check_exponent(exponent)
    if len(losses) == 0:
        raise ValueError("loss_aware_weights needs at least one client loss, got none")
    log_w = np.array([_log_weight(loss, exponent, i) for i, loss in enumerate(losses)], dtype=np.float64)
    unnormalised = np.exp(log_w - log_w.max())
    return unnormalised / unnormalised.sum()


def hellinger_distance(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Hellinger distance sqrt(0.5 * sum_i (sqrt p_i - sqrt q_i)^2) of two distributions, in [0, 1]."""
    p_arr = _check_distribution(p, "p")
    q_arr = _check_distribution(q, "q")
    if p_arr.shape != q_arr.shape:
        raise ValueError(f"hellinger_distance: p has {p_arr.size} entries, q has {q_arr.size}")
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p_arr) - np.sqrt(q_arr)) ** 2)))


def hellinger_mixing_coefficient(distance: float, threshold: float = HELLINGER_THRESHOLD) -> float:
    """m = 0 when distance < threshold, else (distance - threshold) / (1 - threshold)."""
    if not 0 <= threshold < 1:
        raise ValueError(f"hellinger threshold must be in [0, 1), got {threshold!r}")
    if not 0 <= distance <= 1:
        raise ValueError(f"hellinger distance must be in [0, 1], got {distance!r}")
    if distance < threshold:
        return 0.0
    return (distance - threshold) / (1 - threshold)


def hellinger_coefficient(weights: Sequence[float] | np.ndarray, threshold: float = HELLINGER_THRESHOLD) -> float:
    """The mixing coefficient m for (unnormalised, positive) client weights: the Hellinger distance
    between uniform weights and the normalised ``weights``, through :func:`hellinger_mixing_coefficient`."""
    w = np.asarray(weights, dtype=np.float64)
    p = w / w.sum()
    return hellinger_mixing_coefficient(hellinger_distance(np.full(p.size, 1.0 / p.size), p), threshold)


def hellinger_mixing(weights: Sequence[float] | np.ndarray, threshold: float = HELLINGER_THRESHOLD) -> np.ndarray:
    """Blend the round's loss-aware weights p with uniform weights u = 1/n (the authors' option).

    As ``aggregate_with_hellinger_distance`` in the authors' ``IART/iart_fedvsr.py`` (and
    ``VRTandRVRT/vrt_and_rvrt_fedvsr.py``): H = hellinger_distance(u, p); m = 0 if H < threshold
    (0.05) else (H - threshold) / (1 - threshold); result (1 - m) * u + m * p. So nearly uniform
    loss-aware weights are replaced by exactly uniform ones, and the further p is from uniform
    the more of it is kept (m < 1 always for finite n, since H <= sqrt(1 - 1/sqrt(n))). The
    code uses only the losses, not the clients' sample counts. Returns float64 weights summing
    to 1.
    """
    p = _check_distribution(weights, "weights")
    m = hellinger_coefficient(p, threshold)
    return (1.0 - m) * np.full(p.size, 1.0 / p.size) + m * p


def _check_distribution(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of weights, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {arr.tolist()}")
    total = float(arr.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got sum {total!r}")
    return arr
