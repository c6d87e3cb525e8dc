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

Each event counts once, across crashes and rebalances, although its decision
may be published more than once (at-least-once). For every predictions
partition the saved state records which offsets it counted
(:class:`~loopline.processors.stats.counted.CountedOffsets`: a contiguous prefix
below ``next`` and the few counted beyond a hole, since a re-read after a seek
delivers out of order); records counted before are routed again after a crash or
a rebalance but are not given to the route hooks (``split``/``counted``), and
the worker never commits the partition's input offset past the saved ``next``
(a commit ceiling, ``streams/offset_guard.py``; the state is saved just in time,
in the commit itself, and Faust flushes the changelog before it commits). So
after a crash the input resumes at or below ``next``, replays are skipped and
nothing counted is lost. Answers follow the same rule: the join remembers which
record each correction id came in and re-emits the example when that record is
read again, so a correction the statistics had not saved before a crash is
counted on its replay, whatever the join had saved. An answer that came before
its task is joined by the task's record, which a replay does not join again:
those batches are saved at once (``counted(..., save_now=True)``), leaving the
window between two changelog writes for that case only.
A summary older than the committed offset (the embedded broker leaves a
changelog's tail in Faust's recovery buffer) is detected and read again after
applying that tail.

``GET /stats`` returns this worker's merged partitions; ``GET /stats?format=state``
the exact mergeable state, which ``loopline stats --worker URL ...`` merges across
workers (:meth:`TierStats.merged`), so N workers report the same totals as one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from loopline.processors.stats.counted import CountedOffsets
from loopline.processors.stats.tier_stats import TierStats
from loopline.processors.wire.partitioning import partition_for

log = logging.getLogger("loopline.stats")
TABLE = "loopline-tier-stats"
#: Key of the saved route state: the predictions offsets it counted (CountedOffsets.to_state).
COUNTED = "counted_offsets"


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
        self.app = app
        self.partitions = s.partitions
        self.topics = s.topics
        self.table = app.Table(TABLE, default=None, key_type=bytes, value_type=None, partitions=s.partitions,
                               use_partitioner=True)
        self.parts: dict[str, TierStats] = {}
        self.dirty: set[str] = set()
        self._keys = {(role, p): aligned_key(role, p, s.partitions)
                      for role in ("route", "feedback") for p in range(s.partitions)}
        self._role_partition = {key: rp for rp, key in self._keys.items()}
        self.flushed_at = 0.0
        #: (input topic, partition) -> the offsets counted into its statistics, and what the last save recorded
        self.marks: dict[tuple[str, int], CountedOffsets] = {}
        self.saved: dict[tuple[str, int], tuple] = {}
        #: statistics keys of partitions revoked and not assigned again: a batch still in flight is not counted
        self.released: set[str] = set()
        self._roles = {s.topics.predictions: "route", s.topics.corrections: "feedback",
                       s.topics.review_analyst: "feedback", s.topics.review_escalation: "feedback"}
        #: (name, role, owner): more per-partition state saved in the same table value (see attach)
        self.attached: list[tuple[str, str, Any]] = []
        app._loopline_commit_ceiling = self.commit_ceiling  # read by streams/offset_guard.py
        app._loopline_on_hole = self.on_hole

        @app.timer(interval=flush_seconds)
        async def flush_stats() -> None:
            self.flush()

        @app.on_partitions_revoked.connect
        async def _revoked(sender, revoked, **kwargs) -> None:  # noqa: ANN001
            self.release(revoked)

        @app.on_partitions_assigned.connect
        async def _assigned(sender, assigned, **kwargs) -> None:  # noqa: ANN001
            self.released -= {self._key_of(tp) for tp in assigned}

        @app.on_rebalance_complete.connect
        async def _restored(sender, **kwargs) -> None:  # noqa: ANN001
            self.load(app.consumer.assignment())  # tables recovered: show them before new traffic comes

    # ------------------------------------------------------------------ updates
    def _key_of(self, tp) -> str | None:  # noqa: ANN001
        role = self._roles.get(tp.topic)
        return self._keys[(role, tp.partition)] if role else None

    def _get(self, role: str, partition: int) -> tuple[str, TierStats]:
        key = self._keys[(role, partition)]
        st = self.parts.get(key)
        if st is None:
            state = self.table.get(key.encode())
            if self._stale(role, partition, state):
                # the latest save is in the changelog's tail, which Faust keeps in its recovery buffer
                # after a recovery on the embedded broker (streams/feedback.py): apply it and read again
                from loopline.streams.feedback import apply_active_changelog_tail

                apply_active_changelog_tail(self.app.tables.recovery)
                state = self.table.get(key.encode())
                if self._stale(role, partition, state):
                    log.warning("statistics of %s are older than the committed offset; some events may be missing",
                                key)
            st = TierStats.from_state(state) if state else TierStats()
            self.parts[key] = st
            for name, r, owner in self.attached:
                if r == role:
                    owner.restore(partition, (state or {}).get(name))
            counted = (state or {}).get(COUNTED) or {}
            for topic, r in self._roles.items():
                if r == role:
                    mark = self.marks[(topic, partition)] = CountedOffsets.from_state(counted.get(topic))
                    self.saved[(topic, partition)] = mark.key()
        return key, st

    def _stale(self, role: str, partition: int, state: dict | None) -> bool:
        """True when the input was committed past what ``state`` counted (it cannot be the latest save)."""
        counted = (state or {}).get(COUNTED) or {}
        committed = getattr(getattr(self.app, "consumer", None), "_committed_offset", None) or {}
        for topic, r in self._roles.items():
            if r == role:
                c = committed.get(TP(topic, partition))
                mark = (counted.get(topic) or {}).get("next")
                if c is not None and (mark is None or mark < c):
                    return True
        return False

    def attach(self, name: str, role: str, owner: Any) -> None:
        """Save ``owner``'s state of each ``role`` partition ("route" or "feedback") with its statistics.

        ``owner.state_of(p) -> dict | None``, ``owner.restore(p, state | None)`` (on loading the
        partition) and ``owner.drop(p)`` (on its revocation). Saved in the same table value as the
        statistics and the counted offsets, so it counts each event once as they do
        (calibration: streams/quality.py).
        """
        self.attached.append((name, role, owner))

    def keeps(self, role: str, partition: int) -> bool:
        """False for a partition revoked and not assigned again (a batch still in flight must not count it)."""
        return self._keys[(role, partition)] not in self.released

    def load(self, assigned) -> None:
        """Bring the saved statistics of newly assigned input partitions into memory."""
        for tp in assigned:
            role = self._roles.get(tp.topic)
            if role:
                self._get(role, tp.partition)

    # ------------------------------------------------------------ counting once
    def split(self, records: list) -> tuple[list, list]:
        """``(replayed, fresh)``: records counted before (or of a partition revoked meanwhile) and the rest."""
        replayed, fresh = [], []
        batch: set[tuple[str, int, int]] = set()  # a re-read after a seek can deliver a record twice in one take
        for r in records:
            role = self._roles.get(r.topic)
            if role:
                if not self.keeps(role, r.partition):
                    replayed.append(r)  # revoked: the next owner counts it
                    continue
                self._get(role, r.partition)  # restores the partition's counted offsets
                at = (r.topic, r.partition, r.offset)
                if at in batch or self.marks[(r.topic, r.partition)].seen(r.offset):
                    replayed.append(r)
                    continue
                batch.add(at)
            fresh.append(r)
        return replayed, fresh

    def counted(self, records: list, save_now: bool = False) -> None:
        """Mark ``records`` counted (fresh ones, processed and published; dead letters too).

        ``save_now``: save their partitions' statistics at once instead of at the next flush
        or commit — for examples that a replay of their record would not emit again.
        """
        now = set()
        for r in records:
            mark, key = self.marks.get((r.topic, r.partition)), self._key_of(r)
            if mark is not None and key not in self.released:
                mark.add(r.offset)
                if save_now and key in self.dirty:
                    now.add(key)
        for key in now:
            self._save(key, self.parts[key])

    def on_hole(self, tp, start: int, end: int) -> None:  # noqa: ANN001
        """The consumer accepted offsets ``start..end-1`` as a hole in the log: nothing to count there."""
        mark = self.marks.get((tp.topic, tp.partition))
        if mark is not None:
            mark.skip(start, end)

    def commit_ceiling(self, tp) -> int | None:  # noqa: ANN001
        """The highest input offset the worker may commit for ``tp`` (``None``: no limit).

        Called by the consumer while it computes the offsets to commit, before Faust flushes
        the producer and commits: the partition's statistics are saved here if they moved, so
        the saved state always covers every record below the committed offset.
        """
        key = self._key_of(tp)
        if key is None:
            return None
        at = (tp.topic, tp.partition)
        mark = self.marks.get(at)
        if mark is not None and mark.key() != self.saved.get(at) and key in self.parts:
            self._save(key, self.parts[key])
        saved = self.saved.get(at)
        return (saved[0] or 0) if saved else 0  # the saved prefix; nothing known: commit nothing

    def on_routed(self, result) -> None:
        """Route hook: add every routed frame to its partition's statistics (columns, one call per frame)."""
        for r in result.routed:
            if not self.keeps("route", r.partition):
                continue  # revoked while the batch was published: the next owner counts it
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
            if not self.keeps("feedback", p):
                continue  # revoked while the batch was published: the next owner counts it
            key, st = self._get("feedback", p)
            st.update_examples(rows, positive_label=lambda m: policy.model(m).positive_label,
                               sla_ms=lambda m, tier: _sla_ms(policy.model(m), tier))
            self.dirty.add(key)

    # -------------------------------------------------------------- persistence
    def flush(self) -> None:
        for key in sorted(self.dirty):
            st = self.parts.get(key)
            if st is not None:
                self._save(key, st)
        self.dirty.clear()
        self.flushed_at = time.time()

    def _save(self, key: str, st: TierStats) -> None:
        state = st.to_state()
        role, p = self._role_partition[key]
        counted = {}
        for topic, r in self._roles.items():
            mark = self.marks.get((topic, p)) if r == role else None
            if mark is not None:
                counted[topic] = mark.to_state()
                self.saved[(topic, p)] = mark.key()
        state[COUNTED] = counted
        for name, r, owner in self.attached:
            if r == role:
                extra = owner.state_of(p)
                if extra is not None:
                    state[name] = extra
        self.table[key.encode()] = state
        self.dirty.discard(key)

    def release(self, revoked) -> None:
        """Save and forget the statistics of revoked input partitions."""
        gone = {self._key_of(tp) for tp in revoked} - {None}
        self.released |= gone
        if not gone & set(self.parts):
            return
        try:
            self.flush()
        except Exception:  # the changelog producer may already be stopping; the last timed save stands
            log.warning("could not save statistics on revocation", exc_info=True)
        for key in gone:
            self.parts.pop(key, None)
        for tp in revoked:  # the counted offsets are restored from the table on the next assignment
            self.marks.pop((tp.topic, tp.partition), None)
        for key in gone:
            role, p = self._role_partition[key]
            for _name, r, owner in self.attached:
                if r == role:
                    owner.drop(p)

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
