"""Wake a partition that has records to read but delivers none (issue #16's idle worker).

Seen once in five rolling-SIGTERM runs of the fault suite: after a rebalance a
worker was assigned two partitions, sought them to their committed offsets and
then delivered nothing from them, without a log line, until the next
rebalance. Nothing was lost (the offsets stayed uncommitted) but the decisions
of those partitions waited. The likely cause, found later with a single worker
restarted onto committed offsets (``tests/integration/test_worker_restart.py``),
was the offset guard dropping records fetched *after* a seek as if fetched
before it; it now seeks such a partition again (``streams/offset_guard.py``).
This guard stays as the safety net for whatever else stops a partition.

:class:`StallGuard` checks every ``CHECK_SECONDS`` each assigned input
partition (changelogs excluded) whose read position has not moved for
``STALL_SECONDS`` while the app is neither rebalancing nor recovering. It asks
the broker for the partition's end offset; when records lie beyond the
position (on the embedded broker the end offset is the last batch's base
offset + 1, so ``end - 1 > last read`` is certain) it logs one line with the
consumer's state, counts ``loopline_partition_stall_recoveries_total`` and
wakes the partition: resumes it, resumes the flow, and seeks it to its
committed offset (in the consumer's thread, like the offset guard's re-reads;
records between the committed and the read offset are read again: at-least-once,
and the statistics skip them). If the partition is still silent at the next
check, the worker cannot go on: it crashes with one sentence (exit 3, see
``streams/lifecycle.py``) so that its supervisor (``loopline up``, systemd,
Kubernetes) restarts it and the group hands the partition to a fresh consumer.
Seen in CI: a woken partition stayed silent (paused False, active True, flow
True), so the fetcher itself did not fetch it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("loopline.stall")

#: A partition whose position has not moved for this long while records wait is woken up.
STALL_SECONDS = 20.0
CHECK_SECONDS = 5.0


class StallGuard:
    def __init__(self, app, settings, metrics, clock=time.monotonic) -> None:  # noqa: ANN001
        self.app = app
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self._since: dict = {}  # tp -> (read offset, monotonic time it was first seen there)
        self._reader: Any = None  # a group-less confluent_kafka Consumer, made on first use
        self._woken: set = set()  # partitions woken and not seen delivering since

    def _end_offset(self, tp) -> int | None:  # noqa: ANN001
        from confluent_kafka import Consumer, TopicPartition

        from loopline.streams.kafka_security import client_config

        if self._reader is None:
            self._reader = Consumer(client_config(self.settings, {"group.id": "loopline-stall-guard",
                                                                   "enable.auto.commit": False}))
        _, high = self._reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5,
                                                     cached=False)
        return high if high is not None and high >= 0 else None

    def stalled(self, now: float) -> list:
        """Assigned input partitions whose position has not moved for ``STALL_SECONDS`` (bookkeeping included)."""
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None or self.app.rebalancing or self.app.tables.recovery.in_recovery:
            self._since.clear()
            self._woken.clear()
            return []
        changelogs = self.app.tables.changelog_topics
        out = []
        assigned = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
        for tp in list(self._since):
            if tp not in assigned:
                del self._since[tp]
        for tp in assigned:
            read = consumer._read_offset.get(tp)
            seen = self._since.get(tp)
            if seen is None or seen[0] != read:
                self._since[tp] = (read, now)
                if seen is not None:
                    self._woken.discard(tp)  # it delivered: the wake worked
            elif now - seen[1] >= STALL_SECONDS:
                out.append(tp)
        return out

    async def check(self) -> int:
        """One round; returns how many partitions were woken."""
        now = self.clock()
        woken = 0
        consumer: Any = getattr(self.app, "_consumer", None)
        for tp in self.stalled(now):
            read = consumer._read_offset.get(tp)
            committed = consumer._committed_offset.get(tp)
            last = read if read is not None else (committed - 1 if committed is not None else None)
            try:
                end = await asyncio.to_thread(self._end_offset, tp)
            except Exception as exc:  # broker unreachable: nothing to decide now
                log.debug("end offset of %s unknown: %s", tp, exc)
                continue
            if end is None or end - 1 <= (last if last is not None else -1):
                self._since[tp] = (read, now)  # caught up: idle, not stalled
                self._woken.discard(tp)
                continue
            if tp in self._woken:  # woken once already and still nothing: this worker cannot go on
                reason = (f"{tp.topic}[{tp.partition}] stopped delivering records after a rebalance and did not "
                          f"recover when woken; exiting so that a supervisor restarts the worker")
                log.error(reason)
                self.metrics.stall_recoveries.inc()
                await self.app.crash(PartitionStalled(reason))
                return woken
            log.warning("%s[%d] has records up to offset %d but delivered none for %.0fs (last read %s, committed %s, "
                        "paused %s, active %s, flow %s): waking it", tp.topic, tp.partition, end - 1, STALL_SECONDS,
                        read, committed, tp in consumer._paused_partitions, tp in consumer._active_partitions,
                        consumer.flow_active)
            self.metrics.stall_recoveries.inc()
            consumer.resume_partitions([tp])
            if not consumer.flow_active:
                consumer.resume_flow()
                self.app.flow_control.resume()
            from loopline.streams.offset_guard import reread

            # from the committed offset: nothing unprocessed can lie below it (the read offset means
            # "last read" or, after a seek, "next to read", so it cannot say which record comes next)
            await reread(consumer, tp, committed if committed is not None else (last + 1 if last is not None else 0))
            self._since[tp] = (consumer._read_offset.get(tp), now)
            self._woken.add(tp)
            woken += 1
        return woken

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class PartitionStalled(Exception):
    """A partition stayed silent with records waiting, even after it was woken."""


def register_stall_guard(worker, app) -> StallGuard:  # noqa: ANN001
    guard = StallGuard(app, worker.settings, worker.metrics)

    @app.timer(interval=CHECK_SECONDS)
    async def wake_stalled_partitions() -> None:
        try:
            await guard.check()
        except Exception:  # the guard must never stop the worker
            log.exception("stall check failed")

    return guard
