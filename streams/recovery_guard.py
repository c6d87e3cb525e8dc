"""Table recovery that survives a broker which under-reports a changelog's high watermark.

Faust (faust-streaming, ``tables/recovery.py``) stops the whole worker with
``ConsistencyError("The persisted offset for changelog topic partition ... is
higher than the last offset in that topic (highwater) (2386 > 2385)")`` when the
offset it has already read from a changelog partition is above the partition's
high watermark minus one (faust-streaming#158 reports the same message). The
embedded broker (Tansu) reports the high watermark as *the last batch's base
offset + 1*, so after Faust has read a batch of several records the offset it
holds is above that value although every record it read is still in the topic.
Each membership change re-runs recovery for partitions a worker keeps, so the
surviving workers crashed on every scale or kill episode.

What Faust compares is, with Loopline's ``memory://`` store, never a value
from disk (the memory store's ``persisted_offset`` is always ``None``; the
correction join's RocksDB store, ``streams/join_store.py``, removes its
databases when the worker starts, so its persisted offsets too were written by
this process while it applied the changelog): it is
the offset of the last changelog record *this process applied* to its table
for a partition it kept across the rebalance (a partition that moves away is
forgotten by ``Recovery.revoke`` and, when it comes back, is read from the
changelog's start). Such an offset proves that the records up to it exist and
are in the table, so the correct reading of "offset > high watermark" is "the
broker's watermark is low", and this guard raises that partition's high
watermark to the offset already read:

* nothing is lost: the table already holds every record up to that offset,
  and records written after it have higher offsets, so a watermark that moved
  past them still triggers a normal read from the held offset;
* nothing is doubled: table values are last-write-wins by key and no record is
  applied twice (Faust skips records at or below the held offset).

Each raise is logged as a warning and counted in
``loopline_changelog_watermark_clamps_total``. The patch is process-wide (one
worker app per process, like :func:`loopline.streams.app.apply_fetch_max_wait`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

log = logging.getLogger("loopline.recovery")

#: Called with (changelog topic, partition, offset read, reported watermark) for each clamp.
ClampListener = Callable[[str, int, int, int], None]
_listeners: list[ClampListener] = []  # at most one (see apply_watermark_guard)


def clamp_watermarks(tps: Iterable[Any], offsets: MutableMapping, highwaters: MutableMapping) -> list[tuple]:
    """Raise ``highwaters[tp]`` to ``offsets[tp]`` where the offset already read is above it.

    Mirrors Faust's own test (both values set and truthy, offset > watermark),
    so after this the consistency check cannot fail. Returns the clamped
    ``(tp, offset, watermark)`` triples.
    """
    clamped = []
    for tp in tps:
        offset, high = offsets.get(tp), highwaters.get(tp)
        if offset is not None and high is not None and offset and offset > high:
            highwaters[tp] = offset
            clamped.append((tp, offset, high))
    return clamped


def _report(clamped: list[tuple], title: str) -> None:
    for tp, offset, high in clamped:
        log.warning("changelog %s[%d]: the broker reports its high watermark at %d but this worker has "
                    "already applied offset %d (%s); treating the table as up to date (nothing to re-read)",
                    tp.topic, tp.partition, high, offset, title)
        for listener in list(_listeners):
            try:
                listener(tp.topic, tp.partition, offset, high)
            except Exception:  # a metric must not stop recovery
                log.exception("watermark clamp listener failed")


def _reconcile(recovery: Any, tps: Iterable[Any], title: str) -> None:
    if title == "active":
        clamped = clamp_watermarks(tps, recovery.active_offsets, recovery.active_highwaters)
    else:
        clamped = clamp_watermarks(tps, recovery.standby_offsets, recovery.standby_highwaters)
    _report(clamped, title)


def apply_watermark_guard(listener: ClampListener | None = None) -> None:
    """Patch Faust's ``Recovery`` so an under-reported watermark is clamped, not a crash (idempotent).

    Faust builds active watermarks before active offsets and standby offsets
    before standby watermarks, then checks; reconciling after both steps
    covers both orders.
    """
    from faust.tables.recovery import Recovery

    if listener is not None:  # one worker app per process: the latest worker's metric counts
        _listeners[:] = [listener]
    if getattr(Recovery, "_loopline_watermark_guard", False):
        return
    build_highwaters = Recovery._build_highwaters
    build_offsets = Recovery._build_offsets

    async def _build_highwaters(self, consumer, tps, destination, title):  # noqa: ANN001
        await build_highwaters(self, consumer, tps, destination, title)
        _reconcile(self, tps, title)

    async def _build_offsets(self, consumer, tps, destination, title):  # noqa: ANN001
        await build_offsets(self, consumer, tps, destination, title)
        _reconcile(self, tps, title)

    Recovery._build_highwaters = _build_highwaters
    Recovery._build_offsets = _build_offsets
    Recovery._loopline_watermark_guard = True
