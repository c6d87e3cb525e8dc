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

* every seek bumps an epoch; a ``getmany`` batch fetched before the latest seek
  stops being delivered (its records are fetched again from the seek position),
  and if a seek happened while one of its records was being delivered, the read
  offsets the seek set are restored;
* a jump in offsets on a topic that cannot have holes (every topic an agent
  reads except the compacted ones) is logged and *not* marked acknowledged: the
  partition is sought back to the first missing record and read again (the
  record after the hole is then processed twice: at-least-once). Only after
  ``MAX_REREADS`` re-reads of the same hole is it accepted as a real hole.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("loopline.offsets")

#: Re-reads of one hole before it is accepted as a real hole in the log (Faust then skips it).
MAX_REREADS = 3

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

    def _bump(self, tps) -> None:  # noqa: ANN001
        self._loopline_seek_epoch = getattr(self, "_loopline_seek_epoch", 0) + 1
        self._loopline_seek_read_offsets = {tp: self._read_offset.get(tp) for tp in tps}

    async def _perform_seek(self) -> None:
        await perform_seek(self)
        _bump(self, list(self._read_offset))

    async def _seek(self, partition, offset: int) -> None:  # noqa: ANN001
        await seek(self, partition, offset)
        from faust.types import TP

        _bump(self, [partition if isinstance(partition, TP) else TP(partition.topic, partition.partition)])

    async def _getmany(self, timeout: float):
        epoch = getattr(self, "_loopline_seek_epoch", 0)
        async for tp, message in getmany(self, timeout):
            if getattr(self, "_loopline_seek_epoch", 0) != epoch:
                break  # fetched before a seek: read again from the seek position
            yield tp, message
            if getattr(self, "_loopline_seek_epoch", 0) != epoch:
                # the seek came while this record was delivered and the fetch loop has since recorded
                # its offset as read: put back what the seek set, so records from there are not dropped
                self._read_offset.update(self._loopline_seek_read_offsets)
                break

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:  # noqa: ANN001
        if _state["may_have_holes"](tp.topic):
            await add_gap(self, tp, offset_from, offset_to)
            return
        tries = getattr(self, "_loopline_rereads", None)
        if tries is None:
            tries = self._loopline_rereads = {}
        key = (tp, offset_from)
        tries[key] = tries.get(key, 0) + 1
        if len(tries) > 10_000:  # bounded: forget old holes
            tries.clear()
        if tries[key] > MAX_REREADS:  # the broker really has no records there: Faust's own handling
            log.error("%s[%d]: records %d..%d are still missing after %d re-reads; treating them as a hole",
                      tp.topic, tp.partition, offset_from, offset_to - 1, MAX_REREADS)
            await add_gap(self, tp, offset_from, offset_to)
            return
        log.warning("%s[%d]: records %d..%d were not delivered before %d; reading them again",
                    tp.topic, tp.partition, offset_from, offset_to - 1, offset_to)
        # offset_from - 1: Faust's read offset is the next offset after a seek and the last one read
        # otherwise; re-reading one record too many is a harmless duplicate, one too few a loss
        await self.seek(tp, max(offset_from - 1, 0))

    Consumer.perform_seek = _perform_seek
    Consumer.seek = _seek
    Consumer.getmany = _getmany
    Consumer._add_gap = _add_gap
    Consumer._loopline_offset_guard = True
