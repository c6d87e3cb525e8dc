"""A human budget spent on expected errors: reviewer capacity per queue, granted by expected value.

:class:`ReviewCapacity` holds one queue's declared capacity (answers per hour)
as a token bucket on event time, like :class:`~loopline.processors.policy.state.ReviewBudget`,
but grants a *batch* at once: audits first (they are random with a known
propensity; dropping some would bias the auto tier's error estimate, so they
always go and use capacity first), then the candidates with the highest
expected value until the tokens run out. Over any stretch of event time the
tasks granted never exceed ``answers_per_hour x hours + burst`` plus the audits
(a test checks the bound); candidates not granted stay automatic.

:func:`expected_error` is the value: the probability that the producer model is
wrong on the event, combined (noisy-or) from the evidence at hand — the
producer's own doubt (``1 - confidence``), the override-risk model, the
challenger's disagreement (its probability that the producer's label is wrong)
and a novelty score in [0, 1] of the features against the reference.

>>> import numpy as np
>>> cap = ReviewCapacity(answers_per_hour=3600, burst=2)
>>> cap.grant(np.array([0.1, 0.9, 0.5]), event_ms=0).tolist()
[False, True, True]
>>> cap.grant(np.array([0.8]), event_ms=500).tolist(), cap.grant(np.array([0.8]), event_ms=1500).tolist()
([False], [True])
"""
from __future__ import annotations

import numpy as np


def expected_error(confidence: np.ndarray, override_risk: np.ndarray | None = None,
                   challenger_disagrees: np.ndarray | None = None, novelty: np.ndarray | None = None) -> np.ndarray:
    """P(the producer's prediction is wrong) per event: noisy-or of the signals given (each in [0, 1])."""
    keep = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)  # P(right) by the producer's own account
    for signal in (override_risk, challenger_disagrees, novelty):
        if signal is not None:
            keep = keep * (1.0 - np.clip(np.asarray(signal, dtype=float), 0.0, 1.0))
    return 1.0 - keep


class ReviewCapacity:
    """Answers per hour of one review queue, granted per batch by value (see module doc)."""

    def __init__(self, answers_per_hour: float, burst: float | None = None) -> None:
        if answers_per_hour <= 0:
            raise ValueError(f"answers_per_hour must be positive, got {answers_per_hour}")
        self.answers_per_hour = answers_per_hour
        self.burst = float(burst if burst is not None else max(1.0, answers_per_hour / 60.0))
        self._per_ms = answers_per_hour / 3_600_000.0
        self.tokens = self.burst
        self.clock_ms: int | None = None
        self.granted = 0
        self.audits = 0
        self.declined = 0
        self.charged = 0

    def _refill(self, event_ms: int) -> None:
        if self.clock_ms is None:
            self.clock_ms = event_ms
        elif event_ms > self.clock_ms:
            self.tokens = min(self.burst, self.tokens + (event_ms - self.clock_ms) * self._per_ms)
            self.clock_ms = event_ms

    def charge(self, answers: int = 1) -> None:
        """Answers spent outside :meth:`grant` (a second opinion on an override): taken from the tokens,
        which may go below zero, so later batches get fewer grants and the bound still holds."""
        self.tokens -= answers
        self.charged += answers

    def grant(self, values: np.ndarray, event_ms: int, audits: np.ndarray | None = None) -> np.ndarray:
        """Which of a batch's candidate tasks go to a human (bool mask over ``values``).

        ``event_ms``: the batch's newest event time; ``audits``: the candidates that
        are random audits (always granted, charged first, never counted over capacity
        in :attr:`granted`).
        """
        values = np.asarray(values, dtype=float)
        self._refill(int(event_ms))
        out = np.zeros(len(values), dtype=bool)
        if audits is not None and audits.any():
            out |= audits
            n_audit = int(audits.sum())
            self.audits += n_audit
            self.tokens = min(self.tokens, max(0.0, self.tokens - n_audit))  # audits never pay off a charge
        free = np.flatnonzero(~out)
        k = min(int(self.tokens), len(free))
        if k > 0:
            order = np.argsort(-values[free], kind="stable")[:k]
            out[free[order]] = True
            self.tokens -= k
            self.granted += k
        self.declined += len(free) - max(k, 0)
        return out
