"""Distribution distances on histogram counts.

Every function takes count arrays whose **last axis is the bins** and works on
any leading shape, so the same code scores one window at run time and a whole
``(evaluations, chains, bins)`` block in the calibration simulation. Counts are
integers (or floats) from mergeable summaries: the statistics of summed counts
are the statistics of the union of the data.

>>> import numpy as np
>>> ref = np.array([25, 25, 25, 25])
>>> round(float(psi(np.array([25, 25, 25, 25]), ref)), 6)
0.0
>>> round(float(ks_binned(np.array([50, 50, 0, 0]), ref)), 3)
0.5
>>> round(float(js_divergence(np.array([0, 0, 50, 50]), np.array([50, 50, 0, 0]))), 3)
1.0
"""
from __future__ import annotations

import numpy as np


def _norm(counts: np.ndarray, alpha: float = 0.0) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64) + alpha
    total = c.sum(axis=-1, keepdims=True)
    return c / np.where(total > 0, total, 1.0)


def psi(cur: np.ndarray, ref: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Population stability index ``sum (p - q) ln(p / q)`` (a symmetric KL).

    ``alpha`` is an additive (Jeffreys) pseudo-count per bin so that empty bins
    stay finite. Under the null it behaves like ``chi2(k-1) * (1/n + 1/m)``.
    """
    p = _norm(cur, alpha)
    q = _norm(ref, alpha)
    return np.sum((p - q) * np.log(p / q), axis=-1)


def js_divergence(cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits (0 = same, 1 = disjoint supports)."""
    p = _norm(cur)
    q = _norm(ref)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log2(p / m), 0.0)
        kq = np.where(q > 0, q * np.log2(q / m), 0.0)
    return np.maximum(0.5 * np.sum(kp + kq, axis=-1), 0.0)


def chi_square(cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Pearson's two-sample chi-square statistic of the ``2 x k`` table (empty bins skipped)."""
    a = np.asarray(cur, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    na = a.sum(axis=-1, keepdims=True)
    nb = b.sum(axis=-1, keepdims=True)
    col = a + b
    n = na + nb
    ea = col * na / np.where(n > 0, n, 1.0)
    eb = col * nb / np.where(n > 0, n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = np.where(ea > 0, (a - ea) ** 2 / ea, 0.0)
        tb = np.where(eb > 0, (b - eb) ** 2 / eb, 0.0)
    return np.sum(ta + tb, axis=-1)


def ks_binned(cur: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Kolmogorov–Smirnov statistic of the binned CDFs (``max |F_cur - F_ref|``).

    Equals the two-sample KS statistic of the data replaced by their bin
    index, so it never exceeds the KS statistic of the raw values.
    """
    return np.max(np.abs(np.cumsum(_norm(cur), axis=-1) - np.cumsum(_norm(ref), axis=-1)), axis=-1)


def wasserstein_binned(cur: np.ndarray, ref: np.ndarray, centres: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Wasserstein-1 distance with each bin's mass at ``centres`` (divided by ``scale``).

    ``centres`` must be increasing; the result is exactly
    ``scipy.stats.wasserstein_distance(centres, centres, cur, ref) / scale``.
    """
    gaps = np.diff(np.asarray(centres, dtype=np.float64))
    diff = np.abs(np.cumsum(_norm(cur), axis=-1) - np.cumsum(_norm(ref), axis=-1))[..., :-1]
    return np.sum(diff * gaps, axis=-1) / scale


def unseen_share(cur: np.ndarray) -> np.ndarray:
    """Share of the window in the last bin (the "unseen category" bin of a categorical layout)."""
    return _norm(cur)[..., -1]


def rank_scores(ref: np.ndarray) -> np.ndarray:
    """Standardised mid-rank score of each ordered bin under the reference histogram.

    A window's sum of scores has mean 0 and variance ``n`` when it is drawn from
    the reference, and moves when the values shift up or down: the increment of
    the rank CUSUM (a distribution-free, binned Mann–Whitney score).

    >>> [round(float(z), 3) for z in rank_scores(np.array([1, 1, 1, 1]))]
    [-1.342, -0.447, 0.447, 1.342]
    """
    r = _norm(ref, 0.0)
    u = np.cumsum(r) - r / 2.0
    mean = float(np.sum(r * u))
    sd = float(np.sqrt(np.sum(r * (u - mean) ** 2)))
    return (u - mean) / (sd if sd > 0 else 1.0)
