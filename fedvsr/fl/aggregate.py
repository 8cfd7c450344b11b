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

On the platform a worker trains one client per call and sends back a :class:`ClientUpdate`: the
client's tensors (float32, as trained) and weights, recorded rather than summed, so nothing is
widened to float64 on the worker and the bytes sent are those of the model. The coordinator adds
updates with :func:`merge_updates` in a fixed client order: block by block over the tensors with
the accumulator block staying in cache, so merging K updates reads their bytes about once, and
gives the same bits as adding them one after another with :meth:`PartialAggregate.add`.
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
        """Add ``weight * tensors`` (or ``exp(log_weight) * tensors``) to accumulator ``name``, summed in float64
        on the tensors' own device (a GPU worker accumulates on its GPU; :meth:`to` brings the sums back once).
        The weight must be finite and > 0 (any finite ``log_weight``)."""
        mantissa, exponent = _split(weight) if log_weight is None else _split_log(log_weight)
        scale = self._rescale(name, exponent)
        w = math.ldexp(mantissa, exponent - scale)
        acc = self.sums.setdefault(name, {})
        for key, value in tensors.items():
            term = value.detach().to(torch.float64) * w
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

    def to(self, device: torch.device | str) -> PartialAggregate:
        """The same sums on ``device`` (in place; returns self): a worker sends one aggregate back per call."""
        for acc in self.sums.values():
            for key, value in acc.items():
                acc[key] = value.to(device)
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


class ClientUpdate:
    """One client's contributions as :meth:`PartialAggregate.add` calls, recorded (tensors copied, dtype kept)
    instead of summed; :func:`merge_updates` adds them to an aggregate. Strategies call ``add`` on it as on a
    partial aggregate."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, torch.Tensor], float, int]] = []

    def add(self, name: str, tensors: Mapping[str, torch.Tensor], weight: float = 1.0, *,
            log_weight: float | None = None) -> None:
        mantissa, exponent = _split(weight) if log_weight is None else _split_log(log_weight)
        copied = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        self.entries.append((name, copied, mantissa, exponent))

    def to(self, device: torch.device | str) -> ClientUpdate:
        self.entries = [(n, {k: v.to(device) for k, v in t.items()}, m, e) for n, t, m, e in self.entries]
        return self

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for _, t, _, _ in self.entries for v in t.values())


#: elements per block of :func:`merge_updates` (512 KiB of float64 accumulator and as much buffer: they stay
#: in a core's cache; measured fastest of 2^14, 2^16, 2^18 in benchmarks/platform_bench.py aggregation)
MERGE_BLOCK = 1 << 16


def merge_updates(aggregate: PartialAggregate, updates: list[ClientUpdate], block: int = MERGE_BLOCK) -> None:
    """Add ``updates`` to ``aggregate`` in the order given: the same bits as calling ``aggregate.add`` for each
    of their entries in turn (every term ``value * weight`` is exact in float64, and the power-of-two rescaling
    commutes with the additions), computed block by block so each accumulator block is read and written once."""
    by_name: dict[str, list[tuple[dict[str, torch.Tensor], float, int]]] = {}
    for update in updates:
        for name, tensors, mantissa, exponent in update.entries:
            by_name.setdefault(name, []).append((tensors, mantissa, exponent))
    for name, terms in by_name.items():
        scale = aggregate._rescale(name, max(e for _, _, e in terms))
        weights = [math.ldexp(m, e - scale) for _, m, e in terms]
        acc = aggregate.sums.setdefault(name, {})
        for key in dict.fromkeys(k for t, _, _ in terms for k in t):
            parts = [(t[key], w) for (t, _, _), w in zip(terms, weights, strict=True) if key in t]
            if key not in acc:
                first, w0 = parts.pop(0)
                acc[key] = first.to(torch.float64) * w0
            target = acc[key].view(-1)
            flats = [(v.reshape(-1), w) for v, w in parts]
            if not flats:
                continue
            # widen each block into one reused float64 buffer, then a same-dtype add: faster than a mixed-dtype
            # add_, and the same bits (value * weight is exact in float64, so a fused multiply-add rounds alike)
            wide = torch.empty(min(block, target.numel()), dtype=torch.float64, device=target.device)
            for start in range(0, target.numel(), block):
                chunk = target[start : start + block]
                buf = wide[: chunk.numel()]
                for flat, w in flats:
                    buf.copy_(flat[start : start + block])
                    chunk.add_(buf, alpha=w)
        aggregate.weights[name] = _sum_in_order(aggregate.weights.get(name, 0.0), weights)


def _sum_in_order(start: float, values: list[float]) -> float:
    for v in values:
        start += v
    return start


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
