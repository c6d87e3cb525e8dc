"""The strict commit rule of streams/offset_guard.py (the rolling-SIGTERM loss of issue #16).

Faust's own ``Consumer._new_offset`` commits past one unacknowledged record at
the head, and commits any acknowledged run when it has forgotten the partition's
position (after a revoke). The guard commits only a run that starts exactly at
the known position.
"""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from loopline.streams.offset_guard import apply_offset_guard

TP0 = TP("t.predictions", 0)


def fake(committed=None, acked=(), base=None):
    c = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set), _gap=defaultdict(IntervalTree),
                        _committed_offset=defaultdict(lambda: None), _loopline_base={}, _loopline_base_pending=set())
    c._committed_offset[TP0] = committed
    c._acked[TP0].extend(acked)
    c._acked_index[TP0].update(acked)
    if base is not None:
        c._loopline_base[TP0] = base
    return c


@pytest.fixture(scope="module")
def new_offset():
    faust_rule = Consumer._new_offset
    apply_offset_guard(lambda topic: topic.endswith("-changelog"))
    return faust_rule, Consumer._new_offset


def test_one_unacknowledged_record_at_the_head_is_not_committed(new_offset):
    faust_rule, strict = new_offset
    if faust_rule is not strict:  # Faust's rule, when this test runs first: it skips record 156
        assert faust_rule(fake(committed=156, acked=[157, 158]), TP0) == 159
    c = fake(committed=156, acked=[157, 158])
    assert strict(c, TP0) is None
    c._acked[TP0].append(156)
    assert strict(c, TP0) == 159
    assert c._acked[TP0] == [] and c._acked_index[TP0] == set()


def test_unknown_position_commits_nothing(new_offset):
    _, strict = new_offset
    assert strict(fake(committed=None, acked=[382]), TP0) is None  # just revoked: position forgotten
    c = fake(committed=None, acked=[0, 1, 2, 4, 5], base=0)  # no commit yet: first delivered offset
    assert strict(c, TP0) == 3
    assert c._acked[TP0] == [4, 5]


def test_stale_and_repeated_acks_are_dropped(new_offset):
    _, strict = new_offset
    c = fake(committed=10, acked=[8, 9, 10, 10, 11, 13])
    assert strict(c, TP0) == 12
    assert c._acked[TP0] == [13] and c._acked_index[TP0] == {13}


def test_accepted_hole_counts_as_acknowledged(new_offset):
    _, strict = new_offset
    c = fake(committed=5, acked=[5, 9])
    c._gap[TP0].addi(6, 9)  # 6..8 accepted as a hole after the re-reads
    assert strict(c, TP0) == 10


class SeekRecorder(SimpleNamespace):
    async def seek(self, tp, offset):
        self.seeks.append(offset)


def hole_consumer():
    return SeekRecorder(seeks=[], _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree))


def test_a_wide_hole_is_read_again_until_it_has_persisted(new_offset, monkeypatch):
    import asyncio

    from loopline.streams import offset_guard

    monkeypatch.setattr(offset_guard, "HOLE_PATIENCE_SECONDS", 3600.0)
    c = hole_consumer()
    for _ in range(5):  # more than MAX_REREADS quick re-reads of records 227..228: still read again
        asyncio.run(Consumer._add_gap(c, TP0, 227, 229))
    assert c.seeks == [226] * 5 and not c._gap[TP0]
    monkeypatch.setattr(offset_guard, "HOLE_PATIENCE_SECONDS", 0.0)
    asyncio.run(Consumer._add_gap(c, TP0, 227, 229))  # persisted long enough: Faust's hole handling
    assert len(c.seeks) == 5 and c._gap[TP0].overlaps(227, 229)


def test_a_one_offset_hole_is_accepted_after_the_rereads(new_offset):
    import asyncio

    c = hole_consumer()
    for _ in range(4):
        asyncio.run(Consumer._add_gap(c, TP0, 40, 41))  # e.g. a transaction marker
    assert c.seeks == [39] * 3 and c._gap[TP0].overlaps(40, 41)


def test_the_app_ceiling_caps_the_commit_and_keeps_the_rest(new_offset):
    _, strict = new_offset
    limits = {TP0: 3}
    c = fake(committed=0, acked=[0, 1, 2, 3, 4])
    c.app = SimpleNamespace(_loopline_commit_ceiling=limits.get)
    assert strict(c, TP0) == 3  # records 3 and 4 are acknowledged but past what the statistics saved
    assert c._acked[TP0] == [3, 4]
    c._committed_offset[TP0] = 3
    assert strict(c, TP0) is None  # still capped at 3: nothing new to commit
    limits[TP0] = 10
    assert strict(c, TP0) == 5
