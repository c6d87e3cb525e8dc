"""Faust's table recovery with a broker that under-reports a changelog's high watermark (issue #16).

The consumer is a stand-in that answers the two offset queries recovery makes, with the
values the embedded broker gave in the crash the issue measured (offset 2386 applied,
high watermark reported as 2386, i.e. Faust's 2385). The real recovery code of the
installed faust-streaming runs on them; the broker side is covered by
tests/integration/test_faults.py.
"""
from __future__ import annotations

import asyncio

import faust
from faust.types import TP

from loopline.streams.recovery_guard import apply_watermark_guard, clamp_watermarks

TP1 = TP("app-loopline-feedback-pending-changelog", 3)
TP2 = TP("app-loopline-feedback-pending-changelog", 1)


class Consumer:
    def __init__(self, highwaters: dict, earliest: dict) -> None:
        self._highwaters, self._earliest = highwaters, earliest

    async def highwaters(self, *tps):
        return {tp: self._highwaters[tp] for tp in tps}

    async def earliest_offsets(self, *tps):
        return {tp: self._earliest[tp] for tp in tps}


def test_clamp_raises_only_watermarks_below_the_offset_read():
    offsets = {TP1: 2386, TP2: 100}
    highs = {TP1: 2385, TP2: 2385}
    assert clamp_watermarks([TP1, TP2], offsets, highs) == [(TP1, 2386, 2385)]
    assert highs == {TP1: 2386, TP2: 2385}


def test_clamp_leaves_unset_values_alone():
    offsets = {TP1: None, TP2: 5}
    highs = {TP1: 3, TP2: None}
    assert clamp_watermarks([TP1, TP2], offsets, highs) == [] and highs == {TP1: 3, TP2: None}


def test_patched_recovery_passes_faust_consistency_check_and_still_recovers_what_is_missing():
    clamps = []
    apply_watermark_guard(lambda *c: clamps.append(c))
    app = faust.App("guard-test", broker="kafka://127.0.0.1:1", store="memory://")
    recovery = app.tables.recovery
    recovery.active_offsets[TP1] = 2386  # applied by this process before the rebalance
    recovery.active_offsets[TP2] = 10
    consumer = Consumer({TP1: 2386, TP2: 50}, {TP1: 0, TP2: 0})

    async def rebuild():
        await recovery._build_highwaters(consumer, {TP1, TP2}, recovery.active_highwaters, "active")
        await recovery._build_offsets(consumer, {TP1, TP2}, recovery.active_offsets, "active")

    asyncio.run(rebuild())
    # Faust's own condition for ConsistencyError (tables/recovery.py) no longer holds
    assert not any(recovery.active_offsets[tp] > recovery.active_highwaters[tp] for tp in (TP1, TP2))
    assert clamps == [(TP1.topic, 3, 2386, 2385)]
    # the partition that really is behind still needs recovery, from where this process stopped
    assert recovery.active_remaining() == {TP1: 0, TP2: 39}


def test_standby_watermarks_are_reconciled_too():
    apply_watermark_guard()
    app = faust.App("guard-test-2", broker="kafka://127.0.0.1:1", store="memory://")
    recovery = app.tables.recovery
    recovery.standby_offsets[TP1] = 7
    consumer = Consumer({TP1: 5}, {TP1: 0})

    async def rebuild():  # standbys: offsets first, then watermarks (Faust's order)
        await recovery._build_offsets(consumer, {TP1}, recovery.standby_offsets, "standby")
        await recovery._build_highwaters(consumer, {TP1}, recovery.standby_highwaters, "standby")

    asyncio.run(rebuild())
    assert recovery.standby_highwaters[TP1] == 7
