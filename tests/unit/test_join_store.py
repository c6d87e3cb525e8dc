"""The correction join's RocksDB store: keys under their changelog partition, scratch databases, no scans to count."""
from __future__ import annotations

import random

import faust
from aiokafka.partitioner import DefaultPartitioner

from loopline.streams import join_store


def _table(tmp_path, name: str = "loopline-feedback-pending"):
    join_store.register()
    app = faust.App(f"t-{random.random()}", store="memory://", datadir=str(tmp_path))
    return app.Table(name, key_type=bytes, value_type=None, partitions=4, use_partitioner=True,
                     store=join_store.URL, options=dict(join_store.OPTIONS))


def test_partition_of_is_the_producers_default_partitioner():
    keys = [f"ev-{random.random()}".encode() for _ in range(500)]
    assert [join_store.partition_of(k, 4) for k in keys] == [DefaultPartitioner()(k, [0, 1, 2, 3], [0, 1, 2, 3])
                                                              for k in keys]


def test_keys_are_filed_under_their_changelog_partition_and_read_from_it(tmp_path):
    store = _table(tmp_path).data
    assert isinstance(store, join_store.JoinStore)
    for p in range(4):
        store._db_for_partition(p)  # as an assignment opens them
    keys = [f"ev-{i}".encode() for i in range(200)]
    for k in keys:
        store._set(k, b"v" + k)  # outside any event: Faust's own store would fail here (no current event)
    for k in keys:
        p = join_store.partition_of(k, 4)
        assert store._dbs[p].get(k) == b"v" + k
        assert all(store._dbs[q].get(k) is None for q in range(4) if q != p)
        assert store._get(k) == b"v" + k and store._contains(k)
    store._del(keys[0])
    assert not store._contains(keys[0]) and store._get(keys[0]) is None
    assert store._get(b"never-set") is None


def test_a_database_left_by_an_earlier_run_is_not_reused(tmp_path):
    first = _table(tmp_path).data
    first._db_for_partition(0).put(b"old", b"state of another broker")
    path = first.partition_path(0)
    first._dbs.clear()  # the process ends
    del first
    import gc

    gc.collect()
    assert path.exists()
    again = _table(tmp_path).data
    assert not path.exists()
    again._db_for_partition(0)
    assert again._get(b"old") is None


def test_bytes_used_counts_the_files_and_buffers_of_active_partitions_only(tmp_path):
    store = _table(tmp_path).data
    assert join_store.bytes_used(store) == 0  # nothing assigned yet
    assert join_store.bytes_used(object()) == 0  # the in-memory store: not measured
    store._db_for_partition(0).put(b"k", b"x" * 10_000)

    class Assignor:  # partition 0 active, as after an assignment
        @staticmethod
        def assigned_actives():
            from faust.types import TP

            return {TP(store.table.changelog_topic_name, 0)}

    store.app.assignor = Assignor()
    assert join_store.bytes_used(store) >= 10_000


class _Table:
    """What the sweep needs of a Faust table: its store, and ``del`` (which in a worker also writes the changelog)."""

    def __init__(self, store) -> None:
        self.data, self.deleted = store, []

    def __delitem__(self, key: bytes) -> None:
        self.deleted.append(key)
        self.data._del(key)


def _actives(store, partitions):
    class Assignor:
        @staticmethod
        def assigned_actives():
            from faust.types import TP

            return {TP(store.table.changelog_topic_name, p) for p in partitions}

    store.app.assignor = Assignor()


def test_a_sweep_drops_expired_entries_then_the_closest_to_expiry_over_the_cap_in_chunks(tmp_path):
    import asyncio
    import json

    store = _table(tmp_path).data
    for p in range(4):
        store._db_for_partition(p)
    _actives(store, range(4))
    task = {"event_id": "x", "prediction": {"features_numeric": {"expires_at": 1}}}  # a producer's own key
    for i in range(30):  # 5 expired (at <= 1000), then 25 live: twenty share 2000 (one batch), then 2001..2005
        at = 500 + i if i < 5 else 2000 if i < 25 else 2001 + i - 25
        k = f"ev-{i}".encode()
        store._db_for_partition(join_store.partition_of(k, 4)).put(
            k, json.dumps({"task": task, "answers": [], "expires_at": at}).encode())
    t = _Table(store)
    expired, dropped = asyncio.run(join_store.sweep(t, now_ms=1000, cap=10, chunk=3))
    assert expired == 5 and sorted(t.deleted[:5]) == sorted(f"ev-{i}".encode() for i in range(5))
    assert len(dropped) == 16  # 25 live -> 9 kept (90% of 10), though the cutoff falls inside one batch
    assert set(dropped) <= {f"ev-{i}".encode() for i in range(5, 25)}  # only from the oldest batch
    left = {k for db in store._dbs.values() for k in db.keys()}
    assert len(left) == 9 and left >= {f"ev-{i}".encode() for i in range(25, 30)}  # the newer ones all kept


def test_a_sweep_writes_no_tombstone_for_a_key_whose_partition_moved_away(tmp_path):
    import asyncio

    store = _table(tmp_path).data
    for p in range(4):
        store._db_for_partition(p)
    keys = [f"ev-{i}".encode() for i in range(40)]
    gone = join_store.partition_of(keys[0], 4)
    store._dbs.pop(gone)  # revoked by a rebalance while the sweep was running
    t = _Table(store)
    asyncio.run(join_store._delete(t, keys, chunk=7))
    assert t.deleted == [k for k in keys if join_store.partition_of(k, 4) != gone]
