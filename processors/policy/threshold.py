"""The foundation's routing policy: two confidence thresholds, nothing else.

``confidence >= auto`` → auto; ``confidence < escalate`` → escalate; otherwise
review. The full tiered policy (``loopline.processors.policy.policy``) has the same contract
(``decide_frame``) and replaces it when a policy file is configured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopline.processors.wire.frame import PredictionFrame

AUTO, REVIEW, ESCALATE = 0, 1, 2


@dataclass(slots=True)
class FrameDecisions:
    """The policy's answer for every row of a frame, as columns."""

    policy_version: str
    tiers: np.ndarray  # int8: 0 auto, 1 review, 2 escalate
    reasons: list[str]  # dictionary
    reason_codes: np.ndarray  # int32
    propensity: np.ndarray  # float64: probability the event reaches a human
    audited: np.ndarray  # bool: auto events drawn for audit
    priority: np.ndarray  # int32, higher = more urgent
    due_by_ms: np.ndarray  # int64

    def needs_human(self) -> np.ndarray:
        return (self.tiers != AUTO) | self.audited


class ThresholdPolicy:
    """Confidence thresholds only.

    >>> from loopline.processors.testing import make_events
    >>> from loopline.processors.wire.frame import frames_from_events
    >>> from loopline.processors.wire.names import TIERS
    >>> evs = make_events(3, start_ms=0)
    >>> for e, c in zip(evs, (0.95, 0.7, 0.1)): e["confidence"] = c
    >>> d = ThresholdPolicy(auto=0.9, escalate=0.6).decide_frame(frames_from_events(evs)[0], now_ms=0)
    >>> [TIERS[t] for t in d.tiers]
    ['auto', 'review', 'escalate']
    """

    def __init__(self, auto: float = 0.9, escalate: float = 0.6, sla_ms: int = 3_600_000,
                 version: str = "threshold-v1") -> None:
        self.auto = auto
        self.escalate = escalate
        self.sla_ms = sla_ms
        self.version = version
        self._reasons = [f"confidence>={auto:g}", f"confidence<{auto:g}", f"confidence<{escalate:g}"]

    def decide_frame(self, frame: PredictionFrame, now_ms: int) -> FrameDecisions:
        c = frame.confidence
        tiers = np.where(c >= self.auto, AUTO, np.where(c < self.escalate, ESCALATE, REVIEW)).astype(np.int8)
        human = tiers != AUTO
        priority = np.where(human, ((1.0 - c) * 100).astype(np.int32) + (tiers == ESCALATE) * 100, 0).astype(np.int32)
        return FrameDecisions(
            self.version, tiers, self._reasons, tiers.astype(np.int32), human.astype(np.float64),
            np.zeros(frame.n, dtype=bool), priority, np.full(frame.n, now_ms + self.sla_ms, dtype=np.int64))
