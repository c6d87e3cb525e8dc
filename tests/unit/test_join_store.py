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
