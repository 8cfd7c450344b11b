"""The inner loop of :func:`fedvsr.fl.aggregate.merge_updates` for float32 updates on the CPU, compiled with Numba.

``acc[i] = (((acc[i] + x_0[i] * w_0) + x_1[i] * w_1) + ...)`` in float64, in the order given: every product of
a float32 value and a weight rounded to float32 precision is exact in float64, so each element gets the same
bits as adding the updates one after another with :meth:`PartialAggregate.add` (a fused multiply-add would round
alike). The accumulator is walked in blocks that stay in a core's cache while every update is added to it, and
four updates are added per pass over a block, so the accumulator is written about once per merge and each
update's bytes are read once: about 1.6x the time of reading the updates alone, against about 4x for the same
sum as torch operations (a widening copy, then an add), which cannot fuse the widening with the add
(``benchmarks/platform_bench.py aggregation``).

Compiled on first use and cached on disk (Numba's ``cache=True``: next to this file, or in Numba's user cache
folder where this one cannot be written).
"""

from __future__ import annotations

import numba
import numpy as np

#: accumulator elements per block: 64 KiB of float64, in a core's L2 next to the blocks of four updates
BLOCK = 8192


@numba.njit(cache=True, nogil=True)
def _add1(a, x, w):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        a[i] = a[i] + np.float64(x[i]) * w


@numba.njit(cache=True, nogil=True)
def _set1(a, x, w):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        a[i] = np.float64(x[i]) * w


@numba.njit(cache=True, nogil=True)
def _add2(a, x, w, y, v):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        a[i] = (a[i] + np.float64(x[i]) * w) + np.float64(y[i]) * v


@numba.njit(cache=True, nogil=True)
def _add4(a, x, w, y, v, z, u, q, r):  # pragma: no cover - compiled
    for i in range(a.shape[0]):
        a[i] = (((a[i] + np.float64(x[i]) * w) + np.float64(y[i]) * v) + np.float64(z[i]) * u) + np.float64(q[i]) * r


@numba.njit(cache=True, nogil=True)
def _merge(acc, xs, ws, block, fresh):  # pragma: no cover - compiled
    n = acc.shape[0]
    count = len(xs)
    for s in range(0, n, block):
        e = min(s + block, n)
        a = acc[s:e]
        k = 0
        if fresh:
            _set1(a, xs[0][s:e], ws[0])
            k = 1
        while k + 4 <= count:
            _add4(a, xs[k][s:e], ws[k], xs[k + 1][s:e], ws[k + 1], xs[k + 2][s:e], ws[k + 2], xs[k + 3][s:e], ws[k + 3])
            k += 4
        while k + 2 <= count:
            _add2(a, xs[k][s:e], ws[k], xs[k + 1][s:e], ws[k + 1])
            k += 2
        while k < count:
            _add1(a, xs[k][s:e], ws[k])
            k += 1


def merge_into(
    acc: np.ndarray, values: list[np.ndarray], weights: list[float], block: int = BLOCK, *, fresh: bool = False
) -> None:
    """``acc += values[0] * weights[0]``, then ``values[1] * weights[1]``, ... in place: ``acc`` a contiguous
    1-D float64 array, ``values`` contiguous 1-D float32 arrays of its length. ``fresh``: ``acc`` holds nothing
    yet (say ``np.empty``) and starts as ``values[0] * weights[0]``, as the first :meth:`PartialAggregate.add`
    does (so a term of -0.0 stays -0.0), written block by block with the rest: no separate pass."""
    if not values:
        return
    if acc.dtype != np.float64 or acc.ndim != 1 or not acc.flags.c_contiguous:
        raise TypeError("merge_into: the accumulator must be a contiguous 1-D float64 array")
    for v in values:
        if v.dtype != np.float32 or v.shape != acc.shape or not v.flags.c_contiguous:
            raise TypeError(f"merge_into: every value must be a contiguous float32 array of shape {acc.shape}")
    if block < 1:
        raise ValueError(f"merge_into: block must be >= 1, got {block}")
    # one compiled type for all: values fetched from Ray's object store are read-only, the others not. A tuple,
    # not a numba.typed.List: a typed list compiles its own methods in every new process (about 3 s), while
    # the kernel for a tuple of n arrays is compiled once per n and then loaded from Numba's disk cache
    values = tuple(_read_only(v) for v in values)
    _merge(acc, values, np.asarray(weights, dtype=np.float64), block, fresh)


def _read_only(v: np.ndarray) -> np.ndarray:
    if not v.flags.writeable:
        return v
    view = v.view()
    view.flags.writeable = False
    return view
