"""Autonomy that follows measured error: a sequential test on audit outcomes lowers a model's autonomy.

The auto tier is the part of a model's traffic no human sees; audits sample it
at random with a known propensity (``sampling_propensity``), so an audited
outcome is an unbiased look at the auto tier's error. :class:`AutonomyMonitor`
reads those outcomes one at a time, for one model:

* **estimate with an interval** — the self-normalised inverse-propensity
  (Hajek) error rate over exponentially forgotten outcomes (``half_life``
  outcomes), with a Wilson score interval on Kish's effective n;
* **a sequential test that works from the first outcome** — a Bernoulli CUSUM
  of ``H1: error = alarm_ratio x budget`` against ``H0: error = budget``
  (log-likelihood ratio per outcome, weighted by its normalised inverse
  propensity), alarming when the statistic exceeds ``cusum_h``. No warm-up: one
  outcome moves it, and a run of errors alarms after ``ceil(h / ln ratio)``
  outcomes (5 at the defaults);
* **lower autonomy** on an alarm: one level down (a higher auto threshold and
  more audits, :attr:`AutonomySpec.levels`); when most of the errors behind the
  alarm came at high confidence (``>= high_confidence``) a higher threshold
  would not catch them, so it goes straight to the last level (the largest
  share of traffic to humans);
* **restore** one level when, on the outcomes since the last change (at least
  ``min_restore`` effective outcomes), the *upper* Wilson bound is back inside
  the budget, or the mirror CUSUM (``H1: error = budget / alarm_ratio`` against
  ``H0: error = budget``) exceeds ``cusum_h`` — the sequential proof that the
  error is below budget, which does not need the thousands of outcomes a
  bound needs when the budget sits close to the model's usual error.

Human labels are noisy: with a known reviewer error rate ``label_noise`` (ε,
from gold items or the learner's reputation) an outcome looks wrong with
probability ``p (1 - 2ε) + ε`` when the true error rate is ``p``. The tests
run on that observed scale (``p0``, ``p1`` mapped through it) and the
estimate and interval are mapped back, so reviewer noise neither raises false
alarms nor hides an error budget breach (measured on the loop bench with 3%
noisy reviewers and ε = 0: 11-12 false alarms per 100k events).

Every change is an :class:`AutonomyChange` with its evidence (estimate,
interval, effective n, CUSUM statistic, confident-error share, position in the
stream); :class:`~loopline.streams.quality_autonomy` turns it into the
``autonomy`` overlay on the policy and a logged policy event.

>>> m = AutonomyMonitor("fraud", AutonomySpec(error_budget=0.02))
>>> [m.observe(False, 0.02, 0.97, i) for i in range(200)].count(None)
200
>>> changes = [m.observe(True, 0.02, 0.99, 200 + i) for i in range(5)]
>>> [c.action for c in changes if c], m.level
(['lower'], 2)
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AutonomyLevel:
    """What one autonomy level does to the auto tier (the base level 0 is the policy file's)."""

    audit_rate: float  # audit share of the auto tier (at least; the file's higher rate stays)
    min_confidence_delta: float  # added to the model's auto threshold


@dataclass(frozen=True)
class AutonomySpec:
    """Knobs of :class:`AutonomyMonitor` (see module doc)."""

    error_budget: float = 0.05
    alarm_ratio: float = 2.0
    cusum_h: float = 3.0
    confidence: float = 0.95
    min_restore: int = 60
    half_life: float = 200.0
    high_confidence: float = 0.95
    confident_share: float = 0.5
    label_noise: float = 0.0
    levels: tuple[AutonomyLevel, ...] = (AutonomyLevel(0.10, 0.03), AutonomyLevel(0.25, 0.06))

    def __post_init__(self) -> None:
        if not 0.0 < self.error_budget < 1.0:
            raise ValueError(f"error_budget must be in (0, 1), got {self.error_budget}")
        if self.alarm_ratio <= 1.0 or self.alarm_ratio * self.error_budget >= 1.0:
            raise ValueError("alarm_ratio must be > 1 with alarm_ratio x error_budget < 1")
        if not 0.0 <= self.label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5), got {self.label_noise}")
        if not self.levels:
            raise ValueError("give at least one autonomy level")


@dataclass(frozen=True)
class AutonomyChange:
    """One move of a model's autonomy level, with the evidence behind it."""

    model: str
    action: str  # "lower" | "restore"
    old_level: int
    new_level: int
    level: AutonomyLevel | None  # None = back to the policy file
    evidence: dict = field(default_factory=dict)


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` on ``n`` (effective) trials.

    >>> [round(v, 4) for v in wilson(0.0, 100, 1.6449)]
    [0.0, 0.0263]
    """
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    """One-sided normal quantile (bisection on erf; no scipy)."""
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class _Weighted:
    """Decayed (or plain) weighted sums of an error indicator: estimate, effective n, interval."""

    __slots__ = ("decay", "sw", "swe", "sw2")

    def __init__(self, decay: float = 1.0) -> None:
        self.decay = decay
        self.sw = self.swe = self.sw2 = 0.0

    def add(self, wrong: bool, w: float) -> None:
        d = self.decay
        self.sw = self.sw * d + w
        self.swe = self.swe * d + (w if wrong else 0.0)
        self.sw2 = self.sw2 * d * d + w * w

    @property
    def n_eff(self) -> float:
        return self.sw * self.sw / self.sw2 if self.sw2 else 0.0

    @property
    def estimate(self) -> float:
        return self.swe / self.sw if self.sw else 0.0


class AutonomyMonitor:
    """Sequential auto-tier error test and autonomy level of one model (see module doc)."""

    def __init__(self, model: str, spec: AutonomySpec | None = None) -> None:
        self.model = model
        self.spec = s = spec or AutonomySpec()
        self.level = 0
        self.cusum = 0.0
        self.outcomes = 0
        self._z = _z(s.confidence)
        self._recent = _Weighted(0.5 ** (1.0 / s.half_life))
        self._since = _Weighted()  # outcomes since the last change (restore evidence)
        self._decay = 0.5 ** (1.0 / s.half_life)
        self._ipw_sum = self._ipw_n = 0.0  # decayed mean of the inverse propensities
        self._errors: deque = deque(maxlen=32)  # confidence of the recent errors
        p0, p1 = self._observed(s.error_budget), self._observed(s.error_budget * s.alarm_ratio)
        self._llr_err = math.log(p1 / p0)
        self._llr_ok = math.log((1 - p1) / (1 - p0))
        pb = self._observed(s.error_budget / s.alarm_ratio)
        self._below_err = math.log(pb / p0)
        self._below_ok = math.log((1 - pb) / (1 - p0))
        self.below = 0.0  # mirror CUSUM: evidence that the error is under budget
        self.changes: list[AutonomyChange] = []

    def observe(self, wrong: bool, propensity: float, confidence: float, position: int) -> AutonomyChange | None:
        """One audited auto-tier outcome (``wrong``: the human's label differs from the prediction).

        ``position`` is where the outcome sits in the stream (event index or
        event time), recorded in the evidence. Returns the change it caused, if any.
        """
        self.outcomes += 1
        ipw = 1.0 / propensity if propensity > 0 else 1.0
        d = self._decay
        self._ipw_sum = self._ipw_sum * d + ipw
        self._ipw_n = self._ipw_n * d + 1.0
        w = ipw * self._ipw_n / self._ipw_sum  # normalised: weights average 1 over the recent outcomes
        self._recent.add(wrong, w)
        self._since.add(wrong, w)
        if wrong:
            self._errors.append(confidence)
        self.cusum = max(0.0, self.cusum + w * (self._llr_err if wrong else self._llr_ok))
        self.below = max(0.0, self.below + w * (self._below_err if wrong else self._below_ok))
        s = self.spec
        if self.cusum > s.cusum_h and self.level < len(s.levels):
            confident = self.confident_error_share()
            new = len(s.levels) if confident >= s.confident_share else self.level + 1
            return self._move("lower", new, position, confident)
        if self.level > 0 and self._since.n_eff >= s.min_restore:
            _, _, upper = self._interval(self._since)
            if upper <= s.error_budget or self.below > s.cusum_h:
                return self._move("restore", self.level - 1, position, self.confident_error_share())
        return None

    def _observed(self, p: float) -> float:
        e = self.spec.label_noise
        return p * (1 - 2 * e) + e

    def _true(self, q: float) -> float:
        e = self.spec.label_noise
        return min(1.0, max(0.0, (q - e) / (1 - 2 * e)))

    def _interval(self, w: _Weighted) -> tuple[float, float, float]:
        lo, hi = wilson(w.estimate, w.n_eff, self._z)
        return self._true(w.estimate), self._true(lo), self._true(hi)

    def confident_error_share(self) -> float:
        """Share of the recent errors made at confidence ``>= high_confidence``."""
        if not self._errors:
            return 0.0
        return sum(c >= self.spec.high_confidence for c in self._errors) / len(self._errors)

    def status(self) -> dict:
        est, lo, hi = self._interval(self._recent)
        return {"level": self.level, "estimate": est, "lower": lo, "upper": hi,
                "n_effective": self._recent.n_eff, "cusum": self.cusum, "outcomes": self.outcomes,
                "error_budget": self.spec.error_budget}

    def _move(self, action: str, new: int, position: int, confident: float) -> AutonomyChange:
        st = self.status()
        since_est, since_lo, since_hi = self._interval(self._since)
        evidence = {"estimate": st["estimate"], "lower": st["lower"], "upper": st["upper"],
                    "n_effective": st["n_effective"], "cusum": self.cusum, "cusum_h": self.spec.cusum_h,
                    "since_change_estimate": since_est, "since_change_upper": since_hi,
                    "since_change_lower": since_lo, "since_change_n": self._since.n_eff,
                    "confident_error_share": confident, "error_budget": self.spec.error_budget,
                    "label_noise": self.spec.label_noise,
                    "position": float(position), "outcomes": float(self.outcomes)}
        evidence["below_cusum"] = self.below
        old, self.level = self.level, new
        self.cusum = self.below = 0.0
        self._since = _Weighted()
        change = AutonomyChange(self.model, action, old, new, self.spec.levels[new - 1] if new else None, evidence)
        self.changes.append(change)
        return change
