"""The feedback agent: review tasks ↔ corrections joined over changelog-backed Faust tables.

The tables use ``use_partitioner=True``: a key's changelog partition is the
one Kafka's default partitioner picks for the ``event_id`` — the partition of
the prediction, its review task and its corrections — whatever record is being
processed. That keeps the tables co-partitioned with their inputs and lets the
expiry timer delete keys outside stream iteration.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust

from loopline.processors.errors import DecodeError, UnexpectedTypeError
from loopline.processors.feedback.join import FeedbackJoin
from loopline.processors.routing.router import InputRecord, OutputRecord, dead_letter
from loopline.processors.wire.names import TRAINING_EXAMPLE
from loopline.processors.wire.serde import CORRECTION, REVIEW_TASK
from loopline.streams import join_store
from loopline.streams.acks import acked_on_success, withhold_unacked
from loopline.streams.publish import PublishAbandoned

log = logging.getLogger("loopline.feedback")


class OrphanError(UnexpectedTypeError):
    """A correction whose review task never arrived or had expired."""

    error_class = "orphan"


class StrKeys(MutableMapping):
    """A Faust table with ``bytes`` keys seen as a mapping with ``str`` keys."""

    def __init__(self, table) -> None:
        self.table = table

    def __getitem__(self, key: str):
        return self.table[key.encode()]

    def __setitem__(self, key: str, value) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __contains__(self, key) -> bool:
        return key.encode() in self.table

    def get(self, key, default=None):
        k = key.encode()
        return self.table[k] if k in self.table else default

    def __iter__(self) -> Iterator[str]:
        return (k.decode() if isinstance(k, bytes) else k for k in list(self.table.keys()))

    def __len__(self) -> int:
        return len(self.table)


def register_feedback(worker, app: faust.App) -> None:
    """Declare the feedback tables, agent and expiry timer on ``app`` for ``worker``."""
    s = worker.settings
    names = s.topics
    # key_type bytes -> raw keys (the event_id); no value_type -> JSON values
    table_kw: dict[str, Any] = dict(key_type=bytes, value_type=None, partitions=s.partitions, use_partitioner=True)
    on_disk = s.feedback_store == "rocksdb"
    if on_disk:  # streams/join_store.py: keys filed under their changelog partition, fixed memory
        join_store.register()
        table_kw.update(store=join_store.URL, options=dict(join_store.OPTIONS))
    pending = app.Table("loopline-feedback-pending", default=None, **table_kw)
    waiting = app.Table("loopline-feedback-waiting", default=None, **table_kw)
    seen = app.Table("loopline-feedback-seen", default=None, **table_kw)
    worker.join = FeedbackJoin(StrKeys(pending), StrKeys(waiting), StrKeys(seen),
                               pending_ttl_ms=int(s.pending_ttl_seconds * 1000),
                               waiting_ttl_ms=int(s.waiting_ttl_seconds * 1000),
                               max_entries=s.join_max_entries)
    kw: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
    source = app.topic(names.review_analyst, names.review_escalation, names.corrections, **kw)
    worker.t_out["training"] = app.topic(names.training, **kw)

    @app.agent(source, name="loopline.feedback")
    async def feedback(stream):
        async for events in stream.take_events(500, within=0.05):
            try:
                with acked_on_success(events):  # an interrupted batch is not acknowledged (streams/acks.py)
                    await handle_feedback(worker, events)
            except PublishAbandoned:  # stopping: what is buffered stays uncommitted too, so the stop is prompt
                withhold_unacked(app.consumer, {names.review_analyst, names.review_escalation, names.corrections})
                return

    # a state on disk is swept less often than it ticks, and at least ten times per task TTL
    sweep_every = max(s.feedback_expiry_interval_seconds, min(s.feedback_sweep_seconds, s.pending_ttl_seconds / 10))
    next_sweep = [time.monotonic() + sweep_every]

    @app.timer(interval=s.feedback_expiry_interval_seconds)
    async def expire_join_state() -> None:
        recovery = app.tables.recovery
        if not recovery.in_recovery:
            # Changelog records read after a recovery ended wait in Faust's recovery buffer (1000 records)
            # until it fills; on the embedded broker (high watermark = last batch's base offset + 1) that is
            # the tail of every changelog after a crash. Apply them now; expire() then joins corrections
            # that waited for a task which was only in that tail instead of orphaning them.
            apply_active_changelog_tail(recovery)
        now_ms = int(time.time() * 1000)
        out = worker.join.expire(now_ms, sweep=not on_disk)
        if on_disk and time.monotonic() >= next_sweep[0]:  # chunked, so a large state never stalls the loop
            for table in (pending, seen):
                _, dropped = await join_store.sweep(table, now_ms, s.join_max_entries)
                out.evicted += len(dropped)
                if table is pending:
                    worker.join.remember_evicted([k.decode() for k in dropped])
            next_sweep[0] = time.monotonic() + sweep_every
        worker.metrics.join_entries.labels("pending").set(len(pending))
        worker.metrics.join_entries.labels("waiting").set(len(waiting))
        worker.metrics.join_entries.labels("seen").set(len(seen))
        if on_disk:
            for state, table in (("pending", pending), ("waiting", waiting), ("seen", seen)):
                worker.metrics.join_bytes.labels(state).set(join_store.bytes_used(table.data))
        if out.evicted:
            worker.metrics.join_evicted.inc(out.evicted)
            log.warning("the correction join dropped %d entries over LOOPLINE_FEEDBACK_MAX_ENTRIES=%d",
                        out.evicted, s.join_max_entries)
        outputs = [OutputRecord("training", ex["model_name"].encode(), worker.serde.encode(TRAINING_EXAMPLE, ex))
                   for ex in out.examples]
        for (correction, why), src in zip(out.orphans, out.orphan_sources):
            src = src or {"topic": names.corrections, "partition": -1, "offset": -1}
            rec = InputRecord(worker.serde.encode(CORRECTION, correction), src["topic"], src["partition"],
                              src["offset"], [], correction["event_id"].encode())
            outputs.append(dead_letter(rec, OrphanError(why), worker=worker.worker_id))
        if outputs:
            await worker.publish(outputs)
            if len(outputs) > len(out.examples):
                worker.metrics.corrections.labels("orphan").inc(len(outputs) - len(out.examples))
            if out.examples:
                worker.metrics.corrections.labels("joined").inc(len(out.examples))
                for hook in worker.example_hooks:
                    try:
                        hook(out.examples)
                    except Exception:  # an extension's bug must not stop the join
                        log.exception("example hook %r failed", hook)


def apply_active_changelog_tail(recovery) -> int:
    """Apply the changelog records of *active* partitions waiting in Faust's recovery buffers.

    Standby records stay buffered (Faust applies them at the next recovery): applied now they
    would put another worker's keys into this worker's tables, and the expiry tick would act on
    them. Returns how many records were applied.
    """
    applied = 0
    active = recovery.active_tps
    for table, buf in list(recovery.buffers.items()):
        mine = [e for e in buf if e.message.tp in active]
        if mine:
            table.apply_changelog_batch(mine)
            buf[:] = [e for e in buf if e.message.tp not in active]
            applied += len(mine)
    return applied


async def handle_feedback(worker, events) -> None:
    join, serde, metrics = worker.join, worker.serde, worker.metrics
    now_ms = int(time.time() * 1000)
    outputs: list[OutputRecord] = []
    counts = {"joined": 0, "duplicate": 0, "tasks": 0}
    examples: list[dict] = []  # the ones the example hooks (statistics, calibration, ...) have not counted
    joined_by_task = False
    batch_ids: dict[str, dict] = {}  # correction id -> its record, recorded as seen once published
    records = [InputRecord(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                           list(e.message.headers or ()), e.message.key) for e in events]
    replayed, fresh = worker.stats.split(records) if worker.stats is not None else ([], records)
    again = {(r.topic, r.partition, r.offset) for r in replayed}  # counted before a crash or a rebalance
    for rec in records:
        try:
            name, obj = serde.decode(rec.value)
            if name == REVIEW_TASK:
                out = join.on_task(obj, now_ms)
                counts["tasks"] += 1
                joined_by_task = joined_by_task or bool(out.examples)
            elif name == CORRECTION:
                if obj["correction_id"] in batch_ids:
                    counts["duplicate"] += 1
                    continue
                where = {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}
                out = join.on_correction(obj, now_ms, where, mark_seen=False)
                if not out.duplicates:
                    batch_ids[obj["correction_id"]] = where
            else:
                raise UnexpectedTypeError(f"{name} does not belong on {rec.topic}")
        except DecodeError as exc:
            outputs.append(dead_letter(rec, exc, worker=worker.worker_id))
            metrics.dead_letters.labels(rec.topic, exc.error_class).inc()
            continue
        except Exception as exc:  # a bug must not lose the record
            log.exception("feedback join failed on %s[%d]@%d", rec.topic, rec.partition, rec.offset)
            outputs.append(dead_letter(rec, exc, worker=worker.worker_id))
            metrics.dead_letters.labels(rec.topic, "internal").inc()
            continue
        counts["duplicate"] += out.duplicates
        for ex in out.examples:
            if (rec.topic, rec.partition, rec.offset) not in again:
                examples.append(ex)
            outputs.append(OutputRecord("training", ex["model_name"].encode(), serde.encode(TRAINING_EXAMPLE, ex)))
            counts["joined"] += 1
    await worker.publish(outputs)
    # After the examples are on the broker: a crash before this replays, never loses. The seen entry
    # names the record, so a replay of the same record after a crash re-emits its example even if the
    # entry was saved and the statistics were not: the record is fresh to them and they count it then.
    for cid, where in batch_ids.items():
        join.mark_seen(cid, now_ms, where)
    if examples:
        for hook in worker.example_hooks:
            try:
                hook(examples)
            except Exception:  # an extension's bug must not stop the join
                log.exception("example hook %r failed", hook)
                metrics.processing_errors.labels("example_hook").inc()
    if worker.stats is not None:  # answers joined by their task's record are not emitted by its replay
        worker.stats.counted(fresh, save_now=joined_by_task)
    for outcome in ("joined", "duplicate"):
        if counts[outcome]:
            metrics.corrections.labels(outcome).inc(counts[outcome])
