"""The routing policy's small mutable state: review budgets and model-version age.

Both run on event time (``emitted_at``), never on the wall clock, so feeding
the same events in the same order gives the same decisions — a replay is
deterministic. Both survive a policy replacement (:meth:`RoutingState.adopt`)
and both are bounded: one bucket per tier, at most ``max_versions`` tracked
model versions.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from loopline.processors.policy.model import BudgetSpec


class ReviewBudget:
    """A token bucket of review tasks for one tier, refilled on event time.

    ``tasks_per_minute`` tokens flow in per minute of event time, up to
    ``burst``. Event time only moves forward: an event older than the newest
    one seen refills nothing. The bucket starts full.

    >>> from loopline.processors.policy.model import BudgetSpec
    >>> b = ReviewBudget(BudgetSpec("review", tasks_per_minute=60, burst=2, defer_below_priority=None,
    ...                             deferred_audit_rate=0.1))
    >>> [b.take(t) for t in (0, 0, 0, 999, 1000)]
    [True, True, False, False, True]
    >>> b.granted, b.refused
    (3, 2)
    """

    __slots__ = ("spec", "_per_ms", "tokens", "clock_ms", "granted", "refused")

    def __init__(self, spec: BudgetSpec) -> None:
        self.spec = spec
        self._per_ms = spec.tasks_per_minute / 60_000.0
        self.tokens = float(spec.burst)
        self.clock_ms: int | None = None
        self.granted = 0
        self.refused = 0

    def take(self, event_ms: int) -> bool:
        """Refill up to ``event_ms`` and take one token; False when the bucket is empty."""
        clock = self.clock_ms
        if clock is None:
            self.clock_ms = event_ms
        elif event_ms > clock:
            self.tokens = min(self.spec.burst, self.tokens + (event_ms - clock) * self._per_ms)
            self.clock_ms = event_ms
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.granted += 1
            return True
        self.refused += 1
        return False

    def carry_from(self, old: ReviewBudget) -> None:
        """Continue ``old``'s bucket (tokens clamped to this bucket's burst)."""
        self.tokens = min(old.tokens, float(self.spec.burst))
        self.clock_ms = old.clock_ms
        self.granted, self.refused = old.granted, old.refused


class VersionTracker:
    """When each ``(model, version)`` was first seen (event time) and how many events it had.

    Bounded: beyond ``max_versions`` entries the oldest entry is forgotten (a
    forgotten version seen again counts as new again — the safe direction).

    >>> vt = VersionTracker()
    >>> vt.observe("fraud", "v2", np.array([100, 200, 300]))
    (array([0, 1, 2]), array([  0, 100, 200]))
    >>> vt.observe("fraud", "v2", np.array([400]))
    (array([3]), array([300]))
    """

    __slots__ = ("max_versions", "_seen")

    def __init__(self, max_versions: int = 1024) -> None:
        self.max_versions = max_versions
        self._seen: dict[tuple[str, str], list[int]] = {}  # -> [first_seen_ms, events]

    def observe(self, model: str, version: str, emitted_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count these events; return each one's ordinal and age (ms since first seen) for this version."""
        n = len(emitted_ms)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        key = (model, version)
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = [int(emitted_ms[0]), 0]
            while len(self._seen) > self.max_versions:
                del self._seen[next(iter(self._seen))]
        ordinal = np.arange(entry[1], entry[1] + n)
        entry[1] += n
        return ordinal, np.asarray(emitted_ms, dtype=np.int64) - entry[0]

    def state(self) -> dict[str, list[int]]:
        """JSON-able state (``"model/version" -> [first_seen_ms, events]``) to persist in a table."""
        return {f"{m}/{v}": list(e) for (m, v), e in self._seen.items()}

    def restore(self, state: Mapping[str, list[int]]) -> None:
        for key, (first, count) in state.items():
            m, _, v = key.partition("/")
            self._seen[(m, v)] = [int(first), int(count)]


@dataclass(slots=True)
class BudgetCounters:
    """What the budgets did (for metrics): tasks deferred, tasks sent over budget."""

    deferred: int = 0
    deferred_audited: int = 0
    over_budget_review: int = 0
    over_budget_escalate: int = 0


class RoutingState:
    """Budgets (per tier), version ages and counters; one per policy, handed on at replacement."""

    __slots__ = ("budgets", "versions", "counters")

    def __init__(self, budgets: Mapping[str, BudgetSpec], max_versions: int = 1024) -> None:
        self.budgets = {tier: ReviewBudget(spec) for tier, spec in budgets.items()}
        self.versions = VersionTracker(max_versions)
        self.counters = BudgetCounters()

    def adopt(self, old: RoutingState) -> None:
        """Continue ``old``: same version ages and counters, bucket levels for tiers still budgeted."""
        self.versions = old.versions
        self.counters = old.counters
        for tier, bucket in self.budgets.items():
            if tier in old.budgets:
                bucket.carry_from(old.budgets[tier])
