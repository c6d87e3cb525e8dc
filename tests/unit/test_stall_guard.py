"""StallGuard wakes an assigned partition that has records to read but delivers none (issue #16)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP
from prometheus_client import CollectorRegistry, Counter

from loopline.streams.stall_guard import STALL_SECONDS, StallGuard

P0, P1, CHANGELOG = TP("t.predictions", 0), TP("t.predictions", 1), TP("w-stats-changelog", 0)


class FakeConsumer:
    def __init__(self) -> None:
        self._read_offset = {P0: 41, P1: 9, CHANGELOG: 3}
        self._committed_offset = {P0: 30, P1: 10}
        self._paused_partitions = {P0}
        self._active_partitions = {P1}
        self.flow_active = True
        self.seeks: list = []

    def assignment(self):
        return {P0, P1, CHANGELOG}

    def resume_partitions(self, tps):
        self._paused_partitions.difference_update(tps)
        self._active_partitions.update(tps)

    def resume_flow(self):
        self.flow_active = True

    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))
        self._read_offset[tp] = offset


def guard(ends: dict) -> tuple[StallGuard, FakeConsumer, SimpleNamespace]:
    consumer = FakeConsumer()
    crashes: list = []

    async def crash(reason):
        crashes.append(str(reason))

    app = SimpleNamespace(_consumer=consumer, rebalancing=False, flow_control=SimpleNamespace(resume=lambda: None),
                          tables=SimpleNamespace(recovery=SimpleNamespace(in_recovery=False),
                                                 changelog_topics={CHANGELOG.topic}), crash=crash, crashes=crashes)
    metrics = SimpleNamespace(stall_recoveries=Counter("stalls", "", registry=CollectorRegistry()))
    g = StallGuard(app, None, metrics)
    g._end_offset = ends.get
    return g, consumer, app


def test_a_partition_with_unread_records_is_woken_and_an_idle_one_is_left_alone():
    g, consumer, _ = guard({P0: 60, P1: 10})
    g.clock = iter([0.0, STALL_SECONDS + 1]).__next__  # P0: records up to 59, read up to 41; P1: nothing after 9
    assert asyncio.run(g.check()) == 0  # first sight: positions noted
    assert asyncio.run(g.check()) == 1
    assert consumer.seeks == [(P0, 30)]  # from the committed offset: nothing unprocessed is skipped
    assert P0 in consumer._active_partitions and P0 not in consumer._paused_partitions
    assert g.metrics.stall_recoveries._value.get() == 1


def test_nothing_happens_while_positions_move_or_the_app_rebalances():
    g, consumer, app = guard({P0: 60, P1: 60})
    g.clock = iter([0.0, STALL_SECONDS + 1, 2 * STALL_SECONDS + 2]).__next__
    asyncio.run(g.check())
    consumer._read_offset[P0] = 50  # P0 delivered meanwhile
    app.rebalancing = True  # and a rebalance is under way: no partition is judged
    assert asyncio.run(g.check()) == 0
    app.rebalancing = False
    assert asyncio.run(g.check()) == 0 and consumer.seeks == []  # the clock starts again after a rebalance


def test_a_partition_still_silent_after_the_wake_crashes_the_worker_for_its_supervisor():
    g, consumer, app = guard({P0: 60, P1: 10})
    g.clock = iter([0.0, STALL_SECONDS + 1, 2 * STALL_SECONDS + 2]).__next__
    asyncio.run(g.check())
    assert asyncio.run(g.check()) == 1 and app.crashes == []  # woken
    assert asyncio.run(g.check()) == 0  # still nothing a stall period after the wake
    assert len(app.crashes) == 1 and "supervisor restarts the worker" in app.crashes[0]


def test_a_woken_partition_that_delivers_is_not_crashed():
    g, consumer, app = guard({P0: 60, P1: 10})
    g.clock = iter([0.0, STALL_SECONDS + 1, 2 * STALL_SECONDS + 2, 3 * STALL_SECONDS + 3]).__next__
    asyncio.run(g.check())
    asyncio.run(g.check())  # woken
    consumer._read_offset[P0] = 45  # it delivered
    asyncio.run(g.check())
    asyncio.run(g.check())
    assert app.crashes == []
