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
the accumulator block staying in cache, widening and adding in one compiled loop (``merge_kernel``), so
merging K updates costs about 1.2x reading their bytes once, and gives the same bits as adding them one
after another with :meth:`PartialAggregate.add`.
"""

from __future__ import annotations

import math
import warnings
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
    #: float64 buffers :func:`merge_updates` may write new sums into (see :meth:`reusing`); key ``(name, "")``:
    #: a whole accumulator's flat buffer
    spare: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    #: accumulators held in one flat float64 buffer by :func:`merge_updates`: name -> (buffer, layout, views)
    flat: dict[str, tuple[torch.Tensor, tuple, dict[str, torch.Tensor]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def reusing(cls, old: PartialAggregate | None) -> PartialAggregate:
        """An empty aggregate that writes its sums into ``old``'s buffers (CPU float64) where the shapes match:
        the coordinator's aggregate of round t reuses round t-1's, so no round pays again for the memory pages
        of a fresh float64 copy of the model (faulting them in costs as much as the merge itself). ``old`` must
        no longer be read: strategies read an aggregate through :meth:`mean` and :meth:`total`, which return
        new tensors."""
        out = cls()
        if old is not None:
            out.spare = {
                (name, key): v
                for name, acc in old.sums.items()
                if name not in old.flat
                for key, v in acc.items()
                if v.device.type == "cpu" and v.dtype == torch.float64 and v.is_contiguous()
            }
            out.spare.update({(name, ""): buffer for name, (buffer, _, _) in old.flat.items()})
            old.sums, old.flat = {}, {}
        return out

    def add(
        self, name: str, tensors: Mapping[str, torch.Tensor], weight: float = 1.0, *, log_weight: float | None = None
    ) -> None:
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


class PackedTensors(Mapping):
    """A client's float32 tensors packed end to end in one flat NumPy array, read as a mapping of tensors.

    It crosses Ray as one array (pickle protocol 5, out of band: no per-tensor pickling, which took a fifth of
    the coordinator's time on a tiny model), and :func:`merge_updates` adds the whole model in one compiled
    call instead of one per tensor. Reading a tensor gives a view of the flat array (a copy where the array is
    read-only, as one fetched from the object store is)."""

    def __init__(self, flat: np.ndarray, layout: tuple[tuple[str, tuple[int, ...], int], ...]) -> None:
        self.flat, self.layout = flat, layout  # layout: (key, shape, offset) in packing order
        self._index = {key: (shape, offset) for key, shape, offset in layout}

    @classmethod
    def pack(cls, tensors: Mapping[str, torch.Tensor]) -> PackedTensors:
        layout, offset = [], 0
        for key, value in tensors.items():
            layout.append((key, tuple(value.shape), offset))
            offset += value.numel()
        flat = np.empty(offset, dtype=np.float32)
        for (_key, shape, start), value in zip(layout, tensors.values(), strict=True):
            torch.from_numpy(flat[start : start + value.numel()]).view(shape).copy_(value.detach())
        return cls(flat, tuple(layout))

    def __reduce__(self):
        return PackedTensors, (self.flat, self.layout)

    def __getitem__(self, key: str) -> torch.Tensor:
        shape, offset = self._index[key]
        part = self.flat[offset : offset + math.prod(shape)]
        return torch.from_numpy(part if part.flags.writeable else part.copy()).view(shape)

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index


class ClientUpdate:
    """One client's contributions as :meth:`PartialAggregate.add` calls, recorded (tensors copied, dtype kept)
    instead of summed; :func:`merge_updates` adds them to an aggregate. Strategies call ``add`` on it as on a
    partial aggregate. Float32 tensors are packed into one array (:class:`PackedTensors`)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Mapping[str, torch.Tensor], float, int]] = []

    def add(
        self, name: str, tensors: Mapping[str, torch.Tensor], weight: float = 1.0, *, log_weight: float | None = None
    ) -> None:
        mantissa, exponent = _split(weight) if log_weight is None else _split_log(log_weight)
        if tensors and all(v.dtype == torch.float32 for v in tensors.values()):
            copied: Mapping[str, torch.Tensor] = PackedTensors.pack(tensors)
        else:
            copied = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        self.entries.append((name, copied, mantissa, exponent))

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for _, t, _, _ in self.entries for v in t.values())


#: elements per block of :func:`merge_updates`'s torch path (GPU tensors, dtypes other than float32, small sums):
#: 512 KiB of float64 accumulator and as much buffer; the compiled kernel has its own block
MERGE_BLOCK = 1 << 16


def merge_updates(aggregate: PartialAggregate, updates: list[ClientUpdate], block: int | None = None) -> None:
    """Add ``updates`` to ``aggregate`` in the order given: the same bits as calling ``aggregate.add`` for each
    of their entries in turn (every term ``value * weight`` is exact in float64, and the power-of-two rescaling
    commutes with the additions), computed block by block so each accumulator block is read and written once."""
    by_name: dict[str, list[tuple[Mapping[str, torch.Tensor], float, int]]] = {}
    for update in updates:
        for name, tensors, mantissa, exponent in update.entries:
            by_name.setdefault(name, []).append((tensors, mantissa, exponent))
    for name, terms in by_name.items():
        scale = aggregate._rescale(name, max(e for _, _, e in terms))
        weights = [math.ldexp(m, e - scale) for _, m, e in terms]
        if not _merge_packed(aggregate, name, [t for t, _, _ in terms], weights, block):
            acc = aggregate.sums.setdefault(name, {})
            for key in dict.fromkeys(k for t, _, _ in terms for k in t):
                parts = [(t[key], w) for (t, _, _), w in zip(terms, weights, strict=True) if key in t]
                fresh = key not in acc
                if fresh:
                    first = parts[0][0]
                    buffer = aggregate.spare.pop((name, key), None)
                    if buffer is None or buffer.shape != first.shape or buffer.device != first.device:
                        buffer = torch.empty(first.shape, dtype=torch.float64, device=first.device)
                    acc[key] = buffer
                _add_terms(acc[key].view(-1), [v.reshape(-1) for v, _ in parts], [w for _, w in parts], block, fresh)
        aggregate.weights[name] = _sum_in_order(aggregate.weights.get(name, 0.0), weights)


def _merge_packed(
    aggregate: PartialAggregate,
    name: str,
    terms: list[Mapping[str, torch.Tensor]],
    weights: list[float],
    block: int | None,
) -> bool:
    """The whole accumulator ``name`` at once, when every term is packed with one layout and the accumulator
    is empty or is the flat float64 array (with views per tensor) an earlier such merge made."""
    layout = getattr(terms[0], "layout", None)
    if layout is None or any(getattr(t, "layout", None) != layout for t in terms):
        return False
    acc = aggregate.sums.get(name)
    flat = aggregate.flat.get(name)
    fresh = not acc
    if not fresh and not (
        flat is not None
        and flat[1] == layout
        and len(acc) == len(flat[2])
        and all(acc.get(k) is v for k, v in flat[2].items())
    ):
        return False  # the accumulator was built otherwise (add, merge): tensor by tensor
    if fresh:
        size = terms[0].flat.shape[0]
        buffer = aggregate.spare.pop((name, ""), None)
        if buffer is None or buffer.shape != (size,) or buffer.device.type != "cpu":
            buffer = torch.empty(size, dtype=torch.float64)
        views = {key: buffer[offset : offset + math.prod(shape)].view(shape) for key, shape, offset in layout}
        aggregate.sums[name] = dict(views)
        aggregate.flat[name] = (buffer, layout, views)
    _add_terms(aggregate.flat[name][0], [t.flat for t in terms], weights, block, fresh)
    return True


#: sums of at least this many elements (float32 on the CPU) go through the compiled kernel
#: (:mod:`fedvsr.fl.merge_kernel`); smaller ones through torch operations, which cost no compilation: loading the
#: kernel takes about 0.7 s in each new process even from Numba's disk cache, more than a small model's merges
KERNEL_MIN_ELEMENTS = 1 << 18


def _add_terms(
    target: torch.Tensor, values: list[torch.Tensor | np.ndarray], weights: list[float], block: int | None, fresh: bool
) -> None:
    """``target`` (1-D float64) ``+= values[0] * weights[0]``, then the next, ... in order (``fresh``: target
    holds nothing yet and starts as the first term, so a term of -0.0 stays -0.0, as in ``add``)."""
    if not values:
        return
    arrays = [v.numpy() if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v for v in values]
    if (
        target.device.type == "cpu"
        and target.numel() >= KERNEL_MIN_ELEMENTS
        and all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
    ):
        from fedvsr.fl.merge_kernel import BLOCK, merge_into  # imports Numba: only where a large sum needs it

        merge_into(target.numpy(), arrays, weights, block or BLOCK, fresh=fresh)
        return
    with warnings.catch_warnings():  # arrays from Ray's object store are read-only; they are only read here
        warnings.simplefilter("ignore", UserWarning)
        tensors = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in arrays]
    if fresh:  # the first term, exactly (value * weight is exact in float64)
        target.copy_(tensors[0])
        target.mul_(weights[0])
        tensors, weights = tensors[1:], weights[1:]
    if not tensors:
        return
    # widen each block into one reused float64 buffer, then a same-dtype add (faster than a mixed-dtype add_)
    step = block or MERGE_BLOCK
    wide = torch.empty(min(step, target.numel()), dtype=torch.float64, device=target.device)
    for start in range(0, target.numel(), step):
        chunk = target[start : start + step]
        buf = wide[: chunk.numel()]
        for value, w in zip(tensors, weights, strict=True):
            buf.copy_(value[start : start + step])
            chunk.add_(buf, alpha=w)


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
    """Whether every floating-point entry holds only finite values (one check over all of them: a check and a
    host sync per tensor cost more than the check itself for the small models of a cross-device run)."""
    floats = [t.reshape(-1) for t in tensors.values() if t.is_floating_point()]
    return not floats or bool(torch.isfinite(torch.cat(floats)).all())


def to_numpy(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in params.items()}


def to_torch(arrays: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> Params:
    # np.array copies: arrays fetched from Ray's object store are read-only views
    return {k: torch.from_numpy(np.array(v)).to(device) for k, v in arrays.items()}
