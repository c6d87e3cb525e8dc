"""Per-tier statistics in the worker: per-partition :class:`TierStats`, persisted, served, exported.

Each input partition has its own :class:`~loopline.processors.stats.tier_stats.TierStats`:
``route:<p>`` for the decisions of ``loopline.predictions`` partition *p*,
``feedback:<p>`` for the corrections joined on partition *p* of the review and
correction topics (those are keyed by event id). A partition's statistics live
where the partition is processed, so a rebalance moves them with it:

- they are saved every ``stats_flush_seconds`` into the changelog-backed table
  ``loopline-tier-stats`` under a key whose murmur2 partition *is* p — the
  table partition is co-assigned with the input partition, so the worker that
  takes over partition p restores p's statistics before its stream resumes;
- on revocation a partition's statistics are saved and dropped from memory.

Delivery is at-least-once: after a crash the statistics resume from the last
save while the input resumes from the last commit, so events processed between
the two can count twice or not at all (at most ``stats_flush_seconds`` of
traffic). Counts are exact in normal operation and across clean rebalances.

``GET /stats`` returns this worker's merged partitions; ``GET /stats?format=state``
the exact mergeable state, which ``loopline stats --worker URL ...`` merges across
workers (:meth:`TierStats.merged`), so N workers report the same totals as one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import faust
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from loopline.processors.stats.tier_stats import TierStats
from loopline.processors.wire.partitioning import partition_for

log = logging.getLogger("loopline.stats")
TABLE = "loopline-tier-stats"


def aligned_key(role: str, partition: int, partitions: int) -> str:
    """A table key for ``(role, partition)`` whose murmur2 partition is ``partition``.

    >>> k = aligned_key("route", 3, 4); k.startswith("route:3"), partition_for(k.encode(), 4)
    (True, 3)
    """
    base = f"{role}:{partition}"
    for i in range(100_000):
        key = base if i == 0 else f"{base}~{i}"
        if partition_for(key.encode(), partitions) == partition:
            return key
    raise RuntimeError(f"no key maps to partition {partition} of {partitions}")  # pragma: no cover


class WorkerStats:
    """The per-partition statistics of one worker process."""

    def __init__(self, worker, app: faust.App, flush_seconds: float) -> None:
        s = worker.settings
        self.worker = worker
        self.partitions = s.partitions
        self.topics = s.topics
        self.table = app.Table(TABLE, default=None, key_type=bytes, value_type=None, partitions=s.partitions,
                               use_partitioner=True)
        self.parts: dict[str, TierStats] = {}
        self.dirty: set[str] = set()
        self._keys = {(role, p): aligned_key(role, p, s.partitions)
                      for role in ("route", "feedback") for p in range(s.partitions)}
        self.flushed_at = 0.0

        @app.timer(interval=flush_seconds)
        async def flush_stats() -> None:
            self.flush()

        @app.on_partitions_revoked.connect
        async def _revoked(sender, revoked, **kwargs) -> None:  # noqa: ANN001
            self.release(revoked)

    # ------------------------------------------------------------------ updates
    def _get(self, role: str, partition: int) -> tuple[str, TierStats]:
        key = self._keys[(role, partition)]
        st = self.parts.get(key)
        if st is None:
            state = self.table.get(key.encode())
            st = TierStats.from_state(state) if state else TierStats()
            self.parts[key] = st
        return key, st

    def on_routed(self, result) -> None:
        """Route hook: add every routed frame to its partition's statistics (columns, one call per frame)."""
        for r in result.routed:
            key, st = self._get("route", r.partition)
            st.update_routed(r.frame, r.decisions)
            self.dirty.add(key)

    def on_examples(self, examples: list[dict]) -> None:
        """Example hook: add joined corrections to the statistics of their event's partition."""
        groups: dict[int, list[dict]] = {}
        for ex in examples:
            groups.setdefault(partition_for(ex["event_id"].encode(), self.partitions), []).append(ex)
        policy = self.worker.policy.policy
        for p, rows in groups.items():
            key, st = self._get("feedback", p)
            st.update_examples(rows, positive_label=lambda m: policy.model(m).positive_label,
                               sla_ms=lambda m, tier: _sla_ms(policy.model(m), tier))
            self.dirty.add(key)

    # -------------------------------------------------------------- persistence
    def flush(self) -> None:
        for key in sorted(self.dirty):
            st = self.parts.get(key)
            if st is not None:
                self.table[key.encode()] = st.to_state()
        self.dirty.clear()
        self.flushed_at = time.time()

    def release(self, revoked) -> None:
        """Save and forget the statistics of revoked input partitions."""
        gone = set()
        for tp in revoked:
            if tp.topic == self.topics.predictions:
                gone.add(self._keys[("route", tp.partition)])
            elif tp.topic in (self.topics.corrections, self.topics.review_analyst, self.topics.review_escalation):
                gone.add(self._keys[("feedback", tp.partition)])
        if not gone & set(self.parts):
            return
        try:
            self.flush()
        except Exception:  # the changelog producer may already be stopping; the last timed save stands
            log.warning("could not save statistics on revocation", exc_info=True)
        for key in gone:
            self.parts.pop(key, None)

    # ------------------------------------------------------------------ reading
    def merged(self) -> TierStats:
        parts = list(self.parts.values())
        return TierStats.merged(parts) if parts else TierStats()

    def nbytes(self) -> int:
        return sum(st.nbytes() for st in self.parts.values())


def _sla_ms(mp, tier: str) -> int | None:
    return mp.escalate_sla_ms if tier == "escalate" else mp.review_sla_ms


class TierCollector:
    """Prometheus view of the worker's statistics, computed at scrape time (labels: model, tier)."""

    def __init__(self, stats: Callable[[], WorkerStats | None], model_label: Callable[[str], str]) -> None:
        self.stats = stats
        self.model_label = model_label

    def describe(self):
        return []

    def collect(self):
        ws = self.stats()
        outcomes = CounterMetricFamily(
            "loopline_tier_outcomes", "Joined corrections by the tier of their decision (audits count as auto) and "
            "outcome: agree, override (the human label differs) or unlabelled (unsure/skip).",
            labels=["model", "tier", "outcome"])
        breaches = CounterMetricFamily("loopline_tier_sla_breaches", "Corrections answered after their task's SLA.",
                                       labels=["model", "tier"])
        override = GaugeMetricFamily(
            "loopline_tier_override_rate", "Share of answered corrections that overrode the prediction, current "
            "1-hour window (event time) of this worker's partitions.", labels=["model", "tier"])
        size = GaugeMetricFamily("loopline_stats_bytes", "Bytes held by this worker's per-tier statistics.")
        if ws is not None:
            merged = ws.merged()
            snap = merged.snapshot()
            for model, m in snap["all_time"].items():
                label = self.model_label(model)
                for tier, t in m["tiers"].items():
                    o = t["outcomes"]
                    agree = round((o["agreement_rate"] or 0.0) * o["answered"])
                    outcomes.add_metric([label, tier, "agree"], agree)
                    outcomes.add_metric([label, tier, "override"], o["answered"] - agree)
                    outcomes.add_metric([label, tier, "unlabelled"], o["unlabelled"])
                    breaches.add_metric([label, tier], o["sla_breaches"])
            current = (snap["windows"].get("1h") or {}).get("current") or {}
            for model, m in (current.get("models") or {}).items():
                for tier, t in m["tiers"].items():
                    rate = t["outcomes"]["override_rate"]
                    if rate is not None:
                        override.add_metric([self.model_label(model), tier], rate)
            size.add_metric([], ws.nbytes())
        yield from (outcomes, breaches, override, size)
