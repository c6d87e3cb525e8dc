"""Bounded, mergeable quantiles: fixed log-spaced buckets (the DDSketch layout, never collapsed).

:class:`LogBuckets` is the shared, immutable layout; the counts are a plain
``int64`` array of ``size`` cells held by whoever keeps statistics, so sketches
merge by adding arrays — exactly, in any order.

Layout for relative accuracy ``alpha`` and ``gamma = (1 + alpha) / (1 - alpha)``:
cell 0 holds values ``<= min_value`` (including 0), cell ``i`` (1..K) holds
``(min_value * gamma**(i-1), min_value * gamma**i]``, cell K+1 holds values
``> max_value``.

Error bound: for the quantile ``q`` of ``n`` values, :meth:`LogBuckets.quantile`
returns an estimate of ``x_(k)``, the ``k``-th smallest value with
``k = max(1, ceil(q * n))`` (numpy's ``method="inverted_cdf"``), such that
``|estimate - x_(k)| <= alpha * x_(k)`` when ``min_value < x_(k) <= max_value``;
``x_(k) <= min_value`` is reported as ``min_value`` (absolute error at most
``min_value``); ``x_(k) > max_value`` is reported as ``max_value`` (a floor).
The defaults (10 ms .. 10^7 s ≈ 116 days, alpha = 1%) need 1,039 cells (8.3 KB).

>>> lb = LogBuckets()
>>> counts = lb.counts(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
>>> int(counts.sum()), round(lb.quantile(counts, 0.5), 2), round(lb.quantile(counts, 0.95), 1)
(5, 3.02, 100.0)
"""
from __future__ import annotations

import math

import numpy as np


class LogBuckets:
    """Fixed log-spaced bucket layout with relative accuracy ``alpha``."""

    __slots__ = ("min_value", "max_value", "alpha", "gamma", "_log_gamma", "k", "size", "_estimates")

    def __init__(self, min_value: float = 0.01, max_value: float = 1e7, alpha: float = 0.01) -> None:
        if not (0 < alpha < 1 and 0 < min_value < max_value):
            raise ValueError("need 0 < alpha < 1 and 0 < min_value < max_value")
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.alpha = float(alpha)
        self.gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.k = math.ceil(math.log(max_value / min_value) / self._log_gamma)
        self.size = self.k + 2
        i = np.arange(1, self.k + 1, dtype=np.float64)
        mid = min_value * np.exp(i * self._log_gamma) * 2 / (1 + self.gamma)
        self._estimates = np.concatenate([[min_value], mid, [max_value]])

    def key(self) -> tuple[float, float, float]:
        return (self.min_value, self.max_value, self.alpha)

    def index(self, values: np.ndarray) -> np.ndarray:
        """Cell of each value (values must be finite and >= 0)."""
        v = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore"):
            i = np.ceil(np.log(np.maximum(v, self.min_value) / self.min_value) / self._log_gamma)
        i = np.where(v > self.max_value, self.k + 1, np.clip(i, 0, self.k))
        return i.astype(np.intp)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """A fresh counts array for ``values``."""
        return np.bincount(self.index(values), minlength=self.size).astype(np.int64)

    def quantile(self, counts: np.ndarray, q: float) -> float | None:
        """The ``q`` quantile (see the module's error bound); None when empty."""
        n = int(counts.sum())
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        cell = int(np.searchsorted(np.cumsum(counts), rank))
        return float(self._estimates[cell])
