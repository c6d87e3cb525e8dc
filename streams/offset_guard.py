"""Commit offsets only past processed records across a rebalance's seek (the silent loss of issue #16).

What lost records: after every rebalance Faust seeks each assigned partition to
its committed offset ``C`` (``Consumer.perform_seek``) and records ``C`` as the
partition's read offset. But the fetch loop (``Consumer._drain_messages``) may
still be walking a batch that ``getmany`` fetched *before* the seek, starting
past ``C``. Its next record, say ``C+3``, is then taken as a jump in the log:
``_add_gap(C+1, C+3)`` marks ``C+1..C+2`` as acknowledged although nobody
processed them, the commit moves past them, and when the re-fetch from ``C``
delivers them they are dropped as "already read". Traced on the embedded broker
with kill -9 and membership changes (tests/integration/test_faults.py): every
lost run began right after ``SEEK C`` with ``GAP C+1..``.

The guard (process-wide, like the other Faust patches of the worker):

* every seek bumps the epoch of the partitions it moves; records of a
  ``getmany`` call that began before their partition's latest seek are not
  delivered, and the partition is sought once more to the latest seek's
  position so that they are fetched again from there (a call waits for records
  after it began: they may come from after the seek, past the new position,
  and were otherwise never fetched again), and if a seek
  happened while one of a partition's records was being delivered, the read
  offset the seek set is restored. Per partition: with one epoch for all, a
  re-read seek of one partition dropped the rest of the batch of every *other*
  partition too, whose positions had already moved past those records — new
  holes, new seeks, and at the end of the traffic records that were never
  delivered until the next rebalance (the fault suite's remaining losses);
* a jump in offsets on a topic that cannot have holes (every topic an agent
  reads except the compacted ones) is logged and *not* marked acknowledged: the
  partition is sought back to the first missing record and read again (the
  record after the hole is then processed twice: at-least-once). Only after
  ``MAX_REREADS`` re-reads of the same hole is it accepted as a real hole — and
  a hole of more than one offset (a transaction marker leaves one) only once it
  has also persisted for ``HOLE_PATIENCE_SECONDS``: in one full-suite run three
  re-reads within 300 ms were all answered with newer records (a fetch in flight
  across the seek) and 7 existing predictions were treated as a hole. Re-reads
  after the first wait a little (50 ms doubling, at most 1 s) so such a fetch
  can drain;
* the offset to commit is computed strictly (``Consumer._new_offset``): only a
  run of acknowledged offsets that starts *exactly* at the partition's known
  position is committed. Faust's own rule lets one unacknowledged record at the
  head slip through (``min(acked) - committed > 1``) and, when it does not know
  the committed position (``None``: no commit yet, or the partition was just
  revoked, which pops it), commits whatever run was acknowledged. Traced in the
  rolling-SIGTERM fault test (CI, then locally on the first try): a batch
  delivered before a revoke finished after it, acked offset 382 with the
  position forgotten, the revoke's commit wrote 383 and record 381, never
  processed, was lost. The position is the committed offset, or for a partition
  without one the first offset delivered after the assignment's seek; after a
  revoke it is unknown and nothing is committed until the next assignment;
* an app may cap the offset to commit per partition with
  ``app._loopline_commit_ceiling(tp) -> int | None`` (the per-partition statistics
  do, so that what they counted is saved before its input offsets are committed),
  and is told of every accepted hole with ``app._loopline_on_hole(tp, start, end)``.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable

log = logging.getLogger("loopline.offsets")

#: Re-reads of one hole before it is accepted as a real hole in the log (Faust then skips it).
MAX_REREADS = 3
#: How long a hole wider than one offset must persist, re-read after re-read, before it is accepted.
HOLE_PATIENCE_SECONDS = 10.0

_state: dict[str, Callable[[str], bool]] = {"may_have_holes": lambda topic: True}


def apply_offset_guard(may_have_holes: Callable[[str], bool]) -> None:
    """Patch Faust's consumer (idempotent); ``may_have_holes(topic)`` is True for compacted topics."""
    from faust.transport.consumer import Consumer

    _state["may_have_holes"] = may_have_holes
    if getattr(Consumer, "_loopline_offset_guard", False):
        return
    perform_seek = Consumer.perform_seek
    seek = Consumer.seek
    getmany = Consumer.getmany
    add_gap = Consumer._add_gap
    new_offset = Consumer._new_offset
    revoked_hook = Consumer.on_partitions_revoked

    def _bases(self) -> tuple[dict, set]:  # noqa: ANN001
        """(position of partitions without a committed offset, partitions waiting for their first record)."""
        if not hasattr(self, "_loopline_base"):
            self._loopline_base, self._loopline_base_pending = {}, set()
        return self._loopline_base, self._loopline_base_pending

    async def _perform_seek(self) -> None:
        await perform_seek(self)
        _bump(self, list(self._read_offset))
        base, pending = _bases(self)
        for tp in self.assignment():
            base.pop(tp, None)
            pending.discard(tp)
            if self._committed_offset.get(tp) is None:
                pending.add(tp)  # its position is the first offset delivered from now on

    async def _on_partitions_revoked(self, revoked) -> None:  # noqa: ANN001
        base, pending = _bases(self)
        for tp in revoked:
            base.pop(tp, None)
            pending.discard(tp)
        await revoked_hook(self, revoked)

    def _strict_new_offset(self, tp):  # noqa: ANN001, ANN202
        if _state["may_have_holes"](tp.topic):
            return new_offset(self, tp)  # compacted: holes are real, Faust's gap handling applies
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap.get(tp)
        if gaps:  # holes accepted after MAX_REREADS count as acknowledged
            hi = max(acked) + 1
            for iv in sorted(gaps.overlap(0, hi), key=lambda iv: iv.begin):
                acked.extend(range(iv.begin, iv.end))
            gaps.chop(0, hi)
        position = self._committed_offset.get(tp)
        if position is None:
            position = _bases(self)[0].get(tp)
        index = self._acked_index[tp]
        acked[:] = sorted(set(acked))
        stale = bisect.bisect_left(acked, position) if position is not None else 0
        if stale:  # acknowledged again after a re-read: already committed
            index.difference_update(acked[:stale])
            del acked[:stale]
        if position is None or not acked or acked[0] != position:
            return None  # the next record to commit is not acknowledged (or the position is unknown)
        end = 1
        while end < len(acked) and acked[end] == acked[end - 1] + 1:
            end += 1
        ceiling = getattr(getattr(self, "app", None), "_loopline_commit_ceiling", None)
        limit = ceiling(tp) if ceiling is not None else None
        if limit is not None:  # e.g. not past what the saved statistics counted (streams/stats.py)
            end = bisect.bisect_left(acked, limit, 0, end)
            if not end:
                return None
        run = acked[:end]
        del acked[:end]
        index.difference_update(run)
        return run[-1] + 1

    async def _seek(self, partition, offset: int) -> None:  # noqa: ANN001
        await seek(self, partition, offset)
        from faust.types import TP

        _bump(self, [partition if isinstance(partition, TP) else TP(partition.topic, partition.partition)])

    async def _getmany(self, timeout: float):
        epochs, read_offsets = _epochs(self)
        at_fetch = dict(epochs)
        pending = _bases(self)[1]
        sought: set = set()  # partitions sought again from this call
        async for tp, message in getmany(self, timeout):
            seen = at_fetch.get(tp, 0)
            if epochs.get(tp, 0) != seen:
                # Its partition was sought after this call began. Faust's getmany waits for records
                # (_wait_next_records) after the epochs were taken, so these may have been fetched
                # *after* the seek, from its position, and the fetch position has moved past them:
                # dropped without a new seek they were never fetched again (a single worker restarted
                # onto committed offsets decided nothing for minutes; the stall guard's own wake-up
                # seek fell into the same trap). Seek once more to where the latest seek put the
                # partition: stale records are fetched again from there, fresh ones too.
                position = read_offsets.get(tp)
                if tp not in sought and position is not None and tp in self.assignment():
                    sought.add(tp)
                    await reread(self, tp, position)
                continue
            if tp in pending:
                pending.discard(tp)
                self._loopline_base[tp] = message.offset
            yield tp, message
            if epochs.get(tp, 0) != seen:
                # the seek came while this record was delivered and the fetch loop has since recorded
                # its offset as read: put back what the seek set, so records from there are not dropped
                self._read_offset[tp] = read_offsets.get(tp)

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:  # noqa: ANN001
        if _state["may_have_holes"](tp.topic):
            await add_gap(self, tp, offset_from, offset_to)
            return
        tries = getattr(self, "_loopline_rereads", None)
        if tries is None:
            tries = self._loopline_rereads = {}
        key = (tp, offset_from)
        count, first_seen = tries.get(key, (0, time.monotonic()))
        count += 1
        tries[key] = (count, first_seen)
        if len(tries) > 10_000:  # bounded: forget old holes
            tries.clear()
        waited = time.monotonic() - first_seen
        if count > MAX_REREADS and (offset_to - offset_from <= 1 or waited >= HOLE_PATIENCE_SECONDS):
            # the broker really has no records there: Faust's own handling
            log.error("%s[%d]: records %d..%d are still missing after %d re-reads in %.1fs; treating them as a hole",
                      tp.topic, tp.partition, offset_from, offset_to - 1, count - 1, waited)
            await add_gap(self, tp, offset_from, offset_to)
            on_hole = getattr(getattr(self, "app", None), "_loopline_on_hole", None)
            if on_hole is not None:  # e.g. the statistics stop waiting to count those offsets
                on_hole(tp, offset_from, offset_to)
            return
        if count > 1:  # let a fetch that was in flight across the last seek drain first
            await asyncio.sleep(min(0.05 * 2 ** (count - 2), 1.0))
        log.warning("%s[%d]: records %d..%d were not delivered before %d; reading them again",
                    tp.topic, tp.partition, offset_from, offset_to - 1, offset_to)
        # offset_from - 1: Faust's read offset is the next offset after a seek and the last one read
        # otherwise; re-reading one record too many is a harmless duplicate, one too few a loss
        await reread(self, tp, max(offset_from - 1, 0))

    Consumer.perform_seek = _perform_seek
    Consumer.seek = _seek
    Consumer.getmany = _getmany
    Consumer._add_gap = _add_gap
    Consumer._new_offset = _strict_new_offset
    Consumer.on_partitions_revoked = _on_partitions_revoked
    Consumer._loopline_offset_guard = True


def _epochs(self) -> tuple[dict, dict]:  # noqa: ANN001
    """(seek epoch per partition, read offset each partition's latest seek set)."""
    if not hasattr(self, "_loopline_seek_epochs"):
        self._loopline_seek_epochs, self._loopline_seek_read_offsets = {}, {}
    return self._loopline_seek_epochs, self._loopline_seek_read_offsets


def _bump(self, tps) -> None:  # noqa: ANN001
    epochs, read_offsets = _epochs(self)
    for tp in tps:
        epochs[tp] = epochs.get(tp, 0) + 1
        read_offsets[tp] = self._read_offset.get(tp)


async def reread(self, tp, offset: int) -> None:  # noqa: ANN001
    """Seek ``tp`` of the Faust consumer ``self`` to ``offset``, inside the consumer's own thread when it has one.

    Faust's aiokafka driver seeks from the app's event loop (``ThreadDelegateConsumer._seek``
    calls ``AIOKafkaConsumer.seek`` directly) while aiokafka's prefetch task runs in the
    consumer thread's loop; a prefetch in flight can then set the position past the seek
    and the re-read starts after the hole again. Queued on the thread, the seek runs
    between aiokafka's own steps, which discard prefetched records of a sought partition.
    """
    thread = getattr(self, "_thread", None)
    call = getattr(thread, "call_thread", None)
    if call is None or not hasattr(thread, "_ensure_consumer"):
        await self.seek(tp, offset)
        return
    consumer = thread._ensure_consumer()

    async def _seek_in_thread() -> None:
        consumer.seek(tp, offset)

    await call(_seek_in_thread)
    self._read_offset[tp] = offset if offset else None
    _bump(self, [tp])
