"""Statistics of replicated results: intervals, paired comparisons, multiple-comparison correction, tie sets.

A claim that one setting beats another rests on replicates (DESIGN.md): the same experiment under several
training seeds with the data seed fixed. Every number here follows the textbook formulas, so a test can hold
them against ``scipy.stats``:

- :func:`mean_interval`: mean, sample std (ddof = 1) and the Student-t interval mean +- t(n-1) * s / sqrt(n).
- :func:`paired_test`: the per-seed differences a_s - b_s of two points run under the same seeds, their
  mean, its t interval and the two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``).
- :func:`welch_test`: two points without shared seeds: the difference of means, Welch's interval
  (Welch-Satterthwaite degrees of freedom) and p-value (``scipy.stats.ttest_ind(equal_var=False)``).
- :func:`holm`: Holm's step-down adjustment of p-values (controls the family-wise error rate).
- :func:`tie_set`: points ranked by mean; each is compared with the top (paired on shared seeds when at
  least two are shared, else Welch), the p-values Holm-adjusted over the comparisons; a point whose adjusted
  p-value is at least ``1 - level`` is not distinguishable from the top: a tie.

With a single replicate no interval exists: the functions return NaN for it and say so (``n``), never a
made-up zero width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _st

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its ``level`` Student-t interval over ``n`` values (``low``/``high`` NaN when n < 2)."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    level: float = LEVEL

    @property
    def half(self) -> float:
        """Half the interval's width (NaN when there is no interval)."""
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def pm(self, digits: int, sign: bool = False, sep: str = "±") -> str:
        """``"25.61 ± 0.04"`` (``sign``: ``"+0.61 ± 0.04"``; ``sep``: ``"+-"`` for plain-text tables), or the mean
        alone when there is no interval."""
        mean = f"{self.mean:{'+' if sign else ''}.{digits}f}"
        return mean if self.n < 2 or not math.isfinite(self.half) else f"{mean} {sep} {self.half:.{digits}f}"

    def text(self, digits: int = 2) -> str:
        """``"25.43 +- 0.05 (n=3)"``, or ``"25.43 (n=1, no interval)"``."""
        if self.n < 2 or not math.isfinite(self.half):
            return f"{self.mean:.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:.{digits}f} +- {self.half:.{digits}f} (n={self.n})"


def _t_quantile(level: float, df: float) -> float:
    return float(_st.t.ppf(0.5 + level / 2, df))


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean, sample standard deviation and the ``level`` t interval of ``values`` (finite numbers)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_interval of no values")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"mean_interval of non-finite values: {xs}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan, level)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _t_quantile(level, n - 1) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half, level)


@dataclass(frozen=True)
class Comparison:
    """a - b: the difference's interval, the two-sided p-value, and whether it was paired by seed."""

    diff: Interval  #: mean difference with its interval (n = pairs when paired, else n_a + n_b)
    p: float  #: two-sided p-value (NaN when no test is possible)
    paired: bool
    n_a: int
    n_b: int
    df: float

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p)


def _two_sided_p(t: float, df: float) -> float:
    return float(2 * _st.t.sf(abs(t), df))


def paired_test(a: Mapping[object, float], b: Mapping[object, float], level: float = LEVEL) -> Comparison:
    """The paired t-test of a - b over the keys (seeds) both hold; ``scipy.stats.ttest_rel`` on them."""
    keys = [k for k in a if k in b]
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_test: the two points share no seed")
    iv = mean_interval(diffs, level)
    if n < 2:
        return Comparison(iv, math.nan, True, n, n, math.nan)
    if iv.std == 0:  # every pair differs by the same amount: certain (or exactly equal)
        return Comparison(iv, 1.0 if iv.mean == 0 else 0.0, True, n, n, n - 1)
    t = iv.mean / (iv.std / math.sqrt(n))
    return Comparison(iv, _two_sided_p(t, n - 1), True, n, n, n - 1)


def welch_test(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Comparison:
    """Welch's unequal-variance test of mean(a) - mean(b); ``scipy.stats.ttest_ind(equal_var=False)``."""
    ia, ib = mean_interval(a, level), mean_interval(b, level)
    diff = ia.mean - ib.mean
    if ia.n < 2 or ib.n < 2:
        return Comparison(
            Interval(diff, math.nan, ia.n + ib.n, math.nan, math.nan, level), math.nan, False, ia.n, ib.n, math.nan
        )
    va, vb = ia.std**2 / ia.n, ib.std**2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(Interval(diff, 0.0, ia.n + ib.n, diff, diff, level), p, False, ia.n, ib.n, math.inf)
    df = (va + vb) ** 2 / (va**2 / (ia.n - 1) + vb**2 / (ib.n - 1))
    half = _t_quantile(level, df) * se
    return Comparison(
        Interval(diff, se, ia.n + ib.n, diff - half, diff + half, level),
        _two_sided_p(diff / se, df),
        False,
        ia.n,
        ib.n,
        df,
    )


def compare(a: Mapping[object, float], b: Mapping[object, float], level: float = LEVEL) -> Comparison:
    """a - b, paired on the seeds both hold when they share at least two, else Welch's test on all values."""
    shared = [k for k in a if k in b]
    if len(shared) >= 2:
        return paired_test(a, b, level)
    return welch_test(list(a.values()), list(b.values()), level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(tested)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Ranked:
    """One point of a ranking: its interval, its comparison with the top (None for the top) and its verdict."""

    name: str
    values: dict  #: seed key -> value
    interval: Interval
    versus_top: Comparison | None
    p_adjusted: float  #: Holm-adjusted p-value of the comparison with the top (NaN for the top / untestable)
    tie: bool | None  #: in the top's tie set (True for the top); None when no test was possible


def tie_set(points: Mapping[str, Mapping[object, float]], mode: str = "max", level: float = LEVEL) -> list[Ranked]:
    """Rank ``points`` (name -> {seed key: value}) by their mean, best first, and mark which are not
    distinguishable from the top at ``level`` (module docstring). Points without a value are left out."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    kept = {name: dict(v) for name, v in points.items() if v}
    if not kept:
        return []
    intervals = {name: mean_interval(list(v.values()), level) for name, v in kept.items()}
    order = sorted(kept, key=lambda n: intervals[n].mean, reverse=(mode == "max"))
    top = order[0]
    comparisons = [compare(kept[top], kept[name], level) for name in order[1:]]
    adjusted = holm([c.p for c in comparisons])
    ranked = [Ranked(top, kept[top], intervals[top], None, math.nan, True)]
    for name, comp, p in zip(order[1:], comparisons, adjusted, strict=True):
        tie = None if not math.isfinite(p) else p >= 1 - level
        ranked.append(Ranked(name, kept[name], intervals[name], comp, p, tie))
    return ranked


def verdict(comparison: Comparison | None, p_adjusted: float, mode: str = "max", level: float = LEVEL) -> str:
    """One word for a - b at ``level``: "better" / "worse" (adjusted p below 1 - level, in the direction
    ``mode`` prefers), "tie" (not distinguishable), or "untested" (no test possible: a single run on a side)."""
    if comparison is None or not math.isfinite(p_adjusted):
        return "untested"
    if p_adjusted >= 1 - level or comparison.diff.mean == 0:
        return "tie"
    return "better" if (comparison.diff.mean > 0) == (mode == "max") else "worse"


def decimals_for(intervals: Sequence[Interval], least: int = 2, most: int = 6) -> int:
    """Decimals that show a significant digit of the narrowest interval's half-width and of the smallest gap
    between two means, between ``least`` and ``most``: means 0.004 apart need 3 decimals, where 2 would print
    every point of a tight sweep as the same number."""
    means = sorted(iv.mean for iv in intervals if math.isfinite(iv.mean))
    sizes = [iv.half for iv in intervals if math.isfinite(iv.half) and iv.half > 0]
    scale = max((abs(m) for m in means), default=0.0)
    sizes += [b - a for a, b in zip(means, means[1:], strict=False) if b - a > 1e-9 * max(scale, 1.0)]  # not rounding
    if not sizes:
        return least
    smallest = min(sizes)
    digits = least
    while digits < most and smallest < 10**-digits:
        digits += 1
    return digits
