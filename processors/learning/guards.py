"""Poisoning guards: per-reviewer rate limit and influence cap, reviewer reputation, promotion gate.

All clocks are data time (``reviewed_at``), so a replay decides the same way.

* :class:`RateGuard` — tumbling windows of ``window_ms``: a reviewer may add at
  most ``max_per_window`` learned examples, and at most ``max_share`` of the
  window's learned examples once it has ``min_for_share`` of them and another
  reviewer is active in it (a lone reviewer is bounded by the rate limit only). Excess
  examples are *held*: counted per reviewer and kept (bounded) for operators, not learned.
* :class:`Reputation` — agreement with trusted labels (gold items, and answers
  of a higher tier on the same event: audits and escalations), as a Beta
  posterior mean with a prior of ``prior_agree`` / ``prior_n``. A reviewer below
  ``min_reputation`` has labels rejected; above it, the label weight is
  ``(rep - 0.5) / 0.5`` (a coin-flipper weighs 0, a perfect reviewer 1).
* :class:`AnswerLedger` — recent answers per event (bounded), to compare a
  reviewer with a later/earlier answer from a higher tier.
"""
from __future__ import annotations

from collections import OrderedDict, deque

TIER_RANK = {"auto": 0, "review": 1, "escalate": 2}


class RateGuard:
    def __init__(self, window_ms: int = 60_000, max_per_window: int = 500, max_share: float = 0.5,
                 min_for_share: int = 50, held_max: int = 1000) -> None:
        self.window_ms = window_ms
        self.max_per_window = max_per_window
        self.max_share = max_share
        self.min_for_share = min_for_share
        self._bucket = None
        self._counts: dict[str, int] = {}
        self._total = 0
        self.held: deque = deque(maxlen=held_max)
        self.held_by_reviewer: dict[str, int] = {}

    def admit(self, reviewer: str, now_ms: int) -> str | None:
        """None when the reviewer may add one more example now (and count it), else why not."""
        bucket = now_ms // self.window_ms
        if self._bucket is None or bucket > self._bucket:
            self._bucket, self._counts, self._total = bucket, {}, 0
        mine = self._counts.get(reviewer, 0)
        if mine + 1 > self.max_per_window:
            return "rate_limit"
        others = len(self._counts) - (1 if mine else 0)
        if (others and self._total + 1 >= self.min_for_share
                and (mine + 1) / (self._total + 1) > self.max_share):
            return "influence_cap"
        self._counts[reviewer] = mine + 1
        self._total += 1
        return None

    def hold(self, example_ref: dict, reviewer: str, why: str) -> None:
        self.held.append({**example_ref, "why": why})
        if reviewer in self.held_by_reviewer or len(self.held_by_reviewer) < 10_000:
            self.held_by_reviewer[reviewer] = self.held_by_reviewer.get(reviewer, 0) + 1


class Reputation:
    def __init__(self, prior_agree: float = 9.0, prior_n: float = 10.0, min_reputation: float = 0.8,
                 max_reviewers: int = 10_000) -> None:
        self.prior_agree = prior_agree
        self.prior_n = prior_n
        self.min_reputation = min_reputation
        self.max_reviewers = max_reviewers
        self._stats: OrderedDict[str, list] = OrderedDict()  # reviewer -> [agree, n, admitted, admitted_before_drop]

    def _row(self, reviewer: str) -> list:
        row = self._stats.get(reviewer)
        if row is None:
            row = self._stats[reviewer] = [0.0, 0.0, 0, None]
            while len(self._stats) > self.max_reviewers:
                self._stats.popitem(last=False)
        self._stats.move_to_end(reviewer)
        return row

    def observe(self, reviewer: str, agreed: bool) -> None:
        row = self._row(reviewer)
        row[0] += 1.0 if agreed else 0.0
        row[1] += 1.0
        if row[3] is None and self.score(reviewer) < self.min_reputation:
            row[3] = row[2]  # labels admitted before the reputation first dropped

    def score(self, reviewer: str) -> float:
        row = self._stats.get(reviewer)
        agree, n = (row[0], row[1]) if row else (0.0, 0.0)
        return (agree + self.prior_agree) / (n + self.prior_n)

    def weight(self, reviewer: str) -> float:
        """0 when the reviewer's labels must be rejected, else the label weight in (0, 1]."""
        rep = self.score(reviewer)
        if rep < self.min_reputation:
            return 0.0
        return max((rep - 0.5) / 0.5, 1e-3)

    def admitted(self, reviewer: str) -> None:
        self._row(reviewer)[2] += 1

    def report(self) -> dict:
        return {r: {"reputation": round(self.score(r), 4), "checked": int(row[1]), "agreed": int(row[0]),
                    "admitted": row[2], "admitted_before_drop": row[3]} for r, row in self._stats.items()}


class AnswerLedger:
    """Labelled answers per event (at most ``max_events`` events), to score reviewers against higher tiers."""

    def __init__(self, max_events: int = 50_000) -> None:
        self.max_events = max_events
        self._events: OrderedDict[str, list] = OrderedDict()

    def record(self, event_id: str, reviewer: str, label: str, tier: str) -> list[tuple[str, bool]]:
        """Add an answer; return (reviewer, agreed) verdicts it settles (lower tier vs higher tier)."""
        rank = TIER_RANK.get(tier, 0)
        answers = self._events.get(event_id)
        if answers is None:
            answers = self._events[event_id] = []
            while len(self._events) > self.max_events:
                self._events.popitem(last=False)
        verdicts = []
        higher = [a for a in answers if a[2] > rank]
        if higher:  # judged by the highest answer already there
            best = max(higher, key=lambda a: a[2])
            verdicts.append((reviewer, label == best[1]))
        else:  # this answer judges the lower ones already there
            verdicts += [(r, lb == label) for r, lb, rk in answers if rk < rank and r != reviewer]
        answers.append((reviewer, label, rank))
        return verdicts

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_events"] = OrderedDict(list(self._events.items())[-5_000:])  # keep snapshots small
        return state
