"""The foundation's routing policy: two confidence thresholds, nothing else.

``confidence >= auto`` → auto; ``confidence < escalate`` → escalate; otherwise
review. The full tiered policy (``processors.policy``) has the same
``decide_batch`` contract and replaces it when a policy file is configured.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Decision:
    """What the policy says about one prediction."""

    tier: str  # "auto" | "review" | "escalate"
    reason: str
    policy_version: str
    sampling_propensity: float
    audited: bool = False
    priority: int = 0
    due_by_ms: int = 0


class ThresholdPolicy:
    """Confidence thresholds only.

    >>> p = ThresholdPolicy(auto=0.9, escalate=0.6, sla_ms=60_000)
    >>> [d.tier for d in p.decide_batch([{"confidence": c} for c in (0.95, 0.7, 0.1)], now_ms=0)]
    ['auto', 'review', 'escalate']
    """

    def __init__(self, auto: float = 0.9, escalate: float = 0.6, sla_ms: int = 3_600_000,
                 version: str = "threshold-v1") -> None:
        self.auto = auto
        self.escalate = escalate
        self.sla_ms = sla_ms
        self.version = version
        self._auto = Decision("auto", f"confidence>={auto:g}", version, 0.0)
        self._review_reason = f"confidence<{auto:g}"
        self._escalate_reason = f"confidence<{escalate:g}"

    def decide_batch(self, events: list[dict], now_ms: int) -> list[Decision]:
        out = []
        auto, esc, due = self.auto, self.escalate, now_ms + self.sla_ms
        for e in events:
            c = e["confidence"]
            if c >= auto:
                out.append(self._auto)
            elif c < esc:
                out.append(Decision("escalate", self._escalate_reason, self.version, 1.0,
                                    priority=int((1 - c) * 100) + 100, due_by_ms=due))
            else:
                out.append(Decision("review", self._review_reason, self.version, 1.0,
                                    priority=int((1 - c) * 100), due_by_ms=due))
        return out
