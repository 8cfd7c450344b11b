"""Aggregation math: the partial-aggregate protocol between workers and the server.

A worker trains several clients one after another and returns one :class:`PartialAggregate`:
for every named accumulator (``"model"`` for the weighted model average, ``"delta_c"`` for
SCAFFOLD's control-variate deltas, ...) the weighted sum of the clients' tensors and the sum
of their weights. Partials from several workers merge by addition, and the server divides
once. Sums are kept in float64 with the weights rounded to float32 precision first, so that the
result does not depend on how clients were grouped into workers (to well below float32 precision).

A weight may be given by its logarithm (FedVSR's (1/L_i)^a_t at a large a_t is far beyond float64's
range). Each accumulator keeps its sums scaled by a power of two, 2^-K with K the binary exponent of
its largest weight so far; rescaling by a power of two is exact, so weights of any size aggregate
without overflow and plain weights give the same bits as unscaled sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

Params = dict[str, torch.Tensor]


@dataclass
class PartialAggregate:
    """Weighted sums of client tensors per accumulator, plus the sums of weights, both scaled by
    ``2 ** -scales[name]`` (module docstring)."""

    sums: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, tensors: Mapping[str, torch.Tensor], weight: float = 1.0, *,
            log_weight: float | None = None) -> None:
        """Add ``weight * tensors`` (or ``exp(log_weight) * tensors``) to accumulator ``name``; tensors are
        copied to CPU float64. The weight must be finite and > 0 (any finite ``log_weight``)."""
        mantissa, exponent = _split(weight) if log_weight is None else _split_log(log_weight)
        scale = self._rescale(name, exponent)
        w = math.ldexp(mantissa, exponent - scale)
        acc = self.sums.setdefault(name, {})
        for key, value in tensors.items():
            term = value.detach().to("cpu", torch.float64) * w
            if key in acc:
                acc[key] += term
            else:
                acc[key] = term
        self.weights[name] = self.weights.get(name, 0.0) + w

    def _rescale(self, name: str, exponent: int) -> int:
        """Raise accumulator ``name``'s scale to ``exponent`` if that is larger (exactly, by a power of 2)."""
        scale = self.scales.get(name)
        if scale is None:
            self.scales[name] = exponent
            return exponent
        if exponent > scale:
            factor = math.ldexp(1.0, scale - exponent)
            for value in self.sums.get(name, {}).values():
                value.mul_(factor)
            self.weights[name] = self.weights.get(name, 0.0) * factor
            self.scales[name] = scale = exponent
        return scale

    def merge(self, other: PartialAggregate) -> PartialAggregate:
        for name in set(other.sums) | set(other.weights):
            theirs = other.scales.get(name, 0)
            scale = self._rescale(name, theirs)
            factor = math.ldexp(1.0, theirs - scale)
            acc = self.sums.setdefault(name, {})
            for key, value in other.sums.get(name, {}).items():
                if key in acc:
                    acc[key] += value * factor
                else:
                    acc[key] = value * factor
            self.weights[name] = self.weights.get(name, 0.0) + other.weights.get(name, 0.0) * factor
        return self

    def mean(self, name: str) -> Params:
        """Weighted mean of accumulator ``name`` as float32 tensors."""
        total = self.weights.get(name, 0.0)
        if name not in self.sums or total <= 0.0:
            raise ValueError(f"accumulator {name!r} has no weight to average over")
        return {k: (v / total).to(torch.float32) for k, v in self.sums[name].items()}

    def total(self, name: str) -> Params:
        """Plain weighted sum of accumulator ``name`` as float32 tensors."""
        factor = math.ldexp(1.0, self.scales.get(name, 0))
        return {k: (v * factor).to(torch.float32) for k, v in self.sums.get(name, {}).items()}


def _split(weight: float) -> tuple[float, int]:
    """``weight = mantissa * 2**exponent`` with the mantissa in [0.5, 1] rounded to float32 precision."""
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"aggregation weight must be finite and > 0, got {weight!r}")
    mantissa, exponent = math.frexp(weight)
    return float(np.float32(mantissa)), exponent


def _split_log(log_weight: float) -> tuple[float, int]:
    """:func:`_split` of ``exp(log_weight)``, for any finite ``log_weight`` (no overflow or underflow)."""
    if not math.isfinite(log_weight):
        raise ValueError(f"aggregation log-weight must be finite, got {log_weight!r}")
    if abs(log_weight) < 700:
        return _split(math.exp(log_weight))
    log2 = log_weight / math.log(2)
    exponent = math.floor(log2) + 1
    return float(np.float32(2.0 ** (log2 - exponent))), exponent


def normalised_weights(log_weights: list[float]) -> list[float]:
    """``exp(l_i) / sum_j exp(l_j)`` computed stably (the largest term is exactly 1 before normalising)."""
    if not log_weights:
        return []
    top = max(log_weights)
    terms = [math.exp(lw - top) for lw in log_weights]
    total = math.fsum(terms)
    return [t / total for t in terms]


def merge_partials(partials: list[PartialAggregate]) -> PartialAggregate:
    out = PartialAggregate()
    for p in partials:
        out.merge(p)
    return out


def all_finite(tensors: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def to_numpy(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in params.items()}


def to_torch(arrays: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> Params:
    # np.array copies: arrays fetched from Ray's object store are read-only views
    return {k: torch.from_numpy(np.array(v)).to(device) for k, v in arrays.items()}
