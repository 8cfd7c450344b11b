"""Aggregation math: the partial-aggregate protocol between workers and the server.

A worker trains several clients one after another and returns one :class:`PartialAggregate`:
for every named accumulator (``"model"`` for the weighted model average, ``"delta_c"`` for
SCAFFOLD's control-variate deltas, ...) the weighted sum of the clients' tensors and the sum
of their weights. Partials from several workers merge by addition, and the server divides
once. Sums are kept in float64 with the weights rounded to float32 first, so that the result
does not depend on how clients were grouped into workers (to well below float32 precision).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

Params = dict[str, torch.Tensor]


@dataclass
class PartialAggregate:
    """Weighted sums of client tensors per accumulator, plus the sums of weights."""

    sums: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, tensors: Mapping[str, torch.Tensor], weight: float) -> None:
        """Add ``weight * tensors`` to accumulator ``name`` (tensors are copied to CPU float64)."""
        w = float(np.float32(weight))
        acc = self.sums.setdefault(name, {})
        for key, value in tensors.items():
            term = value.detach().to("cpu", torch.float64) * w
            if key in acc:
                acc[key] += term
            else:
                acc[key] = term
        self.weights[name] = self.weights.get(name, 0.0) + w

    def merge(self, other: PartialAggregate) -> PartialAggregate:
        for name, tensors in other.sums.items():
            acc = self.sums.setdefault(name, {})
            for key, value in tensors.items():
                if key in acc:
                    acc[key] += value
                else:
                    acc[key] = value.clone()
        for name, w in other.weights.items():
            self.weights[name] = self.weights.get(name, 0.0) + w
        return self

    def mean(self, name: str) -> Params:
        """Weighted mean of accumulator ``name`` as float32 tensors."""
        total = self.weights.get(name, 0.0)
        if name not in self.sums or total <= 0.0:
            raise ValueError(f"accumulator {name!r} has no weight to average over")
        return {k: (v / total).to(torch.float32) for k, v in self.sums[name].items()}

    def total(self, name: str) -> Params:
        """Plain weighted sum of accumulator ``name`` as float32 tensors."""
        return {k: v.to(torch.float32) for k, v in self.sums.get(name, {}).items()}


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
