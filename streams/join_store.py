"""The correction join's state on disk: Faust's RocksDB table store, one database per changelog partition.

The join keeps every review task for days (``LOOPLINE_PENDING_TTL_SECONDS``) with
the prediction a training example needs; held in memory that grows with
traffic (about 5 KB per task). This store keeps it in RocksDB under
``data_dir`` with small, fixed write buffers and block caches, so the worker's
memory stays flat while the state grows on disk; the changelog topic stays the
source of truth for recovery, exactly as with the in-memory store.

Faust's own RocksDB store files a key under the partition of the event being
processed. The join's tables use ``use_partitioner=True`` (a key's changelog
partition is the one Kafka's default partitioner picks for the ``event_id``),
are written from batches that mix partitions and from a timer outside any
event; so this store files every key under *its* changelog partition (murmur2,
as the producer computes it) and reads it from that database only. Counting
keys uses RocksDB's estimate instead of a scan.
"""
from __future__ import annotations

import asyncio
import json
import shutil
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2
from faust import stores
from faust.stores import rocksdb as faust_rocksdb

SCHEME = "loopline-rocksdb"
#: the table's store URL (a URL without host or path is false to Faust, which then takes the app's store)
URL = f"{SCHEME}://join"

#: per database (one per table and partition): memtables and block cache are fixed, whatever the traffic
OPTIONS: dict[str, Any] = {"driver": "rocksdict", "write_buffer_size": 4 * 2**20, "max_write_buffer_number": 2,
                           "block_cache_size": 8 * 2**20, "block_cache_compressed_size": 0}


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key`` among ``partitions``.

    >>> [partition_of(k, 4) for k in (b"ev-1", b"ev-2", b"ev-3")] == [partition_of(k, 4) for k in (b"ev-1", b"ev-2", b"ev-3")]
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class JoinStore(faust_rocksdb.Store):
    """Faust's RocksDB store with keys filed under their changelog partition (see the module doc).

    The databases are scratch space of one process: they are removed when the store is built, so a
    worker recovers its state from the changelog at every start, as with the in-memory store (a
    database left by an earlier run may belong to another broker or hold a partition that moved
    away; ``streams/recovery_guard.py`` relies on offsets this process applied itself). Each
    worker process therefore needs its own ``data_dir``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for partition in range(self.table.partitions or self.app.conf.topic_partitions):
            shutil.rmtree(self.partition_path(partition), ignore_errors=True)

    @property
    def basename(self) -> Path:
        """The table's name: files ``<data_dir>/v1/tables/<table>-<partition>.db``."""
        return Path(self.table_name)

    def _partition(self, key: bytes) -> int:
        return partition_of(key, self.table.partitions or self.app.conf.topic_partitions)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_partition(self._partition(key)).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        db = self._dbs.get(self._partition(key))
        return None if db is None else db.get(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _del(self, key: bytes) -> None:
        db = self._dbs.get(self._partition(key))
        if db is not None:
            db.delete(key)

    def _dbs_for_key(self, key: bytes) -> Iterable:
        db = self._dbs.get(self._partition(key))
        return [] if db is None else [db]

    def _size(self) -> int:
        """RocksDB's estimate of the keys in the active partitions (exact enough for caps and gauges)."""
        return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in self._dbs_for_actives())


def expiry_of(value: bytes) -> int:
    """``expires_at`` of a stored join value without decoding a whole pending task.

    A pending entry is a JSON object whose last key is ``expires_at`` (Faust writes keys in insertion
    order; the join builds entries as task, answers, expires_at); a seen entry is ``expires_at`` or
    ``[expires_at, topic, partition, offset]``; anything else is decoded in full.

    >>> expiry_of(b'{"task": {"x": {"expires_at": 1}}, "answers": [], "expires_at": 1700}')
    1700
    >>> expiry_of(b"1800"), expiry_of(b'[1900, "loopline.corrections", 0, 5]'), expiry_of(b'{"expires_at": 5, "a": 1}')
    (1800, 1900, 5)
    """
    i = value.rfind(b'"expires_at":')
    if i >= 0 and value.endswith(b"}"):
        tail = value[i + 13:-1].strip()
        if tail.isdigit():
            return int(tail)
    v = json.loads(value)
    if isinstance(v, dict):
        return int(v["expires_at"])
    return int(v[0]) if isinstance(v, list) else int(v)


async def sweep(table: Any, now_ms: int, cap: int, chunk: int = 5000) -> tuple[int, list[bytes]]:
    """Drop ``table``'s expired entries and, over ``cap``, the ones closest to expiry down to 90% of it.

    The scan reads the active partitions' databases directly and yields to the event loop every
    ``chunk`` entries, so a state of millions of entries never stalls the worker (heartbeats, the
    route agent); deletes go through the table, so each one reaches the changelog. Returns (expired
    count, keys dropped by the cap).
    """
    store = table.data
    expired: list[bytes] = []
    live = array("q")  # expiries of the entries kept (8 bytes each), for the cap's cutoff
    seen = 0
    for db in list(store._dbs_for_actives()):
        for key, value in db.items():
            if key == store.offset_key:
                continue
            at = expiry_of(value)
            if at <= now_ms:
                expired.append(key)
            elif cap:
                live.append(at)
            seen += 1
            if seen % chunk == 0:
                await asyncio.sleep(0)
    await _delete(table, expired, chunk)
    dropped: list[bytes] = []
    if cap and len(live) > cap:
        keep = int(cap * 0.9)
        expiries = np.frombuffer(live, dtype=np.int64)
        cutoff = int(np.partition(expiries, len(live) - keep)[len(live) - keep])  # the oldest kept
        ties = len(live) - keep - int(np.count_nonzero(expiries < cutoff))  # a batch's tasks share an expiry
        for db in list(store._dbs_for_actives()):
            for n, (key, value) in enumerate(db.items(), 1):
                at = expiry_of(value) if key != store.offset_key else 0
                if now_ms < at < cutoff or (at == cutoff and ties > 0):
                    dropped.append(key)
                    ties -= at == cutoff
                if n % chunk == 0:
                    await asyncio.sleep(0)
        await _delete(table, dropped, chunk)
    return len(expired), dropped


async def _delete(table: Any, keys: list[bytes], chunk: int) -> None:
    """``del table[key]`` (store and changelog) for each key whose partition is still this worker's: a
    rebalance during a sweep must not write tombstones for keys another worker now owns."""
    store = table.data
    for i, key in enumerate(keys, 1):
        if store._partition(key) in store._dbs:
            del table[key]
        if i % chunk == 0:
            await asyncio.sleep(0)


def bytes_used(store: Any) -> int:
    """Bytes of ``store``'s active partitions: files on disk and write buffers (0 for another kind of store)."""
    if not isinstance(store, JoinStore):
        return 0
    return sum(int(db.property_int_value(prop) or 0) for db in store._dbs_for_actives()
               for prop in ("rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"))


def register() -> None:
    """Make ``loopline-rocksdb://`` a Faust store URL (idempotent)."""
    stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:JoinStore")
