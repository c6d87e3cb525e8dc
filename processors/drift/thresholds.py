"""Threshold calibration by simulating the stationary stream.

The budget: on stationary data a detector may raise at most one false alarm
per ``budget`` events (in expectation). A detector is evaluated once per time
bucket of ``s`` events on a window of ``B`` buckets, and an alarm *starts* when
its alarm rule first holds after being off. So the requirement is

    E[alarm starts per evaluation] / s  <=  1 / budget.

Evaluations overlap (window B, step 1 bucket) and a window test needs ``k``
consecutive exceedances, so starts are not independent per evaluation and the
rate is not ``P(score > h)**k``. We therefore simulate the exact procedure:

1. draw ``chains`` "true" distributions consistent with the reference — bin
   probabilities ~ Dirichlet(reference counts) (exact for quantile bins of
   continuous data; the unseen bin gets the Good–Turing missing mass) — so the
   uncertainty of a finite reference is included;
2. per chain draw bucket counts ~ Multinomial(Poisson(s), p) and run the
   detector as it runs live: sliding windows of B buckets and the statistic
   (window tests), or the CUSUM recursion (sequential detectors);
3. alarm starts at threshold h are bounded by the up-crossings of h by
   ``M_t = min(score_t, ..., score_{t-k+1})`` (a new start needs the score to
   fall back first), which for every h at once is
   ``#{t : M_{t-1} <= h < M_t}``;
4. take the smallest h whose up-crossings (for h and every larger value) stay
   under ``simulated events / budget / safety``.

The simulation covers ``budgets`` budgets (default 50 → 50 allowed alarms, of
which the safety factor 2 keeps 25), so the estimate is good to about ±20% and
the factor 2 absorbs it. It is vectorised: 5 million simulated events take
tens of milliseconds per signal.

>>> import numpy as np
>>> from loopline.processors.drift.stats import psi
>>> ref = np.full(12, 400); ref[[0, -2, -1]] = 0
>>> cal = calibrate_window(psi, ref, np.maximum(ref, 1.0), s=250, window_buckets=8, consecutive=2,
...                        budget=100_000, seed=1)
>>> 0.01 < cal.threshold < 0.1, cal.window_events
(True, 2000)
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and how it was obtained."""

    threshold: float
    window_events: int  # events per window the threshold was calibrated for (s * B; s for CUSUMs)
    simulated_events: int
    allowed_alarms: float
    null_median: float  # median score under the null, for the record


def upcrossing_threshold(m: np.ndarray, allowed: float) -> float:
    """Smallest ``h`` with at most ``allowed`` up-crossings of ``h`` by every row of ``m`` (for all h' >= h).

    >>> upcrossing_threshold(np.array([[0., 3., 0., 2., 0., 1.]]), allowed=1)
    2.0
    """
    m = np.asarray(m, dtype=np.float64)
    a = np.concatenate([np.full((m.shape[0], 1), -np.inf), m[:, :-1]], axis=1).ravel()
    b = m.ravel()
    up = a < b
    a, b = np.sort(a[up]), np.sort(b[up])
    xs = np.unique(np.concatenate([a[np.isfinite(a)], b]))
    count = np.searchsorted(a, xs, side="right") - np.searchsorted(b, xs, side="right")
    over = np.flatnonzero(count > allowed)
    if len(over) == 0:
        return float(xs[0]) if len(xs) else 0.0
    i = over[-1] + 1
    return float(xs[i]) if i < len(xs) else float(xs[-1])


def chain_threshold(score: np.ndarray, s: float, budget: float, safety: float, quantile: float) -> tuple[float, float]:
    """Threshold from null scores ``(evaluations, chains)``: per chain, the smallest h with at
    most ``events / budget / safety`` up-crossings; then the ``quantile`` of those over chains."""
    allowed = score.shape[0] * s / budget / safety
    per_chain = [upcrossing_threshold(score[:, c][None, :], allowed) for c in range(score.shape[1])]
    return max(float(np.quantile(per_chain, quantile)), 1e-9), allowed


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _sizes(budget: int, budgets: int, s: float, chains: int, burn: int, max_evals: int) -> int:
    """Evaluations per chain: ``budgets`` budgets of events, capped at ``max_evals`` in all."""
    evals = int(np.ceil(budgets * budget / max(s, 1e-9)))
    return max(min(evals, max_evals // chains), 16) + burn


def simulate_buckets(alpha: np.ndarray, s: float, length: int, chains: int, rng: np.random.Generator) -> np.ndarray:
    """Null bucket counts ``(length, chains, bins)`` with chain-specific true distributions.

    Bucket sizes are Poisson(s) and, given the size, counts are multinomial —
    which is the same as independent Poisson(s * p_j) counts per bin (Poissonisation),
    the cheaper draw.
    """
    p = rng.dirichlet(np.asarray(alpha, dtype=np.float64), size=chains)
    return rng.poisson(s * p, size=(length, chains, len(p[0])))


def calibrate_window(stat: Callable, ref: np.ndarray, alpha: np.ndarray, s: float, window_buckets: int,
                     consecutive: int, budget: int, budgets: int = 20, safety: float = 2.0, chains: int = 16,
                     quantile: float = 0.9, seed: int = 0, max_evals: int = 400_000, name: str = "") -> Calibration:
    """Threshold for a window test ``stat(window_counts, ref)`` (see the module docstring)."""
    rng = _rng(seed, name, np.asarray(ref).tolist(), np.round(alpha, 6).tolist(), round(s, 3), window_buckets,
               consecutive, budget)
    burn = window_buckets - 1 + consecutive - 1
    length = _sizes(budget, budgets, s, chains, burn, max_evals)
    counts = simulate_buckets(alpha, s, length, chains, rng)
    cs = np.concatenate([np.zeros((1,) + counts.shape[1:], counts.dtype), np.cumsum(counts, axis=0)])
    win = cs[window_buckets:] - cs[:-window_buckets]  # (length - B + 1, chains, bins)
    score = stat(win, ref)
    m = score[consecutive - 1:]
    for j in range(1, consecutive):
        m = np.minimum(m, score[consecutive - 1 - j: len(score) - j])
    h, allowed = chain_threshold(m, s, budget, safety, quantile)
    return Calibration(h, int(round(s * window_buckets)), int(m.size * s), allowed, float(np.median(score)))


def cusum_paths(increments: np.ndarray) -> np.ndarray:
    """Lindley recursion ``S_t = max(0, S_{t-1} + x_t)`` along axis 0, in closed form."""
    x = np.cumsum(increments, axis=0)
    low = np.minimum(np.minimum.accumulate(x, axis=0), 0.0)
    return x - low


def calibrate_rank_cusum(ref: np.ndarray, alpha: np.ndarray, scores: np.ndarray, kappa: float, s: float,
                         budget: int, budgets: int = 20, safety: float = 2.0, chains: int = 16, quantile: float = 0.9,
                         seed: int = 0, max_evals: int = 400_000, name: str = "") -> Calibration:
    """Threshold for the two-sided rank CUSUM on bucket score sums (``scores`` per bin, 0 = unordered)."""
    rng = _rng(seed, "rank", name, np.asarray(ref).tolist(), np.round(alpha, 6).tolist(), round(s, 3), kappa, budget)
    length = _sizes(budget, budgets, s, chains, 0, max_evals)
    counts = simulate_buckets(alpha, s, length, chains, rng).astype(np.float64)
    t = counts @ scores
    n = counts @ (scores != 0).astype(np.float64)
    up = cusum_paths(t - kappa * n)
    down = cusum_paths(-t - kappa * n)
    score = np.maximum(up, down)
    h, allowed = chain_threshold(score, s, budget, safety, quantile)
    # a null CUSUM that never left 0 gives h ~ 0, and any bucket would alarm with a "score" of 1e-9: the
    # threshold is at least one bucket's null standard deviation of the score sum (unit-variance scores)
    h = max(h, float(np.sqrt(max(s, 1.0))))
    return Calibration(h, int(round(s)), int(score.size * s), allowed, float(np.median(score)))


def binomial_llr(x: np.ndarray, n: np.ndarray, p0: float, p1: float) -> np.ndarray:
    """Log-likelihood ratio of ``x`` errors in ``n`` outcomes, rate ``p1`` against ``p0``."""
    return x * np.log(p1 / p0) + (n - x) * np.log((1.0 - p1) / (1.0 - p0))


def calibrate_binomial_cusum(p0: float, p1: float, s: float, budget_outcomes: float, budgets: int = 20,
                             safety: float = 2.0, chains: int = 16, quantile: float = 0.9, seed: int = 0,
                             max_evals: int = 400_000) -> Calibration:
    """Threshold for the Bernoulli CUSUM on per-bucket error counts.

    ``budget_outcomes`` is the budget expressed in outcomes (the error stream is
    sparser than the prediction stream). Stationary data is simulated at rate
    ``p0`` itself: the detector tests against a cautious upper bound of the
    reference rate (see :class:`~loopline.processors.drift.detectors.BinomialCusum`), so any
    true rate at or below it alarms less often than simulated.
    """
    rng = _rng(seed, "binomial", round(p0, 9), round(p1, 9), round(s, 6), budget_outcomes)
    length = _sizes(int(budget_outcomes), budgets, s, chains, 0, max_evals)
    x = rng.poisson(s * p0, size=(length, chains))  # errors and successes: independent Poisson counts
    n = x + rng.poisson(s * (1.0 - p0), size=(length, chains))
    score = cusum_paths(binomial_llr(x, n, p0, p1))
    h, allowed = chain_threshold(score, s, budget_outcomes, safety, quantile)
    return Calibration(h, int(round(s)), int(score.size * s), allowed, float(np.median(score)))
