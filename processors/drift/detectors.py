"""Detectors: a score per evaluation, a calibrated threshold, and hysteresis.

Every detector is fed from *merged counts* only (bucket or window histograms,
per-bucket error counts), so its verdict is the same for one worker or many.

* window tests (``psi``, ``ks``, ``wasserstein``, ``js``, ``chi2``, ``unseen``)
  compare the last ``window_buckets`` buckets with the reference histogram;
* ``rank_cusum`` is a two-sided CUSUM on the standardised mid-rank score of each
  value's reference bin (a binned, sequential Mann–Whitney): fast on location
  shifts, blind to pure shape changes;
* ``binomial_cusum`` is the Bernoulli CUSUM on the error (override) stream,
  testing the reference rate ``p0`` against ``p1``.

>>> h = Hysteresis(consecutive=2, resolve_ratio=0.5, resolve_after=2)
>>> [h.step(s, 1.0) for s in (2, 0.1, 2, 2, 0.9, 0.4, 0.4)]
[None, None, None, 'started', None, None, 'resolved']
"""
from __future__ import annotations

import functools
import math

import numpy as np

from loopline.processors.drift import stats
from loopline.processors.drift.config import DriftConfig
from loopline.processors.drift.reference import ErrorReference, SignalProfile
from loopline.processors.drift.thresholds import (
    Calibration,
    binomial_llr,
    calibrate_binomial_cusum,
    calibrate_rank_cusum,
    calibrate_window,
)

# How a window statistic's null level scales with the window size n (reference size m).
_LAW = {"psi": "var", "js": "var", "chi2": "const", "ks": "sqrt", "wasserstein": "sqrt", "unseen": "share"}


def _normal_quantile(q: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < q < 1.0:
        return 0.0 if q <= 0.5 else 3.0
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if q < lo or q > 1 - lo:
        r = math.sqrt(-2 * math.log(q if q < lo else 1 - q))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1)
        return x if q < lo else -x
    r = q - 0.5
    t = r * r
    return (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * r / \
        (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1)


class Hysteresis:
    """Alarm state of one detector: starts after ``consecutive`` scores above the
    threshold, resolves after ``resolve_after`` scores below ``resolve_ratio`` times it."""

    def __init__(self, consecutive: int = 1, resolve_ratio: float = 0.7, resolve_after: int = 4,
                 ongoing_every: int = 0) -> None:
        self.consecutive = consecutive
        self.resolve_ratio = resolve_ratio
        self.resolve_after = resolve_after
        self.ongoing_every = ongoing_every
        self._above = 0
        self._below = 0
        self._since = 0
        self.active = False

    def step(self, score: float, threshold: float) -> str | None:
        """Feed one evaluation; return the state change (``started``/``ongoing``/``resolved``) or None."""
        if math.isnan(score):
            return None
        if not self.active:
            self._above = self._above + 1 if score > threshold else 0
            if self._above >= self.consecutive:
                self.active, self._below, self._since = True, 0, 0
                return "started"
            return None
        self._below = self._below + 1 if score < self.resolve_ratio * threshold else 0
        if self._below >= self.resolve_after:
            self.active, self._above = False, 0
            return "resolved"
        self._since += 1
        if self.ongoing_every and self._since % self.ongoing_every == 0:
            return "ongoing"
        return None


def window_stat(detector: str, ordered: int, centres: tuple = (), scale: float = 1.0):
    """The statistic ``f(window_counts, reference_counts)`` of a window detector.

    ``ordered``: number of leading bins with an order (KS, Wasserstein use only those).
    """
    if detector == "psi":
        return stats.psi
    if detector == "js":
        return stats.js_divergence
    if detector == "chi2":
        return stats.chi_square
    if detector == "unseen":
        return lambda w, ref: stats.unseen_share(w)
    o = slice(0, ordered)
    if detector == "ks":
        return lambda w, ref: stats.ks_binned(w[..., o], ref[o])
    if detector == "wasserstein":
        c = np.asarray(centres)
        return lambda w, ref: stats.wasserstein_binned(w[..., o], ref[o], c, scale)
    raise ValueError(f"unknown window detector {detector!r}")


@functools.lru_cache(maxsize=256)
def _window_calibration(detector, ordered, centres, scale, ref, alpha, s, window_buckets, consecutive, budget,
                        budgets, safety, chains, quantile, seed) -> Calibration:
    # Pure function of its arguments, cached: quantile bins make most numeric references identical.
    return calibrate_window(window_stat(detector, ordered, centres, scale), np.array(ref), np.array(alpha), s,
                            window_buckets, consecutive, budget, budgets, safety, chains, quantile, seed,
                            name=detector)


@functools.lru_cache(maxsize=256)
def _rank_calibration(ref, alpha, scores, kappa, s, budget, budgets, safety, chains, quantile, seed) -> Calibration:
    return calibrate_rank_cusum(np.array(ref), np.array(alpha), np.array(scores), kappa, s, budget, budgets, safety,
                                chains, quantile, seed)


@functools.lru_cache(maxsize=256)
def _binomial_calibration(p0, p1, s, budget, budgets, safety, chains, quantile, seed) -> Calibration:
    return calibrate_binomial_cusum(p0, p1, s, budget, budgets, safety, chains, quantile, seed)


def calibration_counts(signal: SignalProfile) -> tuple[np.ndarray, np.ndarray]:
    """Reference counts and Dirichlet parameters the calibration simulates.

    Quantile bins hold equal counts up to ties (±1 or 2): those are replaced by
    the exactly equal layout, so that every continuous numeric signal shares one
    cached calibration. The live statistic still uses the true counts.
    """
    ref, alpha = signal.counts, signal.null_alpha()
    if signal.kind != "numeric":
        return ref, alpha
    inner = ref[1:-2]
    if len(inner) and inner.max() - inner.min() <= max(2, 0.01 * inner.mean()):
        ref = ref.copy()
        total = int(inner.sum())
        ref[1:-2] = total // len(inner)
        ref[1:1 + total % len(inner)] += 1
        alpha = alpha.copy()
        alpha[1:-2] = np.maximum(ref[1:-2], 0.5)
    return ref, alpha


class WindowTest:
    """A distribution test of the current window against the reference histogram."""

    kind = "window"

    def __init__(self, detector: str, signal: SignalProfile, events_per_bucket: float, config: DriftConfig) -> None:
        self.detector = detector
        self.signal = signal
        self.events_per_bucket = events_per_bucket
        self.config = config
        ref = signal.counts
        self._ref = ref
        self._m = max(int(ref.sum()), 1)
        centres = tuple(signal.centres().tolist()) if detector == "wasserstein" else ()
        ordered = signal.ordered.stop if detector in ("ks", "wasserstein") else 0
        scale = signal.scale if detector == "wasserstein" else 1.0
        self._stat = window_stat(detector, ordered, centres, scale)
        c = config
        cal_ref, cal_alpha = calibration_counts(signal)
        if detector == "unseen":  # the share depends on the unseen bin only: calibrate on [seen, unseen]
            cal_ref = np.array([ref[:-1].sum(), ref[-1]])
            cal_alpha = np.array([cal_alpha[:-1].sum(), cal_alpha[-1]])
        self.calibration: Calibration = _window_calibration(
            detector, ordered, centres, scale, tuple(cal_ref.tolist()), tuple(cal_alpha.tolist()),
            float(events_per_bucket), c.window_buckets, c.consecutive, c.budget_events, c.calibration_budgets,
            c.calibration_safety, c.calibration_chains, c.calibration_quantile, c.seed)
        self._null_share = float(signal.null_alpha()[-1] / signal.null_alpha().sum())

    def threshold_for(self, n: int) -> float:
        """Calibrated threshold, raised for windows smaller than the calibrated one."""
        h, n0 = self.calibration.threshold, self.calibration.window_events
        if n >= n0:
            return h
        law = _LAW[self.detector]
        if law == "var":
            return h * (1.0 / n + 1.0 / self._m) / (1.0 / n0 + 1.0 / self._m)
        if law == "sqrt":
            return h * math.sqrt((1.0 / n + 1.0 / self._m) / (1.0 / n0 + 1.0 / self._m))
        if law == "share":
            return self._null_share + max(h - self._null_share, 0.0) * math.sqrt(n0 / n)
        return h

    def evaluate(self, window: np.ndarray, bucket: np.ndarray) -> tuple[float, float, int]:
        """(score, threshold, events in window); score NaN if the window holds too few events."""
        n = int(window.sum())
        if n < max(self.calibration.window_events // 2, 1):
            return math.nan, self.threshold_for(max(n, 1)), n
        return float(self._stat(window, self._ref)), self.threshold_for(n), n


class RankCusum:
    """Two-sided CUSUM on the standardised reference rank of each value (per bucket sums)."""

    kind = "sequential"

    def __init__(self, signal: SignalProfile, events_per_bucket: float, config: DriftConfig,
                 cap_ratio: float = 2.0) -> None:
        self.detector = "rank_cusum"
        self.signal = signal
        self.config = config
        self.cap_ratio = cap_ratio
        z = np.zeros(signal.n_bins)
        z[signal.ordered] = stats.rank_scores(signal.counts[signal.ordered])
        self._z = z
        self._mask = np.zeros(signal.n_bins)
        self._mask[signal.ordered] = 1.0
        self._kappa = config.cusum_shift / 2.0
        c = config
        cal_ref, cal_alpha = calibration_counts(signal)
        cal_z = np.zeros(signal.n_bins)
        cal_z[signal.ordered] = stats.rank_scores(cal_ref[signal.ordered])
        self.calibration = _rank_calibration(tuple(cal_ref.tolist()), tuple(cal_alpha.tolist()),
                                             tuple(cal_z.tolist()), self._kappa, float(events_per_bucket),
                                             c.budget_events, c.calibration_budgets, c.calibration_safety,
                                             c.calibration_chains, c.calibration_quantile, c.seed)
        self._up = 0.0
        self._down = 0.0

    def evaluate(self, window: np.ndarray, bucket: np.ndarray) -> tuple[float, float, int]:
        counts = bucket.astype(np.float64)
        t = float(counts @ self._z)
        n = float(counts @ self._mask)
        h = self.calibration.threshold
        cap = self.cap_ratio * h
        self._up = min(max(0.0, self._up + t - self._kappa * n), cap)
        self._down = min(max(0.0, self._down - t - self._kappa * n), cap)
        return max(self._up, self._down), h, int(window.sum())

    def state(self) -> list[float]:
        return [self._up, self._down]


class BinomialCusum:
    """Bernoulli CUSUM on per-bucket (outcomes, errors): is the error rate above ``p1``?"""

    kind = "sequential"

    def __init__(self, error: ErrorReference, config: DriftConfig, cap_ratio: float = 2.0) -> None:
        self.detector = "binomial_cusum"
        self.error = error
        self.config = config
        self.cap_ratio = cap_ratio
        # Test against a cautious p0: the Wilson upper bound of the reference rate at
        # ``error_rate_quantile``, so that a reference that underestimates the rate by chance does not keep the
        # CUSUM drifting upwards on stationary data (which would force a huge threshold).
        z = _normal_quantile(config.error_rate_quantile)
        n, phat = max(error.n, 1), error.errors / max(error.n, 1)
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        p0 = min(max(centre + half, 1e-4), 0.99)
        self.p0 = p0
        self.p1 = min(max(p0 * (1.0 + config.error_shift_relative), p0 + config.error_shift_absolute), 0.999)
        c = config
        self.calibration = _binomial_calibration(p0, self.p1, float(error.outcomes_per_bucket), c.budget_events,
                                                 c.calibration_budgets, c.calibration_safety, c.calibration_chains,
                                                 c.calibration_quantile, c.seed)
        self._s = 0.0

    def evaluate_counts(self, n: int, errors: int) -> tuple[float, float, int]:
        h = self.calibration.threshold
        inc = float(binomial_llr(errors, n, self.p0, self.p1)) if n else 0.0
        self._s = min(max(0.0, self._s + inc), self.cap_ratio * h)
        return self._s, h, n
